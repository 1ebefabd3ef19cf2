//! Per-account policy: enabled flag, allowed protocols, allowed client networks.
//!
//! Plain Rust, no nginx types.
//!
//! Decisions:
//! * Networks are [`Cidr`](crate::cidr::Cidr)s: IPv4-mapped IPv6 clients match IPv4 rules.
//! * `networks: Some(empty list)` allows nowhere; `protocols: Some(empty list)` allows nothing.
//!   `None` means no restriction.
//! * A network rule with no known client IP (nginx listening on a unix socket) refuses.

#![forbid(unsafe_code)]

use crate::cidr::canonical_ip;
use crate::engine::AuthResult;
use crate::protocol::{AuthRequest, Protocol};
use crate::store::Account;

/// An account refused by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `Disabled`, `ProtocolDenied` or `NetworkDenied`.
    pub result: AuthResult,
    /// For the log.
    pub reason: String,
}

/// Checks `enabled`, `protocols` and `networks` of an account against a request.
pub fn check_account(acct: &Account, req: &AuthRequest) -> Result<(), Refusal> {
    if !acct.enabled {
        return Err(Refusal { result: AuthResult::Disabled, reason: "account disabled".to_string() });
    }
    check_restrictions(acct.protocols.as_deref(), acct.networks.as_deref(), req)
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
            salt: None,
            smtp_from: None,
            smtp_to: None,
            ssl: None,
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
    fn disabled_checked_first() {
        let a = Account { enabled: false, protocols: Some(vec![]), networks: Some(vec![]), ..acct() };
        assert_eq!(check_account(&a, &req(Protocol::Imap, None)).unwrap_err().result.as_str(), "disabled");
    }
}
