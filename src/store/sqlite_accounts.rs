//! `mail_auth_sqlite_accounts_query`: a SQLite store whose account list (`Store::accounts`,
//! Dovecot's userdb iterate through `mail_auth_json`) comes from the operator's query instead
//! of `SELECT name FROM users`. Everything else is the wrapped store's.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::{Account, Query, Store, StoreError, StoreNotice};

/// How long a listing waits for a database locked by a writer.
const BUSY: Duration = Duration::from_millis(500);

fn open(path: &Path) -> rusqlite::Result<Connection> {
    crate::store::sqlite::open_read_only(path, BUSY)
}

/// Checks the query at configuration time (`nginx -t`): it must prepare, take no parameter
/// and return one column. `Ok(Some(warning))`: the database does not exist yet, or a writer
/// holds it locked.
pub fn check(path: &str, sql: &str) -> Result<Option<String>, String> {
    if sql.trim().is_empty() {
        return Err("empty query".into());
    }
    if !Path::new(path).exists() {
        return Ok(Some("database does not exist (yet); the accounts query will be checked when it is used".into()));
    }
    let conn = open(Path::new(path)).map_err(|e| format!("cannot open read-only: {e}"))?;
    let stmt = match conn.prepare(sql) {
        // a writer's transaction (an import) is not a configuration error: checked when used
        Err(e) if crate::store::sqlite::is_busy(&e) => return Ok(Some(crate::store::sqlite::LOCKED_AT_CHECK.into())),
        r => r.map_err(|e| format!("invalid accounts query: {e}"))?,
    };
    if stmt.parameter_count() != 0 {
        return Err("the accounts query takes no parameters".into());
    }
    if stmt.column_count() != 1 {
        return Err("the accounts query must return one column (the account names)".into());
    }
    Ok(None)
}

/// The wrapped store, listing its accounts with `sql` on the database at `path`.
pub struct ListedBy {
    inner: Arc<dyn Store>,
    path: PathBuf,
    sql: String,
}

impl ListedBy {
    pub fn new(inner: Arc<dyn Store>, path: &str, sql: &str) -> ListedBy {
        ListedBy { inner, path: PathBuf::from(path), sql: sql.to_string() }
    }
}

impl Store for ListedBy {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        self.inner.lookup(q)
    }

    fn take_notices(&self) -> Vec<StoreNotice> {
        self.inner.take_notices()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// The wrapped store's: the accounts query only lists names, it decides no login.
    fn scope(&self) -> std::borrow::Cow<'_, str> {
        self.inner.scope()
    }

    fn timing_template(&self) -> Option<String> {
        self.inner.timing_template()
    }

    fn may_block(&self) -> bool {
        self.inner.may_block()
    }

    fn try_lookup(&self, q: &Query<'_>) -> Option<Result<Option<Account>, StoreError>> {
        self.inner.try_lookup(q)
    }

    fn accounts(&self, each: &mut dyn FnMut(&str) -> bool) -> Result<(), StoreError> {
        let failed = |e: String| StoreError { source: self.describe(), cause: format!("listing the accounts: {e}") };
        // as the store's own listing: SQLite would wait for ever opening a FIFO put at the path
        crate::store::sqlite::check_regular(&self.path).map_err(failed)?;
        let mut walk = || crate::store::sqlite::walk_names(&open(&self.path)?, &self.sql, each);
        walk().map_err(|e| failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::testutil::TempDir;

    #[test]
    fn the_operators_query_lists_the_accounts() {
        let d = TempDir::new("sqlacc");
        let db = d.join("m.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE mailbox (login TEXT, pw TEXT, active INTEGER);
             INSERT INTO mailbox VALUES ('a@x', '{PLAIN}a', 1), ('b@x', '{PLAIN}b', 0);",
        )
        .unwrap();
        drop(c);
        let p = db.to_str().unwrap();
        let sql = "SELECT login FROM mailbox WHERE active = 1";
        assert_eq!(check(p, sql), Ok(None));
        assert!(check(p, "SELECT login, pw FROM mailbox").is_err());
        assert!(check(p, "SELECT login FROM mailbox WHERE login = :user").is_err());
        assert!(check(p, "SELECT nope FROM").is_err());
        let inner =
            SqliteStore::new(p, "SELECT login AS name, pw AS password FROM mailbox WHERE login = :user").unwrap();
        let scope = inner.scope().into_owned();
        let s = ListedBy::new(Arc::new(inner), p, sql);
        assert_eq!(s.scope(), scope, "the store's scope (its query), not only its description");
        let mut names = Vec::new();
        s.accounts(&mut |n| {
            names.push(n.to_string());
            true
        })
        .unwrap();
        assert_eq!(names, ["a@x"]);
        assert!(s.may_block());
    }
}
