//! PostgreSQL store (tokio-postgres): the same named-parameter query and row -> account mapping
//! as the SQLite store, against a PostgreSQL server (postfixadmin, Mailu, mailcow ...).
//!
//! - Lookups run only on nginx's thread pool ([`Store::may_block`] is true and
//!   [`Store::try_lookup`] always answers `None`): each connection has a current-thread tokio
//!   runtime of its own, driven only by the pool thread that holds the connection. Nothing runs
//!   on the event loop and nothing connects at configuration time.
//! - A pool per worker: idle connections are kept (at most `pool`), a lookup takes one or opens
//!   a new one; the query is prepared once per connection (a server-side prepared statement) with
//!   every parameter typed `text` (cast them in the query: `:client_ip::inet`).
//! - Failover: the DSN's hosts (`host=a,b port=5432,5433`) are tried in order at each connect.
//!   A pooled connection that turns out closed is dropped and the lookup retried once on a new
//!   connection (so a failed-over server answers at once).
//! - Timeouts: `connect_timeout` per connect (all the servers together), `query_timeout` per
//!   query (prepare or lookup); a timed-out connection is dropped (its state is unknown). The
//!   server gives the statement up too: each connection sets `statement_timeout` and
//!   `lock_timeout` to `query_timeout` (a dropped connection alone leaves a backend waiting on a
//!   lock waiting, and those piled up to `max_connections`).
//! - Every failure is a `StoreError` (a temporary failure, never OK) and logged once per new
//!   cause; the next lookup tries again, and the recovery is logged.
//! - TLS: `ssl_ca=PATH` requires TLS and verifies the server's certificate against that CA and
//!   its name against the host of the DSN (libpq's `sslmode=verify-full`), with OpenSSL.

#![forbid(unsafe_code)]

use tokio_postgres::types::{ToSql, Type};

use super::sql_params::{self, Param, Style};
use super::sql_row::escape_controls;
use super::watch::Events;
use super::{Account, Query, Store, StoreError};
use crate::protocol;

pub use super::sql_server::{parse_options, Options};
use super::sql_server::{row_account, Failure, Health, Pool};

/// How a result column is turned into text for the row mapping.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Int2,
    Int4,
    Int8,
    Bool,
}

fn kind_of(t: &Type) -> Option<Kind> {
    Some(match *t {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Kind::Text,
        Type::INT2 => Kind::Int2,
        Type::INT4 => Kind::Int4,
        Type::INT8 => Kind::Int8,
        Type::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// One connection of the pool, its runtime and its prepared statement.
struct Conn {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    stmt: tokio_postgres::Statement,
    columns: Vec<(String, Kind)>,
}

#[derive(Clone)]
enum Tls {
    None,
    Verify(postgres_openssl::MakeTlsConnector),
}

pub struct PgStore {
    desc: String,
    /// [`Store::scope`]: see [`scope`].
    scope: String,
    config: tokio_postgres::Config,
    /// The query with `$n` parameters, and what each is.
    sql: String,
    params: Vec<Param>,
    opts: Options,
    tls: Tls,
    pool: Pool<Conn>,
    events: Events,
    health: Health,
}

/// What decides which account a name finds on a PostgreSQL store: the servers (hosts, their
/// addresses and ports), the user, the database, the session options (`options=-c
/// search_path=...` chooses the tables) and the query; never the password.
fn scope(desc: &str, config: &tokio_postgres::Config, query: &str) -> String {
    use tokio_postgres::config::Host;
    let mut parts: Vec<Vec<u8>> = vec![b"postgresql".to_vec()];
    for h in config.get_hosts() {
        parts.push(match h {
            Host::Tcp(h) => format!("tcp {h}").into_bytes(),
            Host::Unix(p) => format!("unix {}", p.display()).into_bytes(),
        });
    }
    parts.push(b"hostaddr".to_vec());
    parts.extend(config.get_hostaddrs().iter().map(|a| a.to_string().into_bytes()));
    parts.push(b"port".to_vec());
    parts.extend(config.get_ports().iter().map(|p| p.to_string().into_bytes()));
    // absent and empty told apart (an absent user or database is the server's default)
    let opt = |v: Option<&str>| v.map_or(b"\0".to_vec(), |v| v.as_bytes().to_vec());
    parts.extend([b"user".to_vec(), opt(config.get_user())]);
    parts.extend([b"dbname".to_vec(), opt(config.get_dbname())]);
    parts.extend([b"options".to_vec(), opt(config.get_options())]);
    parts.extend([b"query".to_vec(), query.as_bytes().to_vec()]);
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    super::scope_of(desc, &refs)
}

impl PgStore {
    /// Checks the DSN, the query's parameters and the TLS files; connects to nothing.
    pub fn new(opts: Options, query: &str) -> Result<PgStore, String> {
        let mut config: tokio_postgres::Config = opts.dsn.parse().map_err(|e| format!("invalid DSN: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("the DSN names no host (host=...)".into());
        }
        if let Some(p) = &opts.password {
            config.password(p.as_bytes());
        }
        config.connect_timeout(opts.connect_timeout);
        config.application_name("ngx-mail-auth");
        let (sql, params) = sql_params::rewrite(query, Style::Dollar).map_err(|e| format!("invalid query: {e}"))?;
        let tls = match &opts.ssl_ca {
            None if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
                return Err("sslmode=require needs ssl_ca=PATH (the CA that signed the server's certificate)".into())
            }
            None => Tls::None,
            Some(ca) => {
                let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
                    .map_err(|e| format!("TLS: {e}"))?;
                // that CA only: the builder's store also holds the system's CAs (and whatever
                // SSL_CERT_FILE/SSL_CERT_DIR name), any of which would vouch for the server's name
                b.set_cert_store(ca_store(ca)?);
                b.set_verify(openssl::ssl::SslVerifyMode::PEER);
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Tls::Verify(postgres_openssl::MakeTlsConnector::new(b.build()))
            }
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let pool = Pool::new(opts.pool);
        let desc = format!("postgresql \"{}\"", hosts.join(","));
        Ok(PgStore {
            scope: scope(&desc, &config, query),
            desc,
            config,
            sql,
            params,
            opts,
            tls,
            pool,
            events: Events::default(),
            health: Health::default(),
        })
    }

    /// Connects (the DSN's servers in order) and prepares the query.
    fn connect(&self) -> Result<Conn, String> {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
        let servers = self.config.get_hosts().len().max(1) as u32;
        let budget = self.opts.connect_timeout * servers;
        let client = rt.block_on(async {
            let connect = async {
                match &self.tls {
                    Tls::None => {
                        let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        Ok::<_, tokio_postgres::Error>(client)
                    }
                    Tls::Verify(tls) => {
                        let (client, conn) = self.config.connect(tls.clone()).await?;
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        Ok(client)
                    }
                }
            };
            match tokio::time::timeout(budget, connect).await {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => Err(format!("cannot connect: {}", error_text(&e))),
                Err(_) => Err(format!("cannot connect: timed out after {} ms", budget.as_millis())),
            }
        })?;
        let types = vec![Type::TEXT; self.params.len()];
        let stmt = rt.block_on(async {
            let timeout = self.opts.query_timeout;
            match tokio::time::timeout(timeout, client.batch_execute(&server_timeouts(timeout))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("setting statement_timeout: {}", error_text(&e))),
                Err(_) => return Err(format!("setting statement_timeout: timed out after {} ms", timeout.as_millis())),
            }
            match tokio::time::timeout(timeout, client.prepare_typed(&self.sql, &types)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) if is_server_timeout(&e) => {
                    Err(format!("preparing the query: timed out after {} ms ({})", timeout.as_millis(), error_text(&e)))
                }
                Ok(Err(e)) => Err(format!("invalid query: {}", error_text(&e))),
                Err(_) => Err(format!("preparing the query: timed out after {} ms", timeout.as_millis())),
            }
        })?;
        let mut columns = Vec::with_capacity(stmt.columns().len());
        for c in stmt.columns() {
            let kind = kind_of(c.type_()).ok_or_else(|| {
                format!("invalid query: column \"{}\" has type {}: cast it to text", c.name(), c.type_())
            })?;
            columns.push((c.name().to_ascii_lowercase(), kind));
        }
        if !columns.iter().any(|(n, _)| n == "password") {
            return Err("invalid query: it does not return a \"password\" column".into());
        }
        if let Some(c) = super::sql_row::repeated_column(columns.iter().map(|(n, _)| n.as_str())) {
            return Err(format!("invalid query: it returns the field of its column \"{c}\" twice"));
        }
        Ok(Conn { rt, client, stmt, columns })
    }

    /// Runs the query on `conn`: the first row mapped to an account, `Ok(None)`: no such user.
    fn run(&self, conn: &Conn, q: &Query<'_>) -> Result<Option<Result<Account, String>>, Failure> {
        let values: Vec<Option<String>> = self.params.iter().map(|p| p.value(q)).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let timeout = self.opts.query_timeout;
        let rows = conn.rt.block_on(async {
            match tokio::time::timeout(timeout, conn.client.query(&conn.stmt, &refs)).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) if is_server_timeout(&e) => Err(Failure {
                    retry: false,
                    cause: format!("query timed out after {} ms ({})", timeout.as_millis(), error_text(&e)),
                }),
                Ok(Err(e)) => Err(Failure { retry: e.is_closed() || e.code().is_none(), cause: error_text(&e) }),
                Err(_) => {
                    Err(Failure { retry: false, cause: format!("query timed out after {} ms", timeout.as_millis()) })
                }
            }
        })?;
        let user = || protocol::printable(q.user.as_bytes(), 64);
        if rows.len() > 1 {
            return Ok(Some(Err(format!("query returned more than one row for user \"{}\"", user()))));
        }
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut values: Vec<Option<String>> = Vec::with_capacity(conn.columns.len());
        for (i, (name, kind)) in conn.columns.iter().enumerate() {
            let v = match kind {
                Kind::Text => row.try_get::<_, Option<String>>(i),
                Kind::Int2 => row.try_get::<_, Option<i16>>(i).map(|v| v.map(|n| n.to_string())),
                Kind::Int4 => row.try_get::<_, Option<i32>>(i).map(|v| v.map(|n| n.to_string())),
                Kind::Int8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(|n| n.to_string())),
                Kind::Bool => row.try_get::<_, Option<bool>>(i).map(|v| v.map(|b| if b { "1" } else { "0" }.into())),
            };
            values.push(v.map_err(|e| Failure { retry: false, cause: format!("column {name}: {e}") })?);
        }
        Ok(Some(row_account(conn.columns.iter().map(|(n, _)| n.as_str()), &values, q.user)))
    }
}

/// The session settings that make the server itself give up a statement of this connection after
/// `query_timeout` (the module abandons it then): without them a lookup waiting on a lock kept
/// its backend waiting after the module had dropped the connection, and every later login's
/// timed-out lookup added one until the server ran out of connections.
fn server_timeouts(query_timeout: std::time::Duration) -> String {
    // 0 would mean no limit; the server takes at most INT_MAX milliseconds
    let ms = query_timeout.as_millis().clamp(1, i32::MAX as u128);
    format!("SET statement_timeout = {ms}; SET lock_timeout = {ms}")
}

/// Whether the server ended the statement: its `statement_timeout` or `lock_timeout` (an
/// administrator's cancel too: the same SQLSTATE).
fn is_server_timeout(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE)
}

/// A driver error with its cause (tokio-postgres' Display alone says "db error").
fn error_text(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    escape_controls(&s)
}

impl Store for PgStore {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        let found = self.pool.with(|| self.connect(), |c| !c.client.is_closed(), |c| self.run(c, q));
        self.health.answer(&self.events, &self.desc, found.map(Option::transpose))
    }

    super::sql_server::network_store_common!();
}

/// A certificate store holding the certificates of the PEM file `ca` and nothing else.
fn ca_store(ca: &str) -> Result<openssl::x509::store::X509Store, String> {
    let err = |e: &dyn std::fmt::Display| format!("ssl_ca \"{ca}\": {e}");
    let pem = std::fs::read(ca).map_err(|e| err(&e))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| err(&e))?;
    if certs.is_empty() {
        return Err(err(&"no certificate in the file"));
    }
    let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(|e| err(&e))?;
    for c in certs {
        store.add_cert(c).map_err(|e| err(&e))?;
    }
    Ok(store.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scope names the whole connection identity (hosts with their ports, user, database,
    /// session options) and the query, never the password.
    #[test]
    fn scope_is_the_connection_and_the_query() {
        let q = "SELECT password FROM users WHERE name = :user";
        let scope = |dsn: &str, sql: &str| PgStore::new(Options::new(dsn), sql).unwrap().scope().into_owned();
        let base = scope("host=db1 port=5432 user=mail dbname=a", q);
        assert!(base.starts_with("postgresql \"db1\" #"), "{base}");
        assert_eq!(base, scope("host=db1 port=5432 user=mail dbname=a", q), "stable");
        assert_eq!(base, scope("host=db1 port=5432 user=mail dbname=a password=s3cret-pw", q), "no password");
        let mut o = Options::new("host=db1 port=5432 user=mail dbname=a");
        o.password = Some("s3cret-pw".into());
        assert_eq!(PgStore::new(o, q).unwrap().scope(), base, "no password_file= either");
        assert!(!base.contains("s3cret"));
        for (dsn, sql) in [
            ("host=db1 port=5433 user=mail dbname=a", q),
            ("host=db1 port=5432 user=mail dbname=b", q),
            ("host=db1 port=5432 user=other dbname=a", q),
            ("host=db2 port=5432 user=mail dbname=a", q),
            ("host=db1,db2 port=5432 user=mail dbname=a", q),
            ("host=db1 hostaddr=127.0.0.2 port=5432 user=mail dbname=a", q),
            ("host=db1 port=5432 user=mail dbname=a options='-c search_path=b'", q),
            ("host=db1 port=5432 user=mail dbname=a", "SELECT password FROM users WHERE name = :user AND tenant = 'b'"),
        ] {
            assert_ne!(base, scope(dsn, sql), "{dsn} {sql}");
        }
    }

    #[test]
    fn server_timeouts_follow_query_timeout() {
        use std::time::Duration;
        assert_eq!(server_timeouts(Duration::from_secs(3)), "SET statement_timeout = 3000; SET lock_timeout = 3000");
        // never 0 (no limit at all), never past the server's INT_MAX milliseconds
        assert!(server_timeouts(Duration::from_micros(10)).ends_with("lock_timeout = 1"));
        assert!(server_timeouts(Duration::from_secs(u64::MAX / 2)).ends_with(&format!("= {}", i32::MAX)));
    }

    #[test]
    fn config_checks_without_connecting() {
        let q = "SELECT password FROM users WHERE name = :user";
        // a closed port: making the store connects to nothing
        let s = PgStore::new(Options::new("host=127.0.0.1,127.0.0.2 port=1 user=x dbname=y"), q).unwrap();
        assert_eq!(s.describe(), "postgresql \"127.0.0.1,127.0.0.2\"");
        assert!(s.may_block());
        let query = Query {
            user: "u",
            protocol: crate::protocol::Protocol::Imap,
            method: crate::protocol::Method::Plain,
            client_ip: None,
            password: None,
        };
        assert!(s.try_lookup(&query).is_none(), "never on the event loop");
        let e = s.lookup(&query).unwrap_err();
        assert!(e.cause.contains("cannot connect"), "{e}");
        assert_eq!(s.take_notices().len(), 1, "the failure logged once");
        assert!(PgStore::new(Options::new("host=h user=x"), "SELECT password FROM t WHERE n = :nope").is_err());
        assert!(PgStore::new(Options::new("user=x"), q).err().unwrap().contains("no host"));
        assert!(PgStore::new(Options::new("host=h bogus=1"), q).is_err());
        assert!(PgStore::new(Options::new("host=h sslmode=require"), q).err().unwrap().contains("ssl_ca"));
        assert!(PgStore::new(Options::new("host=h sslmode=verify-full"), q).is_err());
        let mut o = Options::new("host=h");
        o.ssl_ca = Some("/nonexistent/ca.pem".into());
        assert!(PgStore::new(o, q).err().unwrap().contains("ssl_ca"));
    }
}
