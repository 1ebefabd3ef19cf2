//! Password verification, the part that may run on a thread pool: [`Pending`] carries what is
//! needed (stored hash, the account or the fact that there is none) and is `Send`; the
//! password is the request's, handed to each run (not copied per request).
//!
//! Timing: a failed login takes as long whether the user exists or not. The store names its
//! costliest stored hash (its timing template); an unknown user, an account whose stored hash
//! can't be used, and a wrong password for an account with a cheaper scheme all verify against
//! that template too, so every failure costs at least one verification of the store's
//! costliest kind, from the first request on. The template's result is ignored.
//!
//! App passwords: an account's credentials are its main password (index 0) and its app
//! passwords (index 1..; at most [`MAX_APP_PASSWORDS`]). A login tries them cheapest first (by
//! `scheme::cost_estimate`, store order among equals) and stops at the first match, which
//! [`Pending::matched`] names; the rules of the credential that matched are applied after the
//! verification (`decide::finish`). The cheap ones may be tried on the event loop first
//! ([`Pending::run_cheap`]), the costly ones then go to the pool like a costly main password.
//! A failure costs the verification of every credential tried, padded to the template as
//! before.
//!
//! Memory: costly verifications (Argon2 takes its `m` KiB each) reach the pool only through
//! the worker's [`super::sched::Scheduler`]: at most `limit` at once, at most `queue` waiting
//! for a turn; beyond that the login is answered with a temporary failure (`overloaded`).

#![forbid(unsafe_code)]

use crate::policy::Refusal;
use crate::scheme;
use crate::store::{Account, MAX_APP_PASSWORDS};

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
/// account (backend password) out.
#[derive(Clone)]
pub struct Pending {
    pub(crate) template: std::sync::Arc<str>,
    /// Whether a credential tried is costly (`scheme::is_costly_for`), known when the pending
    /// verification is made.
    pub(crate) own_costly: bool,
    /// The length of the password it verifies (a crypt(3) scheme's work grows with it).
    pass_len: usize,
    pub(crate) subject: Subject,
    /// The credentials to try (0: the main password, i: app password i-1), cheapest first.
    /// (A fixed array: no allocation per verification; `order_len` of them are used.)
    order_buf: [u8; 1 + MAX_APP_PASSWORDS],
    order_len: u8,
    /// The credential that matched.
    pub(crate) matched: Option<u8>,
    /// The cheap credentials were tried already ([`Pending::run_cheap`]).
    pub(crate) cheap_done: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("scheme", &scheme::scheme_name(self.own_stored()))
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
    /// A verification of a password of `pass_len` bytes for `subject` (an unknown user: against
    /// `template`).
    pub(crate) fn new(template: std::sync::Arc<str>, subject: Subject, pass_len: usize) -> Pending {
        let mut order_buf = [0u8; 1 + MAX_APP_PASSWORDS];
        let (own_costly, order_len) = match &subject {
            Subject::Unknown => (scheme::is_costly_for(&template, pass_len), 0),
            Subject::Known { account, .. } => {
                let n = 1 + account.app_passwords.len().min(MAX_APP_PASSWORDS);
                let order = &mut order_buf[..n];
                for (i, o) in order.iter_mut().enumerate() {
                    *o = i as u8; // at most 1 + MAX_APP_PASSWORDS
                }
                if n > 1 {
                    // stable: store order among equal costs
                    order.sort_by_cached_key(|&i| scheme::cost_estimate(credential(account, i)));
                }
                (order.iter().any(|&i| scheme::is_costly_for(credential(account, i), pass_len)), n as u8)
            }
        };
        Pending { template, own_costly, pass_len, subject, order_buf, order_len, matched: None, cheap_done: false }
    }

    /// The credentials to try (0: the main password, i: app password i-1), cheapest first.
    pub(crate) fn order(&self) -> &[u8] {
        &self.order_buf[..usize::from(self.order_len)]
    }

    /// The account's credentials tried by this verification, by index (0: the main password),
    /// in index order: the cache key binds a verdict to them.
    pub(crate) fn credentials(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let account = match &self.subject {
            Subject::Known { account, .. } => Some(account),
            Subject::Unknown => None,
        };
        let n = self.order().len();
        (0..n).filter_map(move |i| {
            let a = account?;
            Some(match i {
                0 => ("", a.password.as_str()),
                i => (a.app_passwords[i - 1].label.as_str(), a.app_passwords[i - 1].password.as_str()),
            })
        })
    }

    /// How many app passwords this verification tries.
    pub fn app_passwords(&self) -> usize {
        self.order().len().saturating_sub(1)
    }

    /// The credential that matched (0: the main password).
    pub fn matched(&self) -> Option<u8> {
        self.matched
    }

    /// Some cheap credentials to try before a costly one (see [`Pending::run_cheap`]).
    pub fn has_cheap_first(&self) -> bool {
        !self.cheap_done
            && self.own_costly
            && self.order().first().is_some_and(|&i| !self.costly(credential_of(&self.subject, i)))
    }

    /// Tries the cheap credentials (on the event loop): `true` if one matched (then
    /// [`Pending::matched`] names it); the costly ones are left to [`Pending::run_own`].
    pub fn run_cheap(&mut self, password: &[u8]) -> bool {
        self.cheap_done = true;
        for &i in self.order() {
            let stored = credential_of(&self.subject, i);
            if self.costly(stored) {
                continue;
            }
            if let Ok(true) = scheme::verify(stored, password) {
                self.matched = Some(i);
                return true;
            }
        }
        false
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

    /// The account's own spelling of its name, as the store knows it (empty: the one asked for).
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
        self.own_costly || (self.pads() && self.template_is_costly())
    }

    /// Whether verifying this password against `stored` belongs on the thread pool.
    fn costly(&self, stored: &str) -> bool {
        scheme::is_costly_for(stored, self.pass_len)
    }

    /// Whether the template's verification (a failure's padding) belongs on the thread pool.
    pub fn template_is_costly(&self) -> bool {
        self.costly(&self.template)
    }

    /// Whether the account's own verification is: when it is not, a right password is known at
    /// once on the event loop, and only a failure's padding goes to the pool.
    pub fn own_is_costly(&self) -> bool {
        self.own_costly
    }

    /// The estimated cost of each of the account's own credentials ([`scheme::cost_estimate`]).
    fn own_costs(&self) -> impl Iterator<Item = u64> + '_ {
        self.order().iter().map(|&i| scheme::cost_estimate(credential_of(&self.subject, i)))
    }

    /// Whether a failure must also verify the template (the account's costliest credential is
    /// cheaper than the store's costliest, or unusable).
    pub fn pads(&self) -> bool {
        match self.subject {
            Subject::Unknown => false,
            Subject::Known { .. } => self.own_costs().max().unwrap_or(0) < scheme::cost_estimate(&self.template),
        }
    }

    /// The account's own verification: each credential to try, cheapest first, until one
    /// matches (those [`Pending::run_cheap`] tried already are skipped). For an unknown user,
    /// the template's, ignored: `Mismatch`. An unusable main password is an `Error` when no
    /// app password matched; an unusable app password is a mismatch (the store warned).
    pub fn run_own(&mut self, password: &[u8]) -> VerifyResult {
        if let Subject::Unknown = self.subject {
            let _ = scheme::verify(&self.template, password);
            return VerifyResult::Mismatch;
        }
        let mut main_error = None;
        for &i in self.order() {
            let stored = credential_of(&self.subject, i);
            if self.cheap_done && !self.costly(stored) {
                continue;
            }
            match scheme::verify(stored, password) {
                Ok(true) => {
                    self.matched = Some(i);
                    return VerifyResult::Match;
                }
                Ok(false) => {}
                Err(e) if i == 0 => main_error = Some(e.to_string()),
                Err(_) => {}
            }
        }
        match main_error {
            Some(e) => VerifyResult::Error(e),
            None => VerifyResult::Mismatch,
        }
    }

    /// After a failed own verification of a cheaper account: what tops its cost up to the
    /// template's ([`scheme::padding`]: the template itself for a cheap account), results
    /// ignored.
    pub fn pad(&self, password: &[u8]) {
        let own = self.own_costs().fold(0, u64::saturating_add);
        for v in scheme::padding(&self.template, own) {
            let _ = scheme::verify(&v, password);
        }
    }

    /// The whole verification (own, then the padding a failure needs), constant-time
    /// comparisons inside `scheme`.
    pub fn run(&mut self, password: &[u8]) -> VerifyResult {
        let r = self.run_own(password);
        if r != VerifyResult::Match && self.pads() {
            self.pad(password);
        }
        r
    }
}

/// Credential `i` of an account: 0 the main password, i the stored hash of app password i-1.
fn credential(account: &Account, i: u8) -> &str {
    match i {
        0 => &account.password,
        i => account.app_passwords.get(usize::from(i) - 1).map_or("", |a| a.password.as_str()),
    }
}

fn credential_of(subject: &Subject, i: u8) -> &str {
    match subject {
        Subject::Unknown => "",
        Subject::Known { account, .. } => credential(account, i),
    }
}
