//! MySQL / MariaDB store (the `mysql` crate, blocking): the same named-parameter query and
//! row -> account mapping as the SQLite and PostgreSQL stores.
//!
//! - Lookups run only on nginx's thread pool ([`Store::may_block`] true, [`Store::try_lookup`]
//!   `None`); nothing connects at configuration time.
//! - A pool per worker: at most `pool` idle connections kept; the query is a server-side
//!   prepared statement (`?` parameters, bound as strings), prepared once per connection.
//! - Failover: the DSN's hosts (`host=a,b port=3306,3307`) are tried in order at each connect,
//!   past a host that cannot be reached and past one that cannot prepare the query; a pooled
//!   connection that fails is dropped and the lookup retried once on a new one.
//! - Timeouts: `connect_timeout` per server (TCP connect), `query_timeout` as the socket's read
//!   and write timeouts (a lookup waits at most about that long for the server), and as the
//!   server's own limit on the statement (MariaDB `max_statement_time`, MySQL
//!   `max_execution_time`), so an abandoned lookup does not keep waiting there.
//! - Every failure is a `StoreError` (temporary failure, never OK), logged once per new cause;
//!   the recovery is logged.
//! - TLS: `ssl_ca=PATH` requires TLS and verifies the server's certificate against that CA and
//!   its name against the host (native-tls, i.e. the system's OpenSSL).
//!
//! DSN: `host=H[,H2...] [port=P[,P2...]] user=U [dbname=D]` (the PostgreSQL key=value form; the
//! password comes from `password_file=`).

#![forbid(unsafe_code)]

use mysql::prelude::Queryable;

use super::sql_params::{self, Param, Style};
use super::sql_row::escape_controls;
pub use super::sql_server::{parse_options, Options};
use super::sql_server::{row_account, Failure, Health, Pool};
use super::watch::Events;
use super::{Account, Query, Store, StoreError};
use crate::protocol;

struct Conn {
    conn: mysql::Conn,
    stmt: mysql::Statement,
    columns: Vec<String>,
}

pub struct MysqlStore {
    desc: String,
    /// [`Store::scope`]: each server (host and port), the user, the database and the query.
    scope: String,
    /// One connection option set per server, in failover order.
    servers: Vec<mysql::Opts>,
    sql: String,
    params: Vec<Param>,
    opts: Options,
    pool: Pool<Conn>,
    events: Events,
    health: Health,
}

/// The DSN's `key=value` pairs.
fn parse_dsn(dsn: &str) -> Result<Vec<(String, String)>, String> {
    dsn.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("\"{kv}\": expected key=value"))?;
            Ok((k.to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

impl MysqlStore {
    pub fn new(opts: Options, query: &str) -> Result<MysqlStore, String> {
        let (mut hosts, mut ports, mut user, mut db) = (Vec::new(), Vec::new(), None, None);
        for (k, v) in parse_dsn(&opts.dsn).map_err(|e| format!("invalid DSN: {e}"))? {
            match k.as_str() {
                "host" => hosts = v.split(',').map(str::to_string).collect(),
                "port" => {
                    ports = v
                        .split(',')
                        .map(|p| p.parse::<u16>().map_err(|_| format!("invalid DSN: port \"{p}\"")))
                        .collect::<Result<_, _>>()?
                }
                "user" => user = Some(v),
                "dbname" | "database" => db = Some(v),
                _ => return Err(format!("invalid DSN: unknown key \"{k}\" (host, port, user, dbname)")),
            }
        }
        if hosts.is_empty() || hosts.iter().any(String::is_empty) {
            return Err("the DSN names no host (host=...)".into());
        }
        if ports.len() > 1 && ports.len() != hosts.len() {
            return Err("invalid DSN: give one port, or one per host".into());
        }
        let ssl = match &opts.ssl_ca {
            None => None,
            Some(ca) => {
                std::fs::metadata(ca).map_err(|e| format!("ssl_ca \"{ca}\": {e}"))?;
                Some(mysql::SslOpts::default().with_root_cert_path(Some(std::path::PathBuf::from(ca))))
            }
        };
        let servers: Vec<mysql::Opts> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(3306);
                mysql::OptsBuilder::new()
                    .ip_or_hostname(Some(h.clone()))
                    .tcp_port(port)
                    .prefer_socket(false)
                    .user(user.clone())
                    .pass(opts.password.clone())
                    .db_name(db.clone())
                    .tcp_connect_timeout(Some(opts.connect_timeout))
                    .read_timeout(Some(opts.query_timeout))
                    .write_timeout(Some(opts.query_timeout))
                    .ssl_opts(ssl.clone())
                    .into()
            })
            .collect();
        let (sql, params) = sql_params::rewrite(query, Style::Question).map_err(|e| format!("invalid query: {e}"))?;
        let pool = Pool::new(opts.pool);
        let desc = format!("mysql \"{}\"", hosts.join(","));
        let scope = {
            let at: Vec<String> =
                servers.iter().map(|o| format!("{}:{}", o.get_ip_or_hostname(), o.get_tcp_port())).collect();
            let mut id: Vec<&[u8]> = vec![b"mysql"];
            id.extend(at.iter().map(|s| s.as_bytes()));
            // absent and empty told apart: the server's default is not the empty name
            id.extend([b"user".as_slice(), user.as_deref().map_or(b"\0".as_slice(), str::as_bytes)]);
            id.extend([b"dbname".as_slice(), db.as_deref().map_or(b"\0".as_slice(), str::as_bytes)]);
            id.extend([b"query".as_slice(), query.as_bytes()]);
            super::scope_of(&desc, &id)
        };
        Ok(MysqlStore {
            desc,
            scope,
            servers,
            sql,
            params,
            opts,
            pool,
            events: Events::default(),
            health: Health::default(),
        })
    }

    /// Connects to the first server that answers and prepares the query. A server that
    /// accepts the connection but cannot prepare the query (a Galera node outside the primary
    /// component, a replica missing the table or the grant) is passed over like one that does
    /// not answer: the next one is tried.
    fn connect(&self) -> Result<Conn, String> {
        let mut causes = Vec::new();
        let mut prepared_nowhere = false;
        for o in &self.servers {
            let at = format!("{}:{}", o.get_ip_or_hostname(), o.get_tcp_port());
            let mut conn = match mysql::Conn::new(o.clone()) {
                Ok(conn) => conn,
                Err(e) => {
                    causes.push(format!("{at}: {}", text(&e)));
                    continue;
                }
            };
            if let Err(e) = limit_statement_time(&mut conn, self.opts.query_timeout) {
                causes.push(format!("{at}: setting the statement timeout: {}", text(&e)));
                continue;
            }
            let stmt = match conn.prep(&self.sql) {
                Ok(stmt) => stmt,
                Err(e) => {
                    prepared_nowhere = true;
                    causes.push(format!("{at}: invalid query: {}", text(&e)));
                    continue;
                }
            };
            let columns: Vec<String> = stmt.columns().iter().map(|c| c.name_str().to_ascii_lowercase()).collect();
            if !columns.iter().any(|n| n == "password") {
                prepared_nowhere = true;
                causes.push(format!("{at}: invalid query: it does not return a \"password\" column"));
                continue;
            }
            if let Some(c) = super::sql_row::repeated_column(columns.iter().map(String::as_str)) {
                prepared_nowhere = true;
                causes.push(format!("{at}: invalid query: it returns the field of its column \"{c}\" twice"));
                continue;
            }
            return Ok(Conn { conn, stmt, columns });
        }
        let what = if prepared_nowhere { "cannot prepare the query" } else { "cannot connect" };
        Err(format!("{what}: {}", causes.join("; ")))
    }

    fn run(&self, c: &mut Conn, q: &Query<'_>) -> Result<Option<Result<Account, String>>, Failure> {
        let values: Vec<mysql::Value> = self
            .params
            .iter()
            .map(|p| match p.value(q) {
                Some(v) => mysql::Value::Bytes(v.into_bytes()),
                None => mysql::Value::NULL,
            })
            .collect();
        let timeout = self.opts.query_timeout;
        let failed = |e: mysql::Error| {
            if is_timeout(&e) {
                // the connection's state is unknown: dropped, not retried
                return Failure { cause: format!("query timed out after {} ms", timeout.as_millis()), retry: false };
            }
            Failure { retry: !matches!(e, mysql::Error::MySqlError(_)), cause: text(&e) }
        };
        let mut rows: Vec<mysql::Row> = Vec::with_capacity(2);
        {
            let result = c.conn.exec_iter(&c.stmt, mysql::Params::Positional(values)).map_err(failed)?;
            for row in result {
                rows.push(row.map_err(failed)?);
                if rows.len() > 1 {
                    break;
                }
            }
        }
        let user = || protocol::printable(q.user.as_bytes(), 64);
        if rows.len() > 1 {
            // the rest of the result is not read: this connection is not reused
            return Err(Failure {
                cause: format!("query returned more than one row for user \"{}\"", user()),
                retry: false,
            });
        }
        let Some(row) = rows.pop() else {
            return Ok(None);
        };
        // The server re-prepares the statement by itself when a table it reads changes (a
        // `SELECT *` after `ALTER TABLE ... DROP COLUMN`), and the row then comes with other
        // columns: the values are read under the names the row gives, never the ones seen at
        // prepare time (before, an `enabled` column moved by one was read as NULL: enabled).
        let cols = row.columns_ref();
        if cols.len() != c.columns.len()
            || cols.iter().zip(&c.columns).any(|(a, b)| !a.name_str().eq_ignore_ascii_case(b))
        {
            let names: Vec<String> = cols.iter().map(|c| c.name_str().to_ascii_lowercase()).collect();
            if !names.iter().any(|n| n == "password") {
                return Err(Failure {
                    cause: "invalid query: it no longer returns a \"password\" column".into(),
                    retry: false,
                });
            }
            c.columns = names;
        }
        // (the row's columns are `c.columns` now, one for one)
        let values: Vec<Option<String>> = cols
            .iter()
            .enumerate()
            .map(|(i, col)| match row.as_ref(i) {
                None | Some(mysql::Value::NULL) => None,
                // a BIT column (`active BIT(1)`) comes as big-endian bytes: its number
                Some(mysql::Value::Bytes(b))
                    if col.column_type() == mysql::consts::ColumnType::MYSQL_TYPE_BIT && b.len() <= 8 =>
                {
                    Some(b.iter().fold(0u64, |n, &x| (n << 8) | u64::from(x)).to_string())
                }
                Some(mysql::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(mysql::Value::Int(n)) => Some(n.to_string()),
                Some(mysql::Value::UInt(n)) => Some(n.to_string()),
                Some(mysql::Value::Float(f)) => Some(f.to_string()),
                Some(mysql::Value::Double(f)) => Some(f.to_string()),
                Some(v) => Some(v.as_sql(true).trim_matches('\'').to_string()),
            })
            .collect();
        Ok(Some(row_account(c.columns.iter().map(String::as_str), &values, q.user)))
    }
}

/// Makes the server itself give up a statement of this connection after `query_timeout` (the
/// module abandons it then; a dropped connection alone leaves a lookup waiting on a lock waiting,
/// and later logins' timed-out lookups piled up until the server ran out of connections):
/// MariaDB's `max_statement_time` (seconds, any statement), else MySQL's `max_execution_time`
/// (milliseconds, SELECT only). A server that knows neither (MySQL before 5.7.8) is used as it
/// is; any other refusal is an error.
fn limit_statement_time(conn: &mut mysql::Conn, query_timeout: std::time::Duration) -> Result<(), mysql::Error> {
    let ms = query_timeout.as_millis().clamp(1, u32::MAX as u128);
    for set in [
        format!("SET SESSION max_statement_time = {}.{:03}", ms / 1000, ms % 1000),
        format!("SET SESSION max_execution_time = {ms}"),
    ] {
        match conn.query_drop(set) {
            Ok(()) => return Ok(()),
            Err(e) if is_unknown_variable(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// ER_UNKNOWN_SYSTEM_VARIABLE.
fn is_unknown_variable(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(m) if m.code == 1193)
}

/// Whether the socket's read/write timeout (`query_timeout`) expired, or the server's statement
/// timeout (MariaDB's ER_STATEMENT_TIMEOUT, MySQL's ER_QUERY_TIMEOUT). The codec's error type is
/// not exported by the `mysql` crate, so its I/O error is recognised by its kind's name.
fn is_timeout(e: &mysql::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        mysql::Error::MySqlError(m) => matches!(m.code, 1969 | 3024),
        mysql::Error::IoError(io) => matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        mysql::Error::CodecError(c) => {
            let d = format!("{c:?}");
            d.starts_with("Io(") && (d.contains("kind: WouldBlock") || d.contains("kind: TimedOut"))
        }
        _ => false,
    }
}

fn text(e: &mysql::Error) -> String {
    escape_controls(&e.to_string())
}

impl Store for MysqlStore {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        let found = self.pool.with(
            || self.connect(),
            |_| true,
            |c| {
                let started = std::time::Instant::now();
                let answer = self.run(c, q)?;
                // the server's statement time limit (query_timeout) may have cut the statement
                // short without an error (MariaDB: an interrupted GET_LOCK() is NULL, and the row
                // it guarded is missing from an answer that looks whole): not trusted
                if started.elapsed() >= self.opts.query_timeout {
                    return Err(Failure {
                        cause: format!(
                            "query timed out after {} ms (an answer the server's statement time limit may have cut short)",
                            self.opts.query_timeout.as_millis()
                        ),
                        retry: false,
                    });
                }
                Ok(answer)
            },
        );
        self.health.answer(&self.events, &self.desc, found.map(Option::transpose))
    }

    super::sql_server::network_store_common!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scope (trust and cached verdicts are bound to it) names the whole connection
    /// identity and the query, never the password; the same configuration gives the same one.
    #[test]
    fn scope_is_the_connection_and_the_query() {
        let q = "SELECT password FROM users WHERE name = :user";
        let scope = |dsn: &str, sql: &str| MysqlStore::new(Options::new(dsn), sql).unwrap().scope().into_owned();
        let base = scope("host=db1 user=mail dbname=a", q);
        assert!(base.starts_with("mysql \"db1\" #"), "{base}");
        assert_eq!(base, scope("host=db1 user=mail dbname=a", q), "stable");
        assert_eq!(base, scope("host=db1 port=3306 user=mail database=a", q), "the default port spelled out");
        for (dsn, sql) in [
            ("host=db1 user=mail dbname=b", q),
            ("host=db1 user=mail", q),
            ("host=db1 user=other dbname=a", q),
            ("host=db1 dbname=a", q),
            ("host=db1 port=3307 user=mail dbname=a", q),
            ("host=db2 user=mail dbname=a", q),
            ("host=db1,db2 user=mail dbname=a", q),
            ("host=db1 user=mail dbname=a", "SELECT password FROM users WHERE name = :user AND tenant = 'b'"),
        ] {
            assert_ne!(base, scope(dsn, sql), "{dsn} {sql}");
        }
        let mut o = Options::new("host=db1 user=mail dbname=a");
        o.password = Some("s3cret-pw".into());
        let with_pw = MysqlStore::new(o, q).unwrap().scope().into_owned();
        assert_eq!(with_pw, base, "the password is not part of it");
    }

    #[test]
    fn config_checks_without_connecting() {
        let q = "SELECT password FROM users WHERE name = :user";
        let mut o = Options::new("host=127.0.0.1,127.0.0.2 port=1 user=x dbname=y");
        o.connect_timeout = std::time::Duration::from_millis(300);
        let s = MysqlStore::new(o, q).unwrap();
        assert_eq!(s.describe(), "mysql \"127.0.0.1,127.0.0.2\"");
        let query = Query {
            user: "u",
            protocol: crate::protocol::Protocol::Imap,
            method: crate::protocol::Method::Plain,
            client_ip: None,
            password: None,
        };
        assert!(s.try_lookup(&query).is_none(), "never on the event loop");
        let e = s.lookup(&query).unwrap_err();
        assert!(e.cause.contains("cannot connect") && e.cause.contains("127.0.0.2:1"), "{e}");
        assert_eq!(s.take_notices().len(), 1, "the failure logged once");
        for (dsn, sql) in [
            ("host=h", "SELECT password FROM t WHERE n = :nope"),
            ("user=x", q),
            ("host=h bogus=1", q),
            ("host=a,b port=1,2,3", q),
            ("host=h port=x", q),
        ] {
            assert!(MysqlStore::new(Options::new(dsn), sql).is_err(), "{dsn} {sql}");
        }
        let mut o = Options::new("host=h");
        o.ssl_ca = Some("/nonexistent/ca.pem".into());
        assert!(MysqlStore::new(o, q).err().unwrap().contains("ssl_ca"));
    }

    #[test]
    fn server_statement_limits_recognised() {
        let err =
            |code| mysql::Error::MySqlError(mysql::MySqlError { state: "HY000".into(), message: "m".into(), code });
        // MariaDB's max_statement_time, MySQL's max_execution_time: a timeout, not a bad query
        assert!(is_timeout(&err(1969)) && is_timeout(&err(3024)));
        assert!(!is_timeout(&err(1146)));
        // a server that knows neither variable is used as it is; other refusals are errors
        assert!(is_unknown_variable(&err(1193)));
        assert!(!is_unknown_variable(&err(1227)));
    }
}
