//! The costly verifications of one worker, scheduled on its event loop: at most `limit` on the
//! thread pool at once, at most `queue` more waiting in order, and a request whose verification
//! is already under way (the same cache key: same store, user, password and stored credential)
//! waits for that one's verdict instead of computing it again. Beyond the bounds a login gets a
//! temporary failure (`overloaded`); requests following a verification under way are not
//! bounded here (they cost neither CPU nor verification memory; `worker_connections` bounds
//! them).
//!
//! Nothing here blocks: waiting requests are only held (no pool thread sleeps for a turn, so
//! SQLite lookups and introspection calls on the same pool are never stuck behind them). The
//! FFI layer keeps one [`Scheduler`] per worker process, used from the event loop only, with
//! its held requests as `T`.

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};

use crate::cache::CacheKey;

/// What [`Scheduler::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Post it to the pool now.
    Run(T),
    /// Held: it comes back from [`Scheduler::done`], to run or to read the verdict of the
    /// verification it waited for.
    Held,
    /// Too many already: answer a temporary failure.
    Refused(T),
}

/// What a finished verification releases.
#[derive(Debug, PartialEq, Eq)]
pub struct Released<T> {
    /// The next queued verification, to post now (it holds the place the finished one left).
    pub next: Option<T>,
    /// Requests that waited for the finished verification's verdict: they read it from the
    /// cache (or, if it gave none, come back through `admit`).
    pub followers: Vec<T>,
}

#[derive(Debug)]
pub struct Scheduler<T> {
    running: usize,
    queued: VecDeque<(Option<CacheKey>, T)>,
    /// Keys running or queued, with the requests waiting for their verdict.
    leaders: HashMap<CacheKey, Vec<T>>,
    /// Requests in `leaders`' lists.
    following: usize,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Scheduler::new()
    }
}

impl<T> Scheduler<T> {
    pub fn new() -> Scheduler<T> {
        Scheduler { running: 0, queued: VecDeque::new(), leaders: HashMap::new(), following: 0 }
    }

    /// A costly verification (`key`: its cache key, `None` without a cache) asks for a place:
    /// at most `limit` (at least 1) running, at most `queue` queued. A request for a key
    /// already running or queued follows it whatever the queue holds: it costs no CPU and no
    /// verification memory (only the request nginx already holds; `worker_connections` bounds
    /// those).
    pub fn admit(&mut self, key: Option<CacheKey>, item: T, limit: usize, queue: usize) -> Admit<T> {
        if let Some(waiting) = key.and_then(|k| self.leaders.get_mut(&k)) {
            waiting.push(item);
            self.following += 1;
            return Admit::Held;
        }
        if self.running < limit.max(1) {
            self.running += 1;
            self.lead(key);
            return Admit::Run(item);
        }
        if self.queued.len() >= queue {
            return Admit::Refused(item);
        }
        self.queued.push_back((key, item));
        self.lead(key);
        Admit::Held
    }

    fn lead(&mut self, key: Option<CacheKey>) {
        if let Some(k) = key {
            self.leaders.insert(k, Vec::new());
        }
    }

    /// A verification admitted with `Run` (or handed out as `next`) is over, whatever its
    /// result, or could not be posted after all.
    pub fn done(&mut self, key: Option<CacheKey>) -> Released<T> {
        self.running = self.running.saturating_sub(1);
        let followers = key.and_then(|k| self.leaders.remove(&k)).unwrap_or_default();
        self.following -= followers.len();
        let next = self.queued.pop_front().map(|(_, item)| {
            self.running += 1;
            item
        });
        Released { next, followers }
    }

    /// Whether a verification of a new key would be refused now (`admit`'s `limit`, `queue`).
    pub fn is_full(&self, limit: usize, queue: usize) -> bool {
        self.running >= limit.max(1) && self.queued.len() >= queue
    }

    /// (running, queued, following) now.
    pub fn load(&self) -> (usize, usize, usize) {
        (self.running, self.queued.len(), self.following)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Option<CacheKey> {
        Some(CacheKey::derive(&[0; 32], &[&[n]]))
    }

    #[test]
    fn at_most_limit_run_and_the_rest_wait_in_order() {
        let mut s = Scheduler::new();
        assert_eq!(s.admit(key(1), "a", 1, 2), Admit::Run("a"));
        assert_eq!(s.admit(key(2), "b", 1, 2), Admit::Held);
        assert!(!s.is_full(1, 2));
        assert_eq!(s.admit(None, "c", 1, 2), Admit::Held);
        assert!(s.is_full(1, 2) && !s.is_full(2, 2) && !s.is_full(1, 3));
        assert_eq!(s.admit(key(3), "d", 1, 2), Admit::Refused("d"), "queue full");
        assert_eq!(s.load(), (1, 2, 0));
        assert_eq!(s.done(key(1)), Released { next: Some("b"), followers: vec![] });
        assert_eq!(s.done(key(2)), Released { next: Some("c"), followers: vec![] });
        assert_eq!(s.done(None), Released { next: None, followers: vec![] });
        assert_eq!(s.load(), (0, 0, 0));
    }

    #[test]
    fn the_same_credential_waits_for_the_verification_under_way() {
        let mut s = Scheduler::new();
        assert_eq!(s.admit(key(1), 1, 2, 8), Admit::Run(1));
        for i in 2..=16 {
            assert_eq!(s.admit(key(1), i, 2, 64), Admit::Held, "request {i} follows");
        }
        // another credential still runs at once
        assert_eq!(s.admit(key(2), 99, 2, 64), Admit::Run(99));
        assert_eq!(s.load(), (2, 0, 15));
        let r = s.done(key(1));
        assert_eq!(r.followers, (2..=16).collect::<Vec<_>>());
        assert_eq!(r.next, None);
        // the key is free again: the next one for it runs
        assert_eq!(s.admit(key(1), 17, 2, 64), Admit::Run(17));
        assert_eq!(s.load(), (2, 0, 0));
    }

    #[test]
    fn a_queued_key_gathers_followers_too() {
        let mut s = Scheduler::new();
        assert_eq!(s.admit(key(1), 'a', 1, 4), Admit::Run('a'));
        assert_eq!(s.admit(key(2), 'b', 1, 4), Admit::Held);
        assert_eq!(s.admit(key(2), 'c', 1, 4), Admit::Held);
        assert_eq!(s.done(key(1)), Released { next: Some('b'), followers: vec![] });
        assert_eq!(s.done(key(2)), Released { next: None, followers: vec!['c'] });
    }

    #[test]
    fn followers_do_not_take_the_queue() {
        let mut s = Scheduler::new();
        assert_eq!(s.admit(key(1), 0, 1, 1), Admit::Run(0));
        for i in 1..=20 {
            assert_eq!(s.admit(key(1), i, 1, 1), Admit::Held);
        }
        assert_eq!(s.admit(key(5), 21, 1, 1), Admit::Held, "the queue still has its place");
        assert_eq!(s.admit(key(6), 22, 1, 1), Admit::Refused(22));
        assert_eq!(s.admit(key(5), 23, 1, 1), Admit::Held, "a queued key gathers followers too");
        assert_eq!(s.load(), (1, 1, 21));
    }

    #[test]
    fn without_a_key_nothing_is_coalesced() {
        let mut s = Scheduler::new();
        assert_eq!(s.admit(None, 1, 2, 0), Admit::Run(1));
        assert_eq!(s.admit(None, 2, 2, 0), Admit::Run(2));
        assert_eq!(s.admit(None, 3, 2, 0), Admit::Refused(3));
    }
}
