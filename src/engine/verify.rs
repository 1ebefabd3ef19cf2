//! Password verification, the part that may run on a thread pool: [`Pending`] carries what is
//! needed (stored hash, password, the account or the fact that there is none) and is `Send`.
//!
//! Timing: a failed login takes as long whether the user exists or not. The store names its
//! costliest stored hash (its timing template); an unknown user, an account whose stored hash
//! can't be used, and a wrong password for an account with a cheaper scheme all verify against
//! that template too, so every failure costs at least one verification of the store's
//! costliest kind, from the first request on. The template's result is ignored.
//!
//! Memory: costly verifications (Argon2 takes its `m` KiB each) reach the pool only through
//! the worker's [`super::sched::Scheduler`]: at most `limit` at once, at most `queue` waiting
//! for a turn; beyond that the login is answered with a temporary failure (`overloaded`).

#![forbid(unsafe_code)]

use crate::policy::Refusal;
use crate::protocol::Password;
use crate::scheme;
use crate::store::Account;

/// A real bcrypt hash (cost 10, the admin tool's default) used as the timing template of a
/// store that names none: `htpasswd -nbB -C 10 dummy 'not-a-real-password'`.
pub const DEFAULT_TEMPLATE: &str = "$2y$10$6B0z.tj3oE5hN.WxVX52MukGZ.L.9tkN4wSFd.7QodUyMYwtwrvDq";

/// Result of a password verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyResult {
    Match,
    Mismatch,
    /// The stored hash could not be used (unknown scheme, malformed); the text is for the log.
    Error(String),
    /// Not run: too many costly verifications in this worker already (see `sched`).
    Overloaded,
}

#[derive(Debug, Clone)]
pub(crate) enum Subject {
    /// No such user: the verification runs against the template and never matches.
    Unknown,
    Known {
        account: Box<Account>,
        refusal: Option<Refusal>,
    },
}

/// A verification still to be run (possibly on another thread). Its `Debug` output leaves the
/// password and the account (backend password) out.
#[derive(Clone)]
pub struct Pending {
    pub(crate) template: std::sync::Arc<str>,
    /// `scheme::is_costly(self.stored())`, known when the pending verification is made.
    pub(crate) own_costly: bool,
    pub(crate) password: Password,
    pub(crate) subject: Subject,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("scheme", &scheme::scheme_name(self.own_stored()))
            .field("password", &self.password)
            .field(
                "subject",
                &match &self.subject {
                    Subject::Unknown => "unknown user",
                    Subject::Known { refusal: None, .. } => "account",
                    Subject::Known { refusal: Some(_), .. } => "account (refused by policy)",
                },
            )
            .finish()
    }
}

impl Pending {
    /// A verification of `password` for `subject` (an unknown user: against `template`).
    pub(crate) fn new(template: std::sync::Arc<str>, password: Password, subject: Subject) -> Pending {
        let own_costly = match &subject {
            Subject::Unknown => scheme::is_costly(&template),
            Subject::Known { account, .. } => scheme::is_costly(&account.password),
        };
        Pending { template, own_costly, password, subject }
    }

    /// The stored hash verified against (the template for an unknown user).
    pub fn stored(&self) -> &str {
        match &self.subject {
            Subject::Unknown => &self.template,
            Subject::Known { account, .. } => &account.password,
        }
    }

    /// The account's stored hash (empty for an unknown user).
    pub(crate) fn own_stored(&self) -> &str {
        match &self.subject {
            Subject::Unknown => "",
            Subject::Known { account, .. } => &account.password,
        }
    }

    /// The account's own spelling of its name, as the store knows it.
    pub fn account_name(&self) -> Option<&str> {
        match &self.subject {
            Subject::Unknown => None,
            Subject::Known { account, .. } => Some(&account.name),
        }
    }

    /// No such user: verified against the template, never matches.
    pub fn is_unknown(&self) -> bool {
        matches!(self.subject, Subject::Unknown)
    }

    /// Whether the verification (as a whole, padding included) is slow enough to belong on a
    /// thread pool.
    pub fn is_costly(&self) -> bool {
        self.own_costly || (self.pads() && scheme::is_costly(&self.template))
    }

    /// Whether the account's own verification is: when it is not, a right password is known at
    /// once on the event loop, and only a failure's padding goes to the pool.
    pub fn own_is_costly(&self) -> bool {
        self.own_costly
    }

    /// Whether a failure must also verify the template (the account's own scheme is cheaper
    /// than the store's costliest, or unusable).
    pub fn pads(&self) -> bool {
        match self.subject {
            Subject::Unknown => false,
            Subject::Known { .. } => scheme::cost_estimate(self.own_stored()) < scheme::cost_estimate(&self.template),
        }
    }

    /// The account's own verification (for an unknown user, the template's, ignored:
    /// `Mismatch`).
    pub fn run_own(&self) -> VerifyResult {
        if let Subject::Unknown = self.subject {
            let _ = scheme::verify(&self.template, &self.password);
            return VerifyResult::Mismatch;
        }
        match scheme::verify(self.own_stored(), &self.password) {
            Ok(true) => VerifyResult::Match,
            Ok(false) => VerifyResult::Mismatch,
            Err(e) => VerifyResult::Error(e.to_string()),
        }
    }

    /// After a failed own verification of a cheaper account: the template's, result ignored.
    pub fn pad(&self) {
        let _ = scheme::verify(&self.template, &self.password);
    }

    /// The whole verification (own, then the padding a failure needs), constant-time
    /// comparisons inside `scheme`.
    pub fn run(&self) -> VerifyResult {
        let r = self.run_own();
        if r != VerifyResult::Match && self.pads() {
            self.pad();
        }
        r
    }
}
