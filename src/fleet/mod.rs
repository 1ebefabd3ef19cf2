//! The brute-force budget shared by a fleet of proxies (`mail_auth_limit ... redis=NAME`, with
//! `mail_auth_redis NAME ...`): the local limiter's counters kept in Redis, so that N proxies
//! behind round-robin DNS or a balancer give an attacker one budget, not N.
//!
//! - The local shared-memory limiter (`limiter`) stays the first line: it refuses what it knows
//!   (its own counters, and the bans the shared store reported, see `Limiter::learn_ip_ban`)
//!   without a round trip; what it admits is then admitted by the shared store too, in one
//!   atomic script (`redis::ADMIT`): the same checks and counting as `Limiter::admit` (bans,
//!   full counters with attempts in flight, the trusted ip+user mark, the repeated-password
//!   fingerprint), on the same windows, bans and growing wait.
//! - Settlement (`redis::SETTLE`, the counterpart of `Limiter::settle`) is queued, never waited
//!   for: one thread per worker sends the queue in pipelined batches.
//! - Keys are `PREFIX` + a kind letter + the hex of an HMAC-SHA256 (the fleet's secret, read from
//!   `key_file=` at configuration time) of the zone's name and the counted thing: user names,
//!   addresses and passwords are never stored in Redis, in clear or reversible form.
//! - Redis unreachable (or slower than `timeout=`): the decision goes on with the local
//!   limiter alone, never an OK the limiters did not grant; a log line says so at once and then
//!   once per [`LOG_INTERVAL`] while it lasts; Redis is tried again every `retry=` (meanwhile no
//!   decision waits for it); the recovery is logged.
//!
//! This module is plain Rust; the client (`redis.rs`) is behind the `redis` cargo feature.

#![forbid(unsafe_code)]

#[cfg(feature = "redis")]
pub mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::limiter::{self, LiftTarget, LimitConfig, Rate, Refusal, Settle, Side};
use crate::protocol::Protocol;

/// While the shared store is unreachable, a log line at most this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// The smallest `key_file` accepted (bytes).
pub const MIN_KEY_BYTES: usize = 16;

/// How the fleet's keys are made: `prefix` + kind + hex(HMAC-SHA256(secret, parts))[..32].
#[derive(Clone)]
pub struct Keys {
    secret: zeroize::Zeroizing<Vec<u8>>,
    prefix: String,
    /// [`Keys::unused`], made once.
    unused: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Keys {
    pub fn new(secret: Vec<u8>, prefix: &str) -> Result<Keys, String> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!("the key is shorter than {MIN_KEY_BYTES} bytes"));
        }
        Ok(Keys { secret: zeroize::Zeroizing::new(secret), prefix: prefix.to_string(), unused: format!("{prefix}-") })
    }

    /// A key under the prefix that is never written: it stands for an absent counter or mark in a
    /// script's KEYS (an ACL user restricted to the prefix may name no other key).
    pub fn unused(&self) -> &String {
        &self.unused
    }

    /// The key of `kind` (one letter) for `parts`; each part is length-prefixed, so no two
    /// lists of parts give one input.
    pub fn key(&self, kind: char, parts: &[&[u8]]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(&[kind as u8]);
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        let digest = mac.finalize().into_bytes();
        format!("{}{kind}:{}", self.prefix, crate::hex::encode(&digest[..16]))
    }
}

/// `mail_auth_redis NAME ADDRESS [options]`.
/// Its `Debug` output leaves the password out.
#[derive(Clone)]
pub struct ServerConf {
    pub name: String,
    pub addr: Addr,
    pub user: Option<String>,
    /// From `password_file=` (its first line), read at configuration time.
    pub password: Option<String>,
    pub db: i64,
    /// `tls=on`: TLS with the server's certificate checked against the system's trust store.
    pub tls: bool,
    pub keys: Keys,
    pub connect_timeout: Duration,
    /// Read and write timeout of a command.
    pub timeout: Duration,
    /// After a failure, the store is left alone this long (decisions go on locally).
    pub retry: Duration,
    /// Idle connections a worker keeps for admissions.
    pub pool: usize,
}

impl std::fmt::Debug for ServerConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConf")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(String, u16),
    Unix(String),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(h, p) if h.contains(':') => write!(f, "[{h}]:{p}"),
            Addr::Tcp(h, p) => write!(f, "{h}:{p}"),
            Addr::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

pub const DEFAULT_PREFIX: &str = "mail_auth:";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);
pub const DEFAULT_POOL: usize = 32;

/// `HOST:PORT`, `[IPv6]:PORT`, `HOST` (port 6379) or `unix:PATH`.
fn parse_addr(s: &str) -> Result<Addr, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        return if p.starts_with('/') {
            Ok(Addr::Unix(p.to_string()))
        } else {
            Err(format!("\"{s}\": not an absolute path"))
        };
    }
    let bad = || format!("invalid address \"{s}\" (HOST:PORT, [IPv6]:PORT or unix:/PATH)");
    let (host, port) = crate::config::split_host_port(s).map_err(|_| bad())?;
    let port = port.unwrap_or(6379);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok(Addr::Tcp(host.to_string(), port))
}

/// The arguments of `mail_auth_redis` after its name: the address, then `key_file=PATH`
/// (required), `password_file=PATH`, `user=NAME`, `db=N`, `tls=on|off`, `prefix=TEXT`,
/// `connect_timeout=`, `timeout=`, `retry=` (`500ms`, `2s`), `pool=N`. The files are read
/// now (by nginx's master process, at configuration time). `path` resolves relative paths.
pub fn parse_server(name: &str, args: &[&str], path: impl Fn(&str) -> String) -> Result<ServerConf, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err(format!("invalid name \"{name}\" (letters, digits, \"_\", \"-\", \".\")"));
    }
    let (addr, opts) = args.split_first().ok_or("needs an address")?;
    let addr = parse_addr(addr)?;
    let (mut user, mut password, mut db, mut tls, mut key_file, mut prefix) =
        (None, None, 0, false, None, DEFAULT_PREFIX.to_string());
    let (mut connect_timeout, mut timeout, mut retry, mut pool) =
        (DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_RETRY, DEFAULT_POOL);
    let mut seen: Vec<&str> = Vec::new();
    for a in opts {
        let (k, v) = a.split_once('=').ok_or_else(|| format!("\"{a}\": expected name=value"))?;
        if seen.contains(&k) {
            return Err(format!("duplicate \"{k}\""));
        }
        seen.push(k);
        let bad = || format!("invalid \"{a}\"");
        let duration = || crate::store::sql_server::parse_duration(v).ok_or_else(bad);
        match k {
            "key_file" => key_file = Some(path(v)),
            "password_file" => password = Some(crate::store::sql_server::read_secret_line(k, &path(v))?),
            "user" if !v.is_empty() => user = Some(v.to_string()),
            "db" => db = v.parse::<i64>().ok().filter(|d| (0..=1_000_000).contains(d)).ok_or_else(bad)?,
            "tls" => tls = crate::config::parse_on_off(v).ok_or_else(bad)?,
            "prefix" if v.len() <= 64 && !v.contains(|c: char| c.is_whitespace() || c.is_control()) => {
                prefix = v.to_string()
            }
            "connect_timeout" => connect_timeout = duration()?,
            "timeout" => timeout = duration()?,
            "retry" => retry = duration()?,
            "pool" => pool = v.parse().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(bad)?,
            _ => {
                return Err(format!(
                    "unknown or invalid option \"{a}\" (key_file, password_file, user, db, tls, prefix, \
                     connect_timeout, timeout, retry, pool)"
                ))
            }
        }
    }
    if tls && matches!(addr, Addr::Unix(_)) {
        return Err("tls=on needs a TCP address".into());
    }
    let key_file = key_file.ok_or(
        "needs key_file=PATH: the fleet's secret (the same file on every proxy, at least 16 bytes), \
         so that no user name, address or password is stored in Redis in a reversible form",
    )?;
    let secret = std::fs::read(&key_file).map_err(|e| format!("key_file \"{key_file}\": {e}"))?;
    let keys = Keys::new(secret, &prefix).map_err(|e| format!("key_file \"{key_file}\": {e}"))?;
    Ok(ServerConf {
        name: name.to_string(),
        addr,
        user,
        password,
        db,
        tls,
        keys,
        connect_timeout,
        timeout,
        retry,
        pool,
    })
}

/// A counter of the shared store: its key and rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: String,
    pub rate: Rate,
}

/// One admission, as the store's script takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitCall {
    pub ip: Option<Counter>,
    pub user: Option<Counter>,
    /// The mark that exempts this client from the user's counter (when there is one).
    pub trusted: Option<String>,
    /// The mark of this source's recent failure with this password.
    pub fingerprint: String,
    /// Seconds since the epoch; 0: the store's own clock (the fleet's one clock).
    pub now: u64,
}

/// The store's answer to an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitReply {
    /// Counted, in windows starting at these times (`None`: not counted on that side).
    Admitted { ip_start: Option<u64>, user_start: Option<u64> },
    /// The same wrong password again from this source: admitted without counting.
    Repeat,
    /// Refused by a side's counter: its refusals before this one (the growing wait), and the
    /// seconds its ban has left (`None`: not banned, the counter is full).
    Refused { side: Side, refusals: u64, ban_left: Option<u64> },
}

/// One settlement, as the store's script takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleCall {
    /// Counters the attempt was counted on, with the start of its window.
    pub ip: Option<(Counter, u64)>,
    pub user: Option<(Counter, u64)>,
    pub how: Outcome,
    /// `ban=` of the limit.
    pub ban: u64,
    /// A failure: the fingerprint mark and its lifetime (the longest window).
    pub fingerprint: Option<(String, u64)>,
    /// A success: the trusted mark and its lifetime.
    pub trusted: Option<(String, u64)>,
    pub now: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Failure = 1,
    Success = 2,
    Neutral = 3,
}

/// What the shared store does: blocking admissions (thread pool only), queued settlements and
/// lifts (never waited for), and what to tell the log.
pub trait Backend: Send + Sync {
    fn name(&self) -> &str;
    fn keys(&self) -> &Keys;
    /// Blocks for at most about the store's timeouts. `Err(Some(line))`: unusable, with a line
    /// for the log; `Err(None)`: unusable, already said (or not tried: it failed recently).
    fn admit(&self, call: &AdmitCall) -> Result<AdmitReply, Option<String>>;
    /// Queued; never blocks.
    fn settle(&self, call: SettleCall);
    /// Deletes these counters (queued; never blocks).
    fn forget(&self, keys: Vec<String>);
    /// Log lines from the queue's thread, and how many settlements it could not deliver, since
    /// the last call.
    fn take_notices(&self) -> (Vec<String>, u64);
}

/// An attempt admitted by the shared store, to be settled with [`SharedLimit::settle`]. Holds
/// keys (keyed hashes), never a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    ip: Option<(Counter, u64)>,
    user: Option<(Counter, u64)>,
    trusted: Option<String>,
    /// The trust mark for the account's own spelling ([`SharedLimit::trust_account`]).
    pub(crate) account_trusted: Option<String>,
    fingerprint: String,
}

/// The shared store's verdict on an attempt.
#[derive(Debug)]
pub enum Admission {
    Admitted(Ticket),
    /// Refused: the refusal to answer with, and the ban to keep locally (side, seconds left,
    /// refusals so far) when it is one.
    Refused(Refusal, Option<(Side, u64, u64)>),
    /// The store could not be asked: decide with the local limiter alone (`Some`: a log line).
    Unavailable(Option<String>),
}

/// A location's limit kept in a shared store: the keys of its counters (per zone name, with
/// the location's prefixes and per-protocol budgets) and the store.
#[derive(Clone)]
pub struct SharedLimit {
    pub backend: Arc<dyn Backend>,
    pub cfg: LimitConfig,
    /// The limit's zone name: two zones never share counters.
    pub scope: String,
}

impl SharedLimit {
    fn key(&self, kind: char, parts: &[&[u8]]) -> String {
        let mut all: Vec<&[u8]> = vec![self.scope.as_bytes()];
        all.extend_from_slice(parts);
        self.backend.keys().key(kind, &all)
    }

    fn group(&self, ip: IpAddr) -> Vec<u8> {
        limiter::group_bytes(limiter::ip_network(ip, self.cfg.ipv4_prefix, self.cfg.ipv6_prefix))
    }

    fn ip_key(&self, ip: IpAddr, tag: Option<Protocol>) -> String {
        let g = self.group(ip);
        match tag {
            None => self.key('c', &[b"ip", &g]),
            Some(p) => self.key('c', &[b"ip", &g, p.as_str().as_bytes()]),
        }
    }

    /// `user` lower-cased.
    fn user_key(&self, user: &str, tag: Option<Protocol>) -> String {
        match tag {
            None => self.key('c', &[b"user", user.as_bytes()]),
            Some(p) => self.key('c', &[b"user", user.as_bytes(), p.as_str().as_bytes()]),
        }
    }

    /// The admission of an attempt the local limiter admitted (as `Limiter::admit`: `user` as
    /// given, `proto` the request's, `scope` the store's as `Limiter::with_scope` takes it).
    /// Blocks: thread pool only.
    pub fn admit(
        &self,
        ip: Option<IpAddr>,
        user: &str,
        password: &[u8],
        proto: Option<Protocol>,
        scope: &str,
    ) -> Admission {
        self.admit_on(ip, true, user, password, proto, scope)
    }

    /// The key of the mark that trusts `ip`'s group for the account `name` (exact spelling) of
    /// the store `scope`, where the client has a budget of its own (as `Limiter::trust_for`).
    fn trusted_key(&self, ip: Option<IpAddr>, name: &str, proto: Option<Protocol>, scope: &str) -> Option<String> {
        let ip = ip.filter(|_| !name.is_empty())?;
        self.cfg.rate_for(Side::Ip, proto).0?;
        self.cfg.rate_for(Side::User, proto).0?;
        Some(self.key('t', &[b"trusted", &self.group(ip), scope.as_bytes(), name.as_bytes()]))
    }

    /// As `Limiter::trust_account`: a success of the ticket's login trusts the client for the
    /// account's own spelling `name` too.
    pub fn trust_account(&self, t: &mut Ticket, ip: Option<IpAddr>, name: &str, proto: Option<Protocol>, scope: &str) {
        t.account_trusted = self.trusted_key(ip, name, proto, scope);
    }

    /// [`SharedLimit::admit`] for the store's own spelling of the account a login named
    /// otherwise (as `Limiter::admit_account`): the account's counter only, with the client's
    /// trust for the account (and trusting it when the login succeeds).
    pub fn admit_account(
        &self,
        ip: Option<IpAddr>,
        account: &str,
        password: &[u8],
        proto: Option<Protocol>,
        scope: &str,
    ) -> Admission {
        self.admit_on(ip, false, account, password, proto, scope)
    }

    fn admit_on(
        &self,
        ip: Option<IpAddr>,
        count_ip: bool,
        user: &str,
        password: &[u8],
        proto: Option<Protocol>,
        scope: &str,
    ) -> Admission {
        let trusted = self.trusted_key(ip, user, proto, scope);
        let user = limiter::fold(user);
        let (ip_rate, ip_tag) = self.cfg.rate_for(Side::Ip, proto);
        let (user_rate, user_tag) = self.cfg.rate_for(Side::User, proto);
        let user_rate = user_rate.filter(|_| !user.is_empty());
        let group = ip.map(|ip| self.group(ip)).unwrap_or_default();
        let call = AdmitCall {
            ip: ip.filter(|_| count_ip).zip(ip_rate).map(|(ip, rate)| Counter { key: self.ip_key(ip, ip_tag), rate }),
            user: user_rate.map(|rate| Counter { key: self.user_key(&user, user_tag), rate }),
            // (as the local limiter: per store and exact name, where the client has a budget)
            trusted,
            fingerprint: self.key('f', &[b"fp", &group, user.as_bytes(), password]),
            now: 0,
        };
        match self.backend.admit(&call) {
            Err(line) => Admission::Unavailable(line),
            Ok(AdmitReply::Refused { side, refusals, ban_left }) => {
                let whose = match (side, ip) {
                    (Side::Ip, Some(ip)) => format!(
                        "from {}",
                        limiter::network_label(limiter::ip_network(ip, self.cfg.ipv4_prefix, self.cfg.ipv6_prefix))
                    ),
                    _ => "for this user".to_string(),
                };
                let reason =
                    self.cfg.refusal_reason(side, proto, &whose, ban_left.is_some(), Some(self.backend.name()));
                let r = Refusal { wait: limiter::wait_for(refusals), reason };
                Admission::Refused(r, ban_left.map(|left| (side, left, refusals + 1)))
            }
            Ok(reply) => {
                let (ip_start, user_start) = match reply {
                    AdmitReply::Admitted { ip_start, user_start } => (ip_start, user_start),
                    _ => (None, None),
                };
                Admission::Admitted(Ticket {
                    ip: call.ip.zip(ip_start),
                    user: call.user.zip(user_start),
                    trusted: call.trusted,
                    account_trusted: None,
                    fingerprint: call.fingerprint,
                })
            }
        }
    }

    /// How an admitted attempt ended (as `Limiter::settle`): queued, never waited for.
    pub fn settle(&self, t: Ticket, how: Settle<'_>) {
        let window = self.cfg.longest_window();
        let lifetime = self.cfg.ban.max(limiter::TRUSTED_FOR);
        if let (Some(key), Settle::Success) = (&t.account_trusted, how) {
            // the account's own spelling: a mark alone (no counter, no fingerprint)
            self.backend.settle(SettleCall {
                ip: None,
                user: None,
                how: Outcome::Success,
                ban: self.cfg.ban,
                fingerprint: None,
                trusted: Some((key.clone(), lifetime)),
                now: 0,
            });
        }
        let (how, fingerprint, trusted) = match how {
            Settle::Failure { .. } => (Outcome::Failure, Some((t.fingerprint, window)).filter(|_| window > 0), None),
            Settle::Success => (Outcome::Success, None, t.trusted.map(|k| (k, lifetime))),
            Settle::Neutral => (Outcome::Neutral, None, None),
        };
        if t.ip.is_none() && t.user.is_none() && fingerprint.is_none() && trusted.is_none() {
            return;
        }
        self.backend.settle(SettleCall {
            ip: t.ip,
            user: t.user,
            how,
            ban: self.cfg.ban,
            fingerprint,
            trusted,
            now: 0,
        });
    }

    /// Forgets the shared counters a lift names (a client's group or a user, their common and
    /// per-protocol counters): queued. `false` for a `key=` lift (a local key: nothing shared
    /// to name).
    pub fn lift(&self, target: &LiftTarget) -> bool {
        let tags = [None, Some(Protocol::Imap), Some(Protocol::Pop3), Some(Protocol::Smtp)];
        let keys: Vec<String> = match target {
            LiftTarget::Client(ip) => tags.iter().map(|t| self.ip_key(*ip, *t)).collect(),
            LiftTarget::User(u) => {
                let u = limiter::fold(u);
                tags.iter().map(|t| self.user_key(&u, *t)).collect()
            }
            LiftTarget::Key(_) => return false,
        };
        self.backend.forget(keys);
        true
    }
}

/// Whether the shared store is usable, as the log tells it: the first failure is logged at
/// once, then a line at most every [`LOG_INTERVAL`] while it lasts (with the decisions made
/// without it meanwhile), and the recovery once. While broken, the store is tried again only
/// every `retry` (one caller at a time gets to try).
#[derive(Debug, Default)]
pub struct Health {
    broken: Option<Broken>,
}

#[derive(Debug)]
struct Broken {
    cause: String,
    logged: Instant,
    /// Decisions without the store since the last line.
    missed: u64,
    retry_at: Instant,
}

impl Health {
    /// May the store be asked now? While broken: once per `retry` (the caller that gets `true`
    /// moves the next try on); the others count as decisions made without it.
    pub fn may_try(&mut self, now: Instant, retry: Duration) -> bool {
        match &mut self.broken {
            None => true,
            Some(b) if now >= b.retry_at => {
                b.retry_at = now + retry;
                true
            }
            Some(b) => {
                b.missed += 1;
                false
            }
        }
    }

    /// A failure with `cause`: the line to log, if it is time for one.
    pub fn failed(&mut self, desc: &str, cause: &str, now: Instant, retry: Duration) -> Option<String> {
        match &mut self.broken {
            None => {
                self.broken = Some(Broken { cause: cause.to_string(), logged: now, missed: 1, retry_at: now + retry });
                Some(format!("{desc}: {cause}; limiting with this proxy's own counters only until it answers"))
            }
            Some(b) => {
                b.retry_at = now + retry;
                b.missed += 1;
                if now.duration_since(b.logged) < LOG_INTERVAL && b.cause == cause {
                    return None;
                }
                let line = format!(
                    "{desc}: {cause}; still limiting with this proxy's own counters only ({} decisions without it since the last line)",
                    b.missed
                );
                (b.cause, b.logged, b.missed) = (cause.to_string(), now, 0);
                Some(line)
            }
        }
    }

    /// The store answered: the line to log if it was broken.
    pub fn usable(&mut self, desc: &str) -> Option<String> {
        self.broken.take().map(|b| format!("{desc}: usable again after {}; shared limiting resumed", b.cause))
    }
}

#[cfg(test)]
mod tests;
