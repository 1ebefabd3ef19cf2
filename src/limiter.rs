//! Brute-force limiter shared by all workers (a shared-memory table, see `shm`).
//!
//! - Login attempts are counted per client group (by default each IPv4 address and each IPv6
//!   /64; `ipv4_prefix` 24..=32, `ipv6_prefix` 48..=64; IPv4-mapped IPv6 as IPv4) and per user in
//!   fixed windows (`ip=10/m`: 10 per minute). A protocol with a budget of its own
//!   (`smtp:ip=3/m`, see `with_protocol`) is counted on counters of its own. An attempt is counted when it is
//!   admitted, right before its password is verified (`admit`), and settled once the verdict is
//!   known (`settle`): a failure stays counted, a success or a neutral outcome (temporary
//!   failure) is given back. A counter holding `count` attempts (failures and verifications in
//!   flight) refuses more, so at most `count` verifications per window run for a source, however
//!   many arrive at once.
//! - The failure that brings a counter's failures to its limit bans the source until its window
//!   ends, or for `ban` from then when that is longer; while banned, `banned` refuses before any
//!   store lookup or password check (and `admit` refuses too).
//! - Refusals get a growing Auth-Wait: 1, 2, 4 ... 32, 60 s (per source; starts again at 1 s
//!   after the ban, or in the next window).
//! - The same wrong password repeated from the same IP for the same user counts once, as long
//!   as it keeps coming within the longest window (clients retrying a stale saved password); it
//!   is checked again twice at once, then at most once a second (faster repeats are refused
//!   without a check), until it logs in (a password changed to it) or is forgotten. Sent on
//!   several connections at once, before any failed (a device opening a few connections with a
//!   stale password), each is counted while in flight; once one has failed (its mark set), the
//!   others' failures are given back at settlement: the burst counts once.
//! - An IP that logged in successfully as a user recently (24 h, or `ban` if longer) is not
//!   refused by that user's limit and does not count against it (others' failures cannot lock
//!   the owner out); its own per-IP limit still applies. Trust is for the account as the
//!   store knows it: per store (`with_scope`: locations with stores of their own may share a
//!   zone) and per exact name (the name as the client spelt it, and the account's own
//!   spelling, `trust_account`), never the folded name: to a case-sensitive store `Jose` and
//!   `jose` are two accounts, and the owner of one is not trusted for the other.
//! - User names are keyed lower-cased (Unicode): `Alice` and `ALICE` are one account.
//! - A counter with attempts in flight is kept (not a dead slot anyone may claim) until its
//!   window ends or `SETTLE_GRACE` after its last admission, whichever is later, so that a slow
//!   verification's failure still counts (and bans) when it is settled after the window ended.
//! - A worker killed between `admit` and `settle` leaves its attempt counted: at most an
//!   over-count that ends with the window (its slot kept for the grace at most).
//! - A full zone keeps live bans, then counters with attempts in flight, then live trust marks,
//!   then counters holding failures; fingerprint marks, labels and counters holding nothing go
//!   first (see `rank`): a new counter evicts a slot of a higher rank only when every slot of
//!   its probe window ranks that high (`bans_evicted` counts evicted bans, `Ticket::evicted_ban`
//!   reports it); marks and labels evict nothing of their own rank or above (they give way
//!   instead), so a flood of failures under fresh names cannot push the owner's trust out.
//!
//! - A ban records what it bans (client group or user name, its first 32 bytes) in a label
//!   slot next to it, for `bans`; `lift_*` forget a counter at run time (shared by all workers).
//!
//! Slots (8 words, see `shm`): counters `[key, deadline, last used, window_start, attempts,
//! failures, ban_until, refusals]`; marks (seen password fingerprints, trusted ip+user pairs)
//! use `[key, deadline, last used]` and a few words of their own (a trust mark: `TRUST_TAG`); labels `[key, deadline, last used, head, 4 words of
//! text]` (see `LABEL_TAG`). Keys are keyed hashes (region secret) of a kind tag
//! and the counted thing, so user names and passwords are not stored. All times are seconds,
//! passed in by the caller.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cidr::canonical_ip;
use crate::protocol::Protocol;
use crate::shm::{key64, Claim, Guard, Table, DATA};

const START: usize = DATA;
const ATTEMPTS: usize = DATA + 1;
const FAILS: usize = DATA + 2;
const BAN_UNTIL: usize = DATA + 3;
const REFUSALS: usize = DATA + 4;
const SLOT_WORDS: usize = DATA + 5;
/// In a fingerprint mark's slot: how many times its wrong password came again while it lived.
const REPEATS: usize = REFUSALS;
/// In a fingerprint mark's slot: 1 when the failure that made it was no verdict on the password
/// (`Settle::Failure { wrong: false }`): its repeats are never refused without a check, until a
/// failure that is a verdict (`wrong: true`) clears it for the rest of the mark's life.
const NOT_WRONG: usize = START;
/// In a fingerprint mark's slot: when (seconds) a repeat was last let through to its check.
/// (`FAILS`' word: never above `ATTEMPTS`' in a mark, so the mark never ranks as in flight.)
const LAST_CHECK: usize = FAILS;
/// A wrong password repeated from one source for one user is counted once, and checked again
/// this many times at once, then at most once a second while its mark lives (the longest
/// window after its last check): repeats coming faster are refused without a check, so a
/// client looping on a stale password costs one check a second, and a password set to the one
/// it repeats is accepted a second later.
pub const REPEATS_CHECKED: u64 = 2;
// user header words
const REFUSED_IP: usize = 0;
const REFUSED_USER: usize = 1;
const EVICTIONS: usize = 2;
const BANS_EVICTED: usize = 3;
/// Eviction ranks (`Table::claim_with`, see `rank`): a live ban is kept longest, then a counter
/// with attempts in flight, then a live trust mark (each costs a successful login: an attacker
/// cannot make them as cheaply as failures), then a counter holding failures; fingerprint
/// marks, labels and counters holding nothing rank 0 and go first.
const RANK_FAILS: u8 = 1;
const RANK_TRUST: u8 = 2;
const RANK_IN_FLIGHT: u8 = 3;
const RANK_BAN: u8 = 4;
/// A trust mark's slot holds `TRUST_TAG << 32` in word `DATA`, which tells it from a
/// fingerprint mark (0 or 1 there, `NOT_WRONG`) and a counter (a window start in seconds).
const TRUST_TAG: u64 = 0x7472_7573; // "trus"
/// How long a successful login exempts its IP from the user's limit, at least.
pub(crate) const TRUSTED_FOR: u64 = 24 * 3600;
const MAX_WAIT: u32 = 60;
/// How long past its admission an attempt's counter is kept for its settlement, at least: far
/// above any verification (costly jobs are bounded and queued briefly; store timeouts are
/// seconds).
pub(crate) const SETTLE_GRACE: u64 = 300;
/// A label slot (what a banned counter counts, for the ban listing): word `DATA` holds
/// `LABEL_TAG << 32 | kind << 24 | protocol << 16 | truncated << 8 | len`, the next 4 words
/// up to 32 bytes of the label. No counter's window start has these high bits (a time in
/// seconds), so label slots are told from counters by that word.
const LABEL_TAG: u64 = 0x6c61_6265; // "labe"
const LABEL_BYTES: usize = 32;
const KIND_CLIENT: u8 = 1;
const KIND_USER: u8 = 2;
/// Default grouping of client addresses: each IPv4 address, each IPv6 /64.
pub const DEFAULT_IPV4_PREFIX: u8 = 32;
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// Allowed grouping prefixes (`mail_auth_limit ipv4_prefix= ipv6_prefix=`).
pub const IPV4_PREFIXES: std::ops::RangeInclusive<u8> = 24..=32;
pub const IPV6_PREFIXES: std::ops::RangeInclusive<u8> = 48..=64;

/// `count` attempts (failures and verifications in flight) per `window` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: u64,
}

/// "10/m", "5/10s", "100/h", "3/2m", "50/d": attempts per window (1 s .. 7 days).
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    pub ip: Option<Rate>,
    pub user: Option<Rate>,
    /// Seconds a source stays refused once over its limit (0: until its window ends).
    pub ban: u64,
    /// Client addresses are counted per network of this prefix length: IPv4 24..=32 (IPv4-mapped
    /// IPv6 as IPv4), IPv6 48..=64.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Per-protocol budgets (`imap:ip=RATE` ..., indexed by `proto_index`): a rate set here
    /// replaces `ip` / `user` for that protocol and is counted on counters of that protocol
    /// only; the protocols without one share the common counters.
    pub per_protocol: [ProtocolRates; 3],
}

/// The budgets of one protocol (`imap:ip=`, `imap:user=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolRates {
    pub ip: Option<Rate>,
    pub user: Option<Rate>,
}

impl Default for LimitConfig {
    fn default() -> LimitConfig {
        LimitConfig {
            ip: None,
            user: None,
            ban: 0,
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            per_protocol: [ProtocolRates::default(); 3],
        }
    }
}

/// Index of a protocol in `LimitConfig::per_protocol`.
pub fn proto_index(p: Protocol) -> usize {
    match p {
        Protocol::Imap => 0,
        Protocol::Pop3 => 1,
        Protocol::Smtp => 2,
    }
}

impl LimitConfig {
    /// The rate of a side for protocol `proto`, and the protocol tag of its counter (`Some`
    /// when the protocol has a budget of its own on that side).
    pub(crate) fn rate_for(&self, side: Side, proto: Option<Protocol>) -> (Option<Rate>, Option<Protocol>) {
        let own = proto.and_then(|p| {
            let r = self.per_protocol[proto_index(p)];
            match side {
                Side::Ip => r.ip,
                Side::User => r.user,
            }
            .map(|rate| (rate, p))
        });
        match (own, side) {
            (Some((rate, p)), _) => (Some(rate), Some(p)),
            (None, Side::Ip) => (self.ip, None),
            (None, Side::User) => (self.user, None),
        }
    }

    /// The longest configured window (0: no limits).
    pub(crate) fn longest_window(&self) -> u64 {
        let per = self.per_protocol.iter().flat_map(|p| [p.ip, p.user]);
        [self.ip, self.user].into_iter().chain(per).flatten().map(|r| r.window).max().unwrap_or(0)
    }

    /// The reason of a refusal by the `side` counter of protocol `proto` (`whose`: "from
    /// ADDRESS" or "for this user"; `banned`: a ban, else a full counter); `shared`: the
    /// name of the fleet's shared store that refused, if it was that.
    pub(crate) fn refusal_reason(
        &self,
        side: Side,
        proto: Option<Protocol>,
        whose: &str,
        banned: bool,
        shared: Option<&str>,
    ) -> String {
        let (rate, tag) = self.rate_for(side, proto);
        let Rate { count, window } = rate.unwrap_or(Rate { count: 0, window: 0 });
        let what = if banned { "failed logins" } else { "login attempts (failed or in progress)" };
        let proto = tag.map(|p| format!(", {}", p.as_str())).unwrap_or_default();
        let shared = shared.map(|n| format!(", shared by redis \"{n}\"")).unwrap_or_default();
        format!("too many {what} {whose} (limit {count}/{window}s{proto}{shared})")
    }

    /// Does any rate apply at all?
    pub fn any(&self) -> bool {
        self.ip.is_some() || self.user.is_some() || self.per_protocol.iter().any(|p| p.ip.is_some() || p.user.is_some())
    }

    /// Checks the grouping prefixes (`nginx -t` reports the message).
    pub fn check(&self) -> Result<(), String> {
        if !IPV4_PREFIXES.contains(&self.ipv4_prefix) {
            return Err(format!("ipv4_prefix={} is out of range (24..32)", self.ipv4_prefix));
        }
        if !IPV6_PREFIXES.contains(&self.ipv6_prefix) {
            return Err(format!("ipv6_prefix={} is out of range (48..64)", self.ipv6_prefix));
        }
        if !self.any() {
            return Err("needs ip=RATE and/or user=RATE (or a per-protocol one, e.g. smtp:ip=RATE)".into());
        }
        Ok(())
    }
}

/// One live ban, as `Limiter::bans` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanInfo {
    /// The counter's key (hex in the listing; `Limiter::lift_key` lifts it).
    pub key: u64,
    /// What is banned: the label the ban was recorded with, or `None` when it was not kept
    /// (pushed out of a full zone).
    pub subject: Option<BanSubject>,
    /// The protocol of a per-protocol counter.
    pub protocol: Option<Protocol>,
    /// Failures counted in the counter's window.
    pub failures: u64,
    pub seconds_left: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanSubject {
    /// A client group, as counted: "192.0.2.1", "192.0.2.0/24", "2001:db8:1:2::/64".
    Client(String),
    /// A user name (lower-cased); `truncated`: only its first 32 bytes were kept.
    User { name: String, truncated: bool },
}

/// A login refused without its password being verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The Auth-Wait to send.
    pub wait: u32,
    /// For the log.
    pub reason: String,
}

/// An admitted attempt (`Limiter::admit`), to be given back to `Limiter::settle`: which
/// counters it was counted on, in which window. Dropping it instead leaves the attempt counted
/// until the window ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    ip: Option<IpAddr>,
    /// The protocol the attempt was counted for (per-protocol counters).
    proto: Option<Protocol>,
    /// Lower-cased.
    user: String,
    /// Start of the window the attempt was counted in on the IP's counter (`None`: not counted).
    ip_window: Option<u64>,
    /// The same on the user's counter.
    user_window: Option<u64>,
    evicted_ban: bool,
    /// The key of the attempt's wrong-password mark (source, user, password), when marks are
    /// kept: a success forgets it (the password is right now: its repeats are not held back).
    fingerprint: Option<u64>,
    /// The trust marks a success sets (when the client has a budget of its own): its client
    /// group's for the name as admitted, spelt as it was, and for the account's own spelling
    /// of it (`Limiter::trust_account`).
    trusted: [Option<u64>; 2],
}

impl Ticket {
    /// Was the attempt counted at all (not when no limit applies, or for a repeated wrong
    /// password)?
    pub fn counted(&self) -> bool {
        self.ip_window.is_some() || self.user_window.is_some()
    }

    /// Did counting it evict a live ban (the zone is too small: worth a "zone full" log line)?
    pub fn evicted_ban(&self) -> bool {
        self.evicted_ban
    }
}

/// How an admitted attempt ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Settle<'a> {
    /// Wrong password (or unknown user, disabled account ...): stays counted, may start a ban.
    /// `password` only feeds a keyed fingerprint (never stored).
    Failure {
        password: &'a [u8],
        /// The password (or the user) was wrong, as opposed to a right password refused by the
        /// account's policy (disabled, protocol, network, certificate): only the former's
        /// repeats are refused without a check past [`REPEATS_CHECKED`].
        wrong: bool,
    },
    /// Logged in: the attempt is given back and the IP is trusted for the user.
    Success,
    /// Neither (temporary failure, store error, relay refusal): the attempt is given back.
    Neutral,
}

impl std::fmt::Debug for Settle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Settle::Failure { .. } => "Failure { password: <redacted> }",
            Settle::Success => "Success",
            Settle::Neutral => "Neutral",
        })
    }
}

/// The arguments of `mail_auth_limit` after `zone=`: `ip=RATE`, `user=RATE`, `ban=TIME`,
/// `ipv4_prefix=24..32`, `ipv6_prefix=48..64`, and per protocol `imap:ip=RATE`,
/// `smtp:user=RATE` ... (`imap`, `pop3`, `smtp`). Each at most once.
pub fn parse_limit_args(args: &[&str]) -> Result<LimitConfig, String> {
    let mut cfg = LimitConfig::default();
    let mut seen: Vec<&str> = Vec::new();
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| format!("invalid parameter \"{a}\""))?;
        if seen.contains(&k) {
            return Err(format!("duplicate parameter \"{k}\""));
        }
        seen.push(k);
        let prefix = |range: std::ops::RangeInclusive<u8>| {
            v.parse::<u8>()
                .ok()
                .filter(|p| range.contains(p))
                .ok_or_else(|| format!("{k}={v} is invalid: a prefix length from {} to {}", range.start(), range.end()))
        };
        match k {
            "ip" => cfg.ip = Some(parse_rate(v)?),
            "user" => cfg.user = Some(parse_rate(v)?),
            "ban" => cfg.ban = u64::from(crate::config::parse_seconds(v).map_err(|e| format!("ban: {e}"))?),
            "ipv4_prefix" => cfg.ipv4_prefix = prefix(IPV4_PREFIXES)?,
            "ipv6_prefix" => cfg.ipv6_prefix = prefix(IPV6_PREFIXES)?,
            _ => {
                let (proto, side) = k
                    .split_once(':')
                    .and_then(|(p, side)| Some((Protocol::ALL.into_iter().find(|x| x.as_str() == p)?, side)))
                    .ok_or_else(|| {
                        format!(
                            "unknown parameter \"{k}\" (known: ip, user, ban, ipv4_prefix, ipv6_prefix, \
                             imap:ip, imap:user, pop3:ip, pop3:user, smtp:ip, smtp:user)"
                        )
                    })?;
                let r = &mut cfg.per_protocol[proto_index(proto)];
                match side {
                    "ip" => r.ip = Some(parse_rate(v)?),
                    "user" => r.user = Some(parse_rate(v)?),
                    _ => return Err(format!("unknown parameter \"{k}\" (per protocol: ip or user)")),
                }
            }
        }
    }
    cfg.check()?;
    Ok(cfg)
}

/// What a lift request (`mail_auth_limit_bans`, `DELETE`/`POST` with a query) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiftTarget {
    /// `client=ADDR`: the group ADDR is counted in.
    Client(IpAddr),
    /// `user=NAME` (percent-encoded as in any query).
    User(String),
    /// `key=HEX`, as the listing shows it.
    Key(u64),
}

/// The query of a lift request: exactly one of `client=`, `user=`, `key=`.
pub fn parse_lift_query(q: &[u8]) -> Result<LiftTarget, String> {
    let usage = "expected one of client=ADDRESS, user=NAME, key=HEX";
    let mut found = None;
    for part in q.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        let plus: Vec<u8> = v.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        let v = crate::protocol::unescape(&plus).map_err(|_| "bad percent-encoding in the query".to_string())?;
        let v = String::from_utf8(v).map_err(|_| "the query is not UTF-8".to_string())?;
        let t = match k {
            b"client" => LiftTarget::Client(
                v.parse().map_err(|_| format!("client=\"{}\" is not an IP address", v.escape_debug()))?,
            ),
            b"user" if !v.is_empty() => LiftTarget::User(v),
            b"key" => LiftTarget::Key(
                u64::from_str_radix(&v, 16)
                    .ok()
                    .filter(|k| *k != 0)
                    .ok_or_else(|| format!("key=\"{}\" is not a key of the listing", v.escape_debug()))?,
            ),
            _ => return Err(usage.into()),
        };
        if found.replace(t).is_some() {
            return Err(usage.into());
        }
    }
    found.ok_or_else(|| usage.into())
}

/// Why a request looks sent by a web browser on behalf of a page (`None`: it does not): a ban
/// lift, or a JSON API password check (which counts failures: a page could ban any user or
/// address it names). Browsers send `Origin` with every cross-origin `POST`/`DELETE` (and
/// `Sec-Fetch-Site`), and a page on any site may make a browser `POST` to a loopback or
/// internal address without asking first (a "simple" request: a form's `text/plain` body, or
/// `fetch` with `no-cors`): the answer stays unreadable to it, the request takes effect.
/// `curl`, scripts, monitoring and Dovecot send neither header.
pub fn from_browser<'h>(headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>) -> Option<String> {
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"origin") || name.eq_ignore_ascii_case(b"sec-fetch-site") {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            return Some(format!("{name}: {}", crate::protocol::printable(value, 128)));
        }
    }
    None
}

/// Whether `host` (the request's Host as nginx keeps it: lower case, without its port) is one
/// this server answers to: an IP address, `localhost`, or one of `server_names` (exact, or
/// `*.example.org`, `.example.org`, `www.example.*`; regular expressions are not matched). A
/// request without a Host (HTTP/1.0) is ours too. A page on any site may rebind its own name to
/// a listener's address (DNS rebinding) and read the ban listing (client addresses, user names)
/// or auth_http answers as its own, same-origin, without `Origin` or `Sec-Fetch-*`; its
/// requests still name the page's host.
pub fn host_is_ours<'n>(host: &[u8], server_names: impl IntoIterator<Item = &'n [u8]>) -> bool {
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty()
        || host.starts_with(b"[")
        || host.eq_ignore_ascii_case(b"localhost")
        || std::str::from_utf8(host).is_ok_and(|h| h.parse::<std::net::Ipv4Addr>().is_ok())
    {
        return true;
    }
    server_names.into_iter().any(|name| {
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty() || name.starts_with(b"~") {
            false
        } else if let Some(suffix) = name.strip_prefix(b"*") {
            // "*.example.org": a name below it
            host.len() > suffix.len() && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        } else if let Some(base) = name.strip_prefix(b".") {
            // ".example.org": the name and every name below it
            host.eq_ignore_ascii_case(base)
                || (host.len() > name.len() && host[host.len() - name.len()..].eq_ignore_ascii_case(name))
        } else if let Some(prefix) = name.strip_suffix(b"*") {
            // "www.example.*"
            host.len() > prefix.len() && host[..prefix.len()].eq_ignore_ascii_case(prefix)
        } else {
            host.eq_ignore_ascii_case(name)
        }
    })
}

/// The ban listing as JSON: `{"bans":[{"client"|"user":…, "protocol":…, "failures":N,
/// "seconds_left":S, "key":"HEX"}, …], "complete":true}` (`complete` false when `max` cut it).
pub fn bans_json(bans: &[BanInfo], complete: bool) -> String {
    use serde_json::{json, Map, Value};
    let list: Vec<Value> = bans
        .iter()
        .map(|b| {
            let mut m = Map::new();
            match &b.subject {
                Some(BanSubject::Client(c)) => {
                    m.insert("client".into(), json!(c));
                }
                Some(BanSubject::User { name, truncated }) => {
                    m.insert("user".into(), json!(name));
                    if *truncated {
                        m.insert("user_truncated".into(), json!(true));
                    }
                }
                None => {
                    m.insert("unknown".into(), json!(true));
                }
            }
            m.insert("protocol".into(), b.protocol.map_or(Value::Null, |p| json!(p.as_str())));
            m.insert("failures".into(), json!(b.failures));
            m.insert("seconds_left".into(), json!(b.seconds_left));
            m.insert("key".into(), json!(format!("{:016x}", b.key)));
            Value::Object(m)
        })
        .collect();
    let mut out = json!({ "bans": list, "complete": complete }).to_string();
    out.push('\n');
    out
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Refusals (bans and full counters) by the per-IP limit.
    pub refused_ip: u64,
    /// Refusals by the per-user limit.
    pub refused_user: u64,
    /// Live entries pushed out by new ones (the zone is too small if this grows fast).
    pub evictions: u64,
    /// Live bans among them: pushed out only when every slot a new counter could take held a
    /// live ban or attempts in flight (the zone is far too small).
    pub bans_evicted: u64,
}

pub struct Limiter<'a> {
    table: Table<'a>,
    cfg: LimitConfig,
    /// The protocol of the logins checked (`with_protocol`): selects per-protocol budgets.
    proto: Option<Protocol>,
    /// What the logins are checked against (`with_scope`): trust is per store.
    scope: String,
}

/// A counter an attempt is counted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Ip,
    User,
}

/// The network `ip` is counted in: IPv4 (also when IPv4-mapped) masked to `v4` bits, IPv6
/// masked to `v6` bits; with its prefix length.
pub(crate) fn ip_network(ip: IpAddr, v4: u8, v6: u8) -> (IpAddr, u8) {
    match canonical_ip(ip) {
        IpAddr::V4(a) => {
            let bits = u32::from(v4.min(32));
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            (IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)), bits as u8)
        }
        IpAddr::V6(a) => {
            let bits = u32::from(v6.min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            (IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)), bits as u8)
        }
    }
}

/// The bytes a network is keyed by: the IPv4 address (/32), the first 8 bytes of IPv6 (/64),
/// as before prefixes were configurable; other prefixes add their length.
pub(crate) fn group_bytes((net, bits): (IpAddr, u8)) -> Vec<u8> {
    let mut v = match net {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets()[..8].to_vec(),
    };
    let default = if net.is_ipv4() { DEFAULT_IPV4_PREFIX } else { DEFAULT_IPV6_PREFIX };
    if bits != default {
        v.push(bits);
    }
    v
}

/// A network as the log and the ban listing show it: "192.0.2.1", "192.0.2.0/24",
/// "2001:db8:1:2::/64".
pub(crate) fn network_label((net, bits): (IpAddr, u8)) -> String {
    match net {
        IpAddr::V4(a) if bits == 32 => a.to_string(),
        a => format!("{a}/{bits}"),
    }
}

/// Auth-Wait for the `n`th refusal (from 0): 1, 2, 4 ... 32, 60 seconds.
pub(crate) fn wait_for(n: u64) -> u32 {
    (1u32 << n.min(6)).min(MAX_WAIT)
}

/// User names are keyed as the stores compare them, so that every spelling of one account
/// shares its budget: compatibility-normalized (NFKC: a fullwidth `ａ` is `a`), case-insensitive,
/// without accents (combining marks), without leading or trailing white space and with inner
/// runs of it as one space. LDAP's `caseIgnoreMatch` (the `uid` of the default filter) finds
/// `alice` for ` alice`, `ALICE `, `alice` followed by a no-break space, or `ａlice`;
/// MySQL/MariaDB's PAD SPACE collations ignore trailing spaces, and their accent-insensitive
/// ones (`utf8mb4_general_ci`, `utf8mb4_0900_ai_ci`, the defaults) find `alice` for `älice`,
/// `àlice`, `alíce`: keyed on the name as sent, each spelling was a budget of its own.
pub(crate) fn fold(user: &str) -> String {
    // the usual name: ASCII, no white space
    if user.bytes().all(|b| b.is_ascii_graphic()) {
        return user.to_ascii_lowercase();
    }
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization as _;
    // lower-cased first: a lower-case form may bring a mark of its own (`İ` is `i` and a dot)
    let lower: String = user.nfkc().collect::<String>().to_lowercase();
    let folded: String = lower.nfkd().filter(|&c| !is_combining_mark(c)).nfc().collect();
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    // a name of white space only is still a name (an empty key counts nothing)
    if out.is_empty() && !user.is_empty() {
        out.push(' ');
    }
    out
}

/// How a live slot ranks for eviction at `now` (`Table::claim_with` ranks live slots only).
fn rank(now: u64) -> impl Fn(&[AtomicU64]) -> u8 {
    move |s| {
        let head = s[DATA].load(Ordering::Relaxed) >> 32;
        if head == LABEL_TAG {
            return 0;
        }
        if head == TRUST_TAG {
            return RANK_TRUST;
        }
        let (attempts, fails) = (s[ATTEMPTS].load(Ordering::Relaxed), s[FAILS].load(Ordering::Relaxed));
        if s[BAN_UNTIL].load(Ordering::Relaxed) > now {
            RANK_BAN
        } else if attempts > fails {
            RANK_IN_FLIGHT
        } else if attempts > 0 && fails > 0 {
            // (a fingerprint mark has no attempts: its `LAST_CHECK` is in the `FAILS` word)
            RANK_FAILS
        } else {
            0
        }
    }
}

/// Does this counter slot hold attempts of a window still running at `now`?
fn in_window(s: &[AtomicU64], rate: Rate, now: u64) -> bool {
    s[ATTEMPTS].load(Ordering::Relaxed) > 0 && now < s[START].load(Ordering::Relaxed).saturating_add(rate.window)
}

/// Slots a ban listing reads under one taking of the zone's lock.
const SCAN_CHUNK: usize = 1024;

impl<'a> Limiter<'a> {
    /// Opens the limiter in a shared region (a zeroed region tracks nothing yet). `None` if the
    /// region is too small (fewer than `limiter::min_words()` words).
    pub fn new(words: &'a [AtomicU64], cfg: LimitConfig) -> Option<Limiter<'a>> {
        Some(Limiter { table: Table::new(words, SLOT_WORDS)?, cfg, proto: None, scope: String::new() })
    }

    /// The limiter for logins checked against `scope` (the store's, `Store::scope`): a client
    /// trusted for an account of one store is not trusted for another store's account of the
    /// same name (locations with stores of their own may share a zone).
    pub fn with_scope(mut self, scope: &str) -> Limiter<'a> {
        scope.clone_into(&mut self.scope);
        self
    }

    /// The limiter for logins of protocol `p` (its own budgets, when configured).
    pub fn with_protocol(mut self, p: Protocol) -> Limiter<'a> {
        self.proto = Some(p);
        self
    }

    fn network(&self, ip: IpAddr) -> (IpAddr, u8) {
        ip_network(ip, self.cfg.ipv4_prefix, self.cfg.ipv6_prefix)
    }

    fn ip_group(&self, ip: IpAddr) -> Vec<u8> {
        group_bytes(self.network(ip))
    }

    /// The client group as counted, for log lines and the ban listing.
    pub fn ip_label(&self, ip: IpAddr) -> String {
        network_label(self.network(ip))
    }

    /// Slots the region holds (an attempt uses up to 4: IP, user, fingerprint, trusted).
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    fn key(&self, parts: &[&[u8]]) -> u64 {
        key64(&self.table.keyed_hash(parts))
    }

    /// The IP counter's key; `tag`: the protocol of a per-protocol counter.
    fn ip_key(&self, ip: IpAddr, tag: Option<Protocol>) -> u64 {
        match tag {
            None => self.key(&[b"ip", &self.ip_group(ip)]),
            Some(p) => self.key(&[b"ip", &self.ip_group(ip), p.as_str().as_bytes()]),
        }
    }

    /// `user` is lower-cased already, here and below.
    fn user_key(&self, user: &str, tag: Option<Protocol>) -> u64 {
        match tag {
            None => self.key(&[b"user", user.as_bytes()]),
            Some(p) => self.key(&[b"user", user.as_bytes(), p.as_str().as_bytes()]),
        }
    }

    /// `name` as the client or the store spelt it (not folded): trust is for one account.
    fn trusted_key(&self, ip: IpAddr, name: &str) -> u64 {
        self.key(&[b"trusted", &self.ip_group(ip), self.scope.as_bytes(), name.as_bytes()])
    }

    /// The key of the mark that exempts `ip`'s group from the user's counter for the account
    /// `name` (exact spelling), when it may: only where the group has a budget of its own (no
    /// `ip=` for this protocol: a guesser sharing the owner's address, a NAT, a /64, would
    /// have no bound at all) and the user has one to be exempt from.
    fn trust_for(&self, ip: Option<IpAddr>, name: &str, proto: Option<Protocol>) -> Option<u64> {
        let ip = ip.filter(|_| !name.is_empty())?;
        self.rate_for(Side::Ip, proto).0?;
        self.rate_for(Side::User, proto).0?;
        Some(self.trusted_key(ip, name))
    }

    fn fingerprint_key(&self, ip: Option<IpAddr>, user: &str, password: &[u8]) -> u64 {
        let group = ip.map(|ip| self.ip_group(ip)).unwrap_or_default();
        self.key(&[b"fp", &group, user.as_bytes(), password])
    }

    fn rate_for(&self, side: Side, proto: Option<Protocol>) -> (Option<Rate>, Option<Protocol>) {
        self.cfg.rate_for(side, proto)
    }

    fn longest_window(&self) -> u64 {
        self.cfg.longest_window()
    }

    /// The counters that apply to `ip` and `user` (folded), keyed: the IP's, and the user's
    /// unless the name is empty (EXTERNAL without an authorization identity, SMTP without
    /// AUTH: the IP limit only, never one counter shared by every such client).
    fn counters(&self, ip: Option<IpAddr>, user: &str, proto: Option<Protocol>) -> Counters {
        let (ip_rate, ip_tag) = self.rate_for(Side::Ip, proto);
        let (user_rate, user_tag) = self.rate_for(Side::User, proto);
        let user_rate = user_rate.filter(|_| !user.is_empty());
        Counters {
            ip: ip.zip(ip_rate).map(|(ip, r)| (self.ip_key(ip, ip_tag), r)),
            user: user_rate.map(|r| (self.user_key(user, user_tag), r)),
        }
    }

    fn refusal(&self, side: Side, ip: Option<IpAddr>, wait: u32, banned: bool) -> Refusal {
        let (whose, header) = match (side, ip) {
            (Side::Ip, Some(ip)) => (format!("from {}", self.ip_label(ip)), REFUSED_IP),
            _ => ("for this user".to_string(), REFUSED_USER),
        };
        self.table.header(header).fetch_add(1, Ordering::Relaxed);
        Refusal { wait, reason: self.cfg.refusal_reason(side, self.proto, &whose, banned, None) }
    }

    /// A ban the fleet's shared limiter reported (`mail_auth_limit redis=`) on the counter of
    /// client `ip`: kept here too, for `seconds` from `now`, so that this proxy refuses the
    /// client at once without asking the shared store again (the growing wait goes on from
    /// `refusals`). Listed by `bans` like a ban of its own; never evicts a live ban or a
    /// counter with attempts in flight (the shared store still refuses then). (A user's ban is
    /// not kept here: see the engine's fleet stage.)
    pub fn learn_ip_ban(&self, ip: IpAddr, seconds: u64, refusals: u64, now: u64) {
        let (Some(_), tag) = self.rate_for(Side::Ip, self.proto) else {
            return;
        };
        let key = self.ip_key(ip, tag);
        let until = now.saturating_add(seconds);
        let label = Label::client(self.network(ip), tag);
        let g = self.table.lock();
        let Some((s, claim)) = self.table.claim_with(&g, key, now, rank(now), RANK_IN_FLIGHT) else {
            return;
        };
        // the deadline first: a slot past its deadline (a fresh one has none) is free to the
        // label's claim, which would take this very slot and lose the ban
        if s[1].load(Ordering::Relaxed) < until {
            s[1].store(until, Ordering::Relaxed);
        }
        if s[BAN_UNTIL].load(Ordering::Relaxed) < until {
            s[BAN_UNTIL].store(until, Ordering::Relaxed);
            s[REFUSALS].store(refusals, Ordering::Relaxed);
            self.set_label(&g, key, &label, now, until);
        }
        drop(g);
        self.evicted(Some(claim));
    }

    /// Is the mark `key` live at `now`? (Touches it if so.)
    fn mark_live(&self, g: &Guard<'_, 'a>, key: u64, now: u64) -> bool {
        self.live_mark(g, key, now).is_some()
    }

    /// The slot of mark `key` if it is live at `now` (touched).
    fn live_mark<'g>(&'g self, g: &Guard<'_, 'a>, key: u64, now: u64) -> Option<&'g [AtomicU64]> {
        let s = self.table.find(g, key).filter(|s| s[1].load(Ordering::Relaxed) > now)?;
        self.table.touch(g, s, now);
        Some(s)
    }

    /// Sets the fingerprint mark `key` live until `until`, unless that would evict anything
    /// ranked above 0 (a counter holding failures, a trust mark ...: a flood's marks give way).
    /// The claim, if any. `not_wrong`: the failure it marks was a right password refused by
    /// policy (see [`NOT_WRONG`]).
    fn set_mark(&self, g: &Guard<'_, 'a>, key: u64, now: u64, until: u64, not_wrong: bool) -> Option<Claim> {
        let (s, claim) = self.table.claim_with(g, key, now, rank(now), RANK_FAILS)?;
        if s[1].load(Ordering::Relaxed) <= now {
            // (its own slot, dead: a new mark, whose repeats start again)
            s[REPEATS].store(0, Ordering::Relaxed);
            s[NOT_WRONG].store(u64::from(not_wrong), Ordering::Relaxed);
        } else if !not_wrong {
            // known wrong now (its earlier failure was not a verdict on it, e.g. a costly
            // check abandoned after the cheap app passwords failed): its repeats are held back
            // from now on, and a later failure that is no verdict does not let them go again
            s[NOT_WRONG].store(0, Ordering::Relaxed);
        }
        s[1].store(until, Ordering::Relaxed);
        Some(claim)
    }

    /// Sets the trust mark `key` live until `until`, unless that would evict another live
    /// trust mark or anything ranked above it (it gives way then: the login is not
    /// remembered). The claim, if any.
    fn set_trust(&self, g: &Guard<'_, 'a>, key: u64, now: u64, until: u64) -> Option<Claim> {
        let (s, claim) = self.table.claim_with(g, key, now, rank(now), RANK_TRUST)?;
        s[DATA].store(TRUST_TAG << 32, Ordering::Relaxed);
        s[1].store(until.max(s[1].load(Ordering::Relaxed)), Ordering::Relaxed);
        Some(claim)
    }

    /// Counts an eviction; true if it was a live ban.
    fn evicted(&self, claim: Option<Claim>) -> bool {
        let Some(Claim::Evicted { rank }) = claim else {
            return false;
        };
        self.table.header(EVICTIONS).fetch_add(1, Ordering::Relaxed);
        if rank >= RANK_BAN {
            self.table.header(BANS_EVICTED).fetch_add(1, Ordering::Relaxed);
        }
        rank >= RANK_BAN
    }

    /// Refuses on this counter? A live ban, or (`full`) as many attempts as the limit in the
    /// running window. Counts the refusal on the counter for the growing wait: (wait, banned).
    fn refuses(&self, g: &Guard<'_, 'a>, key: u64, rate: Rate, full: bool, now: u64) -> Option<(u32, bool)> {
        let s = self.table.find(g, key)?;
        let banned = s[BAN_UNTIL].load(Ordering::Relaxed) > now;
        let at_limit = full && in_window(s, rate, now) && s[ATTEMPTS].load(Ordering::Relaxed) >= u64::from(rate.count);
        if !banned && !at_limit {
            return None;
        }
        self.table.touch(g, s, now);
        let wait = wait_for(s[REFUSALS].fetch_add(1, Ordering::Relaxed));
        Some((wait, banned))
    }

    /// One more attempt on a counter: the start of the window it is counted in, and the claim.
    fn add_attempt(&self, g: &Guard<'_, 'a>, key: u64, rate: Rate, now: u64) -> Option<(u64, Claim)> {
        // nothing ranks at u8::MAX: always a slot
        let (s, claim) = self.table.claim_with(g, key, now, rank(now), u8::MAX)?;
        let ban_until = s[BAN_UNTIL].load(Ordering::Relaxed);
        let mut start = s[START].load(Ordering::Relaxed);
        let attempts = s[ATTEMPTS].load(Ordering::Relaxed);
        if attempts == 0 || now >= start.saturating_add(rate.window) {
            // a new window (a new slot is zeroed)
            start = now;
            s[START].store(start, Ordering::Relaxed);
            s[ATTEMPTS].store(1, Ordering::Relaxed);
            s[FAILS].store(0, Ordering::Relaxed);
            if ban_until <= now {
                s[REFUSALS].store(0, Ordering::Relaxed);
            }
        } else {
            s[ATTEMPTS].store(attempts + 1, Ordering::Relaxed);
        }
        // an attempt in flight keeps its counter live past the window for a slow verification
        // (a dead slot is anyone's to claim, and its failure would be lost)
        let deadline = start.saturating_add(rate.window).max(ban_until).max(now.saturating_add(SETTLE_GRACE));
        s[1].store(deadline.max(s[1].load(Ordering::Relaxed)), Ordering::Relaxed);
        Some((start, claim))
    }

    /// The counter slot of an attempt counted in the window starting at `start`, if that
    /// window's slot is still there with the attempt in flight.
    fn in_flight<'g>(&'g self, g: &Guard<'_, 'a>, key: u64, start: u64) -> Option<&'g [AtomicU64]> {
        self.table.find(g, key).filter(|s| {
            s[START].load(Ordering::Relaxed) == start
                && s[ATTEMPTS].load(Ordering::Relaxed) > s[FAILS].load(Ordering::Relaxed)
        })
    }

    /// An attempt in flight failed; the failure that reaches the limit starts the ban (and
    /// records `label`, what the counter counts, for the ban listing).
    /// The ban it starts, if any (`(key, until)`): the caller records its label once every
    /// counter of the settlement is updated (a label's claim takes dead slots, which a counter
    /// not failed yet may still be).
    fn fail(&self, g: &Guard<'_, 'a>, key: u64, rate: Rate, start: u64, now: u64) -> Option<(u64, u64)> {
        let s = self.in_flight(g, key, start)?;
        let fails = s[FAILS].load(Ordering::Relaxed) + 1;
        s[FAILS].store(fails, Ordering::Relaxed);
        let window_end = start.saturating_add(rate.window);
        let mut ban_until = s[BAN_UNTIL].load(Ordering::Relaxed);
        let starts_ban = fails >= u64::from(rate.count) && ban_until <= now;
        if starts_ban {
            ban_until = window_end.max(now.saturating_add(self.cfg.ban));
            s[BAN_UNTIL].store(ban_until, Ordering::Relaxed);
            s[REFUSALS].store(0, Ordering::Relaxed);
        }
        // the deadline before the label: a failure settled after its window ended finds this
        // slot past its deadline, i.e. free to the label's claim, which would lose the ban
        // the grace of attempts still in flight is kept; the last one settled drops it
        let mut deadline = window_end.max(ban_until);
        if s[ATTEMPTS].load(Ordering::Relaxed) > fails {
            deadline = deadline.max(s[1].load(Ordering::Relaxed));
        }
        s[1].store(deadline, Ordering::Relaxed);
        starts_ban.then_some((key, ban_until))
    }

    /// Records what the counter `key` counts until `until`, unless that would evict anything
    /// ranked above 0 (a counter holding failures, a trust mark, a live ban ...: the listing
    /// then shows the key only).
    fn set_label(&self, g: &Guard<'_, 'a>, key: u64, label: &Label, now: u64, until: u64) {
        if label.head == 0 {
            return; // nothing to record
        }
        let Some((s, _)) = self.table.claim_with(g, label_key(key), now, rank(now), RANK_FAILS) else {
            return;
        };
        s[1].store(until, Ordering::Relaxed);
        s[DATA].store(label.head, Ordering::Relaxed);
        for (w, chunk) in s[DATA + 1..DATA + 5].iter().zip(label.bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// An attempt in flight is given back (if its window is still the counter's).
    fn refund(&self, g: &Guard<'_, 'a>, key: u64, rate: Rate, start: u64, now: u64) {
        let Some(s) = self.in_flight(g, key, start) else {
            return;
        };
        let attempts = s[ATTEMPTS].load(Ordering::Relaxed) - 1;
        s[ATTEMPTS].store(attempts, Ordering::Relaxed);
        let ban_until = s[BAN_UNTIL].load(Ordering::Relaxed);
        if attempts == 0 && ban_until <= now {
            // nothing left to count: free the slot
            self.table.remove(g, s);
        } else if attempts == s[FAILS].load(Ordering::Relaxed) {
            // nothing in flight any more: no grace
            s[1].store(start.saturating_add(rate.window).max(ban_until), Ordering::Relaxed);
        }
    }

    /// Before any store lookup or password check: is this IP banned, or this user (unless
    /// the IP is trusted for it)? Counts the refusal (growing wait, `refused_*`), not an attempt.
    pub fn banned(&self, ip: Option<IpAddr>, user: &str, now: u64) -> Option<Refusal> {
        let trusted = self.trust_for(ip, user, self.proto);
        let user = fold(user);
        let c = self.counters(ip, &user, self.proto);
        let g = self.table.lock();
        let mut refused = None;
        if let Some((key, rate)) = c.ip {
            refused = self.refuses(&g, key, rate, false, now).map(|(wait, _)| (Side::Ip, wait));
        }
        if let (None, Some((key, rate))) = (refused, c.user) {
            if !trusted.is_some_and(|t| self.mark_live(&g, t, now)) {
                refused = self.refuses(&g, key, rate, false, now).map(|(wait, _)| (Side::User, wait));
            }
        }
        drop(g);
        refused.map(|(side, wait)| self.refusal(side, ip, wait, true))
    }

    /// After the store lookup, right before a password verification: may it run? `user` is the
    /// account name the store resolved (the name as given for an unknown user). Refused when
    /// the IP or the user (unless the IP is trusted for it) is banned or already holds `count`
    /// attempts in the running window (growing wait, `refused_*`). Otherwise one attempt more
    /// on each of these counters, to be settled by `settle` with the ticket; a wrong password
    /// this source already failed with recently is admitted without counting.
    pub fn admit(&self, ip: Option<IpAddr>, user: &str, password: &[u8], now: u64) -> Result<Ticket, Refusal> {
        self.admit_on(ip, true, user, password, now)
    }

    /// [`Limiter::admit`] for the store's own spelling of the account a login named otherwise
    /// (its client's attempt is counted by the `admit` of the name as given): the account's
    /// counter only, but with the client's trust for the account (a client the account logged
    /// in from is not refused by the account's ban, and its failures do not count against it)
    /// and, when it logs in, trusting the client for the account.
    pub fn admit_account(
        &self,
        ip: Option<IpAddr>,
        account: &str,
        password: &[u8],
        now: u64,
    ) -> Result<Ticket, Refusal> {
        self.admit_on(ip, false, account, password, now)
    }

    fn admit_on(
        &self,
        ip: Option<IpAddr>,
        count_ip: bool,
        user: &str,
        password: &[u8],
        now: u64,
    ) -> Result<Ticket, Refusal> {
        let trusted = self.trust_for(ip, user, self.proto);
        let mut ticket = Ticket {
            ip,
            proto: self.proto,
            user: fold(user),
            ip_window: None,
            user_window: None,
            evicted_ban: false,
            fingerprint: None,
            trusted: [trusted, None],
        };
        if self.longest_window() == 0 {
            return Ok(ticket);
        }
        let mut c = self.counters(ip, &ticket.user, self.proto);
        if !count_ip {
            // (`settle` finds no IP window in the ticket: it leaves the IP's counter alone)
            c.ip = None;
        }
        let fingerprint = self.fingerprint_key(ip, &ticket.user, password);
        ticket.fingerprint = Some(fingerprint);
        let g = self.table.lock();
        let ip_counter = c.ip;
        let trusted = trusted.is_some_and(|t| self.mark_live(&g, t, now));
        let user_counter = c.user.filter(|_| !trusted);
        for (side, counter) in [(Side::Ip, ip_counter), (Side::User, user_counter)] {
            let Some((key, rate)) = counter else {
                continue;
            };
            if let Some((wait, banned)) = self.refuses(&g, key, rate, true, now) {
                drop(g);
                return Err(self.refusal(side, ip, wait, banned));
            }
        }
        // the same wrong password again from the same source: counted once while it repeats;
        // checked again REPEATS_CHECKED times at once, then at most once a second
        if let Some(s) = self.live_mark(&g, fingerprint, now) {
            let repeats = s[REPEATS].fetch_add(1, Ordering::Relaxed);
            let policy = s[NOT_WRONG].load(Ordering::Relaxed) != 0;
            if policy || repeats < REPEATS_CHECKED || now > s[LAST_CHECK].load(Ordering::Relaxed) {
                s[LAST_CHECK].store(now, Ordering::Relaxed);
                return Ok(ticket);
            }
            drop(g);
            self.table.header(REFUSED_USER).fetch_add(1, Ordering::Relaxed);
            return Err(Refusal {
                wait: 1,
                reason: "the same wrong password again from this client, within a second of its last check (refused without a check)".into(),
            });
        }
        let mut claims = [None, None];
        if let Some((key, rate)) = ip_counter {
            if let Some((start, claim)) = self.add_attempt(&g, key, rate, now) {
                (ticket.ip_window, claims[0]) = (Some(start), Some(claim));
            }
        }
        if let Some((key, rate)) = user_counter {
            if let Some((start, claim)) = self.add_attempt(&g, key, rate, now) {
                (ticket.user_window, claims[1]) = (Some(start), Some(claim));
            }
        }
        drop(g);
        for claim in claims {
            ticket.evicted_ban |= self.evicted(claim);
        }
        Ok(ticket)
    }

    /// After the verification an `admit` let run: how it ended. A failure stays counted (and
    /// starts a ban when it brings a counter's failures to the limit); a success or a neutral
    /// outcome gives its attempts back, if their window is still running; a success also
    /// trusts the IP for the user. Never evicts a live ban (the marks it sets give way).
    pub fn settle(&self, ticket: Ticket, how: Settle<'_>, now: u64) {
        let c = self.counters(ticket.ip, &ticket.user, ticket.proto);
        let counted = [c.ip.zip(ticket.ip_window), c.user.zip(ticket.user_window)];
        let mut mark = None;
        let mut trust = [None, None];
        let mut forget = None;
        let mut not_wrong = false;
        let mut labels = [Label::default(), Label::default()];
        match how {
            Settle::Failure { password, wrong } => {
                not_wrong = !wrong;
                let tags = [self.rate_for(Side::Ip, ticket.proto).1, self.rate_for(Side::User, ticket.proto).1];
                if let Some(ip) = ticket.ip.filter(|_| ticket.ip_window.is_some()) {
                    labels[0] = Label::client(self.network(ip), tags[0]);
                }
                if ticket.user_window.is_some() {
                    labels[1] = Label::user(&ticket.user, tags[1]);
                }
                let window = self.longest_window();
                if window > 0 {
                    let fp = self.fingerprint_key(ticket.ip, &ticket.user, password);
                    mark = Some((fp, now.saturating_add(window)));
                }
            }
            Settle::Success => {
                let until = now.saturating_add(self.cfg.ban.max(TRUSTED_FOR));
                trust = ticket.trusted.map(|t| t.map(|t| (t, until)));
                forget = ticket.fingerprint;
            }
            Settle::Neutral => {}
        }
        let g = self.table.lock();
        // a counted failure whose mark is live now was not marked when it was admitted (a
        // marked password is admitted without counting): an attempt with the same password
        // from the same source, in flight at the same time (a device opening several
        // connections at once with a stale password), failed meanwhile and stays counted;
        // this one is given back, so that the burst counts once, as its repeats would
        let sibling_failed = mark.is_some_and(|(key, _)| {
            self.table.find(&g, key).is_some_and(|s| s[1].load(Ordering::Relaxed) > now && !is_label(s))
        });
        let mut bans = [None, None];
        for (((key, rate), start), ban) in counted.into_iter().zip(&mut bans).filter_map(|(c, b)| Some((c?, b))) {
            match how {
                Settle::Failure { .. } if !sibling_failed => *ban = self.fail(&g, key, rate, start, now),
                Settle::Failure { .. } | Settle::Success | Settle::Neutral => self.refund(&g, key, rate, start, now),
            }
        }
        for (ban, label) in bans.iter().zip(&labels) {
            if let Some((key, until)) = *ban {
                self.set_label(&g, key, label, now, until);
            }
        }
        if let Some(s) = forget.and_then(|key| self.table.find(&g, key)) {
            // (the password was marked wrong, and is right now: a changed password)
            self.table.remove(&g, s);
        }
        let claim = mark.and_then(|(key, until)| self.set_mark(&g, key, now, until, not_wrong));
        let trust = trust.map(|t| t.and_then(|(key, until)| self.set_trust(&g, key, now, until)));
        drop(g);
        for claim in std::iter::once(claim).chain(trust) {
            self.evicted(claim);
        }
    }

    /// The account a login named otherwise (`name`: the store's own spelling, e.g. `alice` for
    /// `Alice`, folding to the same budget: no `admit_account` then) is trusted too when the
    /// ticket's login succeeds, so that its owner is trusted under either spelling.
    pub fn trust_account(&self, ticket: &mut Ticket, name: &str) {
        ticket.trusted[1] = self.trust_for(ticket.ip, name, ticket.proto);
    }

    /// The live bans at `now` (counters whose ban runs), with what each bans when its label
    /// was kept; no more than `max` entries. The zone is read [`SCAN_CHUNK`] slots at a time,
    /// each part under the lock, so that a listing of a big zone never holds the other
    /// workers' logins for longer than a part takes (a ban that starts or ends meanwhile may be
    /// missed or listed: the listing is a moment's view).
    pub fn bans(&self, now: u64, max: usize) -> Vec<BanInfo> {
        let mut out = Vec::new();
        let mut from = 0;
        while from < self.table.capacity() && out.len() < max {
            let g = self.table.lock();
            for s in self.table.slots_in(&g, from, from + SCAN_CHUNK) {
                let key = s[0].load(Ordering::Relaxed);
                if key == 0 || is_label(s) || s[1].load(Ordering::Relaxed) <= now {
                    continue;
                }
                let ban_until = s[BAN_UNTIL].load(Ordering::Relaxed);
                if ban_until <= now {
                    continue;
                }
                if out.len() >= max {
                    break;
                }
                let label = self
                    .table
                    .find(&g, label_key(key))
                    .filter(|l| is_label(l) && l[1].load(Ordering::Relaxed) > now)
                    .and_then(read_label);
                let (subject, protocol) = label.map_or((None, None), |(s, p)| (Some(s), p));
                out.push(BanInfo {
                    key,
                    subject,
                    protocol,
                    failures: s[FAILS].load(Ordering::Relaxed),
                    seconds_left: ban_until - now,
                });
            }
            drop(g);
            from += SCAN_CHUNK;
        }
        out
    }

    /// Forgets the counters of client `ip`'s group (its common and per-protocol ones): lifts
    /// its bans and clears its failures. The number of bans lifted (live at `now`).
    pub fn lift_client(&self, ip: IpAddr, now: u64) -> usize {
        let keys: Vec<u64> =
            std::iter::once(None).chain(Protocol::ALL.map(Some)).map(|tag| self.ip_key(ip, tag)).collect();
        self.lift(&keys, now)
    }

    /// The same for a user's counters (case-insensitive name).
    pub fn lift_user(&self, user: &str, now: u64) -> usize {
        let user = fold(user);
        let keys: Vec<u64> =
            std::iter::once(None).chain(Protocol::ALL.map(Some)).map(|tag| self.user_key(&user, tag)).collect();
        self.lift(&keys, now)
    }

    /// The same for the counter `key` as `bans` lists it.
    pub fn lift_key(&self, key: u64, now: u64) -> usize {
        self.lift(&[key], now)
    }

    fn lift(&self, keys: &[u64], now: u64) -> usize {
        let g = self.table.lock();
        let mut lifted = 0;
        for &key in keys {
            if key == 0 {
                continue;
            }
            if let Some(s) = self.table.find(&g, key).filter(|s| !is_label(s)) {
                if s[BAN_UNTIL].load(Ordering::Relaxed) > now && s[1].load(Ordering::Relaxed) > now {
                    lifted += 1;
                }
                self.table.remove(&g, s);
            }
            if let Some(l) = self.table.find(&g, label_key(key)).filter(|l| is_label(l)) {
                self.table.remove(&g, l);
            }
        }
        lifted
    }

    pub fn stats(&self) -> LimiterStats {
        let h = |i| self.table.header(i).load(Ordering::Relaxed);
        LimiterStats {
            refused_ip: h(REFUSED_IP),
            refused_user: h(REFUSED_USER),
            evictions: h(EVICTIONS),
            bans_evicted: h(BANS_EVICTED),
        }
    }
}

/// The counters (keys and rates) that apply to an attempt.
struct Counters {
    ip: Option<(u64, Rate)>,
    user: Option<(u64, Rate)>,
}

/// The key of the label slot of counter `key` (a fixed mix of it: keys are keyed hashes, so
/// this collides with another key as rarely as two keys do).
fn label_key(key: u64) -> u64 {
    (key.rotate_left(29) ^ 0x6c61_6265_6c5f_6b79).max(1)
}

/// What a counter counts, packed for a label slot.
#[derive(Default)]
struct Label {
    head: u64,
    bytes: [u8; LABEL_BYTES],
}

fn proto_code(p: Option<Protocol>) -> u64 {
    p.map_or(0, |p| proto_index(p) as u64 + 1)
}

fn proto_of(code: u64) -> Option<Protocol> {
    Protocol::ALL.get((code as usize).checked_sub(1)?).copied()
}

impl Label {
    fn new(kind: u8, tag: Option<Protocol>, text: &[u8]) -> Label {
        let mut bytes = [0u8; LABEL_BYTES];
        let n = text.len().min(LABEL_BYTES);
        bytes[..n].copy_from_slice(&text[..n]);
        let truncated = u64::from(text.len() > LABEL_BYTES);
        let head = LABEL_TAG << 32 | u64::from(kind) << 24 | proto_code(tag) << 16 | truncated << 8 | n as u64;
        Label { head, bytes }
    }

    /// A client network: family (4/6), prefix length, address bytes.
    fn client((net, bits): (IpAddr, u8), tag: Option<Protocol>) -> Label {
        let mut text = vec![if net.is_ipv4() { 4 } else { 6 }, bits];
        match net {
            IpAddr::V4(a) => text.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => text.extend_from_slice(&a.octets()),
        }
        Label::new(KIND_CLIENT, tag, &text)
    }

    fn user(name: &str, tag: Option<Protocol>) -> Label {
        Label::new(KIND_USER, tag, name.as_bytes())
    }
}

/// Is this slot a label slot?
fn is_label(s: &[AtomicU64]) -> bool {
    s[DATA].load(Ordering::Relaxed) >> 32 == LABEL_TAG
}

/// Reads a label slot: what it names and the protocol tag.
fn read_label(s: &[AtomicU64]) -> Option<(BanSubject, Option<Protocol>)> {
    let head = s[DATA].load(Ordering::Relaxed);
    let mut bytes = [0u8; LABEL_BYTES];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(&s[DATA + 1..DATA + 5]) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    let text = &bytes[..((head & 0xff) as usize).min(LABEL_BYTES)];
    let proto = proto_of((head >> 16) & 0xff);
    let subject = match (head >> 24) as u8 {
        KIND_CLIENT => {
            let (&family, rest) = text.split_first()?;
            let (&bits, addr) = rest.split_first()?;
            let net = match family {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?)),
                6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?)),
                _ => return None,
            };
            BanSubject::Client(network_label((net, bits)))
        }
        KIND_USER => {
            BanSubject::User { name: String::from_utf8_lossy(text).into_owned(), truncated: (head >> 8) & 0xff != 0 }
        }
        _ => return None,
    };
    Some((subject, proto))
}

/// The smallest region (in 64-bit words) `Limiter::new` accepts.
pub const fn min_words() -> usize {
    crate::shm::HEADER + crate::shm::PROBE * SLOT_WORDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn region(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    /// The spellings OpenLDAP's uid match (t/mail_auth_ldap_spelling.t) and MySQL's PAD SPACE
    /// collations take for one account share one key.
    #[test]
    fn spellings_of_one_name_fold_together() {
        for v in [
            "alice",
            "ALICE",
            " alice",
            "alice ",
            "  Alice  ",
            "alice\u{a0}",
            "\u{3000}alice",
            "alice\u{2003}",
            "\u{ff41}lice",
        ] {
            assert_eq!(fold(v), "alice", "{v:?}");
        }
        assert_eq!(fold("Al  Ice"), "al ice");
        assert_eq!(fold("al ice"), "al ice");
        assert_ne!(fold("al ice"), fold("alice"));
        // accents (MySQL/MariaDB's accent-insensitive collations)
        assert_eq!(fold("Ünïcode"), "unicode");
        for v in ["älice", "ÀLICE", "alíce", "a\u{301}lice", "\u{e4}lice ", "ａ\u{308}lice"] {
            assert_eq!(fold(v), "alice", "{v:?}");
        }
        assert_eq!(fold("İstanbul"), "istanbul");
        assert_eq!(fold("한국"), "한국", "no marks: kept as it is");
        assert_eq!(fold(""), "");
        assert_eq!(fold("   "), " ", "white space only: still counted");
        assert_eq!(fold("\u{3000}"), " ");
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn cfg(ip: &str, user: &str, ban: u64) -> LimitConfig {
        LimitConfig {
            ip: Some(parse_rate(ip).unwrap()),
            user: Some(parse_rate(user).unwrap()),
            ban,
            ..Default::default()
        }
    }

    /// A login with a wrong password the way the engine makes it: pre-check, admission,
    /// verification, settlement. Err: refused before verification.
    fn fail(l: &Limiter<'_>, from: Option<IpAddr>, user: &str, pw: &[u8], now: u64) -> Result<(), Refusal> {
        if let Some(r) = l.banned(from, user, now) {
            return Err(r);
        }
        let t = l.admit(from, user, pw, now)?;
        l.settle(t, Settle::Failure { password: pw, wrong: true }, now);
        Ok(())
    }

    fn fail_n(l: &Limiter<'_>, from: Option<IpAddr>, user: &str, n: usize, now: u64) {
        for i in 0..n {
            let _ = fail(l, from, user, format!("guess{i}").as_bytes(), now);
        }
    }

    fn login(l: &Limiter<'_>, from: Option<IpAddr>, user: &str, how: Settle<'_>, now: u64) -> Result<(), Refusal> {
        if let Some(r) = l.banned(from, user, now) {
            return Err(r);
        }
        let t = l.admit(from, user, b"right", now)?;
        l.settle(t, how, now);
        Ok(())
    }

    /// The pre-check's wait, if it refuses.
    fn refused(l: &Limiter<'_>, from: Option<IpAddr>, user: &str, now: u64) -> Option<u32> {
        l.banned(from, user, now).map(|r| r.wait)
    }

    /// Would a login be let through to a verification? (Settled neutral: counts nothing.)
    fn allowed(l: &Limiter<'_>, from: Option<IpAddr>, user: &str, now: u64) -> bool {
        login(l, from, user, Settle::Neutral, now).is_ok()
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10/m"), Ok(Rate { count: 10, window: 60 }));
        assert_eq!(parse_rate("5/10s"), Ok(Rate { count: 5, window: 10 }));
        assert_eq!(parse_rate("100/h"), Ok(Rate { count: 100, window: 3600 }));
        assert_eq!(parse_rate("3/2m"), Ok(Rate { count: 3, window: 120 }));
        assert_eq!(parse_rate("50/d"), Ok(Rate { count: 50, window: 86400 }));
        for bad in
            ["", "10", "0/m", "x/m", "10/", "10/q", "10/0s", "10/99d", "-1/m", "10/m ", "1/99999999999999999999s"]
        {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parallel_admissions_are_bounded_by_the_limit() {
        let r = region(1 << 14);
        let l = Limiter::new(&r, cfg("5/m", "1000/m", 0)).unwrap();
        let a = ip("192.0.2.1");
        let start = Barrier::new(60);
        let results: Vec<Result<Ticket, Refusal>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..60)
                .map(|i| {
                    let (l, start) = (&l, &start);
                    s.spawn(move || {
                        start.wait();
                        let user = format!("user{i}");
                        assert!(l.banned(a, &user, 100).is_none());
                        l.admit(a, &user, format!("pw{i}").as_bytes(), 100)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let (admitted, refusals): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
        assert_eq!(admitted.len(), 5, "exactly the limit is verified");
        for r in &refusals {
            let Err(r) = r else { unreachable!() };
            assert!(r.wait >= 1, "{r:?}");
            assert!(r.reason.contains("in progress") && r.reason.contains("192.0.2.1"), "{r:?}");
        }
        assert_eq!(l.stats().refused_ip, 55);
        assert_eq!(l.stats().refused_user, 0);
        // in flight, not failed yet: no ban, but no sixth verification either
        assert!(l.banned(a, "x", 101).is_none());
        assert!(l.admit(a, "x", b"p", 101).is_err());
        for t in admitted {
            l.settle(t.unwrap(), Settle::Failure { password: b"wrong", wrong: true }, 101);
        }
        let ban = l.banned(a, "x", 102).expect("five failures ban");
        assert!(ban.reason.contains("failed logins from 192.0.2.1 (limit 5/60s)"), "{ban:?}");
        assert!(l.admit(a, "x", b"p", 102).is_err());
    }

    #[test]
    fn full_logins_from_many_threads_verify_at_most_the_limit() {
        let r = region(1 << 14);
        let l = Limiter::new(&r, cfg("5/m", "1000/m", 0)).unwrap();
        let a = ip("192.0.2.2");
        let verified = AtomicU64::new(0);
        let start = Barrier::new(60);
        std::thread::scope(|s| {
            for i in 0..60 {
                let (l, start, verified) = (&l, &start, &verified);
                s.spawn(move || {
                    start.wait();
                    for j in 0..10 {
                        let user = format!("user{}", (i + j) % 13);
                        let pw = format!("pw{i}-{j}");
                        if l.banned(a, &user, 10).is_some() {
                            continue;
                        }
                        if let Ok(t) = l.admit(a, &user, pw.as_bytes(), 10) {
                            verified.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                            l.settle(t, Settle::Failure { password: pw.as_bytes(), wrong: true }, 10);
                        }
                    }
                });
            }
        });
        assert_eq!(verified.load(Ordering::Relaxed), 5);
        assert_eq!(l.stats().refused_ip, 595);
        assert!(refused(&l, a, "x", 11).is_some());
    }

    #[test]
    fn success_and_neutral_give_attempts_back() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/m", "2/m", 0)).unwrap();
        let a = ip("192.0.2.3");
        let t1 = l.admit(a, "alice", b"pw", 0).unwrap();
        let t2 = l.admit(a, "alice", b"pw", 0).unwrap();
        assert!(t1.counted() && !t1.evicted_ban());
        let third = l.admit(a, "alice", b"pw", 0).unwrap_err();
        assert_eq!(third.wait, 1);
        l.settle(t1, Settle::Success, 1);
        let t3 = l.admit(a, "alice", b"pw", 1).expect("a success gives its attempt back");
        l.settle(t2, Settle::Neutral, 2);
        let t4 = l.admit(ip("192.0.2.4"), "bob", b"pw", 2).unwrap();
        let t5 = l.admit(a, "carol", b"pw", 2).expect("a neutral outcome gives its attempt back");
        l.settle(t3, Settle::Success, 3);
        l.settle(t4, Settle::Neutral, 3);
        l.settle(t5, Settle::Success, 3);
        // any number of successful logins and temporary failures in a window
        for t in 0..50 {
            login(&l, a, "alice", Settle::Success, 10 + t).unwrap();
            login(&l, a, "alice", Settle::Neutral, 10 + t).unwrap();
        }
        // a freed counter keeps nothing: two failures still fit in the window
        fail_n(&l, a, "dave", 1, 70);
        assert!(allowed(&l, a, "erin", 70));
        fail_n(&l, a, "erin", 1, 70);
        assert!(refused(&l, a, "frank", 71).is_some(), "2 of 2");
        // a neutral outcome trusts nobody: the user limit refuses that IP like any other
        let l = Limiter::new(&r, cfg("100/m", "1/h", 0)).unwrap();
        let (x, y, z) = (ip("198.51.100.1"), ip("198.51.100.2"), ip("198.51.100.3"));
        login(&l, x, "grace", Settle::Neutral, 0).unwrap();
        login(&l, y, "grace", Settle::Success, 0).unwrap();
        fail_n(&l, z, "grace", 1, 1);
        assert!(refused(&l, x, "grace", 2).is_some());
        assert!(refused(&l, y, "grace", 2).is_none(), "a success trusts");
        assert_eq!(l.stats().refused_user, 1);
    }

    #[test]
    fn the_failure_that_reaches_the_limit_bans_with_a_growing_wait() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/60s", "100/m", 0)).unwrap();
        let a = ip("192.0.2.1");
        fail_n(&l, a, "u1", 2, 1000);
        assert!(allowed(&l, a, "u2", 1001), "2 of 3");
        fail_n(&l, a, "u3", 1, 1001);
        let v = l.banned(a, "anyone", 1002).unwrap();
        assert!(v.wait == 1 && v.reason.contains("failed logins from 192.0.2.1"), "{v:?}");
        let waits: Vec<_> = (0..8).map(|i| refused(&l, a, "anyone", 1003 + i)).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60].map(Some), "growing, capped");
        let v = l.admit(a, "anyone", b"p", 1011).unwrap_err();
        assert_eq!(v.wait, 60, "admission refuses a banned source too: {v:?}");
        assert!(allowed(&l, ip("192.0.2.2"), "anyone", 1010), "other IPs unaffected");
        assert!(refused(&l, a, "x", 1059).is_some(), "window 1000..1060");
        assert!(allowed(&l, a, "x", 1060), "recovered when the window ended");
        assert_eq!(l.stats().refused_ip, 11);
        // a new window starts from scratch, waits too
        fail_n(&l, a, "u4", 3, 1100);
        assert_eq!(refused(&l, a, "x", 1101), Some(1));
        // failures of an old window do not add up
        let l = Limiter::new(&r, cfg("3/10s", "100/m", 0)).unwrap();
        let b = ip("192.0.2.3");
        for t in 0..10 {
            fail_n(&l, b, &format!("u{t}"), 2, t * 10);
            assert!(allowed(&l, b, "x", t * 10 + 1));
        }
    }

    #[test]
    fn ban_keeps_refusing_longer_than_the_window() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/10s", "100/m", 300)).unwrap();
        let a = ip("192.0.2.9");
        fail_n(&l, a, "u", 2, 5);
        assert!(refused(&l, a, "u", 6).is_some());
        assert!(refused(&l, a, "u", 304).is_some(), "still banned (5 + 300)");
        assert!(l.admit(a, "u", b"p", 200).is_err(), "windows rolled over, still banned");
        assert!(allowed(&l, a, "u", 305));
        // a ban shorter than the window lasts until the window ends
        let l = Limiter::new(&r, cfg("100/m", "2/h", 60)).unwrap();
        fail_n(&l, ip("192.0.2.10"), "bob", 2, 0);
        assert!(refused(&l, ip("192.0.2.11"), "bob", 3599).is_some());
        assert!(allowed(&l, ip("192.0.2.11"), "bob", 3600));
        assert_eq!(l.stats().refused_user, 1);
    }

    #[test]
    fn a_refund_for_an_old_window_is_ignored() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("1/m", "100/m", 0)).unwrap();
        let a = ip("192.0.2.20");
        let old = l.admit(a, "u", b"p", 0).unwrap();
        assert!(l.admit(a, "u", b"p", 30).is_err());
        let new = l.admit(a, "u", b"p", 60).expect("a new window");
        l.settle(old.clone(), Settle::Success, 61);
        assert!(l.admit(a, "u", b"q", 62).is_err(), "the new window's attempt is still counted");
        l.settle(old.clone(), Settle::Neutral, 62);
        l.settle(old, Settle::Failure { password: b"p", wrong: true }, 62);
        assert!(l.banned(a, "u", 62).is_none(), "an old window's failure does not count now");
        assert!(l.admit(a, "u", b"q", 63).is_err());
        l.settle(new, Settle::Neutral, 63);
        assert!(allowed(&l, a, "u", 64));
        // a slow failure that brings the limit in its own window still bans
        let l = Limiter::new(&r, cfg("100/m", "1/m", 600)).unwrap();
        let t = l.admit(ip("192.0.2.21"), "slow", b"p", 100).unwrap();
        l.settle(t, Settle::Failure { password: b"p", wrong: true }, 170);
        assert!(refused(&l, ip("192.0.2.22"), "slow", 171).is_some(), "ban from 170 for 600 s");
        assert!(refused(&l, ip("192.0.2.22"), "slow", 770).is_none());
    }

    #[test]
    fn a_ban_survives_the_label_it_records() {
        // The failure that bans after its window ended (a slow verification) finds its counter
        // slot past its deadline; the ban's label, claimed next, must not take that slot. The
        // label's slot depends on the region's random secret: many users, each a fresh region.
        for i in 0..3000 {
            let r = region(1 << 12);
            let l = Limiter::new(&r, cfg("100/m", "1/m", 600)).unwrap();
            let user = format!("slow{i}");
            let t = l.admit(ip("192.0.2.21"), &user, b"p", 100).unwrap();
            l.settle(t, Settle::Failure { password: b"p", wrong: true }, 170);
            assert!(refused(&l, ip("192.0.2.22"), &user, 171).is_some(), "{user}: ban from 170 for 600 s");
            assert_eq!(l.bans(171, 10).len(), 1, "{user}");
            // a ban the fleet reported, on a fresh counter slot
            l.learn_ip_ban(ip("198.51.100.1").unwrap(), 300, 0, 200);
            assert!(l.banned(ip("198.51.100.1"), "x", 201).is_some(), "{user}: fleet ban");
        }
    }

    #[test]
    fn a_user_ban_survives_the_ip_bans_label() {
        // A slow failure that bans both the IP and the user: the IP's ban label is claimed
        // while the user's counter (its window over, not failed yet) still looks dead.
        for i in 0..3000 {
            let r = region(1 << 12);
            let l = Limiter::new(&r, cfg("1/m", "1/m", 600)).unwrap();
            let user = format!("slow{i}");
            let t = l.admit(ip("192.0.2.21"), &user, b"p", 100).unwrap();
            l.settle(t, Settle::Failure { password: b"p", wrong: true }, 170);
            assert!(refused(&l, ip("192.0.2.21"), "x", 171).is_some(), "{user}: IP ban");
            assert!(refused(&l, ip("192.0.2.22"), &user, 171).is_some(), "{user} (region {i}): user ban lost");
        }
    }

    #[test]
    fn a_slow_failure_bans_though_other_clients_claimed_slots_meanwhile() {
        // The documented case "a slow failure that brings the limit in its own window still
        // bans", with ordinary traffic between the admission and the settlement: the counter
        // (attempt in flight, window over) must not be handed out as a dead slot.
        let c = LimitConfig { ip: parse_rate("1/m").ok(), ban: 600, ..LimitConfig::default() };
        for i in 0..300 {
            let r = region(1 << 12);
            let l = Limiter::new(&r, c).unwrap();
            let a = ip("192.0.2.21");
            let t = l.admit(a, "slow", b"p", 100).unwrap();
            for j in 0..50u8 {
                fail(&l, Some(IpAddr::from([10, 0, 0, j])), "x", b"q", 165).unwrap();
            }
            l.settle(t, Settle::Failure { password: b"p", wrong: true }, 170);
            assert!(refused(&l, a, "x", 171).is_some(), "region {i}: the slow failure's ban was lost");
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_v4_mapped_as_v4() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/m", "100/m", 0)).unwrap();
        fail(&l, ip("2001:db8:1:2::1"), "u", b"a", 0).unwrap();
        fail(&l, ip("2001:db8:1:2:ffff::9"), "u", b"b", 0).unwrap();
        let v = l.banned(ip("2001:db8:1:2::77"), "x", 1).unwrap();
        assert!(v.reason.contains("2001:db8:1:2::/64"), "{v:?}");
        assert!(allowed(&l, ip("2001:db8:1:3::1"), "x", 1), "other /64");
        fail(&l, ip("::ffff:198.51.100.7"), "u", b"a", 0).unwrap();
        assert!(allowed(&l, ip("198.51.100.7"), "x", 1));
        fail(&l, ip("198.51.100.7"), "u", b"b", 0).unwrap();
        let v = l.banned(ip("::ffff:198.51.100.7"), "x", 1).unwrap();
        assert!(v.reason.contains("from 198.51.100.7 "), "{v:?}");
        assert!(refused(&l, ip("198.51.100.7"), "x", 1).is_some());
        assert!(allowed(&l, ip("198.51.100.8"), "x", 1));
        // a v4 address and a v6 /64 with the same leading bytes are different sources
        assert!(allowed(&l, ip("c633:6407::"), "x", 1));
    }

    #[test]
    fn same_wrong_password_counts_once() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let a = ip("192.0.2.5");
        // a client retrying a stale password every 10 s: counted once, checked every time
        for t in 0..6 {
            fail(&l, a, "alice", b"stale-saved-password", t * 10).unwrap();
        }
        assert!(allowed(&l, a, "alice", 55), "6 repeats count 1");
        fail(&l, a, "alice", b"other1", 55).unwrap();
        assert!(allowed(&l, a, "alice", 55), "2 of 3");
        fail(&l, a, "alice", b"other2", 56).unwrap();
        assert!(refused(&l, a, "alice", 57).is_some(), "3 of 3");
        // a repeat admitted is not counted
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let z = ip("192.0.2.57");
        fail(&l, z, "zoe", b"stale", 0).unwrap();
        let t = l.admit(z, "zoe", b"stale", 1).unwrap();
        assert!(!t.counted(), "a repeat is admitted without counting");
        l.settle(t, Settle::Failure { password: b"stale", wrong: true }, 1);
        // repeats in a loop: 1 + REPEATS_CHECKED checks at once, then one a second; the rest
        // refused without a check (and counted nowhere)
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let y = ip("192.0.2.59");
        let checked = (0..50).filter(|i| fail(&l, y, "yan", b"loop", 100 + i / 10).is_ok()).count() as u64;
        assert_eq!(checked, 1 + REPEATS_CHECKED + 4, "3 at once, then one in each of the 4 seconds after");
        let e = l.admit(y, "yan", b"loop", 104).unwrap_err();
        assert!(e.reason.contains("same wrong password"), "{e:?}");
        assert!(allowed(&l, y, "yan", 104), "counted once: its right password is let through");
        // a password set in the store after a client looped on it: its first check logs in and
        // forgets the mark, so the client's other connections are not held back
        let w = ip("192.0.2.60");
        for _ in 0..5 {
            let _ = fail(&l, w, "wes", b"next", 300);
        }
        assert!(l.admit(w, "wes", b"next", 300).is_err(), "held back");
        let t = l.admit(w, "wes", b"next", 301).unwrap();
        l.settle(t, Settle::Success, 301);
        for _ in 0..5 {
            let t = l.admit(w, "wes", b"next", 301).expect("no longer held back");
            l.settle(t, Settle::Success, 301);
        }
        // a client retrying a stale password every 30 s for an hour: once, not 120 times
        let l = Limiter::new(&r, cfg("3/h", "3/h", 0)).unwrap();
        let b = ip("192.0.2.55");
        for t in 0..120 {
            fail(&l, b, "bert", b"stale-saved-password", 10_000 + t * 30).unwrap();
        }
        assert!(allowed(&l, b, "bert", 13_600));
        // a right password the account's policy refused (a certificate missing): checked every
        // time it comes again, however fast (once the certificate is there, it logs in)
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let p = ip("192.0.2.58");
        for _ in 0..6 {
            let tk = l.admit(p, "pia", b"right", 7).expect("a policy refusal's repeat is checked");
            l.settle(tk, Settle::Failure { password: b"right", wrong: false }, 7);
        }
        // the same password from another IP, or for another user, is another failure
        let l = Limiter::new(&r, cfg("2/m", "2/m", 0)).unwrap();
        fail(&l, ip("192.0.2.6"), "carol", b"pw", 0).unwrap();
        fail(&l, ip("192.0.2.7"), "carol", b"pw", 0).unwrap();
        assert!(refused(&l, ip("192.0.2.8"), "carol", 1).is_some(), "user limit");
        fail(&l, ip("192.0.2.6"), "dave", b"pw", 0).unwrap();
        assert!(refused(&l, ip("192.0.2.6"), "erin", 1).is_some(), "ip limit");
        // and after a pause longer than the window it counts again
        let l = Limiter::new(&r, cfg("2/m", "100/m", 0)).unwrap();
        fail(&l, ip("192.0.2.50"), "frank", b"pw", 0).unwrap();
        fail(&l, ip("192.0.2.50"), "frank", b"pw", 100).unwrap();
        assert!(allowed(&l, ip("192.0.2.50"), "frank", 101), "windows 0 and 100");
    }

    /// A device opening several connections at once with one stale password: every attempt is
    /// admitted (and counted) before the first failure marks the password, and the burst
    /// counts once when they settle; distinct passwords in flight still count each.
    #[test]
    fn a_burst_of_one_wrong_password_in_flight_counts_once() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, LimitConfig { user: parse_rate("3/m").ok(), ..Default::default() }).unwrap();
        let phone = ip("192.0.2.2");
        let tickets: Vec<Ticket> = (0..6).filter_map(|_| l.admit(phone, "alice", b"stale", 0).ok()).collect();
        assert_eq!(tickets.len(), 3, "at most the limit in flight at once, the same password or not");
        assert!(tickets.iter().all(Ticket::counted));
        for t in tickets {
            l.settle(t, Settle::Failure { password: b"stale", wrong: true }, 0);
        }
        assert!(refused(&l, ip("192.0.2.3"), "alice", 1).is_none(), "not banned: the burst counted once");
        assert!(allowed(&l, ip("192.0.2.3"), "alice", 1), "the owner's right password is checked");
        fail(&l, ip("192.0.2.4"), "alice", b"guess1", 1).unwrap();
        assert!(refused(&l, ip("192.0.2.4"), "alice", 1).is_none(), "2 of 3");
        fail(&l, ip("192.0.2.4"), "alice", b"guess2", 1).unwrap();
        assert!(refused(&l, ip("192.0.2.4"), "alice", 1).is_some(), "3 of 3: banned");

        // distinct passwords in flight at once each count
        let l = Limiter::new(&r, LimitConfig { user: parse_rate("3/m").ok(), ..Default::default() }).unwrap();
        let tickets: Vec<(Ticket, String)> = (0..6)
            .filter_map(|i| Some((l.admit(phone, "bob", format!("g{i}").as_bytes(), 0).ok()?, format!("g{i}"))))
            .collect();
        assert_eq!(tickets.len(), 3);
        for (t, pw) in tickets {
            l.settle(t, Settle::Failure { password: pw.as_bytes(), wrong: true }, 0);
        }
        assert!(refused(&l, ip("192.0.2.3"), "bob", 1).is_some(), "3 distinct guesses ban");

        // one of the burst ending in a temporary failure leaves the other's failure counted
        let l = Limiter::new(&r, LimitConfig { user: parse_rate("2/m").ok(), ..Default::default() }).unwrap();
        let a = l.admit(phone, "carl", b"stale", 0).unwrap();
        let b = l.admit(phone, "carl", b"stale", 0).unwrap();
        l.settle(a, Settle::Neutral, 0);
        l.settle(b, Settle::Failure { password: b"stale", wrong: true }, 0);
        fail(&l, ip("192.0.2.4"), "carl", b"guess", 1).unwrap();
        assert!(refused(&l, ip("192.0.2.4"), "carl", 1).is_some(), "counted once, not zero times");

        // the same password from two clients is two failures
        let l = Limiter::new(&r, LimitConfig { user: parse_rate("2/m").ok(), ..Default::default() }).unwrap();
        let a = l.admit(ip("192.0.2.7"), "dora", b"pw", 0).unwrap();
        let b = l.admit(ip("192.0.2.8"), "dora", b"pw", 0).unwrap();
        l.settle(a, Settle::Failure { password: b"pw", wrong: true }, 0);
        l.settle(b, Settle::Failure { password: b"pw", wrong: true }, 0);
        assert!(refused(&l, ip("192.0.2.9"), "dora", 1).is_some());
    }

    /// A failure that was no verdict on its password (a costly check abandoned after the cheap
    /// app passwords failed) lets its repeats through to their checks; once one of them finds
    /// the password wrong, its repeats are held back again (2 at once, then one a second).
    #[test]
    fn a_wrong_verdict_holds_back_the_repeats_of_a_password_no_verdict_marked() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let a = ip("192.0.2.5");
        let t = l.admit(a, "alice", b"pw", 0).unwrap();
        l.settle(t, Settle::Failure { password: b"pw", wrong: false }, 0);
        let t = l.admit(a, "alice", b"pw", 0).expect("a repeat of a password no verdict marked is checked");
        l.settle(t, Settle::Failure { password: b"pw", wrong: true }, 0);
        // and an abandoned check after that does not let the repeats go again
        let t = l.admit(a, "alice", b"pw", 0).unwrap();
        l.settle(t, Settle::Failure { password: b"pw", wrong: false }, 0);
        let checked = (0..50).filter(|_| fail(&l, a, "alice", b"pw", 0).is_ok()).count() as u64;
        assert!(checked < REPEATS_CHECKED, "{checked} more checks within the second");
        let e = l.admit(a, "alice", b"pw", 0).unwrap_err();
        assert!(e.reason.contains("same wrong password"), "{e:?}");
    }

    #[test]
    fn user_names_count_case_insensitively() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("100/m", "3/m", 0)).unwrap();
        fail(&l, ip("203.0.113.1"), "Alice", b"a", 0).unwrap();
        fail(&l, ip("203.0.113.2"), "ALICE", b"b", 0).unwrap();
        fail(&l, ip("203.0.113.3"), "alice", b"c", 0).unwrap();
        assert!(refused(&l, ip("203.0.113.4"), "aLiCe", 1).is_some(), "one account");
        assert!(l.admit(ip("203.0.113.4"), "ALICE", b"d", 1).is_err());
        fail(&l, ip("203.0.113.1"), "ÉMILE", b"a", 0).unwrap();
        fail(&l, ip("203.0.113.2"), "Émile", b"b", 0).unwrap();
        fail(&l, ip("203.0.113.3"), "émile", b"c", 0).unwrap();
        assert!(refused(&l, ip("203.0.113.4"), "éMILE", 1).is_some(), "Unicode lower case");
        // the fingerprint: the same stale password as Bob and as BOB counts once
        fail(&l, ip("203.0.113.5"), "Bob", b"stale", 0).unwrap();
        fail(&l, ip("203.0.113.5"), "BOB", b"stale", 0).unwrap();
        fail(&l, ip("203.0.113.5"), "bob", b"other", 0).unwrap();
        assert!(allowed(&l, ip("203.0.113.6"), "bob", 1), "2 of 3");
        // trust is per exact name (to a case-sensitive store Carol and carol are two accounts,
        // one budget): logged in as Carol, not locked out as Carol, but as CAROL
        let owner = ip("192.0.2.10");
        login(&l, owner, "Carol", Settle::Success, 0).unwrap();
        fail_n(&l, ip("203.0.113.7"), "carol", 3, 1);
        assert!(refused(&l, ip("203.0.113.8"), "CAROL", 2).is_some());
        assert!(refused(&l, owner, "Carol", 2).is_none());
        assert!(l.admit(owner, "Carol", b"pw", 2).is_ok());
        assert!(refused(&l, owner, "CAROL", 2).is_some(), "another spelling: maybe another account");
        assert!(l.admit(owner, "cArOl", b"pw", 2).is_err());
    }

    #[test]
    fn trust_is_for_the_account_of_one_store_as_it_is_spelt() {
        let r = region(1 << 12);
        let a = Limiter::new(&r, cfg("100/m", "3/m", 0)).unwrap().with_scope("passwd file \"/a\"");
        let b = Limiter::new(&r, cfg("100/m", "3/m", 0)).unwrap().with_scope("passwd file \"/b\"");
        let owner = ip("192.0.2.10");
        // the owner of store b's alice logs in; guesses on alice (one budget for both stores)
        // ban her
        login(&b, owner, "alice", Settle::Success, 0).unwrap();
        fail_n(&a, ip("203.0.113.1"), "alice", 3, 1);
        assert!(refused(&a, ip("203.0.113.2"), "alice", 2).is_some());
        assert!(refused(&b, owner, "alice", 2).is_none(), "trusted for b's alice");
        assert!(refused(&a, owner, "alice", 2).is_some(), "not for a's");
        assert!(a.admit(owner, "alice", b"guess", 2).is_err());
        // the store's own spelling of the name a login gave (one budget, counted once): trusted
        // under both spellings after a success
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("100/m", "3/m", 0)).unwrap().with_scope("sqlite");
        assert!(l.banned(owner, "ALICE", 0).is_none());
        let mut t = l.admit(owner, "ALICE", b"pw", 0).unwrap();
        l.trust_account(&mut t, "alice");
        l.settle(t, Settle::Success, 0);
        fail_n(&l, ip("203.0.113.1"), "alice", 3, 1);
        assert!(refused(&l, ip("203.0.113.2"), "Alice", 2).is_some());
        assert!(refused(&l, owner, "ALICE", 2).is_none());
        assert!(refused(&l, owner, "alice", 2).is_none());
        assert!(refused(&l, owner, "Alice", 2).is_some(), "a spelling neither the owner nor the store used");
    }

    #[test]
    fn users_limit_does_not_lock_out_a_trusted_ip() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 600)).unwrap();
        let owner = ip("192.0.2.10");
        login(&l, owner, "alice", Settle::Success, 0).unwrap();
        for i in 0..20 {
            let _ = fail(&l, ip(&format!("203.0.113.{i}")), "alice", b"guess", 10);
        }
        assert!(refused(&l, ip("203.0.113.200"), "alice", 11).is_some(), "others refused");
        assert!(l.admit(ip("203.0.113.200"), "alice", b"x", 11).is_err());
        assert!(refused(&l, owner, "alice", 11).is_none(), "the owner's IP is not locked out");
        assert!(allowed(&l, owner, "alice", 11));
        assert!(refused(&l, owner, "bob", 11).is_none());
        // the owner's IP is still bound by its own per-IP limit
        fail_n(&l, owner, "alice", 3, 12);
        assert!(refused(&l, owner, "alice", 13).is_some());
        // a trusted IP's failures do not count against the user
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("100/m", "2/m", 0)).unwrap();
        login(&l, owner, "alice", Settle::Success, 0).unwrap();
        fail_n(&l, owner, "alice", 5, 1);
        assert!(allowed(&l, ip("192.0.2.11"), "alice", 2));
        // trust is per user and expires (24 h)
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("100/m", "1/d", 0)).unwrap();
        login(&l, owner, "alice", Settle::Success, 0).unwrap();
        fail(&l, ip("203.0.113.1"), "alice", b"x", 10).unwrap();
        assert!(allowed(&l, owner, "alice", 11));
        assert!(refused(&l, ip("192.0.2.11"), "alice", 11).is_some(), "another IP of the owner's");
        assert!(refused(&l, owner, "alice", 86_400).is_some(), "trust expired");
    }

    /// A login as `alias` of the account `account` (the store's spelling): both names admitted,
    /// settled alike, as the engine does.
    fn login_as(l: &Limiter<'_>, from: Option<IpAddr>, alias: &str, account: &str, how: Settle<'_>, now: u64) -> bool {
        if l.banned(from, alias, now).is_some() {
            return false;
        }
        let Ok(t) = l.admit(from, alias, b"pw", now) else { return false };
        match l.admit_account(from, account, b"pw", now) {
            Ok(a) => {
                l.settle(t, how, now);
                l.settle(a, how, now);
                true
            }
            Err(_) => {
                l.settle(t, Settle::Neutral, now);
                false
            }
        }
    }

    #[test]
    fn the_accounts_own_spelling_keeps_its_trusted_clients() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("10/m", "3/m", 600)).unwrap();
        let owner = ip("192.0.2.10");
        // alice logs in as alice@example.org (an alias the store resolves to alice)
        assert!(login_as(&l, owner, "alice@example.org", "alice", Settle::Success, 0));
        // others guess "alice" until it is banned
        fail_n(&l, ip("203.0.113.1"), "alice", 3, 1);
        assert!(refused(&l, ip("203.0.113.2"), "alice", 2).is_some());
        // the owner, through the alias, is not refused by the account's ban; a stranger is
        assert!(login_as(&l, owner, "alice@example.org", "alice", Settle::Success, 2));
        assert!(!login_as(&l, ip("203.0.113.3"), "alice@example.org", "alice", Settle::Neutral, 2));
        // the account's own counter does not count the client a second time: its IP budget
        // (10) holds 9 more attempts after one through the alias
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("10/m", "100/m", 0)).unwrap();
        let c = ip("198.51.100.1");
        assert!(login_as(&l, c, "bob@example.org", "bob", Settle::Failure { password: b"g", wrong: true }, 0));
        fail_n(&l, c, "carol", 9, 0);
        assert!(refused(&l, c, "dave", 1).is_some(), "10 attempts from the client, not 11");
        // a trusted client's failures through an alias do not count against the account
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("100/m", "2/m", 0)).unwrap();
        assert!(login_as(&l, owner, "erin@x", "erin", Settle::Success, 0));
        for i in 0..5 {
            login_as(
                &l,
                owner,
                "erin@x",
                "erin",
                Settle::Failure { password: format!("g{i}").as_bytes(), wrong: true },
                1,
            );
        }
        assert!(allowed(&l, ip("192.0.2.77"), "erin", 2), "erin's own budget untouched");
    }

    #[test]
    fn without_a_client_ip_only_the_user_limit_applies() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("1/m", "2/m", 0)).unwrap();
        fail(&l, None, "u", b"a", 0).unwrap();
        assert!(allowed(&l, None, "u", 1));
        fail(&l, None, "u", b"b", 0).unwrap();
        assert!(refused(&l, None, "u", 1).is_some());
        assert!(l.admit(None, "u", b"c", 1).is_err());
        // no name: the IP limit only
        fail(&l, ip("192.0.2.1"), "", b"a", 0).unwrap();
        assert!(refused(&l, ip("192.0.2.1"), "", 1).is_some());
        assert!(allowed(&l, ip("192.0.2.2"), "", 1));
        let l = Limiter::new(&r, LimitConfig::default()).unwrap();
        fail_n(&l, ip("192.0.2.1"), "u", 50, 0);
        assert!(allowed(&l, ip("192.0.2.1"), "u", 1), "no limits configured");
        assert!(!l.admit(ip("192.0.2.1"), "u", b"p", 1).unwrap().counted());
    }

    #[test]
    fn tiny_region_evicts_and_never_panics() {
        let r = region(min_words());
        assert!(Limiter::new(&r[..min_words() - 1], cfg("3/m", "3/m", 0)).is_none());
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        for i in 0..1000u32 {
            let a = Some(IpAddr::from(i.to_be_bytes()));
            let now = u64::from(i);
            let _ = fail(&l, a, &format!("u{i}"), b"p", now);
            let _ = login(&l, a, "x", Settle::Success, now);
            if let Ok(t) = l.admit(a, "y", b"p", now) {
                l.settle(t.clone(), Settle::Neutral, now);
                l.settle(t, Settle::Failure { password: b"p", wrong: true }, now);
            }
        }
        assert!(l.stats().evictions > 0);
        // still counts what it holds
        let a = ip("192.0.2.1");
        fail_n(&l, a, "v", 3, 2000);
        assert!(refused(&l, a, "w", 2001).is_some());
        // extreme times do not overflow
        fail_n(&l, a, "v", 3, u64::MAX - 1);
        let _ = l.banned(a, "v", u64::MAX);
        let _ = l.admit(a, "v", b"p", u64::MAX);
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
                        let pw = format!("t{t}-{i}");
                        fail(l, a, &format!("user{}", i % 7), pw.as_bytes(), 1).unwrap();
                        login(l, ip("192.0.2.78"), "x", Settle::Success, 1).unwrap();
                    }
                });
            }
        });
        // exactly 400 counted: one more reaches 401 (a lost update would leave it allowed)
        assert!(allowed(&l, a, "u", 2), "400 of 401");
        fail(&l, a, "u", b"the 401st", 2).unwrap();
        assert!(refused(&l, a, "u", 2).is_some(), "401");
        assert_eq!(l.stats().evictions, 0);
    }

    #[test]
    fn live_bans_survive_a_flood_of_fresh_failures() {
        // 32 KiB, the size that lost its bans to 400 fresh failures
        let r = region(32 * 1024 / 8);
        let l = Limiter::new(&r, cfg("5/m", "5/m", 3600)).unwrap();
        let banned: Vec<_> = (0..20).map(|i| ip(&format!("192.0.2.{i}"))).collect();
        for (i, &a) in banned.iter().enumerate() {
            fail_n(&l, a, &format!("victim{i}"), 5, 0);
            assert!(refused(&l, a, "x", 1).is_some());
        }
        // and one login in flight, from an IP at its limit
        let slow = ip("192.0.2.200");
        let one = Limiter::new(&r, cfg("1/h", "5/m", 3600)).unwrap();
        let in_flight = one.admit(slow, "slow", b"p", 1).unwrap();
        for i in 0..5000u32 {
            let a = Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            fail(&l, a, &format!("fresh{i}"), b"guess", 2 + u64::from(i) / 100).unwrap();
        }
        let now = 60;
        for (i, &a) in banned.iter().enumerate() {
            assert!(refused(&l, a, "x", now).is_some(), "{a:?} still banned");
            assert!(refused(&l, ip("198.51.100.1"), &format!("victim{i}"), now).is_some());
        }
        assert!(one.admit(slow, "slow", b"p", now).is_err(), "the attempt in flight is kept");
        one.settle(in_flight, Settle::Neutral, now);
        assert!(one.admit(slow, "slow", b"p", now).is_ok());
        let st = l.stats();
        assert!(st.evictions > 1000, "{st:?}");
        assert_eq!(st.bans_evicted, 0);
    }

    #[test]
    fn a_flood_of_failures_under_fresh_names_keeps_the_owners_trust() {
        // 32 KiB, as t/mail_auth_limit_trust.t (1): the owner was locked out by 400 failures
        let r = region(32 * 1024 / 8);
        let l = Limiter::new(&r, cfg("3/m", "3/h", 0)).unwrap();
        let owners: Vec<_> = (0..20).map(|i| (ip(&format!("192.0.2.{i}")), format!("owner{i}"))).collect();
        for (i, (a, name)) in owners.iter().enumerate() {
            login(&l, *a, name, Settle::Success, 0).unwrap();
            for j in 0..3 {
                let guesser = ip(&format!("198.51.100.{}", 3 * i + j));
                fail(&l, guesser, name, format!("{name}-{j}").as_bytes(), 1).unwrap();
            }
            assert!(refused(&l, ip("198.51.100.200"), name, 1).is_some(), "{name} banned");
        }
        for i in 0..5000u32 {
            let a = Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            fail(&l, a, &format!("fresh{i}"), b"guess", 2 + u64::from(i) / 100).unwrap();
        }
        let now = 60;
        for (a, name) in &owners {
            assert!(refused(&l, *a, name, now).is_none(), "{name}'s owner still trusted");
            assert!(refused(&l, ip("198.51.100.201"), name, now).is_some(), "{name} still banned");
        }
        let st = l.stats();
        assert!(st.evictions > 1000, "{st:?}");
        assert_eq!(st.bans_evicted, 0);
    }

    #[test]
    fn a_full_window_evicts_marks_before_counters_holding_failures_and_those_before_trust() {
        // one probe window (8 slots)
        let r = region(min_words());
        let l = Limiter::new(&r, cfg("2/m", "2/m", 0)).unwrap();
        let owner = ip("192.0.2.10");
        // a trust mark, a ban (on o), two counters holding a failure (e, f), their two marks
        login(&l, owner, "o", Settle::Success, 0).unwrap();
        fail(&l, ip("192.0.2.21"), "o", b"e", 1).unwrap();
        fail(&l, ip("192.0.2.22"), "o", b"f", 1).unwrap();
        assert!(refused(&l, ip("192.0.2.30"), "o", 2).is_some());
        // a failure from a fresh client under a fresh name: 3 slots, 2 free: a mark goes
        fail(&l, ip("203.0.113.1"), "z1", b"g", 3).unwrap();
        // e's counter kept its failure: its second one bans it
        fail(&l, ip("192.0.2.21"), "q", b"h", 4).unwrap();
        assert!(refused(&l, ip("192.0.2.21"), "x", 5).is_some(), "e's first failure kept");
        for i in 0..20 {
            let _ = fail(&l, ip(&format!("203.0.113.{}", 10 + i)), &format!("z{i}"), b"g", 6 + i);
        }
        assert!(refused(&l, owner, "o", 30).is_none(), "the owner's trust kept");
        assert!(refused(&l, ip("192.0.2.30"), "o", 30).is_some(), "o's ban kept");
        let st = l.stats();
        assert!(st.evictions > 20, "{st:?}");
        assert_eq!(st.bans_evicted, 0);
    }

    #[test]
    fn a_zone_of_live_bans_reports_evicting_one() {
        // one probe window: every slot a live ban after 8 banned IPs
        let r = region(min_words());
        let l = Limiter::new(&r, LimitConfig { ip: parse_rate("1/h").ok(), ..LimitConfig::default() }).unwrap();
        for i in 0..8u64 {
            let a = ip(&format!("192.0.2.{i}"));
            let t = l.admit(a, "u", b"p", i).unwrap();
            assert!(!t.evicted_ban(), "{i}");
            l.settle(t, Settle::Failure { password: b"p", wrong: true }, i);
        }
        assert_eq!(l.stats().bans_evicted, 0);
        for i in 0..8 {
            assert!(refused(&l, ip(&format!("192.0.2.{i}")), "u", 10 + i).is_some(), "{i}");
        }
        let t = l.admit(ip("192.0.2.100"), "u", b"p", 20).unwrap();
        assert!(t.evicted_ban(), "no room but a live ban's slot");
        let st = l.stats();
        assert_eq!((st.bans_evicted, st.evictions >= 1), (1, true), "{st:?}");
        assert!(refused(&l, ip("192.0.2.0"), "u", 21).is_none(), "the least recently used ban");
        // the fingerprint of its failure finds no room and gives way
        l.settle(t, Settle::Failure { password: b"p", wrong: true }, 21);
        assert_eq!(l.stats().bans_evicted, 1);
        assert!(refused(&l, ip("192.0.2.100"), "u", 22).is_some());
    }

    #[test]
    fn limit_arguments_parse_and_bound_prefixes() {
        let c =
            parse_limit_args(&["ip=10/m", "ipv4_prefix=24", "ipv6_prefix=56", "smtp:ip=3/m", "imap:user=5/h"]).unwrap();
        assert_eq!((c.ipv4_prefix, c.ipv6_prefix), (24, 56));
        assert_eq!(c.per_protocol[proto_index(Protocol::Smtp)].ip, parse_rate("3/m").ok());
        assert_eq!(c.per_protocol[proto_index(Protocol::Imap)].user, parse_rate("5/h").ok());
        assert_eq!(c.per_protocol[proto_index(Protocol::Pop3)], ProtocolRates::default());
        let d = parse_limit_args(&["user=3/m"]).unwrap();
        assert_eq!((d.ipv4_prefix, d.ipv6_prefix), (32, 64));
        assert!(parse_limit_args(&["smtp:ip=3/m"]).is_ok(), "a per-protocol rate alone");
        for bad in [
            &["ip=10/m", "ipv4_prefix=23"][..],
            &["ip=10/m", "ipv4_prefix=33"],
            &["ip=10/m", "ipv6_prefix=47"],
            &["ip=10/m", "ipv6_prefix=65"],
            &["ip=10/m", "ipv6_prefix=x"],
            &["ip=10/m", "ip=5/m"],
            &["ip=10/m", "lmtp:ip=3/m"],
            &["ip=10/m", "smtp:pass=3/m"],
            &["ip=10/m", "smtp:ip=0/m"],
            &["ban=10s"],
            &[],
        ] {
            assert!(parse_limit_args(bad).is_err(), "{bad:?}");
        }
        let e = parse_limit_args(&["ip=10/m", "ipv4_prefix=16"]).unwrap_err();
        assert!(e.contains("ipv4_prefix=16") && e.contains("24 to 32"), "{e}");
    }

    #[test]
    fn clients_are_grouped_by_the_configured_prefix() {
        let r = region(1 << 12);
        let mut c = cfg("2/m", "100/m", 0);
        c.ipv4_prefix = 24;
        c.ipv6_prefix = 56;
        let l = Limiter::new(&r, c).unwrap();
        fail(&l, ip("192.0.2.1"), "u", b"a", 0).unwrap();
        fail(&l, ip("192.0.2.200"), "u", b"b", 0).unwrap();
        let v = l.banned(ip("192.0.2.77"), "x", 1).unwrap();
        assert!(v.reason.contains("from 192.0.2.0/24 "), "{v:?}");
        assert!(l.banned(ip("::ffff:192.0.2.9"), "x", 1).is_some(), "IPv4-mapped");
        assert!(allowed(&l, ip("192.0.3.1"), "x", 1), "another /24");
        fail(&l, ip("2001:db8:1:2::1"), "u", b"a", 0).unwrap();
        fail(&l, ip("2001:db8:1:ff::1"), "u", b"b", 0).unwrap();
        let v = l.banned(ip("2001:db8:1:0::5"), "x", 1).unwrap();
        assert!(v.reason.contains("2001:db8:1::/56"), "{v:?}");
        assert!(allowed(&l, ip("2001:db8:1:100::1"), "x", 1), "another /56");
        // trust follows the group: a login from .5 trusts the /24 for that user
        let r = region(1 << 12);
        let l = Limiter::new(&r, LimitConfig { user: parse_rate("1/m").ok(), ..c }).unwrap();
        login(&l, ip("198.51.100.5"), "alice", Settle::Success, 0).unwrap();
        fail(&l, ip("203.0.113.1"), "alice", b"x", 1).unwrap();
        assert!(refused(&l, ip("198.51.100.6"), "alice", 2).is_none());
        assert!(refused(&l, ip("198.51.101.6"), "alice", 2).is_some());
        // /32 (default): neighbours are separate
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("2/m", "100/m", 0)).unwrap();
        fail_n(&l, ip("192.0.2.1"), "u", 2, 0);
        assert!(allowed(&l, ip("192.0.2.2"), "x", 1));
    }

    #[test]
    fn protocols_with_a_budget_of_their_own_count_apart() {
        let r = region(1 << 12);
        let mut c = cfg("3/m", "100/m", 0);
        c.per_protocol[proto_index(Protocol::Smtp)].ip = parse_rate("1/m").ok();
        let common = Limiter::new(&r, c).unwrap();
        let imap = Limiter::new(&r, c).unwrap().with_protocol(Protocol::Imap);
        let pop3 = Limiter::new(&r, c).unwrap().with_protocol(Protocol::Pop3);
        let smtp = Limiter::new(&r, c).unwrap().with_protocol(Protocol::Smtp);
        let a = ip("192.0.2.1");
        fail(&smtp, a, "u", b"a", 0).unwrap();
        let v = smtp.banned(a, "u", 1).unwrap();
        assert!(v.reason.contains("(limit 1/60s, smtp)"), "{v:?}");
        assert!(allowed(&imap, a, "u", 1), "IMAP has the common budget");
        fail(&imap, a, "u", b"b", 2).unwrap();
        fail(&pop3, a, "u", b"c", 2).unwrap();
        assert!(allowed(&common, a, "u", 3), "2 of 3");
        fail(&pop3, a, "u", b"d", 3).unwrap();
        assert!(refused(&imap, a, "u", 4).is_some(), "IMAP and POP3 share 3/m");
        // the listing tells them apart; lifting the client lifts both
        let bans = common.bans(5, 100);
        assert_eq!(bans.len(), 2, "{bans:?}");
        assert!(bans.iter().any(|b| b.protocol == Some(Protocol::Smtp)));
        assert!(bans.iter().any(|b| b.protocol.is_none() && b.failures == 3));
        assert_eq!(common.lift_client(ip("192.0.2.1").unwrap(), 5), 2);
        assert!(allowed(&smtp, a, "u", 6) && allowed(&imap, a, "u", 6));
    }

    #[test]
    fn a_listing_of_a_big_zone_reads_it_part_by_part_and_misses_nothing() {
        // 16k slots: bans spread over many parts of SCAN_CHUNK slots
        let r = region(1 << 17);
        let l = Limiter::new(&r, cfg("1/m", "1000/m", 300)).unwrap();
        assert!(l.capacity() > 4 * SCAN_CHUNK, "{}", l.capacity());
        for i in 0..300u32 {
            let a = IpAddr::from([10, 0, (i >> 8) as u8, (i & 255) as u8]);
            fail(&l, Some(a), "u", format!("pw{i}").as_bytes(), 100).unwrap();
        }
        let bans = l.bans(110, 10_000);
        assert_eq!(bans.iter().filter(|b| matches!(b.subject, Some(BanSubject::Client(_)))).count(), 300);
        assert_eq!(l.bans(110, 7).len(), 7, "at most max");
    }

    #[test]
    fn bans_are_listed_and_lifted() {
        let r = region(1 << 12);
        let mut c = cfg("2/m", "2/m", 300);
        c.ipv4_prefix = 24;
        let l = Limiter::new(&r, c).unwrap();
        fail(&l, ip("192.0.2.9"), "x1", b"a", 100).unwrap();
        fail(&l, ip("192.0.2.10"), "x2", b"a", 100).unwrap();
        fail(&l, ip("198.51.100.1"), "Alice", b"a", 100).unwrap();
        fail(&l, ip("198.51.101.2"), "alice", b"b", 100).unwrap();
        let long = "a-very-long-user-name-of-forty-bytes@example.org";
        fail(&l, ip("203.0.113.1"), long, b"a", 100).unwrap();
        fail(&l, ip("203.0.114.2"), long, b"b", 100).unwrap();
        let mut bans = l.bans(110, 100);
        bans.sort_by_key(|b| format!("{:?}", b.subject));
        let subjects: Vec<_> = bans.iter().map(|b| b.subject.clone()).collect();
        assert_eq!(
            subjects,
            [
                Some(BanSubject::Client("192.0.2.0/24".into())),
                Some(BanSubject::User { name: long[..32].into(), truncated: true }),
                Some(BanSubject::User { name: "alice".into(), truncated: false }),
            ]
        );
        assert!(bans.iter().all(|b| b.seconds_left == 290 && b.failures == 2), "{bans:?}");
        let json = bans_json(&bans, true);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["bans"][0]["client"], "192.0.2.0/24");
        assert_eq!(v["bans"][2]["user"], "alice");
        assert_eq!(v["bans"][1]["user_truncated"], true);
        assert_eq!(v["complete"], true);
        // lifting: by an address of the group, by any spelling, by key
        assert_eq!(l.lift_client(ip("192.0.2.200").unwrap(), 111), 1);
        assert!(allowed(&l, ip("192.0.2.9"), "x", 111), "lifted, failures cleared");
        assert_eq!(l.lift_client(ip("192.0.2.9").unwrap(), 111), 0, "nothing banned");
        assert!(refused(&l, ip("192.0.2.50"), "ALICE", 112).is_some());
        assert_eq!(l.lift_user("ALICE", 112), 1);
        assert!(refused(&l, ip("192.0.2.50"), "alice", 112).is_none());
        let key = l.bans(113, 100)[0].key;
        assert_eq!(l.lift_key(key, 113), 1);
        assert!(l.bans(113, 100).is_empty());
        assert!(allowed(&l, ip("203.0.113.3"), long, 114));
        // expired bans are not listed
        fail(&l, ip("192.0.2.9"), "y1", b"a", 200).unwrap();
        fail(&l, ip("192.0.2.9"), "y2", b"a", 200).unwrap();
        assert_eq!(l.bans(201, 100).len(), 1);
        assert!(l.bans(500, 100).is_empty());
        assert_eq!(l.bans(201, 0).len(), 0, "max");
    }

    #[test]
    fn a_ban_learnt_from_the_fleet_refuses_here_and_is_listed() {
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("5/m", "5/m", 0)).unwrap();
        let a = ip("192.0.2.30");
        l.learn_ip_ban(a.unwrap(), 120, 3, 100);
        let v = l.banned(a, "other", 101).expect("refused locally, no round trip");
        assert_eq!(v.wait, 8, "the growing wait goes on from the fleet's refusals");
        assert!(l.admit(a, "x", b"p", 101).is_err());
        assert!(allowed(&l, ip("192.0.2.31"), "u", 101));
        let bans = l.bans(101, 10);
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].subject, Some(BanSubject::Client("192.0.2.30".into())));
        assert!(refused(&l, a, "x", 219).is_some());
        assert!(allowed(&l, a, "x", 220), "over when the fleet's ban is");
        // a shorter ban learnt later never shortens a ban known here
        let b = ip("198.51.100.1");
        l.learn_ip_ban(b.unwrap(), 60, 1, 300);
        assert!(refused(&l, b, "dora", 301).is_some());
        l.learn_ip_ban(b.unwrap(), 5, 1, 302);
        assert!(refused(&l, b, "dora", 350).is_some());
        assert!(refused(&l, b, "dora", 360).is_none());
    }

    #[test]
    fn lifts_from_browsers_are_told_apart() {
        let h = |v: &[(&'static str, &'static str)]| {
            from_browser(v.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect::<Vec<_>>())
        };
        assert_eq!(h(&[("Host", "127.0.0.1"), ("User-Agent", "curl/7.88.1"), ("Accept", "*/*")]), None);
        assert_eq!(h(&[]), None);
        assert_eq!(h(&[("Origin", "http://evil.example")]).as_deref(), Some("origin: http://evil.example"));
        assert_eq!(h(&[("ORIGIN", "null")]).as_deref(), Some("origin: null"));
        assert_eq!(h(&[("Sec-Fetch-Site", "cross-site")]).as_deref(), Some("sec-fetch-site: cross-site"));
    }

    #[test]
    fn lift_queries_parse() {
        assert_eq!(parse_lift_query(b"client=127.0.0.2"), Ok(LiftTarget::Client("127.0.0.2".parse().unwrap())));
        assert_eq!(parse_lift_query(b"client=%3A%3A1"), Ok(LiftTarget::Client("::1".parse().unwrap())));
        assert_eq!(parse_lift_query(b"user=alice%40example.org"), Ok(LiftTarget::User("alice@example.org".into())));
        assert_eq!(parse_lift_query(b"user=a+b"), Ok(LiftTarget::User("a b".into())));
        assert_eq!(parse_lift_query(b"key=00ff"), Ok(LiftTarget::Key(255)));
        for bad in
            [&b""[..], b"client=x", b"user=", b"key=0", b"key=zz", b"other=1", b"user=a&client=127.0.0.1", b"user=%zz"]
        {
            assert!(parse_lift_query(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tickets_are_plain_data_and_settle_hides_the_password() {
        fn plain<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
        plain::<Ticket>();
        plain::<Refusal>();
        let d = format!("{:?}", Settle::Failure { password: b"s3cr3t", wrong: true });
        assert!(!d.contains("s3cr3t") && d.contains("redacted"), "{d}");
        let r = region(1 << 12);
        let l = Limiter::new(&r, cfg("3/m", "3/m", 0)).unwrap();
        let t = l.admit(ip("192.0.2.1"), "Alice", b"s3cr3t", 0).unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains("s3cr3t") && d.contains("alice"), "{d}");
    }

    #[test]
    fn host_is_ours_names_and_addresses() {
        let names: &[&[u8]] =
            &[b"", b"ops.example", b"*.mx.example", b".fleet.example", b"www.shop.*", b"~^re\\.example$"];
        let ours = |h: &str| host_is_ours(h.as_bytes(), names.iter().copied());
        for h in [
            "",
            "127.0.0.1",
            "[::1]",
            "localhost",
            "LOCALHOST",
            "ops.example",
            "ops.example.",
            "a.mx.example",
            "fleet.example",
            "b.fleet.example",
            "www.shop.org",
        ] {
            assert!(ours(h), "{h} is ours");
        }
        // a rebinding page's own name, look-alikes of ours, a regular expression's match
        for h in [
            "evil.example",
            "mx.example",
            "evilops.example",
            "ops.example.evil",
            "localhost.evil",
            "127.0.0.1.nip.io",
            "afleet.example",
            "www.shop",
            "re.example",
        ] {
            assert!(!ours(h), "{h} is not ours");
        }
        assert!(!host_is_ours(b"evil.example", std::iter::empty()));
    }
}
