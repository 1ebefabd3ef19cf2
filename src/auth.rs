//! The authentication decision, in steps so that a costly password verification can run on a
//! thread pool: [`begin`] (lookup + policy), [`Pending::run`] (verification, any thread),
//! [`finish`] (the answer). [`decide`] does all three inline.
//!
//! Plain Rust, no nginx types.
//!
//! Rules (fail closed):
//! * `plain` / `login`: the password is verified against the stored hash (below).
//! * `apop` / `cram-md5`: the client's response to nginx's challenge (`Auth-Salt`) is checked
//!   against a stored password that keeps what the method needs (`{PLAIN}`-like, or Dovecot's
//!   `{CRAM-MD5}` for CRAM-MD5); other stored schemes are refused (result `method-denied`, the
//!   log says why). These checks are cheap and never cached (a response is only good for its
//!   challenge).
//! * `external`: the client certificate, verified by nginx (`Auth-SSL-Verify: SUCCESS`),
//!   names the account by the CN of its subject; an authorization identity the client gave
//!   must be that name; an account with a `cert_fingerprint` field accepts only that
//!   certificate (SHA-1, as `Auth-SSL-Fingerprint`). Anything else: result `cert-denied`.
//! * `none` (SMTP without AUTH): relay policy. The recipient's domain (`Auth-SMTP-To`) must be
//!   one of `relay_domains` (`.example.org` also matches its subdomains); then the answer is
//!   the `mx` backend; otherwise `Auth-Error-Code: 550 5.7.1` (result `relay-denied`).
//! * These methods make nginx forget the client's password, so an OK answer must carry
//!   `Auth-Pass` (IMAP/POP3): the account's backend password, else the master user's, else the
//!   recoverable stored password; without one the login is refused (`method-denied`).
//! * An empty password is refused before the lookup (result `invalid`), known user or not.
//! * Unknown user: a verification against a dummy hash of the same family/cost as the most
//!   recently seen stored hash (a bcrypt cost-10 hash before any) is run anyway, so the answer
//!   takes as long as for a known user; result `unknown-user`.
//! * Policy refusals (disabled, protocol, network) are decided after the verification, for the
//!   same reason. Wrong password: result `invalid` (the reason mentions the refusal too);
//!   right password: the refusal's result. The client always sees "Invalid login or password".
//! * Unknown/malformed stored hash: result `scheme-error`, same answer to the client.
//! * Store error: temporary failure, result `store-error`. Never OK.
//! * OK needs a backend: the account's `server`/`port`, else the configured backend for the
//!   protocol (port: account, else configured, else 143/110/25). None, or one nginx could not
//!   use (not an IP literal, unsendable Auth-User/Auth-Pass) → temporary failure, result
//!   `backend-error`.
//! * A master user (`master_user`) makes every OK answer log in to the backend as
//!   `<user><separator><master>` with the master password (Dovecot master users), unless the
//!   account names its own backend login (user or password).
//! * Failure waits: the account's `wait` if it has one, else `fail_wait`; temporary failures
//!   use `temp_wait`. SMTP answers carry `Auth-Error-Code` (nginx prefixes it to the message).

use std::sync::Mutex;

use crate::policy::{check_account, Refusal};
use crate::protocol::{
    AuthRequest, AuthResponse, Method, Protocol, ProtocolError, MSG_INVALID, MSG_TEMP,
};
use crate::scheme::{self, Challenge, ChallengeError};
use crate::store::{Account, Query, Store};

/// A Dovecot-style master user: the backend login becomes `<user><separator><name>`, the
/// password `password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterUser {
    pub name: String,
    pub password: String,
    pub separator: String,
}

/// `Auth-Status` text for a refused relay recipient.
pub const MSG_RELAY: &str = "Relay access denied";

/// A backend address: `server` an IP literal, `port` 1..65535.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub server: String,
    pub port: u16,
}

/// What the handler needs to decide (from the nginx configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `mail_auth_backend imap|pop3|smtp ADDR:PORT`
    pub imap_backend: Option<Backend>,
    pub pop3_backend: Option<Backend>,
    pub smtp_backend: Option<Backend>,
    /// Auth-Wait on a failed login (`mail_auth_fail_wait`), seconds.
    pub fail_wait: u32,
    /// Auth-Wait on a temporary failure, seconds.
    pub temp_wait: u32,
    /// SMTP Auth-Error-Code on a failed login; nginx sends "<code> <message>".
    pub smtp_error_code: String,
    /// SMTP Auth-Error-Code on a temporary failure.
    pub smtp_temp_error_code: String,
    /// `mail_auth_backend mx ADDR`: where SMTP without AUTH (`none`) goes for accepted domains.
    pub mx_backend: Option<Backend>,
    /// `mail_auth_relay_domains`: lower-case domains; `.example.org` matches subdomains.
    pub relay_domains: Vec<String>,
    /// SMTP Auth-Error-Code for a refused relay recipient.
    pub smtp_relay_error_code: String,
    /// `mail_auth_master_user`.
    pub master_user: Option<MasterUser>,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            imap_backend: None,
            pop3_backend: None,
            smtp_backend: None,
            fail_wait: 3,
            temp_wait: 3,
            smtp_error_code: "535 5.7.8".to_string(),
            smtp_temp_error_code: "451 4.3.0".to_string(),
            mx_backend: None,
            relay_domains: Vec::new(),
            smtp_relay_error_code: "550 5.7.1".to_string(),
            master_user: None,
        }
    }
}

impl AuthConfig {
    /// The configured backend for a protocol.
    pub fn backend(&self, p: Protocol) -> Option<&Backend> {
        match p {
            Protocol::Imap => self.imap_backend.as_ref(),
            Protocol::Pop3 => self.pop3_backend.as_ref(),
            Protocol::Smtp => self.smtp_backend.as_ref(),
        }
    }

    /// Sets the backend for a protocol.
    pub fn set_backend(&mut self, p: Protocol, b: Backend) {
        let slot = match p {
            Protocol::Imap => &mut self.imap_backend,
            Protocol::Pop3 => &mut self.pop3_backend,
            Protocol::Smtp => &mut self.smtp_backend,
        };
        *slot = Some(b);
    }
}

/// The decision, with what the log needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub response: AuthResponse,
    /// `"ok"`, `"invalid"`, `"unknown-user"`, `"disabled"`, `"protocol-denied"`,
    /// `"network-denied"`, `"method-denied"`, `"cert-denied"`, `"relay-denied"`,
    /// `"store-error"`, `"backend-error"`, `"bad-request"`, `"scheme-error"`,
    /// `"rate-limited"`, `"internal-error"`.
    pub result: &'static str,
    /// Precise reason for the log (never sent to the client).
    pub reason: String,
    /// The login name as the client gave it.
    pub user: String,
}

/// Result of a password verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyResult {
    Match,
    Mismatch,
    /// The stored hash could not be used (unknown scheme, malformed); the text is for the log.
    Error(String),
}

#[derive(Debug, Clone)]
enum Subject {
    /// No such user: the verification runs against a dummy hash and must not count.
    Unknown,
    Known {
        account: Box<Account>,
        refusal: Option<Refusal>,
    },
}

/// A verification still to be run (possibly on another thread: `Pending` is `Send`).
/// Its `Debug` output leaves the password and the account (backend password) out.
#[derive(Clone)]
pub struct Pending {
    stored: String,
    password: Vec<u8>,
    subject: Subject,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("scheme", &scheme::scheme_name(&self.stored))
            .field("password", &"<redacted>")
            .field(
                "subject",
                &match &self.subject {
                    Subject::Unknown => "unknown user",
                    Subject::Known { refusal: None, .. } => "account",
                    Subject::Known {
                        refusal: Some(_), ..
                    } => "account (refused by policy)",
                },
            )
            .finish()
    }
}

impl Pending {
    /// The stored hash to verify against; for an unknown user, the hash whose family (scheme and
    /// cost) the dummy verification imitates.
    pub fn stored(&self) -> &str {
        &self.stored
    }

    /// Whether the verification is slow enough to belong on a thread pool.
    pub fn is_costly(&self) -> bool {
        scheme::is_costly(&self.stored)
    }

    /// Runs the verification (constant-time comparison inside `scheme`).
    pub fn run(&self) -> VerifyResult {
        let dummy;
        let target = match self.subject {
            Subject::Unknown => {
                dummy = scheme::dummy_hash(&self.stored);
                &*dummy
            }
            Subject::Known { .. } => self.stored.as_str(),
        };
        match scheme::verify(target, &self.password) {
            Ok(true) => VerifyResult::Match,
            Ok(false) => VerifyResult::Mismatch,
            Err(e) => VerifyResult::Error(e.to_string()),
        }
    }
}

/// What [`begin`] decided.
#[derive(Debug)]
pub enum Step {
    /// Answer at once.
    Answer(Outcome),
    /// Run `Pending::run` (here or on a thread), then [`finish`].
    Verify(Pending),
}

/// A real bcrypt hash (cost 10) used as the dummy-hash family before any account was seen:
/// `htpasswd -nbB -C 10 dummy 'not-a-real-password'`.
const DEFAULT_HINT: &str = "$2y$10$6B0z.tj3oE5hN.WxVX52MukGZ.L.9tkN4wSFd.7QodUyMYwtwrvDq";

/// Per store (keyed by `Store::describe`): the last stored hash that store returned, the family
/// (scheme and cost) the dummy hash for unknown users is made like. Only the hint is kept here:
/// the dummy itself is made (once, it may take as long as a bcrypt) inside `Pending::run`, i.e.
/// on the thread pool, never on nginx's event loop.
static DUMMY: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
const MAX_DUMMY_STORES: usize = 64;

fn remember_hash_family(store: &dyn Store, stored: &str) {
    let d = stored.to_string();
    let key = store.describe();
    let mut g = DUMMY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(slot) = g.iter_mut().find(|(k, _)| *k == key) {
        slot.1 = d;
    } else {
        if g.len() >= MAX_DUMMY_STORES {
            g.remove(0);
        }
        g.push((key, d));
    }
}

/// Frees the per-process state kept between requests (dummy-hash hints and dummy hashes) and
/// stops the stores' watcher threads; an nginx worker calls this as it exits.
pub fn release_process_state() {
    crate::store::stop_watchers(std::time::Duration::from_secs(2));
    drop(std::mem::take(&mut *DUMMY.lock().unwrap_or_else(|e| e.into_inner())));
    scheme::release_dummy_hashes();
}

fn dummy_hint(store: &dyn Store) -> String {
    let key = store.describe();
    let g = DUMMY.lock().unwrap_or_else(|e| e.into_inner());
    match g.iter().find(|(k, _)| *k == key) {
        Some((_, d)) => d.clone(),
        None => DEFAULT_HINT.to_string(),
    }
}

fn error_code(cfg: &AuthConfig, req_protocol: Option<Protocol>, temp: bool) -> Option<String> {
    match req_protocol {
        Some(Protocol::Smtp) => Some(if temp {
            cfg.smtp_temp_error_code.clone()
        } else {
            cfg.smtp_error_code.clone()
        }),
        _ => None,
    }
}

fn fail(
    cfg: &AuthConfig,
    req: &AuthRequest,
    wait: Option<u32>,
    result: &'static str,
    reason: String,
) -> Outcome {
    Outcome {
        response: AuthResponse::Fail {
            message: MSG_INVALID.to_string(),
            wait: Some(wait.unwrap_or(cfg.fail_wait)),
            error_code: error_code(cfg, Some(req.protocol), false),
        },
        result,
        reason,
        user: req.user.clone(),
    }
}

fn temp_fail(cfg: &AuthConfig, req: &AuthRequest, result: &'static str, reason: String) -> Outcome {
    Outcome {
        response: AuthResponse::TempFail {
            message: MSG_TEMP.to_string(),
            wait: Some(cfg.temp_wait),
            error_code: error_code(cfg, Some(req.protocol), true),
        },
        result,
        reason,
        user: req.user.clone(),
    }
}

/// The answer to a request that could not be parsed. `protocol`: the `Auth-Protocol` if the
/// caller could tell it (for the SMTP error code), else `None`.
pub fn bad_request(cfg: &AuthConfig, protocol: Option<Protocol>, err: &ProtocolError) -> Outcome {
    Outcome {
        response: AuthResponse::Fail {
            message: MSG_INVALID.to_string(),
            wait: Some(cfg.fail_wait),
            error_code: error_code(cfg, protocol, false),
        },
        result: "bad-request",
        reason: err.to_string(),
        user: String::new(),
    }
}

/// Lookup and policy. Never blocks on a password hash.
pub fn begin(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Step {
    match req.method {
        Method::Plain | Method::Login => {}
        Method::None => return Step::Answer(relay(cfg, req)),
        Method::Apop | Method::CramMd5 => return Step::Answer(challenge(cfg, req, store)),
        Method::External => return Step::Answer(external(cfg, req, store)),
    }
    if req.pass.is_empty() {
        return Step::Answer(fail(
            cfg,
            req,
            None,
            "invalid",
            "empty password".to_string(),
        ));
    }
    match store.lookup(&query(req, &req.user)) {
        Err(e) => Step::Answer(temp_fail(cfg, req, "store-error", e.to_string())),
        Ok(None) => Step::Verify(Pending {
            stored: dummy_hint(store),
            password: req.pass.clone(),
            subject: Subject::Unknown,
        }),
        Ok(Some(account)) => {
            remember_hash_family(store, &account.password);
            let refusal = check_account(&account, req).err();
            Step::Verify(Pending {
                stored: account.password.clone(),
                password: req.pass.clone(),
                subject: Subject::Known {
                    account: Box::new(account),
                    refusal,
                },
            })
        }
    }
}

/// Turns a verification result into the answer.
pub fn finish(cfg: &AuthConfig, req: &AuthRequest, pending: Pending, r: VerifyResult) -> Outcome {
    let (account, refusal) = match pending.subject {
        Subject::Unknown => {
            return fail(cfg, req, None, "unknown-user", "no such user".to_string());
        }
        Subject::Known { account, refusal } => (account, refusal),
    };
    match r {
        VerifyResult::Error(e) => fail(
            cfg,
            req,
            account.wait,
            "scheme-error",
            format!(
                "stored password unusable (scheme {}): {}",
                scheme::scheme_name(&pending.stored),
                e
            ),
        ),
        VerifyResult::Mismatch => {
            let reason = match &refusal {
                None => "wrong password".to_string(),
                Some(rf) => format!("wrong password ({} too)", rf.reason),
            };
            fail(cfg, req, account.wait, "invalid", reason)
        }
        VerifyResult::Match => match refusal {
            Some(rf) => fail(cfg, req, account.wait, rf.result, rf.reason),
            None => accept_account(cfg, req, *account, &req.user),
        },
    }
}

fn query<'a>(req: &AuthRequest, user: &'a str) -> Query<'a> {
    Query {
        user,
        protocol: req.protocol,
        method: req.method,
        client_ip: req.client_ip,
        local_ip: req.local_ip,
    }
}

/// APOP / CRAM-MD5: the response to nginx's challenge, checked against the stored password.
fn challenge(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Outcome {
    let kind = if req.method == Method::Apop { Challenge::Apop } else { Challenge::CramMd5 };
    let Some(salt) = req.salt.as_deref().filter(|s| !s.is_empty()) else {
        return fail(cfg, req, None, "bad-request", format!("{} without Auth-Salt", req.method));
    };
    if req.pass.is_empty() {
        return fail(cfg, req, None, "invalid", "empty response".to_string());
    }
    let account = match store.lookup(&query(req, &req.user)) {
        Err(e) => return temp_fail(cfg, req, "store-error", e.to_string()),
        Ok(None) => {
            // the same (cheap) work as for a known user
            let _ = scheme::verify_challenge(kind, "{PLAIN}-", salt, &req.pass);
            return fail(cfg, req, None, "unknown-user", "no such user".to_string());
        }
        Ok(Some(a)) => a,
    };
    let refusal = check_account(&account, req).err();
    match scheme::verify_challenge(kind, &account.password, salt, &req.pass) {
        Err(e @ ChallengeError::Unsuitable(_)) => {
            fail(cfg, req, account.wait, "method-denied", format!("{} login refused: {e}", req.method))
        }
        Err(ChallengeError::Scheme(e)) => fail(
            cfg,
            req,
            account.wait,
            "scheme-error",
            format!("stored password unusable: {e}"),
        ),
        Ok(false) => {
            let reason = match &refusal {
                None => format!("wrong {} response", req.method),
                Some(rf) => format!("wrong {} response ({} too)", req.method, rf.reason),
            };
            fail(cfg, req, account.wait, "invalid", reason)
        }
        Ok(true) => match refusal {
            Some(rf) => fail(cfg, req, account.wait, rf.result, rf.reason),
            None => accept_account(cfg, req, account, &req.user),
        },
    }
}

/// The first CN of an RFC 2253 distinguished name (as nginx sends `Auth-SSL-Subject`), with
/// its escapes undone.
pub fn subject_cn(dn: &str) -> Option<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = dn.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else { break };
                // \XX: a hex-escaped byte; anything else stands for itself
                match (n.to_digit(16), chars.peek().and_then(|m| m.to_digit(16))) {
                    (Some(hi), Some(lo)) => {
                        chars.next();
                        cur.push(char::from((hi * 16 + lo) as u8));
                    }
                    _ => cur.push(n),
                }
            }
            ',' | '+' | ';' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts.into_iter().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("CN") && !v.is_empty()).then(|| v.to_string())
    })
}

fn normalise_fingerprint(f: &str) -> String {
    f.chars().filter(|c| c.is_ascii_hexdigit()).map(|c| c.to_ascii_lowercase()).collect()
}

/// EXTERNAL: the verified client certificate names the account.
fn external(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Outcome {
    let ssl = req.ssl.as_ref();
    let verify = ssl.and_then(|s| s.verify.as_deref());
    if verify != Some("SUCCESS") {
        return fail(
            cfg,
            req,
            None,
            "cert-denied",
            format!(
                "client certificate not verified (Auth-SSL-Verify: {})",
                verify.unwrap_or("absent; ssl_verify_client is off or no TLS")
            ),
        );
    }
    let Some(cn) = ssl.and_then(|s| s.subject.as_deref()).and_then(subject_cn) else {
        return fail(cfg, req, None, "cert-denied", "no CN in the client certificate's subject".to_string());
    };
    let cn_fail = |result, reason: String| {
        let mut o = fail(cfg, req, None, result, reason);
        o.user = cn.clone();
        o
    };
    if !req.user.is_empty() && req.user != cn {
        return cn_fail(
            "cert-denied",
            format!("authorization identity \"{}\" is not the certificate's CN", protocol_printable(&req.user)),
        );
    }
    if cn.chars().any(char::is_control) {
        return cn_fail("cert-denied", "control characters in the certificate's CN".to_string());
    }
    let account = match store.lookup(&query(req, &cn)) {
        Err(e) => {
            let mut o = temp_fail(cfg, req, "store-error", e.to_string());
            o.user = cn;
            return o;
        }
        Ok(None) => return cn_fail("unknown-user", "no such user (certificate CN)".to_string()),
        Ok(Some(a)) => a,
    };
    if let Some((_, pinned)) = account.extra.iter().find(|(k, _)| k == "cert_fingerprint") {
        let got = ssl.and_then(|s| s.fingerprint.as_deref()).map(normalise_fingerprint);
        if got.as_deref() != Some(normalise_fingerprint(pinned).as_str()) || pinned.is_empty() {
            return cn_fail("cert-denied", "certificate fingerprint is not the account's cert_fingerprint".to_string());
        }
    }
    if let Err(rf) = check_account(&account, req) {
        let mut o = fail(cfg, req, account.wait, rf.result, rf.reason);
        o.user = cn;
        return o;
    }
    let mut o = accept_account(cfg, req, account, &cn);
    o.user = cn;
    o
}

fn protocol_printable(s: &str) -> String {
    crate::protocol::printable(s.as_bytes(), 128)
}

/// The address of an `Auth-SMTP-To` / `Auth-SMTP-From` value (`RCPT TO:<a@b> PARAMS`,
/// `MAIL FROM:<a@b>`, as nginx passes the command): what is between `<` and `>`, or the first
/// word after the colon.
pub fn smtp_address(cmd: &str) -> Option<&str> {
    let rest = match cmd.find(':') {
        Some(i) if ["RCPT TO", "MAIL FROM"].iter().any(|c| cmd[..i].trim().eq_ignore_ascii_case(c)) => &cmd[i + 1..],
        _ => cmd,
    };
    let rest = rest.trim_start();
    let addr = match rest.strip_prefix('<') {
        Some(r) => &r[..r.find('>')?],
        None => rest.split_whitespace().next()?,
    };
    (!addr.is_empty()).then_some(addr)
}

/// Is `domain` (lower case) accepted for relay by `domains`?
fn relay_domain_accepted(domains: &[String], domain: &str) -> bool {
    domains.iter().any(|d| match d.strip_prefix('.') {
        Some(parent) => domain.len() > parent.len() && domain.ends_with(d.as_str()),
        None => domain == d,
    })
}

/// SMTP without AUTH: relay to the MX backend for accepted recipient domains only.
pub fn relay(cfg: &AuthConfig, req: &AuthRequest) -> Outcome {
    let to = req.smtp_to.as_deref().unwrap_or("");
    let from = req.smtp_from.as_deref().unwrap_or("");
    let denied = |reason: String| Outcome {
        response: AuthResponse::Fail {
            message: MSG_RELAY.to_string(),
            wait: Some(cfg.fail_wait),
            error_code: Some(cfg.smtp_relay_error_code.clone()),
        },
        result: "relay-denied",
        reason,
        user: String::new(),
    };
    if req.protocol != Protocol::Smtp {
        return denied(format!("Auth-Method none for {}", req.protocol));
    }
    let Some(addr) = smtp_address(to) else {
        return denied(format!("no recipient address in \"{}\"", protocol_printable(to)));
    };
    let domain = match addr.rsplit_once('@') {
        Some((_, d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        // RFC 5321 4.5.1: <postmaster> without a domain is always accepted
        None if addr.eq_ignore_ascii_case("postmaster") => String::new(),
        None => return denied(format!("recipient <{}> has no domain", protocol_printable(addr))),
    };
    let sender = smtp_address(from).unwrap_or("");
    let shown = format!("<{}> from <{}>", protocol_printable(addr), protocol_printable(sender));
    if !domain.is_empty() && !relay_domain_accepted(&cfg.relay_domains, &domain) {
        let why = if cfg.relay_domains.is_empty() { "no mail_auth_relay_domains" } else { "domain not in mail_auth_relay_domains" };
        return denied(format!("relay to {shown} refused: {why}"));
    }
    let Some(mx) = &cfg.mx_backend else {
        return temp_fail(cfg, req, "backend-error", "no \"mail_auth_backend mx\" for accepted mail".to_string());
    };
    Outcome {
        response: AuthResponse::Ok { server: mx.server.clone(), port: mx.port, user: None, pass: None },
        result: "ok",
        reason: format!("mail for {shown} to mx {}:{}", mx.server, mx.port),
        user: String::new(),
    }
}

/// OK for `account`, known to the store as `login`.
fn accept_account(cfg: &AuthConfig, req: &AuthRequest, account: Account, login: &str) -> Outcome {
    let backend = cfg.backend(req.protocol);
    let server = match (&account.server, backend) {
        (Some(s), _) => s.clone(),
        (None, Some(b)) => b.server.clone(),
        (None, None) => {
            return temp_fail(
                cfg,
                req,
                "backend-error",
                format!("no backend for {}", req.protocol),
            )
        }
    };
    let port = account
        .port
        .or(backend.map(|b| b.port))
        .unwrap_or_else(|| req.protocol.default_port());
    // nginx forgets the client's password for these methods: the answer must give one.
    let needs_pass = !matches!(req.method, Method::Plain | Method::Login) && req.protocol != Protocol::Smtp;
    // an account that names its own backend login (user or password) keeps it
    let master = cfg
        .master_user
        .as_ref()
        .filter(|_| account.backend_user.is_none() && account.backend_pass.is_none());
    let user = match (&account.backend_user, master) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(m)) => Some(format!("{login}{}{}", m.separator, m.name)),
        (None, None) if login != req.user => Some(login.to_string()),
        (None, None) => None,
    };
    let pass = match (&account.backend_pass, master) {
        (Some(p), _) => Some(p.clone().into_bytes()),
        (None, Some(m)) => Some(m.password.clone().into_bytes()),
        (None, None) if needs_pass => match scheme::plain_password(&account.password) {
            Some(p) => Some(p),
            None => {
                return fail(
                    cfg,
                    req,
                    account.wait,
                    "method-denied",
                    format!(
                        "{} login verified but there is no password for the backend: the stored {} can't be recovered (store {{PLAIN}}, a backend password, or use mail_auth_master_user)",
                        req.method,
                        scheme::scheme_name(&account.password)
                    ),
                )
            }
        },
        (None, None) => None,
    };
    let response = AuthResponse::Ok { server, port, user, pass };
    if let Err(e) = response.validate() {
        return temp_fail(cfg, req, "backend-error", e.to_string());
    }
    let mut reason = match &response {
        AuthResponse::Ok { server, port, .. } => {
            if server.contains(':') {
                format!("backend [{server}]:{port}")
            } else {
                format!("backend {server}:{port}")
            }
        }
        _ => String::new(),
    };
    if let AuthResponse::Ok { user: Some(u), .. } = &response {
        reason.push_str(&format!(" as \"{}\"", protocol_printable(u)));
    }
    Outcome {
        response,
        result: "ok",
        reason,
        user: req.user.clone(),
    }
}

/// A refusal by the brute-force limiter (`wait`: its growing Auth-Wait). No password was
/// checked; the answer is the usual failed login.
pub fn limited(cfg: &AuthConfig, req: &AuthRequest, wait: u32, reason: String) -> Outcome {
    fail(cfg, req, Some(wait), "rate-limited", reason)
}

/// A temporary failure for a request whose decision could not be made (the verification task
/// did not run: thread pool queue full, task failed). Never OK.
pub fn temporary(cfg: &AuthConfig, req: &AuthRequest, reason: &str) -> Outcome {
    temp_fail(cfg, req, "internal-error", reason.to_string())
}

/// OK to the configured backend for the request's protocol, without a store (Basic bridge /
/// "everyone OK" mode: the access phase already decided). `reason` goes to the log. No
/// backend configured: temporary failure, result `backend-error`.
pub fn accept(cfg: &AuthConfig, req: &AuthRequest, reason: &str) -> Outcome {
    let Some(b) = cfg.backend(req.protocol) else {
        return temp_fail(
            cfg,
            req,
            "backend-error",
            format!("no backend for {}", req.protocol),
        );
    };
    let response = AuthResponse::Ok {
        server: b.server.clone(),
        port: b.port,
        user: None,
        pass: None,
    };
    if let Err(e) = response.validate() {
        return temp_fail(cfg, req, "backend-error", e.to_string());
    }
    Outcome {
        response,
        result: "ok",
        reason: reason.to_string(),
        user: req.user.clone(),
    }
}

/// Turns an HTTP error status produced by the access phase of a `mail_auth` location
/// (auth_basic / auth_request 401/403, or a 5xx) into an auth_http answer. `None` when the
/// request has no recognisable `Auth-Protocol` (not an auth_http request: leave it alone).
/// `temporary`: a temporary failure (5xx, result `store-error`) instead of a failed login
/// (result `invalid`).
pub fn refusal_from_status(
    cfg: &AuthConfig,
    headers: &[(&[u8], &[u8])],
    status: u16,
    temporary: bool,
) -> Option<Outcome> {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    };
    let protocol = Protocol::parse(find("Auth-Protocol")?.trim_ascii())?;
    let user = find("Auth-User")
        .and_then(|v| crate::protocol::unescape(v.trim_ascii()).ok())
        .map(|u| String::from_utf8_lossy(&u).into_owned())
        .unwrap_or_default();
    let reason = format!("access phase answered HTTP {status}");
    let error_code = error_code(cfg, Some(protocol), temporary);
    let (response, result) = if temporary {
        (
            AuthResponse::TempFail {
                message: MSG_TEMP.to_string(),
                wait: Some(cfg.temp_wait),
                error_code,
            },
            "store-error",
        )
    } else {
        (
            AuthResponse::Fail {
                message: MSG_INVALID.to_string(),
                wait: Some(cfg.fail_wait),
                error_code,
            },
            "invalid",
        )
    };
    Some(Outcome {
        response,
        result,
        reason,
        user,
    })
}

/// [`begin`] + [`Pending::run`] + [`finish`] inline (tests, cheap schemes).
pub fn decide(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Outcome {
    match begin(cfg, req, store) {
        Step::Answer(o) => o,
        Step::Verify(p) => {
            let r = p.run();
            finish(cfg, req, p, r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Cidr;
    use crate::store::{StoreError, StoreNotice};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// In-memory store; `broken` makes every lookup fail; counts lookups.
    #[derive(Default)]
    struct MemStore {
        users: HashMap<String, Account>,
        broken: bool,
        name: String,
        lookups: AtomicUsize,
        queries: Mutex<Vec<String>>,
    }

    impl MemStore {
        fn with(users: &[(&str, Account)]) -> MemStore {
            MemStore {
                users: users
                    .iter()
                    .map(|(u, a)| (u.to_string(), a.clone()))
                    .collect(),
                ..MemStore::default()
            }
        }
    }

    impl Store for MemStore {
        fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            self.queries.lock().unwrap().push(format!(
                "{} {} {} {:?}",
                q.user, q.protocol, q.method, q.client_ip
            ));
            if self.broken {
                return Err(StoreError {
                    source: "mem".into(),
                    cause: "disk on fire".into(),
                });
            }
            Ok(self.users.get(q.user).cloned())
        }
        fn take_notices(&self) -> Vec<StoreNotice> {
            Vec::new()
        }
        fn generation(&self) -> u64 {
            0
        }
        fn describe(&self) -> String {
            format!("mem{}", self.name)
        }
    }

    fn acct(pw: &str) -> Account {
        Account {
            password: pw.into(),
            enabled: true,
            ..Account::default()
        }
    }

    fn req(proto: Protocol, user: &str, pass: &[u8]) -> AuthRequest {
        AuthRequest {
            method: Method::Plain,
            user: user.into(),
            pass: pass.to_vec(),
            protocol: proto,
            login_attempt: 1,
            client_ip: Some("127.0.0.1".parse().unwrap()),
            client_host: None,
            salt: None,
            smtp_helo: None,
            smtp_from: None,
            smtp_to: None,
            ssl: None,
            local_ip: None,
        }
    }

    fn cfg() -> AuthConfig {
        let mut c = AuthConfig::default();
        c.set_backend(
            Protocol::Imap,
            Backend {
                server: "127.0.0.1".into(),
                port: 10143,
            },
        );
        c.set_backend(
            Protocol::Pop3,
            Backend {
                server: "::1".into(),
                port: 10110,
            },
        );
        c.set_backend(
            Protocol::Smtp,
            Backend {
                server: "127.0.0.1".into(),
                port: 10025,
            },
        );
        c
    }

    fn invalid(wait: u32) -> AuthResponse {
        AuthResponse::Fail {
            message: MSG_INVALID.into(),
            wait: Some(wait),
            error_code: None,
        }
    }

    fn store() -> MemStore {
        MemStore::with(&[
            ("alice", acct("{PLAIN}alice pw")),
            ("j\u{fc}rgen", acct("{PLAIN}p\u{e4}ss")),
            (
                "off",
                Account {
                    enabled: false,
                    ..acct("{PLAIN}pw")
                },
            ),
            (
                "imaponly",
                Account {
                    protocols: Some(vec![Protocol::Imap]),
                    ..acct("{PLAIN}pw")
                },
            ),
            (
                "lan",
                Account {
                    networks: Some(vec![Cidr::parse("10.0.0.0/8").unwrap()]),
                    ..acct("{PLAIN}pw")
                },
            ),
            (
                "slow",
                Account {
                    wait: Some(30),
                    ..acct("{PLAIN}pw")
                },
            ),
            ("weird", acct("{NOSUCHSCHEME}abc")),
            (
                "routed",
                Account {
                    server: Some("127.0.0.2".into()),
                    port: Some(1143),
                    backend_user: Some("routed@backend".into()),
                    backend_pass: Some("master secret".into()),
                    ..acct("{PLAIN}pw")
                },
            ),
            (
                "badhost",
                Account {
                    server: Some("mail.example.com".into()),
                    ..acct("{PLAIN}pw")
                },
            ),
            (
                "badbuser",
                Account {
                    backend_user: Some("x\r\nAuth-Server: 10.6.6.6".into()),
                    ..acct("{PLAIN}pw")
                },
            ),
            (
                "portonly",
                Account {
                    port: Some(2143),
                    ..acct("{PLAIN}pw")
                },
            ),
        ])
    }

    #[test]
    fn ok_with_configured_backend() {
        let s = store();
        let o = decide(&cfg(), &req(Protocol::Imap, "alice", b"alice pw"), &s);
        assert_eq!(o.result, "ok");
        assert_eq!(
            o.response,
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 10143,
                user: None,
                pass: None
            }
        );
        assert_eq!(o.reason, "backend 127.0.0.1:10143");
        assert_eq!(o.user, "alice");
        let o = decide(
            &cfg(),
            &req(Protocol::Pop3, "j\u{fc}rgen", "p\u{e4}ss".as_bytes()),
            &s,
        );
        assert_eq!(o.result, "ok");
        assert_eq!(o.reason, "backend [::1]:10110");
        assert_eq!(
            s.queries.lock().unwrap()[0],
            "alice imap plain Some(127.0.0.1)"
        );
    }

    #[test]
    fn login_method_is_accepted_too() {
        let mut r = req(Protocol::Smtp, "alice", b"alice pw");
        r.method = Method::Login;
        assert_eq!(decide(&cfg(), &r, &store()).result, "ok");
    }

    #[test]
    fn wrong_password() {
        let o = decide(&cfg(), &req(Protocol::Imap, "alice", b"alice PW"), &store());
        assert_eq!(o.result, "invalid");
        assert_eq!(o.reason, "wrong password");
        assert_eq!(o.response, invalid(3));
    }

    #[test]
    fn smtp_failures_carry_error_codes() {
        let o = decide(&cfg(), &req(Protocol::Smtp, "alice", b"nope"), &store());
        assert_eq!(
            o.response,
            AuthResponse::Fail {
                message: MSG_INVALID.into(),
                wait: Some(3),
                error_code: Some("535 5.7.8".into())
            }
        );
        let mut broken = store();
        broken.broken = true;
        let o = decide(&cfg(), &req(Protocol::Smtp, "alice", b"alice pw"), &broken);
        assert_eq!(
            o.response,
            AuthResponse::TempFail {
                message: MSG_TEMP.into(),
                wait: Some(3),
                error_code: Some("451 4.3.0".into())
            }
        );
    }

    #[test]
    fn unknown_user_runs_dummy_verification_and_answers_like_wrong_password() {
        let s = store();
        let c = cfg();
        let r = req(Protocol::Imap, "nobody", b"whatever");
        let Step::Verify(p) = begin(&c, &r, &s) else {
            panic!("unknown user must verify")
        };
        assert_ne!(p.stored(), "", "a dummy hash is verified");
        assert_eq!(p.run(), VerifyResult::Mismatch, "the dummy never matches");
        let o = finish(&c, &r, p, VerifyResult::Match);
        assert_eq!(
            o.result, "unknown-user",
            "even a (forged) match never lets an unknown user in"
        );
        assert_eq!(o.reason, "no such user");
        let wrong = decide(&c, &req(Protocol::Imap, "alice", b"whatever"), &s);
        assert_eq!(
            o.response, wrong.response,
            "same answer as a wrong password"
        );
    }

    #[test]
    fn dummy_hash_follows_store_family() {
        let mut s = store();
        s.name = "-family".into();
        let c = cfg();
        // Before any account was seen: the bcrypt default family.
        let Step::Verify(p) = begin(&c, &req(Protocol::Imap, "ghost", b"x"), &s) else {
            panic!()
        };
        assert_eq!(p.stored(), DEFAULT_HINT);
        assert_eq!(p.run(), VerifyResult::Mismatch, "dummy verification never matches");
        // After seeing a {PLAIN} account of this store, the dummy of that family.
        let _ = decide(&c, &req(Protocol::Imap, "alice", b"x"), &s);
        let Step::Verify(p) = begin(&c, &req(Protocol::Imap, "ghost", b"x"), &s) else {
            panic!()
        };
        assert_eq!(scheme::scheme_name(p.stored()), "PLAIN");
        // even the other user's real password does not match the dummy
        let Step::Verify(p) = begin(&c, &req(Protocol::Imap, "ghost", b"alice pw"), &s) else {
            panic!()
        };
        assert_eq!(p.run(), VerifyResult::Mismatch);
        // Another store is not affected.
        let mut other = store();
        other.name = "-other".into();
        let Step::Verify(p) = begin(&c, &req(Protocol::Imap, "ghost", b"x"), &other) else {
            panic!()
        };
        assert_eq!(p.stored(), DEFAULT_HINT);
    }

    #[test]
    fn policy_refusals() {
        let s = store();
        let c = cfg();
        let o = decide(&c, &req(Protocol::Imap, "off", b"pw"), &s);
        assert_eq!(
            (o.result, o.reason.as_str()),
            ("disabled", "account disabled")
        );
        assert_eq!(o.response, invalid(3));
        let o = decide(&c, &req(Protocol::Pop3, "imaponly", b"pw"), &s);
        assert_eq!(o.result, "protocol-denied");
        assert_eq!(o.response, invalid(3));
        assert_eq!(
            decide(&c, &req(Protocol::Imap, "imaponly", b"pw"), &s).result,
            "ok"
        );
        let o = decide(&c, &req(Protocol::Imap, "lan", b"pw"), &s);
        assert_eq!(o.result, "network-denied");
        assert_eq!(o.reason, "client 127.0.0.1 not in allowed networks");
        let mut r = req(Protocol::Imap, "lan", b"pw");
        r.client_ip = Some("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(decide(&c, &r, &s).result, "ok");
    }

    #[test]
    fn refused_account_with_wrong_password_is_invalid() {
        let s = store();
        let Step::Verify(p) = begin(&cfg(), &req(Protocol::Imap, "off", b"bad"), &s) else {
            panic!("a refused account is still verified (timing)")
        };
        assert_eq!(p.stored(), "{PLAIN}pw");
        let o = decide(&cfg(), &req(Protocol::Imap, "off", b"bad"), &s);
        assert_eq!(o.result, "invalid");
        assert_eq!(o.reason, "wrong password (account disabled too)");
    }

    #[test]
    fn per_account_wait() {
        let s = store();
        let o = decide(&cfg(), &req(Protocol::Imap, "slow", b"bad"), &s);
        assert_eq!(o.response, invalid(30));
        let mut c = cfg();
        c.fail_wait = 7;
        assert_eq!(
            decide(&c, &req(Protocol::Imap, "alice", b"bad"), &s).response,
            invalid(7)
        );
        assert_eq!(
            decide(&c, &req(Protocol::Imap, "ghost", b"bad"), &s).response,
            invalid(7)
        );
    }

    #[test]
    fn scheme_error_fails_closed() {
        let o = decide(&cfg(), &req(Protocol::Imap, "weird", b"abc"), &store());
        assert_eq!(o.result, "scheme-error");
        assert!(
            o.reason.starts_with("stored password unusable (scheme "),
            "{}",
            o.reason
        );
        assert_eq!(o.response, invalid(3));
    }

    #[test]
    fn store_error_is_temporary() {
        let mut s = store();
        s.broken = true;
        let o = decide(&cfg(), &req(Protocol::Imap, "alice", b"alice pw"), &s);
        assert_eq!(o.result, "store-error");
        assert_eq!(o.reason, "mem: disk on fire");
        assert_eq!(
            o.response,
            AuthResponse::TempFail {
                message: MSG_TEMP.into(),
                wait: Some(3),
                error_code: None
            }
        );
    }

    #[test]
    fn per_user_routing_and_rewrite() {
        let o = decide(&cfg(), &req(Protocol::Imap, "routed", b"pw"), &store());
        assert_eq!(o.result, "ok");
        assert_eq!(
            o.response,
            AuthResponse::Ok {
                server: "127.0.0.2".into(),
                port: 1143,
                user: Some("routed@backend".into()),
                pass: Some(b"master secret".to_vec()),
            }
        );
        assert_eq!(o.reason, "backend 127.0.0.2:1143 as \"routed@backend\"");
        let o = decide(&cfg(), &req(Protocol::Imap, "portonly", b"pw"), &store());
        assert_eq!(
            o.response,
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 2143,
                user: None,
                pass: None
            }
        );
    }

    #[test]
    fn backend_problems_are_temporary() {
        let s = store();
        let o = decide(
            &AuthConfig::default(),
            &req(Protocol::Imap, "alice", b"alice pw"),
            &s,
        );
        assert_eq!(o.result, "backend-error");
        assert_eq!(o.reason, "no backend for imap");
        assert!(matches!(o.response, AuthResponse::TempFail { .. }));
        let o = decide(&cfg(), &req(Protocol::Imap, "badhost", b"pw"), &s);
        assert_eq!(o.result, "backend-error");
        assert!(o.reason.contains("not an IP address"), "{}", o.reason);
        let o = decide(&cfg(), &req(Protocol::Imap, "badbuser", b"pw"), &s);
        assert_eq!(o.result, "backend-error");
        assert!(matches!(o.response, AuthResponse::TempFail { .. }));
        // Account server without port and no configured backend: the protocol's usual port.
        let s2 = MemStore::with(&[(
            "r",
            Account {
                server: Some("127.0.0.3".into()),
                ..acct("{PLAIN}pw")
            },
        )]);
        let o = decide(
            &AuthConfig::default(),
            &req(Protocol::Pop3, "r", b"pw"),
            &s2,
        );
        assert_eq!(
            o.response,
            AuthResponse::Ok {
                server: "127.0.0.3".into(),
                port: 110,
                user: None,
                pass: None
            }
        );
    }

    fn ok_parts(o: &Outcome) -> (String, u16, Option<String>, Option<Vec<u8>>) {
        match &o.response {
            AuthResponse::Ok { server, port, user, pass } => (server.clone(), *port, user.clone(), pass.clone()),
            other => panic!("not OK: {other:?} ({} {})", o.result, o.reason),
        }
    }

    fn challenge_req(method: Method, proto: Protocol, user: &str, salt: &[u8], response: &str) -> AuthRequest {
        let mut r = req(proto, user, response.as_bytes());
        r.method = method;
        r.salt = Some(salt.to_vec());
        r
    }

    #[test]
    fn apop_and_cram_md5_check_the_response_and_hand_the_backend_a_password() {
        let salt = b"<4711.1700000000@mail.example>";
        let mut cram = acct(&scheme::cram_md5_stored(b"carol pw"));
        cram.extra.push(("x".into(), "y".into()));
        let s = MemStore::with(&[
            ("alice", acct("{PLAIN}alice pw")),
            ("bob", acct("$2y$04$F79D22O7l/TjxN/1V7s7eOq3ESuBGbCXDRCkeuPbmld/.B/Aq7iwW")),
            ("carol", cram),
            ("dave", Account { backend_pass: Some("dave-backend".into()), ..acct(&scheme::cram_md5_stored(b"dave pw")) }),
            ("off", Account { enabled: false, ..acct("{PLAIN}pw") }),
        ]);
        let apop = |user: &str, pw: &[u8]| {
            challenge_req(Method::Apop, Protocol::Pop3, user, salt, &scheme::challenge_response(Challenge::Apop, pw, salt))
        };
        let cram_req = |user: &str, pw: &[u8]| {
            challenge_req(Method::CramMd5, Protocol::Imap, user, salt, &scheme::challenge_response(Challenge::CramMd5, pw, salt))
        };

        // APOP: right response → OK, and nginx gets the password back (it forgot it).
        let o = decide(&cfg(), &apop("alice", b"alice pw"), &s);
        assert_eq!(ok_parts(&o), ("::1".into(), 10110, None, Some(b"alice pw".to_vec())));
        let o = decide(&cfg(), &apop("alice", b"wrong"), &s);
        assert_eq!((o.result, o.reason.as_str()), ("invalid", "wrong apop response"));
        assert_eq!(o.response, invalid(3));
        // the same response to another challenge (a replay) fails
        let mut replay = apop("alice", b"alice pw");
        replay.salt = Some(b"<1.2@other>".to_vec());
        assert_eq!(decide(&cfg(), &replay, &s).result, "invalid");
        // a bcrypt user can't use APOP: refused, the log says why
        let o = decide(&cfg(), &apop("bob", b"whatever"), &s);
        assert_eq!(o.result, "method-denied");
        assert!(o.reason.contains("BLF-CRYPT") && o.reason.contains("{PLAIN}"), "{}", o.reason);
        assert_eq!(decide(&cfg(), &apop("ghost", b"x"), &s).result, "unknown-user");
        assert_eq!(decide(&cfg(), &apop("off", b"pw"), &s).result, "disabled");
        assert_eq!(decide(&cfg(), &apop("off", b"bad"), &s).result, "invalid");
        let mut nosalt = apop("alice", b"alice pw");
        nosalt.salt = None;
        assert_eq!(decide(&cfg(), &nosalt, &s).result, "bad-request");

        // CRAM-MD5 against a {PLAIN} and a {CRAM-MD5} store.
        let o = decide(&cfg(), &cram_req("alice", b"alice pw"), &s);
        assert_eq!(ok_parts(&o).3, Some(b"alice pw".to_vec()));
        assert_eq!(decide(&cfg(), &cram_req("carol", b"wrong"), &s).result, "invalid");
        // {CRAM-MD5}: verified, but nothing to give the backend → refused with the reason
        let o = decide(&cfg(), &cram_req("carol", b"carol pw"), &s);
        assert_eq!(o.result, "method-denied");
        assert!(o.reason.contains("verified") && o.reason.contains("CRAM-MD5"), "{}", o.reason);
        // ... unless the account has a backend password, or there is a master user
        let o = decide(&cfg(), &cram_req("dave", b"dave pw"), &s);
        assert_eq!(ok_parts(&o).3, Some(b"dave-backend".to_vec()));
        let mut c = cfg();
        c.master_user = Some(MasterUser { name: "master".into(), password: "m-pw".into(), separator: "*".into() });
        let o = decide(&c, &cram_req("carol", b"carol pw"), &s);
        assert_eq!(ok_parts(&o), ("127.0.0.1".into(), 10143, Some("carol*master".into()), Some(b"m-pw".to_vec())));
        assert!(o.reason.ends_with("as \"carol*master\""), "{}", o.reason);
        // an account's own backend login wins over the master user
        let o = decide(&c, &cram_req("dave", b"dave pw"), &s);
        assert_eq!((ok_parts(&o).2, ok_parts(&o).3), (None, Some(b"dave-backend".to_vec())));
        // and the master user applies to plain logins too
        let o = decide(&c, &req(Protocol::Imap, "alice", b"alice pw"), &s);
        assert_eq!(ok_parts(&o).2, Some("alice*master".into()));
    }

    fn cert_req(verify: &str, subject: &str, authzid: &str) -> AuthRequest {
        let mut r = req(Protocol::Imap, authzid, b"");
        r.method = Method::External;
        r.ssl = Some(crate::protocol::SslInfo {
            verify: Some(verify.into()),
            subject: Some(subject.into()),
            fingerprint: Some("0a1b2c3d4e5f60718293a4b5c6d7e8f901234567".into()),
            ..Default::default()
        });
        r
    }

    #[test]
    fn external_maps_a_verified_certificate_to_its_account() {
        let s = MemStore::with(&[
            ("alice", acct("{PLAIN}alice pw")),
            ("bob", acct("$6$abc$xyz")),
            ("carol", Account {
                extra: vec![("cert_fingerprint".into(), "0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:01:23:45:67".into())],
                ..acct("{PLAIN}carol pw")
            }),
            ("dave", Account {
                extra: vec![("cert_fingerprint".into(), "ffff".into())],
                ..acct("{PLAIN}dave pw")
            }),
            ("off", Account { enabled: false, ..acct("{PLAIN}pw") }),
        ]);
        let o = decide(&cfg(), &cert_req("SUCCESS", "CN=alice,O=Test CA", ""), &s);
        assert_eq!(ok_parts(&o), ("127.0.0.1".into(), 10143, Some("alice".into()), Some(b"alice pw".to_vec())));
        assert_eq!(o.user, "alice");
        // the client may name itself, but only as the certificate's CN
        assert!(decide(&cfg(), &cert_req("SUCCESS", "CN=alice", "alice"), &s).response.is_ok());
        let o = decide(&cfg(), &cert_req("SUCCESS", "CN=alice", "bob"), &s);
        assert_eq!(o.result, "cert-denied");
        for v in ["FAILED:self signed certificate", "NONE", ""] {
            let o = decide(&cfg(), &cert_req(v, "CN=alice", ""), &s);
            assert_eq!(o.result, "cert-denied", "{v}");
            assert!(!o.response.is_ok());
        }
        let mut no_tls = cert_req("SUCCESS", "CN=alice", "");
        no_tls.ssl = None;
        assert_eq!(decide(&cfg(), &no_tls, &s).result, "cert-denied");
        assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "O=No Name", ""), &s).result, "cert-denied");
        assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "CN=ghost", ""), &s).result, "unknown-user");
        assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "CN=off", ""), &s).result, "disabled");
        // pinned fingerprint: the right certificate only (any case, colons or not)
        assert!(decide(&cfg(), &cert_req("SUCCESS", "CN=carol", ""), &s).response.is_ok());
        assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "CN=dave", ""), &s).result, "cert-denied");
        // no recoverable password and no master user: nothing to log in to the backend with
        let o = decide(&cfg(), &cert_req("SUCCESS", "CN=bob", ""), &s);
        assert_eq!(o.result, "method-denied");
        // SMTP needs no backend password
        let mut smtp = cert_req("SUCCESS", "CN=bob", "");
        smtp.protocol = Protocol::Smtp;
        let o = decide(&cfg(), &smtp, &s);
        assert_eq!(ok_parts(&o).3, None);
    }

    #[test]
    fn subject_cn_reads_rfc2253() {
        assert_eq!(subject_cn("CN=alice,O=Test").as_deref(), Some("alice"));
        assert_eq!(subject_cn("emailAddress=a@b,cn=Alice Smith,O=x").as_deref(), Some("Alice Smith"));
        assert_eq!(subject_cn(r"CN=Smith\, John,O=x").as_deref(), Some("Smith, John"));
        assert_eq!(subject_cn(r"CN=a\2Cb").as_deref(), Some("a,b"));
        assert_eq!(subject_cn("OU=x+CN=multi,O=y").as_deref(), Some("multi"));
        assert_eq!(subject_cn("CN=first,CN=second").as_deref(), Some("first"));
        assert_eq!(subject_cn("O=x"), None);
        assert_eq!(subject_cn("CN="), None);
        assert_eq!(subject_cn(""), None);
        assert_eq!(subject_cn("CN=trailing\\"), Some("trailing".into()));
    }

    fn relay_req(to: &str) -> AuthRequest {
        let mut r = req(Protocol::Smtp, "", b"");
        r.method = Method::None;
        r.smtp_helo = Some("client.example".into());
        r.smtp_from = Some("MAIL FROM:<a@elsewhere.example>".into());
        r.smtp_to = Some(to.into());
        r
    }

    #[test]
    fn smtp_without_auth_relays_only_to_accepted_domains() {
        let mut c = cfg();
        c.mx_backend = Some(Backend { server: "127.0.0.9".into(), port: 2525 });
        c.relay_domains = vec!["example.org".into(), ".sub.example.net".into()];
        let s = store();
        for to in [
            "RCPT TO:<bob@example.org>",
            "rcpt to: <Bob@EXAMPLE.org.>",
            "RCPT TO:<x@a.sub.example.net> NOTIFY=NEVER",
            "RCPT TO:<postmaster>",
        ] {
            let o = decide(&c, &relay_req(to), &s);
            assert_eq!(ok_parts(&o), ("127.0.0.9".into(), 2525, None, None), "{to}");
        }
        for to in [
            "RCPT TO:<bob@example.com>",
            "RCPT TO:<bob@sub.example.net>",
            "RCPT TO:<bob@evilexample.org>",
            "RCPT TO:<bob@example.org@evil.example>",
            "RCPT TO:<nodomain>",
            "RCPT TO:<>",
            "",
        ] {
            let o = decide(&c, &relay_req(to), &s);
            assert_eq!(o.result, "relay-denied", "{to}");
            assert_eq!(
                o.response,
                AuthResponse::Fail { message: MSG_RELAY.into(), wait: Some(3), error_code: Some("550 5.7.1".into()) },
                "{to}"
            );
        }
        // no domains configured: nothing is relayed; an accepted domain without an mx: temporary
        let o = decide(&cfg(), &relay_req("RCPT TO:<bob@example.org>"), &s);
        assert_eq!(o.result, "relay-denied");
        assert!(o.reason.contains("no mail_auth_relay_domains"), "{}", o.reason);
        let mut no_mx = c.clone();
        no_mx.mx_backend = None;
        assert_eq!(decide(&no_mx, &relay_req("RCPT TO:<bob@example.org>"), &s).result, "backend-error");
        // never for IMAP/POP3; no store lookup either way
        let mut imap = relay_req("RCPT TO:<bob@example.org>");
        imap.protocol = Protocol::Imap;
        assert_eq!(decide(&c, &imap, &s).result, "relay-denied");
        assert_eq!(s.lookups.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn smtp_addresses() {
        assert_eq!(smtp_address("RCPT TO:<a@b>"), Some("a@b"));
        assert_eq!(smtp_address("rcpt to: a@b SIZE=1"), Some("a@b"));
        assert_eq!(smtp_address("mail FROM:<x@y> BODY=8BITMIME"), Some("x@y"));
        assert_eq!(smtp_address("<a@b>"), Some("a@b"));
        assert_eq!(smtp_address("RCPT TO:<a@b"), None);
        assert_eq!(smtp_address("RCPT TO:"), None);
        assert_eq!(smtp_address("MAIL FROM:<>"), None);
    }

    #[test]
    fn empty_password_refused_for_everyone_without_lookup() {
        let s = MemStore::with(&[("empty", acct("{PLAIN}"))]);
        for u in ["empty", "ghost", ""] {
            let o = decide(&cfg(), &req(Protocol::Imap, u, b""), &s);
            assert_eq!((o.result, o.reason.as_str()), ("invalid", "empty password"));
            assert_eq!(o.response, invalid(3));
        }
        assert_eq!(s.lookups.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn pending_debug_hides_password() {
        let Step::Verify(p) = begin(
            &cfg(),
            &req(Protocol::Imap, "alice", b"s3cr3t-pw"),
            &store(),
        ) else {
            panic!()
        };
        let d = format!("{p:?}");
        assert!(!d.contains("s3cr3t-pw") && d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn steps_can_cross_threads() {
        let s = store();
        let c = cfg();
        let r = req(Protocol::Imap, "alice", b"alice pw");
        let Step::Verify(p) = begin(&c, &r, &s) else {
            panic!()
        };
        assert!(!p.is_costly(), "{{PLAIN}} is cheap");
        let (p, v) = std::thread::spawn(move || {
            let v = p.run();
            (p, v)
        })
        .join()
        .unwrap();
        assert_eq!(v, VerifyResult::Match);
        assert_eq!(finish(&c, &r, p, v).result, "ok");
    }

    #[test]
    fn accept_without_store() {
        let r = req(Protocol::Pop3, "anyone", b"x");
        let o = accept(&cfg(), &r, "access phase allowed the request");
        assert_eq!(o.result, "ok");
        assert_eq!(o.reason, "access phase allowed the request");
        assert_eq!(
            o.response,
            AuthResponse::Ok {
                server: "::1".into(),
                port: 10110,
                user: None,
                pass: None
            }
        );
        let o = accept(&AuthConfig::default(), &r, "x");
        assert_eq!(
            (o.result, o.reason.as_str()),
            ("backend-error", "no backend for pop3")
        );
        assert!(matches!(o.response, AuthResponse::TempFail { .. }));
    }

    #[test]
    fn refusal_from_http_status() {
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"auth-protocol", b"smtp"),
            (b"Auth-User", b"j%C3%BCrgen%20x"),
            (b"Auth-Pass", b"pw"),
        ];
        let o = refusal_from_status(&cfg(), &h, 401, false).unwrap();
        assert_eq!(o.result, "invalid");
        assert_eq!(o.reason, "access phase answered HTTP 401");
        assert_eq!(o.user, "j\u{fc}rgen x");
        assert_eq!(
            o.response,
            AuthResponse::Fail {
                message: MSG_INVALID.into(),
                wait: Some(3),
                error_code: Some("535 5.7.8".into())
            }
        );
        let o = refusal_from_status(&cfg(), &h, 502, true).unwrap();
        assert_eq!(o.result, "store-error");
        assert_eq!(
            o.response,
            AuthResponse::TempFail {
                message: MSG_TEMP.into(),
                wait: Some(3),
                error_code: Some("451 4.3.0".into())
            }
        );
        let imap: Vec<(&[u8], &[u8])> = vec![(b"Auth-Protocol", b"imap"), (b"Auth-User", b"%zz")];
        let o = refusal_from_status(&cfg(), &imap, 403, false).unwrap();
        assert_eq!(o.user, "", "undecodable user left out");
        assert_eq!(o.response, invalid(3));
        let plain: Vec<(&[u8], &[u8])> = vec![(b"Host", b"x")];
        assert_eq!(refusal_from_status(&cfg(), &plain, 401, false), None);
        let other: Vec<(&[u8], &[u8])> = vec![(b"Auth-Protocol", b"http")];
        assert_eq!(refusal_from_status(&cfg(), &other, 401, false), None);
    }

    /// The whole chain on real hashes: nginx-escaped headers -> parse_request -> passwd file
    /// fixtures (made by htpasswd / doveadm, see testdata/passwd/README.md) -> scheme -> answer.
    #[test]
    fn passwd_file_fixtures_end_to_end() {
        use crate::protocol::{escape, parse_request};
        use crate::store::passwd_file::PasswdFile;

        let dir = std::env::temp_dir().join(format!("ngx-mail-auth-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let mut data = include_str!("../testdata/passwd/htpasswd").to_string();
        data.push_str(include_str!("../testdata/passwd/users.passwd"));
        std::fs::write(&path, data).unwrap();
        let store = PasswdFile::open(&path).unwrap();
        let c = cfg();

        let run = |proto: &str, client: &str, user: &str, pass: &str| {
            let (eu, ep) = (escape(user.as_bytes()), escape(pass.as_bytes()));
            let h: Vec<(&[u8], &[u8])> = vec![
                (b"Auth-Method", b"plain"),
                (b"Auth-User", &eu),
                (b"Auth-Pass", &ep),
                (b"Auth-Protocol", proto.as_bytes()),
                (b"Auth-Login-Attempt", b"1"),
                (b"Client-IP", client.as_bytes()),
            ];
            let r = parse_request(h).unwrap();
            decide(&c, &r, &store)
        };
        let lo = "127.0.0.1";
        for (user, pass) in [
            ("alice", "alice secret"),
            ("bob", "bob%pw"),
            ("carol", "carol pw"),
            ("j\u{fc}rgen", "p\u{e4}ssw\u{f6}rd"),
            ("gina", "gina pw"),
        ] {
            let o = run("imap", lo, user, pass);
            assert_eq!(
                (o.result, &o.response),
                (
                    "ok",
                    &AuthResponse::Ok {
                        server: "127.0.0.1".into(),
                        port: 10143,
                        user: None,
                        pass: None
                    }
                ),
                "{user}: {}",
                o.reason
            );
            let o = run("imap", lo, user, &format!("{pass}x"));
            assert_eq!(o.result, "invalid", "{user}: {}", o.reason);
        }
        // dave: SHA512-CRYPT, allow_nets, per-user backend and backend login.
        let o = run("pop3", "::1", "dave", "dave pw");
        assert_eq!(o.result, "ok", "{}", o.reason);
        assert_eq!(
            o.response,
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 10143,
                user: Some("dave@backend".into()),
                pass: None
            }
        );
        assert_eq!(
            run("pop3", "192.0.2.1", "dave", "dave pw").result,
            "network-denied"
        );
        // erin: BLF-CRYPT, nologin.
        assert_eq!(run("imap", lo, "erin", "erin pw").result, "disabled");
        assert_eq!(run("imap", lo, "erin", "nope").result, "invalid");
        // frank: SSHA256, protocols=imap,smtp, wait=7.
        assert_eq!(run("smtp", lo, "frank", "frank pw").result, "ok");
        assert_eq!(
            run("pop3", lo, "frank", "frank pw").result,
            "protocol-denied"
        );
        assert_eq!(run("imap", lo, "frank", "bad").response, invalid(7));
        // Unknown user: same answer as a wrong password.
        let o = run("imap", lo, "mallory", "alice secret");
        assert_eq!((o.result, &o.response), ("unknown-user", &invalid(3)));
        // After a bcrypt cost-4 account, unknown users cost a bcrypt cost-4 verification.
        let _ = run("imap", lo, "alice", "x");
        let ghost = AuthRequest {
            user: "ghost".into(),
            ..req(Protocol::Imap, "", b"pw")
        };
        let Step::Verify(p) = begin(&c, &ghost, &store) else {
            panic!()
        };
        assert!(
            p.stored().starts_with("$2") && p.stored()[3..].starts_with("$04$"),
            "{}",
            p.stored()
        );
        assert!(p.is_costly());
        assert_eq!(p.run(), VerifyResult::Mismatch);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_request_outcome() {
        let e = ProtocolError::MissingHeader("Auth-Pass");
        let o = bad_request(&cfg(), Some(Protocol::Smtp), &e);
        assert_eq!(o.result, "bad-request");
        assert_eq!(o.reason, "missing header \"Auth-Pass\"");
        assert_eq!(
            o.response,
            AuthResponse::Fail {
                message: MSG_INVALID.into(),
                wait: Some(3),
                error_code: Some("535 5.7.8".into())
            }
        );
        assert_eq!(bad_request(&cfg(), None, &e).response, invalid(3));
    }
}
