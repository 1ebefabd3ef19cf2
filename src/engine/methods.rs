//! The SASL methods that carry no password to verify against a hash:
//! * `apop` / `cram-md5`: the client's response to nginx's challenge (`Auth-Salt`) is checked
//!   against a stored password that keeps what the method needs (`{PLAIN}`-like, or Dovecot's
//!   `{CRAM-MD5}` for CRAM-MD5); other stored schemes are refused (result `method-denied`, the
//!   log says why). These checks are cheap and never cached (a response is only good for its
//!   challenge).
//! * `external`: the client certificate, verified by nginx (`Auth-SSL-Verify: SUCCESS`),
//!   names the account by the CN of its subject; an authorization identity the client gave
//!   must be that name; an account with a `cert_fingerprint` field accepts only that
//!   certificate (SHA-1, as `Auth-SSL-Fingerprint`). Anything else: result `cert-denied`.
//! * `xoauth2` / `oauthbearer`: the bearer token, verified by [`crate::oauth`] (see [`oauth`]);
//!   a refused token is result `invalid-token`, its reason names the rule and the claim.

#![forbid(unsafe_code)]

use super::decide::{accept_account, credential_refusal, query, shown};
use super::outcome::{fail, policy_wait, temp_fail, AuthResult, Outcome};
use base64::Engine as _;

use crate::config::AuthConfig;
use crate::oauth::{TokenError, Verified, Verifier};
use crate::policy::{check_account, fingerprint_matches, pinned_fingerprint};
use crate::protocol::{AuthRequest, AuthResponse, Method};
use crate::scheme::{self, Challenge, ChallengeError};
use crate::store::{Account, Store};

/// APOP / CRAM-MD5: the response to nginx's challenge, checked against the stored password
/// (after `gate`, asked with the account's own name, let it: see [`super::decide::lookup_with`]).
pub fn challenge(
    cfg: &AuthConfig,
    req: &AuthRequest,
    store: &dyn Store,
    gate: &mut dyn FnMut(&str) -> Option<Outcome>,
) -> Outcome {
    let kind = if req.method == Method::Apop { Challenge::Apop } else { Challenge::CramMd5 };
    let Some(salt) = req.salt.as_deref().filter(|s| !s.is_empty()) else {
        return fail(cfg, req, None, AuthResult::BadRequest, format!("{} without Auth-Salt", req.method));
    };
    if req.pass.is_empty() {
        return fail(cfg, req, None, AuthResult::Invalid, "empty response".to_string());
    }
    let account = match store.lookup(&query(req, &req.user)) {
        Err(e) => return temp_fail(cfg, req, AuthResult::StoreError, e.to_string()),
        Ok(None) => {
            // the same (cheap) work as for a known user
            let _ = scheme::verify_challenge(kind, "{PLAIN}-", salt, &req.pass);
            return fail(cfg, req, None, AuthResult::UnknownUser, "no such user".to_string());
        }
        Ok(Some(a)) => a,
    };
    if let Some(o) = gate(&account.name) {
        return o;
    }
    let refusal = check_account(&account, req).err();
    // without the right response, the location's wait, as for an unknown user (see
    // decide::finish)
    match scheme::verify_challenge(kind, &account.password, salt, &req.pass) {
        Err(e @ ChallengeError::Unsuitable(_)) => {
            fail(cfg, req, None, AuthResult::MethodDenied, format!("{} login refused: {e}", req.method))
        }
        Err(ChallengeError::Scheme(e)) => {
            fail(cfg, req, None, AuthResult::SchemeError, format!("stored password unusable: {e}"))
        }
        // counted like a wrong response: whoever tries it does not know the account has none
        Err(e @ ChallengeError::Empty) => {
            fail(cfg, req, None, AuthResult::Invalid, format!("{} login refused: {e}", req.method))
        }
        Ok(false) => {
            let reason = match &refusal {
                None => format!("wrong {} response", req.method),
                Some(rf) => format!("wrong {} response ({} too)", req.method, rf.reason),
            };
            fail(cfg, req, None, AuthResult::Invalid, reason)
        }
        // the main password's response: refused where only app passwords are accepted
        Ok(true) => match refusal.or_else(|| credential_refusal(cfg, req, &account, None)) {
            Some(rf) => fail(cfg, req, policy_wait(req, account.wait, rf.result), rf.result, rf.reason),
            None => accept_account(cfg, req, &account, &req.user),
        },
    }
}

/// The CN of an RFC 2253 distinguished name (as nginx sends `Auth-SSL-Subject`; `None` when it
/// has none or several), with its escapes undone. OpenSSL's RFC 2253 form escapes every byte of a non-ASCII character
/// (`jürgen` is `j\C3\BCrgen`): the escaped bytes are UTF-8, decoded as such (a CN that is
/// not UTF-8 is none).
pub fn subject_cn(dn: &str) -> Option<String> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = dn.bytes().peekable();
    while let Some(c) = bytes.next() {
        match c {
            b'\\' => {
                let Some(n) = bytes.next() else { break };
                // \XX: a hex-escaped byte; anything else stands for itself
                match (crate::hex::digit(n), bytes.peek().copied().and_then(crate::hex::digit)) {
                    (Some(hi), Some(lo)) => {
                        bytes.next();
                        cur.push(hi << 4 | lo);
                    }
                    _ => cur.push(n),
                }
            }
            b',' | b'+' | b';' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut cns = parts.into_iter().filter_map(|p| {
        let eq = p.iter().position(|&b| b == b'=')?;
        let (k, v) = (&p[..eq], &p[eq + 1..]);
        k.trim_ascii().eq_ignore_ascii_case(b"CN").then(|| v.to_vec())
    });
    let cn = cns.next().filter(|v| !v.is_empty())?;
    // several CNs name no one: the RFC 2253 form lists them in reverse, so the first here is
    // the certificate's last, while OpenSSL's lookups, Dovecot's cert_username and whoever
    // vetted the request read its first (a CA copying every CN of a request let a holder of
    // CN=mallory add CN=alice and log in as alice)
    if cns.next().is_some() {
        return None;
    }
    String::from_utf8(cn).ok()
}

/// EXTERNAL: the verified client certificate names the account.
pub fn external(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Outcome {
    let ssl = req.ssl.as_ref();
    let verify = ssl.and_then(|s| s.verify.as_deref());
    if verify != Some("SUCCESS") {
        return fail(
            cfg,
            req,
            None,
            AuthResult::CertDenied,
            format!(
                "client certificate not verified (Auth-SSL-Verify: {})",
                verify.unwrap_or("absent; ssl_verify_client is off or no TLS")
            ),
        );
    }
    let Some(cn) = ssl.and_then(|s| s.subject.as_deref()).and_then(subject_cn) else {
        return fail(
            cfg,
            req,
            None,
            AuthResult::CertDenied,
            "no CN, or several, in the client certificate's subject".to_string(),
        );
    };
    let with_cn = |mut o: Outcome| {
        o.user = Some(cn.clone());
        o
    };
    let cn_fail = |result, reason: String| with_cn(fail(cfg, req, None, result, reason));
    if !req.user.is_empty() && req.user != cn {
        return cn_fail(
            AuthResult::CertDenied,
            format!("authorization identity \"{}\" is not the certificate's CN", shown(&req.user)),
        );
    }
    if cn.chars().any(char::is_control) {
        return cn_fail(AuthResult::CertDenied, "control characters in the certificate's CN".to_string());
    }
    let account = match store.lookup(&query(req, &cn)) {
        Err(e) => return with_cn(temp_fail(cfg, req, AuthResult::StoreError, e.to_string())),
        Ok(None) => return cn_fail(AuthResult::UnknownUser, "no such user (certificate CN)".to_string()),
        Ok(Some(a)) => a,
    };
    if let Some(pinned) = pinned_fingerprint(&account) {
        if !fingerprint_matches(req, pinned) {
            return cn_fail(
                AuthResult::CertDenied,
                "certificate fingerprint is not the account's cert_fingerprint".to_string(),
            );
        }
    }
    if let Err(rf) = check_account(&account, req) {
        return with_cn(fail(cfg, req, policy_wait(req, account.wait, rf.result), rf.result, rf.reason));
    }
    with_cn(accept_account(cfg, req, &account, &cn))
}

/// The RFC 7628 error for `Auth-Error-SASL` (`invalid_token` unless `e` says otherwise).
pub(crate) fn oauth_error(verifier: Option<&Verifier>, e: Option<&TokenError>) -> String {
    let e = e.unwrap_or(&TokenError::BadSignature);
    match verifier {
        Some(v) => v.error_sasl(e),
        None => base64::engine::general_purpose::STANDARD.encode(format!("{{\"status\":\"{}\"}}", e.status())),
    }
}

/// XOAUTH2 / OAUTHBEARER: the bearer token (`Auth-Pass`) verified locally, its mailbox claim
/// equal to `Auth-User`; then, with a store, the account looked up as `Auth-User` and its
/// policy and routing applied as for a password login (an account the store does not have is
/// refused: `unknown-user`). Without a store the configured backend is used. The backend login
/// needs a password nginx does not have (the client gave a token): the account's backend
/// password, the master user, or a recoverable stored password; IMAP/POP3 without any of them
/// are refused (`method-denied`), SMTP goes on without.
/// `check` verifies the token (the JWT path, or introspection: see the engine); `claim` names
/// the mailbox claim for the log.
pub fn oauth(
    cfg: &AuthConfig,
    req: &AuthRequest,
    store: Option<&dyn Store>,
    verifier: Option<&Verifier>,
    check: impl FnOnce(&Verifier) -> (Result<Verified, TokenError>, &str),
) -> Outcome {
    let Some(v) = verifier else {
        return fail(
            cfg,
            req,
            None,
            AuthResult::MethodDenied,
            format!("{} login refused: no mail_auth_oauth2_jwks in this location", req.method),
        );
    };
    let (checked, claim) = check(v);
    match checked {
        Ok(_) => {}
        Err(e @ TokenError::Introspection(_)) => {
            return temp_fail(cfg, req, AuthResult::StoreError, format!("token not checked: {e}"))
        }
        Err(e) if e.is_temporary() => {
            return temp_fail(cfg, req, AuthResult::InternalError, format!("token not checked: {e}"))
        }
        Err(e) => {
            let mut o =
                fail(cfg, req, None, AuthResult::InvalidToken, format!("token refused: {e} (user claim \"{claim}\")"));
            if let AuthResponse::Fail { error_sasl, .. } = &mut o.response {
                *error_sasl = Some(oauth_error(Some(v), Some(&e)));
            }
            return o;
        }
    }
    let mut o = match store {
        None => accept_account(cfg, req, &Account { enabled: true, ..Account::default() }, &req.user),
        Some(store) => match store.lookup(&query(req, &req.user)) {
            Err(e) => temp_fail(cfg, req, AuthResult::StoreError, e.to_string()),
            Ok(None) => {
                fail(cfg, req, None, AuthResult::UnknownUser, "token verified but no such user in the store".into())
            }
            Ok(Some(account)) => match check_account(&account, req) {
                Err(rf) => fail(
                    cfg,
                    req,
                    policy_wait(req, account.wait, rf.result),
                    rf.result,
                    format!("token verified but {}", rf.reason),
                ),
                Ok(()) => accept_account(cfg, req, &account, &req.user),
            },
        },
    };
    if o.result == AuthResult::Ok {
        o.reason = format!("token verified (claim \"{claim}\"), {}", o.full_reason());
        o.backend_reason = false;
    }
    o
}
