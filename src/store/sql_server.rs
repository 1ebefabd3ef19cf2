//! What the SQL server stores (PostgreSQL, MySQL/MariaDB) share: the options of
//! `mail_auth_sql DRIVER DSN [name=value ...]`, the account of a result row, and the store's
//! health as the log tells it.

#![forbid(unsafe_code)]
// (a build without any network store uses none of it)
#![cfg_attr(
    not(any(feature = "pgsql", feature = "mysql", feature = "ldap")),
    allow(dead_code, unused_macros, unused_imports)
)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::sql_row::{escape_controls, map_fields};
use super::watch::Events;
use super::{lock, Account, NoticeLevel, StoreError};
use crate::protocol;

/// Whether a server store is broken, as its log lines tell it: each new cause of failure is
/// logged once (error), and the recovery once (info).
#[derive(Default)]
pub(crate) struct Health {
    /// The cause last logged, while broken.
    broken: Mutex<Option<String>>,
}

impl Health {
    /// A failure with `cause`: logged (as `DESC: CAUSE`) unless it is the cause last logged.
    pub(crate) fn fail(&self, events: &Events, desc: &str, cause: &str) {
        let mut b = lock(&self.broken);
        if b.as_deref() != Some(cause) {
            events.push(NoticeLevel::Error, format!("{desc}: {cause}; answering with a temporary failure"));
            *b = Some(cause.to_string());
        }
    }

    /// A lookup went through: logged if the store was broken.
    pub(crate) fn recovered(&self, events: &Events, desc: &str) {
        if lock(&self.broken).take().is_some() {
            events.push(NoticeLevel::Info, format!("{desc}: usable again"));
        }
    }

    /// A network store's answer from what its lookup met: the server unusable (`Err`: logged
    /// by [`Health::fail`]), else what the server said (a recovery logged by
    /// [`Health::recovered`]), a bad answer for this user a store error of its own.
    pub(crate) fn answer(
        &self,
        events: &Events,
        desc: &str,
        met: Result<Result<Option<Account>, String>, String>,
    ) -> Result<Option<Account>, StoreError> {
        match &met {
            Ok(_) => self.recovered(events, desc),
            Err(cause) => self.fail(events, desc, cause),
        }
        met.and_then(|f| f).map_err(|cause| StoreError { source: desc.to_string(), cause })
    }
}

/// The account of the one row a server store's query returned for `user`: `names` are the
/// query's (lower-cased) columns, `values` the row's as text. An account without a `name`
/// column is the user asked for. `Err`: the reason, ready for the log.
pub(crate) fn row_account<'a>(
    names: impl Iterator<Item = &'a str>,
    values: &'a [Option<String>],
    user: &str,
) -> Result<Account, String> {
    map_fields(names.zip(values.iter().map(Option::as_deref)))
        .map(|mut a| {
            if a.name.is_empty() {
                a.name = user.to_string();
            }
            a
        })
        .map_err(|e| format!("row for user \"{}\": {}", protocol::printable(user.as_bytes(), 64), escape_controls(&e)))
}

/// The `Store` methods the network stores (PostgreSQL, MySQL, LDAP) have alike: never asked on
/// the event loop (`try_lookup` is `None`: only the thread pool asks them), their notices from
/// `self.events`, described by `self.desc`, scoped by `self.scope` (made by
/// [`scope_of`](super::scope_of) at construction).
macro_rules! network_store_common {
    () => {
        fn try_lookup(&self, _q: &super::Query<'_>) -> Option<Result<Option<super::Account>, super::StoreError>> {
            None
        }

        fn may_block(&self) -> bool {
            true
        }

        fn take_notices(&self) -> Vec<super::StoreNotice> {
            self.events.take()
        }

        fn describe(&self) -> String {
            self.desc.clone()
        }

        fn scope(&self) -> std::borrow::Cow<'_, str> {
            std::borrow::Cow::Borrowed(&self.scope)
        }
    };
}
pub(crate) use network_store_common;

/// Why an operation on a connection failed, and whether a new connection may do better (the
/// server closed this one; not after a timeout: the server may be stuck).
pub(crate) struct Failure {
    pub(crate) cause: String,
    pub(crate) retry: bool,
}

/// An idle connection older than this is closed rather than used (servers close idle ones,
/// Active Directory after 15 minutes; firewalls drop them silently).
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(60);

/// The idle connections a network store keeps in one worker (at most `max`), each with the
/// time it was last used.
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<(C, Instant)>>,
    max: usize,
}

impl<C> Pool<C> {
    pub(crate) fn new(max: usize) -> Pool<C> {
        Pool { idle: Mutex::new(Vec::new()), max }
    }

    /// Runs `op` on an idle connection (one `usable` says is still open, idle less than
    /// [`MAX_IDLE`]), else on a new one from `connect`. A pooled connection that fails with a
    /// failure worth a retry means the server went away: the other idle connections are dropped
    /// too and `op` runs once more on a new connection. The connection goes back to the pool
    /// after a success only.
    pub(crate) fn with<T>(
        &self,
        connect: impl Fn() -> Result<C, String>,
        usable: impl Fn(&C) -> bool,
        op: impl Fn(&mut C) -> Result<T, Failure>,
    ) -> Result<T, String> {
        let pooled = {
            let mut idle = lock(&self.idle);
            idle.retain(|(c, used)| used.elapsed() < MAX_IDLE && usable(c));
            idle.pop().map(|(c, _)| c)
        };
        let fresh = pooled.is_none();
        let mut conn = match pooled {
            Some(c) => c,
            None => connect()?,
        };
        let r = match op(&mut conn) {
            Err(f) if f.retry && !fresh => {
                lock(&self.idle).clear();
                conn = connect()?;
                op(&mut conn)
            }
            r => r,
        };
        let v = r.map_err(|f| f.cause)?;
        let mut idle = lock(&self.idle);
        if idle.len() < self.max {
            idle.push((conn, Instant::now()));
        }
        Ok(v)
    }
}

/// Default `pool=`: idle connections each worker keeps.
pub const DEFAULT_POOL: usize = 4;
/// Default `connect_timeout=`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `query_timeout=`.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The options of `mail_auth_sql DRIVER DSN [name=value ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub dsn: String,
    /// The password, read from `password_file=` at configuration time (one line).
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub pool: usize,
    pub ssl_ca: Option<String>,
}

impl Options {
    pub fn new(dsn: &str) -> Options {
        Options {
            dsn: dsn.to_string(),
            password: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            pool: DEFAULT_POOL,
            ssl_ca: None,
        }
    }
}

/// A duration: `500ms`, `3s`, `1m`, or plain seconds.
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    let (n, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (d > Duration::ZERO && d <= Duration::from_secs(3600)).then_some(d)
}

/// The first line of a password file (`OPTION=PATH`), read at configuration time by the master
/// process; an empty one is refused.
pub(crate) fn read_secret_line(option: &str, path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{option} \"{path}\": {e}"))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(format!("{option} \"{path}\": empty"));
    }
    Ok(line)
}

/// The options after the DSN: `password_file=PATH` (its first line; read now, at configuration
/// time, by the master process), `connect_timeout=`, `query_timeout=`, `pool=N`, `ssl_ca=PATH`.
pub fn parse_options(dsn: &str, args: &[String]) -> Result<Options, String> {
    let mut o = Options::new(dsn);
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| format!("\"{a}\": expected name=value"))?;
        let bad = || format!("invalid \"{a}\"");
        match k {
            "password_file" => o.password = Some(read_secret_line(k, v)?),
            "connect_timeout" => o.connect_timeout = parse_duration(v).ok_or_else(bad)?,
            "query_timeout" => o.query_timeout = parse_duration(v).ok_or_else(bad)?,
            "pool" => o.pool = v.parse().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(bad)?,
            "ssl_ca" if !v.is_empty() => o.ssl_ca = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "unknown option \"{a}\" (password_file, connect_timeout, query_timeout, pool, ssl_ca)"
                ))
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options("host=h", &["connect_timeout=500ms".into(), "query_timeout=2".into(), "pool=2".into()])
            .unwrap();
        assert_eq!(
            (o.connect_timeout, o.query_timeout, o.pool),
            (Duration::from_millis(500), Duration::from_secs(2), 2)
        );
        for bad in ["pool=0", "connect_timeout=0", "query_timeout=1h", "nope=1", "pool", "password_file=/nonexistent"] {
            assert!(parse_options("host=h", &[bad.into()]).is_err(), "{bad}");
        }
        let dir = crate::testutil::TempDir::new("pgsql");
        let f = dir.file("pw", b"s3cret\n");
        let o = parse_options("host=h", &[format!("password_file={}", f.display())]).unwrap();
        assert_eq!(o.password.as_deref(), Some("s3cret"));
    }

    /// A pooled connection the server closed: the retry runs on a new connection, not on
    /// another idle one (they went away with the server), and those are dropped.
    #[test]
    fn a_failed_pooled_connection_is_retried_on_a_new_one() {
        use std::cell::Cell;
        let pool: Pool<u32> = Pool::new(4);
        let made = Cell::new(0u32);
        let connect = || {
            made.set(made.get() + 1);
            Ok(made.get())
        };
        // three idle connections: 1, 2, 3
        let held: Vec<u32> = (0..3).map(|_| connect().unwrap()).collect();
        for c in held {
            lock(&pool.idle).push((c, Instant::now()));
        }
        let used = std::cell::RefCell::new(Vec::new());
        let r = pool.with(
            connect,
            |_| true,
            |c: &mut u32| {
                used.borrow_mut().push(*c);
                if *c <= 3 {
                    Err(Failure { cause: "closed".into(), retry: true })
                } else {
                    Ok(*c)
                }
            },
        );
        assert_eq!(r, Ok(4), "a new connection");
        assert_eq!(*used.borrow(), [3, 4], "one pooled try, then a new one");
        let idle: Vec<u32> = lock(&pool.idle).iter().map(|(c, _)| *c).collect();
        assert_eq!(idle, [4], "the stale idle ones dropped, the new one kept");
        // a failure not worth a retry (a timeout): no second try, the connection not kept
        let r = pool.with(
            connect,
            |_| true,
            |_: &mut u32| Err::<u32, _>(Failure { cause: "timed out".into(), retry: false }),
        );
        assert_eq!(r, Err("timed out".to_string()));
        assert!(lock(&pool.idle).is_empty());
        // an idle one too old, or closed (`usable`), is not used
        lock(&pool.idle).push((9, Instant::now() - MAX_IDLE));
        lock(&pool.idle).push((10, Instant::now()));
        assert_eq!(pool.with(connect, |c| *c != 10, |c: &mut u32| Ok::<_, Failure>(*c)), Ok(5));
    }
}
