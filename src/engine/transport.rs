//! The transport policy: what a login needs from the connection it came on, decided from the
//! configuration and the request alone, before the limiter, the store and any password check.
//!
//! Rules:
//! * SMTP without AUTH (`none`: the MX path, see `relay`) is never refused here.
//! * The listener is what the mail `server {}` block says of itself in
//!   [`LISTENER_HEADER`](crate::protocol::LISTENER_HEADER) (`auth_http_header`, static text).
//!   A declared listener with `auth=off` refuses every login (result `listener-denied`,
//!   "Authentication not enabled on this port", SMTP `503 5.5.1`).
//! * A login whose listener is not declared (no marker, or a name no `mail_auth_listener`
//!   declares) goes on under the location's settings, unless `mail_auth_listener_required on`:
//!   then it is a temporary failure (result `listener-unknown`, logged at `error`: the
//!   configuration is incomplete).
//! * Cleartext methods (`plain`/`login`, and the bearer tokens `xoauth2`/`oauthbearer`: a
//!   reusable secret as much as a password) without TLS (`Auth-SSL: on` absent) are refused when
//!   the listener's `require_tls=on`, or when it says nothing and `mail_auth_require_tls` names
//!   the protocol (result `tls-required`; IMAP `[PRIVACYREQUIRED]`, POP3 `[AUTH]`, SMTP
//!   `538 5.7.11`, RFC 4954's text). APOP and CRAM-MD5 do not show the password; EXTERNAL needs
//!   TLS anyway.
//! * These refusals say nothing of the user or the password (neither is looked at), cost no
//!   lookup and no verification, and do not count in the limiter. `Auth-Wait` is
//!   `mail_auth_fail_wait`: nginx keeps the session (the client may STARTTLS and log in again),
//!   `0` closes it.

#![forbid(unsafe_code)]

use super::decide::shown;
use super::outcome::{refuse, temp_fail, AuthResult, Outcome, SMTP_NO_AUTH_CODE, SMTP_TLS_REQUIRED_CODE};
use crate::config::AuthConfig;
use crate::protocol::{AuthRequest, Method, Protocol, LISTENER_HEADER, MSG_NO_AUTH, MSG_TLS_REQUIRED};

/// Whether the method sends a reusable secret the connection would show.
fn is_cleartext(m: Method) -> bool {
    matches!(m, Method::Plain | Method::Login | Method::Xoauth2 | Method::Oauthbearer)
}

/// The refusal of this request by the transport policy, if any.
pub fn check(cfg: &AuthConfig, req: &AuthRequest) -> Option<Outcome> {
    if req.method == Method::None {
        return None;
    }
    let t = &cfg.transport;
    let listener = req.listener.as_deref().and_then(|n| t.listener(n));
    if listener.is_none() && t.listener_required {
        let reason = match &req.listener {
            Some(n) => format!(
                "listener {} is not declared by any mail_auth_listener (mail_auth_listener_required on)",
                shown(n)
            ),
            None => format!(
                "no {LISTENER_HEADER} header: no auth_http_header {LISTENER_HEADER} in the mail server block (mail_auth_listener_required on)"
            ),
        };
        return Some(temp_fail(cfg, req, AuthResult::ListenerUnknown, reason));
    }
    if let Some(l) = listener.filter(|l| !l.auth) {
        return Some(refuse(
            cfg,
            req,
            AuthResult::ListenerDenied,
            MSG_NO_AUTH.to_string(),
            SMTP_NO_AUTH_CODE,
            format!("no logins on listener {} (auth=off)", l.name),
        ));
    }
    // (the reason is written only for a refusal: nothing formatted on the way to an OK)
    let by_listener = listener.and_then(|l| l.require_tls.map(|on| (on, l)));
    let needs_tls = by_listener.map_or_else(|| t.require_tls.contains(&req.protocol), |(on, _)| on);
    if needs_tls && is_cleartext(req.method) && !req.tls() {
        let why = match by_listener {
            Some((_, l)) => format!("listener {} require_tls=on", l.name),
            None => format!("mail_auth_require_tls {}", req.protocol),
        };
        let message = match req.protocol {
            Protocol::Imap => format!("[PRIVACYREQUIRED] {MSG_TLS_REQUIRED}"),
            Protocol::Pop3 => format!("[AUTH] {MSG_TLS_REQUIRED}"),
            Protocol::Smtp => MSG_TLS_REQUIRED.to_string(),
        };
        return Some(refuse(
            cfg,
            req,
            AuthResult::TlsRequired,
            message,
            SMTP_TLS_REQUIRED_CODE,
            format!("{} login without TLS ({why}); password not checked", req.method),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Listener, Transport};
    use crate::protocol::{AuthResponse, SslInfo};
    use Method as M;
    use Protocol as P;

    fn req(protocol: Protocol, method: Method, tls: bool, listener: Option<&str>) -> AuthRequest {
        AuthRequest {
            method,
            user: "alice".into(),
            pass: b"pw"[..].into(),
            protocol,
            login_attempt: 1,
            client_ip: None,
            peer_ip: None,
            salt: None,
            smtp_from: None,
            smtp_to: None,
            ssl: tls.then(|| SslInfo { on: true, ..SslInfo::default() }),
            listener: listener.map(Into::into),
        }
    }

    fn cfg(require_tls: &[Protocol], listeners: &[(&str, bool, Option<bool>)], required: bool) -> AuthConfig {
        AuthConfig {
            transport: Transport {
                require_tls: require_tls.to_vec(),
                listeners: listeners
                    .iter()
                    .map(|&(n, auth, tls)| Listener { name: n.into(), auth, require_tls: tls })
                    .collect(),
                listener_required: required,
            },
            fail_wait: 2,
            ..AuthConfig::default()
        }
    }

    fn fail_parts(o: &Outcome) -> (&str, Option<u32>, Option<&str>) {
        match &o.response {
            AuthResponse::Fail { message, wait, error_code, .. } => (message, *wait, error_code.as_deref()),
            r => panic!("not a failure: {r:?}"),
        }
    }

    #[test]
    fn cleartext_without_tls_refused_per_protocol() {
        let c = cfg(&[P::Imap, P::Smtp], &[], false);
        let o = check(&c, &req(P::Imap, M::Plain, false, None)).unwrap();
        assert_eq!(o.result, AuthResult::TlsRequired);
        assert_eq!(
            fail_parts(&o),
            ("[PRIVACYREQUIRED] Encryption required for requested authentication mechanism", Some(2), None)
        );
        assert!(o.reason.contains("mail_auth_require_tls imap"), "{}", o.reason);
        let o = check(&c, &req(P::Smtp, M::Login, false, None)).unwrap();
        assert_eq!(
            fail_parts(&o),
            ("Encryption required for requested authentication mechanism", Some(2), Some("538 5.7.11"))
        );
        assert_eq!(check(&c, &req(P::Smtp, M::Xoauth2, false, None)).unwrap().result, AuthResult::TlsRequired);
        assert_eq!(check(&c, &req(P::Imap, M::Oauthbearer, false, None)).unwrap().result, AuthResult::TlsRequired);
        // not required for pop3 here
        assert_eq!(check(&c, &req(P::Pop3, M::Plain, false, None)), None);
        // with TLS, or with a method that shows no password: nothing to refuse
        assert_eq!(check(&c, &req(P::Imap, M::Plain, true, None)), None);
        for m in [M::Apop, M::CramMd5, M::External, M::None] {
            assert_eq!(check(&c, &req(P::Imap, m, false, None)), None, "{m}");
        }
        let all = cfg(&[P::Imap, P::Pop3, P::Smtp], &[], false);
        let o = check(&all, &req(P::Pop3, M::Plain, false, None)).unwrap();
        assert_eq!(fail_parts(&o).0, "[AUTH] Encryption required for requested authentication mechanism");
        // nothing configured: nothing refused
        assert_eq!(check(&AuthConfig::default(), &req(P::Imap, M::Plain, false, Some("x"))), None);
    }

    #[test]
    fn listeners() {
        let c = cfg(&[P::Imap], &[("mx", false, None), ("lan", true, Some(false)), ("sub", true, Some(true))], false);
        // auth=off refuses every login method, TLS or not; SMTP without AUTH goes on
        for (m, tls) in
            [(M::Plain, true), (M::Plain, false), (M::CramMd5, false), (M::External, true), (M::Xoauth2, true)]
        {
            let o = check(&c, &req(P::Smtp, m, tls, Some("MX"))).unwrap();
            assert_eq!(o.result, AuthResult::ListenerDenied);
            assert_eq!(fail_parts(&o), ("Authentication not enabled on this port", Some(2), Some("503 5.5.1")));
        }
        assert_eq!(check(&c, &req(P::Smtp, M::None, false, Some("mx"))), None);
        let o = check(&c, &req(P::Imap, M::Plain, true, Some("mx"))).unwrap();
        assert_eq!(fail_parts(&o), ("Authentication not enabled on this port", Some(2), None));
        // require_tls=off on a listener overrides mail_auth_require_tls
        assert_eq!(check(&c, &req(P::Imap, M::Plain, false, Some("lan"))), None);
        // require_tls=on adds a protocol mail_auth_require_tls does not name
        let o = check(&c, &req(P::Smtp, M::Plain, false, Some("sub"))).unwrap();
        assert_eq!(o.result, AuthResult::TlsRequired);
        assert!(o.reason.contains("listener sub require_tls=on"), "{}", o.reason);
        assert_eq!(check(&c, &req(P::Smtp, M::Plain, true, Some("sub"))), None);
        // an undeclared listener: the location's settings
        assert_eq!(check(&c, &req(P::Imap, M::Plain, false, Some("other"))).unwrap().result, AuthResult::TlsRequired);
        assert_eq!(check(&c, &req(P::Smtp, M::Plain, false, Some("other"))), None);
    }

    #[test]
    fn undeclared_listener_fails_closed_only_when_asked() {
        let c = cfg(&[], &[("mx", false, None), ("sub", true, None)], true);
        for listener in [None, Some("other")] {
            let o = check(&c, &req(P::Smtp, M::Plain, true, listener)).unwrap();
            assert_eq!(o.result, AuthResult::ListenerUnknown);
            assert!(matches!(o.response, AuthResponse::TempFail { .. }), "{o:?}");
            assert!(o.result.is_operator_problem());
        }
        assert_eq!(check(&c, &req(P::Smtp, M::Plain, true, Some("sub"))), None);
        // SMTP without AUTH is not a login: not refused
        assert_eq!(check(&c, &req(P::Smtp, M::None, false, None)), None);
    }
}
