//! Counters shared by all workers, over a shared-memory region seen as `&[AtomicU64]` (the FFI
//! layer maps it, as for the cache and the limiter), and their Prometheus text form for
//! `mail_auth_status`. Plain Rust; every update is one atomic add, so workers and thread-pool
//! threads count at once without a lock.
//!
//! Layout (64-bit words): word 0 the layout stamp, then the counters in the order of
//! [`Metrics`]'s offsets. A zeroed region is all zeros; a region with another stamp (another
//! layout) is zeroed first.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::AuthResult;
use crate::protocol::{Method, Protocol};

const PROTOCOLS: &[&str] = &["imap", "pop3", "smtp", "unknown"];
const METHODS: &[&str] =
    &["plain", "login", "apop", "cram-md5", "external", "xoauth2", "oauthbearer", "none", "unknown"];

/// Histogram bucket bounds, microseconds (`le` in seconds on output).
const BUCKETS_US: &[u64] =
    &[250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000];

const STAMP: u64 = 0x6d61_696c_6d65_7405; // "mailmet" + layout version
const REQUESTS: usize = 1;
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
/// Words the layout needs.
pub const WORDS: usize = FLEET_LOST + 1;

/// The counters over a region of at least [`WORDS`] words.
pub struct Metrics<'a> {
    w: &'a [AtomicU64],
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

fn index_of(list: &[&str], v: &str) -> usize {
    list.iter().position(|x| *x == v).unwrap_or(list.len() - 1)
}

impl<'a> Metrics<'a> {
    /// `None` when the region is too small.
    pub fn new(w: &'a [AtomicU64]) -> Option<Metrics<'a>> {
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
        Some(Metrics { w })
    }

    fn add(&self, i: usize, n: u64) {
        self.w[i].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, i: usize) -> u64 {
        self.w[i].load(Ordering::Relaxed)
    }

    /// One answered request; `micros`: how long the decision took.
    pub fn request(&self, protocol: Option<Protocol>, method: Option<Method>, result: AuthResult, micros: u64) {
        let p = protocol.map_or(PROTOCOLS.len() - 1, |p| index_of(PROTOCOLS, p.as_str()));
        let m = method.map_or(METHODS.len() - 1, |m| index_of(METHODS, m.as_str()));
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

    /// Every method and protocol has its own label (`index_of` would count an unlisted one as
    /// "unknown").
    #[test]
    fn every_method_and_protocol_has_a_label() {
        for m in Method::ALL {
            assert!(METHODS[..METHODS.len() - 1].contains(&m.as_str()), "{m:?}");
        }
        for p in Protocol::ALL {
            assert!(PROTOCOLS[..PROTOCOLS.len() - 1].contains(&p.as_str()), "{p:?}");
        }
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
