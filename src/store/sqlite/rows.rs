//! The rows a worker keeps of a SQLite store, compactly: a row that is only a name and a
//! password (what most accounts are) costs its bytes and a few more, not a whole [`Account`]
//! (~300 bytes with its allocations), so a worker can keep every active user's row.
//!
//! A [`Slots`] table of offsets into one byte arena. Each entry: the user asked for (2-byte
//! length, bytes), a kind, then
//! - `NONE`: no such user;
//! - `PLAIN`: the account's name and password (2-byte length and bytes each): an [`Account`]
//!   with nothing else set (enabled, no rules, no backend, no app passwords);
//! - `FULL`: the index of the account in a list of whole accounts (any other row).

#![forbid(unsafe_code)]

use ahash::RandomState;

use crate::store::slots::{Slots, EMPTY};
use crate::store::Account;

/// The bytes a kept row may take on average in the arena (the name the client sent, and a
/// plain row's name and password): the rows are dropped when it holds more than
/// `rows × ROW_BYTES` (see [`RowTable::bytes`]). A plain row takes 60-200 bytes; a client
/// choosing unknown names (up to 4 KiB each) gets no more than this.
pub(super) const ROW_BYTES: usize = 256;

const NONE: u8 = 0;
const PLAIN: u8 = 1;
const FULL: u8 = 2;

#[derive(Default)]
pub(super) struct RowTable {
    hasher: RandomState,
    /// Where each entry starts in the arena, by the hash of its user.
    slots: Slots,
    arena: Vec<u8>,
    full: Vec<Account>,
}

/// `bytes` after a 2-byte length, or `None` when it does not fit one.
fn put(arena: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    arena.extend_from_slice(&u16::try_from(bytes.len()).ok()?.to_le_bytes());
    arena.extend_from_slice(bytes);
    Some(())
}

/// The bytes at `*at` (after their 2-byte length); moves `*at` past them.
fn take<'a>(arena: &'a [u8], at: &mut usize) -> &'a [u8] {
    let n = arena.get(*at..*at + 2).map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let bytes = arena.get(*at + 2..*at + 2 + n).unwrap_or_default();
    *at += 2 + n;
    bytes
}

/// Bytes that came from a `String` as one again (lossy only if the arena were damaged).
fn text(b: &[u8]) -> String {
    std::str::from_utf8(b).map_or_else(|_| String::from_utf8_lossy(b).into_owned(), str::to_owned)
}

/// Whether `a` is only a name and a password.
fn is_plain(a: &Account) -> bool {
    a.name.len() <= usize::from(u16::MAX)
        && a.password.len() <= usize::from(u16::MAX)
        && *a == Account { name: a.name.clone(), password: a.password.clone(), enabled: true, ..Account::default() }
}

impl RowTable {
    /// Rows kept.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The bytes the rows take, as [`ROW_BYTES`] counts them: the arena (the names clients
    /// sent, up to 4 KiB each; plain rows' names and passwords). Whole accounts are the
    /// store's own values (bounded by the number of rows) and are not counted.
    pub(super) fn bytes(&self) -> usize {
        self.arena.len()
    }

    /// The bytes held, for tests and estimates (places, arena, whole accounts' slots).
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.heap_bytes() + self.arena.capacity() + self.full.capacity() * std::mem::size_of::<Account>()
    }

    /// Where `user`'s entry goes on after the user, if kept.
    fn find(&self, user: &[u8]) -> Option<usize> {
        self.slots.candidates(self.hasher.hash_one(user)).find_map(|at| {
            let mut at = at as usize;
            (take(&self.arena, &mut at) == user).then_some(at)
        })
    }

    /// The row kept for `user` (`Some(None)`: kept as "no such user"), or `None` if not kept.
    pub(super) fn get(&self, user: &str) -> Option<Option<Account>> {
        let mut at = self.find(user.as_bytes())?;
        let kind = *self.arena.get(at)?;
        at += 1;
        Some(match kind {
            NONE => None,
            PLAIN => {
                let name = text(take(&self.arena, &mut at));
                let password = text(take(&self.arena, &mut at));
                Some(Account { name, password, enabled: true, ..Account::default() })
            }
            _ => {
                let i = self.arena.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
                Some(self.full.get(i as usize)?.clone())
            }
        })
    }

    /// Keeps `row` as `user`'s (not if `user` is kept already, or too long to keep).
    pub(super) fn insert(&mut self, user: &str, row: &Option<Account>) {
        if self.find(user.as_bytes()).is_some() {
            return;
        }
        let start = self.arena.len();
        let Ok(at) = u32::try_from(start) else { return };
        if at == EMPTY || self.encode(user, row).is_none() {
            self.arena.truncate(start);
            return;
        }
        let (arena, hasher) = (&self.arena, &self.hasher);
        let rehash = |at: u32| hasher.hash_one(take(arena, &mut (at as usize)));
        self.slots.insert(hasher.hash_one(user.as_bytes()), at, rehash);
    }

    fn encode(&mut self, user: &str, row: &Option<Account>) -> Option<()> {
        put(&mut self.arena, user.as_bytes())?;
        match row {
            None => self.arena.push(NONE),
            Some(a) if is_plain(a) => {
                self.arena.push(PLAIN);
                put(&mut self.arena, a.name.as_bytes())?;
                put(&mut self.arena, a.password.as_bytes())?;
            }
            Some(a) => {
                let i = u32::try_from(self.full.len()).ok()?;
                self.arena.push(FULL);
                self.arena.extend_from_slice(&i.to_le_bytes());
                self.full.push(a.clone());
            }
        }
        Some(())
    }

    /// Forgets every row (the memory is kept for the next ones).
    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.arena.clear();
        self.full.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Protocol;

    fn plain(name: &str, pw: &str) -> Account {
        Account { name: name.into(), password: pw.into(), enabled: true, ..Account::default() }
    }

    #[test]
    fn rows_come_back_as_they_went_in() {
        let mut t = RowTable::default();
        let full = Account { protocols: Some(vec![Protocol::Imap]), ..plain("Carol", "{PLAIN}c") };
        let disabled = Account { enabled: false, ..plain("dave", "{PLAIN}d") };
        let rows: Vec<(String, Option<Account>)> = (0..5000)
            .map(|i| {
                let row = match i % 4 {
                    0 => None,
                    1 => Some(plain(&format!("u{i}"), &format!("{{SSHA}}pw-{i}"))),
                    2 => Some(full.clone()),
                    _ => Some(disabled.clone()),
                };
                (format!("u{i}"), row)
            })
            .collect();
        for (user, row) in &rows {
            assert_eq!(t.get(user), None, "{user} not kept yet");
            t.insert(user, row);
        }
        assert_eq!(t.len(), rows.len());
        for (user, row) in &rows {
            assert_eq!(t.get(user).as_ref(), Some(row), "{user}");
        }
        assert_eq!(t.get("u5000"), None);
        assert_eq!(t.get(""), None);
        // kept once: a second insert does not replace (the caller drops all rows on a change)
        t.insert("u1", &None);
        assert_eq!(t.get("u1"), Some(Some(plain("u1", "{SSHA}pw-1"))));
        assert_eq!(t.len(), rows.len());
        // only the name-and-password rows are compact
        assert_eq!(t.full.len(), 2500);
        t.clear();
        assert_eq!((t.len(), t.get("u1")), (0, None));
        t.insert("u1", &None);
        assert_eq!(t.get("u1"), Some(None));
    }

    #[test]
    fn values_too_long_for_the_compact_form_are_kept_whole_or_not_at_all() {
        let mut t = RowTable::default();
        let long = "x".repeat(70_000);
        t.insert("long-password", &Some(plain("a", &long)));
        assert_eq!(t.get("long-password"), Some(Some(plain("a", &long))));
        t.insert(&long, &None);
        assert_eq!((t.get(&long), t.len()), (None, 1), "a user name over 65535 bytes is not kept");
    }

    /// What a plain `{SSHA}` row of the benchmark costs: about 100 bytes.
    #[test]
    fn a_plain_row_is_small() {
        let mut t = RowTable::default();
        let n = 100_000;
        for i in 0..n {
            let pw = "{SSHA}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
            t.insert(&format!("u{i}"), &Some(plain(&format!("u{i}"), pw)));
        }
        let per_row = t.heap_bytes() / n;
        eprintln!("{per_row} bytes a row");
        assert!(per_row <= 160, "{per_row} bytes a row");
    }
}
