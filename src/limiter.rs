//! Brute-force limiter shared by all workers (a shared-memory table, see `shm`).
//!
//! - Failures are counted per client IP (IPv6 per /64, IPv4-mapped IPv6 as IPv4) and per user
//!   in fixed windows (`ip=10/m`: 10 failures per minute). The failure that reaches the limit
//!   bans the source until its window ends, or for `ban` from then when that is longer; while
//!   banned, `check` refuses without any password being verified.
//! - Refusals get a growing Auth-Wait: 1, 2, 4 ... 32, 60 s (per banned source; starts again at
//!   1 s after the ban).
//! - The same wrong password repeated from the same IP for the same user counts once, as long
//!   as it keeps coming within the longest window (clients retrying a stale saved password).
//! - An IP that logged in successfully as a user recently (24 h, or `ban` if longer) is not
//!   refused by that user's limit (others' failures cannot lock the owner out); its own per-IP
//!   limit still applies.
//!
//! Slots (7 words, see `shm`): counters `[key, deadline, last used, window_start, count,
//! ban_until, refusals]`; marks (seen password fingerprints, trusted ip+user pairs) use only
//! `[key, deadline, last used]`. A full probe window evicts its least recently used slot.
//! Keys are keyed hashes (region secret) of a kind tag and the counted thing, so user names
//! and passwords are not stored. All times are seconds, passed in by the caller.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::{key64, Table, DATA};

const START: usize = DATA;
const COUNT: usize = DATA + 1;
const BAN_UNTIL: usize = DATA + 2;
const REFUSALS: usize = DATA + 3;
const SLOT_WORDS: usize = DATA + 4;
// user header words
const REFUSED_IP: usize = 0;
const REFUSED_USER: usize = 1;
const EVICTIONS: usize = 2;
/// How long a successful login exempts its IP from the user's limit, at least.
const TRUSTED_FOR: u64 = 24 * 3600;
const MAX_WAIT: u32 = 60;

/// `count` failures per `window` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: u64,
}

/// "10/m", "5/10s", "100/h", "3/2m", "50/d": failures per window (1 s .. 7 days).
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
    /// Refused without checking the password; `wait` is the Auth-Wait to send, `reason` is
    /// for the log.
    Refuse { wait: u32, reason: String },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    pub refused_ip: u64,
    pub refused_user: u64,
    /// Live entries pushed out by new ones (the zone is too small if this grows fast).
    pub evictions: u64,
}

pub struct Limiter<'a> {
    table: Table<'a>,
    cfg: LimitConfig,
}

/// The bytes an address is counted under: IPv4 (also when IPv4-mapped), or the /64 of IPv6.
fn ip_group(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
    }
}

/// The source as it is counted, for log lines: "192.0.2.1" or "2001:db8:1:2::/64".
fn ip_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut o = v6.octets();
            o[8..].fill(0);
            format!("{}/64", std::net::Ipv6Addr::from(o))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    }
}

/// Auth-Wait for the `n`th refusal (from 0): 1, 2, 4 ... 32, 60 seconds.
fn wait_for(n: u64) -> u32 {
    (1u32 << n.min(6)).min(MAX_WAIT)
}

impl<'a> Limiter<'a> {
    /// Opens the limiter in a shared region (a zeroed region tracks nothing yet). `None` if the
    /// region is too small (fewer than `limiter::min_words()` words).
    pub fn new(words: &'a [AtomicU64], cfg: LimitConfig) -> Option<Limiter<'a>> {
        Some(Limiter { table: Table::new(words, SLOT_WORDS)?, cfg })
    }

    /// Slots the region holds (a failure uses up to 3: fingerprint, IP, user).
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    fn key(&self, parts: &[&[u8]]) -> u64 {
        key64(&self.table.keyed_hash(parts))
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

    /// Is this counter's source banned now? If so counts the refusal and returns the wait.
    fn refused(&self, key: u64, now: u64) -> Option<u32> {
        let g = self.table.lock();
        let s = self.table.find(&g, key)?;
        if s[BAN_UNTIL].load(Ordering::Relaxed) <= now {
            return None;
        }
        self.table.touch(&g, s, now);
        Some(wait_for(s[REFUSALS].fetch_add(1, Ordering::Relaxed)))
    }

    /// Before any lookup or password check: may this IP try to log in as this user?
    pub fn check(&self, ip: Option<IpAddr>, user: &str, now: u64) -> Verdict {
        if let (Some(ip), Some(rate)) = (ip, self.cfg.ip) {
            if let Some(wait) = self.refused(self.ip_key(ip), now) {
                self.table.header(REFUSED_IP).fetch_add(1, Ordering::Relaxed);
                return Verdict::Refuse {
                    wait,
                    reason: format!(
                        "too many failed logins from {} (limit {}/{}s)",
                        ip_label(ip),
                        rate.count,
                        rate.window
                    ),
                };
            }
        }
        // No name (EXTERNAL without an authorization identity, SMTP without AUTH): the IP
        // limit only, never one counter shared by every such client.
        if let Some(rate) = self.cfg.user.filter(|_| !user.is_empty()) {
            let trusted = ip.is_some_and(|ip| self.mark_live(self.trusted_key(ip, user), now, None));
            if !trusted {
                if let Some(wait) = self.refused(self.user_key(user), now) {
                    self.table.header(REFUSED_USER).fetch_add(1, Ordering::Relaxed);
                    return Verdict::Refuse {
                        wait,
                        reason: format!(
                            "too many failed logins for this user (limit {}/{}s)",
                            rate.count, rate.window
                        ),
                    };
                }
            }
        }
        Verdict::Allow
    }

    /// Is the mark `key` live at `now`? With `renew`, also (re)sets it to live until then.
    fn mark_live(&self, key: u64, now: u64, renew: Option<u64>) -> bool {
        let g = self.table.lock();
        let Some(until) = renew else {
            let Some(s) = self.table.find(&g, key).filter(|s| s[1].load(Ordering::Relaxed) > now) else {
                return false;
            };
            self.table.touch(&g, s, now);
            return true;
        };
        let (s, evicted) = self.table.claim(&g, key, now);
        let live = s[1].load(Ordering::Relaxed) > now;
        s[1].store(until, Ordering::Relaxed);
        drop(g);
        self.evicted(evicted);
        live
    }

    fn evicted(&self, evicted: bool) {
        if evicted {
            self.table.header(EVICTIONS).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One more failure on a counter; the one that reaches the limit starts the ban.
    fn count(&self, key: u64, rate: Rate, now: u64) {
        let g = self.table.lock();
        let (s, evicted) = self.table.claim(&g, key, now);
        let (mut start, mut count, mut ban_until) =
            (s[START].load(Ordering::Relaxed), s[COUNT].load(Ordering::Relaxed), s[BAN_UNTIL].load(Ordering::Relaxed));
        if count == 0 || now >= start.saturating_add(rate.window) {
            // a new window (a new slot is zeroed)
            (start, count) = (now, 1);
            s[START].store(start, Ordering::Relaxed);
        } else {
            count += 1;
        }
        s[COUNT].store(count, Ordering::Relaxed);
        let window_end = start.saturating_add(rate.window);
        if count >= u64::from(rate.count) && ban_until <= now {
            ban_until = window_end.max(now.saturating_add(self.cfg.ban));
            s[BAN_UNTIL].store(ban_until, Ordering::Relaxed);
            s[REFUSALS].store(0, Ordering::Relaxed);
        }
        s[1].store(window_end.max(ban_until), Ordering::Relaxed);
        drop(g);
        self.evicted(evicted);
    }

    /// After a failed login. `password` only feeds a keyed fingerprint (never stored).
    pub fn record_failure(&self, ip: Option<IpAddr>, user: &str, password: &[u8], now: u64) {
        let window = [self.cfg.ip, self.cfg.user].iter().flatten().map(|r| r.window).max().unwrap_or(0);
        if window == 0 {
            return;
        }
        // The same wrong password again from the same source: counted once while it repeats.
        let group = ip.map(ip_group).unwrap_or_default();
        let fp = self.key(&[b"fp", &group, user.as_bytes(), password]);
        if self.mark_live(fp, now, Some(now.saturating_add(window))) {
            return;
        }
        if let (Some(ip), Some(rate)) = (ip, self.cfg.ip) {
            self.count(self.ip_key(ip), rate, now);
        }
        if let Some(rate) = self.cfg.user.filter(|_| !user.is_empty()) {
            self.count(self.user_key(user), rate, now);
        }
    }

    /// After a successful login: this IP is trusted for this user.
    pub fn record_success(&self, ip: Option<IpAddr>, user: &str, now: u64) {
        if let (Some(ip), Some(_), false) = (ip, self.cfg.user, user.is_empty()) {
            let until = now.saturating_add(self.cfg.ban.max(TRUSTED_FOR));
            self.mark_live(self.trusted_key(ip, user), now, Some(until));
        }
    }

    pub fn stats(&self) -> LimiterStats {
        let h = |i| self.table.header(i).load(Ordering::Relaxed);
        LimiterStats { refused_ip: h(REFUSED_IP), refused_user: h(REFUSED_USER), evictions: h(EVICTIONS) }
    }
}

/// A refusal by the limiter: the Auth-Wait to send and the reason for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub wait: u32,
    pub reason: String,
}

/// An admitted attempt, to be settled once its outcome is known.
#[derive(Clone, Debug)]
pub struct Ticket {
    ip: Option<IpAddr>,
    user: String,
}

/// How an admitted attempt ended.
pub enum Settle<'a> {
    Failure { password: &'a [u8] },
    Success,
    Neutral,
}

impl<'a> Limiter<'a> {
    pub fn banned(&self, ip: Option<IpAddr>, user: &str, now: u64) -> Option<Refusal> {
        match self.check(ip, user, now) {
            Verdict::Allow => None,
            Verdict::Refuse { wait, reason } => Some(Refusal { wait, reason }),
        }
    }

    pub fn admit(&self, ip: Option<IpAddr>, user: &str, _password: &[u8], _now: u64) -> Result<Ticket, Refusal> {
        Ok(Ticket { ip, user: user.to_string() })
    }

    pub fn settle(&self, t: Ticket, how: Settle<'_>, now: u64) {
        match how {
            Settle::Failure { password } => self.record_failure(t.ip, &t.user, password, now),
            Settle::Success => self.record_success(t.ip, &t.user, now),
            Settle::Neutral => {}
        }
    }
}

/// The smallest region (in 64-bit words) `Limiter::new` accepts.
pub const fn min_words() -> usize {
    crate::shm::HEADER + crate::shm::PROBE * SLOT_WORDS
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

    fn refused(v: Verdict) -> Option<u32> {
        match v {
            Verdict::Refuse { wait, .. } => Some(wait),
            Verdict::Allow => None,
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10/m"), Ok(Rate { count: 10, window: 60 }));
        assert_eq!(parse_rate("5/10s"), Ok(Rate { count: 5, window: 10 }));
        assert_eq!(parse_rate("100/h"), Ok(Rate { count: 100, window: 3600 }));
        assert_eq!(parse_rate("3/2m"), Ok(Rate { count: 3, window: 120 }));
        assert_eq!(parse_rate("50/d"), Ok(Rate { count: 50, window: 86400 }));
        for bad in ["", "10", "0/m", "x/m", "10/", "10/q", "10/0s", "10/99d", "-1/m", "10/m ", "1/99999999999999999999s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_limit_refuses_with_growing_wait_then_recovers_after_the_window() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/60s", "100/m", 0)).unwrap();
        let a = ip("192.0.2.1");
        fail_n(&l, a, "u1", 2, 1000);
        assert_eq!(l.check(a, "u2", 1001), Verdict::Allow, "2 of 3");
        fail_n(&l, a, "u3", 1, 1001);
        let v = l.check(a, "anyone", 1002);
        assert!(matches!(&v, Verdict::Refuse { wait: 1, reason } if reason.contains("192.0.2.1")), "{v:?}");
        let waits: Vec<_> = (0..8).map(|i| refused(l.check(a, "anyone", 1003 + i))).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60].map(Some), "growing, capped");
        assert_eq!(l.check(ip("192.0.2.2"), "anyone", 1010), Verdict::Allow, "other IPs unaffected");
        assert!(refused(l.check(a, "x", 1059)).is_some(), "window 1000..1060");
        assert_eq!(l.check(a, "x", 1060), Verdict::Allow, "recovered when the window ended");
        assert_eq!(l.stats().refused_ip, 10);
        // a new window starts from scratch, waits too
        fail_n(&l, a, "u4", 3, 1100);
        assert_eq!(refused(l.check(a, "x", 1101)), Some(1));
    }

    #[test]
    fn failures_in_an_old_window_do_not_add_up() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/10s", "100/m", 0)).unwrap();
        let a = ip("192.0.2.3");
        for t in 0..10 {
            fail_n(&l, a, &format!("u{t}"), 2, t * 10);
            assert_eq!(l.check(a, "x", t * 10 + 1), Verdict::Allow);
        }
    }

    #[test]
    fn ban_keeps_refusing_longer_than_the_window() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/10s", "100/m", 300)).unwrap();
        let a = ip("192.0.2.9");
        fail_n(&l, a, "u", 2, 5);
        assert!(refused(l.check(a, "u", 6)).is_some());
        assert!(refused(l.check(a, "u", 304)).is_some(), "still banned (5 + 300)");
        assert_eq!(l.check(a, "u", 305), Verdict::Allow);
        // a ban shorter than the window lasts until the window ends
        let l = Limiter::new(&r, cfg("100/m", "2/h", 60)).unwrap();
        fail_n(&l, ip("192.0.2.10"), "bob", 2, 0);
        assert!(refused(l.check(ip("192.0.2.11"), "bob", 3599)).is_some());
        assert_eq!(l.check(ip("192.0.2.11"), "bob", 3600), Verdict::Allow);
        assert_eq!(l.stats().refused_user, 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_v4_mapped_as_v4() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/m", "100/m", 0)).unwrap();
        l.record_failure(ip("2001:db8:1:2::1"), "u", b"a", 0);
        l.record_failure(ip("2001:db8:1:2:ffff::9"), "u", b"b", 0);
        let v = l.check(ip("2001:db8:1:2::77"), "x", 1);
        assert!(matches!(&v, Verdict::Refuse { reason, .. } if reason.contains("2001:db8:1:2::/64")), "{v:?}");
        assert_eq!(l.check(ip("2001:db8:1:3::1"), "x", 1), Verdict::Allow, "other /64");
        l.record_failure(ip("::ffff:198.51.100.7"), "u", b"a", 0);
        assert_eq!(l.check(ip("198.51.100.7"), "x", 1), Verdict::Allow);
        l.record_failure(ip("198.51.100.7"), "u", b"b", 0);
        let v = l.check(ip("::ffff:198.51.100.7"), "x", 1);
        assert!(matches!(&v, Verdict::Refuse { reason, .. } if reason.contains("from 198.51.100.7 ")), "{v:?}");
        assert!(refused(l.check(ip("198.51.100.7"), "x", 1)).is_some());
        assert_eq!(l.check(ip("198.51.100.8"), "x", 1), Verdict::Allow);
        // a v4 address and a v6 /64 with the same leading bytes are different sources
        assert_eq!(l.check(ip("c633:6407::"), "x", 1), Verdict::Allow);
    }

    #[test]
    fn same_wrong_password_counts_once() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let a = ip("192.0.2.5");
        for t in 0..6 {
            l.record_failure(a, "alice", b"stale-saved-password", t * 10);
        }
        assert_eq!(l.check(a, "alice", 55), Verdict::Allow, "6 repeats count 1");
        l.record_failure(a, "alice", b"other1", 55);
        assert_eq!(l.check(a, "alice", 55), Verdict::Allow, "2 of 3");
        l.record_failure(a, "alice", b"other2", 56);
        assert!(refused(l.check(a, "alice", 57)).is_some(), "3 of 3");
        // a client retrying a stale password every 30 s for an hour: once, not 120 times
        let l = Limiter::new(&r, cfg("3/h", "3/h", 0)).unwrap();
        let b = ip("192.0.2.55");
        for t in 0..120 {
            l.record_failure(b, "bert", b"stale-saved-password", 10_000 + t * 30);
        }
        assert_eq!(l.check(b, "bert", 13_600), Verdict::Allow);
        // the same password from another IP, or for another user, is another failure
        let l = Limiter::new(&r, cfg("2/m", "2/m", 0)).unwrap();
        l.record_failure(ip("192.0.2.6"), "carol", b"pw", 0);
        l.record_failure(ip("192.0.2.7"), "carol", b"pw", 0);
        assert!(refused(l.check(ip("192.0.2.8"), "carol", 1)).is_some(), "user limit");
        l.record_failure(ip("192.0.2.6"), "dave", b"pw", 0);
        assert!(refused(l.check(ip("192.0.2.6"), "erin", 1)).is_some(), "ip limit");
        // and after a pause longer than the window it counts again
        let l = Limiter::new(&r, cfg("2/m", "100/m", 0)).unwrap();
        l.record_failure(ip("192.0.2.50"), "frank", b"pw", 0);
        l.record_failure(ip("192.0.2.50"), "frank", b"pw", 100);
        assert_eq!(l.check(ip("192.0.2.50"), "frank", 101), Verdict::Allow, "windows 0 and 100");
    }

    #[test]
    fn users_limit_does_not_lock_out_a_trusted_ip() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 600)).unwrap();
        let owner = ip("192.0.2.10");
        l.record_success(owner, "alice", 0);
        for i in 0..20 {
            l.record_failure(ip(&format!("203.0.113.{i}")), "alice", b"guess", 10);
        }
        assert!(refused(l.check(ip("203.0.113.200"), "alice", 11)).is_some(), "others refused");
        assert_eq!(l.check(owner, "alice", 11), Verdict::Allow, "the owner's IP is not locked out");
        assert!(refused(l.check(owner, "bob", 11)).is_none());
        // the owner's IP is still bound by its own per-IP limit
        fail_n(&l, owner, "alice", 3, 12);
        assert!(refused(l.check(owner, "alice", 13)).is_some());
        // trust is per user and expires (24 h)
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("100/m", "1/d", 0)).unwrap();
        l.record_success(owner, "alice", 0);
        l.record_failure(ip("203.0.113.1"), "alice", b"x", 10);
        assert_eq!(l.check(owner, "alice", 11), Verdict::Allow);
        assert!(refused(l.check(ip("192.0.2.11"), "alice", 11)).is_some(), "another IP of the owner's");
        assert!(refused(l.check(owner, "alice", 86_400)).is_some(), "trust expired");
    }

    #[test]
    fn without_a_client_ip_only_the_user_limit_applies() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("1/m", "2/m", 0)).unwrap();
        l.record_failure(None, "u", b"a", 0);
        assert_eq!(l.check(None, "u", 1), Verdict::Allow);
        l.record_failure(None, "u", b"b", 0);
        assert!(refused(l.check(None, "u", 1)).is_some());
        l.record_success(None, "u", 2);
        assert!(refused(l.check(None, "u", 3)).is_some());
        let l = Limiter::new(&r, LimitConfig { ip: None, user: None, ban: 0 }).unwrap();
        fail_n(&l, ip("192.0.2.1"), "u", 50, 0);
        assert_eq!(l.check(ip("192.0.2.1"), "u", 1), Verdict::Allow, "no limits configured");
    }

    #[test]
    fn tiny_region_evicts_and_never_panics() {
        let r = region(min_words());
        assert!(Limiter::new(&r[..min_words() - 1], cfg("3/m", "3/m", 0)).is_none());
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        for i in 0..1000u32 {
            let a = Some(IpAddr::from(i.to_be_bytes()));
            l.record_failure(a, &format!("u{i}"), b"p", u64::from(i));
            let _ = l.check(a, "x", u64::from(i));
            l.record_success(a, "x", u64::from(i));
        }
        assert!(l.stats().evictions > 0);
        // still counts what it holds
        let a = ip("192.0.2.1");
        fail_n(&l, a, "v", 3, 2000);
        assert!(refused(l.check(a, "w", 2001)).is_some());
        // extreme times do not overflow
        fail_n(&l, a, "v", 3, u64::MAX - 1);
        let _ = l.check(a, "v", u64::MAX);
    }

    #[test]
    fn counts_are_shared_by_concurrent_workers() {
        let r = region(1 << 16);
        let l = Limiter::new(&r, cfg("401/h", "1000000/h", 0)).unwrap();
        let a = ip("192.0.2.77");
        std::thread::scope(|s| {
            for t in 0..4 {
                let l = &l;
                s.spawn(move || {
                    for i in 0..100 {
                        l.record_failure(a, &format!("user{}", i % 7), format!("t{t}-{i}").as_bytes(), 1);
                        let _ = l.check(ip("192.0.2.78"), "x", 1);
                    }
                });
            }
        });
        // exactly 400 counted: one more reaches 401 (a lost update would leave it allowed)
        assert_eq!(l.check(a, "u", 2), Verdict::Allow, "400 of 401");
        l.record_failure(a, "u", b"the 401st", 2);
        assert!(refused(l.check(a, "u", 2)).is_some(), "401");
        assert_eq!(l.stats().evictions, 0);
    }
}
