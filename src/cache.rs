//! Credential cache shared by all workers: "was this password verified OK / wrong recently
//! against this stored credential?". It short-cuts only the costly password check; the
//! store lookup and the account policy still run on every request, so routing and
//! disabled/protocol/network rules are always current.
//!
//! The key is a keyed hash (HMAC-SHA256 under the region's random secret, made when the zone
//! is first used, so a new one at every nginx start; 128 bits kept); the password is never
//! stored. The caller puts the stored credential itself into the key (see `engine`): a
//! password changed in the store is a new key at once, in every worker, across reloads.
//!
//! Slot (4 words, see `shm`): `[key, expires, last used, check]` where `check` is the key's
//! second 64 bits XOR a verdict tag: key half and verdict are one atomic word, so even a slot
//! torn by a crashed writer can never pair a key with another entry's verdict (it just misses).
//! A full probe window evicts its least recently used entry (expired ones are reused first).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::{hash_word, key64, Table, DATA};

const SLOT_WORDS: usize = DATA + 1;
const CHECK: usize = DATA;
const TAG_OK: u64 = 0x6f6b_6f6b_6f6b_6f6b;
const TAG_BAD: u64 = 0x6261_6462_6164_6261;
// User header words. 0 and 1 are unused (hits and misses, which `metrics` counts): these
// keep their places, so a zone kept across a reload into this version keeps its counts.
const INSERTS: usize = 2;
const EVICTIONS: usize = 3;

/// The table key of one credential (128 bits of an HMAC; the password is not recoverable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(u64, u64);

impl CacheKey {
    /// HMAC-SHA256(secret, "cache", parts...), length-prefixed fields: everything the verdict
    /// depends on (protocol, store, user, password, the stored credential itself).
    pub fn derive(secret: &[u8; 32], parts: &[&[u8]]) -> CacheKey {
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(b"cache");
        all.extend_from_slice(parts);
        let h = crate::shm::keyed_hash(secret, &all);
        CacheKey(key64(&h), hash_word(&h, 1))
    }

    fn check(&self, v: Verdict) -> u64 {
        self.1
            ^ match v {
                Verdict::Match(i) => TAG_OK ^ spread(i),
                Verdict::Mismatch => TAG_BAD,
            }
    }

    /// The verdict `check` encodes under this key, if any.
    fn verdict(&self, check: u64) -> Option<Verdict> {
        let tag = check ^ self.1;
        if tag == TAG_BAD {
            return Some(Verdict::Mismatch);
        }
        let x = tag ^ TAG_OK;
        (0..=MAX_CREDENTIAL).find(|&i| spread(i) == x).map(Verdict::Match)
    }
}

/// The highest credential index a verdict names (the main password and 16 app passwords,
/// `store::MAX_APP_PASSWORDS`, with room to spare).
const MAX_CREDENTIAL: u8 = 32;

/// A credential index spread over the whole word (0 stays 0: the main password's verdict is
/// the one this cache always stored), so check words a few bits apart never decode as another
/// credential's verdict.
fn spread(i: u8) -> u64 {
    u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A remembered verdict: which of an account's credentials matched (0: the main password, i:
/// app password i-1), or that none did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Match(u8),
    Mismatch,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub inserts: u64,
    /// Live entries pushed out by new ones (the zone is too small if this grows fast).
    pub evictions: u64,
}

pub struct Cache<'a> {
    table: Table<'a>,
}

impl<'a> Cache<'a> {
    /// Opens the cache in a shared region (a zeroed region is an empty cache). `None` if the
    /// region is too small (fewer than `cache::min_words()` words).
    pub fn new(words: &'a [AtomicU64]) -> Option<Cache<'a>> {
        Some(Cache { table: Table::new(words, SLOT_WORDS)? })
    }

    /// Entries the region holds.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The key for a credential under this region's secret (hashing happens here, unlocked).
    pub fn key(&self, parts: &[&[u8]]) -> CacheKey {
        CacheKey::derive(&self.table.secret(), parts)
    }

    /// `Some(true)`: verified OK before, `Some(false)`: verified wrong before; `None`: unknown
    /// or expired (`now` in seconds).
    pub fn get(&self, k: &CacheKey, now: u64) -> Option<bool> {
        self.get_verdict(k, now).map(|v| v != Verdict::Mismatch)
    }

    /// [`Cache::get`] with the credential that matched.
    pub fn get_verdict(&self, k: &CacheKey, now: u64) -> Option<Verdict> {
        let g = self.table.lock();
        match self.table.find(&g, k.0) {
            Some(s) if s[1].load(Ordering::Relaxed) <= now => {
                self.table.remove(&g, s);
                None
            }
            Some(s) => {
                let v = k.verdict(s[CHECK].load(Ordering::Relaxed));
                if v.is_some() {
                    self.table.touch(&g, s, now);
                }
                v
            }
            None => None,
        }
    }

    /// Remembers a verdict for `ttl` seconds (0: not at all).
    pub fn put(&self, k: &CacheKey, ok: bool, ttl: u64, now: u64) {
        self.put_verdict(k, if ok { Verdict::Match(0) } else { Verdict::Mismatch }, ttl, now)
    }

    /// [`Cache::put`] with the credential that matched.
    pub fn put_verdict(&self, k: &CacheKey, v: Verdict, ttl: u64, now: u64) {
        if ttl == 0 {
            return;
        }
        let evicted = {
            let g = self.table.lock();
            let (s, evicted) = self.table.claim(&g, k.0, now);
            s[CHECK].store(k.check(v), Ordering::Relaxed);
            s[1].store(now.saturating_add(ttl), Ordering::Relaxed);
            evicted
        };
        self.table.header(INSERTS).fetch_add(1, Ordering::Relaxed);
        if evicted {
            self.table.header(EVICTIONS).fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let h = |i| self.table.header(i).load(Ordering::Relaxed);
        CacheStats { inserts: h(INSERTS), evictions: h(EVICTIONS) }
    }
}

/// The smallest region (in 64-bit words) `Cache::new` accepts.
pub const fn min_words() -> usize {
    crate::shm::HEADER + crate::shm::PROBE * SLOT_WORDS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stored` stands for the stored credential the engine puts into the key.
    fn key(c: &Cache<'_>, stored: u64, protocol: &str, user: &str, password: &[u8]) -> CacheKey {
        c.key(&[&stored.to_le_bytes(), protocol.as_bytes(), user.as_bytes(), password])
    }

    fn region(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn verdicts_expire() {
        let r = region(4096);
        let c = Cache::new(&r).unwrap();
        let k = key(&c, 1, "imap", "alice", b"pw");
        assert_eq!(c.get(&k, 100), None);
        c.put(&k, true, 60, 100);
        assert_eq!(c.get(&k, 159), Some(true));
        assert_eq!(c.get(&k, 160), None, "expired");
        let bad = key(&c, 1, "imap", "alice", b"wrong");
        c.put(&bad, false, 10, 200);
        assert_eq!(c.get(&bad, 205), Some(false));
        assert_eq!(c.get(&k, 205), None);
        c.put(&bad, true, 0, 206);
        assert_eq!(c.get(&bad, 206), Some(false), "ttl 0 stores nothing");
        c.put(&bad, true, 10, 207);
        assert_eq!(c.get(&bad, 208), Some(true), "a new verdict replaces the old");
        assert_eq!(c.stats(), CacheStats { inserts: 3, evictions: 0 });
    }

    #[test]
    fn keys_depend_on_everything_and_hide_the_password() {
        let r = region(4096);
        let c = Cache::new(&r).unwrap();
        let k = key(&c, 1, "imap", "alice", b"secret-password");
        assert_eq!(k, key(&c, 1, "imap", "alice", b"secret-password"));
        assert_ne!(k, key(&c, 2, "imap", "alice", b"secret-password"), "stored credential");
        assert_ne!(k, key(&c, 1, "pop3", "alice", b"secret-password"), "protocol");
        assert_ne!(k, key(&c, 1, "imap", "alicf", b"secret-password"), "user");
        assert_ne!(k, key(&c, 1, "imap", "alice", b"secret-passworD"), "password");
        assert_ne!(key(&c, 1, "imap", "ab", b"c"), key(&c, 1, "imap", "a", b"bc"), "no field run-on");
        c.put(&k, true, 60, 0);
        // a password changed in the store: another stored credential, the old verdict is not found
        assert_eq!(c.get(&key(&c, 2, "imap", "alice", b"secret-password"), 1), None);
        let bytes: Vec<u8> = r.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).collect();
        for part in [&b"secret-password"[..], b"secret", b"password", b"alice"] {
            assert!(!bytes.windows(part.len()).any(|w| w == part), "no {part:?} in the region");
        }
        // the key is the HMAC under the region's secret, not a plain hash of the credential
        let plain = CacheKey::derive(&[0; 32], &[&1u64.to_le_bytes(), b"imap", b"alice", b"secret-password"]);
        assert_ne!(k, plain);
        // another zone (another nginx start) has another secret
        let r2 = region(4096);
        assert_ne!(k, key(&Cache::new(&r2).unwrap(), 1, "imap", "alice", b"secret-password"));
    }

    #[test]
    fn a_verdict_belongs_to_its_full_key() {
        let r = region(4096);
        let c = Cache::new(&r).unwrap();
        let k = key(&c, 1, "imap", "alice", b"pw");
        c.put(&k, true, 60, 0);
        // same first 64 bits, other second half (a collision on the slot key): a miss
        let forged = CacheKey(k.0, k.1 ^ 1);
        assert_eq!(c.get(&forged, 1), None);
        // a torn slot holding another entry's check word: a miss, never a verdict
        {
            let g = c.table.lock();
            let s = c.table.find(&g, k.0).unwrap();
            s[CHECK].store(forged.check(Verdict::Match(0)), Ordering::Relaxed);
        }
        assert_eq!(c.get(&k, 1), None);
    }

    #[test]
    fn full_table_evicts_and_keeps_working() {
        let r = region(min_words());
        assert!(Cache::new(&r[..min_words() - 1]).is_none());
        let c = Cache::new(&r).unwrap();
        assert_eq!(c.capacity(), 8);
        for i in 0..100u64 {
            let k = key(&c, 1, "imap", &format!("u{i}"), b"p");
            c.put(&k, true, 100, i);
            assert_eq!(c.get(&k, i), Some(true));
        }
        let s = c.stats();
        assert_eq!(s.evictions, 100 - 8);
        assert_eq!(s.inserts, 100);
        // the newest 8 are all still there (earliest expiry goes first)
        for i in 92..100u64 {
            assert_eq!(c.get(&key(&c, 1, "imap", &format!("u{i}"), b"p"), 100), Some(true), "u{i}");
        }
    }

    #[test]
    fn expired_entries_go_before_live_ones() {
        let r = region(min_words());
        let c = Cache::new(&r).unwrap();
        let keep = key(&c, 1, "imap", "keep", b"p");
        c.put(&keep, true, 1000, 0);
        for i in 0..7 {
            c.put(&key(&c, 1, "imap", &format!("short{i}"), b"p"), false, 5, 0);
        }
        for i in 0..7 {
            c.put(&key(&c, 1, "imap", &format!("new{i}"), b"p"), true, 60, 10);
        }
        assert_eq!(c.stats().evictions, 0, "only expired entries were replaced");
        assert_eq!(c.get(&keep, 11), Some(true));
    }

    #[test]
    fn shared_by_threads() {
        // 262,144 slots for the 8,001 entries (3 %): at 12 % load an 8-slot probe window was
        // full now and then (an eviction, about one run in 40, with the random key of a run)
        let r = region(1 << 20);
        let c = Cache::new(&r).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let c = &c;
                s.spawn(move || {
                    for i in 0..2000 {
                        let k = key(c, 1, "imap", &format!("t{t}u{i}"), b"p");
                        c.put(&k, i % 2 == 0, 100, 1);
                        assert_eq!(c.get(&k, 2), Some(i % 2 == 0));
                        // everyone also hammers one shared entry
                        let shared = key(c, 1, "imap", "shared", b"p");
                        c.put(&shared, true, 100, 1);
                        assert_eq!(c.get(&shared, 2), Some(true));
                    }
                });
            }
        });
        let s = c.stats();
        assert_eq!((s.inserts, s.evictions), (16000, 0));
    }

    #[test]
    fn verdicts_name_the_credential_that_matched() {
        let r = region(4096);
        let c = Cache::new(&r).unwrap();
        for i in 0..=MAX_CREDENTIAL {
            let k = key(&c, u64::from(i), "imap", "alice", b"pw");
            c.put_verdict(&k, Verdict::Match(i), 60, 0);
            assert_eq!(c.get_verdict(&k, 1), Some(Verdict::Match(i)));
            assert_eq!(c.get(&k, 1), Some(true));
        }
        let k = key(&c, 99, "imap", "alice", b"pw");
        c.put_verdict(&k, Verdict::Mismatch, 60, 0);
        assert_eq!(c.get_verdict(&k, 1), Some(Verdict::Mismatch));
        // the main password's verdict is what `put(true)` always stored
        let k = key(&c, 100, "imap", "alice", b"pw");
        c.put(&k, true, 60, 0);
        assert_eq!(c.get_verdict(&k, 1), Some(Verdict::Match(0)));
        // check words a bit or a few apart never decode as another credential's verdict
        for i in 0..=MAX_CREDENTIAL {
            for bit in 0..64 {
                let x = spread(i) ^ (1u64 << bit);
                assert!((0..=MAX_CREDENTIAL).all(|j| spread(j) != x), "{i} {bit}");
            }
        }
    }
}
