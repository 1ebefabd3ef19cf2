//! What the file-backed stores share: noticing that their file changed (its identity, the check
//! interval), their broken/usable state, the notices and the generation that follow from it,
//! and the per-process watcher threads that do the checking off nginx's event loop.

#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{lock, NoticeLevel, StoreNotice};

/// The name of the watcher threads (as `top -H` and `ps -L` show it).
pub(crate) const THREAD_NAME: &str = "mail-auth-watch";

/// What identifies a file's content for change detection: a replaced file (rename: new inode)
/// or one edited in place (size, mtime, ctime) compares unequal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileId {
    pub(crate) fn of(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The content changed (mtime) less than `d` ago, or is stamped less than `d` ahead (a
    /// clock a little behind the writer's). A time further ahead is not a write under way (a
    /// local writer stamps its own clock's time): a file copied with its times kept from a host
    /// whose clock is ahead (`rsync -a`, `cp -p`, `tar x`) would otherwise be held back, the old
    /// content answering, until that time came.
    pub(crate) fn changed_within(&self, d: std::time::Duration) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let at = std::time::Duration::new(
            u64::try_from(self.mtime).unwrap_or(0),
            u32::try_from(self.mtime_nsec).unwrap_or(0),
        );
        match now.checked_sub(at) {
            Some(age) => age < d,
            None => at - now < d,
        }
    }
}

/// What a store's path must name: a regular file (after symlinks). Anything else (a FIFO, a
/// device, a directory) is a broken store: opening a FIFO for reading waits for a writer,
/// which would hold a watcher thread, a pool thread or nginx's event loop for good.
pub(crate) const NOT_A_FILE: &str = "not a regular file";

/// What a store's file is when it has no name left (link count 0) while its path still opens
/// it: the path is a bind mount of that single file (`docker run -v /srv/users:/etc/users`),
/// whose inode stays the old one after the host replaced the file by rename (the usual way,
/// `mail-auth-user`'s too). Read on, it would serve the old content (old passwords, deleted
/// users) for good: a broken store instead.
pub(crate) const UNLINKED: &str = "the file was replaced or removed outside this mount (it has no name left: the \
     path is a bind mount of the single file, which keeps the old content after a rename); \
     bind-mount its directory instead";

/// How long a file with no name left must stay so to be taken for gone (a rename over the path
/// is caught half-way for microseconds).
const ORPHAN_SETTLE: Duration = Duration::from_millis(200);

/// Opens a store's file for reading without ever waiting (`O_NONBLOCK`: a FIFO put at the path
/// between a `stat()` and the open is opened at once, and refused here), and only if it is a
/// regular file. The flag changes nothing for a regular file's reads.
pub(crate) fn open_regular(path: &Path) -> Result<(fs::File, fs::Metadata), String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err(NOT_A_FILE.to_string());
    }
    Ok((f, meta))
}

/// A store's notices (for nginx's error log) and generation, shared with its watcher thread.
#[derive(Debug, Default)]
pub(crate) struct Events {
    notices: Mutex<Vec<StoreNotice>>,
    /// Set (under the lock) when a notice goes in: every request asks, almost never in vain.
    pending: AtomicBool,
    generation: AtomicU64,
}

impl Events {
    pub(crate) fn push(&self, level: NoticeLevel, message: String) {
        let mut n = lock(&self.notices);
        n.push(StoreNotice { level, message });
        self.pending.store(true, Ordering::Release);
    }

    pub(crate) fn extend(&self, notices: Vec<StoreNotice>) {
        if notices.is_empty() {
            return;
        }
        let mut n = lock(&self.notices);
        n.extend(notices);
        self.pending.store(true, Ordering::Release);
    }

    /// The notices since the last call (none without taking the lock when there are none).
    pub(crate) fn take(&self) -> Vec<StoreNotice> {
        // a plain load first: the usual answer (none) costs no locked instruction
        if !self.pending.load(Ordering::Acquire) || !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.notices))
    }

    /// The content may have changed.
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// What [`FileWatch::look`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The check interval has not passed: the file was not looked at.
    NotDue,
    /// The file is the one the store serves.
    Same,
    /// Another file, or another content, than the one the store serves (or it serves none).
    Changed(FileId),
    /// `stat()` failed, or the path names something else than a regular file (the cause, for
    /// the log): nothing to open.
    Gone(String),
}

/// One store's view of its file: the identity of what it serves, when it last looked, and why
/// it is broken (once reported).
#[derive(Debug)]
pub(crate) struct FileWatch {
    path: PathBuf,
    interval: Duration,
    last_check: Option<Instant>,
    current: Option<FileId>,
    broken: Option<String>,
    /// The file (device, inode) the last look found with no name left (see [`UNLINKED`]), and
    /// since when.
    orphan: Option<((u64, u64), Instant)>,
}

impl FileWatch {
    pub(crate) fn new(path: &Path, interval: Duration) -> FileWatch {
        FileWatch { path: path.to_path_buf(), interval, last_check: None, current: None, broken: None, orphan: None }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    pub(crate) fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// `stat()`s the file if the check interval has passed since the last look (or `force`)
    /// and compares it with what the store serves.
    pub(crate) fn look(&mut self, force: bool) -> Seen {
        let now = Instant::now();
        if !force
            && matches!(self.last_check,
                Some(last) if now.saturating_duration_since(last) < self.interval)
        {
            return Seen::NotDue;
        }
        self.last_check = Some(now);
        match fs::metadata(&self.path) {
            Err(e) => Seen::Gone(format!("cannot stat: {e}")),
            Ok(m) if !m.is_file() => Seen::Gone(NOT_A_FILE.to_string()),
            // a file with no name left that the path names: a bind mount of the single file whose
            // source was replaced, for good, or a rename over the path caught half-way (the file
            // system drops the old inode's link before the path names the new one): only the
            // same one seen so at every look for ORPHAN_SETTLE is gone
            Ok(m) if m.nlink() == 0 => {
                let seen = (m.dev(), m.ino());
                match self.orphan {
                    Some((id, since)) if id == seen => {
                        if now.saturating_duration_since(since) >= ORPHAN_SETTLE {
                            Seen::Gone(UNLINKED.to_string())
                        } else {
                            Seen::Same
                        }
                    }
                    _ => {
                        self.orphan = Some((seen, now));
                        Seen::Same
                    }
                }
            }
            Ok(m) => {
                self.orphan = None;
                let id = FileId::of(&m);
                if self.current == Some(id) {
                    Seen::Same
                } else {
                    Seen::Changed(id)
                }
            }
        }
    }

    /// Identity of the file the store serves (`None`: nothing, or nothing usable).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn current(&self) -> Option<FileId> {
        self.current
    }

    /// The store now serves file `id` (`None`: forget it, the next look finds a change).
    pub(crate) fn set_current(&mut self, id: Option<FileId>) {
        self.current = id;
        self.last_check = Some(Instant::now());
    }

    /// The store cannot answer because of `cause`. Logs it (error level) unless it is the cause
    /// already reported; `true` when it was logged (a new state).
    pub(crate) fn fail(&mut self, events: &Events, cause: &str) -> bool {
        if self.broken.as_deref() == Some(cause) {
            return false;
        }
        events
            .push(NoticeLevel::Error, format!("{}: {cause}; answering with a temporary failure", self.path.display()));
        self.broken = Some(cause.to_string());
        true
    }

    /// The store answers again; `true` if it was broken (the caller logs the recovery).
    pub(crate) fn recover(&mut self) -> bool {
        self.broken.take().is_some()
    }
}

/// Stops one watcher thread: it waits on this between two checks.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    pub(crate) fn stop(&self) {
        *lock(&self.stopped) = true;
        self.wake.notify_all();
    }

    #[cfg(test)]
    pub(crate) fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Waits `d`, or less if stopped; `true` if stopped.
    fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopped = lock(&self.stopped);
        while !*stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stopped = match self.wake.wait_timeout(stopped, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        *stopped
    }
}

struct Running {
    pid: u32,
    stop: Arc<Stop>,
    handle: JoinHandle<()>,
}

/// Run first by every watcher thread, see [`set_thread_start_hook`].
static THREAD_START: OnceLock<fn()> = OnceLock::new();

/// Sets a function every watcher thread runs before anything else (once per process; later
/// calls are ignored). The nginx layer can block signals there, as nginx does in its own
/// thread pool's threads: nginx's signal handlers expect to interrupt the event loop's thread.
/// (Linux delivers a process-directed signal to the main thread when it does not block it and
/// has none pending, so without the hook a watcher thread rarely gets one; its handler then
/// only sets nginx's flags, which the event loop reads at its next wake-up.)
pub fn set_thread_start_hook(hook: fn()) {
    let _ = THREAD_START.set(hook);
}

/// This process's id as [`process_started`] saw it (0: not called in this process's lineage).
static PROCESS_ID: AtomicU32 = AtomicU32::new(0);

/// A process that will do lookups starts (nginx: each worker's `init_process`, after the fork):
/// [`process_id`] then answers without a `getpid()` syscall per lookup. A process forked
/// later must call it again (nginx calls `init_process` in every process it forks for work).
pub fn process_started() {
    PROCESS_ID.store(std::process::id(), Ordering::Relaxed);
}

/// The id of this process: the one [`process_started`] recorded, else `getpid()`.
pub(crate) fn process_id() -> u32 {
    match PROCESS_ID.load(Ordering::Relaxed) {
        0 => std::process::id(),
        pid => pid,
    }
}

/// The watcher threads started by this process (and, after a fork, by its parent: those are
/// not running here and are left alone).
static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

/// Starts a watcher thread: `tick` at once, then every `interval` until it returns `false` or
/// the thread is stopped (by the returned [`Stop`] or [`stop_watchers`]).
pub(crate) fn spawn(interval: Duration, mut tick: impl FnMut() -> bool + Send + 'static) -> std::io::Result<Arc<Stop>> {
    let stop = Arc::new(Stop::default());
    let theirs = Arc::clone(&stop);
    let handle = std::thread::Builder::new().name(THREAD_NAME.to_string()).stack_size(256 * 1024).spawn(move || {
        if let Some(hook) = THREAD_START.get() {
            hook();
        }
        // a tick that panics (a client crate's unwrap, say) is taken as "go on": a watcher that
        // died would leave its store's snapshot, or its queue of settlements, unserved for good
        while std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut tick)).unwrap_or(true) {
            if theirs.wait(interval) {
                break;
            }
        }
    })?;
    let pid = std::process::id();
    let mut running = lock(&RUNNING);
    reap(&mut running, pid);
    running.push(Running { pid, stop: Arc::clone(&stop), handle });
    Ok(stop)
}

/// Joins the finished threads of this process; forgets those of another (a parent's, before a
/// fork: their handles mean nothing here).
fn reap(running: &mut Vec<Running>, pid: u32) {
    let mut i = 0;
    while i < running.len() {
        if running[i].pid != pid {
            std::mem::forget(running.swap_remove(i));
        } else if running[i].handle.is_finished() {
            let _ = running.swap_remove(i).handle.join();
        } else {
            i += 1;
        }
    }
}

/// Stops this process's watcher threads and waits up to `patience` for them (a thread in the
/// middle of re-reading a big file finishes that first); what is still running then is left
/// alone. An nginx worker calls this as it exits.
pub fn stop_watchers(patience: Duration) {
    let pid = std::process::id();
    let mut running = std::mem::take(&mut *lock(&RUNNING));
    for r in running.iter().filter(|r| r.pid == pid) {
        r.stop.stop();
    }
    let deadline = Instant::now() + patience;
    loop {
        reap(&mut running, pid);
        if running.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Still busy: detached (dropping a handle detaches its thread).
    drop(running);
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_id_is_the_pid_recorded_else_getpid() {
        assert_eq!(super::process_id(), std::process::id());
        super::process_started();
        assert_eq!(super::process_id(), std::process::id());
    }

    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn watcher_ticks_at_once_then_every_interval_until_stopped() {
        let n = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&n);
        let name = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&name);
        let stop = spawn(Duration::from_millis(10), move || {
            *lock(&seen) = std::thread::current().name().map(str::to_string);
            m.fetch_add(1, Ordering::SeqCst) < 1000
        })
        .unwrap();
        let t = Instant::now();
        while n.load(Ordering::SeqCst) < 3 {
            assert!(t.elapsed() < Duration::from_secs(5), "ticks");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(lock(&name).as_deref(), Some(THREAD_NAME));
        stop.stop();
        let t = Instant::now();
        loop {
            let r = lock(&RUNNING);
            if !r.iter().any(|r| Arc::ptr_eq(&r.stop, &stop) && !r.handle.is_finished()) {
                break;
            }
            drop(r);
            assert!(t.elapsed() < Duration::from_secs(2), "stopped promptly");
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = n.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(n.load(Ordering::SeqCst), after, "no tick after stop");
    }

    #[test]
    fn the_start_hook_runs_in_each_watcher_thread_before_its_first_tick() {
        static HOOKED: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());
        fn hook() {
            lock(&HOOKED).push(std::thread::current().name().map(str::to_string));
        }
        set_thread_start_hook(hook);
        let before_tick = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&before_tick);
        spawn(Duration::from_millis(1), move || {
            *lock(&seen) = Some(lock(&HOOKED).len());
            false
        })
        .unwrap();
        let t = Instant::now();
        while lock(&before_tick).is_none() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(lock(&before_tick).unwrap() >= 1, "hook ran first");
        assert!(lock(&HOOKED).iter().all(|n| n.as_deref() == Some(THREAD_NAME)));
    }

    #[test]
    fn a_tick_returning_false_ends_the_thread() {
        let n = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&n);
        spawn(Duration::from_millis(1), move || {
            m.fetch_add(1, Ordering::SeqCst);
            false
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn file_watch_identity_and_broken_state() {
        let dir = crate::testutil::TempDir::new("watch");
        let p = dir.join("f");
        let events = Events::default();
        let mut w = FileWatch::new(&p, Duration::from_secs(3600));
        assert!(matches!(w.look(true), Seen::Gone(c) if c.starts_with("cannot stat: ")));
        assert!(w.fail(&events, "cannot stat: gone"));
        assert!(!w.fail(&events, "cannot stat: gone"), "reported once");
        assert_eq!(events.take().len(), 1);
        fs::write(&p, b"one").unwrap();
        assert_eq!(w.look(false), Seen::NotDue, "within the interval");
        let Seen::Changed(id) = w.look(true) else { panic!("changed") };
        assert_eq!(id.size(), 3);
        w.set_current(Some(id));
        assert!(w.recover());
        assert!(!w.recover());
        assert_eq!(w.look(true), Seen::Same);
        // same size, new inode
        fs::write(dir.join("g"), b"two").unwrap();
        fs::rename(dir.join("g"), &p).unwrap();
        assert!(matches!(w.look(true), Seen::Changed(_)));
    }

    /// A path that still opens a file with no name left (a bind mount of the single file,
    /// after the host renamed a new one over it) is a broken store, not the old content served
    /// on; `/proc/self/fd/N` of an open file that was removed stands for such a path.
    #[test]
    fn a_file_with_no_name_left_is_a_broken_store() {
        let dir = crate::testutil::TempDir::new("watch-unlinked");
        let p = dir.join("users");
        fs::write(&p, b"alice:{PLAIN}a\n").unwrap();
        let held = fs::File::open(&p).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
        let by_fd = PathBuf::from(format!("/proc/self/fd/{fd}"));
        let events = Events::default();
        let mut w = FileWatch::new(&by_fd, Duration::from_secs(3600));
        let Seen::Changed(id) = w.look(true) else { panic!("a named file is seen") };
        w.set_current(Some(id));
        assert_eq!(w.look(true), Seen::Same);
        assert!(open_regular(&by_fd).is_ok());
        // replaced by rename, as the host does it: the old inode has no name left
        fs::write(dir.join("new"), b"alice:{PLAIN}new\n").unwrap();
        fs::rename(dir.join("new"), &p).unwrap();
        assert_eq!(w.look(true), Seen::Same, "once: maybe a rename caught half-way");
        assert_eq!(w.look(true), Seen::Same, "so far for less than ORPHAN_SETTLE");
        std::thread::sleep(ORPHAN_SETTLE);
        assert_eq!(w.look(true), Seen::Gone(UNLINKED.to_string()), "still so: gone");
        assert!(w.fail(&events, UNLINKED));
        let logged = events.take();
        assert!(logged[0].message.contains("bind-mount its directory instead"), "{logged:?}");
        // another hard link keeps it named: served as before
        let q = dir.join("q");
        fs::write(&q, b"x\n").unwrap();
        fs::hard_link(&q, dir.join("q2")).unwrap();
        fs::remove_file(&q).unwrap();
        assert!(open_regular(&dir.join("q2")).is_ok());
        drop(held);
    }

    /// A file renamed over the path, caught half-way (ext4 drops the old inode's link before the
    /// path names the new one): a rename, not a bind mount, so never [`UNLINKED`] (every login a
    /// temporary failure, a wrong advice logged).
    #[test]
    fn a_rename_racing_the_open_is_not_taken_for_a_bind_mount() {
        let dir = crate::testutil::TempDir::new("watch-race");
        let p = dir.join("users");
        fs::write(&p, b"alice:{PLAIN}a\n").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let renamer = {
            let (dir, p, stop) = (dir.join("new"), p.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    fs::write(&dir, b"alice:{PLAIN}a\n").unwrap();
                    fs::rename(&dir, &p).unwrap();
                }
            })
        };
        let mut w = FileWatch::new(&p, Duration::from_secs(3600));
        let t = Instant::now();
        let mut wrong = 0;
        while t.elapsed() < Duration::from_millis(1500) {
            assert!(open_regular(&p).is_ok());
            if w.look(true) == Seen::Gone(UNLINKED.to_string()) {
                wrong += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        renamer.join().unwrap();
        assert_eq!(wrong, 0, "renames taken for a bind mount");
    }
}
