//! The real client behind a PROXY-protocol load balancer (`mail_auth_real_ip_from`).
//!
//! nginx mail with `listen ... proxy_protocol` sends the balancer's address as `Client-IP` and
//! the address the PROXY header named as `Proxy-Protocol-Addr` (unless `set_real_ip_from` in
//! `mail {}` already made `Client-IP` the real client). When `Client-IP` is inside one of the
//! networks listed here, `Proxy-Protocol-Addr` is the client for the whole decision (account
//! network rules, the limiter, the SQLite `:client_ip`, the log line).
//!
//! Plain Rust, no nginx types.
//!
//! Decisions:
//! * Only a listed balancer is believed: from any other `Client-IP` the header is ignored (a
//!   client that reaches a `proxy_protocol` listener directly names whatever it likes in its
//!   PROXY header).
//! * A trusted balancer that sent no `Proxy-Protocol-Addr` (a listener without
//!   `proxy_protocol`, `PROXY UNKNOWN`, a v2 `LOCAL` health check) is the client itself, as
//!   with nginx's `set_real_ip_from`.
//! * A trusted balancer whose `Proxy-Protocol-Addr` is not an IP address (nginx checks only the
//!   characters of a v1 header: `PROXY TCP4 999.1.2.3 ...` reaches us as `999.1.2.3`), or that
//!   is repeated, is a temporary failure with an `error` log line, never the balancer's address:
//!   an account restricted to the balancer's (internal) network must not let in an unknown
//!   client, and one client's failures must not lock out everyone behind the balancer.
//!   (nginx's `set_real_ip_from` keeps the balancer's address there.)
//! * `unix:` trusts a `Client-IP` of `unix:` (nginx mail listening on a unix socket), as
//!   `set_real_ip_from unix:` does.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

use crate::cidr::{canonical_ip, Cidr};

/// The balancers whose PROXY-protocol address is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<Cidr>,
    unix: bool,
}

impl TrustedProxies {
    /// Adds the arguments of one `mail_auth_real_ip_from` directive: addresses, networks
    /// (`10.0.0.0/8`, `2001:db8::/32`) or `unix:`.
    pub fn add(&mut self, args: &[&str]) -> Result<(), String> {
        for a in args {
            if *a == "unix:" {
                self.unix = true;
                continue;
            }
            let c = Cidr::parse(a).map_err(|e| e.to_string())?;
            if !self.nets.contains(&c) {
                self.nets.push(c);
            }
        }
        Ok(())
    }

    /// Parses one directive's arguments.
    pub fn parse(args: &[&str]) -> Result<TrustedProxies, String> {
        let mut t = TrustedProxies::default();
        t.add(args)?;
        Ok(t)
    }

    /// Nothing listed: `Proxy-Protocol-Addr` is never looked at.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.unix
    }

    /// Whether a `Client-IP` value (as nginx sent it, trimmed) names a listed balancer.
    pub fn trusts(&self, client_ip: &[u8]) -> bool {
        if client_ip.starts_with(b"unix:") {
            return self.unix;
        }
        match crate::protocol::parse_ip(client_ip) {
            Some(ip) => self.nets.iter().any(|n| n.contains(ip)),
            None => false,
        }
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for n in &self.nets {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{n}")?;
            first = false;
        }
        if self.unix {
            f.write_str(if first { "unix:" } else { " unix:" })?;
        }
        Ok(())
    }
}

/// Who the client is, from `Client-IP` and `Proxy-Protocol-Addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealClient {
    /// `Client-IP` is the client: no trusted balancer, or it named no address.
    Direct,
    /// The address a trusted balancer named (IPv4-mapped IPv6 as IPv4).
    Proxied { client: IpAddr },
    /// A trusted balancer named no usable address: why, for the log (escaped when logged).
    Malformed(String),
}

/// The client of a request whose `Client-IP` is `client_ip` and whose first
/// `Proxy-Protocol-Addr` is `pp` (values trimmed), that header sent `count` times (more than
/// once is malformed).
pub fn resolve(trusted: &TrustedProxies, client_ip: Option<&[u8]>, pp: Option<&[u8]>, count: usize) -> RealClient {
    let Some(pp) = pp.filter(|_| !trusted.is_empty()) else {
        return RealClient::Direct;
    };
    let Some(proxy) = client_ip.filter(|c| trusted.trusts(c)) else {
        return RealClient::Direct;
    };
    let from = text(proxy);
    if count > 1 {
        return RealClient::Malformed(format!("trusted proxy {from} sent Proxy-Protocol-Addr {count} times"));
    }
    // nginx sends the address bare (v1: as the PROXY line had it; v2: formatted by nginx)
    match std::str::from_utf8(pp).ok().and_then(|s| s.parse::<IpAddr>().ok()) {
        Some(ip) => RealClient::Proxied { client: canonical_ip(ip) },
        None => RealClient::Malformed(format!(
            "Proxy-Protocol-Addr '{}' from trusted proxy {from} is not an IP address",
            text(pp)
        )),
    }
}

/// A header value for a reason (the decision line escapes it; long ones are cut).
fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(args).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        let p = t(&["10.0.0.0/8", "192.0.2.7", "::1", "unix:", "10.1.2.3/8"]);
        assert_eq!(p.to_string(), "10.0.0.0/8 192.0.2.7/32 ::1/128 unix:");
        assert!(!p.is_empty());
        assert!(t(&[]).is_empty());
        assert_eq!(t(&["unix:"]).to_string(), "unix:");
        for bad in ["host.example", "10.0.0.0/33", "unix", "", "unix:/run/x.sock"] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad:?}");
        }
        let mut p = t(&["127.0.0.1"]);
        p.add(&["::1"]).unwrap();
        assert_eq!(p.to_string(), "127.0.0.1/32 ::1/128");
    }

    #[test]
    fn trusts() {
        let p = t(&["10.0.0.0/8", "::1"]);
        assert!(p.trusts(b"10.9.8.7"));
        assert!(p.trusts(b"::ffff:10.9.8.7"), "IPv4-mapped balancer");
        assert!(p.trusts(b"::1"));
        assert!(p.trusts(b"[::1]"));
        assert!(!p.trusts(b"11.0.0.1"));
        assert!(!p.trusts(b"unix:"), "unix: not listed");
        assert!(!p.trusts(b"garbage"));
        assert!(!p.trusts(b""));
        assert!(t(&["unix:"]).trusts(b"unix:"));
    }

    #[test]
    fn resolve_cases() {
        let p = t(&["127.0.0.1", "unix:"]);
        let r = |c: Option<&str>, pp: &[&str]| {
            resolve(&p, c.map(str::as_bytes), pp.first().map(|v| v.as_bytes()), pp.len())
        };
        assert_eq!(r(Some("127.0.0.1"), &["127.0.0.66"]), RealClient::Proxied { client: ip("127.0.0.66") });
        assert_eq!(r(Some("127.0.0.1"), &["2001:db8::1"]), RealClient::Proxied { client: ip("2001:db8::1") });
        assert_eq!(r(Some("127.0.0.1"), &["::ffff:192.0.2.1"]), RealClient::Proxied { client: ip("192.0.2.1") });
        assert_eq!(r(Some("unix:"), &["192.0.2.9"]), RealClient::Proxied { client: ip("192.0.2.9") });
        // untrusted source: the header is not believed
        assert_eq!(r(Some("127.0.0.2"), &["127.0.0.66"]), RealClient::Direct);
        assert_eq!(r(Some("127.0.0.2"), &["garbage"]), RealClient::Direct);
        assert_eq!(r(None, &["127.0.0.66"]), RealClient::Direct);
        // trusted, no header: the balancer itself
        assert_eq!(r(Some("127.0.0.1"), &[]), RealClient::Direct);
        // trusted, unusable header
        for bad in ["999.1.2.3", "", "1.2.3", "::::", "127.0.0.1:5", "[::1]", "fe80::1%eth0"] {
            match r(Some("127.0.0.1"), &[bad]) {
                RealClient::Malformed(why) => assert!(why.contains("not an IP address"), "{why}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        match r(Some("127.0.0.1"), &["127.0.0.66", "127.0.0.77"]) {
            RealClient::Malformed(why) => assert!(why.contains("2 times"), "{why}"),
            other => panic!("{other:?}"),
        }
        // nothing listed: never looked at
        assert_eq!(resolve(&TrustedProxies::default(), Some(b"127.0.0.1"), Some(b"x"), 1), RealClient::Direct);
    }

    #[test]
    fn malformed_reason_is_cut() {
        let p = t(&["127.0.0.1"]);
        let long = vec![b'1'; 5000];
        let RealClient::Malformed(why) = resolve(&p, Some(b"127.0.0.1"), Some(&long), 1) else { panic!() };
        assert!(why.len() < 200, "{why}");
    }
}
