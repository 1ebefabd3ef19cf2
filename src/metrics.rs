//! Counters shared by all workers, over a shared-memory region seen as `&[AtomicU64]` (the FFI
//! layer maps it, as for the cache and the limiter), and their Prometheus text form for
//! `mail_auth_status`. Plain Rust, no lock.
//!
//! Each counter has one word per *slot*, and its value is the sum over the slots. Slot 0 is
//! counted in with atomic adds, by any thread ([`Metrics::new`]: thread-pool threads, processes
//! without a slot). Slots 1.. each belong to the event loop of one worker process
//! ([`Metrics::event_loop`], once the FFI layer called [`worker_started`]): the only thread that
//! writes there, so its counts are a plain load and store, not a locked add. A locked add waits
//! for the CPU's store buffer to drain; five of them a request cost a cheap login about 0.35 µs
//! of worker CPU (measured, `scripts/bench`). Which thread counts is said by the caller (the
//! engine knows when it runs on the thread pool), not found in a thread-local: in a module
//! nginx loads, each thread-local access is a call into the dynamic loader, and measured as
//! dearer than the locked adds. A process claims a free slot when it first counts (or the slot
//! of a process that is gone; its counts stay in it); when none is free it counts in slot 0.
//!
//! Layout (64-bit words): word 0 the layout stamp, words `1..SLOTS` the owner of slots
//! `1..SLOTS` (0: free), then `SLOTS` slots of [`SLOT_WORDS`] words, the counters in the order
//! of [`Metrics`]'s offsets. A zeroed region is all zeros; a region with another stamp (another
//! layout) is zeroed first.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::engine::AuthResult;
use crate::protocol::{Method, Protocol};

const PROTOCOLS: &[&str] = &["imap", "pop3", "smtp", "unknown"];
const METHODS: &[&str] =
    &["plain", "login", "apop", "cram-md5", "external", "xoauth2", "oauthbearer", "none", "unknown"];

/// Histogram bucket bounds, microseconds (`le` in seconds on output).
const BUCKETS_US: &[u64] =
    &[250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000];

const STAMP: u64 = 0x6d61_696c_6d65_7406; // "mailmet" + layout version
/// Slots of counters: 0 shared, the others one process's event loop's each.
pub const SLOTS: usize = 64;
/// The owners of slots `1..SLOTS`.
const OWNERS: usize = 1;
/// Where slot 0 starts.
const COUNTERS: usize = OWNERS + SLOTS - 1;
// a slot's counters (offsets within a slot)
const REQUESTS: usize = 0;
const N_RESULTS: usize = AuthResult::ALL.len();
const N_REQUESTS: usize = N_RESULTS * PROTOCOLS.len() * METHODS.len();
const CACHE_HITS: usize = REQUESTS + N_REQUESTS;
const CACHE_MISSES: usize = CACHE_HITS + 1;
/// A histogram: one word per bucket, then +Inf (= count), then the sum in microseconds.
const HIST_WORDS: usize = BUCKETS_US.len() + 2;
const VERIFY_HIST: usize = CACHE_MISSES + 1;
const DECISION_HIST: usize = VERIFY_HIST + HIST_WORDS;
/// The fleet's shared limiter (`mail_auth_limit redis=`): its refusals, the decisions made
/// without it (unreachable), the settlements it did not get.
const FLEET_REFUSED: usize = DECISION_HIST + HIST_WORDS;
const FLEET_UNAVAILABLE: usize = FLEET_REFUSED + 1;
const FLEET_LOST: usize = FLEET_UNAVAILABLE + 1;
/// Words of one slot.
pub const SLOT_WORDS: usize = FLEET_LOST + 1;
/// Words the layout needs.
pub const WORDS: usize = COUNTERS + SLOTS * SLOT_WORDS;

/// The counters over a region of at least [`WORDS`] words.
pub struct Metrics<'a> {
    w: &'a [AtomicU64],
    /// Where this view counts: slot 0 with atomic adds, or the event loop's own slot.
    own: usize,
}

/// This process's owner mark once it is an nginx worker ([`worker_started`]); 0: not one (unit
/// tests), everything counts in slot 0.
static WORKER: AtomicU64 = AtomicU64::new(0);
/// The region the event loop claimed its slot in (its address), and the slot. Written and read
/// by the event loop only ([`Metrics::event_loop`]).
static CLAIMED_IN: AtomicUsize = AtomicUsize::new(0);
static CLAIMED: AtomicUsize = AtomicUsize::new(0);

/// This process is an nginx worker: its event loop counts in a slot of its own (called when the
/// worker starts).
pub fn worker_started() {
    WORKER.store((u64::from(std::process::id()) << 24) | 1, Ordering::Relaxed);
}

/// Whether the process of an owner mark is gone (its slot may be taken over). Without /proc
/// nothing is known to be gone.
fn gone(mark: u64) -> bool {
    std::path::Path::new("/proc/self").exists() && !std::path::Path::new(&format!("/proc/{}", mark >> 24)).exists()
}

/// A slot of `w` for the owner `mark`: the one it already has, a free one, or one whose owner is
/// gone; 0 when none is.
fn claim(w: &[AtomicU64], mark: u64, gone: impl Fn(u64) -> bool) -> usize {
    let owners = &w[OWNERS..OWNERS + SLOTS - 1];
    if let Some(k) = owners.iter().position(|o| o.load(Ordering::Acquire) == mark) {
        return k + 1;
    }
    for (k, o) in owners.iter().enumerate() {
        let cur = o.load(Ordering::Acquire);
        if (cur == 0 || gone(cur)) && o.compare_exchange(cur, mark, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return k + 1;
        }
    }
    0
}

/// The event loop's slot in `w` (claimed at its first count there).
fn event_loop_slot(w: &[AtomicU64]) -> usize {
    let mark = WORKER.load(Ordering::Relaxed);
    if mark == 0 {
        return 0;
    }
    let region = w.as_ptr() as usize;
    if CLAIMED_IN.load(Ordering::Relaxed) == region {
        return CLAIMED.load(Ordering::Relaxed);
    }
    let slot = claim(w, mark, gone);
    CLAIMED.store(slot, Ordering::Relaxed);
    CLAIMED_IN.store(region, Ordering::Relaxed);
    slot
}

/// Counters read from the cache / limiter zones the status location inherits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub cache_evictions: Option<u64>,
    pub limiter_refused_ip: Option<u64>,
    pub limiter_refused_user: Option<u64>,
    pub limiter_evictions: Option<u64>,
    pub limiter_bans_evicted: Option<u64>,
    /// A shared limiter (`mail_auth_limit redis=`) is in effect: its counters are shown.
    pub fleet: bool,
}

/// The index in [`PROTOCOLS`].
fn protocol_index(p: Option<Protocol>) -> usize {
    match p {
        Some(Protocol::Imap) => 0,
        Some(Protocol::Pop3) => 1,
        Some(Protocol::Smtp) => 2,
        None => 3,
    }
}

/// The index in [`METHODS`].
fn method_index(m: Option<Method>) -> usize {
    match m {
        Some(Method::Plain) => 0,
        Some(Method::Login) => 1,
        Some(Method::Apop) => 2,
        Some(Method::CramMd5) => 3,
        Some(Method::External) => 4,
        Some(Method::Xoauth2) => 5,
        Some(Method::Oauthbearer) => 6,
        Some(Method::None) => 7,
        None => 8,
    }
}

impl<'a> Metrics<'a> {
    /// The counters, counted in with atomic adds (any thread); `None` when the region is too
    /// small.
    pub fn new(w: &'a [AtomicU64]) -> Option<Metrics<'a>> {
        Metrics::with_slot(w, false)
    }

    /// The counters as the worker's event loop counts them: in its own slot, no locked add.
    /// Only for the event loop's thread (another thread counting here could lose counts).
    pub fn event_loop(w: &'a [AtomicU64]) -> Option<Metrics<'a>> {
        Metrics::with_slot(w, true)
    }

    fn with_slot(w: &'a [AtomicU64], event_loop: bool) -> Option<Metrics<'a>> {
        if w.len() < WORDS {
            return None;
        }
        if w[0].load(Ordering::Acquire) != STAMP {
            // first use (zeroed region) or another layout: whoever wins the stamp zeroes it;
            // counts racing with that are lost, which a counter may afford once
            let cur = w[0].load(Ordering::Acquire);
            if w[0].compare_exchange(cur, STAMP, Ordering::AcqRel, Ordering::Acquire).is_ok() && cur != 0 {
                for x in &w[1..WORDS] {
                    x.store(0, Ordering::Relaxed);
                }
            }
        }
        Some(Metrics { w, own: if event_loop { event_loop_slot(w) } else { 0 } })
    }

    fn add(&self, i: usize, n: u64) {
        let x = &self.w[COUNTERS + self.own * SLOT_WORDS + i];
        if self.own == 0 {
            x.fetch_add(n, Ordering::Relaxed);
        } else {
            // this thread is the slot's only writer
            x.store(x.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }

    fn get(&self, i: usize) -> u64 {
        (0..SLOTS).map(|k| self.w[COUNTERS + k * SLOT_WORDS + i].load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }

    /// One answered request; `micros`: how long the decision took.
    pub fn request(&self, protocol: Option<Protocol>, method: Option<Method>, result: AuthResult, micros: u64) {
        let p = protocol_index(protocol);
        let m = method_index(method);
        let r = result.index();
        self.add(REQUESTS + (r * PROTOCOLS.len() + p) * METHODS.len() + m, 1);
        self.observe(DECISION_HIST, micros);
    }

    /// A password verification that ran (not answered from the cache).
    pub fn verification(&self, micros: u64) {
        self.observe(VERIFY_HIST, micros);
    }

    /// A decision of the fleet's shared limiter: a refusal (`true`), or none because it was
    /// unreachable (`false`: the local limiter decided alone).
    pub fn fleet(&self, refused: bool) {
        self.add(if refused { FLEET_REFUSED } else { FLEET_UNAVAILABLE }, 1);
    }

    /// Settlements the shared limiter did not get (unreachable, or its queue full).
    pub fn fleet_lost(&self, n: u64) {
        self.add(FLEET_LOST, n);
    }

    pub fn cache(&self, hit: bool) {
        self.add(if hit { CACHE_HITS } else { CACHE_MISSES }, 1);
    }

    fn observe(&self, base: usize, micros: u64) {
        // cumulative buckets are made on output; here each bucket counts its own range
        let b = BUCKETS_US.iter().position(|&le| micros <= le).unwrap_or(BUCKETS_US.len());
        self.add(base + b, 1);
        self.add(base + HIST_WORDS - 1, micros);
    }

    /// Requests with this result, all protocols and methods.
    pub fn result_total(&self, result: AuthResult) -> u64 {
        let r = result.index();
        (0..PROTOCOLS.len() * METHODS.len()).map(|i| self.get(REQUESTS + r * PROTOCOLS.len() * METHODS.len() + i)).sum()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut o = String::with_capacity(4096);
        let _ =
            writeln!(o, "# HELP mail_auth_requests_total auth_http requests answered, by protocol, method and result.");
        let _ = writeln!(o, "# TYPE mail_auth_requests_total counter");
        for (r, result) in AuthResult::ALL.iter().map(|r| r.as_str()).enumerate() {
            for (p, proto) in PROTOCOLS.iter().enumerate() {
                for (m, method) in METHODS.iter().enumerate() {
                    let v = self.get(REQUESTS + (r * PROTOCOLS.len() + p) * METHODS.len() + m);
                    // the common series always, the rest once they happen
                    let always = m == 0 && p < 3 && (r < 2);
                    if v > 0 || always {
                        let _ = writeln!(o, "mail_auth_requests_total{{protocol=\"{proto}\",method=\"{method}\",result=\"{result}\"}} {v}");
                    }
                }
            }
        }
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "mail_auth_limiter_refusals_total",
            "Logins refused by mail_auth_limit without a password check.",
            self.result_total(AuthResult::RateLimited),
        );
        counter(
            &mut o,
            "mail_auth_store_errors_total",
            "Lookups that failed because the store was missing, unreadable, locked or corrupt.",
            self.result_total(AuthResult::StoreError),
        );
        counter(
            &mut o,
            "mail_auth_cache_hits_total",
            "Password verifications answered from mail_auth_cache.",
            self.get(CACHE_HITS),
        );
        counter(
            &mut o,
            "mail_auth_cache_misses_total",
            "Password verifications mail_auth_cache did not know.",
            self.get(CACHE_MISSES),
        );
        if g.fleet {
            counter(
                &mut o,
                "mail_auth_limiter_redis_refusals_total",
                "Logins refused by the fleet's shared limiter (mail_auth_limit redis=).",
                self.get(FLEET_REFUSED),
            );
            counter(
                &mut o,
                "mail_auth_limiter_redis_unavailable_total",
                "Admissions decided by the local limiter alone because the shared limiter's Redis was unreachable.",
                self.get(FLEET_UNAVAILABLE),
            );
            counter(
                &mut o,
                "mail_auth_limiter_redis_settlements_lost_total",
                "Settlements the shared limiter's Redis did not get (an over-count until the window ends).",
                self.get(FLEET_LOST),
            );
        }
        if let Some(v) = g.limiter_refused_ip {
            counter(&mut o, "mail_auth_limiter_refused_ip_total", "Limiter refusals because of the client address.", v);
        }
        if let Some(v) = g.limiter_refused_user {
            counter(&mut o, "mail_auth_limiter_refused_user_total", "Limiter refusals because of the user name.", v);
        }
        if let Some(v) = g.limiter_evictions {
            counter(
                &mut o,
                "mail_auth_limiter_evictions_total",
                "Limiter entries evicted because its zone was full.",
                v,
            );
        }
        if let Some(v) = g.limiter_bans_evicted {
            counter(
                &mut o,
                "mail_auth_limiter_bans_evicted_total",
                "Live bans dropped because the limiter zone held nothing else (the zone is too small).",
                v,
            );
        }
        if let Some(v) = g.cache_evictions {
            counter(
                &mut o,
                "mail_auth_cache_evictions_total",
                "Live cache entries pushed out because the zone was full.",
                v,
            );
        }
        self.histogram(
            &mut o,
            "mail_auth_verify_duration_seconds",
            "Time of the password verifications that ran (thread pool or inline).",
            VERIFY_HIST,
        );
        self.histogram(
            &mut o,
            "mail_auth_decision_duration_seconds",
            "Time from request to answer, queueing on the thread pool included.",
            DECISION_HIST,
        );
        o
    }

    fn histogram(&self, o: &mut String, name: &str, help: &str, base: usize) {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, le) in BUCKETS_US.iter().enumerate() {
            cum += self.get(base + i);
            let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {cum}", *le as f64 / 1e6);
        }
        cum += self.get(base + BUCKETS_US.len());
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(o, "{name}_sum {}", self.get(base + HIST_WORDS - 1) as f64 / 1e6);
        let _ = writeln!(o, "{name}_count {cum}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn counts_and_renders_prometheus_text() {
        let r = region(WORDS);
        let m = Metrics::new(&r).unwrap();
        m.request(Some(Protocol::Imap), Some(Method::Plain), AuthResult::Ok, 300);
        m.request(Some(Protocol::Imap), Some(Method::Plain), AuthResult::Ok, 300);
        m.request(Some(Protocol::Pop3), Some(Method::Apop), AuthResult::Invalid, 40);
        m.request(None, None, AuthResult::BadRequest, 10);
        m.request(Some(Protocol::Smtp), Some(Method::Plain), AuthResult::RateLimited, 5);
        m.request(Some(Protocol::Smtp), Some(Method::Plain), AuthResult::StoreError, 5);
        m.request(Some(Protocol::Smtp), Some(Method::None), AuthResult::RelayDenied, 5);
        m.cache(true);
        m.cache(false);
        m.cache(false);
        m.verification(3_000_000);
        m.verification(800);
        let g = Gauges {
            cache_evictions: Some(7),
            limiter_evictions: Some(2),
            limiter_bans_evicted: Some(0),
            ..Gauges::default()
        };
        let text = m.render(&g);
        for line in [
            "mail_auth_requests_total{protocol=\"imap\",method=\"plain\",result=\"ok\"} 2",
            "mail_auth_requests_total{protocol=\"pop3\",method=\"plain\",result=\"ok\"} 0",
            "mail_auth_requests_total{protocol=\"pop3\",method=\"apop\",result=\"invalid\"} 1",
            "mail_auth_requests_total{protocol=\"unknown\",method=\"unknown\",result=\"bad-request\"} 1",
            "mail_auth_requests_total{protocol=\"smtp\",method=\"none\",result=\"relay-denied\"} 1",
            "mail_auth_limiter_refusals_total 1",
            "mail_auth_store_errors_total 1",
            "mail_auth_cache_hits_total 1",
            "mail_auth_cache_misses_total 2",
            "mail_auth_cache_evictions_total 7",
            "mail_auth_limiter_evictions_total 2",
            "mail_auth_limiter_bans_evicted_total 0",
            "mail_auth_verify_duration_seconds_bucket{le=\"0.00025\"} 0",
            "mail_auth_verify_duration_seconds_bucket{le=\"0.001\"} 1",
            "mail_auth_verify_duration_seconds_bucket{le=\"2.5\"} 1",
            "mail_auth_verify_duration_seconds_bucket{le=\"+Inf\"} 2",
            "mail_auth_verify_duration_seconds_sum 3.0008",
            "mail_auth_verify_duration_seconds_count 2",
            "mail_auth_decision_duration_seconds_bucket{le=\"0.00025\"} 5",
            "mail_auth_decision_duration_seconds_bucket{le=\"0.0005\"} 7",
            "mail_auth_decision_duration_seconds_count 7",
            "# TYPE mail_auth_requests_total counter",
            "# TYPE mail_auth_verify_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("limiter_refused_ip"), "absent gauges are left out");
        // every sample line is "name{labels} value" or "name value"
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            assert!(name.starts_with("mail_auth_"), "{l}");
        }
    }

    #[test]
    fn shared_by_views_and_reset_on_another_layout() {
        let r = region(WORDS + 3);
        Metrics::new(&r).unwrap().cache(true);
        // a second view (another worker) sees the same counters
        assert!(Metrics::new(&r).unwrap().render(&Gauges::default()).contains("mail_auth_cache_hits_total 1"));
        r[0].store(12345, Ordering::Relaxed);
        let m = Metrics::new(&r).unwrap();
        assert!(m.render(&Gauges::default()).contains("mail_auth_cache_hits_total 0"));
        assert!(Metrics::new(&region(WORDS - 1)).is_none());
    }

    #[test]
    fn indexes_follow_the_label_lists() {
        for p in [Protocol::Imap, Protocol::Pop3, Protocol::Smtp] {
            assert_eq!(PROTOCOLS[protocol_index(Some(p))], p.as_str());
        }
        assert_eq!(PROTOCOLS[protocol_index(None)], "unknown");
        for m in Method::ALL {
            assert_eq!(METHODS[method_index(Some(m))], m.as_str());
        }
        assert_eq!(METHODS[method_index(None)], "unknown");
    }

    /// An event loop's slot and atomic adds at once: every count is in the sum, the event loop's
    /// in its slot, the others' in slot 0. (A unit test is no nginx worker: its slot is claimed
    /// here as [`Metrics::event_loop`] claims it.)
    #[test]
    fn an_event_loop_counts_in_its_own_slot() {
        let r = region(WORDS);
        let slot = claim(&r, 42 << 24 | 1, |_| false);
        assert_eq!(slot, 1);
        std::thread::scope(|s| {
            let r = &r;
            s.spawn(move || {
                let m = Metrics { own: slot, ..Metrics::new(r).unwrap() };
                for _ in 0..1000 {
                    m.request(Some(Protocol::Imap), Some(Method::Login), AuthResult::Ok, 1);
                }
            });
            for _ in 0..2 {
                s.spawn(move || {
                    for _ in 0..1000 {
                        Metrics::new(r).unwrap().request(Some(Protocol::Imap), Some(Method::Login), AuthResult::Ok, 1);
                    }
                });
            }
        });
        let m = Metrics::new(&r).unwrap();
        assert_eq!(m.result_total(AuthResult::Ok), 3000);
        let i = REQUESTS + protocol_index(Some(Protocol::Imap)) * METHODS.len() + method_index(Some(Method::Login));
        let per_slot: Vec<u64> = (0..SLOTS).map(|k| r[COUNTERS + k * SLOT_WORDS + i].load(Ordering::Relaxed)).collect();
        assert_eq!(&per_slot[..3], [2000, 1000, 0]);
        assert!(m.render(&Gauges::default()).contains("mail_auth_decision_duration_seconds_count 3000"));
        // not an nginx worker: the event loop's view counts in slot 0
        assert_eq!(Metrics::event_loop(&r).unwrap().own, 0);
    }

    #[test]
    fn slots_are_claimed_once_and_taken_over_from_gone_owners() {
        let r = region(WORDS);
        let alive = |_| false;
        assert_eq!(claim(&r, 7, alive), 1);
        assert_eq!(claim(&r, 8, alive), 2);
        // the same owner keeps its slot (a reload of a single-process nginx)
        assert_eq!(claim(&r, 7, alive), 1);
        // all taken: slot 0
        for k in 3..SLOTS {
            assert_eq!(claim(&r, 100 + k as u64, alive), k);
        }
        assert_eq!(claim(&r, 999, alive), 0);
        // the owner of slot 2 is gone: its slot is taken over, its counts stay in the sum
        r[COUNTERS + 2 * SLOT_WORDS + CACHE_HITS].store(5, Ordering::Relaxed);
        assert_eq!(claim(&r, 999, |m| m == 8), 2);
        assert!(Metrics::new(&r).unwrap().render(&Gauges::default()).contains("mail_auth_cache_hits_total 5"));
        // a process that is alive (this one) is never taken for gone; one that is not, is
        assert!(!gone(u64::from(std::process::id()) << 24 | 3));
        assert!(gone(u64::from(u32::MAX - 1) << 24));
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let r = region(WORDS);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let m = Metrics::new(&r).unwrap();
                    for _ in 0..1000 {
                        m.request(Some(Protocol::Imap), Some(Method::Login), AuthResult::Ok, 1);
                    }
                });
            }
        });
        assert_eq!(Metrics::new(&r).unwrap().result_total(AuthResult::Ok), 4000);
    }
}
