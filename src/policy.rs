//! Per-account policy: enabled flag, allowed protocols, allowed client networks, client
//! certificate.
//!
//! Plain Rust, no nginx types.
//!
//! Decisions:
//! * Networks are [`Cidr`](crate::cidr::Cidr)s: IPv4-mapped IPv6 clients match IPv4 rules.
//! * `networks: Some(empty list)` allows nowhere; `protocols: Some(empty list)` allows nothing.
//!   `None` means no restriction.
//! * A network rule with no known client IP (nginx listening on a unix socket) refuses.
//! * `require_client_cert`: the login's connection is TLS with a client certificate nginx
//!   verified (`Auth-SSL-Verify: SUCCESS`: `ssl_verify_client on` or `optional` with
//!   `ssl_client_certificate`); an account that also has a `cert_fingerprint` extra field accepts
//!   only that certificate (SHA-1 as `Auth-SSL-Fingerprint`, colons and case ignored). Result
//!   `cert-denied`. Like every policy refusal it is decided after the password check and the
//!   client sees "Invalid login or password" (a right password is not revealed).

#![forbid(unsafe_code)]

use crate::cidr::canonical_ip;
use crate::engine::AuthResult;
use crate::protocol::{AuthRequest, Protocol};
use crate::store::Account;

/// An account refused by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `Disabled`, `ProtocolDenied`, `NetworkDenied` or `CertDenied`.
    pub result: AuthResult,
    /// For the log.
    pub reason: String,
}

/// A `client_cert` value (passwd-file extra field, SQLite column): `required` (or yes, on,
/// true, 1) → `true`; `optional` (or no, off, false, 0, none) → `false`; any case. Anything
/// else is `None` (the caller fails closed).
pub fn parse_client_cert(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "required" | "yes" | "on" | "true" | "1" => Some(true),
        "optional" | "no" | "off" | "false" | "0" | "none" => Some(false),
        _ => None,
    }
}

/// A SHA-1 fingerprint in any spelling (`AB:CD:..`, `abcd..`): its hex digits, lower case.
pub(crate) fn normalise_fingerprint(f: &str) -> String {
    f.chars().filter(|c| c.is_ascii_hexdigit()).map(|c| c.to_ascii_lowercase()).collect()
}

/// The account's pinned certificate (`cert_fingerprint` extra field), if it has one.
pub(crate) fn pinned_fingerprint(acct: &Account) -> Option<&str> {
    acct.extra.iter().find(|(k, _)| k == "cert_fingerprint").map(|(_, v)| v.as_str())
}

/// Whether the request's client certificate is the pinned one (an empty pin matches nothing).
pub(crate) fn fingerprint_matches(req: &AuthRequest, pinned: &str) -> bool {
    let got = req.ssl.as_ref().and_then(|s| s.fingerprint.as_deref()).map(normalise_fingerprint);
    let want = normalise_fingerprint(pinned);
    !want.is_empty() && got.as_deref() == Some(want.as_str())
}

/// How far ahead of now Dovecot's `delay_until` may be: beyond it Dovecot fails the login.
const DELAY_UNTIL_MAX: u64 = 300;

/// Checks `enabled`, `delay_until`, `protocols`, `networks`, `real_networks` and
/// `require_client_cert` of an account against a request.
pub fn check_account(acct: &Account, req: &AuthRequest) -> Result<(), Refusal> {
    if !acct.enabled {
        return Err(Refusal { result: AuthResult::Disabled, reason: "account disabled".to_string() });
    }
    if let Some(until) = acct.delay_until {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if until > now.saturating_add(DELAY_UNTIL_MAX) {
            return Err(Refusal {
                result: AuthResult::Disabled,
                reason: format!(
                    "delay_until={until} is more than {DELAY_UNTIL_MAX} s ahead (Dovecot fails such a login)"
                ),
            });
        }
    }
    check_restrictions(acct.protocols.as_deref(), acct.networks.as_deref(), req)?;
    if let Some(nets) = &acct.real_networks {
        if !req.peer_ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip))) {
            let peer = req.peer_ip.map_or_else(|| "unknown".to_string(), |ip| canonical_ip(ip).to_string());
            return Err(Refusal {
                result: AuthResult::NetworkDenied,
                reason: format!("connection from {peer}, not in allow_real_nets"),
            });
        }
    }
    check_client_cert(acct, req)
}

/// Checks a protocol list and a network list (`None`: no restriction) against a request: the
/// rules of an account, or of one of its app passwords.
pub fn check_restrictions(
    protocols: Option<&[Protocol]>,
    networks: Option<&[crate::cidr::Cidr]>,
    req: &AuthRequest,
) -> Result<(), Refusal> {
    if let Some(protocols) = protocols {
        if !protocols.contains(&req.protocol) {
            let allowed: Vec<&str> = protocols.iter().map(|p| p.as_str()).collect();
            return Err(Refusal {
                result: AuthResult::ProtocolDenied,
                reason: format!(
                    "protocol {} not allowed (allowed: {})",
                    req.protocol,
                    if allowed.is_empty() { "none".to_string() } else { allowed.join(",") }
                ),
            });
        }
    }
    if let Some(networks) = networks {
        match req.client_ip {
            None => {
                return Err(Refusal {
                    result: AuthResult::NetworkDenied,
                    reason: "client address unknown, account is restricted to networks".to_string(),
                })
            }
            Some(ip) => {
                if !networks.iter().any(|n| n.contains(ip)) {
                    return Err(Refusal {
                        result: AuthResult::NetworkDenied,
                        reason: format!("client {} not in allowed networks", canonical_ip(ip)),
                    });
                }
            }
        }
    }
    Ok(())
}

/// `require_client_cert` (and the pinned `cert_fingerprint`) of an account: for every
/// credential of it.
fn check_client_cert(acct: &Account, req: &AuthRequest) -> Result<(), Refusal> {
    if acct.require_client_cert {
        let verify = req.ssl.as_ref().and_then(|s| s.verify.as_deref());
        if !req.tls() || verify != Some("SUCCESS") {
            let got = match verify {
                Some(v) if req.tls() => v,
                _ if req.tls() => "absent: ssl_verify_client is off on this listener",
                _ => "absent: no TLS",
            };
            return Err(Refusal {
                result: AuthResult::CertDenied,
                reason: format!("account requires a verified client certificate (Auth-SSL-Verify: {got})"),
            });
        }
        if let Some(pinned) = pinned_fingerprint(acct) {
            if !fingerprint_matches(req, pinned) {
                return Err(Refusal {
                    result: AuthResult::CertDenied,
                    reason: "client certificate is not the account's cert_fingerprint".to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::Cidr;
    use crate::protocol::Method;
    use std::net::IpAddr;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn req(protocol: Protocol, client: Option<&str>) -> AuthRequest {
        AuthRequest {
            method: Method::Plain,
            user: "alice".into(),
            pass: b"pw"[..].into(),
            protocol,
            login_attempt: 1,
            client_ip: client.map(ip),
            peer_ip: client.map(ip),
            salt: None,
            smtp_from: None,
            smtp_to: None,
            ssl: None,
            listener: None,
        }
    }

    fn acct() -> Account {
        Account { password: "{PLAIN}pw".into(), enabled: true, ..Account::default() }
    }

    #[test]
    fn check_enabled() {
        let r = req(Protocol::Imap, Some("127.0.0.1"));
        assert_eq!(check_account(&acct(), &r), Ok(()));
        let a = Account { enabled: false, ..acct() };
        assert_eq!(check_account(&a, &r).unwrap_err().result.as_str(), "disabled");
    }

    #[test]
    fn check_protocols() {
        let a = Account { protocols: Some(vec![Protocol::Imap, Protocol::Smtp]), ..acct() };
        assert_eq!(check_account(&a, &req(Protocol::Imap, None)), Ok(()));
        assert_eq!(check_account(&a, &req(Protocol::Smtp, None)), Ok(()));
        let e = check_account(&a, &req(Protocol::Pop3, None)).unwrap_err();
        assert_eq!(e.result.as_str(), "protocol-denied");
        assert_eq!(e.reason, "protocol pop3 not allowed (allowed: imap,smtp)");
        let none = Account { protocols: Some(vec![]), ..acct() };
        assert_eq!(check_account(&none, &req(Protocol::Imap, None)).unwrap_err().result.as_str(), "protocol-denied");
    }

    #[test]
    fn check_networks() {
        let a = Account { networks: Some(vec![c("127.0.0.0/8"), c("::1")]), ..acct() };
        assert_eq!(check_account(&a, &req(Protocol::Imap, Some("127.0.0.1"))), Ok(()));
        assert_eq!(check_account(&a, &req(Protocol::Imap, Some("::1"))), Ok(()));
        assert_eq!(check_account(&a, &req(Protocol::Imap, Some("::ffff:127.0.0.5"))), Ok(()));
        let e = check_account(&a, &req(Protocol::Imap, Some("192.0.2.1"))).unwrap_err();
        assert_eq!(e.result.as_str(), "network-denied");
        assert_eq!(e.reason, "client 192.0.2.1 not in allowed networks");
        let e = check_account(&a, &req(Protocol::Imap, None)).unwrap_err();
        assert_eq!(e.result.as_str(), "network-denied");
        let nowhere = Account { networks: Some(vec![]), ..acct() };
        assert!(check_account(&nowhere, &req(Protocol::Imap, Some("127.0.0.1"))).is_err());
    }

    #[test]
    fn check_real_networks_and_delay_until() {
        // allow_real_nets: the connection's own address, not the client a balancer names
        let a = Account { real_networks: Some(vec![c("10.0.0.0/8")]), ..acct() };
        let mut r = req(Protocol::Imap, Some("192.0.2.7"));
        r.peer_ip = Some(ip("10.1.1.1"));
        assert_eq!(check_account(&a, &r), Ok(()));
        assert_eq!(check_account(&a, &req(Protocol::Imap, Some("10.1.1.1"))), Ok(()));
        let e = check_account(&a, &req(Protocol::Imap, Some("192.0.2.7"))).unwrap_err();
        assert_eq!(
            (e.result.as_str(), e.reason.as_str()),
            ("network-denied", "connection from 192.0.2.7, not in allow_real_nets")
        );
        assert!(check_account(&a, &req(Protocol::Imap, None)).is_err(), "a unix-socket peer is in no network");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let r = req(Protocol::Imap, Some("127.0.0.1"));
        for (until, ok) in [(now - 10, true), (now + 200, true), (now + 400, false)] {
            let a = Account { delay_until: Some(until), ..acct() };
            assert_eq!(check_account(&a, &r).is_ok(), ok, "delay_until now{:+}", until as i64 - now as i64);
        }
    }

    #[test]
    fn client_cert_values() {
        for v in ["required", "REQUIRED", "yes", "on", "true", "1"] {
            assert_eq!(parse_client_cert(v), Some(true), "{v}");
        }
        for v in ["optional", "no", "Off", "false", "0", "none"] {
            assert_eq!(parse_client_cert(v), Some(false), "{v}");
        }
        for v in ["", "require", "maybe", "2"] {
            assert_eq!(parse_client_cert(v), None, "{v}");
        }
    }

    #[test]
    fn check_client_cert() {
        use crate::protocol::SslInfo;
        let tls = |verify: Option<&str>, fp: Option<&str>| {
            let mut r = req(Protocol::Imap, Some("127.0.0.1"));
            r.ssl = Some(SslInfo {
                on: true,
                verify: verify.map(Into::into),
                subject: Some("CN=alice".into()),
                fingerprint: fp.map(Into::into),
            });
            r
        };
        let a = Account { require_client_cert: true, ..acct() };
        assert_eq!(check_account(&a, &tls(Some("SUCCESS"), Some("ab:cd"))), Ok(()));
        // and the account without the requirement needs nothing
        assert_eq!(check_account(&acct(), &req(Protocol::Imap, None)), Ok(()));
        for (r, why) in [
            (req(Protocol::Imap, None), "absent: no TLS"),
            (tls(None, None), "absent: ssl_verify_client is off on this listener"),
            (tls(Some("NONE"), None), "NONE"),
            (tls(Some("FAILED:self-signed certificate"), Some("ab:cd")), "FAILED:self-signed certificate"),
        ] {
            let e = check_account(&a, &r).unwrap_err();
            assert_eq!(e.result.as_str(), "cert-denied");
            assert_eq!(e.reason, format!("account requires a verified client certificate (Auth-SSL-Verify: {why})"));
        }
        // details without Auth-SSL: on are not a TLS connection
        let mut r = tls(Some("SUCCESS"), None);
        r.ssl.as_mut().unwrap().on = false;
        assert!(check_account(&a, &r).is_err());
        // a pinned certificate
        let pinned = Account { extra: vec![("cert_fingerprint".into(), "AB:CD".into())], ..a.clone() };
        assert_eq!(check_account(&pinned, &tls(Some("SUCCESS"), Some("abcd"))), Ok(()));
        let e = check_account(&pinned, &tls(Some("SUCCESS"), Some("ab:ce"))).unwrap_err();
        assert_eq!(e.reason, "client certificate is not the account's cert_fingerprint");
        assert!(check_account(&pinned, &tls(Some("SUCCESS"), None)).is_err());
        let empty = Account { extra: vec![("cert_fingerprint".into(), "".into())], ..a };
        assert!(check_account(&empty, &tls(Some("SUCCESS"), Some("abcd"))).is_err());
    }

    #[test]
    fn disabled_checked_first() {
        let a = Account { enabled: false, protocols: Some(vec![]), networks: Some(vec![]), ..acct() };
        assert_eq!(check_account(&a, &req(Protocol::Imap, None)).unwrap_err().result.as_str(), "disabled");
    }
}
