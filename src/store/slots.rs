//! An open-addressing table of 32-bit values by 64-bit hash (linear probing, at most 3/4 full):
//! the passwd-file index (line offsets by the hash of the user name) and the SQLite rows kept
//! (arena offsets by the hash of the user asked for). A lookup reads one place of the table and
//! the candidates after it; the caller compares the keys (a value whose hash merely shares the
//! top 32 bits is a candidate too).
//!
//! Values with one hash come out of a probe in the order they went in (file order for a
//! passwd-file's app passwords).

#![forbid(unsafe_code)]

/// A place: the top 32 bits of the hash, and the value (`EMPTY`: free, which ends a probe).
#[derive(Debug, Clone, Copy)]
struct Slot {
    tag: u32,
    value: u32,
}

/// The one value a table cannot hold (it marks a free place).
pub(crate) const EMPTY: u32 = u32::MAX;

#[derive(Debug, Default)]
pub(crate) struct Slots {
    /// Empty, or a power of two places.
    places: Vec<Slot>,
    len: usize,
}

/// Places for `n` values: a power of two, at most 3/4 full (8 bytes a place).
pub(crate) fn size_for(n: usize) -> usize {
    (n + n / 3 + 1).next_power_of_two()
}

impl Slots {
    /// A table with room for `n` values (no growth while they go in).
    pub(crate) fn with_room(n: usize) -> Slots {
        Slots { places: vec![Slot { tag: 0, value: EMPTY }; size_for(n)], len: 0 }
    }

    /// Values held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the places.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.places.capacity() * std::mem::size_of::<Slot>()
    }

    /// The values whose hash has the top 32 bits of `h`, in the order they went in.
    pub(crate) fn candidates(&self, h: u64) -> impl Iterator<Item = u32> + '_ {
        let (tag, mask) = ((h >> 32) as u32, self.places.len().wrapping_sub(1));
        let mut i = h as usize & mask;
        std::iter::from_fn(move || {
            let s = *self.places.get(i)?;
            i = (i + 1) & mask;
            (s.value != EMPTY).then_some(s)
        })
        .filter(move |s| s.tag == tag)
        .map(|s| s.value)
    }

    /// Every value held, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.places.iter().filter(|s| s.value != EMPTY).map(|s| s.value)
    }

    /// Adds `value` (not `EMPTY`) under `h`; a table that would be more than 3/4 full doubles
    /// first (16 places at least), placing every value again under `rehash(value)`.
    pub(crate) fn insert(&mut self, h: u64, value: u32, rehash: impl Fn(u32) -> u64) {
        if (self.len + 1) * 4 > self.places.len() * 3 {
            let size = (self.places.len() * 2).max(16);
            let old = std::mem::replace(&mut self.places, vec![Slot { tag: 0, value: EMPTY }; size]);
            for s in old.into_iter().filter(|s| s.value != EMPTY) {
                self.place(rehash(s.value), s.value);
            }
        }
        self.place(h, value);
        self.len += 1;
    }

    fn place(&mut self, h: u64, value: u32) {
        let mask = self.places.len() - 1;
        let mut i = h as usize & mask;
        while self.places[i].value != EMPTY {
            i = (i + 1) & mask;
        }
        self.places[i] = Slot { tag: (h >> 32) as u32, value };
    }

    /// Forgets every value (the places are kept for the next ones).
    pub(crate) fn clear(&mut self) {
        self.places.iter_mut().for_each(|s| s.value = EMPTY);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn every_value_is_found_in_the_order_it_went_in() {
        let s = std::collections::hash_map::RandomState::new();
        for n in [0usize, 1, 2, 3, 5, 64, 1000, 4097] {
            // (hash, value): distinct hashes, then a hash given to three more values (one
            // name's app passwords, or names whose hashes collide), and both ends of the range
            let mut entries: Vec<(u64, u32)> = (0..n).map(|i| (s.hash_one(i), i as u32)).collect();
            let shared = s.hash_one("shared");
            entries.extend([(shared, 1_000_000), (0, 1_000_001), (shared, 1_000_002), (u64::MAX, 1_000_003)]);
            entries.push((shared, 1_000_004));
            let hash_of = |v: u32| entries.iter().find(|e| e.1 == v).map_or(0, |e| e.0);
            // sized for all at once (the passwd-file), and grown one by one (the SQLite rows)
            let mut sized = Slots::with_room(entries.len());
            let mut grown = Slots::default();
            for &(h, v) in &entries {
                sized.insert(h, v, hash_of);
                grown.insert(h, v, hash_of);
            }
            assert_eq!(sized.heap_bytes(), 8 * size_for(entries.len()), "{n}: no growth when sized");
            for t in [&sized, &grown] {
                assert!(t.places.len().is_power_of_two() && t.places.len() * 3 >= entries.len() * 4, "{n}");
                for &(h, v) in &entries {
                    assert!(t.candidates(h).any(|x| x == v), "{n}: value {v} not found");
                }
                let same: Vec<u32> = t.candidates(shared).filter(|&v| hash_of(v) == shared).collect();
                assert_eq!(same, [1_000_000, 1_000_002, 1_000_004], "{n}: insertion order");
                assert_eq!((t.values().count(), t.len()), (entries.len(), entries.len()));
            }
            grown.clear();
            assert_eq!((grown.len(), grown.values().count(), grown.candidates(shared).count()), (0, 0, 0));
        }
        assert_eq!(Slots::default().candidates(7).count(), 0, "an empty table");
    }
}
