//! IPv4 and IPv6 networks (`Cidr`), as account rules (`allow_nets`, a `networks` column) name
//! them.
//!
//! Plain Rust, no nginx types.
//!
//! Decisions:
//! * A bare address is a host rule (/32 or /128). Host bits set below the prefix
//!   (`10.1.2.3/8`) are accepted and cleared.
//! * IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is treated as IPv4 on both sides: a client
//!   `::ffff:10.0.0.1` matches `10.0.0.0/8`, and a rule `::ffff:10.0.0.0/104` is the IPv4 rule
//!   `10.0.0.0/8`.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

fn mapped_v4(a: &Ipv6Addr) -> Option<Ipv4Addr> {
    match a.segments() {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        _ => None,
    }
}

/// The address with IPv4-mapped IPv6 turned into IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match mapped_v4(&a) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn mask_v4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
    Ipv4Addr::from(u32::from(a) & m)
}

fn mask_v6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
    Ipv6Addr::from(u128::from(a) & m)
}

impl Cidr {
    /// Builds a network from an address and a prefix length (host bits are cleared).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return Err(CidrError(format!("prefix /{prefix} too long for IPv4")));
                }
                Ok(Cidr { addr: IpAddr::V4(mask_v4(a, prefix)), prefix })
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return Err(CidrError(format!("prefix /{prefix} too long for IPv6")));
                }
                // ::ffff:0:0/96 and longer: an IPv4 rule in disguise.
                if prefix >= 96 {
                    if let Some(v4) = mapped_v4(&a) {
                        return Ok(Cidr { addr: IpAddr::V4(mask_v4(v4, prefix - 96)), prefix: prefix - 96 });
                    }
                }
                Ok(Cidr { addr: IpAddr::V6(mask_v6(a, prefix)), prefix })
            }
        }
    }

    /// Parses `10.0.0.0/8`, `192.0.2.1`, `2001:db8::/32`, `::1`, `[::1]/128`.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let t = s.trim();
        let (a, p) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let a = a.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(a);
        let addr: IpAddr = a.parse().map_err(|_| CidrError(format!("\"{t}\" is not an IP address or network")))?;
        let prefix = match p {
            None => match addr {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            },
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError(format!("bad prefix length in \"{t}\"")));
                }
                p.parse::<u8>().map_err(|_| CidrError(format!("bad prefix length in \"{t}\"")))?
            }
        };
        Cidr::new(addr, prefix).map_err(|e| CidrError(format!("\"{t}\": {e}")))
    }

    /// Whether `s` (a valid network) has address bits set below its prefix (`10.1.2.3/8`):
    /// accepted and cleared by [`Cidr::parse`], but seldom what was meant (`192.0.2.10/2` for
    /// `/32` is a quarter of IPv4). nginx warns for its own lists (`allow`,
    /// `set_real_ip_from`): "low address bits of ... are meaningless".
    pub fn has_host_bits(s: &str) -> bool {
        let Ok(net) = Cidr::parse(s) else { return false };
        let t = s.trim();
        let a = t.split_once('/').map_or(t, |(a, _)| a);
        let a = a.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(a);
        let Ok(addr) = a.parse::<IpAddr>() else { return false };
        // a mapped IPv6 rule of /96 or longer became an IPv4 one: compare it as IPv4
        let addr = if net.addr.is_ipv4() { canonical_ip(addr) } else { addr };
        addr != net.addr
    }

    /// Parses a list separated by commas and/or whitespace. Empty input gives an empty list.
    /// Dovecot's keyword `local` (a connection with no remote address, a UNIX socket) is taken
    /// and matches nothing: every login through nginx comes with the client's address.
    pub fn parse_list(s: &str) -> Result<Vec<Cidr>, CidrError> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty() && !Cidr::is_local_keyword(p))
            .map(Cidr::parse)
            .collect()
    }

    /// Dovecot's `local` in an `allow_nets` list.
    pub fn is_local_keyword(s: &str) -> bool {
        s.trim().eq_ignore_ascii_case("local")
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 clients match IPv4 rules).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => mask_v4(a, self.prefix) == net,
            (IpAddr::V6(net), IpAddr::V6(a)) => mask_v6(a, self.prefix) == net,
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(c("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(c("::1").to_string(), "::1/128");
        assert_eq!(c("[::1]").to_string(), "::1/128");
        assert_eq!(c("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(c(" 10.1.2.3/8 ").to_string(), "10.0.0.0/8", "host bits cleared");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("::/0").to_string(), "::/0");
        assert_eq!(c("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8", "mapped rule is IPv4");
        assert_eq!(c("::ffff:192.0.2.1").to_string(), "192.0.2.1/32");
        assert_eq!("127.0.0.1".parse::<Cidr>().unwrap(), c("127.0.0.1/32"));
    }

    #[test]
    fn host_bits_are_noticed() {
        for (s, set) in [
            ("10.1.2.3/8", true),
            ("192.0.2.10/2", true),
            ("10.0.0.0/8", false),
            ("192.0.2.7", false),
            ("192.0.2.7/32", false),
            ("0.0.0.0/0", false),
            ("2001:db8::1/32", true),
            ("[2001:db8::]/32", false),
            ("::1", false),
            ("::ffff:10.0.0.0/104", false),
            ("::ffff:10.0.0.1/104", true),
            ("::ffff:0:0/96", false),
            ("::ffff:0:0/64", true),
            ("bogus", false),
        ] {
            assert_eq!(Cidr::has_host_bits(s), set, "{s}");
        }
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "1.2.3.4/0008",
            "fe80::1%eth0",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Cidr::parse("10.0.0.0/33").unwrap_err().to_string(),
            "\"10.0.0.0/33\": prefix /33 too long for IPv4"
        );
    }

    #[test]
    fn contains() {
        let n = c("10.0.0.0/8");
        assert!(n.contains(ip("10.255.1.2")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped client matches v4 rule");
        assert!(!n.contains(ip("::1")));
        let h = c("127.0.0.1");
        assert!(h.contains(ip("127.0.0.1")));
        assert!(!h.contains(ip("127.0.0.2")));
        let v6 = c("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(c("::1").contains(ip("::1")));
        assert!(c("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!c("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(c("::/0").contains(ip("2001:db8::1")));
        // A mapped rule matches a plain IPv4 client.
        assert!(c("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
        // Odd prefixes.
        let odd = c("192.168.0.0/23");
        assert!(odd.contains(ip("192.168.1.255")));
        assert!(!odd.contains(ip("192.168.2.0")));
    }

    #[test]
    fn parse_list() {
        let l = Cidr::parse_list("10.0.0.0/8, 127.0.0.1 ::1,,").unwrap();
        assert_eq!(l, vec![c("10.0.0.0/8"), c("127.0.0.1"), c("::1")]);
        assert_eq!(Cidr::parse_list("  ").unwrap(), vec![]);
        assert!(Cidr::parse_list("10.0.0.0/8,bogus").is_err());
        // Dovecot's `local` matches no address: taken, left out
        assert_eq!(Cidr::parse_list("local,10.0.0.0/8").unwrap(), vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        assert_eq!(Cidr::parse_list("LOCAL").unwrap(), vec![], "local alone: no network");
        assert!(Cidr::parse_list("locals").is_err());
    }
}
