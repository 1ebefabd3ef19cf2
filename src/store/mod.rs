//! Credential stores. The handler talks to a `Store` and never knows which kind it is.
//!
//! Plain Rust: no nginx types here, so everything is unit-testable with `cargo test`.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

#[cfg(feature = "ldap")]
pub mod ldap;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod passwd_file;
#[cfg(feature = "pgsql")]
pub mod pgsql;
pub(crate) mod slots;
pub mod sql_params;
pub mod sql_row;
pub mod sql_server;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "sqlite")]
pub mod sqlite_accounts;
pub(crate) mod watch;

pub use watch::{process_started, set_thread_start_hook, stop_watchers};

use crate::protocol::{Method, Protocol};

/// What a store is asked. Values are already unescaped. Its `Debug` output leaves the
/// password out.
#[derive(Clone)]
pub struct Query<'a> {
    pub user: &'a str,
    pub protocol: Protocol,
    pub method: Method,
    pub client_ip: Option<IpAddr>,
    /// The client's password (`plain`/`login`), for a store that has the server check it
    /// (LDAP in bind mode); the others ignore it.
    pub password: Option<&'a [u8]>,
}

impl std::fmt::Debug for Query<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("user", &self.user)
            .field("protocol", &self.protocol)
            .field("method", &self.method)
            .field("client_ip", &self.client_ip)
            .field("password", &self.password.map(|_| "<redacted>"))
            .finish()
    }
}

/// One account as a store returns it. Only `password` is mandatory; every other field is
/// optional routing/policy information.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    /// The account's name as the store knows it: the user field of its passwd-file line (empty
    /// from a lookup, which asked for exactly that name), the SQLite query's `name` column (else
    /// the user asked for). Several spellings of one account (a `COLLATE NOCASE` query) share it,
    /// so per-account counters use it. May be empty for stores that do not set it (then the user
    /// asked for is meant).
    pub name: String,
    /// Stored password in any supported scheme (`{SCHEME}...`, `$6$...`, `$2y$...`, ...).
    pub password: String,
    /// Per-user backend address (IP literal) and port.
    pub server: Option<String>,
    pub port: Option<u16>,
    /// Login name to present to the backend (Auth-User in the answer).
    pub backend_user: Option<String>,
    /// Password to present to the backend (Auth-Pass in the answer), for master-user setups.
    pub backend_pass: Option<String>,
    /// `false` refuses the account.
    pub enabled: bool,
    /// Which protocols may be used; `None` = all.
    pub protocols: Option<Vec<Protocol>>,
    /// Networks the user may log in from; `None` = anywhere.
    pub networks: Option<Vec<crate::cidr::Cidr>>,
    /// Dovecot's `allow_real_nets`: networks the connection nginx accepted may come from
    /// (`Client-IP`, a balancer's address behind the PROXY protocol); `None` = anywhere.
    pub real_networks: Option<Vec<crate::cidr::Cidr>>,
    /// Dovecot's `delay_until` (Unix time): a login more than 5 minutes before it is refused,
    /// as Dovecot fails it.
    pub delay_until: Option<u64>,
    /// Per-user Auth-Wait on failure (seconds).
    pub wait: Option<u32>,
    /// Logins need a client certificate nginx verified (`Auth-SSL-Verify: SUCCESS`), and the
    /// one of the `cert_fingerprint` extra field if the account has one (passwd-file
    /// `client_cert=required`, SQLite column `client_cert`; see `policy`).
    pub require_client_cert: bool,
    /// Extra `key=value` fields (Dovecot passwd-file extra fields), kept for later use.
    pub extra: Vec<(String, String)>,
    /// The account's app passwords (per-device credentials), in store order; at most
    /// [`MAX_APP_PASSWORDS`] of them are tried by a login.
    pub app_passwords: Vec<AppPassword>,
    /// Protocols on which the main password is not accepted (only app passwords); `None`: none.
    pub app_only: Option<Vec<Protocol>>,
}

/// A store's answer to a lookup, the account boxed (see [`Store::lookup_and_template`]).
pub type Lookup = Result<Option<Box<Account>>, StoreError>;

/// Dovecot's `delay_until` value: a Unix time, optionally followed by `+SECONDS` (its random
/// extra delay, not used here); `None` when it is not one.
pub fn parse_delay_until(v: &str) -> Option<u64> {
    let v = v.trim();
    let ts = v.split_once('+').map_or(v, |(t, _)| t);
    ts.parse::<u64>().ok().filter(|_| ts.bytes().all(|b| b.is_ascii_digit()))
}

/// An account's own `wait` (seconds): at most a day, as `mail_auth_fail_wait` (nginx holds the
/// connection for the whole wait, whatever the client does).
pub const MAX_WAIT: u32 = 86_400;

/// At most this many app passwords of one account are tried by a login (the first ones in
/// store order; the stores warn about more).
pub const MAX_APP_PASSWORDS: usize = 16;

/// A second credential of an account (an app password, a per-device credential): its own
/// stored hash, label and restrictions, revocable on its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppPassword {
    /// Names the credential in the log (never the secret).
    pub label: String,
    /// Stored password in any supported scheme.
    pub password: String,
    /// Protocols it may be used with; `None` = all (within the account's own `protocols`).
    pub protocols: Option<Vec<Protocol>>,
    /// Networks it may be used from; `None` = anywhere (within the account's `networks`).
    pub networks: Option<Vec<crate::cidr::Cidr>>,
}

/// A label as the stores accept it: 1..64 characters of letters, digits, `.`, `_`, `-`, `@`,
/// `+` (no ':' or blanks, so it fits a passwd-file line and a log line as it is).
pub fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 64
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

/// Why a lookup could not be answered. Always answered as a *temporary* failure: never OK.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreError {
    /// Store description, e.g. the file path.
    pub source: String,
    /// Human-readable cause for the error log.
    pub cause: String,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.cause)
    }
}

/// A message a store wants in nginx's error log (e.g. a malformed line at load time).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreNotice {
    pub level: NoticeLevel,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeLevel {
    Error,
    Warn,
    Info,
}

/// A store's [`Store::scope`]: its description, then a digest of `identity` (everything else
/// that decides which account a name finds: the database, the SQL user, the query, the LDAP
/// base and filter ...). A digest, not the text: short whatever the query's length, and no
/// part of the configuration is kept in a second form. Never given a password.
pub(crate) fn scope_of(desc: &str, identity: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"mail-auth store scope");
    for part in identity {
        // length-prefixed: ("ab", "c") and ("a", "bc") differ
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    format!("{desc} #{}", crate::hex::encode(&h.finalize()[..16]))
}

pub trait Store: Send + Sync {
    /// Looks the user up. `Ok(None)`: no such user. `Err`: the store is broken/unreachable.
    /// Stores that [`may_block`](Store::may_block) may re-open their file here when it changed;
    /// the others answer from memory (a watcher thread re-reads their file).
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError>;

    /// Messages gathered since the last call (load problems, reloads); the FFI layer logs them.
    fn take_notices(&self) -> Vec<StoreNotice>;

    /// A short description for logs, e.g. `passwd file "/etc/mail/users"`.
    fn describe(&self) -> String;

    /// What a cached verdict and a client's trust for an account (the limiter's, the fleet's)
    /// are bound to: everything that decides which account a name finds, so that two stores
    /// that may find different accounts under one name never share one. The passwd-file's is
    /// its [`describe`](Store::describe) (the path); the others add a digest of the rest (see
    /// [`scope_of`]). Stores keep it from their construction; it is the same after a reload
    /// that changes nothing (trust marks outlive reloads in shared memory). Never logged.
    fn scope(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Owned(self.describe())
    }

    /// The costliest stored hash of the store (by `scheme::cost_estimate`), if it can tell:
    /// unknown users are verified against it so their answer takes as long as the slowest
    /// account's (see `engine::verify`).
    fn timing_template(&self) -> Option<String> {
        None
    }

    /// [`timing_template`](Store::timing_template) without copying it (asked once per
    /// verification): stores that keep it override this.
    fn shared_timing_template(&self) -> Option<std::sync::Arc<str>> {
        self.timing_template().map(Into::into)
    }

    /// [`lookup`](Store::lookup), then [`shared_timing_template`](Store::shared_timing_template)
    /// (in that order: a store may learn its template on its first lookup): what a password
    /// login asks of a store. Stores that keep both in one place override it to read them at
    /// once.
    /// (The account comes boxed, as a verification holds it: an account is a few hundred
    /// bytes, moved once.)
    fn lookup_and_template(&self, q: &Query<'_>) -> (Lookup, Option<std::sync::Arc<str>>) {
        let found = self.lookup(q).map(|a| a.map(Box::new));
        (found, self.shared_timing_template())
    }

    /// Whether a verdict on this store's stored values may be kept in the verdict cache. `false`
    /// for a store whose server checks the password itself (LDAP in bind mode): the stored value
    /// it returns is made anew at each lookup, so a kept verdict would never be read.
    fn verdicts_cacheable(&self) -> bool {
        true
    }

    /// Whether a lookup may block (disk I/O, database locks): such stores are asked on the
    /// thread pool, never on nginx's event loop. In-memory stores answer `false`.
    fn may_block(&self) -> bool {
        false
    }

    /// The lookup, if it can be answered now without waiting (no lock held elsewhere, no
    /// database lock to wait for): `None` means "it would wait: ask on the thread pool". A
    /// store that never blocks answers like [`lookup`](Store::lookup).
    fn try_lookup(&self, q: &Query<'_>) -> Option<Result<Option<Account>, StoreError>> {
        if self.may_block() {
            None
        } else {
            Some(self.lookup(q))
        }
    }

    /// Every account name the store holds (Dovecot's userdb iterate, `mail_auth_json`'s
    /// `?mode=list-accounts`), handed to `each` one at a time, in no particular order; `each`
    /// returning `false` stops the walk. May block (a file, a database): call it on the thread
    /// pool. A store that cannot list its accounts answers `Err`.
    fn accounts(&self, each: &mut dyn FnMut(&str) -> bool) -> Result<(), StoreError> {
        let _ = each;
        Err(StoreError { source: self.describe(), cause: "this store cannot list its accounts".into() })
    }
}

/// Locks a store's mutex; a panic elsewhere while it was held must not take the store down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
