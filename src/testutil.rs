//! Helpers for unit tests (compiled only with `cfg(test)`).

#![forbid(unsafe_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A private directory under the system temp dir, removed with everything in it when dropped,
/// so also when the test fails (a panic unwinds through the drop). Named
/// `ngx-mail-auth-test-TAG-PID-N`: the process id and a counter keep concurrent tests and runs
/// apart. Derefs to its path (and is `AsRef<Path>`).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "ngx-mail-auth-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        // Left over by a killed run of a process with the same id: start afresh.
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Writes `content` to `name` in the directory; its path.
    pub(crate) fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

mod tests {
    use super::*;

    #[test]
    fn removed_when_dropped_even_by_a_panic() {
        let d = TempDir::new("self");
        let kept = d.to_path_buf();
        assert!(kept.is_dir());
        assert!(kept.file_name().unwrap().to_str().unwrap().contains(&format!("-{}-", std::process::id())));
        std::fs::create_dir(d.join("sub")).unwrap();
        d.file("sub/f", b"x");
        drop(d);
        assert!(!kept.exists());
        let d = TempDir::new("panic");
        let path = d.to_path_buf();
        std::panic::catch_unwind(move || {
            let _d = d;
            panic!("a failing test");
        })
        .unwrap_err();
        assert!(!path.exists());
    }
}

/// A xorshift64 sequence: reproducible pseudo-random numbers for tests that compare two
/// implementations on many generated inputs.
pub(crate) struct Xorshift(pub(crate) u64);

impl Iterator for Xorshift {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        Some(*x)
    }
}
