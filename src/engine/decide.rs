//! The decision steps that need no thread: lookup and policy ([`begin`]), the answer after a
//! verification ([`finish`]), and the OK answer ([`accept_account`], [`accept`]).
//!
//! Rules (fail closed):
//! * `plain` / `login`: the password is verified against the stored hash.
//! * An empty password is refused before the lookup (result `invalid`), known user or not.
//! * Unknown user: a verification against the store's timing template is run anyway (see
//!   `verify`), result `unknown-user`.
//! * Policy refusals (disabled, protocol, network) are decided after the verification, for the
//!   same reason. Wrong password: result `invalid` (the reason mentions the refusal too);
//!   right password: the refusal's result. The client sees "Invalid login or password"
//!   (IMAP `[AUTHENTICATIONFAILED]`, POP3 `[AUTH]`), except for the right password of a
//!   disabled account: IMAP `[CONTACTADMIN]` (see `outcome::fail`).
//! * Unknown/malformed stored hash: result `scheme-error`, same answer to the client.
//! * Store error: temporary failure, result `store-error`. Never OK.
//! * OK needs a backend: the account's `server`/`port`, else the configured backend for the
//!   protocol (port: account, else configured, else 143/110/25). None, or one nginx could not
//!   use (not an IP literal, unsendable Auth-User/Auth-Pass) → temporary failure, result
//!   `backend-error`.
//! * A master user (`master_user`) makes every IMAP/POP3 OK answer log in to the backend as
//!   `<user><separator><master>` with the master password (Dovecot master users), unless the
//!   account names its own backend login (user or password). SMTP gets it only for APOP-like
//!   methods whose stored password can't be recovered (nginx passes the login on in XCLIENT
//!   `LOGIN=`, which must name the user whenever possible).
//! * When nginx has no password of the client's to pass on (APOP, CRAM-MD5, EXTERNAL) the OK
//!   answer carries one: the account's backend password, else the master user's (IMAP/POP3),
//!   else the recoverable stored password. IMAP/POP3 without one is refused
//!   (`method-denied`); SMTP goes on without (nginx needs one only with `proxy_smtp_auth on`).
//! * Failure waits: the account's `wait` if it has one, else `fail_wait`. SMTP answers carry
//!   `Auth-Error-Code` (nginx prefixes it to the message).

#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::outcome::{fail, policy_wait, temp_fail, AuthResult, Outcome};
use super::verify::{Pending, Subject, VerifyResult};
use crate::config::AuthConfig;
use crate::policy::{check_account, check_restrictions, Refusal};
use crate::protocol::{bad_server, AuthRequest, AuthResponse, Method, Protocol, ServerAddr};
use crate::scheme;
use crate::store::{Account, Query, Store};

/// A store's answer to a lookup.
pub type Found = Result<Option<Account>, crate::store::StoreError>;

/// What [`begin`] decided.
#[derive(Debug)]
pub enum Step {
    /// Answer at once.
    Answer(Outcome),
    /// Run `Pending::run` (here or on a thread), then [`finish`].
    Verify(Pending),
}

pub(crate) fn query<'a>(req: &'a AuthRequest, user: &'a str) -> Query<'a> {
    let password = matches!(req.method, Method::Plain | Method::Login).then_some(&req.pass[..]);
    Query { user, protocol: req.protocol, method: req.method, client_ip: req.client_ip, password }
}

/// The store's timing template (its costliest stored hash), or the default.
pub(crate) fn template(store: &dyn Store) -> std::sync::Arc<str> {
    store.shared_timing_template().unwrap_or_else(default_template)
}

/// [`super::verify::DEFAULT_TEMPLATE`], for a store that names none.
fn default_template() -> std::sync::Arc<str> {
    static DEFAULT: std::sync::OnceLock<std::sync::Arc<str>> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| super::verify::DEFAULT_TEMPLATE.into()).clone()
}

/// Lookup and policy for any method that carries credentials: `plain`/`login` go on to a
/// verification, the others are answered at once.
pub fn lookup(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Step {
    lookup_with(cfg, req, store, None, &mut |_| None)
}

/// [`lookup`], with the store's answer if it was already asked (`plain`/`login` only). `gate`
/// is asked with the account's name (as the store spells it; empty: as asked) after the lookup
/// and before a challenge's response is checked (APOP/CRAM-MD5): `Some` answers instead (the
/// limiter refuses that account).
pub fn lookup_with(
    cfg: &AuthConfig,
    req: &AuthRequest,
    store: &dyn Store,
    found: Option<Found>,
    gate: &mut dyn FnMut(&str) -> Option<Outcome>,
) -> Step {
    match req.method {
        Method::Plain | Method::Login => begin_with(cfg, req, store, found),
        Method::Apop | Method::CramMd5 => Step::Answer(super::methods::challenge(cfg, req, store, gate)),
        Method::External => Step::Answer(super::methods::external(cfg, req, store)),
        // without the location's verifier (the engine passes it): refused
        Method::Xoauth2 | Method::Oauthbearer => {
            Step::Answer(super::methods::oauth(cfg, req, Some(store), None, |v| {
                (v.verify(&req.pass, &req.user, super::unix_now()), v.cfg.user_claim.as_str())
            }))
        }
        Method::None => Step::Answer(super::relay::relay(cfg, req)),
    }
}

/// `plain`/`login`: lookup and policy. Never blocks on a password hash.
pub fn begin(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Step {
    begin_with(cfg, req, store, None)
}

/// [`begin`], with the store's answer if it was already asked.
pub fn begin_with(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store, found: Option<Found>) -> Step {
    if req.pass.is_empty() {
        return Step::Answer(fail(cfg, req, None, AuthResult::Invalid, "empty password".to_string()));
    }
    // the lookup first: a store may learn its template on its first lookup (SQLite)
    let (found, template) = match found {
        Some(found) => (found.map(|a| a.map(Box::new)), template(store)),
        None => {
            let (found, template) = store.lookup_and_template(&query(req, &req.user));
            (found, template.unwrap_or_else(default_template))
        }
    };
    match found {
        Err(e) => Step::Answer(temp_fail(cfg, req, AuthResult::StoreError, e.to_string())),
        Ok(None) => Step::Verify(Pending::new(template, Subject::Unknown, req.pass.len())),
        Ok(Some(account)) => {
            let refusal = check_account(&account, req).err();
            let subject = Subject::Known { account, refusal };
            Step::Verify(Pending::new(template, subject, req.pass.len()))
        }
    }
}

/// Turns a verification result into the answer.
pub fn finish(cfg: &AuthConfig, req: &AuthRequest, pending: Pending, r: VerifyResult) -> Outcome {
    if r == VerifyResult::Overloaded {
        return temp_fail(
            cfg,
            req,
            AuthResult::Overloaded,
            "too many costly verifications in this worker (mail_auth_verify_concurrency)".to_string(),
        );
    }
    let apps = pending.app_passwords();
    let matched = pending.matched();
    let (account, refusal) = match pending.subject {
        Subject::Unknown => return fail(cfg, req, None, AuthResult::UnknownUser, "no such user".to_string()),
        Subject::Known { account, refusal } => (account, refusal),
    };
    match r {
        // No password proven: the location's wait, as for an unknown user (an account's own
        // `wait` would tell a guesser that it exists). Only a client that gave the right
        // password gets the account's.
        VerifyResult::Error(e) => fail(
            cfg,
            req,
            None,
            AuthResult::SchemeError,
            format!("stored password unusable (scheme {}): {}", scheme::scheme_name(&account.password), e),
        ),
        VerifyResult::Mismatch | VerifyResult::Overloaded => {
            let tried = match apps {
                0 => String::new(),
                1 => " (main password and 1 app password tried)".to_string(),
                n => format!(" (main password and {n} app passwords tried)"),
            };
            let reason = match &refusal {
                None => format!("wrong password{tried}"),
                Some(rf) => format!("wrong password{tried} ({} too)", rf.reason),
            };
            fail(cfg, req, None, AuthResult::Invalid, reason)
        }
        VerifyResult::Match => {
            let app = matched.filter(|&i| i > 0).map(|i| usize::from(i) - 1);
            let label = app.and_then(|i| account.app_passwords.get(i)).map(|a| a.label.clone());
            let refusal = refusal.or_else(|| credential_refusal(cfg, req, &account, app));
            match (refusal, label) {
                (Some(rf), Some(l)) => fail(
                    cfg,
                    req,
                    policy_wait(req, account.wait, rf.result),
                    rf.result,
                    format!("app password '{l}': {}", rf.reason),
                ),
                (Some(rf), None) => fail(cfg, req, policy_wait(req, account.wait, rf.result), rf.result, rf.reason),
                (None, label) => {
                    let mut o = accept_account(cfg, req, &account, &req.user);
                    if let (Some(l), AuthResult::Ok) = (label, o.result) {
                        let _ = write!(o.reason, " (app password '{l}')");
                    }
                    o
                }
            }
        }
    }
}

/// Whether a verification that matched ends in a refusal all the same: the account's rules
/// (found at the lookup) or those of the credential that matched. Such a refusal must cost what
/// a wrong password costs (its padding to the store's template, a verdict kept no longer), or
/// the time would confirm the guess.
pub(crate) fn refused_after_match(cfg: &AuthConfig, req: &AuthRequest, p: &Pending) -> bool {
    match &p.subject {
        Subject::Unknown => false,
        Subject::Known { refusal: Some(_), .. } => true,
        Subject::Known { account, refusal: None } => {
            let app = p.matched().filter(|&i| i > 0).map(|i| usize::from(i) - 1);
            credential_refusal(cfg, req, account, app).is_some()
        }
    }
}

/// The rules of the credential that matched: an app password's protocols and networks; for
/// the main password (`app: None`), `mail_auth_app_only` and the account's `app_only`.
pub(crate) fn credential_refusal(
    cfg: &AuthConfig,
    req: &AuthRequest,
    account: &Account,
    app: Option<usize>,
) -> Option<Refusal> {
    match app.and_then(|i| account.app_passwords.get(i)) {
        Some(a) => check_restrictions(a.protocols.as_deref(), a.networks.as_deref(), req).err(),
        None => {
            let denied = cfg.app_only.contains(&req.protocol)
                || account.app_only.as_ref().is_some_and(|l| l.contains(&req.protocol));
            denied.then(|| Refusal {
                result: AuthResult::ProtocolDenied,
                reason: format!("main password not accepted for {} (app passwords only)", req.protocol),
            })
        }
    }
}

/// OK for `account`, known to the store as `login`.
pub(crate) fn accept_account(cfg: &AuthConfig, req: &AuthRequest, account: &Account, login: &str) -> Outcome {
    let backend = cfg.backend(req.protocol);
    if let Some(b) = backend.filter(|_| cfg.names_no_backend) {
        // the JSON API answers with the account, never a backend: the account's own backend
        // address and login (an unusable `host=`, a `user=` without a recoverable password)
        // are not its concern, and refusing them made a setup matter look like a wrong password
        return ok(cfg, req, AuthResponse::Ok { server: b.server.clone(), port: b.port, user: None, pass: None }, None);
    }
    let server = match (&account.server, backend) {
        (Some(s), _) => match ServerAddr::parse(s) {
            Some(s) => s,
            None => return temp_fail(cfg, req, AuthResult::BackendError, bad_server(s).to_string()),
        },
        (None, Some(b)) => b.server.clone(),
        (None, None) => {
            return temp_fail(cfg, req, AuthResult::BackendError, format!("no backend for {}", req.protocol))
        }
    };
    let port = account.port.or(backend.map(|b| b.port)).unwrap_or_else(|| req.protocol.default_port());
    // nginx forgets the client's password for these methods: the answer should give one.
    let needs_pass = !matches!(req.method, Method::Plain | Method::Login);
    // an account that names its own backend login (user or password) keeps it; SMTP gets the
    // master login only when nothing else can give the backend a password (see the module doc)
    let smtp_needs_master = needs_pass && scheme::plain_password(&account.password).is_none();
    let master = cfg
        .master_user
        .as_ref()
        .filter(|_| req.protocol != Protocol::Smtp || smtp_needs_master)
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
            None if req.protocol == Protocol::Smtp => None,
            None => {
                // the location's wait, as a wrong response gets: the account's would confirm it
                return fail(
                    cfg,
                    req,
                    None,
                    AuthResult::MethodDenied,
                    format!(
                        "{} login verified but there is no password for the backend: the stored {} can't be recovered (store {{PLAIN}}, a backend password, or use mail_auth_master_user)",
                        req.method,
                        scheme::scheme_name(&account.password)
                    ),
                );
            }
        },
        (None, None) => None,
    };
    ok(cfg, req, AuthResponse::Ok { server, port, user, pass }, None)
}

/// An OK answer after checking that nginx can use it; `reason` replaces the default
/// ("backend ADDR:PORT as USER").
fn ok(cfg: &AuthConfig, req: &AuthRequest, response: AuthResponse, reason: Option<&str>) -> Outcome {
    if let Err(e) = response.validate() {
        return temp_fail(cfg, req, AuthResult::BackendError, e.to_string());
    }
    // the default reason ("backend ADDR:PORT as USER") is written only if the line is
    let (reason, backend_reason) = match (reason, &response) {
        (Some(r), _) => (r.to_string(), false),
        (None, AuthResponse::Ok { .. }) => (String::new(), true),
        (None, _) => (String::new(), false),
    };
    Outcome { response, result: AuthResult::Ok, reason, backend_reason, user: None }
}

/// OK to the configured backend for the request's protocol, without a store (Basic bridge:
/// the access phase already decided), presented as any account with nothing of its own
/// (`mail_auth_master_user` included). No backend configured: temporary failure.
pub fn accept(cfg: &AuthConfig, req: &AuthRequest, reason: &str) -> Outcome {
    let mut o = accept_account(cfg, req, &Account { enabled: true, ..Account::default() }, &req.user);
    if o.result == AuthResult::Ok {
        o.reason = reason.to_string();
        o.backend_reason = false;
    }
    o
}

/// For log reasons: a client-given value, shortened (the log line escapes it).
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(128).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}
