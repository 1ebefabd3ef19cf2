//! htpasswd and Dovecot passwd-file store.
//!
//! Plain Rust, no nginx types.
//!
//! Format, one account per line:
//! * htpasswd: `user:hash`
//! * Dovecot passwd-file: `user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields`
//!   (uid..shell are ignored; `extra_fields` is the rest of the line, ':' included, made of
//!   space-separated `key=value` or bare `key` tokens).
//!
//! Blank lines and lines whose first non-blank character is `#` are skipped; CRLF line ends and
//! a UTF-8 BOM are tolerated. A malformed line (not UTF-8, no ':', empty user, control
//! character in the user, empty password field, an extra field with a bad value) is skipped and
//! reported as a [`StoreNotice`] `"path:line: reason"`; the first definition of a user wins and
//! later ones are reported. User names are case-sensitive.
//!
//! Extra fields understood (all of them are also kept in `Account::extra`):
//! | field | effect |
//! |---|---|
//! | `nologin`, `deny` (bare, or `=yes/y/true/1`) | `enabled = false` |
//! | `allow_nets=CIDR,CIDR` | `networks` (Dovecot's name) |
//! | `host=IP` | `server` (must be an IP literal for nginx; a warning otherwise) |
//! | `port=N` | `port` |
//! | `destuser=NAME` (or `user=NAME`) | `backend_user` (Auth-User); `destuser` wins |
//! | `pass=SECRET` | `backend_pass` (Auth-Pass, master-user setups) |
//! | `protocols=imap,pop3,smtp` | `protocols` (this module's own field) |
//! | `wait=SECONDS` | `wait` (this module's own field) |
//! | `nopassword` | **ignored** with a warning: the password is always checked |
//!
//! A bad `allow_nets`/`port`/`protocols`/`wait` value skips the whole line (fail closed).
//! A password whose scheme is unknown or malformed is reported at load (once per load); the
//! user is kept and every login of it fails (result `scheme-error`).
//!
//! Reloading: `lookup` stats the file at most once per check interval (default 1 s) and re-reads
//! it when (device, inode, size, mtime, ctime) changed, so both in-place edits and an atomic
//! rename are picked up. If the file disappears or cannot be read, lookups fail with
//! [`StoreError`] (a temporary failure, never stale data) until it is readable again.
//! [`PasswdFile::open`] itself fails if the file cannot be read (a configuration-time error).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{lock, Account, FileId, NoticeLevel, Query, Store, StoreError, StoreNotice};
use crate::policy::Cidr;
use crate::protocol::{parse_server, Protocol};

/// Default interval between two `stat()` calls on the file.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many per-line notices per load; the rest are counted.
const MAX_LINE_NOTICES: usize = 50;

type Users = Arc<HashMap<String, Account>>;

struct Inner {
    /// The parsed file, or why it cannot be used.
    users: Result<Users, String>,
    /// Identity of the file `users` was read from.
    id: Option<FileId>,
    last_check: Option<Instant>,
}

/// An htpasswd / Dovecot passwd-file store, re-read when the file changes.
pub struct PasswdFile {
    path: PathBuf,
    check_interval: Duration,
    inner: Mutex<Inner>,
    notices: Mutex<Vec<StoreNotice>>,
    generation: AtomicU64,
}

struct Loaded {
    id: FileId,
    users: HashMap<String, Account>,
    notices: Vec<StoreNotice>,
}

impl PasswdFile {
    /// Reads the file. Fails (configuration error) if it cannot be opened or read; malformed
    /// lines are not an error but notices (see [`Store::take_notices`]).
    pub fn open(path: impl AsRef<Path>) -> Result<PasswdFile, StoreError> {
        let path = path.as_ref().to_path_buf();
        let store = PasswdFile {
            path,
            check_interval: DEFAULT_CHECK_INTERVAL,
            inner: Mutex::new(Inner {
                users: Err("not loaded".to_string()),
                id: None,
                last_check: None,
            }),
            notices: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
        };
        let loaded = load(&store.path).map_err(|cause| store.error(cause))?;
        let n = loaded.users.len();
        {
            let mut inner = lock(&store.inner);
            inner.users = Ok(Arc::new(loaded.users));
            inner.id = Some(loaded.id);
            inner.last_check = Some(Instant::now());
        }
        store.generation.fetch_add(1, Ordering::SeqCst);
        let mut notices = loaded.notices;
        notices.push(StoreNotice {
            level: NoticeLevel::Info,
            message: format!("{}: loaded {} users", store.path.display(), n),
        });
        lock(&store.notices).extend(notices);
        Ok(store)
    }

    /// Sets how often the file is checked for changes (0: on every lookup).
    pub fn with_check_interval(mut self, interval: Duration) -> PasswdFile {
        self.check_interval = interval;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of accounts currently loaded (`None` while the file is unusable).
    pub fn user_count(&self) -> Option<usize> {
        lock(&self.inner).users.as_ref().ok().map(|u| u.len())
    }

    fn error(&self, cause: String) -> StoreError {
        StoreError {
            source: self.describe(),
            cause,
        }
    }

    fn notice(&self, level: NoticeLevel, message: String) {
        lock(&self.notices).push(StoreNotice { level, message });
    }

    fn set_broken(&self, inner: &mut Inner, cause: String) {
        if inner.users.as_ref().err() == Some(&cause) {
            return;
        }
        self.notice(
            NoticeLevel::Error,
            format!(
                "{}: {}; answering with a temporary failure",
                self.path.display(),
                cause
            ),
        );
        inner.users = Err(cause);
        inner.id = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Re-reads the file if the check interval has passed and the file changed.
    fn refresh(&self, inner: &mut Inner) {
        let now = Instant::now();
        if let Some(last) = inner.last_check {
            if now.saturating_duration_since(last) < self.check_interval {
                return;
            }
        }
        inner.last_check = Some(now);

        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                self.set_broken(inner, format!("cannot stat: {e}"));
                return;
            }
        };
        if inner.users.is_ok() && inner.id == Some(FileId::of(&meta)) {
            return;
        }
        let was_broken = inner.users.is_err();
        match load(&self.path) {
            Ok(loaded) => {
                let n = loaded.users.len();
                inner.users = Ok(Arc::new(loaded.users));
                inner.id = Some(loaded.id);
                self.generation.fetch_add(1, Ordering::SeqCst);
                let mut notices = loaded.notices;
                notices.push(StoreNotice {
                    level: NoticeLevel::Info,
                    message: format!(
                        "{}: {} {} users",
                        self.path.display(),
                        if was_broken {
                            "readable again, loaded"
                        } else {
                            "changed, reloaded"
                        },
                        n
                    ),
                });
                lock(&self.notices).extend(notices);
            }
            Err(cause) => self.set_broken(inner, cause),
        }
    }
}

fn load(path: &Path) -> Result<Loaded, String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    let (users, notices) = parse(&path.display().to_string(), &data);
    Ok(Loaded {
        id: FileId::of(&meta),
        users,
        notices,
    })
}

fn flag_set(value: &str) -> bool {
    // Bare key or a yes-like value sets the flag; an explicit no-like value clears it; any other
    // value sets it (fail closed).
    !matches!(
        value.to_ascii_lowercase().as_str(),
        "n" | "no" | "false" | "0"
    )
}

/// Applies the extra fields to `acct`; `Err(reason)` skips the line, `warnings` are logged.
fn apply_extra(acct: &mut Account, extra: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    let mut destuser = None;
    let mut user = None;
    for tok in extra.split_whitespace() {
        let (key, value) = match tok.split_once('=') {
            Some((k, v)) => (k, v),
            None => (tok, ""),
        };
        match key {
            "nologin" | "deny" if flag_set(value) => acct.enabled = false,
            "allow_nets" => {
                let nets = Cidr::parse_list(value).map_err(|e| format!("bad allow_nets: {e}"))?;
                acct.networks = Some(nets);
            }
            "host" => {
                if parse_server(value).is_none() {
                    warnings.push(format!(
                        "host={value} is not an IP address; nginx needs one, logins will fail \
                         with a temporary error"
                    ));
                }
                acct.server = Some(value.to_string());
            }
            "port" => {
                let p = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0 && value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("bad port={value}"))?;
                acct.port = Some(p);
            }
            "destuser" => destuser = Some(value.to_string()),
            "user" => user = Some(value.to_string()),
            "pass" => acct.backend_pass = Some(value.to_string()),
            "protocols" => {
                let mut list = Vec::new();
                for name in value.split(',').filter(|s| !s.is_empty()) {
                    let p = Protocol::parse(name.as_bytes())
                        .ok_or_else(|| format!("bad protocols={value}: unknown protocol {name}"))?;
                    if !list.contains(&p) {
                        list.push(p);
                    }
                }
                acct.protocols = Some(list);
            }
            "wait" => {
                let w = value
                    .parse::<u32>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("bad wait={value}"))?;
                acct.wait = Some(w);
            }
            "nopassword" => warnings.push(
                "nopassword is not supported and ignored: the password is always checked"
                    .to_string(),
            ),
            _ => {}
        }
        acct.extra.push((key.to_string(), value.to_string()));
    }
    if let Some(u) = destuser.or(user) {
        if u.is_empty() {
            return Err("empty destuser/user field".to_string());
        }
        acct.backend_user = Some(u);
    }
    Ok(())
}

/// Parses one non-blank, non-comment line into (user, account).
/// (`pub` for the fuzz targets in fuzz/.)
pub fn parse_line(line: &str, warnings: &mut Vec<String>) -> Result<(String, Account), String> {
    let mut parts = line.splitn(8, ':');
    let user = parts.next().unwrap_or("");
    let pass = parts
        .next()
        .ok_or_else(|| "no ':' after the user name".to_string())?;
    if user.is_empty() {
        return Err("empty user name".to_string());
    }
    if user.chars().any(char::is_control) {
        return Err("control character in the user name".to_string());
    }
    if pass.is_empty() {
        return Err(format!("user \"{user}\": empty password field"));
    }
    let mut acct = Account {
        name: user.to_string(),
        password: pass.to_string(),
        enabled: true,
        ..Account::default()
    };
    // uid, gid, gecos, home, shell
    for _ in 0..5 {
        parts.next();
    }
    if let Some(extra) = parts.next() {
        apply_extra(&mut acct, extra, warnings).map_err(|e| format!("user \"{user}\": {e}"))?;
    }
    Ok((user.to_string(), acct))
}

/// Parses a whole file's content (`name` prefixes the notices): the users, first definition
/// winning, and the notices for the log. (`pub` for the fuzz targets in fuzz/.)
pub fn parse(name: &str, data: &[u8]) -> (HashMap<String, Account>, Vec<StoreNotice>) {
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let mut users: HashMap<String, Account> = HashMap::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut notices = Vec::new();
    let mut suppressed = 0usize;
    let mut push = |notices: &mut Vec<StoreNotice>, level, msg: String| {
        if notices.len() < MAX_LINE_NOTICES {
            notices.push(StoreNotice {
                level,
                message: msg,
            });
        } else {
            suppressed += 1;
        }
    };

    for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(_) => {
                push(
                    &mut notices,
                    NoticeLevel::Error,
                    format!("{name}:{lineno}: not valid UTF-8, line skipped"),
                );
                continue;
            }
        };
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut warnings = Vec::new();
        match parse_line(line, &mut warnings) {
            Ok((user, acct)) => {
                if let Some(first) = first_line.get(&user) {
                    push(
                        &mut notices,
                        NoticeLevel::Warn,
                        format!(
                            "{name}:{lineno}: duplicate user \"{user}\" (first defined on line \
                             {first}), line skipped"
                        ),
                    );
                    continue;
                }
                if crate::scheme::scheme_name(&acct.password) == "unknown" {
                    warnings.push(
                        "unknown or malformed password scheme, this user cannot log in".to_string(),
                    );
                }
                for w in warnings {
                    push(
                        &mut notices,
                        NoticeLevel::Warn,
                        format!("{name}:{lineno}: user \"{user}\": {w}"),
                    );
                }
                first_line.insert(user.clone(), lineno);
                users.insert(user, acct);
            }
            Err(reason) => {
                push(
                    &mut notices,
                    NoticeLevel::Error,
                    format!("{name}:{lineno}: {reason}, line skipped"),
                );
            }
        }
    }
    if suppressed > 0 {
        notices.push(StoreNotice {
            level: NoticeLevel::Error,
            message: format!("{name}: {suppressed} more problems not shown"),
        });
    }
    (users, notices)
}

impl Store for PasswdFile {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        let users = {
            let mut inner = lock(&self.inner);
            self.refresh(&mut inner);
            match &inner.users {
                Ok(u) => Arc::clone(u),
                Err(cause) => return Err(self.error(cause.clone())),
            }
        };
        Ok(users.get(q.user).cloned())
    }

    fn take_notices(&self) -> Vec<StoreNotice> {
        std::mem::take(&mut *lock(&self.notices))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn describe(&self) -> String {
        format!("passwd file \"{}\"", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Method;
    use std::io::Write;
    use std::process::Command;
    use std::sync::atomic::AtomicUsize;

    /// A private temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ngx-mail-auth-pwf-{}-{}-{}",
                std::process::id(),
                tag,
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn file(&self, name: &str, content: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            let mut f = File::create(&p).unwrap();
            f.write_all(content).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn q(user: &str) -> Query<'_> {
        Query {
            user,
            protocol: Protocol::Imap,
            method: Method::Plain,
            client_ip: None,
            local_ip: None,
        }
    }

    fn open0(p: &Path) -> PasswdFile {
        PasswdFile::open(p)
            .unwrap()
            .with_check_interval(Duration::ZERO)
    }

    fn messages(s: &PasswdFile) -> Vec<String> {
        s.take_notices().into_iter().map(|n| n.message).collect()
    }

    const HTPASSWD: &str = include_str!("../../testdata/passwd/htpasswd");
    const USERS: &str = include_str!("../../testdata/passwd/users.passwd");

    #[test]
    fn htpasswd_fixture() {
        let d = TempDir::new("ht");
        let s = open0(&d.file("h", HTPASSWD.as_bytes()));
        assert_eq!(s.user_count(), Some(4));
        let a = s.lookup(&q("alice")).unwrap().unwrap();
        assert_eq!(
            a.password,
            "$2y$04$jjzhaQXhCvZR1YmZd9of2.lNGelq9SiOOD/PmR.QtKZB75oPDCSdy"
        );
        assert!(a.enabled);
        assert_eq!(a.server, None);
        assert_eq!(a.networks, None);
        assert_eq!(
            s.lookup(&q("bob")).unwrap().unwrap().password,
            "$apr1$.9Cty788$CB9z.OcWWVUOnQVzPNLGD1"
        );
        assert_eq!(
            s.lookup(&q("carol")).unwrap().unwrap().password,
            "{SHA}wgpYEjJDLC+2ATkar1uYUyuPRRc="
        );
        assert!(s.lookup(&q("j\u{fc}rgen")).unwrap().is_some());
        assert_eq!(
            s.lookup(&q("Alice")).unwrap(),
            None,
            "user names are case-sensitive"
        );
        assert_eq!(s.lookup(&q("nobody")).unwrap(), None);
        assert_eq!(s.lookup(&q("")).unwrap(), None);
        let m = messages(&s);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].ends_with(": loaded 4 users"), "{m:?}");
        assert_eq!(
            s.describe(),
            format!("passwd file \"{}\"", d.0.join("h").display())
        );
    }

    #[test]
    fn dovecot_fixture_extra_fields() {
        let d = TempDir::new("dc");
        let s = open0(&d.file("u", USERS.as_bytes()));
        assert_eq!(s.user_count(), Some(4));
        let dave = s.lookup(&q("dave")).unwrap().unwrap();
        assert!(dave
            .password
            .starts_with("{SHA512-CRYPT}$6$LzeEwkxKIYLgassY$"));
        assert!(
            dave.password.ends_with("1oL."),
            "password field ends at the next ':'"
        );
        assert_eq!(
            dave.networks,
            Some(vec![
                Cidr::parse("127.0.0.0/8").unwrap(),
                Cidr::parse("::1").unwrap()
            ])
        );
        assert_eq!(dave.server.as_deref(), Some("127.0.0.1"));
        assert_eq!(dave.port, Some(10143));
        assert_eq!(dave.backend_user.as_deref(), Some("dave@backend"));
        assert!(dave.enabled);
        assert_eq!(dave.extra.len(), 4);
        assert_eq!(dave.extra[2], ("port".to_string(), "10143".to_string()));

        let erin = s.lookup(&q("erin")).unwrap().unwrap();
        assert!(!erin.enabled);
        assert_eq!(
            erin.extra,
            vec![
                ("nologin".into(), "".into()),
                ("reason".into(), "moved".into())
            ]
        );

        let frank = s.lookup(&q("frank")).unwrap().unwrap();
        assert_eq!(frank.protocols, Some(vec![Protocol::Imap, Protocol::Smtp]));
        assert_eq!(frank.wait, Some(7));
        assert!(
            frank
                .extra
                .contains(&("userdb_quota_rule".into(), "*:storage=1G".into())),
            "':' inside extra fields is kept: {:?}",
            frank.extra
        );

        let gina = s.lookup(&q("gina")).unwrap().unwrap();
        assert_eq!(gina.password, "{PLAIN}gina pw");
        assert!(gina.extra.is_empty());
    }

    #[test]
    fn real_htpasswd_tool() {
        // Shell out to apache2-utils' htpasswd when present (fixtures cover the rest).
        let d = TempDir::new("tool");
        let p = d.0.join("ht");
        let run = |args: &[&str]| Command::new("htpasswd").args(args).output();
        let first = run(&[
            "-c",
            "-b",
            "-B",
            "-C",
            "4",
            p.to_str().unwrap(),
            "u1",
            "pw one",
        ]);
        let Ok(out) = first else {
            eprintln!("htpasswd not installed; skipped");
            return;
        };
        assert!(out.status.success());
        for (flag, user) in [("-m", "u2"), ("-s", "u3"), ("-2", "u4"), ("-5", "u5")] {
            let out = run(&["-b", flag, p.to_str().unwrap(), user, "pw"]).unwrap();
            assert!(out.status.success(), "htpasswd {flag}: {out:?}");
        }
        let s = open0(&p);
        assert_eq!(s.user_count(), Some(5));
        let prefix = |u: &str| s.lookup(&q(u)).unwrap().unwrap().password;
        assert!(prefix("u1").starts_with("$2y$04$"));
        assert!(prefix("u2").starts_with("$apr1$"));
        assert!(prefix("u3").starts_with("{SHA}"));
        assert!(prefix("u4").starts_with("$5$"));
        assert!(prefix("u5").starts_with("$6$"));
        // htpasswd -D rewrites the file: the store follows.
        let out = run(&["-D", p.to_str().unwrap(), "u3"]).unwrap();
        assert!(out.status.success());
        assert_eq!(s.lookup(&q("u3")).unwrap(), None);
        assert_eq!(s.user_count(), Some(4));
    }

    #[test]
    fn malformed_lines_reported_with_line_numbers() {
        let d = TempDir::new("bad");
        let content = "# comment\n\
                       \n   \n\
                       \t# indented comment\n\
                       good:{PLAIN}x\n\
                       nocolon\n\
                       :{PLAIN}nouser\n\
                       emptypass:\n\
                       emptypass2::1000:1000::/home::\n\
                       good:{PLAIN}second\n\
                       badnet:{PLAIN}x::::::allow_nets=10.0.0.0/99\n\
                       badport:{PLAIN}x::::::port=0\n\
                       badproto:{PLAIN}x::::::protocols=imap,http\n\
                       badwait:{PLAIN}x::::::wait=-1\n\
                       hostname:{PLAIN}x::::::host=mail.example.com nopassword\n\
                       ctl\u{7}user:{PLAIN}x\n\
                       odd:{NOSUCH}abc\n\
                       last:{PLAIN}y";
        let mut data = content.as_bytes().to_vec();
        data.extend_from_slice(b"\nbin\xffary:{PLAIN}x\n");
        let path = d.file("m", &data);
        let s = open0(&path);
        let n = path.display().to_string();
        let m = messages(&s);
        let expect = [
            format!("{n}:6: no ':' after the user name, line skipped"),
            format!("{n}:7: empty user name, line skipped"),
            format!("{n}:8: user \"emptypass\": empty password field, line skipped"),
            format!("{n}:9: user \"emptypass2\": empty password field, line skipped"),
            format!("{n}:10: duplicate user \"good\" (first defined on line 5), line skipped"),
            format!("{n}:11: user \"badnet\": bad allow_nets: \"10.0.0.0/99\": prefix /99 too long for IPv4, line skipped"),
            format!("{n}:12: user \"badport\": bad port=0, line skipped"),
            format!("{n}:13: user \"badproto\": bad protocols=imap,http: unknown protocol http, line skipped"),
            format!("{n}:14: user \"badwait\": bad wait=-1, line skipped"),
            format!("{n}:15: user \"hostname\": host=mail.example.com is not an IP address; nginx needs one, logins will fail with a temporary error"),
            format!("{n}:15: user \"hostname\": nopassword is not supported and ignored: the password is always checked"),
            format!("{n}:16: control character in the user name, line skipped"),
            format!("{n}:17: user \"odd\": unknown or malformed password scheme, this user cannot log in"),
            format!("{n}:19: not valid UTF-8, line skipped"),
            format!("{n}: loaded 4 users"),
        ];
        assert_eq!(m, expect);
        assert_eq!(
            s.lookup(&q("good")).unwrap().unwrap().password,
            "{PLAIN}x",
            "first wins"
        );
        assert_eq!(s.lookup(&q("last")).unwrap().unwrap().password, "{PLAIN}y");
        assert!(s.lookup(&q("hostname")).unwrap().is_some());
        assert!(
            s.lookup(&q("odd")).unwrap().is_some(),
            "kept: fails as scheme-error"
        );
        assert_eq!(s.lookup(&q("badnet")).unwrap(), None);
    }

    #[test]
    fn crlf_and_bom_tolerated() {
        let d = TempDir::new("crlf");
        let s = open0(&d.file(
            "c",
            b"\xef\xbb\xbfa:{PLAIN}one\r\n# c\r\n\r\nb:{PLAIN}two::::::wait=3\r\n",
        ));
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}one");
        let b = s.lookup(&q("b")).unwrap().unwrap();
        assert_eq!(b.password, "{PLAIN}two");
        assert_eq!(b.wait, Some(3));
        assert_eq!(messages(&s).len(), 1);
    }

    #[test]
    fn open_missing_file_is_an_error() {
        let d = TempDir::new("missing");
        let e = PasswdFile::open(d.0.join("nope")).err().unwrap();
        assert!(e.source.contains("nope"), "{e}");
        assert!(e.cause.starts_with("cannot open: "), "{e}");
        let e = PasswdFile::open(&d.0).err().unwrap();
        assert_eq!(e.cause, "not a regular file");
    }

    #[test]
    fn atomic_rename_picked_up() {
        let d = TempDir::new("rename");
        let p = d.file("users", b"a:{PLAIN}old\n");
        let s = open0(&p);
        let g0 = s.generation();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}old");
        assert_eq!(s.generation(), g0, "unchanged file is not re-read");
        // Same size, new inode: only the identity tells.
        let tmp = d.file("users.tmp", b"a:{PLAIN}new\n");
        fs::rename(&tmp, &p).unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}new");
        assert!(s.generation() > g0);
        let m = messages(&s);
        assert!(
            m.last().unwrap().ends_with(": changed, reloaded 1 users"),
            "{m:?}"
        );
    }

    #[test]
    fn in_place_edit_picked_up() {
        let d = TempDir::new("edit");
        let p = d.file("users", b"a:{PLAIN}old\n");
        let s = open0(&p);
        fs::write(&p, b"a:{PLAIN}old\nb:{PLAIN}added\n").unwrap();
        assert!(s.lookup(&q("b")).unwrap().is_some());
    }

    #[test]
    fn deletion_fails_closed_then_recovers() {
        let d = TempDir::new("del");
        let p = d.file("users", b"a:{PLAIN}pw\n");
        let s = open0(&p);
        let _ = messages(&s);
        let g0 = s.generation();
        fs::remove_file(&p).unwrap();
        let e = s.lookup(&q("a")).unwrap_err();
        assert!(e.cause.starts_with("cannot stat: "), "{e}");
        assert!(e.to_string().starts_with("passwd file \""), "{e}");
        // Unknown users too: never a plain "no such user" while broken.
        assert!(s.lookup(&q("zzz")).is_err());
        assert_eq!(s.user_count(), None);
        assert!(s.generation() > g0);
        let m = s.take_notices();
        assert_eq!(m.len(), 1, "broken state reported once: {m:?}");
        assert_eq!(m[0].level, NoticeLevel::Error);
        // Restored: served again.
        fs::write(&p, b"a:{PLAIN}back\n").unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}back");
        let m = messages(&s);
        assert!(
            m.last()
                .unwrap()
                .ends_with(": readable again, loaded 1 users"),
            "{m:?}"
        );
    }

    #[test]
    fn unreadable_file_fails_closed() {
        let d = TempDir::new("dir");
        let p = d.file("users", b"a:{PLAIN}pw\n");
        let s = open0(&p);
        // Replace the file by a directory: stat works, reading does not.
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        let e = s.lookup(&q("a")).unwrap_err();
        assert_eq!(e.cause, "not a regular file");
    }

    #[test]
    fn check_interval_limits_stats() {
        let d = TempDir::new("interval");
        let p = d.file("users", b"a:{PLAIN}old\n");
        let s = PasswdFile::open(&p)
            .unwrap()
            .with_check_interval(Duration::from_secs(3600));
        fs::remove_file(&p).unwrap();
        // Within the interval the loaded data is used without touching the file.
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}old");
    }

    #[test]
    fn many_users_fast() {
        let d = TempDir::new("big");
        let mut data = String::with_capacity(100_000 * 40);
        for i in 0..100_000 {
            data.push_str(&format!("user{i}@example.com:{{PLAIN}}pw{i}\n"));
        }
        let p = d.file("big", data.as_bytes());
        let t = Instant::now();
        let s = open0(&p);
        let load = t.elapsed();
        assert_eq!(s.user_count(), Some(100_000));
        let t = Instant::now();
        for i in (0..100_000).step_by(997) {
            let u = format!("user{i}@example.com");
            assert_eq!(
                s.lookup(&q(&u)).unwrap().unwrap().password,
                format!("{{PLAIN}}pw{i}")
            );
        }
        let lookups = t.elapsed();
        // Generous bounds (debug build): the point is "no quadratic behaviour".
        assert!(load < Duration::from_secs(5), "load took {load:?}");
        assert!(lookups < Duration::from_secs(1), "lookups took {lookups:?}");
    }

    #[test]
    fn notice_flood_capped() {
        let d = TempDir::new("flood");
        let data = "bad\n".repeat(500);
        let s = open0(&d.file("f", data.as_bytes()));
        let m = messages(&s);
        assert_eq!(m.len(), MAX_LINE_NOTICES + 2);
        assert!(
            m[MAX_LINE_NOTICES].ends_with(": 450 more problems not shown"),
            "{m:?}"
        );
    }

    #[test]
    fn extra_field_mapping() {
        let mut w = Vec::new();
        let (u, a) = parse_line(
            "x:{PLAIN}p:::::: user=alias destuser=real pass=master deny=no",
            &mut w,
        )
        .unwrap();
        assert_eq!(u, "x");
        assert_eq!(a.name, "x", "the account's name is its user field");
        assert_eq!(
            a.backend_user.as_deref(),
            Some("real"),
            "destuser wins over user"
        );
        assert_eq!(a.backend_pass.as_deref(), Some("master"));
        assert!(a.enabled, "deny=no does not disable");
        let (_, a) = parse_line("x:{PLAIN}p::::::user=alias deny=yes", &mut w).unwrap();
        assert_eq!(a.backend_user.as_deref(), Some("alias"));
        assert!(!a.enabled);
        let (_, a) = parse_line("x:{PLAIN}p::::::nologin=whatever", &mut w).unwrap();
        assert!(!a.enabled, "unknown flag value fails closed");
        let (_, a) = parse_line("x:{PLAIN}p::::::allow_nets=", &mut w).unwrap();
        assert_eq!(a.networks, Some(vec![]), "empty allow_nets allows nowhere");
        assert!(parse_line("x:{PLAIN}p::::::destuser=", &mut w).is_err());
        assert!(parse_line("x:{PLAIN}p::::::port=+1", &mut w).is_err());
        assert!(parse_line("x:{PLAIN}p::::::port=65536", &mut w).is_err());
        // Fewer than 8 fields: no extras.
        let (_, a) = parse_line("x:{PLAIN}p:1000:1000", &mut w).unwrap();
        assert!(a.extra.is_empty());
        assert!(w.is_empty());
    }
}
