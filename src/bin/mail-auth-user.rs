//! mail-auth-user: add, remove, disable users and set passwords in the stores ngx-mail-auth reads
//! (a SQLite database with the schema of scripts/schema.sql, or an htpasswd / passwd-file).
//!
//! The package's library is an nginx module (cdylib), so this tool includes the one module it
//! shares with it, the password schemes, by path.

#[path = "../scheme/mod.rs"]
#[allow(dead_code)]
mod scheme;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use scheme::HashKind;

const USAGE: &str = "\
usage: mail-auth-user (--sqlite DB | --passwd-file FILE) COMMAND [ARGS] [OPTIONS]

commands:
  init                 create the database schema (SQLite) or an empty file
  add USER             add a user (fails if it exists)
  passwd USER          set a user's password
  del USER             remove a user
  disable USER         refuse a user's logins (SQLite: enabled = 0; passwd-file: the line is
                       commented out as '#disabled# user:...')
  enable USER          undo disable
  list                 list users (name, enabled, scheme)

options:
  --scheme bcrypt|sha512-crypt|ssha512   how to store the password (default bcrypt)
  --cost N             bcrypt cost (default 10)
  --password PW        the password (default: read the first line of standard input)

exit status: 0 done, 1 error, 2 usage";

const DISABLED: &str = "#disabled# ";

#[derive(Debug)]
enum Target {
    Sqlite(PathBuf),
    File(PathBuf),
}

struct Opts {
    target: Target,
    command: String,
    user: Option<String>,
    kind: HashKind,
    password: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut target = None;
    let mut rest = Vec::new();
    let mut scheme_name = "bcrypt".to_string();
    let mut cost = 10u32;
    let mut password = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--sqlite" => target = Some(Target::Sqlite(value("--sqlite")?.into())),
            "--passwd-file" => target = Some(Target::File(value("--passwd-file")?.into())),
            "--scheme" => scheme_name = value("--scheme")?,
            "--cost" => cost = value("--cost")?.parse().map_err(|_| "--cost needs a number".to_string())?,
            "--password" => password = Some(value("--password")?),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => rest.push(a.clone()),
        }
    }
    let kind = match scheme_name.as_str() {
        "bcrypt" => HashKind::Bcrypt { cost },
        "sha512-crypt" => HashKind::Sha512Crypt,
        "ssha512" => HashKind::Ssha512,
        s => return Err(format!("unknown scheme {s}")),
    };
    let target = target.ok_or("one of --sqlite or --passwd-file is required")?;
    let mut rest = rest.into_iter();
    let command = rest.next().ok_or("no command")?;
    let user = rest.next();
    if let Some(extra) = rest.next() {
        return Err(format!("unexpected argument {extra}"));
    }
    let needs_user = !matches!(command.as_str(), "init" | "list");
    if needs_user != user.is_some() {
        return Err(format!("{command}: {}", if needs_user { "a user name is required" } else { "takes no user" }));
    }
    if let Some(u) = &user {
        if u.is_empty() || u.contains([':', '\n', '\r', '\0']) || u.starts_with('#') {
            return Err(format!("invalid user name {u:?}"));
        }
    }
    Ok(Opts { target, command, user, kind, password })
}

fn read_password(opts: &Opts) -> Result<String, String> {
    if let Some(p) = &opts.password {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        return Err("empty password".into());
    }
    Ok(p)
}

fn hash(opts: &Opts) -> Result<String, String> {
    let p = read_password(opts)?;
    scheme::hash_password(opts.kind, p.as_bytes()).map_err(|e| e.to_string())
}

// ---- SQLite ----

fn sqlite(db: &Path, opts: &Opts) -> Result<(), String> {
    let c = rusqlite::Connection::open(db).map_err(|e| format!("{}: {e}", db.display()))?;
    c.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let user = opts.user.as_deref().unwrap_or("");
    let changed = |n: usize| if n == 1 { Ok(()) } else { Err(format!("no user \"{user}\"")) };
    let e = |e: rusqlite::Error| e.to_string();
    match opts.command.as_str() {
        "init" => c.execute_batch(include_str!("../../scripts/schema.sql")).map_err(e),
        "add" => {
            let h = hash(opts)?;
            c.execute("INSERT INTO users(name, password) VALUES (?1, ?2)", (user, &h))
                .map_err(|err| if err.to_string().contains("UNIQUE") { format!("user \"{user}\" exists") } else { err.to_string() })
                .map(|_| ())
        }
        "passwd" => {
            let h = hash(opts)?;
            changed(c.execute("UPDATE users SET password = ?2, updated = datetime('now') WHERE name = ?1", (user, &h)).map_err(e)?)
        }
        "del" => changed(c.execute("DELETE FROM users WHERE name = ?1", [user]).map_err(e)?),
        "disable" | "enable" => {
            let v = i32::from(opts.command == "enable");
            changed(c.execute("UPDATE users SET enabled = ?2, updated = datetime('now') WHERE name = ?1", (user, v)).map_err(e)?)
        }
        "list" => {
            let mut st = c.prepare("SELECT name, enabled, password FROM users ORDER BY name").map_err(e)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
                .map_err(e)?;
            for row in rows {
                let (n, en, pw) = row.map_err(e)?;
                println!("{n}\t{}\t{}", if en != 0 { "enabled" } else { "disabled" }, scheme::scheme_name(&pw));
            }
            Ok(())
        }
        other => Err(format!("unknown command {other}")),
    }
}

// ---- passwd-file ----

/// The user a line belongs to, and whether it is disabled.
fn line_user(line: &str) -> Option<(&str, bool)> {
    let (l, disabled) = match line.strip_prefix(DISABLED) {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    if l.starts_with('#') || l.trim().is_empty() {
        return None;
    }
    l.split_once(':').map(|(u, _)| (u, disabled))
}

/// Applies a command to the lines of a passwd-file; returns the new lines (pure, unit-tested).
pub fn edit_lines(lines: &[String], command: &str, user: &str, new_hash: Option<&str>) -> Result<Vec<String>, String> {
    let pos = lines.iter().position(|l| line_user(l).map(|(u, _)| u) == Some(user));
    let mut out = lines.to_vec();
    match (command, pos) {
        ("add", Some(_)) => return Err(format!("user \"{user}\" exists")),
        ("add", None) => out.push(format!("{user}:{}", new_hash.unwrap_or_default())),
        (_, None) => return Err(format!("no user \"{user}\"")),
        ("passwd", Some(i)) => {
            let (prefix, l) = match out[i].strip_prefix(DISABLED) {
                Some(r) => (DISABLED, r.to_string()),
                None => ("", out[i].clone()),
            };
            // keep Dovecot passwd-file extra fields after the hash
            let rest = l.splitn(3, ':').nth(2).map(|r| format!(":{r}")).unwrap_or_default();
            out[i] = format!("{prefix}{user}:{}{rest}", new_hash.unwrap_or_default());
        }
        ("del", Some(i)) => {
            out.remove(i);
        }
        ("disable", Some(i)) => {
            if !out[i].starts_with(DISABLED) {
                out[i] = format!("{DISABLED}{}", out[i]);
            }
        }
        ("enable", Some(i)) => {
            if let Some(r) = out[i].strip_prefix(DISABLED) {
                out[i] = r.to_string();
            }
        }
        (other, _) => return Err(format!("unknown command {other}")),
    }
    Ok(out)
}

fn passwd_file(path: &Path, opts: &Opts) -> Result<(), String> {
    let read = || -> Result<Vec<String>, String> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(s.lines().map(str::to_string).collect()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    };
    match opts.command.as_str() {
        "init" => {
            if path.exists() {
                return Err(format!("{} exists", path.display()));
            }
            return write_atomically(path, &[]);
        }
        "list" => {
            for l in read()? {
                if let Some((u, disabled)) = line_user(&l) {
                    let hash = l.split(':').nth(1).unwrap_or("");
                    println!("{u}\t{}\t{}", if disabled { "disabled" } else { "enabled" }, scheme::scheme_name(hash));
                }
            }
            return Ok(());
        }
        _ => {}
    }
    let lines = if opts.command == "add" && !path.exists() { Vec::new() } else { read()? };
    let user = opts.user.as_deref().unwrap_or("");
    let h = if matches!(opts.command.as_str(), "add" | "passwd") { Some(hash(opts)?) } else { None };
    let out = edit_lines(&lines, &opts.command, user, h.as_deref())?;
    write_atomically(path, &out)
}

/// Writes the file next to the old one and renames it over: readers (the module re-reading the
/// file) see either the old or the new file, never a half-written one.
fn write_atomically(path: &Path, lines: &[String]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mail-auth-user: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match &opts.target {
        Target::Sqlite(db) => sqlite(db, &opts),
        Target::File(f) => passwd_file(f, &opts),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mail-auth-user: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod edit_tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn add_passwd_del_keep_other_lines_and_extra_fields() {
        let l = lines(&["# comment", "alice:{PLAIN}a:1000:1000::/home/alice::allow_nets=127.0.0.1", "", "bob:$2y$x"]);
        let added = edit_lines(&l, "add", "carol", Some("{PLAIN}c")).unwrap();
        assert_eq!(added.last().unwrap(), "carol:{PLAIN}c");
        assert_eq!(&added[..4], &l[..]);
        assert!(edit_lines(&added, "add", "carol", Some("x")).unwrap_err().contains("exists"));
        let p = edit_lines(&l, "passwd", "alice", Some("{PLAIN}new")).unwrap();
        assert_eq!(p[1], "alice:{PLAIN}new:1000:1000::/home/alice::allow_nets=127.0.0.1");
        let d = edit_lines(&l, "del", "bob", None).unwrap();
        assert_eq!(d, lines(&["# comment", "alice:{PLAIN}a:1000:1000::/home/alice::allow_nets=127.0.0.1", ""]));
        assert!(edit_lines(&l, "del", "nobody", None).unwrap_err().contains("no user"));
    }

    #[test]
    fn disable_and_enable() {
        let l = lines(&["alice:{PLAIN}a", "bob:{PLAIN}b"]);
        let d = edit_lines(&l, "disable", "bob", None).unwrap();
        assert_eq!(d[1], "#disabled# bob:{PLAIN}b");
        assert_eq!(edit_lines(&d, "disable", "bob", None).unwrap(), d, "idempotent");
        let p = edit_lines(&d, "passwd", "bob", Some("{PLAIN}n")).unwrap();
        assert_eq!(p[1], "#disabled# bob:{PLAIN}n", "passwd keeps it disabled");
        assert_eq!(edit_lines(&d, "enable", "bob", None).unwrap(), l);
    }

    #[test]
    fn argument_checks() {
        let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&["--sqlite", "x.db", "add"]).is_err(), "user required");
        assert!(a(&["--sqlite", "x.db", "list", "bob"]).is_err(), "list takes no user");
        assert!(a(&["add", "bob"]).is_err(), "a store is required");
        assert!(a(&["--sqlite", "x.db", "add", "a:b"]).is_err(), "':' in user");
        assert!(a(&["--sqlite", "x.db", "add", "bob", "--scheme", "md4"]).is_err());
        let o = a(&["--passwd-file", "f", "add", "bob", "--scheme", "bcrypt", "--cost", "5", "--password", "pw"]).unwrap();
        assert_eq!(o.kind, HashKind::Bcrypt { cost: 5 });
        assert_eq!(o.password.as_deref(), Some("pw"));
    }
}
