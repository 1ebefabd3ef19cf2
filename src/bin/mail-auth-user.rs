//! mail-auth-user: add, remove, disable users and set passwords in the stores ngx-mail-auth reads
//! (a SQLite database with the schema of scripts/schema.sql, or an htpasswd / passwd-file).
//!
//! The package's library is an nginx module (cdylib), so this tool includes the modules it
//! shares with it, the password schemes and their hex codec, by path.

#![forbid(unsafe_code)]

#[path = "../cidr.rs"]
#[allow(dead_code)]
mod cidr;
#[path = "../hex.rs"]
mod hex;
#[path = "../scheme/mod.rs"]
#[allow(dead_code)]
mod scheme;
#[cfg(test)]
#[path = "../testutil.rs"]
#[allow(dead_code)]
mod testutil;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use scheme::HashKind;

const USAGE: &str = "\
usage: mail-auth-user (--sqlite DB | --passwd-file FILE [--app-passwords FILE]) COMMAND [USER] [OPTIONS]

commands:
  init                 SQLite: create the users table of scripts/schema.sql (the file is created
                       if missing; an existing table is kept). passwd-file: create an empty file.
  add USER             add a user (fails if it exists; a missing passwd-file is created)
  passwd USER          set a user's password (other fields and the disabled state are kept)
  del USER             remove a user
  disable USER         refuse a user's logins. SQLite: enabled = 0. passwd-file: the line is
                       commented out as '#disabled# USER:...' (the module then does not know the
                       user: 'Invalid login or password', logged as unknown-user); 'enable'
                       restores it exactly. (For Dovecot-style files the extra field 'nologin'
                       is also understood by the module; set it by hand if you prefer that.)
  enable USER          undo disable
  list                 list users: name, enabled/disabled, password scheme
  app add USER LABEL [--protocols imap,pop3,smtp] [--networks CIDR,...]
                       add an app password (a per-device credential) to USER: a random secret
                       (28 characters from the OS random generator, 140 bits) is generated,
                       printed once on standard output, and stored hashed ({SSHA512} unless
                       --scheme is given: safe for a secret of that strength, and cheap to try).
                       LABEL names it in the log: 1..64 of letters, digits, . _ - @ +
  app list USER        the user's app passwords: label, protocols, networks, created (no hashes)
  app revoke USER LABEL
                       remove that app password: the next login with it is refused
  (passwd-file: app passwords live in the file given by --app-passwords, the one of
  mail_auth_app_passwords; SQLite: in the app_passwords table, created if missing. 'del'
  removes the user's app passwords too.)

options:
  --scheme bcrypt|sha512-crypt|ssha512   how to store the password (default bcrypt, written $2y$)
  --cost N             bcrypt cost, 4..31 (default 10)
  --password PW        the password (visible to other local users in the process list!)
  --password-stdin     read the password from the first line of standard input (the default)
  --app-passwords FILE passwd-file: the app passwords file (app commands, del)
  --protocols LIST     app add: protocols the app password may be used with (default: all)
  --networks LIST      app add: client networks it may be used from (default: anywhere)
  -h, --help           this text

passwd-files are rewritten atomically (a temporary file in the same directory, then rename):
comments, blank lines, other users and Dovecot extra fields are kept, and so are the file's
mode and, where permitted, its owner and group. A symlink is followed, not replaced. Runs at
once take turns (a lock on the file, and on the app passwords file): no change is lost.
SQLite changes are single statements (the module's readers see before or after).

exit status: 0 done, 1 error (message on stderr), 2 usage";

const DISABLED: &str = "#disabled# ";

#[derive(Debug, Clone, PartialEq)]
enum Target {
    Sqlite(PathBuf),
    File(PathBuf),
}

#[derive(Debug)]
struct Opts {
    target: Target,
    command: String,
    user: Option<String>,
    kind: HashKind,
    password: Option<String>,
    /// `app add|list|revoke`: the subcommand and the label.
    app: Option<(String, Option<String>)>,
    /// `--app-passwords FILE` (passwd-file).
    app_file: Option<PathBuf>,
    /// `--protocols`, `--networks` (app add), checked.
    protocols: Option<String>,
    networks: Option<String>,
}

/// `Err(None)`: help was asked for. `Err(Some(msg))`: a usage error.
fn parse_args(args: &[String]) -> Result<Opts, Option<String>> {
    let mut target = None;
    let mut rest = Vec::new();
    let mut scheme_name = "bcrypt".to_string();
    let mut cost = 10u32;
    let mut password = None;
    let mut from_stdin = false;
    let mut scheme_given = false;
    let (mut app_file, mut protocols, mut networks) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| Some(format!("{name} needs a value")));
        match a.as_str() {
            "--sqlite" => target = Some(Target::Sqlite(value("--sqlite")?.into())),
            "--passwd-file" => target = Some(Target::File(value("--passwd-file")?.into())),
            "--scheme" => {
                scheme_name = value("--scheme")?;
                scheme_given = true;
            }
            "--app-passwords" => app_file = Some(PathBuf::from(value("--app-passwords")?)),
            "--protocols" => protocols = Some(check_protocols(&value("--protocols")?).map_err(Some)?),
            "--networks" => networks = Some(check_networks(&value("--networks")?).map_err(Some)?),
            "--cost" => {
                cost = match value("--cost")?.parse() {
                    Ok(c @ 4..=31) => c,
                    _ => return Err(Some("--cost needs a number from 4 to 31".into())),
                }
            }
            "--password" => password = Some(value("--password")?),
            "--password-stdin" => from_stdin = true,
            "-h" | "--help" => return Err(None),
            s if s.starts_with('-') && s.len() > 1 => return Err(Some(format!("unknown option {s}"))),
            _ => rest.push(a.clone()),
        }
    }
    if from_stdin && password.is_some() {
        return Err(Some("--password and --password-stdin exclude each other".into()));
    }
    let mut rest = rest.into_iter();
    let command = rest.next().ok_or_else(|| Some("no command".to_string()))?;
    if command == "app" && !scheme_given {
        scheme_name = "ssha512".into();
    }
    let kind = match scheme_name.as_str() {
        "bcrypt" => HashKind::Bcrypt { cost },
        "sha512-crypt" => HashKind::Sha512Crypt,
        "ssha512" => HashKind::Ssha512,
        s => return Err(Some(format!("unknown scheme {s}"))),
    };
    let target = target.ok_or_else(|| Some("one of --sqlite or --passwd-file is required".to_string()))?;
    if !matches!(command.as_str(), "init" | "add" | "passwd" | "del" | "disable" | "enable" | "list" | "app") {
        return Err(Some(format!("unknown command {command}")));
    }
    let app = match command.as_str() {
        "app" => {
            let sub = rest.next().ok_or_else(|| Some("app: add, list or revoke".to_string()))?;
            if !matches!(sub.as_str(), "add" | "list" | "revoke") {
                return Err(Some(format!("app: unknown subcommand {sub} (add, list, revoke)")));
            }
            if matches!(target, Target::File(_)) && app_file.is_none() {
                return Err(Some("app: --app-passwords FILE is required with --passwd-file".into()));
            }
            Some(sub)
        }
        _ => None,
    };
    if (protocols.is_some() || networks.is_some()) && app.as_deref() != Some("add") {
        return Err(Some("--protocols and --networks are for 'app add'".into()));
    }
    let user = rest.next();
    let app = match app {
        Some(sub) => {
            let label = if sub == "list" { None } else { rest.next() };
            if sub != "list" && label.is_none() {
                return Err(Some(format!("app {sub}: USER and LABEL are required")));
            }
            if let Some(l) = &label {
                if !valid_label(l) {
                    return Err(Some(format!("invalid label {l:?} (1..64 of letters, digits, . _ - @ +)")));
                }
            }
            Some((sub, label))
        }
        None => None,
    };
    if let Some(extra) = rest.next() {
        return Err(Some(format!("unexpected argument {extra}")));
    }
    let needs_user = !matches!(command.as_str(), "init" | "list");
    if needs_user != user.is_some() {
        let what = if needs_user { "a user name is required" } else { "takes no user" };
        return Err(Some(format!("{command}: {what}")));
    }
    if let Some(u) = &user {
        check_user(u).map_err(Some)?;
    }
    Ok(Opts { target, command, user, kind, password, app, app_file, protocols, networks })
}

/// The module's label rule (`store::valid_label`).
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 64
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

/// `imap,pop3,smtp` (commas), lower-cased.
fn check_protocols(v: &str) -> Result<String, String> {
    let list: Vec<String> = v.split(',').map(|p| p.trim().to_ascii_lowercase()).collect();
    if list.iter().any(|p| !matches!(p.as_str(), "imap" | "pop3" | "smtp")) {
        return Err(format!("--protocols: {v:?} is not a list of imap, pop3, smtp"));
    }
    Ok(list.join(","))
}

/// CIDRs or addresses, separated by commas, as the module reads them; a network with address
/// bits below its prefix (`10.9.9.9/1`, half of IPv4) is refused, not widened.
fn check_networks(v: &str) -> Result<String, String> {
    let list: Vec<&str> = v.split(',').map(str::trim).collect();
    for n in &list {
        let net = cidr::Cidr::parse(n).map_err(|e| format!("--networks: {e}"))?;
        if cidr::Cidr::has_host_bits(n) {
            return Err(format!("--networks: {n:?} has address bits below its prefix (it would be {net})"));
        }
    }
    Ok(list.join(","))
}

/// A new app password: 28 characters of a 32-symbol alphabet (no 0/o, 1/l), 5 bits each from
/// the OS random generator (140 bits), in groups of 4 joined by '-' (the dashes are part of it).
fn generate_secret() -> Result<String, String> {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut b = [0u8; 28];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let mut out = String::with_capacity(34);
    for (i, x) in b.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(x & 31)]));
    }
    Ok(out)
}

/// The current time as SQLite's `datetime('now')` writes it (UTC), for passwd-file lines.
fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A name that can be written to a passwd-file line and found again by the module.
fn check_user(u: &str) -> Result<(), String> {
    if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) || u.starts_with('#') || u.trim() != u {
        return Err(format!("invalid user name {u:?} (empty, ':', control characters, leading '#' or blanks)"));
    }
    Ok(())
}

fn read_password(opts: &Opts) -> Result<String, String> {
    if let Some(p) = &opts.password {
        if p.is_empty() {
            return Err("empty password".into());
        }
        return Ok(p.clone());
    }
    let mut line = String::new();
    let read =
        |line: &mut String| std::io::stdin().lock().read_line(line).map_err(|e| format!("reading the password: {e}"));
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // typed at a terminal: asked for, and not shown (nor kept in its scroll-back or a
        // session recording); stty turns the terminal's echo off before the prompt (what is
        // typed once it shows is never echoed) and on again after
        // (not asked at all where echo cannot be turned off: it was asked for, and shown)
        let program = find_stty(std::env::var_os("PATH").as_deref()).ok_or(NO_ECHO_OFF)?;
        if !stty(&program, "-echo") {
            return Err(NO_ECHO_OFF.into());
        }
        eprint!("Password: ");
        let r = read(&mut line);
        stty(&program, "echo");
        eprintln!();
        r?;
    } else {
        read(&mut line)?;
    }
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        return Err("empty password (give it on standard input or with --password)".into());
    }
    Ok(p)
}

/// A file's lines, without a UTF-8 byte order mark before the first (the module skips one: read
/// with it, the first user's name was another, so `add` of that user added a second line the
/// module ignores and `passwd`/`del`/`disable` found no such user).
fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    use std::io::Read;
    let mut s = String::new();
    open_regular(path)?.read_to_string(&mut s)?;
    Ok(s.strip_prefix('\u{feff}').unwrap_or(&s).lines().map(str::to_string).collect())
}

/// Opens `path` for reading, only if it is a regular file (after symlinks), without waiting:
/// `O_NONBLOCK` makes the open of a FIFO return at once (then refused here) where a plain open
/// waits for a writer for ever; it changes nothing for a regular file.
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Where `stty` is: the system's directories first (root runs this tool), then the absolute
/// directories of `path_var` (`PATH`).
fn find_stty(path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    find_stty_in(&["/bin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from), path_var)
}

/// [`find_stty`] with the system's directories given.
fn find_stty_in(system: &[PathBuf], path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let from_path = path_var.map(|p| std::env::split_paths(p).filter(|d| d.is_absolute()).collect::<Vec<_>>());
    system.iter().cloned().chain(from_path.unwrap_or_default()).map(|d| d.join("stty")).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Runs `stty ARG` (found by [`find_stty`]) on the terminal at standard input; `true` if it did.
fn stty(program: &Path, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why a password is not asked for at a terminal whose echo cannot be turned off.
const NO_ECHO_OFF: &str = "cannot turn the terminal's echo off (no working stty): the password is not asked \
     for (it would be shown); give it on standard input from a pipe or a file (mail-auth-user ... < FILE)";

fn hash(opts: &Opts) -> Result<String, String> {
    let p = read_password(opts)?;
    scheme::hash_password(opts.kind, p.as_bytes()).map_err(|e| e.to_string())
}

// ---- SQLite ----

/// Runs a command on a SQLite database; returns the lines to print.
fn sqlite(db: &Path, opts: &Opts) -> Result<Vec<String>, String> {
    use rusqlite::OpenFlags;
    let name = |e: rusqlite::Error| format!("{}: {e}", db.display());
    // Only `init` may create the file: a typo in --sqlite must not leave an empty database.
    if !db.exists() {
        if opts.command != "init" {
            return Err(format!("{}: no such database (create it with 'init')", db.display()));
        }
        // made here, not by SQLite (which takes 0644 less the umask: every local user could
        // read the hashes and the backend passwords); its journal and WAL files take its mode
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(db)
            .map_err(|e| format!("{}: {e}", db.display()))?;
    }
    // (never SQLite's create: the file is there, made above with its mode)
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = rusqlite::Connection::open_with_flags(db, flags).map_err(name)?;
    // a module reading at the same time only delays us a little; it never writes
    c.busy_timeout(std::time::Duration::from_secs(5)).map_err(name)?;
    let user = opts.user.as_deref().unwrap_or("");
    let changed = |n: usize| if n == 1 { Ok(Vec::new()) } else { Err(format!("no user \"{user}\"")) };
    if opts.command != "init" {
        let has_table: bool = c
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'users'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n > 0)
            .map_err(name)?;
        if !has_table {
            return Err(format!("{}: no users table (run 'init' first)", db.display()));
        }
    }
    if let Some((sub, label)) = &opts.app {
        return sqlite_app(&c, db, user, sub, label.as_deref(), opts);
    }
    match opts.command.as_str() {
        "init" => c.execute_batch(include_str!("../../scripts/schema.sql")).map_err(name).map(|()| Vec::new()),
        "add" => {
            let h = hash(opts)?;
            // one write transaction: the new account, and no app password left from an earlier
            // account of that name (removed another way than 'del': plain SQL, say), which the
            // module, finding app passwords by name, would let log in to the new one
            let tx =
                rusqlite::Transaction::new_unchecked(&c, rusqlite::TransactionBehavior::Immediate).map_err(name)?;
            match tx.execute("INSERT INTO users(name, password) VALUES (?1, ?2)", (user, &h)) {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    return Err(format!("user \"{user}\" exists"));
                }
                Err(e) => return Err(name(e)),
            }
            let stale = if has_app_table(&tx).map_err(name)? {
                tx.execute("DELETE FROM app_passwords WHERE user = ?1", [user]).map_err(name)?
            } else {
                0
            };
            tx.commit().map_err(name)?;
            if stale > 0 {
                eprintln!("{}", leftover_notice(user, stale, &db.display().to_string()));
            }
            Ok(Vec::new())
        }
        "passwd" => {
            let h = hash(opts)?;
            changed(
                c.execute("UPDATE users SET password = ?2, updated = datetime('now') WHERE name = ?1", (user, &h))
                    .map_err(name)?,
            )
        }
        "del" => {
            // the user's app passwords go too: a new user of that name must not inherit them
            let tx = c.unchecked_transaction().map_err(name)?;
            let n = tx.execute("DELETE FROM users WHERE name = ?1", [user]).map_err(name)?;
            if has_app_table(&tx).map_err(name)? {
                tx.execute("DELETE FROM app_passwords WHERE user = ?1", [user]).map_err(name)?;
            }
            tx.commit().map_err(name)?;
            changed(n)
        }
        "disable" | "enable" => {
            let v = i32::from(opts.command == "enable");
            changed(
                c.execute("UPDATE users SET enabled = ?2, updated = datetime('now') WHERE name = ?1", (user, v))
                    .map_err(name)?,
            )
        }
        "list" => {
            // the same rule as the module: NULL or a true value is enabled
            let mut st = c.prepare("SELECT name, enabled, password FROM users ORDER BY name").map_err(name)?;
            let rows = st
                .query_map([], |r| {
                    let en = match r.get_ref(1)? {
                        rusqlite::types::ValueRef::Null => true,
                        rusqlite::types::ValueRef::Integer(n) => n != 0,
                        v => matches!(
                            v.as_str().unwrap_or("").trim().to_ascii_lowercase().as_str(),
                            "1" | "yes" | "true" | "on" | "y" | "t"
                        ),
                    };
                    Ok((r.get::<_, String>(0)?, en, r.get::<_, Option<String>>(2)?.unwrap_or_default()))
                })
                .map_err(name)?;
            let mut out = Vec::new();
            for row in rows {
                let (n, en, pw) = row.map_err(name)?;
                out.push(format!("{n}\t{}\t{}", if en { "enabled" } else { "disabled" }, scheme::scheme_name(&pw)));
            }
            Ok(out)
        }
        other => Err(format!("unknown command {other}")),
    }
}

/// What `add` says on standard error when it removed `n` app passwords an earlier account of
/// that name left behind (in `place`).
fn leftover_notice(user: &str, n: usize, place: &str) -> String {
    format!(
        "mail-auth-user: removed {n} app password{} of an earlier account \"{user}\" from {place} \
         (it was deleted another way than 'mail-auth-user del'): the new account does not inherit them",
        if n == 1 { "" } else { "s" }
    )
}

/// Whether the database has the `app_passwords` table.
fn has_app_table(c: &rusqlite::Connection) -> rusqlite::Result<bool> {
    c.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'app_passwords'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
}

/// `app add|list|revoke` on a SQLite database (its users table exists).
fn sqlite_app(
    c: &rusqlite::Connection,
    db: &Path,
    user: &str,
    sub: &str,
    label: Option<&str>,
    opts: &Opts,
) -> Result<Vec<String>, String> {
    let name = |e: rusqlite::Error| format!("{}: {e}", db.display());
    let label = label.unwrap_or("");
    let has_table = has_app_table(c).map_err(name)?;
    match sub {
        "add" => {
            // one write transaction from the user's check to the insert: a 'del' of the user at
            // the same time comes before (no user) or after (it removes this app password too),
            // never between, where it would leave an app password for a user of that name made later
            let tx = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate).map_err(name)?;
            let c = &*tx;
            let exists: i64 =
                c.query_row("SELECT count(*) FROM users WHERE name = ?1", [user], |r| r.get(0)).map_err(name)?;
            if exists == 0 {
                return Err(format!("no user \"{user}\""));
            }
            if !has_table {
                c.execute_batch(include_str!("../../scripts/schema.sql")).map_err(name)?;
            }
            let count: i64 = c
                .query_row("SELECT count(*) FROM app_passwords WHERE user = ?1", [user], |r| r.get(0))
                .map_err(name)?;
            if count >= MAX_APP_PASSWORDS as i64 {
                return Err(format!(
                    "\"{user}\" has {MAX_APP_PASSWORDS} app passwords already (the most a login tries)"
                ));
            }
            let secret = generate_secret()?;
            let h = scheme::hash_password(opts.kind, secret.as_bytes()).map_err(|e| e.to_string())?;
            let r = c.execute(
                "INSERT INTO app_passwords(user, label, password, protocols, networks) VALUES (?1, ?2, ?3, ?4, ?5)",
                (user, label, &h, opts.protocols.as_deref(), opts.networks.as_deref()),
            );
            match r {
                Ok(_) => tx.commit().map(|()| vec![secret]).map_err(name),
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    Err(format!("\"{user}\" has an app password \"{label}\" already"))
                }
                Err(e) => Err(name(e)),
            }
        }
        "list" if !has_table => Ok(Vec::new()),
        "list" => {
            let mut st = c
                .prepare("SELECT label, protocols, networks, created FROM app_passwords WHERE user = ?1 ORDER BY rowid")
                .map_err(name)?;
            let rows = st
                .query_map([user], |r| {
                    Ok(app_list_line(
                        &r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?.as_deref(),
                        r.get::<_, Option<String>>(2)?.as_deref(),
                        r.get::<_, Option<String>>(3)?.as_deref(),
                    ))
                })
                .map_err(name)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(name)
        }
        "revoke" => {
            let n = if has_table {
                c.execute("DELETE FROM app_passwords WHERE user = ?1 AND label = ?2", (user, label)).map_err(name)?
            } else {
                0
            };
            if n == 0 {
                return Err(format!("\"{user}\" has no app password \"{label}\""));
            }
            Ok(Vec::new())
        }
        other => Err(format!("unknown app subcommand {other}")),
    }
}

/// One line of `app list`: label, protocols, networks, created (never the hash).
fn app_list_line(label: &str, protocols: Option<&str>, networks: Option<&str>, created: Option<&str>) -> String {
    format!(
        "{label}\tprotocols={}\tnetworks={}\tcreated={}",
        protocols.unwrap_or("all"),
        networks.unwrap_or("any"),
        created.unwrap_or("-")
    )
}

/// At most this many app passwords per user (the module's `store::MAX_APP_PASSWORDS`).
const MAX_APP_PASSWORDS: usize = 16;

// ---- passwd-file ----

/// The user a line belongs to, and whether it is disabled. The name is the text before the first
/// ':' as it is, as the module reads it (" alice" is not alice).
fn line_user(line: &str) -> Option<(&str, bool)> {
    let (l, disabled) = match line.strip_prefix(DISABLED) {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    if l.trim_start().starts_with('#') || l.trim().is_empty() {
        return None;
    }
    l.split_once(':').map(|(u, _)| (u, disabled))
}

/// Applies a command to the lines of a passwd-file; returns the new lines (pure, unit-tested).
/// A user may have several lines (a `#disabled#` one left behind, a line added by `htpasswd`
/// after a disable, duplicates): the module takes the first line that is not disabled, so `del`
/// removes them all, `disable` disables every active one and `passwd` changes every one (no
/// older password can come back, nor stay in use); `enable`, when no line is active, enables
/// the disabled ones if they hold one password, and refuses to choose between several.
pub fn edit_lines(lines: &[String], command: &str, user: &str, new_hash: Option<&str>) -> Result<Vec<String>, String> {
    let mine: Vec<(usize, bool)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| line_user(l).filter(|(u, _)| *u == user).map(|(_, disabled)| (i, disabled)))
        .collect();
    let mut out = lines.to_vec();
    let need_hash = || new_hash.ok_or_else(|| format!("{command}: no password hash"));
    match command {
        "add" if !mine.is_empty() => return Err(format!("user \"{user}\" exists")),
        "add" => out.push(format!("{user}:{}", need_hash()?)),
        "passwd" | "del" | "disable" | "enable" if mine.is_empty() => return Err(format!("no user \"{user}\"")),
        "passwd" => {
            let hash = need_hash()?;
            for &(i, _) in &mine {
                let (prefix, l) = match out[i].strip_prefix(DISABLED) {
                    Some(r) => (DISABLED, r.to_string()),
                    None => ("", out[i].clone()),
                };
                // keep Dovecot passwd-file extra fields after the hash
                let rest = l.splitn(3, ':').nth(2).map(|r| format!(":{r}")).unwrap_or_default();
                out[i] = format!("{prefix}{user}:{hash}{rest}");
            }
        }
        "del" => {
            for &(i, _) in mine.iter().rev() {
                out.remove(i);
            }
        }
        "disable" => {
            for &(i, disabled) in &mine {
                if !disabled {
                    out[i] = format!("{DISABLED}{}", out[i]);
                }
            }
        }
        "enable" => {
            if mine.iter().all(|&(_, disabled)| disabled) {
                // several disabled lines of other passwords (one disabled, then one htpasswd
                // added, then both disabled): which one was in effect is not known here, and
                // the older one must not come back
                let hash = |i: usize| out[i].split(':').nth(1).unwrap_or("").to_string();
                if mine.iter().any(|&(i, _)| hash(i) != hash(mine[0].0)) {
                    return Err(format!(
                        "\"{user}\" has several disabled lines with different passwords: remove the old ones, or set a new password with passwd"
                    ));
                }
                for &(i, _) in &mine {
                    out[i] = out[i][DISABLED.len()..].to_string();
                }
            }
        }
        other => return Err(format!("unknown command {other}")),
    }
    Ok(out)
}

/// The `list` lines of a passwd-file.
fn list_lines(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        if let Some((u, disabled)) = line_user(l) {
            let hash = l.split(':').nth(1).unwrap_or("").trim();
            out.push(format!("{u}\t{}\t{}", if disabled { "disabled" } else { "enabled" }, scheme::scheme_name(hash)));
        }
    }
    out
}

/// The (user, label, rest) of an app passwords file line (`None`: blank or comment).
fn app_line(line: &str) -> Option<(&str, &str, &str)> {
    if line.trim_start().starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut p = line.splitn(3, ':');
    Some((p.next()?, p.next()?, p.next().unwrap_or("")))
}

/// Applies `app add|revoke` (and `del`: every app password of the user) to the lines of an app
/// passwords file (pure, unit-tested). `new` is the line to add.
pub fn edit_app_lines(
    lines: &[String],
    sub: &str,
    user: &str,
    label: &str,
    new: Option<&str>,
) -> Result<Vec<String>, String> {
    let mine = |l: &String| app_line(l).is_some_and(|(u, _, _)| u == user);
    let this = |l: &String| app_line(l).is_some_and(|(u, lb, _)| u == user && lb == label);
    let mut out = lines.to_vec();
    match sub {
        "add" => {
            if lines.iter().any(this) {
                return Err(format!("\"{user}\" has an app password \"{label}\" already"));
            }
            if lines.iter().filter(|l| mine(l)).count() >= MAX_APP_PASSWORDS {
                return Err(format!(
                    "\"{user}\" has {MAX_APP_PASSWORDS} app passwords already (the most a login tries)"
                ));
            }
            out.push(new.ok_or("app add: no line")?.to_string());
        }
        "revoke" => {
            if !lines.iter().any(this) {
                return Err(format!("\"{user}\" has no app password \"{label}\""));
            }
            out.retain(|l| !this(l));
        }
        "del" => out.retain(|l| !mine(l)),
        other => return Err(format!("unknown app subcommand {other}")),
    }
    Ok(out)
}

/// `app list` of an app passwords file.
fn app_list_lines(lines: &[String], user: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        let Some((u, label, rest)) = app_line(l) else { continue };
        if u != user {
            continue;
        }
        let fields = rest.split_once(':').map_or("", |(_, f)| f);
        let field =
            |k: &str| fields.split_whitespace().find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
        out.push(app_list_line(label, field("protocols"), field("allow_nets"), field("created")));
    }
    out
}

/// `app add|list|revoke` on a passwd-file's app passwords file.
fn passwd_file_app(path: &Path, apps: &Path, opts: &Opts, sub: &str, label: &str) -> Result<Vec<String>, String> {
    let user = opts.user.as_deref().unwrap_or("");
    let read = |p: &Path| -> Result<Vec<String>, String> {
        match read_lines(p) {
            Ok(lines) => Ok(lines),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && p == apps => Ok(Vec::new()),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    };
    // as `passwd_file`: the main file (an `app add` checks its user there), then the app file
    let new_file = !apps.exists();
    let locks = match sub {
        "list" => None,
        _ => {
            let main = lock_file(path, false)?;
            let apps = lock_beside(main.as_ref(), apps, sub == "add")?;
            Some((main, apps))
        }
    };
    if let (true, Some((_, Some(made)))) = (new_file, &locks) {
        // a new app passwords file is read by whoever reads the passwd-file (nginx's workers,
        // often by group): its group and mode, not root's 0640 (the workers could not re-read
        // it after the next change: every login a temporary failure). Set on the file this run
        // made and locked, not by its name: a link put at the name meanwhile is not followed
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Ok(m) = std::fs::metadata(path) {
            let _ = std::os::unix::fs::fchown(made, None, Some(m.gid()));
            made.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o777))
                .map_err(|e| format!("{}: {e}", apps.display()))?;
        }
    }
    let lines = read(apps)?;
    if sub == "list" {
        return Ok(app_list_lines(&lines, user));
    }
    if sub == "add" && !read(path)?.iter().any(|l| line_user(l).is_some_and(|(u, _)| u == user)) {
        return Err(format!("no user \"{user}\" in {}", path.display()));
    }
    edit_app_lines(&lines, sub, user, label, Some(""))?;
    let (secret, new) = if sub == "add" {
        let secret = generate_secret()?;
        let h = scheme::hash_password(opts.kind, secret.as_bytes()).map_err(|e| e.to_string())?;
        let mut fields = Vec::new();
        if let Some(p) = &opts.protocols {
            fields.push(format!("protocols={p}"));
        }
        if let Some(n) = &opts.networks {
            fields.push(format!("allow_nets={n}"));
        }
        fields.push(format!("created={}", now_utc()));
        (Some(secret), Some(format!("{user}:{label}:{h}:{}", fields.join(" "))))
    } else {
        (None, None)
    };
    let out = edit_app_lines(&lines, sub, user, label, new.as_deref())?;
    write_atomically(apps, &out)?;
    Ok(secret.into_iter().collect())
}

/// Runs a command on a passwd-file; returns the lines to print.
fn passwd_file(path: &Path, opts: &Opts) -> Result<Vec<String>, String> {
    if let (Some((sub, label)), Some(apps)) = (&opts.app, &opts.app_file) {
        return passwd_file_app(path, apps, opts, sub, label.as_deref().unwrap_or(""));
    }
    let read = || read_lines(path).map_err(|e| format!("{}: {e}", path.display()));
    match opts.command.as_str() {
        "init" => {
            if path.exists() {
                return Err(format!("{} exists", path.display()));
            }
            return write_atomically(path, &[]).map(|()| Vec::new());
        }
        "list" => return Ok(list_lines(&read()?)),
        _ => {}
    }
    // held until the command is over: the main file, then the app passwords file ('del', 'add')
    let main_lock = lock_file(path, opts.command == "add")?;
    let apps = opts.app_file.as_deref().filter(|_| matches!(opts.command.as_str(), "del" | "add"));
    let _apps_lock = match apps {
        Some(apps) => lock_beside(main_lock.as_ref(), apps, false)?,
        None => None,
    };
    let lines = if opts.command == "add" && !path.exists() { Vec::new() } else { read()? };
    let user = opts.user.as_deref().unwrap_or("");
    // check before asking for a password (and before spending a bcrypt on it)
    edit_lines(&lines, &opts.command, user, Some(""))?;
    let h = if matches!(opts.command.as_str(), "add" | "passwd") { Some(hash(opts)?) } else { None };
    let out = edit_lines(&lines, &opts.command, user, h.as_deref())?;
    // 'del': the user's app passwords go too, so that a new user of that name does not inherit
    // them; 'add': those an earlier account of that name left (deleted by htpasswd -D, by hand,
    // or by a 'del' without --app-passwords). Before the main file: a run cut off between the
    // two rewrites leaves an account without app passwords, never app passwords without it
    if let Some(apps) = apps.filter(|a| a.exists() && !same_path_file(a, path)) {
        let lines = read_lines(apps).map_err(|e| format!("{}: {e}", apps.display()))?;
        let kept = edit_app_lines(&lines, "del", user, "", None)?;
        if kept.len() != lines.len() {
            write_atomically(apps, &kept)?;
            if opts.command == "add" {
                eprintln!("{}", leftover_notice(user, lines.len() - kept.len(), &apps.display().to_string()));
            }
        }
    }
    write_atomically(path, &out)?;
    if opts.command == "del" && opts.app_file.is_none() {
        eprintln!(
            "mail-auth-user: warning: app passwords of \"{user}\" in a mail_auth_app_passwords file were not \
             removed (give --app-passwords FILE): they would log in to a new account of that name \
             unless it is added with --app-passwords"
        );
    }
    Ok(Vec::new())
}

/// `a` and `b` name one existing file.
fn same_path_file(a: &Path, b: &Path) -> bool {
    matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if same_file(&x, &y))
}

/// An exclusive lock (`flock`) on the file a command edits, held until dropped, so that two
/// runs at once do not both read the old file and the last write lose the other's change (a
/// deleted user put back). The file's own inode is locked: after the lock, the path must still
/// name it (a run that held it may have renamed a new file over it), else again. `create`: a
/// missing file is made empty (mode 0640) to be locked; otherwise a missing file is `None`.
fn lock_file(path: &Path, create: bool) -> Result<Option<std::fs::File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| format!("{}: locking: {e}", path.display());
    loop {
        // (a FIFO there: refused at once, not waited on for ever past the lock's patience)
        let f = match open_regular(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(path) {
                    Ok(_) => continue,
                    // a symlink to nothing: create_new does not follow it, open finds nothing
                    // behind it (looping on the two was a run that never ended)
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dangling(path) => {
                        return Err(format!(
                            "{}: a symbolic link to a file that does not exist: create the file it names first",
                            path.display()
                        ))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(err(e)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        lock_within(&f, LOCK_PATIENCE).map_err(|e| format!("{}: {e}", path.display()))?;
        let (held, now) = (f.metadata().map_err(err)?, std::fs::metadata(path));
        if now.is_ok_and(|m| same_file(&m, &held)) {
            return Ok(Some(f));
        }
    }
}

/// How long a run waits for another's lock on a file. Whoever may read the file may lock it
/// (nginx's workers' group, say): a lock held for good must end in a message, not a run that
/// waits for ever.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// `flock`s `f`, trying again until `patience` has passed.
fn lock_within(f: &std::fs::File, patience: std::time::Duration) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < patience => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another process has held a lock on it for {} s (another mail-auth-user, or any process that can read it: see 'fuser -v'): nothing changed",
                    patience.as_secs()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("locking: {e}")),
        }
    }
}

/// `path` is a symbolic link whose target does not exist.
fn dangling(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        && std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// The two name one file (device and inode).
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// [`lock_file`] for a second file while `held` is locked: nothing more when `path` names the
/// same file (an app passwords file given as the passwd-file itself, or a link to it), whose
/// second lock by this very run would wait for the first for ever.
fn lock_beside(held: Option<&std::fs::File>, path: &Path, create: bool) -> Result<Option<std::fs::File>, String> {
    if let (Some(h), Ok(m)) = (held.map(std::fs::File::metadata), std::fs::metadata(path)) {
        if h.is_ok_and(|h| same_file(&h, &m)) {
            return Ok(None);
        }
    }
    lock_file(path, create)
}

/// Writes the file next to the old one and renames it over: readers (the module re-reading the
/// file) see either the old or the new file, never a half-written one. A symlink is followed (its
/// target is replaced); the old file's mode is kept and, where we may, its owner and group.
fn write_atomically(path: &Path, lines: &[String]) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let target = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(_) => path.to_path_buf(), // a new file
    };
    let old = std::fs::metadata(&target).ok();
    if let Some(m) = old.as_ref().filter(|m| m.nlink() > 1) {
        eprintln!("mail-auth-user: warning: {}", hard_link_warning(&target, m.nlink()));
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.mail-auth-user.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        // create_new: never follow or reuse something already at the temporary name
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        f.sync_all()?;
        if let Some(m) = &old {
            if std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())).is_err() {
                // not root: keep at least the group if we are in it
                if std::os::unix::fs::fchown(&f, None, Some(m.gid())).is_err() {
                    eprintln!("mail-auth-user: warning: {shown}: could not keep the file's owner/group");
                }
            }
            f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        } else {
            f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
        }
        drop(f);
        std::fs::rename(&tmp, &target)?;
        // make the rename itself durable
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("{shown}: {e}"))
}

/// Why a file with other hard links is worth a warning before it is replaced by rename.
fn hard_link_warning(path: &Path, nlink: u64) -> String {
    format!(
        "{} has {} other hard link{}: replacing it (a new file renamed over it) breaks them, their names keep \
         the old content (a process reading one of them, or a file bind-mounted on its own into a \
         container, does not see this change): link or bind-mount the directory instead",
        path.display(),
        nlink - 1,
        if nlink == 2 { "" } else { "s" }
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Some(e)) => {
            eprintln!("mail-auth-user: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match &opts.target {
        Target::Sqlite(db) => sqlite(db, &opts),
        Target::File(f) => passwd_file(f, &opts),
    };
    match r {
        Ok(lines) => {
            let mut out = std::io::stdout().lock();
            for l in lines {
                if writeln!(out, "{l}").is_err() {
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mail-auth-user: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod edit_tests {
    use super::*;
    use crate::testutil::TempDir;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn tmpdir() -> TempDir {
        TempDir::new("user")
    }

    /// `f`'s result, run on a thread that must be over within 3 s (else `stuck` fails the test;
    /// the thread is left to the process's end).
    fn within_3s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static, stuck: &str) -> T {
        let run = std::thread::spawn(f);
        let start = std::time::Instant::now();
        while !run.is_finished() && start.elapsed() < std::time::Duration::from_secs(3) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(run.is_finished(), "{stuck}");
        run.join().unwrap()
    }

    fn opts(target: Target, command: &str, user: Option<&str>, password: Option<&str>) -> Opts {
        Opts {
            target,
            command: command.into(),
            user: user.map(str::to_string),
            kind: HashKind::Bcrypt { cost: 4 },
            password: password.map(str::to_string),
            app: None,
            app_file: None,
            protocols: None,
            networks: None,
        }
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
        assert!(edit_lines(&l, "add", "x", None).is_err(), "add needs a hash");
        // a commented-out line with the same name is not the user
        let c = lines(&["#alice:{PLAIN}old", "# alice:{PLAIN}old"]);
        assert!(edit_lines(&c, "del", "alice", None).is_err());
        assert_eq!(edit_lines(&c, "add", "alice", Some("h")).unwrap().len(), 3);
    }

    #[test]
    fn every_line_of_a_user_is_edited() {
        // the module logs in with the first active line: what the tool leaves must not be an
        // older password brought back, nor one still in use
        // (the module's reading: the first line of a name that is not disabled; t/ checks the
        // module itself)
        let users_of = |l: &[String]| {
            let mut m = std::collections::BTreeMap::new();
            for line in l {
                if let Some((u, false)) = line_user(line) {
                    let hash = line.split(':').nth(1).unwrap_or("").to_string();
                    m.entry(u.to_string()).or_insert(hash);
                }
            }
            m
        };
        let dup = lines(&["alice:{PLAIN}A", "alice:{PLAIN}B", "bob:{PLAIN}b"]);
        assert!(!users_of(&edit_lines(&dup, "disable", "alice", None).unwrap()).contains_key("alice"));
        assert!(!users_of(&edit_lines(&dup, "del", "alice", None).unwrap()).contains_key("alice"));
        let p = users_of(&edit_lines(&dup, "passwd", "alice", Some("{PLAIN}N")).unwrap());
        assert_eq!(p["alice"], "{PLAIN}N");
        // htpasswd added a line after a disable (it takes '#' lines for comments)
        let after = lines(&["#disabled# alice:{PLAIN}A", "alice:{PLAIN}B"]);
        assert!(!users_of(&edit_lines(&after, "disable", "alice", None).unwrap()).contains_key("alice"));
        assert_eq!(edit_lines(&after, "enable", "alice", None).unwrap(), after, "an active line: nothing to enable");
        let both = edit_lines(&after, "disable", "alice", None).unwrap();
        assert!(edit_lines(&both, "enable", "alice", None).unwrap_err().contains("several disabled lines"), "A or B?");
        let reset = edit_lines(&both, "passwd", "alice", Some("{PLAIN}N")).unwrap();
        assert_eq!(users_of(&edit_lines(&reset, "enable", "alice", None).unwrap())["alice"], "{PLAIN}N");
        // a name with a leading blank is another user (as the module reads it)
        let blank = lines(&[" alice:{PLAIN}X", "alice:{PLAIN}A"]);
        assert_eq!(edit_lines(&blank, "del", "alice", None).unwrap(), lines(&[" alice:{PLAIN}X"]));
    }

    #[test]
    fn disable_and_enable() {
        let l = lines(&["alice:{PLAIN}a", "bob:{PLAIN}b"]);
        let d = edit_lines(&l, "disable", "bob", None).unwrap();
        assert_eq!(d[1], "#disabled# bob:{PLAIN}b");
        assert_eq!(edit_lines(&d, "disable", "bob", None).unwrap(), d, "idempotent");
        assert!(edit_lines(&d, "add", "bob", Some("x")).unwrap_err().contains("exists"), "a disabled user exists");
        let p = edit_lines(&d, "passwd", "bob", Some("{PLAIN}n")).unwrap();
        assert_eq!(p[1], "#disabled# bob:{PLAIN}n", "passwd keeps it disabled");
        assert_eq!(edit_lines(&d, "enable", "bob", None).unwrap(), l);
        assert_eq!(edit_lines(&l, "enable", "bob", None).unwrap(), l, "enable of an enabled user: no change");
        assert_eq!(list_lines(&d), lines(&["alice\tenabled\tPLAIN", "bob\tdisabled\tPLAIN"]));
    }

    #[test]
    fn argument_checks() {
        let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&["--sqlite", "x.db", "add"]).is_err(), "user required");
        assert!(a(&["--sqlite", "x.db", "list", "bob"]).is_err(), "list takes no user");
        assert!(a(&["add", "bob"]).is_err(), "a store is required");
        assert!(a(&["--sqlite", "x.db", "frobnicate", "bob"]).is_err(), "unknown command");
        for bad in ["a:b", "#a", " a", "a\n", "a\tb", ""] {
            assert!(a(&["--sqlite", "x.db", "add", bad]).is_err(), "{bad:?}");
        }
        assert!(a(&["--sqlite", "x.db", "add", "bob", "--scheme", "md4"]).is_err());
        assert!(a(&["--sqlite", "x.db", "add", "bob", "--cost", "3"]).is_err());
        assert!(a(&["--sqlite", "x.db", "add", "bob", "--cost", "32"]).is_err());
        assert!(a(&["--sqlite", "x.db", "add", "bob", "--password", "x", "--password-stdin"]).is_err());
        assert!(matches!(a(&["--help"]), Err(None)), "help is not an error");
        let o =
            a(&["--passwd-file", "f", "add", "bob", "--scheme", "bcrypt", "--cost", "5", "--password", "pw"]).unwrap();
        assert_eq!(o.kind, HashKind::Bcrypt { cost: 5 });
        assert_eq!(o.password.as_deref(), Some("pw"));
        assert_eq!(o.target, Target::File("f".into()));
        let o = a(&["--sqlite", "x.db", "passwd", "bob@example.org", "--scheme", "sha512-crypt", "--password-stdin"])
            .unwrap();
        assert_eq!((o.kind, o.password, o.user.as_deref()), (HashKind::Sha512Crypt, None, Some("bob@example.org")));
    }

    #[test]
    fn a_second_run_waits_for_the_lock_and_takes_the_file_renamed_in_meanwhile() {
        use std::os::unix::fs::MetadataExt;
        let d = tmpdir();
        let path = d.join("users");
        assert!(lock_file(&path, false).unwrap().is_none(), "missing, not created");
        let held = lock_file(&path, true).unwrap().expect("created empty and locked");
        let p = path.clone();
        let waiter = std::thread::spawn(move || lock_file(&p, false).unwrap().unwrap().metadata().unwrap().ino());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!waiter.is_finished(), "the second run waits while the first holds the lock");
        // the first run writes its new file over the old one, then lets go
        write_atomically(&path, &lines(&["alice:{PLAIN}a"])).unwrap();
        drop(held);
        let new = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(waiter.join().unwrap(), new, "the lock taken is the new file's, not the replaced one's");
    }

    #[test]
    fn an_app_passwords_file_that_is_the_passwd_file_does_not_hang() {
        let d = tmpdir();
        let path = d.join("users");
        std::fs::write(&path, "alice:{PLAIN}a\nbob:{PLAIN}b\n").unwrap();
        let (p, t) = (path.clone(), Target::File(path.clone()));
        within_3s(
            move || passwd_file(&p, &Opts { app_file: Some(p.clone()), ..opts(t, "del", Some("alice"), None) }),
            "the run waits for its own lock",
        )
        .unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("alice"));
    }

    #[test]
    fn a_link_to_nothing_is_an_error_not_a_run_that_never_ends() {
        let d = tmpdir();
        let link = d.join("users");
        std::os::unix::fs::symlink(d.join("users.real"), &link).unwrap();
        let t = Target::File(link.clone());
        let (p, o) = (link.clone(), opts(t, "add", Some("bob"), Some("bob pw")));
        let e = within_3s(move || passwd_file(&p, &o), "add looped for ever on a dangling link").unwrap_err();
        assert!(e.contains("a symbolic link to a file that does not exist"), "{e}");
        assert!(!d.join("users.real").exists() && std::fs::symlink_metadata(&link).is_ok(), "nothing made or replaced");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_name() {
        let d = tmpdir();
        let path = d.join("users");
        std::fs::write(&path, "\u{feff}alice:{PLAIN}a\nbob:{PLAIN}b\n").unwrap();
        let t = Target::File(path.clone());
        let e = passwd_file(&path, &opts(t.clone(), "add", Some("alice"), Some("x"))).unwrap_err();
        assert!(e.contains("exists"), "{e}");
        passwd_file(&path, &opts(t, "disable", Some("alice"), None)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().starts_with("#disabled#"), "{text}");
    }

    #[test]
    fn a_lock_held_by_another_process_ends_in_an_error() {
        let d = tmpdir();
        let path = d.join("users");
        std::fs::write(&path, "alice:{PLAIN}a\n").unwrap();
        // another open file description: its flock conflicts with ours, as another process's
        let held = std::fs::File::open(&path).unwrap();
        held.lock().unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let start = std::time::Instant::now();
        let e = lock_within(&f, std::time::Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("another process has held a lock"), "{e}");
        assert!(start.elapsed() >= std::time::Duration::from_millis(300));
        drop(held);
        lock_within(&f, std::time::Duration::from_millis(300)).unwrap();
    }

    #[test]
    fn passwd_file_rewrite_is_atomic_and_keeps_mode_and_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir();
        let real = d.join("users.real");
        std::fs::write(&real, "# users\nalice:{PLAIN}a:::::allow_nets=127.0.0.1\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = d.join("users");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let t = Target::File(link.clone());
        passwd_file(&link, &opts(t.clone(), "add", Some("bob"), Some("bob pw"))).unwrap();
        passwd_file(&link, &opts(t.clone(), "passwd", Some("alice"), Some("new pw"))).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "symlink kept");
        assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o640, "mode kept");
        let text = std::fs::read_to_string(&real).unwrap();
        let l: Vec<&str> = text.lines().collect();
        assert_eq!(l.len(), 3, "{text}");
        assert_eq!(l[0], "# users");
        let (alice, bob) = (l[1].split(':').nth(1).unwrap(), l[2].split(':').nth(1).unwrap());
        assert!(l[1].starts_with("alice:$2y$04$") && l[1].ends_with(":::::allow_nets=127.0.0.1"), "{}", l[1]);
        assert!(scheme::verify(alice, b"new pw").unwrap());
        assert!(l[2].starts_with("bob:$2y$"));
        assert!(scheme::verify(bob, b"bob pw").unwrap());
        assert!(!scheme::verify(bob, b"wrong").unwrap());
        passwd_file(&link, &opts(t.clone(), "disable", Some("bob"), None)).unwrap();
        assert_eq!(
            passwd_file(&link, &opts(t.clone(), "list", None, None)).unwrap(),
            vec!["alice\tenabled\tBLF-CRYPT".to_string(), "bob\tdisabled\tBLF-CRYPT".to_string()]
        );
        let e = passwd_file(&link, &opts(t.clone(), "del", Some("carol"), None)).unwrap_err();
        assert!(e.contains("no user \"carol\""), "{e}");
        passwd_file(&link, &opts(t.clone(), "del", Some("alice"), None)).unwrap();
        let names: Vec<_> =
            std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
        // init refuses to overwrite; add creates a missing file
        assert!(passwd_file(&link, &opts(t, "init", None, None)).is_err());
        let new = d.join("new");
        passwd_file(&new, &opts(Target::File(new.clone()), "add", Some("x"), Some("pw"))).unwrap();
        assert!(std::fs::read_to_string(&new).unwrap().starts_with("x:$2y$04$"));
        // a missing file for anything else is an error naming it
        let e = passwd_file(&d.join("nope"), &opts(Target::File(d.join("nope")), "del", Some("x"), None)).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn sqlite_commands() {
        let d = tmpdir();
        let db = d.join("users.db");
        let t = Target::Sqlite(db.clone());
        let run = |c: &str, u: Option<&str>, p: Option<&str>| sqlite(&db, &opts(t.clone(), c, u, p));
        let e = run("add", Some("alice"), Some("pw")).unwrap_err();
        assert!(!db.exists(), "only init creates the database: {e}");
        run("init", None, None).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&db).unwrap().permissions().mode();
            assert_eq!(mode & 0o007, 0, "a new database is not for other users to read: {mode:o}");
        }
        run("init", None, None).unwrap(); // idempotent
        run("add", Some("alice"), Some("alice pw")).unwrap();
        run("add", Some("bob"), Some("bob pw")).unwrap();
        assert!(run("add", Some("bob"), Some("x")).unwrap_err().contains("exists"));
        run("disable", Some("bob"), None).unwrap();
        assert_eq!(
            run("list", None, None).unwrap(),
            vec!["alice\tenabled\tBLF-CRYPT".to_string(), "bob\tdisabled\tBLF-CRYPT".to_string()]
        );
        run("enable", Some("bob"), None).unwrap();
        run("passwd", Some("alice"), Some("new pw")).unwrap();
        assert!(run("passwd", Some("nobody"), Some("x")).unwrap_err().contains("no user"));
        assert!(run("del", Some("nobody"), None).unwrap_err().contains("no user"));
        let c = rusqlite::Connection::open(&db).unwrap();
        let get = |u: &str| {
            c.query_row("SELECT password, enabled FROM users WHERE name = ?1", [u], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .unwrap()
        };
        let (a, en) = get("alice");
        assert!(a.starts_with("$2y$04$") && scheme::verify(&a, b"new pw").unwrap() && en == 1);
        let (b, en) = get("bob");
        assert!(scheme::verify(&b, b"bob pw").unwrap() && en == 1);
        let journal_mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(journal_mode, "delete", "rollback journal: the module can read without creating files");
        run("del", Some("bob"), None).unwrap();
        assert_eq!(run("list", None, None).unwrap().len(), 1);
        // a database without the table: a clear error
        let other = d.join("other.db");
        rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t(x)").unwrap();
        let e = sqlite(&other, &opts(Target::Sqlite(other.clone()), "list", None, None)).unwrap_err();
        assert!(e.contains("no users table"), "{e}");
    }

    #[test]
    fn stty_is_looked_for_in_the_system_then_on_path_else_none() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir();
        let (sys, on_path, rel) = (d.join("sys"), d.join("path"), PathBuf::from("relative"));
        std::fs::create_dir(&sys).unwrap();
        std::fs::create_dir(&on_path).unwrap();
        let path_var = std::env::join_paths([rel, on_path.clone()]).unwrap();
        assert_eq!(find_stty_in(std::slice::from_ref(&sys), Some(&path_var)), None, "none anywhere");
        assert_eq!(find_stty_in(&[], None), None);
        // not executable: not taken
        std::fs::write(on_path.join("stty"), "").unwrap();
        assert_eq!(find_stty_in(std::slice::from_ref(&sys), Some(&path_var)), None);
        std::fs::set_permissions(on_path.join("stty"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_stty_in(std::slice::from_ref(&sys), Some(&path_var)), Some(on_path.join("stty")));
        std::fs::write(sys.join("stty"), "").unwrap();
        std::fs::set_permissions(sys.join("stty"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_stty_in(std::slice::from_ref(&sys), Some(&path_var)), Some(sys.join("stty")), "system first");
    }

    #[test]
    fn a_fifo_at_the_path_is_refused_not_waited_on() {
        let d = tmpdir();
        let fifo = d.join("users");
        let ok = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success();
        assert!(ok, "mkfifo");
        let p = fifo.clone();
        let e = within_3s(move || lock_file(&p, false).map(|_| ()), "lock_file waited on a FIFO").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        for command in ["del", "list", "passwd"] {
            let (p, o) = (fifo.clone(), opts(Target::File(fifo.clone()), command, Some("bob"), Some("pw")));
            let o = if command == "list" { Opts { user: None, ..o } } else { o };
            let e = within_3s(move || passwd_file(&p, &o), "a command waited on a FIFO").unwrap_err();
            assert!(e.contains("not a regular file"), "{command}: {e}");
        }
    }

    /// An account deleted another way than 'del' (plain SQL, `htpasswd -D`, a 'del' without
    /// --app-passwords) and added again: its earlier app passwords are removed by the add.
    #[test]
    fn a_recreated_account_does_not_inherit_app_passwords() {
        let d = tmpdir();
        let db = d.join("users.db");
        let t = Target::Sqlite(db.clone());
        sqlite(&db, &opts(t.clone(), "init", None, None)).unwrap();
        for u in ["bob", "bobby"] {
            sqlite(&db, &opts(t.clone(), "add", Some(u), Some("old"))).unwrap();
            sqlite(&db, &app_opts(t.clone(), None, &["app", "add", u, "phone"])).unwrap();
        }
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute("DELETE FROM users WHERE name = 'bob'", []).unwrap();
        sqlite(&db, &opts(t.clone(), "add", Some("bob"), Some("new"))).unwrap();
        assert!(sqlite(&db, &app_opts(t.clone(), None, &["app", "list", "bob"])).unwrap().is_empty());
        assert_eq!(sqlite(&db, &app_opts(t.clone(), None, &["app", "list", "bobby"])).unwrap().len(), 1);
        // a failed add (the user exists) removes nothing
        sqlite(&db, &app_opts(t.clone(), None, &["app", "add", "bob", "phone"])).unwrap();
        assert!(sqlite(&db, &opts(t.clone(), "add", Some("bob"), Some("x"))).unwrap_err().contains("exists"));
        assert_eq!(sqlite(&db, &app_opts(t.clone(), None, &["app", "list", "bob"])).unwrap().len(), 1);

        let (users, apps) = (d.join("users"), d.join("apps"));
        let tf = Target::File(users.clone());
        let with_apps = |command: &str, pw: Option<&str>| Opts {
            app_file: Some(apps.clone()),
            ..opts(tf.clone(), command, Some("bob"), pw)
        };
        passwd_file(&users, &with_apps("add", Some("old"))).unwrap();
        passwd_file(&users, &app_opts(tf.clone(), Some(apps.clone()), &["app", "add", "bob", "phone"])).unwrap();
        // deleted without --app-passwords: the app file is not touched (a warning says so)
        passwd_file(&users, &opts(tf.clone(), "del", Some("bob"), None)).unwrap();
        assert!(std::fs::read_to_string(&apps).unwrap().starts_with("bob:phone:"));
        passwd_file(&users, &with_apps("add", Some("new"))).unwrap();
        assert_eq!(std::fs::read_to_string(&apps).unwrap(), "", "the leftover removed by the add");
        assert!(std::fs::read_to_string(&users).unwrap().starts_with("bob:$2"));
    }

    fn app_opts(target: Target, app_file: Option<PathBuf>, args: &[&str]) -> Opts {
        let mut v: Vec<String> = match &target {
            Target::Sqlite(p) => vec!["--sqlite".into(), p.display().to_string()],
            Target::File(p) => vec!["--passwd-file".into(), p.display().to_string()],
        };
        if let Some(a) = app_file {
            v.push("--app-passwords".into());
            v.push(a.display().to_string());
        }
        v.extend(args.iter().map(|s| s.to_string()));
        parse_args(&v).unwrap()
    }

    fn is_secret(s: &str) -> bool {
        s.len() == 34
            && s.split('-').count() == 7
            && s.split('-').all(|g| g.len() == 4 && g.bytes().all(|b| b"abcdefghijkmnpqrstuvwxyz23456789".contains(&b)))
    }

    #[test]
    fn app_arguments() {
        let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = a(&[
            "--sqlite",
            "x.db",
            "app",
            "add",
            "bob",
            "phone",
            "--protocols",
            "IMAP,smtp",
            "--networks",
            "10.0.0.0/8, ::1",
        ])
        .unwrap();
        assert_eq!(o.app, Some(("add".to_string(), Some("phone".to_string()))));
        assert_eq!((o.protocols.as_deref(), o.networks.as_deref()), (Some("imap,smtp"), Some("10.0.0.0/8,::1")));
        assert_eq!(o.kind, HashKind::Ssha512, "generated secrets: a fast salted hash by default");
        let o = a(&["--sqlite", "x.db", "app", "add", "bob", "phone", "--scheme", "bcrypt"]).unwrap();
        assert_eq!(o.kind, HashKind::Bcrypt { cost: 10 });
        assert!(a(&["--sqlite", "x.db", "app", "list", "bob"]).is_ok());
        assert!(a(&["--sqlite", "x.db", "app", "add", "bob"]).is_err(), "label required");
        assert!(a(&["--sqlite", "x.db", "app", "list", "bob", "phone"]).is_err(), "list takes no label");
        assert!(a(&["--sqlite", "x.db", "app", "add", "bob", "a:b"]).is_err(), "bad label");
        assert!(a(&["--sqlite", "x.db", "app", "add", "bob", "l", "--protocols", "nntp"]).is_err());
        assert!(a(&["--sqlite", "x.db", "app", "add", "bob", "l", "--networks", "10.0.0.0/33"]).is_err());
        assert!(a(&["--sqlite", "x.db", "app", "add", "bob", "l", "--networks", "example.org"]).is_err());
        // what the module would refuse (a '+' or leading zeros in the prefix) or widen (address
        // bits below the prefix: half of IPv4 here) is refused
        for n in ["10.0.0.0/+8", "10.0.0.0/0008", "10.9.9.9/1"] {
            assert!(a(&["--sqlite", "x.db", "app", "add", "bob", "l", "--networks", n]).is_err(), "{n}");
        }
        assert!(a(&["--sqlite", "x.db", "app", "frob", "bob"]).is_err());
        assert!(a(&["--sqlite", "x.db", "add", "bob", "--protocols", "imap"]).is_err(), "only for app add");
        assert!(a(&["--passwd-file", "f", "app", "list", "bob"]).is_err(), "--app-passwords needed");
        let secrets: Vec<String> = (0..50).map(|_| generate_secret().unwrap()).collect();
        assert!(secrets.iter().all(|s| is_secret(s)), "{secrets:?}");
        let unique: std::collections::HashSet<_> = secrets.iter().collect();
        assert_eq!(unique.len(), 50);
        assert!(now_utc().ends_with('Z') && now_utc().len() == 20, "{}", now_utc());
    }

    #[test]
    fn app_commands_on_a_passwd_file() {
        let d = tmpdir();
        let users = d.join("users");
        let apps = d.join("apps");
        std::fs::write(&users, "alice:{PLAIN}a\n#disabled# bob:{PLAIN}b\n").unwrap();
        // the passwd-file as nginx's workers read it: by group (when we may give it one)
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).unwrap();
        let group = std::os::unix::fs::chown(&users, None, Some(65534)).is_ok();
        let t = Target::File(users.clone());
        let run = |args: &[&str]| passwd_file(&users, &app_opts(t.clone(), Some(apps.clone()), args));
        let out = run(&["app", "add", "alice", "phone"]).unwrap();
        assert!(out.len() == 1 && is_secret(&out[0]), "{out:?}");
        // the new app passwords file: the passwd-file's group and mode (it was root's 0640: the
        // workers could not read it)
        let m = std::fs::metadata(&apps).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        if group {
            assert_eq!(m.gid(), 65534, "the passwd-file's group");
        }
        let phone = out[0].clone();
        let mailer = run(&["app", "add", "alice", "mailer", "--protocols", "smtp", "--networks", "127.0.0.1"]).unwrap();
        assert!(run(&["app", "add", "alice", "phone"]).unwrap_err().contains("already"));
        assert!(run(&["app", "add", "nobody", "phone"]).unwrap_err().contains("no user"));
        run(&["app", "add", "bob", "phone"]).unwrap();
        let text = std::fs::read_to_string(&apps).unwrap();
        assert!(!text.contains(&phone) && !text.contains(&mailer[0]), "only hashes are stored");
        // what the module reads
        let line1 = text.lines().nth(1).unwrap();
        assert!(line1.starts_with("alice:mailer:{SSHA512}"), "{line1}");
        assert!(line1.contains(":protocols=smtp allow_nets=127.0.0.1 created=20"), "{line1}");
        let line0 = text.lines().next().unwrap();
        let hash = line0.split(':').nth(2).unwrap();
        assert!(hash.starts_with("{SSHA512}") && scheme::verify(hash, phone.as_bytes()).unwrap());
        let list = run(&["app", "list", "alice"]).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].starts_with("phone\tprotocols=all\tnetworks=any\tcreated=20"), "{list:?}");
        assert!(list[1].starts_with("mailer\tprotocols=smtp\tnetworks=127.0.0.1\tcreated="), "{list:?}");
        assert!(!list.iter().any(|l| l.contains("SSHA")), "no hashes listed");
        run(&["app", "revoke", "alice", "phone"]).unwrap();
        assert!(run(&["app", "revoke", "alice", "phone"]).unwrap_err().contains("no app password"));
        assert_eq!(run(&["app", "list", "alice"]).unwrap().len(), 1);
        // del takes the user's app passwords along
        let del = Opts { app_file: Some(apps.clone()), ..opts(t.clone(), "del", Some("alice"), None) };
        passwd_file(&users, &del).unwrap();
        assert!(run(&["app", "list", "alice"]).unwrap().is_empty());
        assert_eq!(run(&["app", "list", "bob"]).unwrap().len(), 1);
        // the bound
        for i in 0..MAX_APP_PASSWORDS - 1 {
            run(&["app", "add", "bob", &format!("l{i}")]).unwrap();
        }
        assert!(run(&["app", "add", "bob", "one-more"]).unwrap_err().contains("16 app passwords already"));
    }

    #[test]
    fn an_app_password_added_while_its_user_is_deleted_is_not_left_behind() {
        let d = tmpdir();
        let db = d.join("users.db");
        let t = Target::Sqlite(db.clone());
        sqlite(&db, &opts(t.clone(), "init", None, None)).unwrap();
        sqlite(&db, &opts(t.clone(), "add", Some("alice"), Some("a"))).unwrap();
        // another run's 'del alice', under way (its write transaction not committed yet)
        let other = rusqlite::Connection::open(&db).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; DELETE FROM users WHERE name = 'alice'").unwrap();
        let (db2, t2) = (db.clone(), t.clone());
        let add = std::thread::spawn(move || sqlite(&db2, &app_opts(t2, None, &["app", "add", "alice", "phone"])));
        std::thread::sleep(std::time::Duration::from_millis(300));
        other.execute_batch("DELETE FROM app_passwords WHERE user = 'alice'; COMMIT").unwrap();
        assert!(add.join().unwrap().unwrap_err().contains("no user"), "the add saw the user deleted");
        let left: i64 = other.query_row("SELECT count(*) FROM app_passwords", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "no app password waits for the next user named alice");
    }

    #[test]
    fn app_commands_on_sqlite() {
        let d = tmpdir();
        let db = d.join("users.db");
        let t = Target::Sqlite(db.clone());
        sqlite(&db, &opts(t.clone(), "init", None, None)).unwrap();
        sqlite(&db, &opts(t.clone(), "add", Some("alice"), Some("a"))).unwrap();
        // a database made before app passwords: the table is created by the first 'app add'
        rusqlite::Connection::open(&db).unwrap().execute_batch("DROP TABLE app_passwords").unwrap();
        let run = |args: &[&str]| sqlite(&db, &app_opts(t.clone(), None, args));
        assert!(run(&["app", "list", "alice"]).unwrap().is_empty());
        assert!(run(&["app", "revoke", "alice", "x"]).unwrap_err().contains("no app password"));
        let out = run(&["app", "add", "alice", "phone", "--protocols", "imap"]).unwrap();
        assert!(out.len() == 1 && is_secret(&out[0]), "{out:?}");
        assert!(run(&["app", "add", "alice", "phone"]).unwrap_err().contains("already"));
        assert!(run(&["app", "add", "nobody", "phone"]).unwrap_err().contains("no user"));
        let c = rusqlite::Connection::open(&db).unwrap();
        let (h, p): (String, Option<String>) = c
            .query_row("SELECT password, protocols FROM app_passwords WHERE user = 'alice'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert!(h.starts_with("{SSHA512}") && scheme::verify(&h, out[0].as_bytes()).unwrap());
        assert_eq!(p.as_deref(), Some("imap"));
        let list = run(&["app", "list", "alice"]).unwrap();
        assert!(list.len() == 1 && list[0].starts_with("phone\tprotocols=imap\tnetworks=any\tcreated=20"), "{list:?}");
        run(&["app", "revoke", "alice", "phone"]).unwrap();
        assert!(run(&["app", "list", "alice"]).unwrap().is_empty());
        run(&["app", "add", "alice", "tablet"]).unwrap();
        sqlite(&db, &opts(t.clone(), "del", Some("alice"), None)).unwrap();
        let n: i64 = c.query_row("SELECT count(*) FROM app_passwords", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "del takes the user's app passwords along");
    }
}
