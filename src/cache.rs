//! Credential cache shared by all workers: "was this (store generation, protocol, user,
//! password) verified OK / wrong recently?". It short-cuts only the costly password check; the
//! store lookup and the account policy still run on every request, so routing and
//! disabled/protocol/network rules are always current.
//!
//! The key is a keyed hash (HMAC-SHA256, 128 bits kept) with a random secret created when the
//! zone is first used (a new one at every nginx start); the password is never stored. A
//! password change in the store changes the store generation, hence every key.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::{key64, keyed_hash, Table};

// slot: [key, age, key2 (second half of the 128-bit key), expires, verdict]
const SLOT_WORDS: usize = 5;
// header words (after lock and magic): 0..4 secret (shm::init_secret), 4 hits, 5 misses,
// 6 inserts, 7 evictions
const HITS: usize = 4;
const MISSES: usize = 5;
const INSERTS: usize = 6;
const EVICTIONS: usize = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheKey(u64, u64);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
}

pub struct Cache<'a> {
    table: Table<'a>,
}

impl<'a> Cache<'a> {
    /// `None` if the region is too small for a useful cache.
    pub fn new(words: &'a [AtomicU64]) -> Option<Cache<'a>> {
        let table = Table::new(words, SLOT_WORDS)?;
        crate::shm::init_secret(&table);
        Some(Cache { table })
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The key for a credential (keyed hash; the password is not recoverable from it).
    pub fn key(&self, generation: u64, protocol: &str, user: &str, password: &[u8]) -> CacheKey {
        let out = keyed_hash(&self.table, &[b"cache", &generation.to_le_bytes(), protocol.as_bytes(), user.as_bytes(), password]);
        CacheKey(key64(&out[..8]), u64::from_le_bytes(out[8..16].try_into().unwrap_or([1; 8])))
    }

    /// `Some(true)`: verified OK before, `Some(false)`: verified wrong before; `None`: unknown
    /// or expired.
    pub fn get(&self, k: &CacheKey, now: u64) -> Option<bool> {
        let verdict = {
            let g = self.table.lock();
            match self.table.find(&g, k.0) {
                Some(s) if s[2].load(Ordering::Relaxed) == k.1 && s[3].load(Ordering::Relaxed) > now => {
                    Some(s[4].load(Ordering::Relaxed) == 1)
                }
                Some(s) if s[3].load(Ordering::Relaxed) <= now => {
                    self.table.remove(&g, s);
                    None
                }
                _ => None,
            }
        };
        let counter = if verdict.is_some() { HITS } else { MISSES };
        self.table.header(counter).fetch_add(1, Ordering::Relaxed);
        verdict
    }

    /// Remembers a verdict for `ttl` seconds (0: not at all).
    pub fn put(&self, k: &CacheKey, ok: bool, ttl: u64, now: u64) {
        if ttl == 0 {
            return;
        }
        let evicted = {
            let g = self.table.lock();
            let (s, evicted) = self.table.claim(&g, k.0, now);
            s[2].store(k.1, Ordering::Relaxed);
            s[3].store(now.saturating_add(ttl), Ordering::Relaxed);
            s[4].store(u64::from(ok), Ordering::Relaxed);
            evicted
        };
        self.table.header(INSERTS).fetch_add(1, Ordering::Relaxed);
        if evicted {
            self.table.header(EVICTIONS).fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let h = |i| self.table.header(i).load(Ordering::Relaxed);
        CacheStats { hits: h(HITS), misses: h(MISSES), inserts: h(INSERTS), evictions: h(EVICTIONS) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn verdicts_expire() {
        let r = region(4096);
        let c = Cache::new(&r).unwrap();
        let k = c.key(1, "imap", "alice", b"pw");
        assert_eq!(c.get(&k, 100), None);
        c.put(&k, true, 60, 100);
        assert_eq!(c.get(&k, 159), Some(true));
        assert_eq!(c.get(&k, 160), None, "expired");
        let bad = c.key(1, "imap", "alice", b"wrong");
        c.put(&bad, false, 10, 200);
        assert_eq!(c.get(&bad, 205), Some(false));
        assert_eq!(c.get(&k, 205), None);
        let s = c.stats();
        assert_eq!((s.hits, s.inserts), (2, 2));
        assert!(s.misses >= 3);
    }

    #[test]
    fn keys_depend_on_everything_and_hide_the_password() {
        let r = region(4096);
        let c = Cache::new(&r).unwrap();
        let k = c.key(1, "imap", "alice", b"secret-password");
        assert_ne!(k, c.key(2, "imap", "alice", b"secret-password"), "store generation");
        assert_ne!(k, c.key(1, "pop3", "alice", b"secret-password"), "protocol");
        assert_ne!(k, c.key(1, "imap", "alicf", b"secret-password"), "user");
        assert_ne!(k, c.key(1, "imap", "alice", b"secret-passworD"), "password");
        assert_ne!(c.key(1, "imap", "ab", b"c"), c.key(1, "imap", "a", b"bc"), "no field run-on");
        let bytes: Vec<u8> = r.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).collect();
        assert!(!bytes.windows(6).any(|w| w == b"secret"), "password bytes not in the region");
        // another zone (another nginx start) has another secret
        let r2 = region(4096);
        assert_ne!(k, Cache::new(&r2).unwrap().key(1, "imap", "alice", b"secret-password"));
    }

    #[test]
    fn full_table_evicts_and_keeps_working() {
        let r = region(crate::shm::HEADER + 8 * SLOT_WORDS);
        let c = Cache::new(&r).unwrap();
        for i in 0..100u64 {
            let k = c.key(1, "imap", &format!("u{i}"), b"p");
            c.put(&k, true, 100, i);
            assert_eq!(c.get(&k, i), Some(true));
        }
        assert!(c.stats().evictions > 0);
    }

    #[test]
    fn shared_by_threads() {
        let r = region(1 << 16);
        let c = Cache::new(&r).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let c = &c;
                s.spawn(move || {
                    for i in 0..500 {
                        let k = c.key(1, "imap", &format!("t{t}u{i}"), b"p");
                        c.put(&k, i % 2 == 0, 100, 1);
                        assert_eq!(c.get(&k, 2), Some(i % 2 == 0));
                    }
                });
            }
        });
        assert_eq!(c.stats().inserts, 2000);
    }
}
