#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Instant;

use super::*;
use crate::protocol::{Method, Protocol};
use crate::testutil::TempDir;

const SCHEMA: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/schema.sql"));

fn tmpdir() -> TempDir {
    TempDir::new("sqlite")
}

fn make_db(path: &Path, rows: &[&str]) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(SCHEMA).unwrap();
    for r in rows {
        c.execute_batch(r).unwrap();
    }
}

fn q(user: &str) -> Query<'_> {
    Query {
        user,
        protocol: Protocol::Imap,
        method: Method::Plain,
        client_ip: Some("127.0.0.1".parse::<IpAddr>().unwrap()),
        password: None,
    }
}

fn store(path: &Path) -> SqliteStore {
    SqliteStore::new(path.to_str().unwrap(), DEFAULT_QUERY).unwrap().with_check_interval(Duration::ZERO)
}

#[test]
fn maps_the_default_schema() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &[
        "INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')",
        "INSERT INTO users(name, password, enabled, protocols, networks, server, port, backend_user, backend_pass, wait) \
         VALUES ('bob', '{PLAIN}b', 0, 'imap, pop3', '10.0.0.0/8 ::1', '127.0.0.2', 1143, 'bob@real', 'master*pw', 7)",
    ]);
    let s = store(&db);
    let a = s.lookup(&q("alice")).unwrap().unwrap();
    assert_eq!(a.password, "{PLAIN}a");
    assert!(a.enabled);
    assert_eq!((a.protocols.clone(), a.networks.clone(), a.server.clone(), a.port), (None, None, None, None));
    let b = s.lookup(&q("bob")).unwrap().unwrap();
    assert!(!b.enabled);
    assert_eq!(b.protocols, Some(vec![Protocol::Imap, Protocol::Pop3]));
    assert_eq!(b.networks.as_ref().map(|n| n.len()), Some(2));
    assert_eq!(b.server.as_deref(), Some("127.0.0.2"));
    assert_eq!(b.port, Some(1143));
    assert_eq!(b.backend_user.as_deref(), Some("bob@real"));
    assert_eq!(b.backend_pass.as_deref(), Some("master*pw"));
    assert_eq!(b.wait, Some(7));
    assert_eq!(s.lookup(&q("carol")).unwrap(), None);
    assert!(s.may_block());
}

#[test]
fn map_row_values() {
    let row = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    };
    let a = map_row(&row(&[("password", None), ("enabled", Some("yes")), ("x_unknown", Some("kept"))])).unwrap();
    assert_eq!(a.password, NO_PASSWORD, "NULL password never verifies");
    assert!(crate::scheme::verify(&a.password, b"").is_err());
    assert!(a.enabled);
    assert_eq!(a.extra, vec![("x_unknown".to_string(), "kept".to_string())]);
    assert!(!map_row(&row(&[("password", Some("x")), ("enabled", Some("false"))])).unwrap().enabled);
    for bad in [
        ("enabled", "maybe"),
        ("protocols", "imap,lmtp"),
        ("networks", "10.0.0.0/99"),
        ("server", "mail.example.org"),
        ("port", "0"),
        ("port", "70000"),
        ("wait", "-1"),
        ("wait", "86401"),
        ("client_cert", "sometimes"),
    ] {
        assert!(map_row(&row(&[("password", Some("x")), (bad.0, Some(bad.1))])).is_err(), "{bad:?}");
    }
    assert!(map_row(&row(&[("enabled", Some("1"))])).is_err(), "no password column");
    // Dovecot's fields, as its password_query returns them: refusals whatever the value
    for f in ["nologin", "fail", "noauthenticate"] {
        for v in ["Y", "0", ""] {
            assert!(!map_row(&row(&[("password", Some("x")), (f, Some(v))])).unwrap().enabled, "{f}={v:?}");
        }
        assert!(map_row(&row(&[("password", Some("x")), (f, None)])).unwrap().enabled, "{f} NULL: not returned");
    }
    // a refusal is not undone by an `enabled` after it (a Dovecot query with `active AS enabled`
    // appended): before, the last of the two won and the locked account logged in
    for f in ["nologin", "fail", "noauthenticate"] {
        let cols = [("password", Some("x")), (f, Some("Y")), ("enabled", Some("1"))];
        assert!(!map_row(&row(&cols)).unwrap().enabled, "{f} then enabled=1");
    }
    let cols = [("password", Some("x")), ("enabled", Some("0")), ("enabled", Some("1"))];
    assert!(!map_row(&row(&cols)).unwrap().enabled, "enabled twice: either refuses");
    // a restriction or the password given twice is an unusable row, not the last one taken
    for (a, b) in [
        (("networks", Some("10.0.0.0/8")), ("allow_nets", Some("0.0.0.0/0"))),
        (("networks", Some("10.0.0.0/8")), ("networks", None)),
        (("protocols", Some("pop3")), ("protocols", Some("imap"))),
        (("allow_real_nets", Some("10.0.0.0/8")), ("allow_real_nets", Some("::/0"))),
        (("app_only", Some("all")), ("app_only", Some(""))),
        (("password", Some("{PLAIN}y")), ("password", Some("{PLAIN}z"))),
    ] {
        let cols = if a.0 == "password" { vec![a, b] } else { vec![("password", Some("x")), a, b] };
        let e = map_row(&row(&cols)).unwrap_err();
        assert!(e.contains("twice"), "{a:?} {b:?}: {e}");
    }
    let a = map_row(&row(&[
        ("password", Some("x")),
        ("allow_nets", Some("10.0.0.0/8")),
        ("allow_real_nets", Some("192.0.2.0/24")),
        ("delay_until", Some("1700000000")),
    ]))
    .unwrap();
    assert_eq!((a.networks.map(|n| n.len()), a.real_networks.map(|n| n.len())), (Some(1), Some(1)));
    assert_eq!(a.delay_until, Some(1_700_000_000));
    for bad in [("allow_real_nets", "somewhere"), ("allow_nets", "10.0.0.0/99"), ("delay_until", "later")] {
        assert!(map_row(&row(&[("password", Some("x")), (bad.0, Some(bad.1))])).is_err(), "{bad:?}");
    }
    assert_eq!(map_row(&row(&[("password", Some(""))])).unwrap().password, NO_PASSWORD, "'' never verifies");
    let a = map_row(&row(&[
        ("password", Some("{PLAIN}x")),
        ("server", Some("")),
        ("user", Some("")),
        ("backend_pass", Some("")),
        ("enabled", None),
        ("protocols", None),
        ("networks", None),
        ("port", None),
        ("wait", None),
        ("client_cert", Some("")),
    ]))
    .unwrap();
    assert_eq!(a, Account { password: "{PLAIN}x".into(), enabled: true, ..Account::default() }, "NULL/'' = not set");
    let a = map_row(&row(&[
        ("password", Some("{PLAIN}x")),
        ("enabled", Some("No")),
        ("protocols", Some("smtp")),
        ("networks", Some("")),
        ("server", Some("::1")),
        ("port", Some("25")),
        ("wait", Some("0")),
    ]))
    .unwrap();
    assert!(!a.enabled);
    assert_eq!(a.protocols, Some(vec![Protocol::Smtp]));
    assert_eq!(a.networks, Some(vec![]), "'' = no network allowed (fails closed)");
    assert_eq!((a.server.as_deref(), a.port, a.wait), (Some("::1"), Some(25), Some(0)));
    let a = map_row(&row(&[("password", Some("x")), ("protocols", Some("IMAP pop3,,smtp"))])).unwrap();
    assert_eq!(a.protocols, Some(vec![Protocol::Imap, Protocol::Pop3, Protocol::Smtp]));
    for (v, required) in [(Some("required"), true), (Some(" YES "), true), (Some("optional"), false), (None, false)] {
        let a = map_row(&row(&[("password", Some("x")), ("client_cert", v)])).unwrap();
        assert_eq!(a.require_client_cert, required, "{v:?}");
    }
}

/// Found by fuzz/ (sqlite_row): a bad value was quoted raw in the reason, which nginx logs, so
/// a value with CR/LF/NUL split or cut the error-log line.
#[test]
fn map_row_reasons_are_one_log_line() {
    for (col, v) in [
        ("enabled", "yes\r\n2026/01/01 [alert] forged"),
        ("protocols", "imap\nsmtp"),
        ("networks", "10.0.0.0/8\r\n\0"),
        ("server", "host\u{1b}[2J"),
        ("port", "1\n2"),
        ("wait", "\0"),
    ] {
        let e = map_row(&[("password".into(), Some("x".into())), (col.into(), Some(v.into()))]).unwrap_err();
        assert!(!e.chars().any(char::is_control), "{col}: {e:?}");
        assert!(e.starts_with(col), "{e}");
    }
    let e = map_row(&[("password".into(), Some("x".into())), ("port".into(), Some("8\n9".into()))]).unwrap_err();
    assert_eq!(e, "port: \"8\\n9\" is not 1..65535");
}

#[test]
fn sql_injection_in_user_names_does_nothing() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let s = store(&db);
    for evil in ["' OR 1=1 --", "x'; DROP TABLE users; --", "alice' --", "%", "*"] {
        assert_eq!(s.lookup(&q(evil)).unwrap(), None, "{evil}");
    }
    assert!(s.lookup(&q("alice")).unwrap().is_some(), "table intact");
}

#[test]
fn check_query_errors() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &[]);
    let p = db.to_str().unwrap();
    assert_eq!(SqliteStore::check_query(p, DEFAULT_QUERY), Ok(None));
    let e = SqliteStore::check_query(p, "SELEC password FROM users WHERE name = :user").unwrap_err();
    assert!(e.contains("syntax error"), "{e}");
    let e = SqliteStore::check_query(p, "SELECT name FROM users WHERE name = :user").unwrap_err();
    assert!(e.contains("does not return a \"password\" column"), "{e}");
    let e = SqliteStore::check_query(p, "SELECT password FROM users WHERE name = :login").unwrap_err();
    assert!(e.contains("unknown parameter \":login\""), "{e}");
    // nginx mail sends no local address: there is no :local_ip to bind
    let sql = "SELECT password FROM users WHERE name = :user AND :local_ip IS NULL";
    let e = SqliteStore::check_query(p, sql).unwrap_err();
    assert_eq!(e, "invalid query: unknown parameter \":local_ip\" (known: :user, :protocol, :client_ip, :method)");
    let e = SqliteStore::check_query(p, "SELECT password FROM users WHERE name = ?").unwrap_err();
    assert!(e.contains("positional"), "{e}");
    let e = SqliteStore::check_query(p, "SELECT password FROM nosuchtable WHERE name = :user").unwrap_err();
    assert!(e.contains("no such table"), "{e}");
    assert!(SqliteStore::check_query(
        p,
        "SELECT password, server FROM users WHERE name = :user AND (:protocol = 'imap' OR :client_ip LIKE '127.%')"
    )
    .unwrap()
    .is_none());
    let w = SqliteStore::check_query(d.join("missing.db").to_str().unwrap(), DEFAULT_QUERY).unwrap();
    assert!(w.is_some(), "missing database is a warning at config time");
}

/// A database locked by a writer (an import holding its transaction) when nginx reads its
/// configuration: a warning, as a missing one, not an error that stops nginx from starting or
/// makes a reload fail (lookups meanwhile are temporary failures, and work once it commits).
#[test]
fn a_locked_database_is_a_warning_at_configuration_time() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &[]);
    let p = db.to_str().unwrap();
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE; INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a');").unwrap();
    let w = SqliteStore::check_query(p, DEFAULT_QUERY);
    assert!(matches!(&w, Ok(Some(m)) if m.contains("locked")), "{w:?}");
    let w = SqliteStore::check_app_query(p, DEFAULT_APP_QUERY);
    assert!(matches!(&w, Ok(Some(m)) if m.contains("locked")), "{w:?}");
    writer.execute_batch("COMMIT").unwrap();
    assert_eq!(SqliteStore::check_query(p, DEFAULT_QUERY), Ok(None));
    assert_eq!(SqliteStore::check_app_query(p, DEFAULT_APP_QUERY), Ok(None));
}

#[test]
fn missing_then_renamed_into_place_then_corrupt() {
    let d = tmpdir();
    let db = d.join("u.db");
    let s = store(&db);
    let e = s.lookup(&q("alice")).unwrap_err();
    assert!(e.cause.contains("cannot stat"), "{e}");
    assert!(e.to_string().contains(db.to_str().unwrap()), "names the file: {e}");
    assert!(s.lookup(&q("alice")).is_err(), "still missing");
    assert!(!db.exists(), "a lookup never creates the database");
    assert!(s.take_notices().iter().any(|n| n.level == NoticeLevel::Error));

    let tmp = d.join("u.db.new");
    make_db(&tmp, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    std::fs::rename(&tmp, &db).unwrap();
    assert!(s.lookup(&q("alice")).unwrap().is_some(), "picked up after rename");
    assert!(s.take_notices().iter().any(|n| n.message.contains("usable again")));
    let g = s.generation();

    // replaced by a new database with another password: noticed without any reload
    make_db(&tmp, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}changed')"]);
    std::fs::rename(&tmp, &db).unwrap();
    assert_eq!(s.lookup(&q("alice")).unwrap().unwrap().password, "{PLAIN}changed");
    assert!(s.generation() > g, "generation bumped on replacement");

    std::fs::write(&tmp, b"this is not a database, just garbage bytes of some length......").unwrap();
    std::fs::rename(&tmp, &db).unwrap();
    let e = s.lookup(&q("alice")).unwrap_err();
    assert!(e.cause.contains("not a database") || e.cause.contains("file is not a database"), "{e}");
}

#[test]
fn locked_database_fails_fast_then_recovers() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let s = store(&db);
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE; UPDATE users SET password = '{PLAIN}b';").unwrap();
    let t0 = Instant::now();
    let e = s.lookup(&q("alice")).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1), "locked: fails fast ({:?})", t0.elapsed());
    assert!(e.cause.contains("locked") || e.cause.contains("busy"), "{e}");
    writer.execute_batch("COMMIT").unwrap();
    assert_eq!(s.lookup(&q("alice")).unwrap().unwrap().password, "{PLAIN}b");
}

#[test]
fn lookups_write_nothing() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let before: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    let s = store(&db);
    for _ in 0..5 {
        s.lookup(&q("alice")).unwrap();
    }
    let after: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "no journal/WAL files created");
}

#[test]
fn bad_row_is_an_error_for_that_user_only() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(
        &db,
        &[
            "INSERT INTO users(name, password, port) VALUES ('bad', '{PLAIN}x', 0)",
            "INSERT INTO users(name, password) VALUES ('good', '{PLAIN}x')",
        ],
    );
    let s = store(&db);
    let e = s.lookup(&q("bad")).unwrap_err();
    assert!(e.cause.contains("port"), "{e}");
    assert!(s.lookup(&q("good")).unwrap().is_some());
}

#[test]
fn more_than_one_row_fails_closed() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(
        &db,
        &[
            "INSERT INTO users(name, password, backend_user) VALUES ('alice', '{PLAIN}a', 'shared')",
            "INSERT INTO users(name, password, backend_user) VALUES ('bob', '{PLAIN}b', 'shared')",
        ],
    );
    let by_alias = "SELECT password FROM users WHERE name = :user OR backend_user = :user";
    let s = SqliteStore::new(db.to_str().unwrap(), by_alias).unwrap().with_check_interval(Duration::ZERO);
    let e = s.lookup(&q("shared")).unwrap_err();
    assert!(e.cause.contains("more than one row"), "{e}");
    assert!(s.lookup(&q("alice")).unwrap().is_some(), "other users unaffected");
    let limited = format!("{by_alias} ORDER BY name LIMIT 1");
    let s = SqliteStore::new(db.to_str().unwrap(), &limited).unwrap();
    assert_eq!(s.lookup(&q("shared")).unwrap().unwrap().password, "{PLAIN}a");
}

#[test]
fn all_parameters_are_bound() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let sql = "SELECT password, :protocol AS p, :method AS m, :client_ip AS c \
               FROM users WHERE name = :user";
    assert_eq!(SqliteStore::check_query(db.to_str().unwrap(), sql), Ok(None));
    let s = SqliteStore::new(db.to_str().unwrap(), sql).unwrap();
    let mut query = q("alice");
    query.protocol = Protocol::Pop3;
    query.client_ip = Some("::1".parse().unwrap());
    let a = s.lookup(&query).unwrap().unwrap();
    let get = |k: &str| a.extra.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("p").as_deref(), Some("pop3"));
    assert_eq!(get("m").as_deref(), Some(Method::Plain.as_str()));
    assert_eq!(get("c").as_deref(), Some("::1"));
    // a policy written in SQL: only from loopback
    let sql = "SELECT password FROM users WHERE name = :user AND :client_ip IN ('127.0.0.1', '::1')";
    let s = SqliteStore::new(db.to_str().unwrap(), sql).unwrap();
    assert!(s.lookup(&query).unwrap().is_some());
    query.client_ip = None;
    assert!(s.lookup(&query).unwrap().is_none());
}

#[test]
fn busy_timeout_is_configurable() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let s = store(&db).with_busy_timeout(Duration::from_millis(400));
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE; UPDATE users SET password = '{PLAIN}b';").unwrap();
    let t0 = Instant::now();
    assert!(s.lookup(&q("alice")).is_err());
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "{took:?}");
    // released while a lookup waits: the lookup succeeds
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        writer.execute_batch("COMMIT").unwrap();
    });
    assert_eq!(s.lookup(&q("alice")).unwrap().unwrap().password, "{PLAIN}b");
    t.join().unwrap();
}

#[test]
fn wal_database_is_read_with_a_warning() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["PRAGMA journal_mode=WAL", "INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    assert!(is_wal(&std::fs::File::open(&db).unwrap()));
    let s = store(&db);
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    let n = s.take_notices();
    assert!(n.iter().any(|n| n.level == NoticeLevel::Warn && n.message.contains("WAL")), "{n:?}");
    // what SQLite does (documented in the module): it made the -wal/-shm files itself
    assert!(d.join("u.db-shm").exists());
    // a rollback-journal database (the schema's default) is not WAL
    let db2 = d.join("v.db");
    make_db(&db2, &[]);
    assert!(!is_wal(&std::fs::File::open(&db2).unwrap()));
}

#[test]
fn account_name_from_the_name_column_else_the_user_asked_for() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('Alice', '{PLAIN}a')"]);
    let s = store(&db);
    assert_eq!(s.lookup(&q("Alice")).unwrap().unwrap().name, "Alice", "default query returns name");
    assert_eq!(s.lookup(&q("alice")).unwrap(), None);
    // every spelling of one account names the same account
    let nocase = "SELECT name, password FROM users WHERE name = :user COLLATE NOCASE";
    let s = SqliteStore::new(db.to_str().unwrap(), nocase).unwrap();
    for spelling in ["alice", "ALICE", "aLiCe", "Alice"] {
        assert_eq!(s.lookup(&q(spelling)).unwrap().unwrap().name, "Alice", "{spelling}");
    }
    // an old query without a name column: the user asked for
    let old = "SELECT password FROM users WHERE name = :user COLLATE NOCASE";
    let s = SqliteStore::new(db.to_str().unwrap(), old).unwrap();
    let a = s.lookup(&q("aLiCe")).unwrap().unwrap();
    assert_eq!(a.name, "aLiCe");
    assert!(a.extra.is_empty(), "{:?}", a.extra);
    // NULL or '' name: the user asked for
    let null = "SELECT NULLIF(name, name) AS name, password FROM users WHERE name = :user";
    let s = SqliteStore::new(db.to_str().unwrap(), null).unwrap();
    assert_eq!(s.lookup(&q("Alice")).unwrap().unwrap().name, "Alice");
}

#[test]
fn timing_template_is_the_slowest_password_of_the_users_table() {
    let bcrypt_10 = "$2y$10$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu";
    let bcrypt_05 = "$2y$05$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu";
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(
        &db,
        &[
            "INSERT INTO users(name, password) VALUES ('a', '{PLAIN}a')",
            &format!("INSERT INTO users(name, password) VALUES ('b', '{bcrypt_05}')"),
            &format!("INSERT INTO users(name, password) VALUES ('c', '{{BLF-CRYPT}}{bcrypt_10}')"),
            "INSERT INTO users(name, password) VALUES ('d', '$1$JIniQ6EM$UPKqJ6jKOfSQjZ8KcRYUM/')",
            "INSERT INTO users(name, password) VALUES ('e', '{NOSUCH}x')",
        ],
    );
    let s = store(&db);
    assert_eq!(s.timing_template(), None, "read by the worker, with its first lookup");
    assert!(s.lookup(&q("nobody")).unwrap().is_none());
    assert_eq!(s.timing_template(), Some(format!("{{BLF-CRYPT}}{bcrypt_10}")));

    // replaced: read again
    let tmp = d.join("u.db.new");
    make_db(&tmp, &[&format!("INSERT INTO users(name, password) VALUES ('b', '{bcrypt_05}')")]);
    std::fs::rename(&tmp, &db).unwrap();
    assert!(s.lookup(&q("b")).unwrap().is_some());
    assert_eq!(s.timing_template().as_deref(), Some(bcrypt_05));

    // another schema: not known
    let other = d.join("o.db");
    let c = Connection::open(&other).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE accounts(login TEXT, hash TEXT); \
         INSERT INTO accounts VALUES ('x', '{bcrypt_10}');"
    ))
    .unwrap();
    let s =
        SqliteStore::new(other.to_str().unwrap(), "SELECT hash AS password FROM accounts WHERE login = :user").unwrap();
    assert!(s.lookup(&q("x")).unwrap().is_some());
    assert_eq!(s.timing_template(), None);
}

#[test]
fn try_lookup_answers_when_nothing_waits() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    // (no rows kept: this is about SQLite's own locking)
    let s = store(&db).with_busy_timeout(Duration::from_millis(400)).with_cache_rows(0);
    assert!(s.try_lookup(&q("alice")).is_none(), "not open yet: opening (and the template scan) would wait");
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    let a = s.try_lookup(&q("alice")).expect("open, unlocked: answered").unwrap().unwrap();
    assert_eq!(a.password, "{PLAIN}a");
    assert_eq!(s.try_lookup(&q("carol")).expect("answered").unwrap(), None);

    // a writer holds the database: None at once (no busy wait), and no error logged
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE; UPDATE users SET password = '{PLAIN}b';").unwrap();
    let t0 = Instant::now();
    assert!(s.try_lookup(&q("alice")).is_none(), "locked by a writer: would wait");
    assert!(t0.elapsed() < Duration::from_millis(200), "did not wait for the busy timeout: {:?}", t0.elapsed());
    assert!(s.take_notices().is_empty(), "a lock is not a broken store");
    // the normal lookup still waits its busy timeout (restored after the attempt)
    let t0 = Instant::now();
    assert!(s.lookup(&q("alice")).is_err());
    assert!(t0.elapsed() >= Duration::from_millis(350), "busy timeout restored: {:?}", t0.elapsed());
    writer.execute_batch("COMMIT").unwrap();
    // the change is seen at once, by both
    assert_eq!(s.lookup(&q("alice")).unwrap().unwrap().password, "{PLAIN}b");
    assert_eq!(s.try_lookup(&q("alice")).unwrap().unwrap().unwrap().password, "{PLAIN}b");
}

#[test]
fn try_lookup_does_not_wait_for_another_thread() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let s = store(&db);
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    let held = s.inner.lock().unwrap();
    assert!(s.try_lookup(&q("alice")).is_none(), "the connection is busy in another lookup");
    drop(held);
    assert!(s.try_lookup(&q("alice")).unwrap().unwrap().is_some());
}

#[test]
fn try_lookup_reports_broken_stores_and_unknown_columns_like_lookup() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password, port) VALUES ('alice', '{PLAIN}a', 0)"]);
    let s = store(&db);
    let e = s.lookup(&q("alice")).unwrap_err();
    let e2 = s.try_lookup(&q("alice")).expect("answered").unwrap_err();
    assert_eq!(e, e2);
    assert!(e.cause.contains("port"), "{e}");
}

#[test]
fn statement_shape_is_checked_once_and_parameters_bound_by_name() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let c = Connection::open(&db).unwrap();
    let stmt = c.prepare("SELECT password AS PassWord, 1 AS X FROM users WHERE name = :user AND :method = 'plain' AND :client_ip IS NOT NULL").unwrap();
    let shape = check_statement(&stmt).unwrap();
    assert_eq!(shape.columns, vec!["password".to_string(), "x".to_string()]);
    assert_eq!(shape.params, vec![(1, Param::User), (2, Param::Method), (3, Param::ClientIp)]);
    let mut buf = [0u8; 64];
    assert_eq!(ip_text("::ffff:1.2.3.4".parse().unwrap(), &mut buf), "::ffff:1.2.3.4");
    let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
    assert_eq!(ip_text(long, &mut buf), long.to_string());
}

#[test]
fn accounts_lists_every_name_and_extra_columns_are_kept() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(
        &db,
        &[
            "INSERT INTO users (name, password) VALUES ('alice', '{PLAIN}a')",
            "INSERT INTO users (name, password, enabled) VALUES ('bob', '{PLAIN}b', 0)",
        ],
    );
    let s = store(&db);
    let mut names = Vec::new();
    s.accounts(&mut |n| {
        names.push(n.to_string());
        true
    })
    .unwrap();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    let mut first = 0;
    s.accounts(&mut |_| {
        first += 1;
        false
    })
    .unwrap();
    assert_eq!(first, 1, "false stops the walk");

    let q2 = "SELECT name, password, 'maildir:/m/' || name AS userdb_mail FROM users WHERE name = :user";
    let s2 = SqliteStore::new(db.to_str().unwrap(), q2).unwrap().with_check_interval(Duration::ZERO);
    let a = s2.lookup(&q("alice")).unwrap().unwrap();
    assert_eq!(a.extra, vec![("userdb_mail".to_string(), "maildir:/m/alice".to_string())]);

    let gone = store(&d.join("missing.db"));
    assert!(gone.accounts(&mut |_| true).is_err(), "a missing database is an error, not an empty list");
}

#[test]
fn kept_rows_answer_until_a_writer_changes_the_file() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    // the file's identity is not looked at again for an hour: only the change counter can tell
    let s = SqliteStore::new(db.to_str().unwrap(), DEFAULT_QUERY)
        .unwrap()
        .with_check_interval(Duration::from_secs(3600))
        .with_busy_timeout(Duration::from_millis(400));
    assert_eq!(s.lookup(&q("alice")).unwrap().unwrap().password, "{PLAIN}a");
    assert_eq!(s.lookup(&q("nobody")).unwrap(), None);
    // (the first lookup opened the connection: from then on answers are kept)
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    assert_eq!(lock(&s.inner).rows.table.len(), 2, "both answers kept (an unknown user too)");

    // a writer holding its lock with the change not committed: the kept row (the committed
    // state) answers at once, even without waiting
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE; UPDATE users SET password = '{PLAIN}b';").unwrap();
    let t0 = Instant::now();
    assert_eq!(s.try_lookup(&q("alice")).unwrap().unwrap().unwrap().password, "{PLAIN}a");
    assert!(t0.elapsed() < Duration::from_millis(200));
    writer.execute_batch("COMMIT").unwrap();
    // committed: the next lookup sees it, and the rows were dropped
    assert_eq!(s.lookup(&q("alice")).unwrap().unwrap().password, "{PLAIN}b");
    assert_eq!(lock(&s.inner).rows.table.len(), 1, "rows of the old counter dropped");
    // a user added, and one removed, are seen at once too
    writer.execute_batch("INSERT INTO users(name, password) VALUES ('nobody', '{PLAIN}n')").unwrap();
    assert_eq!(s.lookup(&q("nobody")).unwrap().unwrap().password, "{PLAIN}n");
    writer.execute_batch("DELETE FROM users WHERE name = 'alice'").unwrap();
    assert_eq!(s.lookup(&q("alice")).unwrap(), None);
    // what the admin tool does (a new connection per change, as mail-auth-user)
    drop(writer);
    for pw in ["{PLAIN}1", "{PLAIN}2", "{PLAIN}3"] {
        let w = Connection::open(&db).unwrap();
        w.execute("UPDATE users SET password = ?1 WHERE name = 'nobody'", [pw]).unwrap();
        drop(w);
        assert_eq!(s.lookup(&q("nobody")).unwrap().unwrap().password, pw);
    }
}

#[test]
fn rows_are_bounded_and_not_kept_for_wal_or_other_parameters() {
    let d = tmpdir();
    let db = d.join("u.db");
    let users: Vec<String> =
        (0..10).map(|i| format!("INSERT INTO users(name, password) VALUES ('u{i}', '{{PLAIN}}p')")).collect();
    make_db(&db, &users.iter().map(String::as_str).collect::<Vec<_>>());
    let s = store(&db).with_cache_rows(4);
    for i in 0..10 {
        assert!(s.lookup(&q(&format!("u{i}"))).unwrap().is_some());
        assert!(lock(&s.inner).rows.table.len() <= 4);
    }
    // a query with another parameter than :user: its answers depend on more than the user
    let by_ip = "SELECT name, password FROM users WHERE name = :user AND :client_ip IS NOT NULL";
    let s = SqliteStore::new(db.to_str().unwrap(), by_ip).unwrap().with_check_interval(Duration::ZERO);
    assert!(s.lookup(&q("u1")).unwrap().is_some());
    assert_eq!(lock(&s.inner).rows.table.len(), 0);
    // WAL: commits do not change the counter, so nothing is kept
    let wal = d.join("wal.db");
    make_db(&wal, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    Connection::open(&wal).unwrap().execute_batch("PRAGMA journal_mode=WAL").unwrap();
    let s = store(&wal);
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    assert_eq!(lock(&s.inner).rows.table.len(), 0);
}

/// A lookup SQLite answers slowly (a query no index serves: a full scan) is not run to its end
/// on nginx's event loop: `try_lookup` gives up after its budget and the pool asks again.
#[test]
fn a_slow_query_leaves_the_event_loop_for_the_pool() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(
        &db,
        &["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) \
         INSERT INTO users(name, password) SELECT 'user' || i, '{PLAIN}x' FROM n"],
    );
    let sql = "SELECT name, password FROM users WHERE lower(name) = lower(:user)";
    let s = SqliteStore::new(db.to_str().unwrap(), sql).unwrap().with_check_interval(Duration::from_secs(3600));
    assert!(s.lookup(&q("USER5")).unwrap().is_some(), "opened, found by the pool");
    for user in ["nobody", "USER199999"] {
        let t0 = Instant::now();
        assert!(s.try_lookup(&q(user)).is_none(), "{user}: a full scan is left to the pool");
        assert!(t0.elapsed() < Duration::from_millis(20), "{user}: gave up in {:?}", t0.elapsed());
    }
    // the pool runs it to its end (no budget left over from the try)
    assert_eq!(s.lookup(&q("nobody")).unwrap(), None);
    assert!(s.lookup(&q("USER199999")).unwrap().is_some());
    // a kept row still answers on the event loop, and so does an indexed query
    assert!(s.try_lookup(&q("USER199999")).unwrap().unwrap().is_some());
    let indexed = store(&db).with_check_interval(Duration::from_secs(3600)).with_cache_rows(0);
    assert!(indexed.lookup(&q("user7")).unwrap().is_some());
    assert!(indexed.try_lookup(&q("user8")).unwrap().unwrap().is_some());
}

/// A query whose answer changes with time (an account that expires: `unixepoch()`,
/// `datetime('now')`, `CURRENT_TIMESTAMP` ...) is not answered from kept rows: no writer
/// changes the file when an account expires, so its row would log it in for good.
#[test]
fn no_rows_for_queries_that_depend_on_the_time() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &[
        "ALTER TABLE users ADD COLUMN expires INTEGER",
        "INSERT INTO users(name, password, expires) VALUES ('alice', '{PLAIN}a', unixepoch() + 2)",
        "INSERT INTO app_passwords(user, label, password, created) VALUES ('alice', 'phone', '{PLAIN}p', unixepoch() + 2)",
    ]);
    let queries = [
        "SELECT name, password FROM users WHERE name = :user AND expires > unixepoch()",
        "SELECT name, password FROM users WHERE name = :user AND expires > CAST(strftime('%s', 'now') AS INTEGER)",
        "SELECT name, password FROM users WHERE name = :user AND datetime(expires, 'unixepoch') > CURRENT_TIMESTAMP",
        "SELECT name, password FROM users WHERE name = :user AND expires > CAST(strftime('%s') AS INTEGER)",
    ];
    let stores: Vec<SqliteStore> = queries
        .iter()
        .map(|sql| SqliteStore::new(db.to_str().unwrap(), sql).unwrap().with_check_interval(Duration::from_secs(3600)))
        .collect();
    // an app password that expires (its query's own condition; `created` holds the time here)
    let app = "SELECT label, password FROM app_passwords WHERE user = :user AND CAST(created AS INTEGER) > unixepoch()";
    let with_app = store(&db).with_check_interval(Duration::from_secs(3600)).with_app_query(Some(app));
    for s in &stores {
        assert!(s.lookup(&q("alice")).unwrap().is_some());
        assert!(s.lookup(&q("alice")).unwrap().is_some());
    }
    assert_eq!(with_app.lookup(&q("alice")).unwrap().unwrap().app_passwords.len(), 1);
    assert_eq!(with_app.lookup(&q("alice")).unwrap().unwrap().app_passwords.len(), 1);
    std::thread::sleep(Duration::from_millis(3100));
    for (s, sql) in stores.iter().zip(queries) {
        assert_eq!(s.lookup(&q("alice")).unwrap(), None, "expired, but answered from a kept row: {sql}");
    }
    assert_eq!(with_app.lookup(&q("alice")).unwrap().unwrap().app_passwords.len(), 0, "app password expired");
    // the default query keeps its rows
    let plain = store(&db).with_check_interval(Duration::from_secs(3600));
    assert!(plain.lookup(&q("alice")).unwrap().is_some());
    assert!(plain.lookup(&q("alice")).unwrap().is_some());
    assert_eq!(lock(&plain.inner).rows.table.len(), 1);
}

/// Rows are also kept for unknown users, under the name the client sent (up to
/// `MAX_USER_LEN`, 4 KiB): a client trying long made-up names must not make a worker keep
/// 4 KiB a row (131,072 rows by default: over 500 MiB) where a row is about 100 bytes.
#[test]
fn long_unknown_names_do_not_grow_the_rows_past_their_budget() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let rows = 1000;
    let s = store(&db).with_cache_rows(rows);
    let mut most = 0;
    for i in 0..3 * rows {
        let name = format!("{i:08}{}", "x".repeat(crate::protocol::MAX_USER_LEN - 8));
        assert!(s.lookup(&q(&name)).unwrap().is_none());
        most = most.max(lock(&s.inner).rows.table.heap_bytes());
    }
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    let budget = rows * super::rows::ROW_BYTES;
    // (the arena's capacity may be up to twice what it holds; the slots come on top)
    assert!(most <= 2 * budget + 64 * rows, "{most} bytes kept for {rows} rows (budget {budget})");
}

#[test]
fn app_passwords_from_the_default_app_query() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(
        &db,
        &[
            "INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a'), ('bob', '{PLAIN}b')",
            "INSERT INTO app_passwords(user, label, password, protocols, networks) VALUES \
         ('alice', 'phone', '{PLAIN}p', NULL, NULL), ('alice', 'mailer', '{PLAIN}m', 'smtp', '10.0.0.0/8'), \
         ('alice', 'bad label', '{PLAIN}x', NULL, NULL), ('alice', 'badproto', '{PLAIN}x', 'nntp', NULL)",
        ],
    );
    assert_eq!(SqliteStore::check_app_query(db.to_str().unwrap(), DEFAULT_APP_QUERY), Ok(None));
    let s = store(&db).with_app_query(Some(DEFAULT_APP_QUERY));
    let a = s.lookup(&q("alice")).unwrap().unwrap();
    let labels: Vec<&str> = a.app_passwords.iter().map(|x| x.label.as_str()).collect();
    assert_eq!(labels, ["phone", "mailer"], "in row order; unusable rows skipped");
    assert_eq!(a.app_passwords[1].protocols, Some(vec![Protocol::Smtp]));
    assert_eq!(a.app_passwords[1].networks, Some(vec![Cidr::parse("10.0.0.0/8").unwrap()]));
    assert_eq!(a.app_passwords[0].protocols, None);
    let notices: Vec<String> = s.take_notices().into_iter().map(|n| n.message).collect();
    assert_eq!(notices.iter().filter(|m| m.contains("an app password of \"alice\" skipped")).count(), 2, "{notices:?}");
    assert!(s.lookup(&q("bob")).unwrap().unwrap().app_passwords.is_empty());
    // a revocation (a writer's commit) is seen by the next lookup, rows kept or not
    Connection::open(&db).unwrap().execute_batch("DELETE FROM app_passwords WHERE label = 'phone'").unwrap();
    let a = s.lookup(&q("alice")).unwrap().unwrap();
    assert_eq!(a.app_passwords.iter().map(|x| x.label.as_str()).collect::<Vec<_>>(), ["mailer"]);
    // without the app query: none
    assert!(store(&db).lookup(&q("alice")).unwrap().unwrap().app_passwords.is_empty());
    // at most MAX_APP_PASSWORDS
    let c = Connection::open(&db).unwrap();
    for i in 0..20 {
        c.execute("INSERT INTO app_passwords(user, label, password) VALUES ('bob', ?1, '{PLAIN}x')", [format!("l{i}")])
            .unwrap();
    }
    assert_eq!(s.lookup(&q("bob")).unwrap().unwrap().app_passwords.len(), MAX_APP_PASSWORDS);
}

#[test]
fn app_query_checks() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &[]);
    let p = db.to_str().unwrap();
    assert!(SqliteStore::check_app_query(p, "SELECT label FROM app_passwords WHERE user = :user")
        .unwrap_err()
        .contains("\"password\" column"));
    assert!(SqliteStore::check_app_query(p, "SELECT password FROM app_passwords").unwrap_err().contains("\"label\""));
    assert!(SqliteStore::check_app_query(p, "SELECT label, password FROM app_passwords WHERE user = :protocol")
        .unwrap_err()
        .contains(":user only"));
    assert!(SqliteStore::check_app_query(p, "SELECT label, password FROM nosuchtable")
        .unwrap_err()
        .contains("invalid"));
    assert!(SqliteStore::check_app_query(d.join("none.db").to_str().unwrap(), DEFAULT_APP_QUERY).unwrap().is_some());
    // a database without the table: lookups of accounts fail closed (temporary failure)
    let old = d.join("old.db");
    Connection::open(&old)
        .unwrap()
        .execute_batch("CREATE TABLE users(name TEXT, password TEXT); INSERT INTO users VALUES ('a', '{PLAIN}a')")
        .unwrap();
    let s = SqliteStore::new(old.to_str().unwrap(), "SELECT name, password FROM users WHERE name = :user")
        .unwrap()
        .with_check_interval(Duration::ZERO)
        .with_app_query(Some(DEFAULT_APP_QUERY));
    assert!(s.lookup(&q("a")).is_err());
}

#[test]
fn app_only_column() {
    let row = |v: &str| map_row(&[("password".into(), Some("{PLAIN}x".into())), ("app_only".into(), Some(v.into()))]);
    assert_eq!(row("all").unwrap().app_only, Some(vec![Protocol::Imap, Protocol::Pop3, Protocol::Smtp]));
    assert_eq!(row("imap, smtp").unwrap().app_only, Some(vec![Protocol::Imap, Protocol::Smtp]));
    assert_eq!(row("").unwrap().app_only, None);
    assert!(row("nntp").is_err());
}

#[test]
fn the_lookup_connection_keeps_a_page_cache_of_its_own_size() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(&db, &["INSERT INTO users(name, password) VALUES ('alice', '{PLAIN}a')"]);
    let s = store(&db);
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    let inner = lock(&s.inner);
    let open = inner.conn.as_ref().expect("open after a lookup");
    let size: i64 = open.conn.pragma_query_value(None, "cache_size", |r| r.get(0)).unwrap();
    assert_eq!(size, -PAGE_CACHE_KIB, "SQLite's default is -2000");
}

/// A query with no time word of its own may still depend on the time through a view
/// (`CREATE VIEW active AS ... WHERE expires > unixepoch()`): no rows are kept for it either.
#[test]
fn no_rows_for_a_view_that_depends_on_the_time() {
    let d = tmpdir();
    let db = d.join("u.db");
    make_db(
        &db,
        &[
            "ALTER TABLE users ADD COLUMN expires INTEGER",
            "INSERT INTO users(name, password, expires) VALUES ('alice', '{PLAIN}a', unixepoch() + 2)",
            "CREATE VIEW active AS SELECT name, password FROM users WHERE expires > unixepoch()",
        ],
    );
    let sql = "SELECT name, password FROM active WHERE name = :user";
    let s = SqliteStore::new(db.to_str().unwrap(), sql).unwrap().with_check_interval(Duration::from_secs(3600));
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    assert!(s.lookup(&q("alice")).unwrap().is_some());
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(s.lookup(&q("alice")).unwrap(), None, "expired, but answered from a kept row");
}

/// The scope (trust and cached verdicts are bound to it) is the file and the queries: one file
/// may hold several tenants' accounts, told apart by the query.
#[test]
fn scope_is_the_file_and_the_queries() {
    let q = |t: &str| format!("SELECT password FROM accounts WHERE name = :user AND tenant = '{t}'");
    let scope = |path: &str, sql: &str, app: Option<&str>| {
        SqliteStore::new(path, sql).unwrap().with_app_query(app).scope().into_owned()
    };
    let a = scope("/srv/mail/users.db", &q("a"), None);
    assert!(a.starts_with("sqlite \"/srv/mail/users.db\" #"), "{a}");
    assert_eq!(a, scope("/srv/mail/users.db", &q("a"), None), "stable");
    assert_eq!(a, SqliteStore::new("/srv/mail/users.db", &q("a")).unwrap().scope(), "no app query set: none");
    let app = "SELECT label, password FROM app_passwords WHERE name = :user";
    for other in [
        scope("/srv/mail/users.db", &q("b"), None),
        scope("/srv/mail/other.db", &q("a"), None),
        scope("/srv/mail/users.db", &q("a"), Some(app)),
        scope(
            "/srv/mail/users.db",
            &q("a"),
            Some("SELECT label, password FROM app_passwords WHERE name = :user AND 0"),
        ),
    ] {
        assert_ne!(a, other);
    }
    assert_ne!(scope("/srv/mail/users.db", &q("a"), Some(app)), scope("/srv/mail/users.db", &q("a"), Some("SELECT 1")));
}
