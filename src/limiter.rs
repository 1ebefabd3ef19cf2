//! Brute-force limiter shared by all workers (a shared-memory table, see `shm`).
//!
//! - Failures are counted per client IP (IPv6 per /64, IPv4-mapped IPv6 as IPv4) and per user
//!   in fixed windows; at the limit the source is refused, without verifying any password, until
//!   the window (or `ban`, when longer) has passed.
//! - Refusals get a growing Auth-Wait: 1, 2, 4 ... 60 s.
//! - The same wrong password repeated from the same IP for the same user within the window
//!   counts once (clients retrying a stale saved password).
//! - An IP that logged in successfully as a user recently is not refused by that user's limit
//!   (others' failures cannot lock the owner out); its own per-IP limit still applies.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::{init_secret, key64, keyed_hash, Table};

// slot: [key, age, window_start | until, count, ban_until, refusals]
const SLOT_WORDS: usize = 6;
// header (after the secret in 0..4): 4 refused by ip, 5 refused by user
const REFUSED_IP: usize = 4;
const REFUSED_USER: usize = 5;
/// How long a successful login exempts its IP from the user's limit, at least.
const TRUSTED_FOR: u64 = 24 * 3600;
const MAX_WAIT: u32 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: u64,
}

/// "10/m", "5/10s", "100/h", "3/1m": failures per window.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("invalid rate \"{s}\" (e.g. 10/m, 5/30s, 100/h)");
    let (n, w) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = n.parse().ok().filter(|c| *c > 0).ok_or_else(bad)?;
    let (num, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len()));
    let num: u64 = if num.is_empty() { 1 } else { num.parse().map_err(|_| bad())? };
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    let window = num.checked_mul(mult).filter(|w| *w > 0 && *w <= 7 * 86400).ok_or_else(bad)?;
    Ok(Rate { count, window })
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitConfig {
    pub ip: Option<Rate>,
    pub user: Option<Rate>,
    /// Seconds a source stays refused once over its limit (0: until its window ends).
    pub ban: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse { wait: u32, reason: String },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    pub refused_ip: u64,
    pub refused_user: u64,
}

pub struct Limiter<'a> {
    table: Table<'a>,
    cfg: LimitConfig,
}

/// The bytes an address is counted under: IPv4, or the /64 of IPv6.
fn ip_group(ip: IpAddr) -> Vec<u8> {
    match crate::policy::canonical_ip(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    }
}

impl<'a> Limiter<'a> {
    pub fn new(words: &'a [AtomicU64], cfg: LimitConfig) -> Option<Limiter<'a>> {
        let table = Table::new(words, SLOT_WORDS)?;
        init_secret(&table);
        Some(Limiter { table, cfg })
    }

    fn key(&self, parts: &[&[u8]]) -> u64 {
        key64(&keyed_hash(&self.table, parts))
    }

    fn ip_key(&self, ip: IpAddr) -> u64 {
        self.key(&[b"ip", &ip_group(ip)])
    }

    fn user_key(&self, user: &str) -> u64 {
        self.key(&[b"user", user.as_bytes()])
    }

    fn trusted_key(&self, ip: IpAddr, user: &str) -> u64 {
        self.key(&[b"trusted", &ip_group(ip), user.as_bytes()])
    }

    fn ban_for(&self, rate: Rate) -> u64 {
        self.cfg.ban.max(rate.window)
    }

    /// One counter: refused now? (bumps its refusal count and returns the wait if so)
    fn refused(&self, key: u64, rate: Rate, now: u64) -> Option<u32> {
        let g = self.table.lock();
        let s = self.table.find(&g, key)?;
        let (start, count, ban_until) =
            (s[2].load(Ordering::Relaxed), s[3].load(Ordering::Relaxed), s[4].load(Ordering::Relaxed));
        let banned = ban_until > now || (count >= u64::from(rate.count) && now < start.saturating_add(rate.window));
        if !banned {
            return None;
        }
        if ban_until <= now {
            s[4].store(now.saturating_add(self.ban_for(rate)), Ordering::Relaxed);
        }
        let refusals = s[5].fetch_add(1, Ordering::Relaxed);
        Some((1u32 << refusals.min(6)).min(MAX_WAIT))
    }

    /// Before any password check: may this IP / user try?
    pub fn check(&self, ip: Option<IpAddr>, user: &str, now: u64) -> Verdict {
        if let (Some(ip), Some(rate)) = (ip, self.cfg.ip) {
            if let Some(wait) = self.refused(self.ip_key(ip), rate, now) {
                self.table.header(REFUSED_IP).fetch_add(1, Ordering::Relaxed);
                return Verdict::Refuse {
                    wait,
                    reason: format!("too many failed logins from {ip} (limit {}/{}s)", rate.count, rate.window),
                };
            }
        }
        if let Some(rate) = self.cfg.user {
            let trusted = ip.is_some_and(|ip| self.is_trusted(ip, user, now));
            if !trusted {
                if let Some(wait) = self.refused(self.user_key(user), rate, now) {
                    self.table.header(REFUSED_USER).fetch_add(1, Ordering::Relaxed);
                    return Verdict::Refuse {
                        wait,
                        reason: format!("too many failed logins for this user (limit {}/{}s)", rate.count, rate.window),
                    };
                }
            }
        }
        Verdict::Allow
    }

    fn is_trusted(&self, ip: IpAddr, user: &str, now: u64) -> bool {
        let key = self.trusted_key(ip, user);
        let g = self.table.lock();
        self.table.find(&g, key).is_some_and(|s| s[2].load(Ordering::Relaxed) > now)
    }

    fn count(&self, key: u64, rate: Rate, now: u64) {
        let g = self.table.lock();
        let (s, _) = self.table.claim(&g, key, now);
        let start = s[2].load(Ordering::Relaxed);
        // count 0: a fresh slot (claim() zeroes it)
        if s[3].load(Ordering::Relaxed) == 0 || now >= start.saturating_add(rate.window) {
            s[2].store(now, Ordering::Relaxed);
            s[3].store(1, Ordering::Relaxed);
            if s[4].load(Ordering::Relaxed) <= now {
                s[5].store(0, Ordering::Relaxed);
            }
        } else {
            s[3].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// After a failed login. `password` only feeds a keyed fingerprint (never stored).
    pub fn record_failure(&self, ip: Option<IpAddr>, user: &str, password: &[u8], now: u64) {
        let window = [self.cfg.ip, self.cfg.user].iter().flatten().map(|r| r.window).max().unwrap_or(0);
        if window == 0 {
            return;
        }
        // the same wrong password again from the same source: counted once per window
        let group = ip.map(ip_group).unwrap_or_default();
        let fp = self.key(&[b"fp", &group, user.as_bytes(), password]);
        {
            let g = self.table.lock();
            if let Some(s) = self.table.find(&g, fp) {
                if s[2].load(Ordering::Relaxed) > now {
                    return;
                }
            }
            let (s, _) = self.table.claim(&g, fp, now);
            s[2].store(now.saturating_add(window), Ordering::Relaxed);
        }
        if let (Some(ip), Some(rate)) = (ip, self.cfg.ip) {
            self.count(self.ip_key(ip), rate, now);
        }
        if let Some(rate) = self.cfg.user {
            self.count(self.user_key(user), rate, now);
        }
    }

    /// After a successful login: this IP is trusted for this user.
    pub fn record_success(&self, ip: Option<IpAddr>, user: &str, now: u64) {
        let Some(ip) = ip else { return };
        let key = self.trusted_key(ip, user);
        let g = self.table.lock();
        let (s, _) = self.table.claim(&g, key, now);
        s[2].store(now.saturating_add(self.cfg.ban.max(TRUSTED_FOR)), Ordering::Relaxed);
    }

    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            refused_ip: self.table.header(REFUSED_IP).load(Ordering::Relaxed),
            refused_user: self.table.header(REFUSED_USER).load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn cfg(ip: &str, user: &str, ban: u64) -> LimitConfig {
        LimitConfig { ip: Some(parse_rate(ip).unwrap()), user: Some(parse_rate(user).unwrap()), ban }
    }

    fn fail_n(l: &Limiter<'_>, from: Option<IpAddr>, user: &str, n: usize, now: u64) {
        for i in 0..n {
            l.record_failure(from, user, format!("guess{i}").as_bytes(), now);
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10/m"), Ok(Rate { count: 10, window: 60 }));
        assert_eq!(parse_rate("5/10s"), Ok(Rate { count: 5, window: 10 }));
        assert_eq!(parse_rate("100/h"), Ok(Rate { count: 100, window: 3600 }));
        assert_eq!(parse_rate("3/2m"), Ok(Rate { count: 3, window: 120 }));
        for bad in ["", "10", "0/m", "x/m", "10/", "10/q", "10/0s", "10/99d"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_limit_refuses_then_recovers_after_the_window() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/60s", "100/m", 0)).unwrap();
        let a = ip("192.0.2.1");
        fail_n(&l, a, "u1", 2, 1000);
        assert_eq!(l.check(a, "u2", 1001), Verdict::Allow);
        fail_n(&l, a, "u3", 1, 1001);
        assert!(matches!(l.check(a, "anyone", 1002), Verdict::Refuse { wait: 1, .. }));
        assert!(matches!(l.check(a, "anyone", 1003), Verdict::Refuse { wait: 2, .. }), "growing wait");
        assert!(matches!(l.check(a, "anyone", 1004), Verdict::Refuse { wait: 4, .. }));
        assert_eq!(l.check(ip("192.0.2.2"), "anyone", 1004), Verdict::Allow, "other IPs unaffected");
        assert_eq!(l.check(a, "anyone", 1000 + 61 + 60), Verdict::Allow, "recovered after window/ban");
        assert_eq!(l.stats().refused_ip, 3);
    }

    #[test]
    fn ban_keeps_refusing_longer_than_the_window() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/10s", "100/m", 300)).unwrap();
        let a = ip("192.0.2.9");
        fail_n(&l, a, "u", 2, 0);
        assert!(matches!(l.check(a, "u", 1), Verdict::Refuse { .. }));
        assert!(matches!(l.check(a, "u", 200), Verdict::Refuse { .. }), "still banned");
        assert_eq!(l.check(a, "u", 302), Verdict::Allow);
    }

    #[test]
    fn ipv6_counts_per_64_and_v4_mapped_as_v4() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/m", "100/m", 0)).unwrap();
        l.record_failure(ip("2001:db8:1:2::1"), "u", b"a", 0);
        l.record_failure(ip("2001:db8:1:2:ffff::9"), "u", b"b", 0);
        assert!(matches!(l.check(ip("2001:db8:1:2::77"), "x", 1), Verdict::Refuse { .. }), "same /64");
        assert_eq!(l.check(ip("2001:db8:1:3::1"), "x", 1), Verdict::Allow, "other /64");
        l.record_failure(ip("::ffff:198.51.100.7"), "u", b"a", 0);
        l.record_failure(ip("198.51.100.7"), "u", b"b", 0);
        assert!(matches!(l.check(ip("198.51.100.7"), "x", 1), Verdict::Refuse { .. }));
    }

    #[test]
    fn same_wrong_password_counts_once() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let a = ip("192.0.2.5");
        for _ in 0..10 {
            l.record_failure(a, "alice", b"stale-saved-password", 5);
        }
        assert_eq!(l.check(a, "alice", 6), Verdict::Allow);
    }

    #[test]
    fn users_limit_does_not_lock_out_a_trusted_ip() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("100/m", "3/m", 600)).unwrap();
        let owner = ip("192.0.2.10");
        l.record_success(owner, "alice", 0);
        for i in 0..20 {
            let attacker = ip(&format!("203.0.113.{i}"));
            l.record_failure(attacker, "alice", b"guess", 10);
        }
        assert!(matches!(l.check(ip("203.0.113.200"), "alice", 11), Verdict::Refuse { .. }), "others refused");
        assert_eq!(l.check(owner, "alice", 11), Verdict::Allow, "the owner's IP is not locked out");
        assert_eq!(l.stats().refused_user, 1);
    }

    #[test]
    fn tiny_region_evicts_and_never_panics() {
        let r = region(crate::shm::HEADER + 8 * SLOT_WORDS);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        for i in 0..1000u32 {
            let a = Some(IpAddr::from(i.to_be_bytes()));
            l.record_failure(a, &format!("u{i}"), b"p", u64::from(i));
            let _ = l.check(a, "x", u64::from(i));
            l.record_success(a, "x", u64::from(i));
        }
    }

    #[test]
    fn counts_are_shared_by_concurrent_workers() {
        let r = region(1 << 14);
        let l = Limiter::new(&r, cfg("40/m", "1000/m", 0)).unwrap();
        let a = ip("192.0.2.77");
        std::thread::scope(|s| {
            for t in 0..4 {
                let l = &l;
                s.spawn(move || {
                    for i in 0..10 {
                        l.record_failure(a, "u", format!("t{t}-{i}").as_bytes(), 1);
                    }
                });
            }
        });
        assert!(matches!(l.check(a, "u", 2), Verdict::Refuse { .. }), "40 failures from 4 threads");
    }
}
