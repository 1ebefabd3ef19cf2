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
use std::time::Duration;

use super::sql_row::{escape_controls, map_fields};
use super::watch::Events;
use super::{lock, Account, NoticeLevel};
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
/// `self.events`, described by `self.desc` (also their cache scope).
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
            std::borrow::Cow::Borrowed(&self.desc)
        }
    };
}
pub(crate) use network_store_common;

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
}
