//! Cross-process tables in a shared-memory region seen as `&[AtomicU64]`, in plain safe Rust.
//! The FFI layer (`nginx::zone`) does the single cast of the zeroed, page-aligned zone memory to
//! `&[AtomicU64]`; everything here goes through atomics, so several processes (nginx workers)
//! and threads (the thread pool) may use one region at once.
//!
//! Layout (64-bit words; a zeroed region is an empty table):
//! ```text
//! word 0            lock: 0 free, else the holder's token (pid << 32 | per-process counter | 1)
//! word 1            layout stamp: 0 until initialised, then MAGIC + slot size
//! words 2..6        per-start random secret (keyed hashes of table keys; see `keyed_hash`)
//! words 6..16       user header (counters, see `Table::header`)
//! words 16..        slots × slot_words; slot word 0 = key (0: empty), word 1 = deadline
//!                   (seconds; a slot is dead from then on and is reused first), word 2 = last
//!                   used (seconds; for eviction), words 3.. belong to the user of the table
//! ```
//! One spinlock (word 0) guards all slot access; critical sections are a few word reads and
//! writes (keys are hashed before locking). Open addressing with a probe window of `PROBE`
//! slots: a key lives in one of the `PROBE` slots after `key % slots`; a new key takes an empty
//! or dead slot of its window, else evicts the window's least recently used slot (with
//! `claim_with`: the least recently used of the least protected ones, as the caller ranks them).
//!
//! A worker that dies holding the lock cannot wedge the others: a waiter that has seen the same
//! token for `STEAL_DEAD` (holder's pid gone from /proc) or `STEAL_ANY` (pid alive or unknown:
//! a stopped process) takes the lock over. Tokens are unique per acquisition and a guard only
//! releases its own token, so a late holder cannot release a lock it lost.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Words before the first slot.
pub const HEADER: usize = 16;
/// First slot word that belongs to the user of a table (0 key, 1 deadline, 2 last used).
pub const DATA: usize = 3;
/// Slots searched for a key (and the minimum number of slots of a table).
pub const PROBE: usize = 8;
const MAGIC: u64 = 0x6e67_786d_6175_7400; // "ngxmaut\0" + slot size
const SECRET: usize = 2;
const USER_HEADER: usize = 6;
/// User header words (`Table::header(0..USER_WORDS)`).
pub const USER_WORDS: usize = HEADER - USER_HEADER;
const STEAL_DEAD: Duration = Duration::from_millis(200);
const STEAL_ANY: Duration = Duration::from_secs(2);

/// How `Table::claim_with` got its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key's own slot (data kept).
    Found,
    /// An empty or dead slot.
    Free,
    /// A live slot of another key was evicted; `rank` is the caller's rank of it (above 0
    /// only when every live slot of the probe window ranked above 0).
    Evicted { rank: u8 },
}

/// A fixed-slot table over a shared region.
pub struct Table<'a> {
    words: &'a [AtomicU64],
    slot_words: usize,
    slots: usize,
}

/// Proof that the region's lock is held; releases it when dropped.
pub struct Guard<'t, 'a> {
    table: &'t Table<'a>,
    token: u64,
}

impl Drop for Guard<'_, '_> {
    fn drop(&mut self) {
        // Only our own token: if the lock was taken over from us, it is not ours to release.
        let _ = self.table.words[0].compare_exchange(self.token, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// A lock token unique to this acquisition: pid in the high half, a counter, never zero. The
/// pid is the one the worker recorded at its start (`store::watch::process_id`): no `getpid()`
/// syscall per lock (every cache probe and limiter step takes one).
fn token() -> u64 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
    (u64::from(crate::store::watch::process_id()) << 32) | (u64::from(seq) << 1) | 1
}

/// Is the process that wrote `token` still alive? `None` when we cannot tell (no /proc).
fn holder_alive(token: u64) -> Option<bool> {
    let pid = token >> 32;
    if pid == u64::from(crate::store::watch::process_id()) {
        return Some(true);
    }
    if !std::path::Path::new("/proc/self").exists() {
        return None;
    }
    Some(std::path::Path::new(&format!("/proc/{pid}")).exists())
}

impl<'a> Table<'a> {
    /// Opens the table in `words`, initialising the region on first use (random secret). A
    /// region stamped with another slot size (another layout, e.g. a module upgrade kept the
    /// zone) is cleared. `None` when the region cannot hold the header and `PROBE` slots.
    pub fn new(words: &'a [AtomicU64], slot_words: usize) -> Option<Table<'a>> {
        let min = HEADER.checked_add(PROBE.checked_mul(slot_words)?)?;
        if slot_words < DATA || words.len() < min {
            return None;
        }
        let t = Table { words, slot_words, slots: (words.len() - HEADER) / slot_words };
        t.init();
        Some(t)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots
    }

    fn stamp(&self) -> u64 {
        MAGIC + self.slot_words as u64
    }

    fn init(&self) {
        if self.words[1].load(Ordering::Acquire) == self.stamp() {
            return;
        }
        let _g = self.lock();
        let stamp = self.words[1].load(Ordering::Acquire);
        if stamp == self.stamp() {
            return;
        }
        if stamp != 0 {
            for w in &self.words[2..] {
                w.store(0, Ordering::Relaxed);
            }
        }
        let secret = random_secret();
        for (i, chunk) in secret.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.words[SECRET + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        self.words[1].store(self.stamp(), Ordering::Release);
    }

    /// Takes the region's lock (spins, then yields; takes over from a dead holder).
    pub fn lock(&self) -> Guard<'_, 'a> {
        let lock = &self.words[0];
        let me = token();
        // (holder, since when it was seen holding): the clock is read only once the lock is
        // found held, not on the usual uncontended path
        let mut seen: Option<(u64, Instant)> = None;
        let mut spins = 0u32;
        loop {
            let cur = lock.load(Ordering::Relaxed);
            if cur == 0 {
                if lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Guard { table: self, token: me };
                }
                continue;
            }
            spins = spins.wrapping_add(1);
            if spins & 63 != 0 {
                std::hint::spin_loop();
                continue;
            }
            match seen {
                Some((holder, since)) if holder == cur => {
                    let held = since.elapsed();
                    let stale = held > STEAL_ANY || (held > STEAL_DEAD && holder_alive(cur) == Some(false));
                    if stale && lock.compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        return Guard { table: self, token: me };
                    }
                }
                _ => seen = Some((cur, Instant::now())),
            }
            std::thread::yield_now();
        }
    }

    /// User header word `i` (`0..USER_WORDS`; counters). Out of range: the last one.
    pub fn header(&self, i: usize) -> &AtomicU64 {
        &self.words[USER_HEADER + i.min(USER_WORDS - 1)]
    }

    /// The region's secret (random per region, i.e. per nginx start): key for `keyed_hash`.
    pub fn secret(&self) -> [u8; 32] {
        let mut s = [0u8; 32];
        for (i, chunk) in s.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&self.words[SECRET + i].load(Ordering::Relaxed).to_le_bytes());
        }
        s
    }

    /// HMAC-SHA256 of `parts` under the region's secret (see `keyed_hash`). Call outside the lock.
    pub fn keyed_hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        keyed_hash(&self.secret(), parts)
    }

    fn slot(&self, i: usize) -> &[AtomicU64] {
        let start = HEADER + (i % self.slots) * self.slot_words;
        &self.words[start..start + self.slot_words]
    }

    fn window(&self, key: u64) -> impl Iterator<Item = &[AtomicU64]> + '_ {
        let base = self.home(key);
        (0..PROBE).map(move |p| self.slot(base + p))
    }

    /// `key`'s slot, if present (dead or not: callers check their deadline). `key` != 0.
    pub fn find<'g>(&'g self, _g: &Guard<'_, 'a>, key: u64) -> Option<&'g [AtomicU64]> {
        self.window(key).find(|s| s[0].load(Ordering::Relaxed) == key)
    }

    /// The slot for `key`: its own, else an empty or dead one (deadline <= `now`), else the
    /// least recently used one, which is evicted (the bool). A new slot is zeroed, keyed and
    /// stamped used at `now`; the caller sets its deadline (word 1) and data. `key` != 0.
    pub fn claim<'g>(&'g self, g: &Guard<'_, 'a>, key: u64, now: u64) -> (&'g [AtomicU64], bool) {
        match self.claim_with(g, key, now, |_| 0, u8::MAX) {
            Some((s, claim)) => (s, matches!(claim, Claim::Evicted { .. })),
            // not reached: every slot ranks 0, below the limit
            None => (self.take(key, self.slot(self.home(key)), now), true),
        }
    }

    /// `claim` with protected slots: `rank` says how much a live slot of the probe window is
    /// worth keeping (0: not at all; called under the lock, keep it cheap). The slot for `key`
    /// is its own, else an empty or dead one, else the least recently used of the lowest-ranked
    /// live slots, which is evicted (`Claim::Evicted` with its rank; a rank above 0 means the
    /// window held nothing unprotected). Slots ranked `limit` or more are never evicted: `None`
    /// if the window holds nothing else (nothing is changed then). A new slot is zeroed, keyed
    /// and stamped used at `now`; the caller sets its deadline (word 1) and data. `key` != 0.
    pub fn claim_with<'g>(
        &'g self,
        g: &Guard<'_, 'a>,
        key: u64,
        now: u64,
        rank: impl Fn(&[AtomicU64]) -> u8,
        limit: u8,
    ) -> Option<(&'g [AtomicU64], Claim)> {
        if let Some(s) = self.find(g, key) {
            s[2].store(now, Ordering::Relaxed);
            return Some((s, Claim::Found));
        }
        // (rank, last used) of the best victim so far
        let mut pick: Option<(&[AtomicU64], u8, u64)> = None;
        for s in self.window(key) {
            if s[0].load(Ordering::Relaxed) == 0 || s[1].load(Ordering::Relaxed) <= now {
                return Some((self.take(key, s, now), Claim::Free));
            }
            let r = rank(s);
            if r >= limit {
                continue;
            }
            let used = s[2].load(Ordering::Relaxed);
            if !matches!(pick, Some((_, pr, pu)) if (pr, pu) <= (r, used)) {
                pick = Some((s, r, used));
            }
        }
        let (s, rank, _) = pick?;
        Some((self.take(key, s, now), Claim::Evicted { rank }))
    }

    fn home(&self, key: u64) -> usize {
        (key % self.slots as u64) as usize
    }

    /// Zeroes `slot` and gives it to `key`, used at `now`.
    fn take<'g>(&self, key: u64, slot: &'g [AtomicU64], now: u64) -> &'g [AtomicU64] {
        for w in &slot[1..] {
            w.store(0, Ordering::Relaxed);
        }
        slot[0].store(key, Ordering::Relaxed);
        slot[2].store(now, Ordering::Relaxed);
        slot
    }

    /// Every slot, in order (empty and dead ones too: callers check word 0 and the deadline).
    pub fn slots<'g>(&'g self, _g: &Guard<'_, 'a>) -> impl Iterator<Item = &'g [AtomicU64]> + 'g {
        (0..self.slots).map(move |i| self.slot(i))
    }

    /// The slots `from..to` (clamped to the table), for a scan that takes the lock a part at a
    /// time.
    pub fn slots_in<'g>(
        &'g self,
        _g: &Guard<'_, 'a>,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = &'g [AtomicU64]> + 'g {
        (from.min(self.slots)..to.min(self.slots)).map(move |i| self.slot(i))
    }

    /// Marks a slot used at `now` (for eviction: least recently used goes first).
    pub fn touch(&self, _g: &Guard<'_, 'a>, slot: &[AtomicU64], now: u64) {
        slot[2].store(now, Ordering::Relaxed);
    }

    /// Frees a slot.
    pub fn remove(&self, _g: &Guard<'_, 'a>, slot: &[AtomicU64]) {
        for w in slot {
            w.store(0, Ordering::Relaxed);
        }
    }
}

/// 32 random bytes from the OS. Without OS randomness (should not happen on a supported
/// system) a hash of time, pid and an address: still different at every start.
fn random_secret() -> [u8; 32] {
    let mut b = [0u8; 32];
    if getrandom::getrandom(&mut b).is_err() {
        let seed = format!("{:?}{}{:p}", std::time::SystemTime::now(), std::process::id(), &b);
        b.copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes()));
    }
    b
}

/// HMAC-SHA256 of the parts under `secret`, each part prefixed by its length so that fields
/// cannot run into each other. Table keys made this way reveal nothing of their parts
/// (passwords are never stored, only such hashes).
///
/// The HMACs keyed with the last few secrets this thread used (a region each: cache, limiter,
/// ...) are kept (a copy of their state), so each hash costs only its own blocks, not the two of
/// keying (2 of the ~7 SHA-256 blocks of a cache key).
pub fn keyed_hash(secret: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    type Keyed = Vec<([u8; 32], Hmac<sha2::Sha256>)>;
    const KEPT: usize = 4;
    thread_local! {
        static KEYED: std::cell::RefCell<Keyed> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let keyed = KEYED.with(|k| {
        let mut k = k.borrow_mut();
        if let Some((_, mac)) = k.iter().find(|(s, _)| s == secret) {
            return Some(mac.clone());
        }
        // HMAC takes keys of any length: this cannot fail.
        let mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).ok()?;
        if k.len() == KEPT {
            k.remove(0);
        }
        k.push((*secret, mac.clone()));
        Some(mac)
    });
    let Some(mut mac) = keyed else {
        return [1; 32];
    };
    for p in parts {
        mac.update(&(p.len() as u64).to_le_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// 64-bit word `i` (0..4) of a hash.
pub fn hash_word(h: &[u8; 32], i: usize) -> u64 {
    let mut w = [0u8; 8];
    let i = i.min(3) * 8;
    w.copy_from_slice(&h[i..i + 8]);
    u64::from_le_bytes(w)
}

/// A table key from a hash: never 0 (0 marks an empty slot).
pub fn key64(h: &[u8; 32]) -> u64 {
    hash_word(h, 0).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn too_small_regions_are_refused() {
        assert!(Table::new(&region(HEADER + PROBE * 4 - 1), 4).is_none());
        assert!(Table::new(&region(HEADER + PROBE * 4), 4).is_some());
        assert!(Table::new(&region(1 << 10), DATA - 1).is_none());
        assert!(Table::new(&region(1 << 10), usize::MAX).is_none());
        assert_eq!(Table::new(&region(HEADER + 100 * 3 + 2), 3).map(|t| t.capacity()), Some(100));
    }

    #[test]
    fn claim_find_evict_least_recently_used() {
        let r = region(HEADER + PROBE * 4);
        let t = Table::new(&r, 4).unwrap();
        let g = t.lock();
        for k in 1..=8u64 {
            let (s, ev) = t.claim(&g, k * 8, k);
            assert!(!ev);
            s[1].store(100 + k, Ordering::Relaxed);
            s[DATA].store(k, Ordering::Relaxed);
        }
        let (s, ev) = t.claim(&g, 16, 9);
        assert!(!ev, "own slot");
        assert_eq!(s[DATA].load(Ordering::Relaxed), 2, "own slot keeps its data");
        t.touch(&g, t.find(&g, 8).unwrap(), 10);
        // full: the least recently used (key 24, used at 3) is evicted, though key 8 dies first
        let (s, ev) = t.claim(&g, 9 * 8, 50);
        assert!(ev);
        assert_eq!(s[DATA].load(Ordering::Relaxed), 0, "new slot zeroed");
        s[1].store(500, Ordering::Relaxed);
        assert!(t.find(&g, 24).is_none());
        assert!(t.find(&g, 8).is_some() && t.find(&g, 72).is_some());
        // at now = 105 the slots with deadlines <= 105 are dead: reused, not evictions
        let (_, ev) = t.claim(&g, 10 * 8, 105);
        assert!(!ev);
        assert_eq!((1..=10u64).filter(|k| t.find(&g, k * 8).is_some()).count(), 8);
        t.remove(&g, t.find(&g, 80).unwrap());
        assert!(t.find(&g, 80).is_none());
    }

    #[test]
    fn claim_with_spares_ranked_slots() {
        let r = region(HEADER + PROBE * 4);
        let t = Table::new(&r, 4).unwrap();
        let g = t.lock();
        // word DATA holds the rank; keys 8..64 fill the one probe window, used at 1..8
        for k in 1..=8u64 {
            let (s, _) = t.claim(&g, k * 8, k);
            s[1].store(1000, Ordering::Relaxed);
            s[DATA].store(if k <= 3 { 2 } else { 1 }, Ordering::Relaxed);
        }
        t.find(&g, 48).unwrap()[DATA].store(0, Ordering::Relaxed);
        let rank = |s: &[AtomicU64]| s[DATA].load(Ordering::Relaxed) as u8;
        // the only unranked slot goes first, though others were used less recently
        let (s, c) = t.claim_with(&g, 9 * 8, 20, rank, u8::MAX).unwrap();
        assert_eq!(c, Claim::Evicted { rank: 0 });
        s[1].store(1000, Ordering::Relaxed);
        s[DATA].store(1, Ordering::Relaxed);
        assert!(t.find(&g, 48).is_none());
        // then the least recently used of the lowest rank (key 32, used at 4)
        let (s, c) = t.claim_with(&g, 10 * 8, 21, rank, u8::MAX).unwrap();
        assert_eq!(c, Claim::Evicted { rank: 1 });
        s[1].store(1000, Ordering::Relaxed);
        s[DATA].store(2, Ordering::Relaxed);
        assert!(t.find(&g, 32).is_none() && t.find(&g, 8).is_some());
        // a limit keeps ranked slots: nothing below it, nothing claimed
        for k in [40, 56, 64, 72] {
            t.find(&g, k).unwrap()[DATA].store(2, Ordering::Relaxed);
        }
        assert!(t.claim_with(&g, 11 * 8, 22, rank, 2).is_none());
        assert!(t.find(&g, 88).is_none());
        let held = (1..=10u64).filter(|k| t.find(&g, k * 8).is_some()).count();
        assert_eq!(held, 8);
        // own slot, then dead slots before any eviction
        let (s, c) = t.claim_with(&g, 8, 23, rank, 0).unwrap();
        assert_eq!((c, s[DATA].load(Ordering::Relaxed)), (Claim::Found, 2));
        t.find(&g, 16).unwrap()[1].store(30, Ordering::Relaxed);
        let (s, c) = t.claim_with(&g, 11 * 8, 30, rank, 0).unwrap();
        assert_eq!(c, Claim::Free);
        s[1].store(1000, Ordering::Relaxed);
        s[DATA].store(2, Ordering::Relaxed);
        // everything ranked, no limit: the least recently used is evicted all the same
        let (_, c) = t.claim_with(&g, 12 * 8, 31, rank, u8::MAX).unwrap();
        assert_eq!(c, Claim::Evicted { rank: 2 });
        assert!(t.find(&g, 24).is_none(), "key 24, used at 3");
    }

    #[test]
    fn init_makes_a_secret_once_and_clears_other_layouts() {
        let r = region(HEADER + 64);
        let t = Table::new(&r, 4).unwrap();
        let secret = t.secret();
        assert_ne!(secret, [0; 32]);
        t.header(0).store(42, Ordering::Relaxed);
        let t2 = Table::new(&r, 4).unwrap();
        assert_eq!(t2.secret(), secret, "same region, same secret");
        assert_eq!(t2.header(0).load(Ordering::Relaxed), 42);
        // another region (another nginx start): another secret
        assert_ne!(Table::new(&region(HEADER + 64), 4).unwrap().secret(), secret);
        // a region stamped by another layout is cleared and re-keyed
        r[HEADER].store(7, Ordering::Relaxed);
        let t3 = Table::new(&r, 8).unwrap();
        assert_eq!(t3.header(0).load(Ordering::Relaxed), 0);
        assert_eq!(r[HEADER].load(Ordering::Relaxed), 0);
        assert_ne!(t3.secret(), secret);
    }

    #[test]
    fn keyed_hash_separates_fields() {
        let k = [7u8; 32];
        assert_ne!(keyed_hash(&k, &[b"ab", b"c"]), keyed_hash(&k, &[b"a", b"bc"]));
        assert_ne!(keyed_hash(&k, &[b"ab"]), keyed_hash(&[8u8; 32], &[b"ab"]));
        assert_eq!(key64(&[0; 32]), 1, "never the empty key");
    }

    #[test]
    fn kept_keyed_states_give_the_hmac_of_their_own_secret() {
        use hmac::{Hmac, Mac};
        let fresh = |k: &[u8; 32], parts: &[&[u8]]| -> [u8; 32] {
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(k).unwrap();
            for p in parts {
                mac.update(&(p.len() as u64).to_le_bytes());
                mac.update(p);
            }
            mac.finalize().into_bytes().into()
        };
        // more secrets than are kept, interleaved, each asked several times
        for round in 0..3u8 {
            for s in 0..7u8 {
                let k = [s; 32];
                let parts: [&[u8]; 2] = [b"cache", &[round, s]];
                assert_eq!(keyed_hash(&k, &parts), fresh(&k, &parts), "secret {s}, round {round}");
            }
        }
    }

    #[test]
    fn lock_excludes_concurrent_writers() {
        let r = region(HEADER + 64);
        let t = Table::new(&r, 4).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5000 {
                        let _g = t.lock();
                        // a non-atomic read-modify-write made safe only by the lock
                        let v = t.header(1).load(Ordering::Relaxed);
                        t.header(1).store(v + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(t.header(1).load(Ordering::Relaxed), 40000);
        assert_eq!(r[0].load(Ordering::Relaxed), 0, "released");
    }

    #[test]
    fn a_dead_holder_is_overtaken() {
        let r = region(HEADER + 64);
        let t = Table::new(&r, 4).unwrap();
        // held by a process that no longer exists (pids are < 2^22 on Linux)
        r[0].store(0xffff_fff0_0000_0001, Ordering::Relaxed);
        let start = Instant::now();
        let g = t.lock();
        let waited = start.elapsed();
        assert!(waited >= STEAL_DEAD && waited < STEAL_ANY, "{waited:?}");
        drop(g);
        assert_eq!(r[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_live_slow_holder_is_not_overtaken_and_a_lost_lock_is_not_released() {
        let r = region(HEADER + 64);
        let t = Table::new(&r, 4).unwrap();
        let released = AtomicU64::new(0);
        std::thread::scope(|s| {
            let g = t.lock();
            s.spawn(|| {
                let _g = t.lock();
                // the holder (a live thread of this process) released before we got in
                assert_eq!(released.load(Ordering::SeqCst), 1);
            });
            std::thread::sleep(STEAL_DEAD * 2);
            released.store(1, Ordering::SeqCst);
            drop(g);
        });
        // a guard whose lock was taken over leaves the new holder's token alone
        let g = t.lock();
        r[0].store(0x1234_0000_0003, Ordering::Relaxed);
        drop(g);
        assert_eq!(r[0].load(Ordering::Relaxed), 0x1234_0000_0003);
    }
}
