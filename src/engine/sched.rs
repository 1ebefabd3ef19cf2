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
//!
//! A place comes back ([`Scheduler::free`]) when its job is over or when the pool refused to
//! take it (nginx's thread pool queue full); [`drain`] then hands the waiting requests their
//! turns one after another in a loop, never nested, whatever the queue holds: a hand-off whose
//! post is refused frees its place again inside the loop, and the loop goes on from there. The
//! rule after a refusal: while other jobs of this scheduler are still out on the pool, the
//! queued requests stay queued (each of those jobs hands out a turn again when it is over);
//! only when none is out does the loop go on trying the next one, so no request waits with
//! nothing left to give it a turn. Only the request whose post was refused fails.

#![forbid(unsafe_code)]

use std::cell::RefMut;
use std::collections::{HashMap, VecDeque};

use crate::cache::CacheKey;

/// What [`Scheduler::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Post it to the pool now.
    Run(T),
    /// Held: it comes back from [`Scheduler::next_turn`], to run or to read the verdict of the
    /// verification it waited for.
    Held,
    /// Too many already: answer a temporary failure.
    Refused(T),
}

/// How a place handed out (`Admit::Run`, `Turn::Run`) comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freed {
    /// Its job is over (it ran on the pool), whatever its result.
    Done,
    /// It could not be posted after all (the pool's queue is full, no memory, no pool).
    Refused,
}

/// What [`Scheduler::next_turn`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn<T> {
    /// A queued verification's turn: post it now (it holds a place).
    Run(T),
    /// A request that waited for a verification's verdict: it reads it from the cache (or, if
    /// it gave none, comes back through `admit`).
    Retry(T),
}

#[derive(Debug)]
struct Queued<T> {
    item: T,
    /// The `limit` it was admitted with.
    limit: usize,
}

#[derive(Debug)]
pub struct Scheduler<T> {
    running: usize,
    queued: VecDeque<Queued<T>>,
    /// Keys running or queued, with the requests waiting for their verdict.
    leaders: HashMap<CacheKey, Vec<T>>,
    /// Requests in `leaders`' lists.
    following: usize,
    /// Places freed by finished jobs and not handed on yet: each goes to the next one queued
    /// whatever its `limit` (a freed place passes on).
    owed: usize,
    /// A post was refused while other jobs were out: the queue waits for one of them to be
    /// over (cleared by the next `Done`).
    stalled: bool,
    /// Followers of freed keys, to hand back.
    retry: VecDeque<T>,
    /// A [`drain`] is under way (further down the stack): hand-offs go through it.
    draining: bool,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Scheduler::new()
    }
}

impl<T> Scheduler<T> {
    pub fn new() -> Scheduler<T> {
        Scheduler {
            running: 0,
            queued: VecDeque::new(),
            leaders: HashMap::new(),
            following: 0,
            owed: 0,
            stalled: false,
            retry: VecDeque::new(),
            draining: false,
        }
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
        self.queued.push_back(Queued { item, limit: limit.max(1) });
        self.lead(key);
        Admit::Held
    }

    fn lead(&mut self, key: Option<CacheKey>) {
        if let Some(k) = key {
            self.leaders.insert(k, Vec::new());
        }
    }

    /// A place handed out (admitted with `Run`, or handed out as `Turn::Run`) comes back, with
    /// the key it was admitted with: the requests that waited for that key's verdict are to be
    /// retried, and the place goes to the next one queued ([`Scheduler::next_turn`]); after a
    /// refused post only if no other job is out (see the module's doc).
    pub fn free(&mut self, key: Option<CacheKey>, how: Freed) {
        self.running = self.running.saturating_sub(1);
        let followers = key.and_then(|k| self.leaders.remove(&k)).unwrap_or_default();
        self.following -= followers.len();
        self.retry.extend(followers);
        match how {
            Freed::Done => {
                self.owed += 1;
                self.stalled = false;
            }
            Freed::Refused => self.stalled = self.running > 0,
        }
    }

    /// What to hand out now, one at a time: the turns of queued verifications (a place freed
    /// by a finished job passes to the next one queued; a place otherwise free goes to it if
    /// its `limit` allows), then the requests to retry. `None`: nothing now.
    pub fn next_turn(&mut self) -> Option<Turn<T>> {
        let run = !self.stalled && self.queued.front().is_some_and(|q| self.owed > 0 || self.running < q.limit);
        if run {
            if let Some(q) = self.queued.pop_front() {
                self.owed = self.owed.saturating_sub(1);
                self.running += 1;
                return Some(Turn::Run(q.item));
            }
        }
        // the places not handed on stay free (none is queued, or the queue waits for a job
        // that is out)
        self.owed = 0;
        self.retry.pop_front().map(Turn::Retry)
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

/// Hands out what the scheduler has ([`Scheduler::next_turn`]) to `hand`, one after another in this
/// loop. `lend` lends the scheduler for a moment (never while `hand` runs, which may admit,
/// free and drain again). A drain asked for while one is under way (from inside `hand`: a
/// refused post frees its place, a retried follower is admitted and refused) returns at once:
/// the drain under way hands out what that freed, so the stack stays bounded whatever the queue
/// holds. `hand` must settle what it is given (post it, or answer it and [`Scheduler::free`] a
/// place it held); a panic in it unwinds out of here with the scheduler able to drain again.
pub fn drain<'a, T>(lend: impl Fn() -> Option<RefMut<'a, Scheduler<T>>>, mut hand: impl FnMut(Turn<T>))
where
    T: 'a,
{
    match lend() {
        Some(mut s) if !s.draining => s.draining = true,
        _ => return,
    }
    let _leave = OnDrop(|| {
        if let Some(mut s) = lend() {
            s.draining = false;
        }
    });
    loop {
        // the scheduler lent for this statement only
        let Some(turn) = lend().and_then(|mut s| s.next_turn()) else { break };
        hand(turn);
    }
}

/// Runs its closure when dropped (also while a panic unwinds).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    fn key(n: u8) -> Option<CacheKey> {
        Some(CacheKey::derive(&[0; 32], &[&[n]]))
    }

    /// What the scheduler hands out now, until it has nothing.
    fn turns<T>(s: &mut Scheduler<T>) -> Vec<Turn<T>> {
        std::iter::from_fn(|| s.next_turn()).collect()
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
        s.free(key(1), Freed::Done);
        assert_eq!(turns(&mut s), vec![Turn::Run("b")]);
        s.free(key(2), Freed::Done);
        assert_eq!(turns(&mut s), vec![Turn::Run("c")]);
        s.free(None, Freed::Done);
        assert_eq!(turns(&mut s), vec![]);
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
        s.free(key(1), Freed::Done);
        assert_eq!(turns(&mut s), (2..=16).map(Turn::Retry).collect::<Vec<_>>());
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
        s.free(key(1), Freed::Done);
        assert_eq!(turns(&mut s), vec![Turn::Run('b')]);
        s.free(key(2), Freed::Done);
        assert_eq!(turns(&mut s), vec![Turn::Retry('c')]);
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

    #[test]
    fn a_freed_place_passes_to_the_next_whatever_its_limit() {
        // one queue per worker: a location's N is checked when its login asks for a place
        let mut s = Scheduler::new();
        assert_eq!(s.admit(None, 'a', 2, 4), Admit::Run('a'));
        assert_eq!(s.admit(None, 'b', 2, 4), Admit::Run('b'));
        assert_eq!(s.admit(None, 'c', 1, 4), Admit::Held);
        s.free(None, Freed::Done);
        assert_eq!(turns(&mut s), vec![Turn::Run('c')], "2 running, over c's limit of 1");
        assert_eq!(s.load(), (2, 0, 0));
    }

    #[test]
    fn a_refused_post_leaves_the_queue_to_the_jobs_still_out() {
        let mut s = Scheduler::new();
        assert_eq!(s.admit(key(1), 'a', 2, 8), Admit::Run('a'));
        assert_eq!(s.admit(key(2), 'b', 2, 8), Admit::Run('b'));
        for (n, c) in [(3, 'c'), (4, 'd'), (5, 'e')] {
            assert_eq!(s.admit(key(n), c, 2, 8), Admit::Held);
        }
        assert_eq!(s.admit(key(3), 'f', 2, 8), Admit::Held, "follows c");
        s.free(key(1), Freed::Done);
        assert_eq!(s.next_turn(), Some(Turn::Run('c')));
        // c's post refused while b is out: c's follower is retried, d and e wait for b
        s.free(key(3), Freed::Refused);
        assert_eq!(turns(&mut s), vec![Turn::Retry('f')]);
        assert_eq!(s.load(), (1, 2, 0));
        // b is over: its place, and the one c left, go to d and e
        s.free(key(2), Freed::Done);
        assert_eq!(turns(&mut s), vec![Turn::Run('d'), Turn::Run('e')]);
        assert_eq!(s.load(), (2, 0, 0));
    }

    #[test]
    fn a_refused_post_with_nothing_out_goes_on_with_the_next() {
        let mut s = Scheduler::new();
        assert_eq!(s.admit(None, 'a', 1, 8), Admit::Run('a'));
        assert_eq!(s.admit(None, 'b', 1, 8), Admit::Held);
        assert_eq!(s.admit(None, 'c', 1, 8), Admit::Held);
        s.free(None, Freed::Done);
        assert_eq!(s.next_turn(), Some(Turn::Run('b')));
        // nothing else is out: nothing would give c a turn later
        s.free(None, Freed::Refused);
        assert_eq!(turns(&mut s), vec![Turn::Run('c')]);
        assert_eq!(s.load(), (1, 0, 0));
    }

    const LONG: u32 = 100_000;

    /// What a test's `hand` saw.
    #[derive(Default)]
    struct Seen {
        settled: RefCell<Vec<u32>>,
        depth: Cell<usize>,
        deepest: Cell<usize>,
    }

    /// A `hand` as the FFI layer's: the pool refuses every post, so the place comes back
    /// refused and a drain is asked for from inside the one under way.
    fn refuse(s: &RefCell<Scheduler<u32>>, seen: &Seen, turn: Turn<u32>) {
        seen.depth.set(seen.depth.get() + 1);
        seen.deepest.set(seen.deepest.get().max(seen.depth.get()));
        let Turn::Run(n) = turn else { panic!("no followers here") };
        s.borrow_mut().free(None, Freed::Refused);
        seen.settled.borrow_mut().push(n);
        sched_drain(s, seen);
        seen.depth.set(seen.depth.get() - 1);
    }

    fn sched_drain(s: &RefCell<Scheduler<u32>>, seen: &Seen) {
        drain(|| s.try_borrow_mut().ok(), |turn| refuse(s, seen, turn));
    }

    fn long_queue(limit: usize) -> RefCell<Scheduler<u32>> {
        let s = RefCell::new(Scheduler::new());
        for n in 0..limit as u32 {
            assert_eq!(s.borrow_mut().admit(None, LONG + n, limit, 0), Admit::Run(LONG + n));
        }
        for n in 0..LONG {
            assert_eq!(s.borrow_mut().admit(None, n, limit, LONG as usize), Admit::Held);
        }
        s
    }

    #[test]
    fn a_long_queue_refused_by_the_pool_is_drained_in_a_loop() {
        // a thread of a small stack: a hand-off nested in the one before it would overflow it
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let (s, seen) = (long_queue(1), Seen::default());
                // the one job out is over, and every post of the queued ones is refused: with
                // nothing out, each is tried in turn
                s.borrow_mut().free(None, Freed::Done);
                sched_drain(&s, &seen);
                assert_eq!(seen.deepest.get(), 1, "no hand-off nested in another");
                assert_eq!(*seen.settled.borrow(), (0..LONG).collect::<Vec<_>>(), "each settled once, in order");
                assert_eq!(s.borrow().load(), (0, 0, 0));
                assert!(!s.borrow().draining);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_long_queue_waits_while_a_job_is_out() {
        let (s, seen) = (long_queue(2), Seen::default());
        // one of the two jobs out is over; the post of its successor is refused while the
        // other is out: that one fails, the rest wait
        s.borrow_mut().free(None, Freed::Done);
        sched_drain(&s, &seen);
        assert_eq!(*seen.settled.borrow(), vec![0]);
        assert_eq!(s.borrow().load(), (1, LONG as usize - 1, 0));
        // the other is over: nothing out any more, every post refused, so all are tried
        s.borrow_mut().free(None, Freed::Done);
        sched_drain(&s, &seen);
        assert_eq!(seen.deepest.get(), 1);
        assert_eq!(*seen.settled.borrow(), (0..LONG).collect::<Vec<_>>());
        assert_eq!(s.borrow().load(), (0, 0, 0));
    }

    #[test]
    fn a_panic_in_a_hand_off_leaves_the_scheduler_able_to_drain() {
        let s = RefCell::new(Scheduler::new());
        assert_eq!(s.borrow_mut().admit(None, 0, 1, 4), Admit::Run(0));
        for n in 1..=3 {
            assert_eq!(s.borrow_mut().admit(None, n, 1, 4), Admit::Held);
        }
        s.borrow_mut().free(None, Freed::Done);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drain(|| s.try_borrow_mut().ok(), |_| panic!("in a hand-off"))
        }));
        assert!(caught.is_err());
        assert!(!s.borrow().draining);
        // the one it was handed is the panicking hand's to settle (the FFI layer catches each
        // hand-off's panic itself); the next completion goes on with the queue
        s.borrow_mut().free(None, Freed::Done);
        let mut got = Vec::new();
        drain(|| s.try_borrow_mut().ok(), |t| got.push(t));
        assert_eq!(got, vec![Turn::Run(2)]);
    }
}
