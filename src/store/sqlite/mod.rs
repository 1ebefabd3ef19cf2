//! SQLite store (rusqlite): a configurable query with named parameters, opened read-only, one
//! connection per nginx worker (opened lazily, after the fork), the statement cached.
//!
//! - A missing, unreadable, locked or corrupt database is a `StoreError` (temporary failure,
//!   never OK); the next lookup tries again, so the store recovers when the file is restored.
//! - A database replaced atomically (rename) is noticed by its (device, inode, size, mtime) at
//!   most once per `check_interval` and reopened: no nginx reload needed.
//! - A locked database (a writer holding an EXCLUSIVE lock) waits at most `busy_timeout`
//!   (default 100 ms) and then is a `StoreError` too: a lookup never blocks a worker for long.
//! - Nothing is ever written: the file is opened `SQLITE_OPEN_READ_ONLY` (never created), so a
//!   rollback-journal database (SQLite's default, what `scripts/schema.sql` and
//!   `mail-auth-user init` make) gets no `-journal` file from us. A database in WAL mode is
//!   different: SQLite cannot read it without `<db>-wal` and `<db>-shm`, and creates them next
//!   to the database if they are missing (so the worker then needs write access to that
//!   directory, else every lookup fails with "unable to open database file"). We read the
//!   header at open and log a warning for WAL databases; use `PRAGMA journal_mode=DELETE`.
//!   (`immutable=1` is not used: the file does change.)
//! - The query should return at most one row: a second row is a `StoreError` (fail closed
//!   rather than pick an arbitrary account); add `LIMIT 1` if that is really meant.
//!
//! Query parameters: `:user`, `:protocol`, `:client_ip`, `:method` (text; the client IP as
//! `127.0.0.1` / `::1`, NULL when unknown; protocol `imap`/`pop3`/`smtp`; method as nginx
//! names it, e.g. `plain`). There is no local address: nginx mail does not send one. Result columns the module understands (others are kept in
//! `Account::extra` and otherwise ignored), see `map_row`: `password` (required), `name` (the
//! account's canonical name, e.g. with a `COLLATE NOCASE` query; else the user asked for), `enabled`,
//! `protocols`, `networks`, `server`, `port`, `user` (login for the backend), `backend_pass`,
//! `wait`, `client_cert` (not in the default query: a query of the operator's returns it).
//!
//! App passwords (`mail_auth_sqlite_app_query`, [`SqliteStore::with_app_query`]): a second
//! query, run after an account was found, with the one parameter `:user` (the account's `name`,
//! else the user asked for), returning `label` and `password` columns and optional `protocols`
//! and `networks` (as the account's); its first [`MAX_APP_PASSWORDS`] rows are the account's
//! app passwords, in the order the query gives. A row the module cannot use (a bad label, an
//! unknown protocol ...) is skipped with a warning: that credential does not log in. The
//! default ([`DEFAULT_APP_QUERY`]) reads the `app_passwords` table of `scripts/schema.sql`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

pub use super::sql_params::{Param, PARAMETERS};
use super::sql_row::{escape_controls, map_fields, split_list};
pub use super::sql_row::{map_row, NO_PASSWORD};
use super::watch::{Events, FileId, FileWatch, Seen};
use super::{
    lock, valid_label, Account, AppPassword, NoticeLevel, Query, Store, StoreError, StoreNotice, MAX_APP_PASSWORDS,
};
use crate::cidr::Cidr;
use crate::protocol::{self, Protocol};
use crate::scheme;

/// The query used with the schema in `scripts/schema.sql`.
/// Default `mail_auth_sqlite_cache_rows`: rows each worker keeps (see [`rows`]: about 100
/// bytes a row of only a name and a password, ~400 for others), enough for every active user
/// of most SQLite stores (a row not kept costs SQLite's locking: ~9 system calls a lookup).
pub const DEFAULT_CACHE_ROWS: usize = 131_072;

/// SQLite's page cache of each worker's lookup connection, in KiB (SQLite's default is 2 MiB):
/// filled only with the pages lookups read, kept while the file's change counter stays the
/// same. A database up to this size (about 130,000 users of `scripts/schema.sql`) is then read
/// from the file once: a lookup that misses the rows kept makes no `pread` for its B-tree pages
/// (scripts/profile-syscalls, 100,000 users: 3.7 -> 2.0 a lookup).
pub const PAGE_CACHE_KIB: i64 = 16 * 1024;

/// `mail_auth_sqlite_app_query default`: the `app_passwords` table of `scripts/schema.sql`.
pub const DEFAULT_APP_QUERY: &str =
    "SELECT label, password, protocols, networks FROM app_passwords WHERE user = :user ORDER BY rowid";

pub const DEFAULT_QUERY: &str = "SELECT name, password, enabled, protocols, networks, server, port, \
     backend_user AS user, backend_pass, wait FROM users WHERE name = :user";

/// The account names `Store::accounts` lists (Dovecot's userdb iterate through `mail_auth_json`).
pub const ACCOUNTS_QUERY: &str = "SELECT name FROM users";

/// At most this many rows of `users` are read for [`Store::timing_template`].
pub const TEMPLATE_ROWS: u32 = 100_000;

/// What the query's statement looks like, checked once per connection (when it is prepared):
/// the parameters to bind by index, the result columns' lower-cased names.
#[derive(Debug)]
struct Shape {
    params: Vec<(usize, Param)>,
    columns: Vec<String>,
}

/// The connection and the shape of its statement (prepared and cached in the connection).
struct Open {
    conn: Connection,
    shape: Shape,
    /// The same file, opened beside the connection: its header's change counter says whether
    /// the cached rows still are what the database holds.
    file: std::fs::File,
    /// Until when SQLite may run for a lookup on nginx's event loop (see [`Budget`]).
    budget: Budget,
}

/// How long a lookup on nginx's event loop ([`Store::try_lookup`]) may keep SQLite running
/// (a query no index serves scans the whole table: ~0.1 s for 300,000 users). Past it the
/// lookup is interrupted and asked again on the thread pool. An indexed lookup takes some µs.
pub const EVENT_LOOP_BUDGET: Duration = Duration::from_millis(1);

/// The deadline of the connection's progress handler (called every [`PROGRESS_OPS`] virtual
/// machine steps): nanoseconds after `base`, `u64::MAX` for none (lookups on the pool).
#[derive(Clone)]
struct Budget {
    base: std::time::Instant,
    deadline: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// SQLite calls the progress handler every this many virtual machine steps.
const PROGRESS_OPS: std::os::raw::c_int = 1000;

impl Budget {
    fn new() -> Budget {
        Budget {
            base: std::time::Instant::now(),
            deadline: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Interrupts what runs on the connection after `d` from now (`None`: never).
    fn set(&self, d: Option<Duration>) {
        let at = d.map_or(u64::MAX, |d| self.now().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        self.deadline.store(at, std::sync::atomic::Ordering::Relaxed);
    }

    /// Installs the handler on `conn` (once per connection: nothing allocated per lookup).
    fn install(&self, conn: &Connection) {
        let b = self.clone();
        conn.progress_handler(
            PROGRESS_OPS,
            Some(move || b.now() > b.deadline.load(std::sync::atomic::Ordering::Relaxed)),
        );
    }
}

/// Rows of the database kept by this worker, each the final answer of a lookup (`None`: no
/// such user), all read while the file's change counter was `counter`.
///
/// In SQLite's rollback-journal mode the counter (header offset 24) changes whenever a writer
/// that modified the file unlocks it. It is read (one `pread`) before every lookup: equal to
/// the rows', a row answers without SQLite (no locks, no journal checks); different, the rows
/// are dropped first. The counter is read *before* a lookup that fills a row, so a commit in
/// between leaves the row under the older counter, dropped at the next lookup. A WAL database
/// (whose commits do not touch the counter) keeps no rows; neither does a query with any
/// parameter but `:user`.
#[derive(Default)]
struct Rows {
    counter: Option<u32>,
    /// A view of the database (as it was at `counter`) depends on the time: no rows are kept
    /// until the counter changes.
    timed: bool,
    table: rows::RowTable,
}

/// Whether a view of the database names a date/time or random function ([`depends_on_time`]):
/// a query may read it without a time word of its own. `None`: the schema could not be read
/// now (locked by a writer, or past the event loop's budget).
fn views_depend_on_time(conn: &Connection) -> Option<bool> {
    let sql = "SELECT coalesce(group_concat(sql, ' '), '') FROM sqlite_schema WHERE type = 'view'";
    conn.query_row(sql, [], |r| r.get::<_, String>(0)).ok().map(|v| depends_on_time(&v))
}

/// The change counter of an open database file, `None` when it can't be read or the file is in
/// WAL mode (header bytes 18/19: read/write versions 2).
fn change_counter(file: &std::fs::File) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; 12];
    file.read_exact_at(&mut h, 16).ok()?;
    if h[2] == 2 || h[3] == 2 {
        return None;
    }
    Some(u32::from_be_bytes([h[8], h[9], h[10], h[11]]))
}

/// What a lookup ran into.
#[derive(Debug)]
enum Failure {
    /// `try_lookup` only: answering needs waiting (a database lock, an open, a template scan).
    WouldWait,
    /// The database is unusable (missing, locked, corrupt ...): the connection is dropped.
    Broken(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Broken(s)
    }
}

/// The first row mapped to an account (or why it can't be), and whether there were more rows.
type Found = (Result<Account, String>, bool);

struct Inner {
    conn: Option<Open>,
    rows: Rows,
    /// The file's identity (that of the open connection's file), broken state.
    watch: FileWatch,
}

pub struct SqliteStore {
    path: PathBuf,
    /// What [`Store::describe`] says, made once.
    desc: String,
    /// [`Store::scope`]: the path, the query and the app passwords query (see [`scope`]).
    scope: String,
    sql: String,
    /// `mail_auth_sqlite_app_query` (`None`: no app passwords).
    app_sql: Option<String>,
    busy_timeout: Duration,
    /// At most this many rows kept (`mail_auth_sqlite_cache_rows`; 0: none).
    cache_rows: usize,
    /// The query or the app passwords query may answer otherwise as time passes (see
    /// [`depends_on_time`]): no rows are kept.
    timed: bool,
    inner: Mutex<Inner>,
    events: Events,
    /// The slowest stored password of the default schema's `users` table, and the file it was
    /// read from.
    template: Mutex<(Option<FileId>, Option<std::sync::Arc<str>>)>,
}

/// What decides which account (and which credentials) a name finds in a database: the file,
/// the query (one file may hold several tenants' accounts, told apart by the query) and the app
/// passwords query.
fn scope(desc: &str, path: &Path, sql: &str, app_sql: Option<&str>) -> String {
    use std::os::unix::ffi::OsStrExt;
    let app = app_sql.map_or(&b"\0"[..], str::as_bytes);
    super::scope_of(desc, &[b"sqlite", path.as_os_str().as_bytes(), b"query", sql.as_bytes(), b"app_query", app])
}

/// Opens without ever creating the file. NO_MUTEX: the connection is only used under the
/// store's own mutex.
pub(crate) fn open_read_only(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(busy)?;
    // a value longer than this is an error ("string or blob too big"), found from the record's
    // header before the value is read: reading one is a single step of SQLite's virtual
    // machine, which the event loop's budget cannot interrupt (50 MB: ~80 ms), and the module
    // copies it again
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES);
    Ok(conn)
}

/// The longest value (string or blob) a lookup reads: a password, a networks list, ...
pub const MAX_VALUE_BYTES: i32 = 1 << 20;

/// Whether the file's SQLite header says WAL mode (file format read/write versions 2).
fn is_wal(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; 20];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => h.starts_with(b"SQLite format 3\0") && (h[18] == 2 || h[19] == 2),
        Err(_) => false,
    }
}

/// The database's path names a regular file (SQLite would wait, opening a FIFO, for a writer
/// that never comes): checked before SQLite opens it.
pub(crate) fn check_regular(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(super::watch::NOT_A_FILE.to_string()),
        _ => Ok(()),
    }
}

/// The slowest stored password (highest [`scheme::cost_estimate`]) of the default schema's
/// `users.password` column, among its first [`TEMPLATE_ROWS`] rows; `None` without such a column.
fn slowest_password(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let columns: i64 =
        conn.query_row("SELECT count(*) FROM pragma_table_info('users') WHERE lower(name) = 'password'", [], |r| {
            r.get(0)
        })?;
    if columns == 0 {
        return Ok(None);
    }
    let mut stmt = conn.prepare(&format!("SELECT password FROM users LIMIT {TEMPLATE_ROWS}"))?;
    let mut rows = stmt.raw_query();
    let mut slowest: Option<(u64, String)> = None;
    while let Some(row) = rows.next()? {
        let ValueRef::Text(t) = row.get_ref(0)? else {
            continue;
        };
        let Ok(p) = std::str::from_utf8(t) else {
            continue;
        };
        let cost = scheme::cost_estimate(p);
        if cost > 0 && slowest.as_ref().is_none_or(|(c, _)| cost > *c) {
            slowest = Some((cost, p.to_string()));
        }
    }
    Ok(slowest.map(|(_, p)| p))
}

/// Checks the query's shape on a prepared statement: known named parameters only, and a
/// `password` result column.
fn check_statement(stmt: &rusqlite::Statement<'_>) -> Result<Shape, String> {
    let mut params = Vec::with_capacity(stmt.parameter_count());
    for i in 1..=stmt.parameter_count() {
        let param = match stmt.parameter_name(i) {
            Some(":user") => Param::User,
            Some(":protocol") => Param::Protocol,
            Some(":client_ip") => Param::ClientIp,
            Some(":method") => Param::Method,
            Some(name) => return Err(format!("unknown parameter \"{name}\" (known: {})", PARAMETERS.join(", "))),
            None => return Err("positional parameters (?) are not supported; use :user, :protocol ...".into()),
        };
        params.push((i, param));
    }
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_ascii_lowercase()).collect();
    if !columns.iter().any(|c| c == "password") {
        return Err("query does not return a \"password\" column".into());
    }
    if let Some(c) = super::sql_row::repeated_column(columns.iter().map(String::as_str)) {
        return Err(format!("query returns the field of its column \"{c}\" twice (every row would be refused)"));
    }
    Ok(Shape { params, columns })
}

/// Checks an app passwords query's shape: `:user` only (at most once), `label` and `password`
/// columns.
fn check_app_statement(stmt: &rusqlite::Statement<'_>) -> Result<Option<String>, String> {
    for i in 1..=stmt.parameter_count() {
        match stmt.parameter_name(i) {
            Some(":user") => {}
            Some(name) => {
                return Err(format!("unknown parameter \"{name}\" (an app passwords query knows :user only)"))
            }
            None => return Err("positional parameters (?) are not supported; use :user".into()),
        }
    }
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_ascii_lowercase()).collect();
    for c in ["label", "password"] {
        if !columns.iter().any(|x| x == c) {
            return Err(format!("query does not return a \"{c}\" column"));
        }
    }
    Ok(None)
}

/// One row of the app passwords query, mapped (lower-cased column name, value).
fn map_app_row<'a>(cols: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Result<AppPassword, String> {
    let mut app = AppPassword::default();
    for (name, value) in cols {
        let Some(v) = value else { continue };
        match name {
            "label" => app.label = v.to_string(),
            "password" => app.password = v.to_string(),
            "protocols" => {
                let mut list = Vec::new();
                for p in split_list(v) {
                    list.push(Protocol::parse(p.as_bytes()).ok_or_else(|| format!("protocols: unknown \"{p}\""))?);
                }
                app.protocols = Some(list);
            }
            "networks" => {
                let mut list = Vec::new();
                for n in split_list(v) {
                    list.push(Cidr::parse(n).map_err(|e| format!("networks: \"{n}\": {e}"))?);
                }
                app.networks = Some(list);
            }
            _ => {}
        }
    }
    if !valid_label(&app.label) {
        return Err(format!("bad label \"{}\"", escape_controls(&app.label)));
    }
    if app.password.is_empty() {
        return Err(format!("app password \"{}\": no password", app.label));
    }
    Ok(app)
}

/// Whether `sql` may answer otherwise as time passes with the file unchanged: it names one of
/// SQLite's date and time functions (`date()`, `strftime('%s')` ... mean "now" without a time
/// value), `CURRENT_DATE`/`_TIME`/`_TIMESTAMP`, or a random function. Such a query (an account
/// or app password that expires: `expires > unixepoch()`) is not answered from kept rows: no
/// writer changes the file when the time comes, so a kept row would answer for good. Any word
/// of the text counts, in string literals too: a false match only keeps no rows.
pub(crate) fn depends_on_time(sql: &str) -> bool {
    const WORDS: [&str; 12] = [
        "date",
        "time",
        "datetime",
        "julianday",
        "unixepoch",
        "strftime",
        "timediff",
        "current_date",
        "current_time",
        "current_timestamp",
        "random",
        "randomblob",
    ];
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| WORDS.iter().any(|k| w.eq_ignore_ascii_case(k)))
}

/// A client address as SQLite text (`127.0.0.1`, `::1`) without a heap allocation.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write as _;
    let mut w = &mut buf[..];
    let _ = write!(w, "{ip}");
    let len = 64 - w.len();
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// `nginx -t`'s warning for a database a writer holds locked (an import in its transaction):
/// not a configuration error, which would stop nginx from starting or fail a reload; lookups
/// are temporary failures until the writer is done, like any locked database.
pub(crate) const LOCKED_AT_CHECK: &str =
    "database is locked by a writer; the query will be checked when a worker opens it (lookups fail temporarily while it stays locked)";

/// Whether a rusqlite error says the lookup would have to wait: SQLite's "database is locked"
/// (SQLITE_BUSY), or the progress handler interrupted a lookup past its event loop budget.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::OperationInterrupted))
}

impl SqliteStore {
    /// How many times the database was (re)opened: a witness of reloads for tests.
    pub fn generation(&self) -> u64 {
        self.events.generation()
    }

    /// Checks `sql` against the database at configuration time (`nginx -t`). `Ok(Some(w))`: the
    /// database does not exist yet, so only a warning; `Err`: a configuration error.
    pub fn check_query(path: &str, sql: &str) -> Result<Option<String>, String> {
        if sql.trim().is_empty() {
            return Err("empty query".into());
        }
        if !Path::new(path).exists() {
            return Ok(Some("database does not exist (yet); the query will be checked when it is opened".into()));
        }
        check_regular(Path::new(path))?;
        let conn = open_read_only(Path::new(path), Duration::from_millis(500))
            .map_err(|e| format!("cannot open read-only: {e}"))?;
        let stmt = match conn.prepare(sql) {
            Err(e) if is_busy(&e) => return Ok(Some(LOCKED_AT_CHECK.into())),
            r => r.map_err(|e| format!("invalid query: {e}"))?,
        };
        check_statement(&stmt).map_err(|e| format!("invalid query: {e}")).map(|_| None)
    }

    /// Makes the store. Opens nothing: each nginx worker opens its own connection on first use.
    pub fn new(path: &str, sql: &str) -> Result<SqliteStore, String> {
        if sql.trim().is_empty() {
            return Err("empty query".into());
        }
        let path = PathBuf::from(path);
        let events = Events::default();
        events.bump();
        let desc = format!("sqlite \"{}\"", path.display());
        Ok(SqliteStore {
            scope: scope(&desc, &path, sql, None),
            desc,
            inner: Mutex::new(Inner {
                conn: None,
                rows: Rows::default(),
                watch: FileWatch::new(&path, Duration::from_secs(1)),
            }),
            path,
            sql: sql.to_string(),
            timed: depends_on_time(sql),
            app_sql: None,
            busy_timeout: Duration::from_millis(100),
            cache_rows: DEFAULT_CACHE_ROWS,
            events,
            template: Mutex::new((None, None)),
        })
    }

    /// How often the file is stat()ed for replacement (default 1 s; 0 in tests).
    pub fn with_check_interval(self, d: Duration) -> SqliteStore {
        lock(&self.inner).watch.set_interval(d);
        self
    }

    /// The app passwords query (`None`: none; see the module documentation).
    pub fn with_app_query(mut self, sql: Option<&str>) -> SqliteStore {
        self.app_sql = sql.map(str::to_string);
        self.scope = scope(&self.desc, &self.path, &self.sql, sql);
        self.timed = depends_on_time(&self.sql) || sql.is_some_and(depends_on_time);
        self
    }

    /// Checks an app passwords query at configuration time (`nginx -t`): only `:user`, and
    /// `label` and `password` columns. `Ok(Some(w))`: the database does not exist yet.
    pub fn check_app_query(path: &str, sql: &str) -> Result<Option<String>, String> {
        if sql.trim().is_empty() {
            return Err("empty query".into());
        }
        if !Path::new(path).exists() {
            return Ok(Some("database does not exist (yet); the query will be checked when it is opened".into()));
        }
        check_regular(Path::new(path))?;
        let conn = open_read_only(Path::new(path), Duration::from_millis(500))
            .map_err(|e| format!("cannot open read-only: {e}"))?;
        let stmt = match conn.prepare(sql) {
            Err(e) if is_busy(&e) => return Ok(Some(LOCKED_AT_CHECK.into())),
            r => r.map_err(|e| format!("invalid query: {e}"))?,
        };
        check_app_statement(&stmt).map_err(|e| format!("invalid query: {e}"))
    }

    /// How many rows each worker keeps ([`DEFAULT_CACHE_ROWS`]; 0: none).
    pub fn with_cache_rows(mut self, n: usize) -> SqliteStore {
        self.cache_rows = n;
        self
    }

    /// How long a lookup waits for a database locked by a writer (default 100 ms).
    pub fn with_busy_timeout(mut self, d: Duration) -> SqliteStore {
        self.busy_timeout = d;
        self
    }

    /// Reads the timing template again when the file is not the one it was read from (a failure,
    /// e.g. a locked database, is retried at the next lookup). `Err`: it is to be read, and
    /// `try_only` forbids the scan (it reads up to [`TEMPLATE_ROWS`] rows).
    fn update_template(&self, conn: &Connection, id: Option<FileId>, try_only: bool) -> Result<(), Failure> {
        let mut t = lock(&self.template);
        if id.is_some() && t.0 == id {
            return Ok(());
        }
        if try_only {
            return Err(Failure::WouldWait);
        }
        if let Ok(slowest) = slowest_password(conn) {
            *t = (id, slowest.map(Into::into));
        }
        Ok(())
    }

    fn err(&self, cause: impl Into<String>) -> StoreError {
        StoreError { source: self.describe(), cause: cause.into() }
    }

    fn mark_broken(&self, inner: &mut Inner, cause: &str) {
        inner.conn = None;
        inner.rows = Rows::default();
        inner.watch.fail(&self.events, cause);
    }

    /// Notices a replaced or vanished file (checked inline: lookups run on the thread pool);
    /// drops the connection when the file changed.
    fn refresh(&self, inner: &mut Inner) -> Result<(), String> {
        match inner.watch.look(inner.conn.is_none()) {
            Seen::NotDue | Seen::Same => Ok(()),
            Seen::Gone(cause) => Err(cause),
            Seen::Changed(id) => {
                if inner.watch.current().is_some() {
                    self.events.bump();
                }
                inner.watch.set_current(Some(id));
                inner.conn = None;
                inner.rows = Rows::default();
                Ok(())
            }
        }
    }

    /// Opens the database and prepares (and checks) the query: once per connection.
    fn open(&self) -> Result<Open, String> {
        // the file first, never waiting and only a regular one: SQLite's own open would wait
        // for a writer if a FIFO were there
        let (file, _) = super::watch::open_regular(&self.path)?;
        let conn = open_read_only(&self.path, self.busy_timeout).map_err(|e| format!("cannot open read-only: {e}"))?;
        // negative: a size in KiB, not a number of pages
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB).map_err(|e| format!("cache_size: {e}"))?;
        if is_wal(&file) {
            self.events.push(
                NoticeLevel::Warn,
                format!(
                    "{}: database is in WAL mode: SQLite creates its -wal and -shm files next to it \
                     when missing; use PRAGMA journal_mode=DELETE for a purely read-only store",
                    self.path.display()
                ),
            );
        }
        let stmt = conn.prepare_cached(&self.sql).map_err(|e| format!("query: {e}"))?;
        let shape = check_statement(&stmt)?;
        drop(stmt);
        let budget = Budget::new();
        budget.install(&conn);
        Ok(Open { conn, shape, file, budget })
    }

    /// The first row mapped to an account, and whether there were more. `Err`: the database
    /// is unusable (missing, locked, corrupt ...), or, with `try_only`, answering would wait
    /// (for a database lock, an open, a template scan).
    /// The caller ([`SqliteStore::find`]) has looked at the file's identity already.
    fn lookup_inner(&self, inner: &mut Inner, q: &Query<'_>, try_only: bool) -> Result<Option<Found>, Failure> {
        if inner.conn.is_none() {
            if try_only {
                return Err(Failure::WouldWait);
            }
            inner.conn = Some(self.open()?);
        }
        let Some(open) = inner.conn.as_ref() else {
            return Err(Failure::Broken("no connection".into()));
        };
        self.update_template(&open.conn, inner.watch.current(), try_only)?;
        let failed = |what: &str, e: rusqlite::Error| match try_only && is_busy(&e) {
            true => Failure::WouldWait,
            false => Failure::Broken(format!("{what}: {e}")),
        };
        // The schema may have changed under a cached statement: SQLite re-prepares it, and a
        // statement whose shape differs is one the connection is re-opened for.
        let mut stmt = open.conn.prepare_cached(&self.sql).map_err(|e| failed("query", e))?;
        if stmt.column_count() != open.shape.columns.len() || stmt.parameter_count() != open.shape.params.len() {
            return Err(Failure::Broken("the query's columns or parameters changed".into()));
        }
        let mut ip_buf = [0u8; 64];
        for &(i, param) in &open.shape.params {
            let r = match param {
                Param::User => stmt.raw_bind_parameter(i, q.user),
                Param::Protocol => stmt.raw_bind_parameter(i, q.protocol.as_str()),
                Param::Method => stmt.raw_bind_parameter(i, q.method.as_str()),
                Param::ClientIp => stmt.raw_bind_parameter(i, q.client_ip.map(|ip| ip_text(ip, &mut ip_buf))),
            };
            r.map_err(|e| Failure::Broken(format!("binding {}: {e}", PARAMETERS[param as usize])))?;
        }
        let mut rows = stmt.raw_query();
        let row = match rows.next().map_err(|e| failed("query", e))? {
            Some(row) => row,
            None => return Ok(None),
        };
        let mut values: Vec<Option<std::borrow::Cow<'_, str>>> = Vec::with_capacity(open.shape.columns.len());
        for (i, name) in open.shape.columns.iter().enumerate() {
            let v = row.get_ref(i).map_err(|e| Failure::Broken(format!("column {name}: {e}")))?;
            values.push(match v {
                ValueRef::Null => None,
                ValueRef::Integer(n) => Some(n.to_string().into()),
                ValueRef::Real(f) => Some(f.to_string().into()),
                ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t)),
            });
        }
        let account =
            map_fields(open.shape.columns.iter().map(String::as_str).zip(values.iter().map(Option::as_deref)));
        drop(values);
        let more = rows.next().map_err(|e| failed("query", e))?.is_some();
        drop(rows);
        drop(stmt);
        let account = match (account, &self.app_sql) {
            (Ok(mut a), Some(sql)) if !more => {
                let name = if a.name.is_empty() { q.user } else { a.name.as_str() };
                a.app_passwords = self.app_rows(&open.conn, sql, name, try_only)?;
                Ok(a)
            }
            (a, _) => a,
        };
        Ok(Some((account, more)))
    }

    /// The app passwords of `user` (the first [`MAX_APP_PASSWORDS`] rows; unusable rows are
    /// skipped with a warning).
    fn app_rows(&self, conn: &Connection, sql: &str, user: &str, try_only: bool) -> Result<Vec<AppPassword>, Failure> {
        let failed = |what: &str, e: rusqlite::Error| match try_only && is_busy(&e) {
            true => Failure::WouldWait,
            false => Failure::Broken(format!("{what}: {e}")),
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| failed("app passwords query", e))?;
        check_app_statement(&stmt).map_err(|e| Failure::Broken(format!("app passwords query: {e}")))?;
        if let Some(i) = stmt.parameter_index(":user").map_err(|e| failed("app passwords query", e))? {
            stmt.raw_bind_parameter(i, user).map_err(|e| failed("app passwords query", e))?;
        }
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_ascii_lowercase()).collect();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| failed("app passwords query", e))? {
            if out.len() == MAX_APP_PASSWORDS {
                self.events.push(
                    NoticeLevel::Warn,
                    format!(
                        "{}: \"{}\" has more than {MAX_APP_PASSWORDS} app passwords; the others are ignored",
                        self.path.display(),
                        protocol::printable(user.as_bytes(), 64)
                    ),
                );
                break;
            }
            let mut values: Vec<Option<String>> = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(
                    match row.get_ref(i).map_err(|e| Failure::Broken(format!("app passwords query: {e}")))? {
                        ValueRef::Null => None,
                        ValueRef::Integer(n) => Some(n.to_string()),
                        ValueRef::Real(f) => Some(f.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    },
                );
            }
            match map_app_row(columns.iter().map(String::as_str).zip(values.iter().map(Option::as_deref))) {
                Ok(a) => out.push(a),
                Err(e) => self.events.push(
                    NoticeLevel::Warn,
                    format!(
                        "{}: an app password of \"{}\" skipped: {}",
                        self.path.display(),
                        protocol::printable(user.as_bytes(), 64),
                        escape_controls(&e)
                    ),
                ),
            }
        }
        Ok(out)
    }

    /// The change counter to keep rows under, when rows are kept for this store and query (a
    /// different counter than the rows' drops them).
    fn rows_counter(&self, inner: &mut Inner) -> Option<u32> {
        if self.cache_rows == 0 || self.timed {
            return None;
        }
        let open = inner.conn.as_ref()?;
        if open.shape.params.iter().any(|&(_, p)| p != Param::User) {
            return None;
        }
        let counter = change_counter(&open.file);
        if counter.is_none() || inner.rows.counter != counter {
            // (the schema is in the file: a view made or changed changes the counter)
            let timed = match counter {
                Some(_) => views_depend_on_time(&open.conn),
                None => Some(false),
            };
            // not known now: no rows, and asked again by the next lookup
            let Some(timed) = timed else {
                inner.rows = Rows::default();
                return None;
            };
            inner.rows = Rows { counter, timed, ..Rows::default() };
        }
        counter.filter(|_| !inner.rows.timed)
    }

    /// [`Store::lookup`] and [`Store::try_lookup`]: `None` only with `try_only`.
    fn find(&self, inner: &mut Inner, q: &Query<'_>, try_only: bool) -> Option<Result<Option<Account>, StoreError>> {
        // a replaced or vanished file first (at most once a second): it drops the connection
        // and the rows
        if let Err(cause) = self.refresh(inner) {
            self.mark_broken(inner, &cause);
            return Some(Err(self.err(cause)));
        }
        let counter = self.rows_counter(inner);
        if counter.is_some() {
            if let Some(row) = inner.rows.table.get(q.user) {
                return Some(Ok(row));
            }
        }
        let r = self.find_in_db(inner, q, try_only);
        if let (Some(c), Some(Ok(row))) = (counter, &r) {
            if inner.rows.counter == Some(c) {
                // full, in rows or in bytes (a row is kept under the name the client sent, an
                // unknown one too: up to 4 KiB of it)
                let table = &mut inner.rows.table;
                if table.len() >= self.cache_rows || table.bytes() >= self.cache_rows.saturating_mul(rows::ROW_BYTES) {
                    table.clear();
                }
                inner.rows.table.insert(q.user, row);
            }
        }
        r
    }

    fn find_in_db(
        &self,
        inner: &mut Inner,
        q: &Query<'_>,
        try_only: bool,
    ) -> Option<Result<Option<Account>, StoreError>> {
        let found = match self.lookup_inner(inner, q, try_only) {
            Ok(found) => found,
            Err(Failure::WouldWait) => return None,
            Err(Failure::Broken(cause)) => {
                self.mark_broken(inner, &cause);
                return Some(Err(self.err(cause)));
            }
        };
        if inner.watch.recover() {
            self.events.push(NoticeLevel::Info, format!("{}: usable again", self.path.display()));
        }
        let user = || protocol::printable(q.user.as_bytes(), 64);
        Some(match found {
            None => Ok(None),
            Some((_, true)) => Err(self.err(format!("query returned more than one row for user \"{}\"", user()))),
            Some((Ok(mut a), false)) => {
                if a.name.is_empty() {
                    a.name = q.user.to_string();
                }
                Ok(Some(a))
            }
            Some((Err(e), false)) => Err(self.err(format!("row for user \"{}\": {}", user(), escape_controls(&e)))),
        })
    }
}

impl Store for SqliteStore {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        let mut inner = lock(&self.inner);
        if let Some(open) = inner.conn.as_ref() {
            // (a try on the event loop that did not finish, a panic, left its deadline)
            open.budget.set(None);
        }
        self.find(&mut inner, q, false).unwrap_or_else(|| Err(self.err("lookup did not run")))
    }

    /// Answers only when nothing has to wait: the connection is free (no other thread in a
    /// lookup), open, its timing template read, and the database not locked by a writer
    /// (busy timeout 0 for this attempt). Otherwise `None`: ask [`Store::lookup`] on the pool.
    fn try_lookup(&self, q: &Query<'_>) -> Option<Result<Option<Account>, StoreError>> {
        let mut inner = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let open = inner.conn.as_ref()?;
        if open.conn.busy_timeout(Duration::ZERO).is_err() {
            return None;
        }
        // a slow query (a full scan) is interrupted and asked again on the pool
        open.budget.set(Some(EVENT_LOOP_BUDGET));
        let r = self.find(&mut inner, q, true);
        if let Some(open) = inner.conn.as_ref() {
            open.budget.set(None);
            if let Err(e) = open.conn.busy_timeout(self.busy_timeout) {
                let cause = format!("busy timeout: {e}");
                self.mark_broken(&mut inner, &cause);
            }
        }
        r
    }

    fn take_notices(&self) -> Vec<StoreNotice> {
        self.events.take()
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn scope(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(&self.scope)
    }

    fn may_block(&self) -> bool {
        true
    }

    /// Read when a worker opens the database and whenever its file changed (on the thread
    /// pool, with the lookup); `None` before the first lookup.
    fn timing_template(&self) -> Option<String> {
        self.shared_timing_template().map(|t| t.to_string())
    }

    fn shared_timing_template(&self) -> Option<std::sync::Arc<str>> {
        lock(&self.template).1.clone()
    }

    /// [`ACCOUNTS_QUERY`] on a connection of its own (a long walk does not hold the lookups'
    /// connection).
    fn accounts(&self, each: &mut dyn FnMut(&str) -> bool) -> Result<(), StoreError> {
        check_regular(&self.path).map_err(|e| self.err(format!("listing the accounts: {e}")))?;
        let mut walk = || walk_names(&open_read_only(&self.path, self.busy_timeout)?, ACCOUNTS_QUERY, each);
        walk().map_err(|e| self.err(format!("listing the accounts: {e}")))
    }
}

/// Runs `sql` and hands each row's first column (text, UTF-8) to `each` until it says stop.
pub(crate) fn walk_names(conn: &Connection, sql: &str, each: &mut dyn FnMut(&str) -> bool) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if let ValueRef::Text(t) = row.get_ref(0)? {
            if let Ok(name) = std::str::from_utf8(t) {
                if !each(name) {
                    break;
                }
            }
        }
    }
    Ok(())
}

mod rows;

#[cfg(test)]
mod tests;
