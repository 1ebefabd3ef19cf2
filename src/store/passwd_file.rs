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
//! Blank lines and lines whose first non-blank character is `#` are skipped (so is a user
//! disabled by `mail-auth-user disable`, whose line starts with `#disabled# `); CRLF line ends
//! and a UTF-8 BOM are tolerated. A malformed line (not UTF-8, no ':', empty user, control
//! character in the user, empty password field, an extra field with a bad value) is skipped and
//! reported as a [`StoreNotice`] `"path:line: reason"`; the first definition of a user wins and
//! later ones are reported. User names are case-sensitive.
//!
//! Extra fields understood (all of them are also kept in `Account::extra`):
//! | field | effect |
//! |---|---|
//! | `nologin` (any value, as in Dovecot: `nologin=no` too), `fail`, `noauthenticate` | `enabled = false` (Dovecot refuses these logins) |
//! | `deny` (bare, or `=yes/y/true/1`) | `enabled = false` |
//! | `allow_nets=CIDR,CIDR` | `networks` (Dovecot's name) |
//! | `allow_real_nets=CIDR,CIDR` | `real_networks`: checked against `Client-IP`, the address nginx's connection came from |
//! | `delay_until=UNIXTIME[+N]` | `delay_until`: refused while it is more than 5 minutes ahead (as Dovecot fails it); not delayed otherwise |
//! | `host=IP` | `server` (must be an IP literal for nginx; a warning otherwise) |
//! | `port=N` | `port` |
//! | `destuser=NAME` (or `user=NAME`) | `backend_user` (Auth-User); `destuser` wins |
//! | `pass=SECRET` | `backend_pass` (Auth-Pass, master-user setups) |
//! | `protocols=imap,pop3,smtp` | `protocols` (this module's own field) |
//! | `wait=SECONDS` | `wait` (this module's own field) |
//! | `client_cert=required` (bare `client_cert` too; `optional`: not required) | `require_client_cert` (this module's own field; see `policy`) |
//! | `cert_fingerprint=SHA1` | the only certificate the account accepts (EXTERNAL, `client_cert=required`) |
//! | `app_only` (bare: every protocol) or `app_only=imap,pop3` | `app_only`: the main password is refused there, only app passwords (this module's own field) |
//! | `nopassword` | **ignored** with a warning: the password is always checked |
//!
//! A bad `allow_nets`/`allow_real_nets`/`delay_until`/`port`/`protocols`/`wait`/`client_cert`
//! value skips the whole line (fail closed).
//! A password whose scheme is unknown or malformed is reported at load (once per load); the
//! user is kept and every login of it fails (result `scheme-error`).
//!
//! App passwords (`mail_auth_app_passwords PATH`, [`PasswdFile::with_app_passwords`]) live in
//! a file of their own, re-read like this one (its own watcher), several lines per user:
//! `user:label:{SCHEME}hash[:fields]`, `fields` space-separated `protocols=imap,smtp`,
//! `allow_nets=CIDR,CIDR` (others, such as `created=`, are ignored). `label`: see
//! [`super::valid_label`]. A malformed line (or a bad field value) is skipped with a notice
//! (fail closed: that credential does not log in), so is a second line with the same user and
//! label, and any line beyond [`super::MAX_APP_PASSWORDS`] of one user. The main file may give
//! an account the extra field `app_only` (bare: every protocol; or `app_only=imap,pop3`): its
//! main password is not accepted there, only its app passwords. A missing or unreadable app
//! file is a temporary failure for every login, as the main file.
//!
//! In memory: the file's bytes once, plus a hash table of (top 32 bits of the user name's
//! hash, where its line starts), 8 bytes a place and at most 3/4 full (11-22 bytes per user);
//! a lookup finds the line (comparing the name, so hash collisions are harmless) and parses
//! that one line. Every line is parsed once at load, for
//! the notices.
//!
//! Reloading: [`PasswdFile::open`] reads the file synchronously (a configuration-time error if it
//! cannot, so `nginx -t` reports it); a file caught while being written (changed less than 2 s
//! ago, its last line without a line end, or with no user) is held as the re-reads below hold it,
//! failing closed (see [`PasswdFile::open`]). After that, [`Store::lookup`] never reads the file: it
//! answers from the current snapshot, an immutable `Arc` swapped whole. In each process the first
//! lookup starts a watcher thread (`mail-auth-watch`; nginx forks its workers after the
//! configuration is loaded, and threads do not survive a fork), which `stat()`s the file every
//! check interval (default 1 s) and, when (device, inode, size, mtime, ctime) changed, reads and
//! parses it off the event loop, then swaps the snapshot in; the old snapshot answers meanwhile.
//! Both in-place edits and an atomic rename are picked up. If the file disappears or cannot be
//! read (missing, a directory, no permission), lookups fail with [`StoreError`] (a temporary
//! failure, never stale data, never "no such user") from the next check on until it is readable
//! again.
//!
//! That first lookup in a process also `stat()`s the file itself: the snapshot it inherited may
//! be older than the check interval (a worker started long after the configuration was loaded).
//! It opens an unchanged file too: the snapshot was read by nginx's master, as root, and a
//! worker (another user) that may not read it would otherwise find out only at the file's first
//! change. A missing or unreadable file fails closed at once; a changed file up to
//! [`INLINE_RELOAD_MAX`] bytes is re-read right there (a few milliseconds), a bigger one makes
//! lookups fail with a temporary failure until the watcher has read it, rather than answer from
//! the old content. If the thread cannot be started, a notice says so and lookups check the
//! file themselves, as a check interval of zero (tests) also does.

#![forbid(unsafe_code)]

use ahash::RandomState;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::slots::Slots;
use super::sql_row::SeenOnce;
use super::watch::{self, Events, FileId, FileWatch, Seen, Stop};
use super::{
    lock, valid_label, Account, AppPassword, NoticeLevel, Query, Store, StoreError, StoreNotice, MAX_APP_PASSWORDS,
};
use crate::cidr::Cidr;
use crate::protocol::{parse_server, Protocol};
use crate::scheme;

/// Default interval between two `stat()` calls on the file.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A file changed since the snapshot a new process inherited is re-read by its first lookup when
/// it is at most this big (about 5000 users: a few milliseconds); see the module documentation.
pub const INLINE_RELOAD_MAX: u64 = 256 * 1024;

/// At most this many per-line notices per load; the rest are counted.
const MAX_LINE_NOTICES: usize = 50;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// One loaded file: its bytes and the index of its accounts. Never changed once built.
struct Users {
    kind: Kind,
    data: Box<[u8]>,
    /// Where the accounts' lines start, by the hash of their user name (see [`Slots`]). A
    /// lookup reads one place of this table and the line: two cache misses where a binary
    /// search over sorted hashes made ~17 steps (with 100,000 users its misses were most of a
    /// lookup's time).
    slots: Slots,
    hasher: RandomState,
    /// The stored password with the highest [`scheme::cost_estimate`].
    template: Option<Arc<str>>,
    /// Where the malformed first definitions of users start (see `index`): indexed, so their
    /// names are taken, but not accounts (not counted, not listed).
    held: HashMap<u32, String>,
    /// The last line, without a line end, of a file read at start or reload while it was
    /// being written (see [`PasswdFile::open`]): not in `data`, its user a temporary failure.
    cut: Option<CutLine>,
}

/// The user field of a last line held back (see [`Users::cut`]): the whole name if the line
/// has its ':', else what came of it so far (every name it begins may be that line's user).
struct CutLine {
    name: Box<[u8]>,
    whole: bool,
}

impl CutLine {
    /// Of the data after the last line end: `None` if it holds no user (blank, a comment).
    fn of(tail: &[u8]) -> Option<CutLine> {
        let tail = tail.strip_prefix(BOM).unwrap_or(tail);
        let trimmed = tail.trim_ascii_start();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            return None;
        }
        let name = user_field(tail);
        Some(CutLine { name: name.into(), whole: name.len() < tail.len() })
    }

    fn may_be(&self, user: &str) -> bool {
        match self.whole {
            true => *self.name == *user.as_bytes(),
            false => user.as_bytes().starts_with(&self.name),
        }
    }
}

/// Why the user of a held last line cannot log in yet.
const BEING_WRITTEN: &str = "it may be the file's last line, without a line end, and the file changed less than \
                             2 s ago (being written?): a temporary failure until the file has not changed for 2 s";

/// What a file holds: accounts (`mail_auth_passwd_file`) or app passwords
/// (`mail_auth_app_passwords`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Accounts,
    AppPasswords,
}

/// The user field of the line starting at `start` if it is at most `max` bytes long (`None`
/// if longer: not the name asked for), found without reading the rest of the line.
fn name_at(data: &[u8], start: usize, max: usize) -> Option<&[u8]> {
    let rest = data.get(start..)?;
    let head = &rest[..rest.len().min(max.saturating_add(2))];
    let end = head.iter().position(|&b| b == b':' || b == b'\n').unwrap_or(head.len());
    let name = &head[..end];
    let name = if head.get(end) == Some(&b'\n') { name.strip_suffix(b"\r").unwrap_or(name) } else { name };
    (name.len() <= max && (end < head.len() || head.len() == rest.len())).then_some(name)
}

/// A line longer than this is malformed (its user's first line, that user held): never
/// parsed, its extra fields never made into strings, not read again at lookups.
pub const MAX_LINE: usize = 64 * 1024;

/// The line starting at `start`, without its line end.
fn line_at(data: &[u8], start: usize) -> &[u8] {
    let rest = &data[start.min(data.len())..];
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => &rest[..end],
        None => rest,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The user field of a line: up to the first ':'.
fn user_field(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b':') {
        Some(i) => &line[..i],
        None => line,
    }
}

impl Users {
    fn len(&self) -> usize {
        self.slots.len() - self.held.len()
    }

    /// The lines whose hash looks like `user`'s (other names may share it), in file order.
    fn candidates(&self, user: &str) -> impl Iterator<Item = &[u8]> + '_ {
        self.slots.candidates(self.hasher.hash_one(user.as_bytes())).map(|at| line_at(&self.data, at as usize))
    }

    /// The account of `user` (its `name` empty: it is `user`): `None` if there is none,
    /// `Some(Err)` if its first line is malformed (held, see `index`: not read again, however
    /// long it is).
    fn get(&self, user: &str) -> Option<Result<Box<Account>, String>> {
        for at in self.slots.candidates(self.hasher.hash_one(user.as_bytes())) {
            if let Some(why) = self.held.get(&at) {
                if name_at(&self.data, at as usize, user.len()) == Some(user.as_bytes()) {
                    return Some(Err(format!("its first line is malformed: {why}")));
                }
                continue;
            }
            let line = line_at(&self.data, at as usize);
            if user_field(line) == user.as_bytes() {
                return Some(self.account(line, false));
            }
        }
        self.cut_holds(user).map(Err)
    }

    /// Why `user` cannot be answered for: it may be the user of the last line, held.
    fn cut_holds(&self, user: &str) -> Option<String> {
        self.cut.as_ref().filter(|c| c.may_be(user)).map(|_| BEING_WRITTEN.to_string())
    }

    /// The app passwords of `user`, in file order (all parsed at load); `Err` if the held
    /// last line may be one of them.
    fn app_passwords(&self, user: &str) -> Result<Vec<AppPassword>, String> {
        if let Some(why) = self.cut_holds(user) {
            return Err(format!("an app password of this user: {why}"));
        }
        let mut out = Vec::new();
        for line in self.candidates(user) {
            if user_field(line) == user.as_bytes() {
                if let Some(a) = std::str::from_utf8(line).ok().and_then(|l| parse_app_line(l).ok()) {
                    out.push(a.1);
                }
            }
        }
        Ok(out)
    }

    /// The account of a line; `named`: with its `name` (else empty, "the user asked for", see
    /// [`Account::name`]: a lookup by exact name need not copy it again).
    fn account(&self, line: &[u8], named: bool) -> Result<Box<Account>, String> {
        let line = std::str::from_utf8(line).map_err(|_| "line is not UTF-8".to_string())?;
        parse_account(line, &mut Vec::new(), named)
    }

    /// Every account, in no particular order.
    fn accounts(&self) -> impl Iterator<Item = Result<Account, String>> + '_ {
        self.slots
            .values()
            .filter(|at| !self.held.contains_key(at))
            .map(|at| self.account(line_at(&self.data, at as usize), true).map(|a| *a))
    }

    /// Bytes held (the file and the index), for the memory estimate.
    fn heap_bytes(&self) -> usize {
        self.data.len() + self.slots.heap_bytes()
    }
}

/// What lookups answer from: the loaded file, or why there is none.
type Snapshot = Result<Arc<Users>, String>;

/// The store's state, shared with its watcher thread.
struct Shared {
    kind: Kind,
    path: PathBuf,
    /// `describe(&path)`, made once.
    desc: String,
    snapshot: Mutex<Snapshot>,
    /// The file's identity, the check interval and the broken state; held while checking or
    /// re-reading (by the watcher thread, or by lookups without one).
    watch: Mutex<FileWatch>,
    events: Events,
    /// The process that made its watcher (or decided to check inline); 0: none yet.
    started_in: AtomicU32,
    /// Lookups check the file themselves (no watcher thread in this process).
    inline: AtomicBool,
    /// This process's watcher thread.
    stop: Mutex<Option<Arc<Stop>>>,
    /// How many times a lookup looked at the file itself (tests check the watcher does it).
    lookup_checks: AtomicU64,
    /// The file read at start or reload while it was being written (see
    /// [`PasswdFile::open`]), whose content is partly held back: its last line (the snapshot
    /// holds the others), or all of it (caught empty: the snapshot is an error). `None` once
    /// the file is read whole (or found broken).
    held: Mutex<Option<FileId>>,
}

/// An htpasswd / Dovecot passwd-file store, re-read when the file changes.
pub struct PasswdFile {
    shared: Arc<Shared>,
    /// `mail_auth_app_passwords`: the app passwords of this file's accounts.
    apps: Option<Box<PasswdFile>>,
}

/// A file read and indexed.
struct Loaded {
    id: FileId,
    users: Users,
    notices: Vec<StoreNotice>,
    /// The last line has no line end: a file being rewritten in place may have been read
    /// half-way (see [`Shared::reload`]).
    unterminated: bool,
    /// That last line was left out (see [`load`]).
    cut: bool,
}

/// How long after its last change a file whose last line has no line end is taken as being
/// written (its re-read waits): longer than a rewrite in place takes, the check's 1 s and more.
const WRITE_SETTLE: Duration = Duration::from_secs(2);

impl PasswdFile {
    /// How many times the file was (re)loaded: a witness of reloads for tests.
    pub fn generation(&self) -> u64 {
        self.shared.events.generation()
    }

    /// Reads the file. Fails (configuration error) if it cannot be opened or read; malformed
    /// lines are not an error but notices (see [`Store::take_notices`]). Starts no thread.
    ///
    /// A file changed less than [`WRITE_SETTLE`] ago may be in the middle of a rewrite in
    /// place, as the re-reads in the workers take it; here there is no previous content to go
    /// on answering, so it fails closed: a last line without a line end is left out, its user
    /// (any user whose name the cut line's user field begins, if it has no ':' yet) a
    /// temporary failure; a file with no user (`cat >` just truncated it) is a temporary
    /// failure for every user (not every user unknown). The lookups read the file again until
    /// it has not changed for that long.
    pub fn open(path: impl AsRef<Path>) -> Result<PasswdFile, StoreError> {
        Self::open_kind(path.as_ref(), Kind::Accounts)
    }

    /// Adds the app passwords file `path` (read now, like [`PasswdFile::open`]; re-read when it
    /// changes, by a watcher of its own).
    pub fn with_app_passwords(mut self, path: impl AsRef<Path>) -> Result<PasswdFile, StoreError> {
        let mut apps = Self::open_kind(path.as_ref(), Kind::AppPasswords)?;
        let interval = lock(&self.shared.watch).interval();
        apps = apps.with_check_interval(interval);
        self.apps = Some(Box::new(apps));
        Ok(self)
    }

    fn open_kind(path: &Path, kind: Kind) -> Result<PasswdFile, StoreError> {
        let path = path.to_path_buf();
        let desc = match kind {
            Kind::Accounts => describe(&path),
            Kind::AppPasswords => format!("app passwords file \"{}\"", path.display()),
        };
        let loaded = load(&path, kind, true).map_err(|cause| StoreError { source: desc.clone(), cause })?;
        let fresh = loaded.id.changed_within(WRITE_SETTLE);
        // (not an app passwords file: revoking the last app password empties it, see `reload`)
        let empty = fresh && kind == Kind::Accounts && loaded.users.len() == 0;
        let held = (empty || loaded.cut).then_some(loaded.id);
        let mut watch = FileWatch::new(&path, DEFAULT_CHECK_INTERVAL);
        // held: not the file's content; the first look finds it changed and reads it again
        watch.set_current(if held.is_some() { None } else { Some(loaded.id) });
        let shared = Shared {
            kind,
            desc,
            path,
            snapshot: Mutex::new(Err("not loaded".to_string())),
            watch: Mutex::new(watch),
            events: Events::default(),
            started_in: AtomicU32::new(0),
            inline: AtomicBool::new(false),
            stop: Mutex::new(None),
            lookup_checks: AtomicU64::new(0),
            held: Mutex::new(None),
        };
        if empty {
            let cause = format!(
                "no user in it, and it changed less than {} s ago (being written?): a temporary failure \
                 until it has not changed for {0} s",
                WRITE_SETTLE.as_secs()
            );
            let mut notices = loaded.notices;
            notices
                .push(StoreNotice { level: NoticeLevel::Warn, message: format!("{}: {cause}", shared.path.display()) });
            shared.events.extend(notices);
            *lock(&shared.snapshot) = Err(cause);
            shared.events.bump();
        } else {
            shared.install(loaded, "loaded");
        }
        *lock(&shared.held) = held;
        Ok(PasswdFile { shared: Arc::new(shared), apps: None })
    }

    /// Sets how often the file is checked for changes. Zero: no watcher thread, every lookup
    /// checks the file itself (for tests).
    pub fn with_check_interval(mut self, interval: Duration) -> PasswdFile {
        lock(&self.shared.watch).set_interval(interval);
        self.apps = self.apps.take().map(|a| Box::new(a.with_check_interval(interval)));
        self
    }

    /// The app passwords of `user` (an app passwords file: [`PasswdFile::with_app_passwords`]);
    /// `Err` while the file is unusable.
    fn app_passwords(&self, user: &str) -> Result<Vec<AppPassword>, StoreError> {
        self.start();
        let shared = &self.shared;
        if shared.inline.load(Ordering::Acquire) && shared.check(&mut lock(&shared.watch), false) {
            shared.lookup_checks.fetch_add(1, Ordering::Relaxed);
        }
        let users = self.snapshot().map_err(|cause| self.error(cause))?;
        match users.kind {
            Kind::AppPasswords => users.app_passwords(user).map_err(|cause| self.error(cause)),
            Kind::Accounts => Ok(Vec::new()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Number of accounts currently loaded (`None` while the file is unusable).
    pub fn user_count(&self) -> Option<usize> {
        self.snapshot().ok().map(|u| u.len())
    }

    /// Bytes the loaded file and its index take (`None` while the file is unusable).
    pub fn memory_bytes(&self) -> Option<usize> {
        self.snapshot().ok().map(|u| u.heap_bytes())
    }

    fn error(&self, cause: String) -> StoreError {
        StoreError { source: self.shared.desc.clone(), cause }
    }

    fn snapshot(&self) -> Snapshot {
        lock(&self.shared.snapshot).clone()
    }

    /// The first lookup in this process: checks the inherited snapshot and starts the watcher.
    fn start(&self) {
        let pid = watch::process_id();
        if self.shared.started_in.load(Ordering::Acquire) == pid {
            return;
        }
        let mut w = lock(&self.shared.watch);
        if self.shared.started_in.load(Ordering::Acquire) == pid {
            return;
        }
        self.shared.lookup_checks.fetch_add(1, Ordering::Relaxed);
        match w.look(true) {
            Seen::NotDue | Seen::Same => self.shared.check_openable(&mut w),
            Seen::Gone(cause) => self.shared.set_broken(&mut w, cause),
            Seen::Changed(id) if id.size() <= INLINE_RELOAD_MAX => self.shared.reload(&mut w),
            // the file read at start or reload, still unchanged, partly held back: the snapshot
            // answers for the rest (the watcher, started below, reads it again at once)
            Seen::Changed(id) if *lock(&self.shared.held) == Some(id) => self.shared.check_openable(&mut w),
            Seen::Changed(_) => {
                self.shared.set_broken(&mut w, "changed since it was loaded, being re-read".to_string())
            }
        }
        let interval = w.interval();
        let inline = interval.is_zero() || {
            let weak = Arc::downgrade(&self.shared);
            match watch::spawn(interval, move || tick(&weak)) {
                Ok(stop) => {
                    *lock(&self.shared.stop) = Some(stop);
                    false
                }
                Err(e) => {
                    self.shared.events.push(
                        NoticeLevel::Warn,
                        format!(
                            "{}: cannot start the {} thread ({e}); lookups check the file \
                             themselves, and re-read it on nginx's event loop",
                            self.shared.path.display(),
                            watch::THREAD_NAME
                        ),
                    );
                    true
                }
            }
        };
        self.shared.inline.store(inline, Ordering::Release);
        self.shared.started_in.store(pid, Ordering::Release);
    }
}

/// One round of the watcher thread; `false` once the store is gone.
fn tick(shared: &Weak<Shared>) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    let mut w = lock(&shared.watch);
    shared.check(&mut w, true);
    true
}

fn describe(path: &Path) -> String {
    format!("passwd file \"{}\"", path.display())
}

impl Shared {
    /// Looks at the file (if due, or `force`) and re-reads it if it changed; `false` if it was
    /// not due.
    fn check(&self, w: &mut FileWatch, force: bool) -> bool {
        match w.look(force) {
            Seen::NotDue => return false,
            Seen::Same => {}
            Seen::Gone(cause) => self.set_broken(w, cause),
            Seen::Changed(_) => self.reload(w),
        }
        true
    }

    /// The snapshot was read by another process (nginx's master, as root, at start or
    /// reload): this one may not be allowed to read the file, which it would find only at the
    /// first change (every login a temporary failure from then on). Finds it now: a temporary
    /// failure and an error-log line from the first lookup on.
    fn check_openable(&self, w: &mut FileWatch) {
        if let Err(cause) = watch::open_regular(&self.path) {
            self.set_broken(w, cause);
        }
    }

    fn reload(&self, w: &mut FileWatch) {
        match load(&self.path, self.kind, false) {
            // htpasswd and `cat >` rewrite the file in place: read in the middle, its last line
            // may be cut (a {PLAIN} password shortened, allow_nets or nologin lost). A fresh file
            // ending without a line end is read again at the next check; meanwhile what was
            // served goes on (the old content, or a temporary failure), never the cut line.
            Ok(loaded) if loaded.unterminated && loaded.id.changed_within(WRITE_SETTLE) => w.set_current(None),
            // the same for a file caught just after `cat >` or htpasswd truncated it (empty, or
            // no user yet) while users were served: every user "unknown" meanwhile would be
            // failed logins, counted by the limiter
            // (not an app-passwords file: the admin tool replaces it whole, and revoking the last
            // app password empties it; held, a revoked one would go on logging in for 2-3 s)
            // (or while the snapshot is the open's hold of a file caught so)
            Ok(loaded)
                if loaded.users.len() == 0
                    && self.kind == Kind::Accounts
                    && (self.serves_users() || lock(&self.held).is_some())
                    && loaded.id.changed_within(WRITE_SETTLE) =>
            {
                w.set_current(None)
            }
            Ok(loaded) => {
                w.set_current(Some(loaded.id));
                let how = if w.recover() { "readable again, loaded" } else { "changed, reloaded" };
                self.install(loaded, how);
            }
            Err(cause) => self.set_broken(w, cause),
        }
    }

    /// Whether the snapshot in use holds any user.
    fn serves_users(&self) -> bool {
        lock(&self.snapshot).as_ref().is_ok_and(|u| u.len() > 0)
    }

    /// Swaps `loaded` in (the old snapshot is freed here, not by a lookup, unless one still
    /// holds it). The notices come first: a request answered from the new snapshot logs them.
    fn install(&self, loaded: Loaded, how: &str) {
        let n = loaded.users.len();
        let mut notices = loaded.notices;
        notices.push(StoreNotice {
            level: NoticeLevel::Info,
            message: match self.kind {
                Kind::Accounts => format!("{}: {how} {n} users", self.path.display()),
                Kind::AppPasswords => format!("{}: {how} {n} app passwords", self.path.display()),
            },
        });
        self.events.extend(notices);
        let old = std::mem::replace(&mut *lock(&self.snapshot), Ok(Arc::new(loaded.users)));
        drop(old);
        *lock(&self.held) = None;
        self.events.bump();
    }

    /// Lookups fail with `cause` until the file is read again.
    fn set_broken(&self, w: &mut FileWatch, cause: String) {
        w.set_current(None);
        *lock(&self.held) = None;
        if w.fail(&self.events, &cause) {
            let old = std::mem::replace(&mut *lock(&self.snapshot), Err(cause));
            drop(old);
            self.events.bump();
        }
    }
}

impl Drop for PasswdFile {
    fn drop(&mut self) {
        if let Some(stop) = lock(&self.shared.stop).take() {
            stop.stop();
        }
    }
}

/// Reads and indexes the file. `hold_cut` (at start or reload, see [`PasswdFile::open`]): a
/// last line without a line end in a file changed less than [`WRITE_SETTLE`] ago is left out
/// of the index, and kept as [`Users::cut`].
fn load(path: &Path, kind: Kind, hold_cut: bool) -> Result<Loaded, String> {
    const TOO_BIG: u64 = 1 << 32;
    let (f, meta) = watch::open_regular(path)?;
    // refused before it is read (its size, and what it grew to meanwhile): a path set to a
    // huge file must not fill each worker's memory first
    if meta.len() >= TOO_BIG {
        return Err("too big (4 GiB at most)".to_string());
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.take(TOO_BIG).read_to_end(&mut data).map_err(|e| format!("cannot read: {e}"))?;
    if u32::try_from(data.len()).is_err() {
        return Err("too big (4 GiB at most)".to_string());
    }
    let id = FileId::of(&meta);
    let unterminated = data.last().is_some_and(|&b| b != b'\n');
    let name = path.display().to_string();
    let mut cut = None;
    if hold_cut && unterminated && id.changed_within(WRITE_SETTLE) {
        let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let lineno = data[..end].iter().filter(|&&b| b == b'\n').count() + 1;
        cut = Some((CutLine::of(&data[end..]), lineno));
        data.truncate(end);
    }
    let was_cut = cut.is_some();
    let (mut users, mut notices) = index(&name, data.into_boxed_slice(), kind);
    if let Some((line, lineno)) = cut {
        notices.push(StoreNotice {
            level: NoticeLevel::Warn,
            message: format!(
                "{name}:{lineno}: no line end, and the file changed less than {} s ago (being written?): \
                 line left out until the file has not changed for {0} s{}",
                WRITE_SETTLE.as_secs(),
                match &line {
                    Some(l) if l.whole =>
                        format!(", user \"{}\" a temporary failure meanwhile", String::from_utf8_lossy(&l.name)),
                    Some(l) => format!(
                        ", users whose name begins with \"{}\" a temporary failure meanwhile",
                        String::from_utf8_lossy(&l.name)
                    ),
                    None => String::new(),
                }
            ),
        });
        users.cut = line;
    }
    Ok(Loaded { id, users, notices, unterminated, cut: was_cut })
}

/// An `allow_nets`/`allow_real_nets` list; warns of host bits (as nginx warns of its own lists:
/// 10.9.9.9/1 is half of IPv4, seldom meant).
fn nets_field(key: &str, value: &str, warnings: &mut Vec<String>) -> Result<Vec<Cidr>, String> {
    let nets = Cidr::parse_list(value).map_err(|e| format!("bad {key}: {e}"))?;
    for item in value.split(',').filter(|v| Cidr::has_host_bits(v)) {
        let net = Cidr::parse(item).map(|n| n.to_string()).unwrap_or_default();
        warnings.push(format!("{key}: low address bits of {} are meaningless: it is {net}", item.trim()));
    }
    Ok(nets)
}

fn flag_set(value: &str) -> bool {
    // Bare key or a yes-like value sets the flag; an explicit no-like value clears it; any other
    // value sets it (fail closed).
    !matches!(value.to_ascii_lowercase().as_str(), "n" | "no" | "false" | "0")
}

/// The extra fields a line may give once: a restriction or a routing field given twice makes
/// the line malformed rather than letting the last one win (`allow_nets=192.0.2.0/24
/// allow_nets=0.0.0.0/0` let the account in from anywhere, where Dovecot checks both and
/// refuses), as a SQL row's or an LDAP entry's do.
const ONCE_EXTRA: &[&[&str]] = &[
    &["allow_nets"],
    &["allow_real_nets"],
    &["delay_until"],
    &["host"],
    &["port"],
    &["destuser"],
    &["user"],
    &["pass"],
    &["protocols"],
    &["wait"],
    &["client_cert"],
    &["app_only"],
];

/// An app password line's fields given once.
const ONCE_APP: &[&[&str]] = &[&["protocols"], &["allow_nets"]];

/// `Err` when `key` was given before on the line (`seen` notes it).
fn once(seen: &mut SeenOnce, key: &str) -> Result<(), String> {
    match seen.again(key) {
        Some(_) => Err(format!("{key} given twice")),
        None => Ok(()),
    }
}

/// Applies the extra fields to `acct`; `Err(reason)` skips the line, `warnings` are logged.
fn apply_extra(acct: &mut Account, extra: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    let mut destuser = None;
    let mut user = None;
    let mut seen = SeenOnce::new(ONCE_EXTRA);
    for tok in extra.split_whitespace() {
        let (key, value) = match tok.split_once('=') {
            Some((k, v)) => (k, v),
            None => (tok, ""),
        };
        once(&mut seen, key)?;
        match key {
            // Dovecot refuses these whatever their value (its login code looks at the key)
            "nologin" | "fail" | "noauthenticate" => acct.enabled = false,
            "deny" if flag_set(value) => acct.enabled = false,
            "allow_nets" => acct.networks = Some(nets_field(key, value, warnings)?),
            "allow_real_nets" => acct.real_networks = Some(nets_field(key, value, warnings)?),
            "delay_until" => {
                acct.delay_until =
                    Some(super::parse_delay_until(value).ok_or_else(|| format!("bad delay_until={value}"))?);
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
                acct.protocols = Some(parse_protocols(value).map_err(|e| format!("bad protocols={value}: {e}"))?);
            }
            "wait" => {
                let w = value
                    .parse::<u32>()
                    .ok()
                    .filter(|&w| value.bytes().all(|b| b.is_ascii_digit()) && w <= super::MAX_WAIT)
                    .ok_or_else(|| format!("bad wait={value} (seconds, at most {})", super::MAX_WAIT))?;
                acct.wait = Some(w);
            }
            "client_cert" => {
                // bare: a flag, like nologin
                let v = if value.is_empty() { "required" } else { value };
                acct.require_client_cert = crate::policy::parse_client_cert(v)
                    .ok_or_else(|| format!("bad client_cert={value} (required or optional)"))?;
            }
            "app_only" => {
                acct.app_only = Some(match value {
                    "" => Protocol::ALL.to_vec(),
                    v => parse_protocols(v).map_err(|e| format!("bad app_only={v}: {e}"))?,
                })
            }
            "nopassword" => {
                warnings.push("nopassword is not supported and ignored: the password is always checked".to_string())
            }
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

/// `imap,pop3,smtp` (any of them, in any order; duplicates counted once).
fn parse_protocols(value: &str) -> Result<Vec<Protocol>, String> {
    let mut list = Vec::new();
    for name in value.split(',').filter(|s| !s.is_empty()) {
        let p = Protocol::parse(name.as_bytes()).ok_or_else(|| format!("unknown protocol {name}"))?;
        if !list.contains(&p) {
            list.push(p);
        }
    }
    Ok(list)
}

/// Parses one line of an app passwords file: `user:label:{SCHEME}hash[:fields]`, fields
/// `protocols=LIST allow_nets=LIST` (others ignored). (`pub` for the fuzz targets in fuzz/.)
pub fn parse_app_line(line: &str) -> Result<(String, AppPassword), String> {
    let mut parts = line.splitn(4, ':');
    let user = parts.next().unwrap_or("");
    let (Some(label), Some(pass)) = (parts.next(), parts.next()) else {
        return Err("not user:label:password".to_string());
    };
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err("empty user name or a control character in it".to_string());
    }
    if !valid_label(label) {
        return Err(format!("user \"{user}\": bad label (1..64 of letters, digits, . _ - @ +)"));
    }
    if pass.is_empty() {
        return Err(format!("user \"{user}\", app password \"{label}\": empty password field"));
    }
    if pass.contains('\r') {
        return Err(format!("user \"{user}\", app password \"{label}\": {CR_INSIDE}"));
    }
    let mut app = AppPassword { label: label.to_string(), password: pass.to_string(), ..AppPassword::default() };
    let mut seen = SeenOnce::new(ONCE_APP);
    for tok in parts.next().unwrap_or("").split_whitespace() {
        let (key, value) = tok.split_once('=').unwrap_or((tok, ""));
        once(&mut seen, key).map_err(|e| format!("user \"{user}\", app password \"{label}\": {e}"))?;
        let bad = |e: String| format!("user \"{user}\", app password \"{label}\": bad {key}={value}: {e}");
        match key {
            "protocols" => app.protocols = Some(parse_protocols(value).map_err(bad)?),
            "allow_nets" => app.networks = Some(Cidr::parse_list(value).map_err(|e| bad(e.to_string()))?),
            _ => {}
        }
    }
    Ok((user.to_string(), app))
}

/// Why a password field holding a carriage return is refused: only a line's end may be CR LF;
/// a CR inside a line is a broken line, or a file with old Mac (CR-only) line ends read as one
/// line, whose first "password" would run on into the next users' lines.
const CR_INSIDE: &str = "a carriage return inside the password field (a file with CR-only line ends?)";

/// Parses one non-blank, non-comment line into (user, account).
/// (`pub` for the fuzz targets in fuzz/.)
pub fn parse_line(line: &str, warnings: &mut Vec<String>) -> Result<(String, Account), String> {
    parse_account(line, warnings, true).map(|a| (a.name.clone(), *a))
}

/// `line.splitn(n, ':')`, by bytes: `split` with a `char` goes through a generic searcher
/// (a few hundred instructions on every lookup's line).
fn colon_fields(line: &str, n: usize) -> impl Iterator<Item = &str> {
    let (mut rest, mut left) = (Some(line), n);
    std::iter::from_fn(move || {
        let r = rest?;
        left = left.checked_sub(1)?;
        // ':' is ASCII: both sides are on character boundaries
        match r.bytes().position(|b| b == b':').filter(|_| left > 0) {
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// [`parse_line`]'s account alone (what a lookup needs: no second copy of the name); `named`:
/// with its `name` (else empty, for a lookup that asked for exactly that name).
fn parse_account(line: &str, warnings: &mut Vec<String>, named: bool) -> Result<Box<Account>, String> {
    let mut parts = colon_fields(line, 8);
    let user = parts.next().unwrap_or("");
    let pass = parts.next().ok_or_else(|| "no ':' after the user name".to_string())?;
    if user.is_empty() {
        return Err("empty user name".to_string());
    }
    if user.chars().any(char::is_control) {
        return Err("control character in the user name".to_string());
    }
    if pass.is_empty() {
        return Err(format!("user \"{user}\": empty password field"));
    }
    if pass.contains('\r') {
        return Err(format!("user \"{user}\": {CR_INSIDE}"));
    }
    let name = if named { user.to_string() } else { String::new() };
    let mut acct = Box::new(Account { name, password: pass.to_string(), enabled: true, ..Account::default() });
    // uid, gid, gecos, home, shell
    for _ in 0..5 {
        parts.next();
    }
    if let Some(extra) = parts.next() {
        apply_extra(&mut acct, extra, warnings).map_err(|e| format!("user \"{user}\": {e}"))?;
    }
    Ok(acct)
}

/// Indexes a whole file's content (`name` prefixes the notices): every line parsed once, the
/// first definition of a user winning. `data` must be shorter than 4 GiB.
fn index(name: &str, data: Box<[u8]>, kind: Kind) -> (Users, Vec<StoreNotice>) {
    let hasher = RandomState::new();
    let skip = if data.starts_with(BOM) { BOM.len() } else { 0 };
    // (hash, line start) per account, the line numbers alongside; while loading only, the
    // first account of each hash (a second name with the same hash is searched for in `entries`)
    let mut entries: Vec<(u64, u32)> = Vec::new();
    let mut line_numbers: Vec<u32> = Vec::new();
    let mut held = HashMap::new();
    let mut first_of_hash: HashMap<u64, u32> = HashMap::new();
    // app passwords: the labels seen per user
    let mut app_labels: HashMap<String, Vec<String>> = HashMap::new();
    let mut template: Option<(u64, String)> = None;
    let mut notices = Vec::new();
    let mut suppressed = 0usize;
    let mut push = |notices: &mut Vec<StoreNotice>, level, msg: String| {
        if notices.len() < MAX_LINE_NOTICES {
            notices.push(StoreNotice { level, message: msg });
        } else {
            suppressed += 1;
        }
    };

    let mut next = skip;
    for (i, piece) in data[skip..].split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let line_start = next;
        next += piece.len() + 1;
        let raw = piece.strip_suffix(b"\r").unwrap_or(piece);
        let trimmed = raw.trim_ascii_start();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        // the user field's hash, whatever the rest of the line holds; `data` is shorter than
        // 4 GiB (checked by the caller), so are the offsets
        let user_bytes = user_field(raw);
        let hash = hasher.hash_one(user_bytes);
        let at = u32::try_from(line_start).unwrap_or(u32::MAX);
        if kind == Kind::Accounts {
            // The first definition of a user wins, even a malformed one: skipped alone, it
            // would hand the name to a later line (without the first one's nologin or
            // allow_nets). A user whose first line is malformed cannot log in (a temporary
            // failure naming the line) until it is fixed; later lines are duplicates.
            let same_name = |&(h, s): &(u64, u32)| h == hash && user_field(line_at(&data, s as usize)) == user_bytes;
            let earlier = match first_of_hash.get(&hash) {
                None => None,
                Some(&i) if same_name(&entries[i as usize]) => Some(i as usize),
                // Another name with the same hash (rare): any earlier one of this name?
                Some(_) => entries.iter().position(same_name),
            };
            if let Some(i) = earlier {
                let user = String::from_utf8_lossy(user_bytes);
                push(
                    &mut notices,
                    NoticeLevel::Warn,
                    format!(
                        "{name}:{lineno}: duplicate user \"{user}\" (first defined on line {}), line \
                         skipped",
                        line_numbers[i]
                    ),
                );
                continue;
            }
        }
        let line = if raw.len() > MAX_LINE {
            Err(format!("line of {} bytes (at most {MAX_LINE})", raw.len()))
        } else {
            std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_string())
        };
        if kind == Kind::AppPasswords {
            let (user, app) = match line.and_then(parse_app_line) {
                Ok(parsed) => parsed,
                Err(reason) => {
                    push(&mut notices, NoticeLevel::Error, format!("{name}:{lineno}: {reason}, line skipped"));
                    continue;
                }
            };
            let labels = app_labels.entry(user.clone()).or_default();
            if labels.contains(&app.label) {
                let msg =
                    format!("{name}:{lineno}: duplicate app password \"{}\" of \"{user}\", line skipped", app.label);
                push(&mut notices, NoticeLevel::Warn, msg);
                continue;
            }
            if labels.len() >= MAX_APP_PASSWORDS {
                let msg = format!(
                    "{name}:{lineno}: \"{user}\" has more than {MAX_APP_PASSWORDS} app passwords, line skipped"
                );
                push(&mut notices, NoticeLevel::Warn, msg);
                continue;
            }
            if scheme::cost_estimate(&app.password) == 0 {
                let msg = format!(
                    "{name}:{lineno}: app password \"{}\" of \"{user}\": unknown or malformed password scheme, it cannot log in",
                    app.label
                );
                push(&mut notices, NoticeLevel::Warn, msg);
            }
            labels.push(app.label);
            entries.push((hash, at));
            continue;
        }
        let mut warnings = Vec::new();
        match line.and_then(|l| parse_line(l, &mut warnings)) {
            Ok((user, acct)) => {
                let cost = scheme::cost_estimate(&acct.password);
                if cost == 0 {
                    let why = scheme::problem(&acct.password).unwrap_or_default();
                    warnings.push(format!("{why}, this user cannot log in"));
                } else if template.as_ref().is_none_or(|(c, _)| cost > *c) {
                    template = Some((cost, acct.password));
                }
                for w in warnings {
                    push(&mut notices, NoticeLevel::Warn, format!("{name}:{lineno}: user \"{user}\": {w}"));
                }
            }
            // a malformed first line of a user holds the name (see above): its lookups find
            // this line, a store error (a temporary failure), never a later one
            Err(reason) if !user_bytes.is_empty() => {
                let msg = format!(
                    "{name}:{lineno}: {reason}, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"
                );
                push(&mut notices, NoticeLevel::Error, msg);
                held.insert(at, reason);
            }
            Err(reason) => {
                push(&mut notices, NoticeLevel::Error, format!("{name}:{lineno}: {reason}, line skipped"));
                continue;
            }
        }
        first_of_hash.entry(hash).or_insert(u32::try_from(entries.len()).unwrap_or(u32::MAX));
        entries.push((hash, at));
        line_numbers.push(u32::try_from(lineno).unwrap_or(u32::MAX));
    }
    if suppressed > 0 {
        notices.push(StoreNotice {
            level: NoticeLevel::Error,
            message: format!("{name}: {suppressed} more problems not shown"),
        });
    }
    drop(first_of_hash);
    drop(app_labels);
    drop(line_numbers);
    // `data` is shorter than 4 GiB: no line starts at `slots::EMPTY`
    let mut slots = Slots::with_room(entries.len());
    for &(h, at) in &entries {
        slots.insert(h, at, |at| hasher.hash_one(user_field(line_at(&data, at as usize))));
    }
    let users = Users { kind, slots, data, hasher, template: template.map(|(_, t)| t.into()), held, cut: None };
    (users, notices)
}

/// Parses a whole file's content (`name` prefixes the notices): the users, first definition
/// winning, and the notices for the log, as the store reads them. (`pub` for the fuzz targets
/// in fuzz/.)
pub fn parse(name: &str, data: &[u8]) -> (HashMap<String, Account>, Vec<StoreNotice>) {
    if u32::try_from(data.len()).is_err() {
        return (
            HashMap::new(),
            vec![StoreNotice { level: NoticeLevel::Error, message: format!("{name}: too big (4 GiB at most)") }],
        );
    }
    let (users, notices) = index(name, data.into(), Kind::Accounts);
    let map = users.accounts().filter_map(Result::ok).map(|a| (a.name.clone(), a)).collect();
    (map, notices)
}

impl Store for PasswdFile {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        self.lookup_and_template(q).0.map(|a| a.map(|a| *a))
    }

    /// The account and the template from one look at the snapshot, under its lock (no
    /// reference counted per lookup: the lock is held for a table probe and one line's parse;
    /// a reload only swaps the snapshot under it).
    fn lookup_and_template(&self, q: &Query<'_>) -> (super::Lookup, Option<Arc<str>>) {
        self.start();
        let shared = &self.shared;
        if shared.inline.load(Ordering::Acquire) && shared.check(&mut lock(&shared.watch), false) {
            shared.lookup_checks.fetch_add(1, Ordering::Relaxed);
        }
        let (found, template) = {
            let snapshot = lock(&shared.snapshot);
            match &*snapshot {
                Err(cause) => return (Err(self.error(cause.clone())), None),
                Ok(users) => (users.get(q.user), users.template.clone()),
            }
        };
        let found = match found {
            None => Ok(None),
            Some(Ok(mut a)) => match &self.apps {
                Some(apps) => apps.app_passwords(q.user).map(|list| {
                    a.app_passwords = list;
                    Some(a)
                }),
                None => Ok(Some(a)),
            },
            Some(Err(e)) => Err(self.error(format!("the line of this user: {e}"))),
        };
        (found, template)
    }

    fn take_notices(&self) -> Vec<StoreNotice> {
        let mut n = self.shared.events.take();
        if let Some(apps) = &self.apps {
            n.extend(apps.shared.events.take());
        }
        n
    }

    fn describe(&self) -> String {
        self.shared.desc.clone()
    }

    fn scope(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(&self.shared.desc)
    }

    fn timing_template(&self) -> Option<String> {
        self.shared_timing_template().map(|t| t.to_string())
    }

    fn shared_timing_template(&self) -> Option<Arc<str>> {
        lock(&self.shared.snapshot).as_ref().ok().and_then(|u| u.template.clone())
    }

    /// The user field of every loaded line (the snapshot lookups answer from).
    fn accounts(&self, each: &mut dyn FnMut(&str) -> bool) -> Result<(), StoreError> {
        self.start();
        let shared = &self.shared;
        if shared.inline.load(Ordering::Acquire) {
            shared.check(&mut lock(&shared.watch), false);
        }
        let users = self.snapshot().map_err(|cause| self.error(cause))?;
        for at in users.slots.values().filter(|at| !users.held.contains_key(at)) {
            // every indexed line but the held ones was parsed at load: its user field is UTF-8
            if let Ok(name) = std::str::from_utf8(user_field(line_at(&users.data, at as usize))) {
                if !each(name) {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Method;
    use crate::testutil::TempDir;
    use std::fs;
    use std::io::Write;
    use std::process::Command;
    use std::time::Instant;

    #[test]
    fn a_file_over_4_gib_is_refused_before_it_is_read() {
        let d = TempDir::new("pwbig");
        let path = d.join("users");
        // sparse: no disk taken; reading it would fill 4 GiB of the worker's memory with zeros
        fs::File::create(&path).unwrap().set_len(u64::from(u32::MAX) + 1).unwrap();
        let t = Instant::now();
        let e = load(&path, Kind::Accounts, true).err().expect("refused");
        assert!(e.contains("too big"), "{e}");
        assert!(t.elapsed().as_secs() < 1, "refused at once, not after reading: {:?}", t.elapsed());
    }

    #[test]
    fn colon_fields_is_splitn() {
        for (round, x) in crate::testutil::Xorshift(0x1234_5678_9abc_def1).take(50_000).enumerate() {
            let len = (x % 20) as usize;
            let line: String =
                (0..len).map(|i| [':', 'a', '\u{e9}', ' ', ':', '\u{1f600}'][((x >> (3 * i)) % 6) as usize]).collect();
            for n in [0, 1, 2, 3, 8] {
                let want: Vec<&str> = line.splitn(n, ':').collect();
                assert_eq!(colon_fields(&line, n).collect::<Vec<_>>(), want, "{round}: {line:?} {n}");
            }
        }
    }

    fn q(user: &str) -> Query<'_> {
        Query { user, protocol: Protocol::Imap, method: Method::Plain, client_ip: None, password: None }
    }

    fn open0(p: &Path) -> PasswdFile {
        PasswdFile::open(p).unwrap().with_check_interval(Duration::ZERO)
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
        assert_eq!(a.password, "$2y$04$jjzhaQXhCvZR1YmZd9of2.lNGelq9SiOOD/PmR.QtKZB75oPDCSdy");
        assert!(a.enabled);
        assert_eq!(a.server, None);
        assert_eq!(a.networks, None);
        assert_eq!(s.lookup(&q("bob")).unwrap().unwrap().password, "$apr1$.9Cty788$CB9z.OcWWVUOnQVzPNLGD1");
        assert_eq!(s.lookup(&q("carol")).unwrap().unwrap().password, "{SHA}wgpYEjJDLC+2ATkar1uYUyuPRRc=");
        assert!(s.lookup(&q("j\u{fc}rgen")).unwrap().is_some());
        assert_eq!(s.lookup(&q("Alice")).unwrap(), None, "user names are case-sensitive");
        assert_eq!(s.lookup(&q("nobody")).unwrap(), None);
        assert_eq!(s.lookup(&q("")).unwrap(), None);
        let m = messages(&s);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].ends_with(": loaded 4 users"), "{m:?}");
        assert_eq!(s.describe(), format!("passwd file \"{}\"", d.join("h").display()));
    }

    #[test]
    fn accounts_lists_the_loaded_names_and_fails_closed() {
        let d = TempDir::new("acc");
        let p = d.file("u", b"alice:{PLAIN}a\n#disabled# carol:{PLAIN}c\nbob:{PLAIN}b::::::nologin\n");
        let s = open0(&p);
        let mut names = Vec::new();
        s.accounts(&mut |n| {
            names.push(n.to_string());
            true
        })
        .unwrap();
        names.sort();
        assert_eq!(names, ["alice", "bob"]);
        fs::remove_file(&p).unwrap();
        assert!(s.accounts(&mut |_| true).is_err(), "a missing file is an error, not an empty list");
    }

    #[test]
    fn dovecot_fixture_extra_fields() {
        let d = TempDir::new("dc");
        let s = open0(&d.file("u", USERS.as_bytes()));
        assert_eq!(s.user_count(), Some(4));
        let dave = s.lookup(&q("dave")).unwrap().unwrap();
        assert!(dave.password.starts_with("{SHA512-CRYPT}$6$LzeEwkxKIYLgassY$"));
        assert!(dave.password.ends_with("1oL."), "password field ends at the next ':'");
        assert_eq!(dave.networks, Some(vec![Cidr::parse("127.0.0.0/8").unwrap(), Cidr::parse("::1").unwrap()]));
        assert_eq!(dave.server.as_deref(), Some("127.0.0.1"));
        assert_eq!(dave.port, Some(10143));
        assert_eq!(dave.backend_user.as_deref(), Some("dave@backend"));
        assert!(dave.enabled);
        assert_eq!(dave.extra.len(), 4);
        assert_eq!(dave.extra[2], ("port".to_string(), "10143".to_string()));

        let erin = s.lookup(&q("erin")).unwrap().unwrap();
        assert!(!erin.enabled);
        assert_eq!(erin.extra, vec![("nologin".into(), "".into()), ("reason".into(), "moved".into())]);

        let frank = s.lookup(&q("frank")).unwrap().unwrap();
        assert_eq!(frank.protocols, Some(vec![Protocol::Imap, Protocol::Smtp]));
        assert_eq!(frank.wait, Some(7));
        assert!(
            frank.extra.contains(&("userdb_quota_rule".into(), "*:storage=1G".into())),
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
        let p = d.join("ht");
        let run = |args: &[&str]| Command::new("htpasswd").args(args).output();
        let first = run(&["-c", "-b", "-B", "-C", "4", p.to_str().unwrap(), "u1", "pw one"]);
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
                       last:{PLAIN}y\n\
                       wide:{PLAIN}z::::::allow_nets=127.0.0.1,10.9.9.9/1";
        let mut data = content.as_bytes().to_vec();
        data.extend_from_slice(b"\nbin\xffary:{PLAIN}x\n");
        let path = d.file("m", &data);
        let s = open0(&path);
        let n = path.display().to_string();
        let m = messages(&s);
        let expect = [
            format!("{n}:6: no ':' after the user name, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:7: empty user name, line skipped"),
            format!("{n}:8: user \"emptypass\": empty password field, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:9: user \"emptypass2\": empty password field, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:10: duplicate user \"good\" (first defined on line 5), line skipped"),
            format!("{n}:11: user \"badnet\": bad allow_nets: \"10.0.0.0/99\": prefix /99 too long for IPv4, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:12: user \"badport\": bad port=0, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:13: user \"badproto\": bad protocols=imap,http: unknown protocol http, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:14: user \"badwait\": bad wait=-1 (seconds, at most 86400), line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:15: user \"hostname\": host=mail.example.com is not an IP address; nginx needs one, logins will fail with a temporary error"),
            format!("{n}:15: user \"hostname\": nopassword is not supported and ignored: the password is always checked"),
            format!("{n}:16: control character in the user name, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}:17: user \"odd\": unsupported password scheme \"NOSUCH\", this user cannot log in"),
            format!("{n}:19: user \"wide\": allow_nets: low address bits of 10.9.9.9/1 are meaningless: it is 0.0.0.0/1"),
            format!("{n}:20: not valid UTF-8, line skipped (its user cannot log in until it is fixed; later lines of the user are duplicates)"),
            format!("{n}: loaded 5 users"),
        ];
        assert_eq!(m, expect);
        assert_eq!(s.lookup(&q("good")).unwrap().unwrap().password, "{PLAIN}x", "first wins");
        assert_eq!(s.lookup(&q("last")).unwrap().unwrap().password, "{PLAIN}y");
        assert!(s.lookup(&q("hostname")).unwrap().is_some());
        assert!(s.lookup(&q("odd")).unwrap().is_some(), "kept: fails as scheme-error");
        // a malformed first definition holds its name: a store error, never a later line
        assert!(s.lookup(&q("badnet")).is_err(), "held: a temporary failure");
        assert_eq!(s.lookup(&q("nosuch")).unwrap(), None);
    }

    #[test]
    fn a_malformed_first_definition_keeps_its_name_from_later_lines() {
        let d = TempDir::new("held");
        let p = d.file(
            "u",
            b"dan:{PLAIN}pw::::::allow_nets=10.0.0.0/8,bogus\ndan:{PLAIN}pw\nbin\xff:{PLAIN}a\nbin\xff:{PLAIN}b\neve:{PLAIN}e\n",
        );
        let s = open0(&p);
        let e = s.lookup(&q("dan")).expect_err("the first line holds dan");
        assert!(e.to_string().contains("bogus"), "{e}");
        assert_eq!(s.lookup(&q("eve")).unwrap().unwrap().password, "{PLAIN}e");
        let m = messages(&s);
        assert!(
            m.iter().any(|l| l.ends_with(":2: duplicate user \"dan\" (first defined on line 1), line skipped")),
            "{m:?}"
        );
        assert!(m.iter().any(|l| l.contains(":4: duplicate user \"bin\u{fffd}\"")), "{m:?}");
        assert!(m.last().unwrap().ends_with(": loaded 1 users"), "held names are not counted: {m:?}");
        let mut names = Vec::new();
        s.accounts(&mut |n| {
            names.push(n.to_string());
            true
        })
        .unwrap();
        assert_eq!(names, ["eve"], "nor listed");
    }

    #[test]
    fn crlf_and_bom_tolerated() {
        let d = TempDir::new("crlf");
        let s = open0(&d.file("c", b"\xef\xbb\xbfa:{PLAIN}one\r\n# c\r\n\r\nb:{PLAIN}two::::::wait=3\r\n"));
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}one");
        let b = s.lookup(&q("b")).unwrap().unwrap();
        assert_eq!(b.password, "{PLAIN}two");
        assert_eq!(b.wait, Some(3));
        assert_eq!(messages(&s).len(), 1);
    }

    #[test]
    fn open_missing_file_is_an_error() {
        let d = TempDir::new("missing");
        let e = PasswdFile::open(d.join("nope")).err().unwrap();
        assert!(e.source.contains("nope"), "{e}");
        assert!(e.cause.starts_with("cannot open: "), "{e}");
        let e = PasswdFile::open(&*d).err().unwrap();
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
        assert!(m.last().unwrap().ends_with(": changed, reloaded 1 users"), "{m:?}");
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
    fn a_file_caught_half_rewritten_in_place_is_not_served_cut() {
        // htpasswd and `cat >` rewrite the file in place: a re-read in the middle sees a prefix,
        // whose last line may be cut (a {PLAIN} password shortened, allow_nets or nologin lost)
        let d = TempDir::new("halfwrite");
        let p = d.file("users", b"a:{PLAIN}secret::::::allow_nets=10.0.0.0/8\n");
        let s = open0(&p);
        assert!(s.lookup(&q("a")).unwrap().unwrap().networks.is_some());
        fs::write(&p, b"a:{PLAIN}sec").unwrap();
        let a = s.lookup(&q("a")).unwrap().unwrap();
        assert_eq!((a.password.as_str(), a.networks.is_some()), ("{PLAIN}secret", true), "the cut line not served");
        // the rest of the line comes: the whole file is served
        fs::write(&p, b"a:{PLAIN}secret2::::::allow_nets=10.0.0.0/8\n").unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}secret2");
        // a file that really ends without a line end is served once it stopped changing
        fs::write(&p, b"a:{PLAIN}last").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(10);
        fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}last");
        // caught truncated (`cat >` before its first write): the users go on being served
        fs::write(&p, b"").unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}last", "not every user unknown");
        fs::write(&p, b"a:{PLAIN}after\n").unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}after");
        // a file really emptied is served so once it stopped changing
        fs::write(&p, b"").unwrap();
        fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap(), None);
    }

    /// Stamps the file's content as written `secs` seconds ago.
    fn written_ago(p: &Path, secs: u64) {
        let at = std::time::SystemTime::now() - Duration::from_secs(secs);
        fs::File::options().write(true).open(p).unwrap().set_modified(at).unwrap();
    }

    #[test]
    fn a_file_read_at_start_while_being_written_holds_its_cut_last_line() {
        // nginx's master reads the file at start and reload: caught in the middle of a rewrite
        // in place, its last line cut. There is no previous content to answer with: that
        // line's user is a temporary failure (before: `bob-lo` logged in as bob).
        let d = TempDir::new("opencut");
        let p = d.file("users", b"alice:{PLAIN}alice-password\nbob:{PLAIN}bob-lo");
        let s = open0(&p);
        let m = messages(&s);
        assert!(
            m.iter().any(|l| l.contains("users:2: no line end") && l.contains("user \"bob\" a temporary")),
            "{m:?}"
        );
        assert!(m.iter().any(|l| l.ends_with("loaded 1 users")), "{m:?}");
        assert_eq!(s.lookup(&q("alice")).unwrap().unwrap().password, "{PLAIN}alice-password");
        let e = s.lookup(&q("bob")).expect_err("held");
        assert!(e.cause.contains("being written"), "{e}");
        assert_eq!(s.lookup(&q("bobby")).unwrap(), None, "the cut line has its whole user name");
        // the rest comes, still without a line end: held until the file settles
        fs::write(&p, b"alice:{PLAIN}alice-password\nbob:{PLAIN}bob-long-password").unwrap();
        assert!(s.lookup(&q("bob")).is_err());
        written_ago(&p, 3);
        assert_eq!(s.lookup(&q("bob")).unwrap().unwrap().password, "{PLAIN}bob-long-password");

        // cut inside the user name: every name it begins is held
        let p = d.file("users2", b"alice:{PLAIN}a\nbo");
        let s = open0(&p);
        for u in ["bo", "bob", "bobby"] {
            assert!(s.lookup(&q(u)).is_err(), "{u}");
        }
        assert!(s.lookup(&q("alice")).unwrap().is_some());
        assert_eq!(s.lookup(&q("carol")).unwrap(), None);
        // a cut comment holds nobody
        let p = d.file("users3", b"alice:{PLAIN}a\n# a comm");
        let s = open0(&p);
        assert_eq!(s.lookup(&q("bob")).unwrap(), None);
        // not fresh: a file that really ends without a line end is served whole
        let p = d.file("users4", b"alice:{PLAIN}a\nbob:{PLAIN}b");
        written_ago(&p, 3);
        let s = open0(&p);
        assert_eq!(s.lookup(&q("bob")).unwrap().unwrap().password, "{PLAIN}b");
    }

    #[test]
    fn a_file_read_empty_at_start_just_after_a_change_is_a_temporary_failure() {
        // `cat >` truncated it an instant before the master read it: not every user unknown
        // (each a failed login, counted by the limiter)
        let d = TempDir::new("openempty");
        let p = d.file("users", b"");
        let s = open0(&p);
        assert!(messages(&s).iter().any(|l| l.contains("no user in it")));
        let e = s.lookup(&q("a")).expect_err("held");
        assert!(e.cause.contains("being written"), "{e}");
        assert!(s.lookup(&q("a")).is_err(), "still fresh: still held");
        fs::write(&p, b"a:{PLAIN}pw\n").unwrap();
        assert!(s.lookup(&q("a")).unwrap().is_some(), "written: served at once");
        // an empty file that settled is served as it is
        let p = d.file("empty", b"# no users\n");
        let s = open0(&p);
        assert!(s.lookup(&q("a")).is_err());
        written_ago(&p, 3);
        assert_eq!(s.lookup(&q("a")).unwrap(), None);
        let p = d.file("empty2", b"");
        written_ago(&p, 3);
        assert_eq!(open0(&p).lookup(&q("a")).unwrap(), None);
    }

    #[test]
    fn an_app_passwords_file_read_at_start_while_being_written_holds_its_cut_last_line() {
        let d = TempDir::new("openappcut");
        let users = d.file("users", b"a:{PLAIN}main\nb:{PLAIN}main\n");
        let apps = d.file("apps", b"b:phone:{PLAIN}bapp\na:phone:{PLAIN}ap");
        let s = open0(&users).with_app_passwords(&apps).unwrap();
        let e = s.lookup(&q("a")).expect_err("held");
        assert!(e.to_string().contains("app passwords file") && e.cause.contains("being written"), "{e}");
        assert_eq!(s.lookup(&q("b")).unwrap().unwrap().app_passwords.len(), 1);
        written_ago(&apps, 3);
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().app_passwords[0].password, "{PLAIN}ap");
        // an emptied app passwords file is not held (revoking the last one empties it)
        let apps = d.file("apps2", b"");
        let s = open0(&users).with_app_passwords(&apps).unwrap();
        assert!(s.lookup(&q("a")).unwrap().unwrap().app_passwords.is_empty());
    }

    #[test]
    fn a_big_file_held_at_start_answers_from_its_whole_lines_at_a_first_lookup() {
        // too big for the first lookup to re-read on the event loop: the lines read whole
        // answer meanwhile (not a temporary failure for every user until the watcher read it)
        let d = TempDir::new("openbigcut");
        let mut data = Vec::new();
        for i in 0..20_000 {
            writeln!(data, "u{i}:{{PLAIN}}pw{i}").unwrap();
        }
        data.extend_from_slice(b"last:{PLAIN}la");
        assert!(data.len() as u64 > INLINE_RELOAD_MAX);
        let p = d.file("users", &data);
        let s = PasswdFile::open(&p).unwrap().with_check_interval(Duration::from_secs(3600));
        assert_eq!(s.lookup(&q("u7")).unwrap().unwrap().password, "{PLAIN}pw7");
        assert!(s.lookup(&q("last")).is_err());
    }

    #[test]
    fn a_file_this_process_cannot_open_fails_at_its_first_lookup() {
        // nginx's master (root) read it; a worker (another user) could not, and found out only
        // at the file's first change
        use std::os::unix::fs::PermissionsExt;
        let d = TempDir::new("openperm");
        let p = d.file("users", b"a:{PLAIN}pw\n");
        let s = open0(&p);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
        // as if read by another user: the file unchanged since
        lock(&s.shared.watch).set_current(Some(FileId::of(&fs::metadata(&p).unwrap())));
        if fs::File::open(&p).is_ok() {
            return; // root: permissions do not stop it (t/mail_auth_passwd_file.t tests it)
        }
        let e = s.lookup(&q("a")).expect_err("cannot open");
        assert!(e.cause.contains("Permission denied"), "{e}");
        assert!(messages(&s).iter().any(|l| l.contains("users: cannot open: Permission denied")));
    }

    #[test]
    fn an_overlong_line_is_malformed_and_holds_its_user_without_being_read_again() {
        let d = TempDir::new("long");
        let mut data = b"big:{PLAIN}pw::::::".to_vec();
        data.extend(b"x=1 ".repeat(MAX_LINE / 4 + 1));
        let first = data.len();
        data.extend_from_slice(b"\nbig:{PLAIN}pw\nok:{PLAIN}fine\r\nnocolon\r\n");
        let s = open0(&d.file("u", &data));
        let m = messages(&s);
        assert!(m[0].contains(&format!(":1: line of {first} bytes (at most {MAX_LINE}), line skipped")), "{m:?}");
        assert!(m.iter().any(|l| l.contains(":2: duplicate user \"big\"")), "{m:?}");
        let e = s.lookup(&q("big")).expect_err("held");
        assert!(e.to_string().contains("its first line is malformed"), "{e}");
        assert_eq!(s.lookup(&q("ok")).unwrap().unwrap().password, "{PLAIN}fine");
        assert!(s.lookup(&q("nocolon")).is_err(), "held (CR LF line end)");
        assert_eq!(s.lookup(&q("bi")).unwrap(), None);
        assert_eq!(name_at(b"alice:x", 0, 5), Some(&b"alice"[..]));
        assert_eq!(name_at(b"alice:x", 0, 4), None, "longer than asked");
        assert_eq!(name_at(b"bob\r\nx", 0, 3), Some(&b"bob"[..]));
        assert_eq!(name_at(b"bob", 0, 3), Some(&b"bob"[..]), "at the end of the data");
    }

    #[test]
    fn revoking_the_last_app_password_takes_effect_at_the_next_check() {
        let d = TempDir::new("lastapp");
        let users = d.file("users", b"a:{PLAIN}main\n");
        let apps = d.file("apps", b"a:phone:{PLAIN}app\n");
        let s = open0(&users).with_app_passwords(&apps).unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().app_passwords.len(), 1);
        // what `mail-auth-user app revoke` leaves: an empty file, just written
        fs::write(&apps, b"").unwrap();
        assert!(s.lookup(&q("a")).unwrap().unwrap().app_passwords.is_empty(), "revoked at once, not 2 s later");
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
        assert!(m.last().unwrap().ends_with(": readable again, loaded 1 users"), "{m:?}");
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
        let s = PasswdFile::open(&p).unwrap().with_check_interval(Duration::from_secs(3600));
        // The first lookup in a process looks at the file and starts the watcher...
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}old");
        // ... which looks again only after the interval: until then the loaded data is used.
        std::thread::sleep(Duration::from_millis(50));
        fs::remove_file(&p).unwrap();
        assert_eq!(s.lookup(&q("a")).unwrap().unwrap().password, "{PLAIN}old");
        assert_eq!(s.shared.lookup_checks.load(Ordering::SeqCst), 1);
    }

    /// Calls `f` until it returns `Some`, at most `limit`; the value and how long it took.
    fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
        let t = Instant::now();
        loop {
            if let Some(v) = f() {
                return (v, t.elapsed());
            }
            assert!(t.elapsed() < limit, "nothing after {limit:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn password(s: &PasswdFile, user: &str) -> Result<Option<String>, String> {
        s.lookup(&q(user)).map(|a| a.map(|a| a.password)).map_err(|e| e.cause)
    }

    #[test]
    fn watcher_follows_the_file_without_lookups_touching_it() {
        const INTERVAL: Duration = Duration::from_millis(50);
        // "within about two intervals", with room for a busy test machine
        const SOON: Duration = Duration::from_millis(2 * 50 + 150);
        let d = TempDir::new("watch");
        let p = d.file("users", b"a:{PLAIN}old\n");
        let s = PasswdFile::open(&p).unwrap().with_check_interval(INTERVAL);
        let _ = messages(&s);
        assert_eq!(password(&s, "a"), Ok(Some("{PLAIN}old".into())));
        let checks = s.shared.lookup_checks.load(Ordering::SeqCst);
        assert_eq!(checks, 1, "the first lookup in the process looked");
        assert!(!s.shared.inline.load(Ordering::SeqCst), "a watcher thread runs");

        // atomic replace, same size
        fs::rename(d.file("new", b"a:{PLAIN}new\n"), &p).unwrap();
        let ((), took) = eventually(SOON, || (password(&s, "a") == Ok(Some("{PLAIN}new".into()))).then_some(()));
        eprintln!("rename seen after {took:?}");
        assert!(messages(&s).last().unwrap().ends_with(": changed, reloaded 1 users"));

        // in-place edit
        fs::write(&p, b"a:{PLAIN}new\nb:{PLAIN}added\n").unwrap();
        eventually(SOON, || password(&s, "b").unwrap().map(|_| ()));

        // deleted: fails closed, unknown users too
        let g = s.generation();
        fs::remove_file(&p).unwrap();
        let (cause, _) = eventually(SOON, || password(&s, "a").err());
        assert!(cause.starts_with("cannot stat: "), "{cause}");
        assert!(password(&s, "zzz").is_err());
        assert_eq!(s.user_count(), None);
        assert!(s.generation() > g);
        let n = s.take_notices();
        assert_eq!(n.last().unwrap().level, NoticeLevel::Error, "{n:?}");

        // a directory in its place
        fs::create_dir(&p).unwrap();
        eventually(SOON, || (password(&s, "a") == Err("not a regular file".into())).then_some(()));
        fs::remove_dir(&p).unwrap();

        // half a line, just written (a rewrite in place caught in the middle?): not served
        // while it may still be written; once it stopped changing, loaded as it is (the
        // user's hash is unusable)
        fs::write(&p, b"a:{PLA").unwrap();
        std::thread::sleep(SOON);
        assert!(password(&s, "a").is_err(), "a fresh cut line is not served");
        let old = std::time::SystemTime::now() - Duration::from_secs(10);
        fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        eventually(SOON, || (password(&s, "a") == Ok(Some("{PLA".into()))).then_some(()));
        assert!(messages(&s).iter().any(|m| m.ends_with(": readable again, loaded 1 users")));

        assert_eq!(
            s.shared.lookup_checks.load(Ordering::SeqCst),
            checks,
            "no lookup looked at the file: the watcher did"
        );
    }

    fn big_file(users: usize, version: &str) -> Vec<u8> {
        let mut data = Vec::with_capacity(users * 64);
        for i in 0..users {
            writeln!(data, "user{i}@example.com:{{SSHA}}{version}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA{i}").unwrap();
        }
        data
    }

    #[test]
    fn lookups_answer_promptly_from_the_old_snapshot_while_a_big_file_is_re_read() {
        let d = TempDir::new("slow");
        let p = d.file("users", &big_file(200_000, "old"));
        let s = PasswdFile::open(&p).unwrap().with_check_interval(Duration::from_millis(10));
        let _ = messages(&s);
        let old = Ok(Some("{SSHA}oldAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7".to_string()));
        let new = Ok(Some("{SSHA}newAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7".to_string()));
        assert_eq!(password(&s, "user7@example.com"), old);
        let checks = s.shared.lookup_checks.load(Ordering::SeqCst);

        let t = Instant::now();
        fs::rename(d.file("new", &big_file(200_000, "new")), &p).unwrap();
        let mut times = Vec::new();
        loop {
            let l = Instant::now();
            let got = password(&s, "user7@example.com");
            times.push(l.elapsed());
            if got == new {
                break;
            }
            assert_eq!(got, old);
            let l = Instant::now();
            assert_eq!(password(&s, "nobody"), Ok(None));
            times.push(l.elapsed());
            assert!(t.elapsed() < Duration::from_secs(30), "never re-read");
        }
        let reload = t.elapsed();
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        let (median, p999, slowest) = (at(0.5), at(0.999), at(1.0));
        eprintln!(
            "200k users re-read in {reload:?}; meanwhile {} lookups from the old snapshot: median \
             {median:?}, 99.9% {p999:?}, slowest {slowest:?}",
            times.len() - 1
        );
        assert!(times.len() > 100, "the old snapshot answered during the re-read");
        // Each lookup takes microseconds. On a loaded test machine the scheduler may still
        // stop the test thread for a while now and then; what must never happen is a lookup
        // waiting for the re-read.
        assert!(p999 < Duration::from_millis(5), "{p999:?}");
        assert!(slowest < reload / 2, "{slowest:?} of {reload:?}");
        assert_eq!(s.shared.lookup_checks.load(Ordering::SeqCst), checks);
        assert_eq!(s.user_count(), Some(200_000));
    }

    #[test]
    fn first_lookup_in_a_process_does_not_trust_an_old_snapshot() {
        // (A forked nginx worker inherits the master's snapshot: the file may have changed
        // long before its first lookup. Here, the same process stands in for it.)
        let d = TempDir::new("first");
        let small = d.file("small", b"a:{PLAIN}old\n");
        let s = PasswdFile::open(&small).unwrap();
        fs::write(&small, b"a:{PLAIN}new\n").unwrap();
        assert_eq!(password(&s, "a"), Ok(Some("{PLAIN}new".into())), "a small file is re-read at once");

        let gone = d.file("gone", b"a:{PLAIN}old\n");
        let s = PasswdFile::open(&gone).unwrap();
        fs::remove_file(&gone).unwrap();
        assert!(password(&s, "a").unwrap_err().starts_with("cannot stat: "));

        let big = d.file("big", &big_file(20_000, "old"));
        assert!(fs::metadata(&big).unwrap().len() > INLINE_RELOAD_MAX);
        let s = PasswdFile::open(&big).unwrap().with_check_interval(Duration::from_millis(10));
        fs::rename(d.file("big.new", &big_file(20_000, "new")), &big).unwrap();
        let e = password(&s, "user1@example.com").unwrap_err();
        assert_eq!(e, "changed since it was loaded, being re-read");
        eventually(Duration::from_secs(10), || {
            password(&s, "user1@example.com").ok().flatten().filter(|p| p.starts_with("{SSHA}new"))
        });
        let m = messages(&s);
        assert!(
            m.iter().any(
                |m| m.ends_with(": changed since it was loaded, being re-read; answering with a temporary failure")
            ),
            "{m:?}"
        );
        assert!(m.last().unwrap().ends_with(": readable again, loaded 20000 users"), "{m:?}");
    }

    #[test]
    fn dropping_the_store_ends_its_watcher() {
        let d = TempDir::new("drop");
        let p = d.file("users", b"a:{PLAIN}x\n");
        let s = PasswdFile::open(&p).unwrap().with_check_interval(Duration::from_secs(3600));
        s.lookup(&q("a")).unwrap();
        let stop = lock(&s.shared.stop).clone().unwrap();
        let weak = Arc::downgrade(&s.shared);
        drop(s);
        assert!(stop.is_stopped(), "told to stop");
        eventually(Duration::from_secs(2), || (weak.strong_count() == 0).then_some(()));
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
            assert_eq!(s.lookup(&q(&u)).unwrap().unwrap().password, format!("{{PLAIN}}pw{i}"));
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
        assert!(m[MAX_LINE_NOTICES].ends_with(": 450 more problems not shown"), "{m:?}");
    }

    #[test]
    fn extra_field_mapping() {
        let mut w = Vec::new();
        let (u, a) = parse_line("x:{PLAIN}p:::::: user=alias destuser=real pass=master deny=no", &mut w).unwrap();
        assert_eq!(u, "x");
        assert_eq!(a.name, "x", "the account's name is its user field");
        assert_eq!(a.backend_user.as_deref(), Some("real"), "destuser wins over user");
        assert_eq!(a.backend_pass.as_deref(), Some("master"));
        assert!(a.enabled, "deny=no does not disable");
        let (_, a) = parse_line("x:{PLAIN}p::::::user=alias deny=yes", &mut w).unwrap();
        assert_eq!(a.backend_user.as_deref(), Some("alias"));
        assert!(!a.enabled);
        let (_, a) = parse_line("x:{PLAIN}p::::::nologin=whatever", &mut w).unwrap();
        assert!(!a.enabled, "unknown flag value fails closed");
        // Dovecot refuses a login with these fields whatever their value
        for f in ["nologin=no", "nologin=0", "fail", "fail=no", "noauthenticate", "noauthenticate=n"] {
            let (_, a) = parse_line(&format!("x:{{PLAIN}}p::::::{f}"), &mut w).unwrap();
            assert!(!a.enabled, "{f} disables the account");
        }
        let (_, a) = parse_line("x:{PLAIN}p::::::allow_real_nets=10.0.0.0/8,::1", &mut w).unwrap();
        assert_eq!(a.real_networks.map(|n| n.len()), Some(2));
        assert!(parse_line("x:{PLAIN}p::::::allow_real_nets=somehost", &mut w).is_err());
        let (_, a) = parse_line("x:{PLAIN}p::::::delay_until=1700000000+5", &mut w).unwrap();
        assert_eq!(a.delay_until, Some(1_700_000_000));
        assert!(parse_line("x:{PLAIN}p::::::delay_until=soon", &mut w).is_err());
        let (_, a) = parse_line("x:{PLAIN}p::::::allow_nets=", &mut w).unwrap();
        assert_eq!(a.networks, Some(vec![]), "empty allow_nets allows nowhere");
        assert!(parse_line("x:{PLAIN}p::::::destuser=", &mut w).is_err());
        assert!(parse_line("x:{PLAIN}p::::::port=+1", &mut w).is_err());
        assert!(parse_line("x:{PLAIN}p::::::port=65536", &mut w).is_err());
        assert!(parse_line("x:{PLAIN}p::::::wait=86401", &mut w).is_err(), "a wait over a day");
        assert!(parse_line("x:{PLAIN}p::::::wait=86400", &mut w).is_ok());
        // a restriction given twice makes the line malformed: the last one does not win
        for extra in [
            "allow_nets=192.0.2.0/24 allow_nets=0.0.0.0/0",
            "allow_real_nets=10.0.0.0/8 allow_real_nets=0.0.0.0/0",
            "delay_until=4000000000 delay_until=0",
            "protocols=imap protocols=imap,pop3,smtp",
            "client_cert client_cert=optional",
            "app_only app_only=smtp",
            "host=10.0.0.1 host=10.0.0.2",
        ] {
            let e = parse_line(&format!("x:{{PLAIN}}p::::::{extra}"), &mut w).unwrap_err();
            assert!(e.contains("given twice"), "{extra}: {e}");
        }
        assert!(parse_line("x:{PLAIN}p::::::nologin nologin fail", &mut w).is_ok(), "flags may repeat");
        assert!(parse_line("x:{PLAIN}p::::::user=a destuser=b", &mut w).is_ok(), "two fields, once each");
        let e = parse_app_line("u:l:{PLAIN}x:allow_nets=10.0.0.0/8 allow_nets=0.0.0.0/0").unwrap_err();
        assert!(e.contains("allow_nets given twice"), "{e}");
        assert!(parse_app_line("u:l:{PLAIN}x:protocols=imap protocols=smtp").is_err());
        for (extra, required) in
            [("client_cert=required", true), ("client_cert", true), ("client_cert=optional", false), ("", false)]
        {
            let (_, a) = parse_line(&format!("x:{{PLAIN}}p::::::{extra}"), &mut w).unwrap();
            assert_eq!(a.require_client_cert, required, "{extra}");
        }
        let e = parse_line("x:{PLAIN}p::::::client_cert=sometimes", &mut w).unwrap_err();
        assert!(e.contains("bad client_cert=sometimes"), "{e}");
        // Fewer than 8 fields: no extras.
        let (_, a) = parse_line("x:{PLAIN}p:1000:1000", &mut w).unwrap();
        assert!(a.extra.is_empty());
        assert!(w.is_empty());
    }

    const BCRYPT_10: &str = "$2y$10$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu";
    const BCRYPT_05: &str = "$2y$05$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu";

    #[test]
    fn timing_template_is_the_slowest_hash_of_the_file() {
        let d = TempDir::new("template");
        let mixed = format!(
            "plain:{{PLAIN}}x\n\
             ssha:{{SSHA}}mBgzdS52X9GjHSZgalOZKLWalEsWaMFs\n\
             md5:$1$JIniQ6EM$UPKqJ6jKOfSQjZ8KcRYUM/\n\
             b5:{BCRYPT_05}\n\
             slow:{{BLF-CRYPT}}{BCRYPT_10}\n\
             sha:$6$F1K6kIIbYyvP95Xs$LlK1Y/Ogqa1HNUka0bWeZE1O1rEieX7RnY8wr294cHVj57LJCRaZ/eVcq2s8mmO/aoNfEAjnz8tMan8qQkeMB/\n\
             argon:$argon2id$v=19$m=19456,t=2,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo\n\
             odd:{{NOSUCH}}xyz\n\
             #disabled# off:$2y$31$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu\n\
             b10:{BCRYPT_10}\n"
        );
        let p = d.file("users", mixed.as_bytes());
        let s = open0(&p);
        assert_eq!(
            s.timing_template().as_deref(),
            Some(format!("{{BLF-CRYPT}}{BCRYPT_10}").as_str()),
            "the slowest (first of equals); unknown schemes and disabled lines do not count"
        );
        fs::write(&p, format!("a:{{PLAIN}}x\nb:{BCRYPT_05}\n")).unwrap();
        assert!(s.lookup(&q("a")).unwrap().is_some());
        assert_eq!(s.timing_template().as_deref(), Some(BCRYPT_05), "follows reloads");
        fs::write(&p, "odd:{NOSUCH}x\n").unwrap();
        assert!(s.lookup(&q("a")).unwrap().is_none());
        assert_eq!(s.timing_template(), None, "nothing usable");
        fs::remove_file(&p).unwrap();
        assert!(s.lookup(&q("a")).is_err());
        assert_eq!(s.timing_template(), None);
    }

    #[test]
    fn disabled_lines_are_comments() {
        let d = TempDir::new("disabled");
        let s = open0(&d.file("users", b"#disabled# bob:{PLAIN}b\nalice:{PLAIN}a\n  #disabled# carol:{PLAIN}c\n"));
        assert_eq!(s.user_count(), Some(1));
        assert_eq!(s.lookup(&q("bob")).unwrap(), None);
        assert_eq!(s.lookup(&q("#disabled# bob")).unwrap(), None);
        assert_eq!(messages(&s).len(), 1, "no notices: comments");
    }

    #[test]
    fn parse_agrees_with_the_store() {
        let (users, notices) = parse("f", USERS.as_bytes());
        assert_eq!(users.len(), 4);
        assert_eq!(users["frank"].name, "frank");
        assert!(notices.is_empty(), "{notices:?}");
        let (users, notices) = parse("f", b"");
        assert!(users.is_empty() && notices.is_empty());
        let (users, _) = parse("f", b"\xef\xbb\xbfa:{PLAIN}x\na:{PLAIN}y");
        assert_eq!(users["a"].password, "{PLAIN}x");
    }

    /// What the loaded form costs: the file's bytes plus the table (8 bytes a place, at most
    /// 3/4 of them used: 11-22 bytes a user).
    #[test]
    fn memory_per_user() {
        let d = TempDir::new("mem");
        let n = 100_000;
        let mut data = String::with_capacity(n * 90);
        for i in 0..n {
            data.push_str(&format!("user{i:06}@example.com:{BCRYPT_10}\n"));
        }
        let s = open0(&d.file("users", data.as_bytes()));
        let bytes = s.memory_bytes().unwrap();
        assert_eq!(bytes, data.len() + 8 * super::super::slots::size_for(n));
        assert!(bytes - data.len() <= 22 * n);
        eprintln!("{n} users, {} bytes/line: {} bytes/user loaded", data.len() / n, bytes / n);
    }

    /// Peak memory of loading a million users (run by hand, alone: it reads the process's
    /// peak RSS): `cargo test --release --lib million -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn million_users_memory_and_time() {
        fn status(key: &str) -> usize {
            let s = fs::read_to_string("/proc/self/status").unwrap();
            let line = s.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
        }
        let d = TempDir::new("million");
        let n = 1_000_000;
        let mut data = Vec::with_capacity(n * 50);
        for i in 0..n {
            writeln!(data, "user{i:07}@example.com:{{SSHA}}AAAAAAAAAAAAAAAA{i:07}").unwrap();
        }
        let p = d.file("users", &data);
        let size = data.len();
        drop(data);
        let rss0 = status("VmRSS:");
        let t = Instant::now();
        let s = PasswdFile::open(&p).unwrap();
        let load = t.elapsed();
        let rss1 = status("VmRSS:");
        let peak = status("VmHWM:");
        let t = Instant::now();
        for i in (0..n).step_by(1000) {
            assert!(s.lookup(&q(&format!("user{i:07}@example.com"))).unwrap().is_some());
        }
        let lookup = t.elapsed() / 1000;
        eprintln!(
            "{n} users, file {size} bytes ({} bytes/line): load {load:?}, lookup {lookup:?}; \
             held {} bytes ({} bytes/user), RSS +{} bytes ({} bytes/user), peak RSS +{} bytes",
            size / n,
            s.memory_bytes().unwrap(),
            s.memory_bytes().unwrap() / n,
            rss1 - rss0,
            (rss1 - rss0) / n,
            peak.saturating_sub(rss0)
        );
    }
}

#[cfg(test)]
mod app_tests {
    use super::*;
    use crate::protocol::Method;
    use crate::testutil::TempDir;

    fn q(user: &str) -> Query<'_> {
        Query { user, protocol: Protocol::Imap, method: Method::Plain, client_ip: None, password: None }
    }

    fn labels(a: &Account) -> Vec<&str> {
        a.app_passwords.iter().map(|x| x.label.as_str()).collect()
    }

    #[test]
    fn app_passwords_file() {
        let d = TempDir::new("apps");
        let users =
            d.file("users", b"alice:{PLAIN}a\nbob:{PLAIN}b::::::app_only=imap,pop3\ncarol:{PLAIN}c::::::app_only\n");
        let mut apps = String::from(
            "# app passwords\n\
             alice:phone:{PLAIN}p\n\
             bob:tablet:{PLAIN}t:protocols=smtp allow_nets=10.0.0.0/8 created=2026-12-01T00:00:00Z\n\
             alice:mailer:{PLAIN}m:protocols=smtp\n\
             alice:phone:{PLAIN}again\n\
             alice:bad label:{PLAIN}x\n\
             alice:badproto:{PLAIN}x:protocols=nntp\n\
             alice:nohash:\n\
             alice:weird:{NOSUCH}x\n",
        );
        for i in 0..20 {
            apps.push_str(&format!("dave:l{i}:{{PLAIN}}x\n"));
        }
        let apps = d.file("apps", apps.as_bytes());
        let s =
            PasswdFile::open(&users).unwrap().with_app_passwords(&apps).unwrap().with_check_interval(Duration::ZERO);
        let notices: Vec<String> = s.take_notices().into_iter().map(|n| n.message).collect();
        let has = |needle: &str| notices.iter().any(|m| m.contains(needle));
        assert!(has("apps:5: duplicate app password \"phone\" of \"alice\""), "{notices:?}");
        assert!(has("apps:6: user \"alice\": bad label"), "{notices:?}");
        assert!(has("apps:7: user \"alice\", app password \"badproto\": bad protocols=nntp"), "{notices:?}");
        assert!(has("apps:8: user \"alice\", app password \"nohash\": empty password field"), "{notices:?}");
        assert!(has("apps:9: app password \"weird\" of \"alice\": unknown or malformed"), "{notices:?}");
        assert!(has("\"dave\" has more than 16 app passwords"), "{notices:?}");
        assert!(has("apps: loaded 20 app passwords"), "{notices:?}");
        let a = s.lookup(&q("alice")).unwrap().unwrap();
        assert_eq!(labels(&a), ["phone", "mailer", "weird"], "file order; bad lines skipped");
        assert_eq!(a.app_passwords[0].password, "{PLAIN}p", "the first definition wins");
        assert_eq!(a.app_passwords[1].protocols, Some(vec![Protocol::Smtp]));
        assert_eq!(a.app_only, None);
        let b = s.lookup(&q("bob")).unwrap().unwrap();
        assert_eq!(labels(&b), ["tablet"]);
        assert_eq!(b.app_passwords[0].networks, Some(vec![Cidr::parse("10.0.0.0/8").unwrap()]));
        assert_eq!(b.app_only, Some(vec![Protocol::Imap, Protocol::Pop3]));
        let c = s.lookup(&q("carol")).unwrap().unwrap();
        assert!(c.app_passwords.is_empty());
        assert_eq!(c.app_only, Some(vec![Protocol::Imap, Protocol::Pop3, Protocol::Smtp]));
        // app passwords of a user the main file does not know log nobody in
        assert_eq!(s.lookup(&q("dave")).unwrap(), None);

        // revocation: the file replaced, seen by the next lookup (check interval 0 here)
        std::fs::write(d.join("apps.new"), "alice:mailer:{PLAIN}m:protocols=smtp\n").unwrap();
        std::fs::rename(d.join("apps.new"), &apps).unwrap();
        assert_eq!(labels(&s.lookup(&q("alice")).unwrap().unwrap()), ["mailer"]);
        // the app file gone: a temporary failure for every login, never the account without it
        std::fs::remove_file(&apps).unwrap();
        let e = s.lookup(&q("alice")).unwrap_err();
        assert!(e.to_string().starts_with("app passwords file"), "{e}");
        assert!(s.lookup(&q("nobody")).unwrap().is_none(), "unknown users stay unknown");
        // a missing app file at configuration time is an error (nginx -t)
        assert!(PasswdFile::open(&users).unwrap().with_app_passwords(d.join("none")).is_err());
    }

    #[test]
    fn app_only_values() {
        let mut w = Vec::new();
        let a = parse_line("u:{PLAIN}x::::::app_only=smtp", &mut w).unwrap().1;
        assert_eq!(a.app_only, Some(vec![Protocol::Smtp]));
        assert!(parse_line("u:{PLAIN}x::::::app_only=nntp", &mut w).is_err(), "a bad value skips the line");
        assert!(parse_app_line("u:l").is_err());
        assert_eq!(parse_app_line("u:l:{PLAIN}x").unwrap().1.label, "l");
    }

    #[test]
    fn a_carriage_return_inside_a_line_refuses_it() {
        // found by the passwd_file fuzz target: an app password line "u4:1:or0\r:=t" was taken,
        // with "or0\r" as its stored password
        let e = parse_app_line("u4:1:or0\r:=t").unwrap_err();
        assert!(e.contains("carriage return"), "{e}");
        assert!(parse_line("u:{PLAIN}a\rb", &mut Vec::new()).unwrap_err().contains("carriage return"));
        // a file with CR-only line ends is one line: no account from it, and a notice says why
        let (users, notices) = parse("f", b"alice:{PLAIN}a\rbob:{PLAIN}b\rcarol:{PLAIN}c\r");
        assert!(users.is_empty(), "{users:?}");
        assert!(notices.iter().any(|n| n.message.contains("CR-only line ends")), "{notices:?}");
        // CR LF line ends stay fine
        let (users, _) = parse("f", b"alice:{PLAIN}a\r\nbob:{PLAIN}b\r\n");
        assert_eq!(users.get("bob").map(|a| a.password.as_str()), Some("{PLAIN}b"));
    }
}
