//! The shared store on Redis (standalone server; Sentinel and Cluster are not supported): the
//! blocking `redis` client, asked on nginx's thread pool for admissions (a small pool of idle
//! connections per worker) and from one thread per worker for the settlement queue (pipelined
//! batches on a connection of its own). Every command has `timeout`; a connection that failed
//! is dropped, and a new one made at the next try (`connect_timeout`).
//!
//! Each admission and settlement is one Lua script, run atomically by Redis ([`ADMIT`],
//! [`SETTLE`]); Redis's clock (`TIME`) is the fleet's one clock. A counter is a hash
//! `{start, attempts, fails, ban, refusals}` that expires when its window and its ban are
//! over; the marks (fingerprint, trusted) are plain keys with a lifetime.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Addr, AdmitCall, AdmitReply, Backend, Counter, Health, Keys, ServerConf, SettleCall};
use crate::limiter::Side;
use crate::store::lock;

/// KEYS: ip counter, user counter, trusted mark, fingerprint mark. ARGV: now (0: Redis's
/// clock), ip count (0: no ip counter), ip window, user count (0: none), user window, whether
/// the trusted mark applies (1/0). Returns {0, ip start, user start} (admitted; 0: not
/// counted there), {1} (a repeated wrong password: admitted without counting), or
/// {2, side (1 ip, 2 user), refusals before this one, seconds of ban left (0: not banned)}.
/// The checks and counting of `Limiter::banned` + `Limiter::admit`.
pub const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
if now == 0 then now = tonumber(redis.call('TIME')[1]) end
local counters = {}
if tonumber(ARGV[2]) > 0 then
  table.insert(counters, {1, KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])})
end
if tonumber(ARGV[4]) > 0 and not (ARGV[6] == '1' and redis.call('EXISTS', KEYS[3]) == 1) then
  table.insert(counters, {2, KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5])})
end
local state = {}
for i, c in ipairs(counters) do
  local v = redis.call('HMGET', c[2], 'start', 'attempts', 'ban')
  state[i] = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0}
end
local function refuse(i, banned)
  local n = redis.call('HINCRBY', counters[i][2], 'refusals', 1)
  local left = 0
  if banned then left = state[i][3] - now end
  return {2, counters[i][1], n - 1, left}
end
-- bans first (either side), then full counters
for i, c in ipairs(counters) do
  if state[i][3] > now then return refuse(i, true) end
end
for i, c in ipairs(counters) do
  local s = state[i]
  if s[2] > 0 and now < s[1] + c[4] and s[2] >= c[3] then return refuse(i, false) end
end
if redis.call('EXISTS', KEYS[4]) == 1 then return {1} end
local starts = {0, 0}
for i, c in ipairs(counters) do
  local start, attempts, ban = state[i][1], state[i][2], state[i][3]
  if attempts == 0 or now >= start + c[4] then
    start = now
    redis.call('HSET', c[2], 'start', now, 'attempts', 1, 'fails', 0)
    if ban <= now then redis.call('HSET', c[2], 'refusals', 0) end
  else
    redis.call('HINCRBY', c[2], 'attempts', 1)
  end
  -- kept SETTLE_GRACE (300 s) past this admission at least, as the zone keeps its counter:
  -- a slow verification's failure, settled after the window ended, still counts (and bans)
  redis.call('EXPIRE', c[2], math.max(start + c[4], ban, now + 300) - now + 1)
  starts[c[1]] = start
end
return {0, starts[1], starts[2]}
"#;

/// KEYS: ip counter, user counter, trusted mark, fingerprint mark. ARGV: now (0: Redis's
/// clock), how (1 failure, 2 success, 3 neutral), ip window start (-1: not counted), ip count,
/// ip window, user window start (-1), user count, user window, ban seconds, fingerprint
/// lifetime (0: none), trusted lifetime (0: none). The counting of `Limiter::settle`.
pub const SETTLE: &str = r#"
local now = tonumber(ARGV[1])
if now == 0 then now = tonumber(redis.call('TIME')[1]) end
local how = tonumber(ARGV[2])
local failed = how == 1
-- a failure whose mark is there now was not marked when it was admitted (a marked password is
-- admitted without counting): the same password from the same source, in flight at the same
-- time, failed meanwhile and stays counted; this one is given back (the burst counts once)
if failed and tonumber(ARGV[10]) > 0 and redis.call('EXISTS', KEYS[4]) == 1 then how = 3 end
local function settle(key, start, count, window)
  if start < 0 then return end
  local v = redis.call('HMGET', key, 'start', 'attempts', 'fails', 'ban')
  local s, attempts, fails, ban = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
  if s ~= start or attempts <= fails then return end
  if how == 1 then
    fails = fails + 1
    redis.call('HSET', key, 'fails', fails)
    local wend = start + window
    if fails >= count and ban <= now then
      ban = math.max(wend, now + tonumber(ARGV[9]))
      redis.call('HSET', key, 'ban', ban, 'refusals', 0)
    end
    -- never shorter than it is: other attempts of the window may still be in flight
    local want = math.max(wend, ban) - now + 1
    if want > redis.call('TTL', key) then redis.call('EXPIRE', key, want) end
  elseif attempts == 1 and ban <= now then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'attempts', attempts - 1)
  end
end
settle(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
settle(KEYS[2], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
if failed and tonumber(ARGV[10]) > 0 then redis.call('SET', KEYS[4], '1', 'EX', ARGV[10]) end
if how == 2 and tonumber(ARGV[11]) > 0 then redis.call('SET', KEYS[3], '1', 'EX', ARGV[11]) end
return 1
"#;

/// Settlements (and lifts) waiting for the queue's thread, at most.
const QUEUE: usize = 8192;
/// Sent in one pipeline, at most.
const BATCH: usize = 256;

enum Op {
    Settle(SettleCall),
    Forget(Vec<String>),
}

/// `mail_auth_redis NAME ...`: one per name, shared by the locations that use it.
pub struct RedisBackend {
    inner: Arc<Inner>,
    /// This process's queue (pid, sender): made at the first settlement in a process, so a
    /// worker never uses a thread of the master it was forked from.
    queue: Mutex<Option<(u32, SyncSender<Op>)>>,
}

struct Inner {
    conf: ServerConf,
    desc: String,
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
    admit: redis::Script,
    settle: redis::Script,
    health: Mutex<Health>,
    notices: Mutex<Vec<String>>,
    /// Settlements the queue's thread could not deliver (or the queue could not take).
    lost: AtomicU64,
}

impl RedisBackend {
    /// Connects to nothing (a server down at start only means local limiting until it answers).
    pub fn new(conf: ServerConf) -> Result<RedisBackend, String> {
        let addr = match &conf.addr {
            Addr::Tcp(h, p) if conf.tls => {
                redis::ConnectionAddr::TcpTls { host: h.clone(), port: *p, insecure: false, tls_params: None }
            }
            Addr::Tcp(h, p) => redis::ConnectionAddr::Tcp(h.clone(), *p),
            Addr::Unix(p) => redis::ConnectionAddr::Unix(p.into()),
        };
        let info = redis::ConnectionInfo {
            addr,
            redis: redis::RedisConnectionInfo {
                db: conf.db,
                username: conf.user.clone(),
                password: conf.password.clone(),
                ..Default::default()
            },
        };
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let desc = format!("mail_auth_redis \"{}\" ({})", conf.name, conf.addr);
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                conf,
                desc,
                client,
                idle: Mutex::new(Vec::new()),
                admit: redis::Script::new(ADMIT),
                settle: redis::Script::new(SETTLE),
                health: Mutex::new(Health::default()),
                notices: Mutex::new(Vec::new()),
                lost: AtomicU64::new(0),
            }),
            queue: Mutex::new(None),
        })
    }

    fn enqueue(&self, op: Op) {
        let pid = crate::store::watch::process_id();
        let mut q = lock(&self.queue);
        if !matches!(&*q, Some((p, _)) if *p == pid) {
            let (tx, rx) = sync_channel(QUEUE);
            let inner = Arc::clone(&self.inner);
            let mut thread = QueueThread { inner, rx, con: None };
            match crate::store::watch::spawn(Duration::from_millis(1), move || thread.tick()) {
                Ok(_) => *q = Some((pid, tx)),
                Err(e) => {
                    self.inner.lost.fetch_add(1, Ordering::Relaxed);
                    lock(&self.inner.notices)
                        .push(format!("{}: cannot start the settlement thread: {e}", self.inner.desc));
                    return;
                }
            }
        }
        let Some((_, tx)) = &*q else { return };
        match tx.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                // an over-count at most: the attempt stays counted until its window ends
                self.inner.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A TLS handshake with the server, bounded in time, as the client's would be made (the system's
/// trust store, the host's name), then dropped. The client's own handshake has no time bound (it
/// reads with none while it shakes hands: a server that accepts and never answers held a pool
/// thread and a lookup turn for good) and panics on a refused one: asked first, a server that
/// fails it is a failure like any other (one more handshake per new connection, and
/// connections are kept). A server that changes between the two is not covered.
fn tls_probe(host: &str, port: u16, connect_timeout: Duration, timeout: Duration) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("TLS handshake failed ({what}: {e})");
    let mut last = None;
    let mut tcp = None;
    for a in (host, port).to_socket_addrs().map_err(|e| fail("address", &e))? {
        match std::net::TcpStream::connect_timeout(&a, connect_timeout) {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(t), _) => t,
        (None, Some(e)) => return Err(e.to_string()),
        (None, None) => return Err(format!("{host}: no address")),
    };
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let connector = native_tls::TlsConnector::new().map_err(|e| fail("TLS", &e))?;
    match connector.connect(host, tcp) {
        Ok(_) => Ok(()),
        Err(native_tls::HandshakeError::Failure(e)) => Err(fail("refused", &e)),
        Err(native_tls::HandshakeError::WouldBlock(_)) => Err(fail("no answer", &"timed out")),
    }
}

impl Inner {
    fn connect(&self) -> Result<redis::Connection, String> {
        if let (true, Addr::Tcp(host, port)) = (self.conf.tls, &self.conf.addr) {
            tls_probe(host, *port, self.conf.connect_timeout, self.conf.timeout)?;
        }
        // with a connect timeout the client unwraps the TLS handshake's result (redis 0.32): a
        // refused certificate, or a server that does not speak TLS, panics. Caught here, it is a
        // failure like any other (local limiting, logged), not a panic of every login's job
        let c = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.client.get_connection_with_timeout(self.conf.connect_timeout)
        }))
        .map_err(|_| "TLS handshake failed (the server's certificate, or not a TLS port)".to_string())?
        .map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(self.conf.timeout)).map_err(|e| e.to_string())?;
        c.set_write_timeout(Some(self.conf.timeout)).map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// May the server be asked now (see `Health::may_try`)?
    fn may_try(&self) -> bool {
        lock(&self.health).may_try(Instant::now(), self.conf.retry)
    }

    fn failed(&self, cause: &str) -> Option<String> {
        lock(&self.health).failed(&self.desc, cause, Instant::now(), self.conf.retry)
    }

    fn answered(&self) -> Option<String> {
        lock(&self.health).usable(&self.desc)
    }

    fn run_admit(&self, call: &AdmitCall) -> Result<AdmitReply, String> {
        let pooled = lock(&self.idle).pop();
        let reused = pooled.is_some();
        let mut con = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let reply = match self.invoke_admit(&mut con, call) {
            // a kept connection the server closed (restarted, idle timeout): the others are
            // as old; one more try on a new connection (at worst an attempt counted twice)
            Err(e) if reused && stale(&e) => {
                lock(&self.idle).clear();
                con = self.connect()?;
                self.invoke_admit(&mut con, call)
            }
            r => r,
        }
        .map_err(|e| e.to_string())?;
        {
            let mut idle = lock(&self.idle);
            if idle.len() < self.conf.pool {
                idle.push(con);
            }
        }
        let n = |i: usize| reply.get(i).copied().filter(|v| *v > 0).map(|v| v as u64);
        match reply.first() {
            Some(0) => Ok(AdmitReply::Admitted { ip_start: n(1), user_start: n(2) }),
            Some(1) => Ok(AdmitReply::Repeat),
            Some(2) => Ok(AdmitReply::Refused {
                side: if reply.get(1) == Some(&1) { Side::Ip } else { Side::User },
                refusals: n(2).unwrap_or(0),
                ban_left: n(3),
            }),
            _ => Err(format!("unexpected answer of the admission script: {reply:?}")),
        }
    }

    fn invoke_admit(&self, con: &mut redis::Connection, call: &AdmitCall) -> redis::RedisResult<Vec<i64>> {
        let (ip, user) = (call.ip.as_ref(), call.user.as_ref());
        let none = self.conf.keys.unused();
        self.admit
            .key(ip.map_or(none, |c| &c.key))
            .key(user.map_or(none, |c| &c.key))
            .key(call.trusted.as_ref().unwrap_or(none))
            .key(&call.fingerprint)
            .arg(call.now)
            .arg(ip.map_or(0, |c| c.rate.count))
            .arg(ip.map_or(0, |c| c.rate.window))
            .arg(user.map_or(0, |c| c.rate.count))
            .arg(user.map_or(0, |c| c.rate.window))
            .arg(u8::from(call.trusted.is_some()))
            .invoke(con)
    }
}

/// Did a kept connection fail because the server closed it (not a timeout: the server may be
/// stuck, and another try would wait as long again)?
fn stale(e: &redis::RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error())
}

/// The arguments of a settlement (see [`SETTLE`]).
fn settle_cmd(sha: &str, c: &SettleCall, none: &str) -> redis::Cmd {
    fn side<'a>(s: &'a Option<(Counter, u64)>, none: &'a str) -> (&'a str, i64, u32, u64) {
        match s {
            Some((c, start)) => (c.key.as_str(), *start as i64, c.rate.count, c.rate.window),
            None => (none, -1, 0, 0),
        }
    }
    let (ik, is, ic, iw) = side(&c.ip, none);
    let (uk, us, uc, uw) = side(&c.user, none);
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(4)
        .arg(ik)
        .arg(uk)
        .arg(c.trusted.as_ref().map_or(none, |t| t.0.as_str()))
        .arg(c.fingerprint.as_ref().map_or(none, |f| f.0.as_str()))
        .arg(c.now)
        .arg(c.how as u8)
        .arg(is)
        .arg(ic)
        .arg(iw)
        .arg(us)
        .arg(uc)
        .arg(uw)
        .arg(c.ban)
        .arg(c.fingerprint.as_ref().map_or(0, |f| f.1))
        .arg(c.trusted.as_ref().map_or(0, |t| t.1));
    cmd
}

/// The settlement queue's thread (one per worker and server).
struct QueueThread {
    inner: Arc<Inner>,
    rx: Receiver<Op>,
    con: Option<redis::Connection>,
}

impl QueueThread {
    /// Waits a moment for work, then sends what is queued in one pipeline. `false`: the
    /// queue is gone (never: the backend lives as long as the configuration).
    fn tick(&mut self) -> bool {
        let first = match self.rx.recv_timeout(Duration::from_millis(200)) {
            Ok(op) => op,
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if !self.inner.may_try() {
            self.inner.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
            return true;
        }
        match self.send(&batch) {
            Ok(()) => {
                if let Some(line) = self.inner.answered() {
                    lock(&self.inner.notices).push(line);
                }
            }
            Err(e) => {
                self.con = None;
                self.inner.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let Some(line) = self.inner.failed(&e) {
                    lock(&self.inner.notices).push(line);
                }
            }
        }
        true
    }

    fn send(&mut self, batch: &[Op]) -> Result<(), String> {
        if let Some(con) = self.con.take() {
            match self.send_on(con, batch) {
                // the server closed the kept connection: once more on a new one
                Err(e) if stale(&e) => {}
                r => return r.map_err(|e| e.to_string()),
            }
        }
        let mut con = self.inner.connect()?;
        self.inner.settle.load(&mut con).map_err(|e| e.to_string())?;
        self.send_on(con, batch).map_err(|e| e.to_string())
    }

    fn send_on(&mut self, mut con: redis::Connection, batch: &[Op]) -> redis::RedisResult<()> {
        let sha = self.inner.settle.get_hash();
        let none = self.inner.conf.keys.unused();
        let mut p = redis::pipe();
        for op in batch {
            match op {
                Op::Settle(c) => {
                    p.add_command(settle_cmd(sha, c, none)).ignore();
                }
                Op::Forget(keys) => {
                    p.cmd("DEL").arg(keys).ignore();
                }
            }
        }
        match p.query::<()>(&mut con) {
            Ok(()) => {}
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                // flushed meanwhile: loaded again, sent again
                self.inner.settle.load(&mut con)?;
                p.query::<()>(&mut con)?;
            }
            Err(e) => return Err(e),
        }
        self.con = Some(con);
        Ok(())
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &str {
        &self.inner.conf.name
    }

    fn keys(&self) -> &Keys {
        &self.inner.conf.keys
    }

    fn admit(&self, call: &AdmitCall) -> Result<AdmitReply, Option<String>> {
        if !self.inner.may_try() {
            return Err(None);
        }
        match self.inner.run_admit(call) {
            Ok(r) => {
                if let Some(line) = self.inner.answered() {
                    lock(&self.inner.notices).push(line);
                }
                Ok(r)
            }
            Err(e) => Err(self.inner.failed(&e)),
        }
    }

    fn settle(&self, call: SettleCall) {
        self.enqueue(Op::Settle(call));
    }

    fn forget(&self, keys: Vec<String>) {
        self.enqueue(Op::Forget(keys));
    }

    fn take_notices(&self) -> (Vec<String>, u64) {
        let lines = std::mem::take(&mut *lock(&self.inner.notices));
        (lines, self.inner.lost.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests;
