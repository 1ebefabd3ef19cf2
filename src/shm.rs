//! Cross-process tables in a shared-memory region seen as `&[AtomicU64]` (plain safe Rust; the
//! FFI layer maps the region, see `nginx::zone`). nginx workers are processes, so everything is
//! atomics: a spinlock in word 0 guards every table access (critical sections are a few word
//! reads/writes, no hashing inside), slots are fixed-size, open addressing with a short probe
//! window, and a full window evicts its oldest slot.
//!
//! Layout: word 0 lock, word 1 magic (0 until initialised), words 2..HEADER user header
//! (secret, counters), then `slots × slot_words`. A zeroed region is an empty table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const HEADER: usize = 16;
const PROBE: usize = 8;
const MAGIC: u64 = 0x6e67_786d_6175_7468; // "ngxmauth"

/// A fixed-slot table over a shared region. Slot word 0 is the key (0 = empty), word 1 the
/// slot's age stamp (for eviction), the rest belongs to the user.
pub struct Table<'a> {
    words: &'a [AtomicU64],
    slot_words: usize,
    slots: usize,
}

pub struct Guard<'t, 'a> {
    table: &'t Table<'a>,
}

impl Drop for Guard<'_, '_> {
    fn drop(&mut self) {
        self.table.words[0].store(0, Ordering::Release);
    }
}

fn token() -> u64 {
    // pid in the high half, a never-zero marker in the low half
    (u64::from(std::process::id()) << 32) | 1
}

impl<'a> Table<'a> {
    /// `None` when the region cannot hold the header and at least `PROBE` slots.
    pub fn new(words: &'a [AtomicU64], slot_words: usize) -> Option<Table<'a>> {
        if slot_words < 2 || words.len() < HEADER + PROBE * slot_words {
            return None;
        }
        Some(Table { words, slot_words, slots: (words.len() - HEADER) / slot_words })
    }

    pub fn capacity(&self) -> usize {
        self.slots
    }

    /// Takes the region's lock. A holder that died (a crashed worker) cannot wedge the others:
    /// after waiting `STEAL_AFTER` the lock is taken over.
    pub fn lock(&self) -> Guard<'_, 'a> {
        const STEAL_AFTER: Duration = Duration::from_millis(500);
        let lock = &self.words[0];
        let me = token();
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let cur = lock.load(Ordering::Relaxed);
            if cur == 0 && lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Guard { table: self };
            }
            spins += 1;
            if spins % 64 == 0 {
                if start.elapsed() > STEAL_AFTER
                    && lock.compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    return Guard { table: self };
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Header word `i` (0..HEADER-2) for the user of the table (secret, counters ...).
    pub fn header(&self, i: usize) -> &AtomicU64 {
        &self.words[2 + i]
    }

    /// Runs `init` once per region (under the lock), e.g. to create a secret.
    pub fn init_once(&self, init: impl FnOnce(&Table<'a>)) {
        if self.words[1].load(Ordering::Acquire) == MAGIC {
            return;
        }
        let _g = self.lock();
        if self.words[1].load(Ordering::Acquire) != MAGIC {
            init(self);
            self.words[1].store(MAGIC, Ordering::Release);
        }
    }

    fn slot(&self, i: usize) -> &[AtomicU64] {
        let start = HEADER + i * self.slot_words;
        &self.words[start..start + self.slot_words]
    }

    /// Finds `key`'s slot (under the guard). `key` must not be 0.
    pub fn find<'g>(&'g self, _g: &Guard<'_, 'a>, key: u64) -> Option<&'g [AtomicU64]> {
        let base = (key % self.slots as u64) as usize;
        (0..PROBE)
            .map(|p| self.slot((base + p) % self.slots))
            .find(|s| s[0].load(Ordering::Relaxed) == key)
    }

    /// The slot to (re)use for `key`: its own, else an empty one, else the oldest in the probe
    /// window (evicted: reported in the bool). The slot is cleared and keyed when it is new.
    pub fn claim<'g>(&'g self, g: &Guard<'_, 'a>, key: u64, age: u64) -> (&'g [AtomicU64], bool) {
        if let Some(s) = self.find(g, key) {
            s[1].store(age, Ordering::Relaxed);
            return (s, false);
        }
        let base = (key % self.slots as u64) as usize;
        let window: Vec<&[AtomicU64]> = (0..PROBE).map(|p| self.slot((base + p) % self.slots)).collect();
        let (slot, evicted) = match window.iter().find(|s| s[0].load(Ordering::Relaxed) == 0) {
            Some(s) => (*s, false),
            None => {
                let oldest = window.iter().min_by_key(|s| s[1].load(Ordering::Relaxed)).copied();
                (oldest.unwrap_or(window[0]), true)
            }
        };
        for w in slot.iter().skip(2) {
            w.store(0, Ordering::Relaxed);
        }
        slot[0].store(key, Ordering::Relaxed);
        slot[1].store(age, Ordering::Relaxed);
        (slot, evicted)
    }

    /// Frees a slot (under the guard).
    pub fn remove(&self, _g: &Guard<'_, 'a>, slot: &[AtomicU64]) {
        for w in slot {
            w.store(0, Ordering::Relaxed);
        }
    }
}

/// Header words 0..4 hold a random secret, made when the region is first used (a zeroed region
/// is a new nginx start: a new secret). Tables that use `keyed_hash` call this first.
pub fn init_secret(table: &Table<'_>) {
    table.init_once(|t| {
        let mut b = [0u8; 32];
        if getrandom::getrandom(&mut b).is_err() {
            // no OS randomness: still unpredictable enough across starts for table keys
            let seed = format!("{:?}{}{:p}", std::time::SystemTime::now(), std::process::id(), &b);
            b.copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes()));
        }
        for i in 0..4 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            t.header(i).store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    });
}

/// HMAC-SHA256 of the parts (each prefixed by its length, so fields cannot run into each other)
/// under the region's secret: table keys that reveal nothing (passwords are never stored).
pub fn keyed_hash(table: &Table<'_>, parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut secret = [0u8; 32];
    for i in 0..4 {
        secret[i * 8..i * 8 + 8].copy_from_slice(&table.header(i).load(Ordering::Relaxed).to_le_bytes());
    }
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&secret) else {
        return [1; 32];
    };
    for p in parts {
        mac.update(&(p.len() as u64).to_le_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A non-zero 64-bit key from bytes (never 0: 0 marks an empty slot).
pub fn key64(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(a).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn too_small_regions_are_refused() {
        assert!(Table::new(&region(HEADER + 3), 4).is_none());
        assert!(Table::new(&region(HEADER + 8 * 4), 4).is_some());
    }

    #[test]
    fn claim_find_evict() {
        let r = region(HEADER + 8 * 3);
        let t = Table::new(&r, 3).unwrap();
        let g = t.lock();
        for k in 1..=8u64 {
            let (s, ev) = t.claim(&g, k * 8, k);
            assert!(!ev);
            s[2].store(k, Ordering::Relaxed);
        }
        assert_eq!(t.find(&g, 16).unwrap()[2].load(Ordering::Relaxed), 2);
        // full: the oldest (age 1, key 8) is evicted
        let (_, ev) = t.claim(&g, 9 * 8, 100);
        assert!(ev);
        assert!(t.find(&g, 8).is_none());
        assert!(t.find(&g, 72).is_some());
    }

    #[test]
    fn init_once_runs_once() {
        let r = region(HEADER + 64);
        let t = Table::new(&r, 4).unwrap();
        let mut n = 0;
        t.init_once(|t| {
            n += 1;
            t.header(0).store(42, Ordering::Relaxed)
        });
        t.init_once(|_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(t.header(0).load(Ordering::Relaxed), 42);
    }

    #[test]
    fn lock_excludes_concurrent_writers() {
        let r = region(HEADER + 64);
        let t = Table::new(&r, 4).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        let _g = t.lock();
                        // a non-atomic read-modify-write made safe only by the lock
                        let v = t.header(1).load(Ordering::Relaxed);
                        t.header(1).store(v + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(t.header(1).load(Ordering::Relaxed), 16000);
    }

    #[test]
    fn a_dead_holder_is_overtaken() {
        let r = region(HEADER + 64);
        let t = Table::new(&r, 4).unwrap();
        r[0].store(0xdead_0000_0001, Ordering::Relaxed); // held by a crashed process
        let start = Instant::now();
        drop(t.lock());
        assert!(start.elapsed() >= Duration::from_millis(400));
        assert_eq!(r[0].load(Ordering::Relaxed), 0);
    }
}
