//! The engine: the whole decision for one auth_http request, in plain Rust.
//!
//! transport policy → limiter → relay policy → store lookup → cache → verification → limiter
//! settlement → counters → answer and log lines. The FFI layer calls it at most twice per request:
//! [`Engine::start`] on the event loop, and, when that hands back a [`Job`], [`Job::run`] on a
//! thread-pool thread followed by [`Engine::complete`] back on the event loop. Unit tests and
//! the fuzz targets run exactly this composition ([`Engine::decide`] does the three inline).
//!
//! Shared memory (cache, limiter, counters) reaches the engine through [`SharedMemory`], which
//! the FFI layer implements over nginx zones and tests over plain vectors.

#![forbid(unsafe_code)]

mod decide;
mod methods;
mod outcome;
mod relay;
pub mod sched;
#[cfg(test)]
mod tests;
mod transport;
mod verify;

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use decide::{accept, begin, finish, lookup, Step};
pub use methods::subject_cn;
pub use outcome::{
    AuthResult, Outcome, SMTP_INVALID_CODE, SMTP_NO_AUTH_CODE, SMTP_RELAY_CODE, SMTP_TEMP_CODE, SMTP_TLS_REQUIRED_CODE,
};
pub use verify::{Pending, VerifyResult, DEFAULT_TEMPLATE};

use crate::cache::{Cache, CacheKey, Verdict};
use crate::config::{AuthConfig, CacheSettings, LookupConcurrency, VerifyConcurrency};
use crate::limiter::{LimitConfig, Limiter, Settle, Ticket};
use crate::metrics::Metrics;
use crate::oauth::{Route, TokenError};
use crate::protocol::{printable, AuthRequest, AuthResponse, HeaderView, LogFields, Method};
use crate::realip::RealClient;
use crate::scheme;
use crate::store::{NoticeLevel, Store};

/// The shared-memory regions the engine uses, each seen as 64-bit atomics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Cache,
    Limiter,
    Metrics,
}

/// Where the engine finds its shared regions (`None`: not configured, or not mapped yet).
pub trait SharedMemory: Send + Sync {
    fn region(&self, which: Region) -> Option<&[AtomicU64]>;
}

/// No shared memory at all (no cache, no limiter, no counters).
pub struct NoSharedMemory;

impl SharedMemory for NoSharedMemory {
    fn region(&self, _: Region) -> Option<&[AtomicU64]> {
        None
    }
}

/// Log levels, most severe first (as nginx orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Notice,
    Info,
    Debug,
}

impl From<NoticeLevel> for Level {
    fn from(l: NoticeLevel) -> Level {
        match l {
            NoticeLevel::Error => Level::Error,
            NoticeLevel::Warn => Level::Warn,
            NoticeLevel::Info => Level::Info,
        }
    }
}

/// What a `mail_auth` location decides with, built once at configuration time.
pub struct Engine {
    pub cfg: AuthConfig,
    /// `None` in bridge-only mode (`mail_auth_basic_header on` without a store): the access
    /// phase (auth_basic / auth_request) has already decided.
    pub store: Option<Arc<dyn Store>>,
    pub shared: Arc<dyn SharedMemory>,
    /// `mail_auth_cache` (its zone is `Region::Cache`).
    pub cache: Option<CacheSettings>,
    /// `mail_auth_limit` (its zone is `Region::Limiter`).
    pub limit: Option<LimitConfig>,
    /// `mail_auth_limit_exempt`: clients the limiter neither counts nor refuses.
    pub limit_exempt: Vec<crate::cidr::Cidr>,
    /// `mail_auth_limit ... redis=NAME`: the fleet's shared budget, asked on the thread pool
    /// after the local limiter admitted an attempt (needs `offload`).
    pub fleet: Option<crate::fleet::SharedLimit>,
    /// A thread pool takes [`Job`]s; `false`: everything runs inline.
    pub offload: bool,
    /// Bounds on costly jobs in flight and held (the FFI layer's [`sched::Scheduler`]).
    pub concurrency: VerifyConcurrency,
    /// Bounds on this location's jobs that wait on I/O in flight and held (the FFI layer's
    /// [`sched::Scheduler`] of the location).
    pub lookups: LookupConcurrency,
    /// `mail_auth_log_level`: the level of the decision line.
    pub log_level: Level,
    /// `mail_auth_oauth2_*`: the bearer-token verifier (XOAUTH2/OAUTHBEARER); `None`: those
    /// methods are refused (`method-denied`).
    pub oauth: Option<Arc<crate::oauth::Verifier>>,
}

/// Per request: when it started, how much the log wants.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub started: Instant,
    /// The most verbose level the request's log shows.
    pub verbosity: Level,
    /// Trace each step (`error_log ... debug` on a `--with-debug` nginx).
    pub debug: bool,
    /// The worker's queue of costly verifications had no place when the request came (the FFI
    /// layer's [`sched::Scheduler::is_full`]): a cheap account's failure could not get its
    /// timing padding, so its password is not checked at all (see [`Engine::after_lookup`]).
    pub costly_full: bool,
}

impl Ctx {
    pub fn new(verbosity: Level, debug: bool) -> Ctx {
        Ctx { started: Instant::now(), verbosity, debug, costly_full: false }
    }

    /// The same, told whether the costly queue is full now.
    pub fn with_costly_full(self, costly_full: bool) -> Ctx {
        Ctx { costly_full, ..self }
    }
}

/// What nginx is to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Status 200 with these Auth-* headers (the auth_http answer).
    Answer(AuthResponse),
    /// An HTTP error status (not an auth_http request).
    Status(u16),
}

/// The end of a request: the reply, and the lines for the error log in order.
#[derive(Debug)]
pub struct Decision {
    pub reply: Reply,
    pub result: AuthResult,
    pub lines: Vec<(Level, String)>,
    /// Debug-level trace of the steps (empty unless `Ctx::debug`).
    pub trace: Vec<String>,
}

/// The debug trace of a request's steps (formatted only when asked for), and the warnings met
/// on the way.
#[derive(Debug, Default)]
struct Trace {
    on: bool,
    lines: Vec<String>,
    warnings: Vec<String>,
}

impl Trace {
    fn new(ctx: Ctx) -> Trace {
        Trace { on: ctx.debug, ..Trace::default() }
    }

    fn step(&mut self, f: impl FnOnce() -> String) {
        if self.on {
            self.lines.push(f());
        }
    }

    fn warn(&mut self, line: String) {
        self.warnings.push(line);
    }
}

/// The limiters' tickets of a request's attempts: the local zone's, and the fleet's shared
/// store's; each settled when the request concludes.
#[derive(Debug, Default)]
pub struct Tickets {
    local: Vec<Ticket>,
    fleet: Vec<crate::fleet::Ticket>,
}

#[cfg(test)]
thread_local! {
    /// Tests: the next timing padding on this thread panics (as a bug would, caught around
    /// [`Job::run`] as the pool thread catches it).
    static PANIC_IN_PAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Work for a thread-pool thread: [`Job::run`] there, then [`Engine::complete`].
#[derive(Debug)]
pub struct Job {
    req: AuthRequest,
    ctx: Ctx,
    tickets: Tickets,
    stage: Stage,
    trace: Trace,
    /// [`Job::run`] ran (else [`Engine::complete`] answers a temporary failure).
    ran: bool,
    /// What the stage [`Job::run`] took out of `stage` had checked ([`Stage::checked`]): a run
    /// that panicked leaves `stage` as `Decide`, and [`Engine::abandon`] settles by this.
    running_checked: Option<bool>,
}

impl Job {
    fn new(req: AuthRequest, ctx: Ctx, tickets: Tickets, stage: Stage, trace: Trace) -> Box<Job> {
        Box::new(Job { req, ctx, tickets, stage, trace, ran: false, running_checked: None })
    }
}

#[derive(Debug)]
enum Stage {
    /// The fleet's shared limiter (a network round trip), then the rest as on the event loop.
    Fleet,
    /// Lookup and verification (a store whose lookups may block).
    Decide,
    /// The verification only (its cache key, already asked on the event loop).
    Verify(Pending, Option<CacheKey>),
    /// The timing padding of a failed cheap verification.
    Pad(Pending, VerifyResult, Option<CacheKey>),
    /// Ran: the answer.
    Done(Outcome),
}

impl Stage {
    /// Was the password checked (and found wrong) before this stage: `Some(wrong)` for a failed
    /// verification whose padding is still to do (`Some(true)`), or whose cheap app passwords
    /// failed before its costly main password (`Some(false)`: not known to be wrong, its repeats
    /// are checked again); `None`: not checked yet.
    fn checked(&self) -> Option<bool> {
        match self {
            Stage::Pad(..) => Some(true),
            Stage::Verify(p, _) => p.cheap_done.then_some(false),
            Stage::Fleet | Stage::Decide | Stage::Done(_) => None,
        }
    }
}

/// How far a verification got.
enum Verified {
    Done(Outcome),
    /// Failed; the timing padding is still to do.
    Pad(Pending, VerifyResult, Option<CacheKey>),
}

/// What [`Engine::start`] decided.
#[derive(Debug)]
pub enum Start {
    Done(Decision),
    /// Run the job on a thread pool, then call [`Engine::complete`]. If it cannot be posted,
    /// call `complete` without running it: the answer is a temporary failure.
    Offload(Box<Job>),
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Job {
    /// Runs the lookup or the verification. On a pool thread: touches no nginx state. A lookup
    /// that finds a costly verification to do (and no cached verdict) leaves it for
    /// [`Engine::complete`] to hand back: costly work is scheduled on the event loop.
    pub fn run(&mut self, engine: &Engine) {
        // a panic below leaves `ran` false and `stage` as `Decide`: what the stage had checked
        // is kept here for `abandon` (a wrong password waiting for its padding stays counted)
        self.ran = false;
        self.running_checked = self.stage.checked();
        let stage = std::mem::replace(&mut self.stage, Stage::Decide);
        self.stage = match stage {
            Stage::Fleet => match engine.fleet_admit(
                &self.req,
                engine.limited_ip(&self.req),
                true,
                &self.req.user,
                &mut self.tickets,
                &mut self.trace,
            ) {
                Err(o) => Stage::Done(*o),
                Ok(()) => engine.after_admit(&self.req, &mut self.tickets, true, false, &mut self.trace),
            },
            Stage::Decide => match engine.store.as_deref() {
                Some(store) => {
                    engine.after_lookup(&self.req, store, &mut self.tickets, None, true, false, &mut self.trace)
                }
                None => Stage::Done(outcome::temp_fail(
                    &engine.cfg,
                    &self.req,
                    AuthResult::InternalError,
                    "no store".into(),
                )),
            },
            // the cache was asked before this was posted; a failure padded here is checked
            // (found wrong) before its padding, as a `Pad` job's
            Stage::Verify(p, key) => Stage::Done(match engine.verify_own(&self.req, p, key, false, &mut self.trace) {
                Verified::Done(o) => o,
                Verified::Pad(p, r, key) => {
                    self.running_checked = Some(true);
                    engine.pad(&self.req, p, r, key, &mut self.trace)
                }
            }),
            Stage::Pad(p, r, key) => Stage::Done(engine.pad(&self.req, p, r, key, &mut self.trace)),
            Stage::Done(o) => Stage::Done(o),
        };
        self.ran = true;
    }

    /// What this job is, for the scheduler: `Some(key)` for a costly verification (`key`: the
    /// credential it decides, when requests for it may share its verdict), `None` for a
    /// lookup (not bounded: it is quick, or waits on I/O, not on a CPU).
    pub fn costly(&self) -> Option<Option<CacheKey>> {
        match &self.stage {
            Stage::Verify(_, key) => Some(*key),
            Stage::Pad(..) => Some(None),
            Stage::Fleet | Stage::Decide | Stage::Done(_) => None,
        }
    }

    /// The job waits on I/O on a pool thread (a store that may block, the fleet's Redis, an
    /// introspection call): bounded per location by [`Engine::lookups`].
    pub fn waits(&self) -> bool {
        matches!(self.stage, Stage::Fleet | Stage::Decide)
    }
}

impl Engine {
    fn cache_table(&self) -> Option<(Cache<'_>, CacheSettings)> {
        let s = self.cache?;
        Some((Cache::new(self.shared.region(Region::Cache)?)?, s))
    }

    pub fn limiter(&self) -> Option<Limiter<'_>> {
        let limit = self.limit?;
        Limiter::new(self.shared.region(Region::Limiter)?, limit)
    }

    /// The limiter for this request, with the request's protocol (its own budgets, if any) and
    /// the location's store (trust is per store).
    fn limiter_for(&self, req: &AuthRequest) -> Option<Limiter<'_>> {
        Some(self.limiter()?.with_protocol(req.protocol).with_scope(&self.trust_scope()))
    }

    /// What a client's trust for an account is bound to: the store that knows the account
    /// (its `scope`, as verdicts in the cache are), else the token verifier's issuer and
    /// audience; a Basic-bridge location without either has nothing to tell (empty).
    fn trust_scope(&self) -> std::borrow::Cow<'_, str> {
        match (&self.store, &self.oauth) {
            (Some(store), _) => store.scope(),
            (None, Some(v)) => format!("oauth2 {} {}", v.cfg.issuer, v.cfg.audience).into(),
            (None, None) => "".into(),
        }
    }

    /// The client address the limiter counts: none for a client of a `mail_auth_limit_exempt`
    /// network (no per-client budget, ban or trust), which still counts on the per-user budget
    /// (a brute force through an exempt webmail is still bounded per account).
    fn limited_ip(&self, req: &AuthRequest) -> Option<std::net::IpAddr> {
        req.client_ip.filter(|ip| !self.limit_exempt.iter().any(|n| n.contains(*ip)))
    }

    pub fn metrics(&self) -> Option<Metrics<'_>> {
        Metrics::new(self.shared.region(Region::Metrics)?)
    }

    /// The first call for a request, on the event loop.
    pub fn start(&self, view: &HeaderView<'_>, ctx: Ctx) -> Start {
        let mut trace = Trace::new(ctx);
        let mut req = match view.request() {
            Ok(r) => r,
            Err(e) if !view.is_auth_http() => {
                self.count(None, AuthResult::BadRequest, ctx);
                return Start::Done(Decision {
                    reply: Reply::Status(400),
                    result: AuthResult::BadRequest,
                    lines: vec![(Level::Error, format!("mail_auth: not an auth_http request: {e}"))],
                    trace: trace.lines,
                });
            }
            // An auth_http request with unusable values: a normal failed login for the client.
            Err(e) => return Start::Done(self.unparsed(view, &e, ctx, trace)),
        };
        if let Some(o) = self.front_refusal(view, &mut req, &mut trace) {
            return Start::Done(self.conclude_req(&req, o, Tickets::default(), ctx, trace));
        }
        self.start_request(req, ctx, trace)
    }

    /// The failed login of an auth_http request whose values are unusable.
    fn unparsed(&self, view: &HeaderView<'_>, e: &crate::protocol::ProtocolError, ctx: Ctx, trace: Trace) -> Decision {
        let fields = self.log_fields(view);
        let o = outcome::failed_unparsed(&self.cfg, fields.protocol, "", AuthResult::BadRequest, e.to_string());
        self.conclude(fields, o, ctx, trace, view.salted())
    }

    /// What refuses an auth_http request before the limiter, the store and any password check:
    /// a trusted balancer naming no usable client (else its client becomes the request's), the
    /// transport policy (auth_http only: a JSON request names no listener, and Dovecot has its
    /// own).
    fn front_refusal(&self, view: &HeaderView<'_>, req: &mut AuthRequest, trace: &mut Trace) -> Option<Outcome> {
        if let Err(o) = self.real_client(view, req, trace) {
            return Some(*o);
        }
        let o = transport::check(&self.cfg, req)?;
        trace.step(|| format!("transport policy: {}", o.reason));
        Some(o)
    }

    /// The client of an auth_http request: `Client-IP`, or the `Proxy-Protocol-Addr` of a
    /// trusted balancer; a balancer that named no usable client is a temporary failure.
    fn real_client(&self, view: &HeaderView<'_>, req: &mut AuthRequest, trace: &mut Trace) -> Result<(), Box<Outcome>> {
        match view.real_client(&self.cfg.trusted_proxies) {
            RealClient::Direct => Ok(()),
            RealClient::Proxied { client } => {
                trace.step(|| {
                    let proxy = req.client_ip.map_or_else(|| "unix:".to_string(), |ip| ip.to_string());
                    format!("client {client} named by trusted proxy {proxy} (Proxy-Protocol-Addr)")
                });
                req.client_ip = Some(client);
                Ok(())
            }
            // the balancer is trusted to name the client and named none: nobody to count or
            // to match network rules against (never the balancer's own address)
            RealClient::Malformed(why) => {
                Err(Box::new(outcome::temp_fail(&self.cfg, req, AuthResult::ProxyError, why)))
            }
        }
    }

    /// What a Basic-bridge location (`mail_auth_basic_header on`) decides before its access
    /// phase, where auth_basic / auth_request check the password: the refusals that must not
    /// depend on the password, as in any `mail_auth` location (the transport policy, a trusted
    /// balancer naming no usable client, a live ban of `mail_auth_limit`). Without this the
    /// password was checked first: a banned client still had its guesses checked, and a
    /// cleartext login was told a wrong password ("Invalid login") from a right one (the TLS
    /// refusal). `None`: the access phase goes on (a request that does not parse, or SMTP
    /// without AUTH, is left to the content handler, as before).
    pub fn bridge_precheck(&self, view: &HeaderView<'_>, ctx: Ctx) -> Option<Decision> {
        let mut trace = Trace::new(ctx);
        let mut req = match view.request() {
            Ok(r) => r,
            // an auth_http request with unusable values is refused whatever its password (as
            // the content handler refuses it): here, before auth_basic checks that password.
            // Its crypt reads a password only up to a NUL byte, which the request may carry
            // (AUTH PLAIN, sent as %00): left to auth_basic, "right-pw%00" was checked there,
            // never counted, and got past a ban and the TLS policy
            Err(e) if view.is_auth_http() => return Some(self.unparsed(view, &e, ctx, trace)),
            Err(_) => return None,
        };
        if req.method == Method::None {
            return None;
        }
        if let Some(o) = self.front_refusal(view, &mut req, &mut trace) {
            return Some(self.conclude_req(&req, o, Tickets::default(), ctx, trace));
        }
        let refusal = self.limiter_for(&req)?.banned(self.limited_ip(&req), &req.user, unix_now())?;
        trace.step(|| format!("limiter: {}", refusal.reason));
        let o = self.limited(&req, refusal);
        Some(self.conclude_req(&req, o, Tickets::default(), ctx, trace))
    }

    /// What the log says of a request that could not be parsed: the client a trusted balancer
    /// named, if it named a usable one.
    fn log_fields(&self, view: &HeaderView<'_>) -> LogFields<'static> {
        let mut fields = view.log_fields();
        if let RealClient::Proxied { client } = view.real_client(&self.cfg.trusted_proxies) {
            fields.client = Some(client);
        }
        fields
    }

    /// The decision for a request already parsed (from auth_http headers, or from another
    /// front end such as a JSON body), on the event loop.
    pub fn start_parsed(&self, req: AuthRequest, ctx: Ctx) -> Start {
        self.start_request(req, ctx, Trace::new(ctx))
    }

    fn start_request(&self, req: AuthRequest, ctx: Ctx, mut trace: Trace) -> Start {
        trace.step(|| {
            format!("request: {} {} for \"{}\"", req.protocol, req.method, printable(req.user.as_bytes(), 128))
        });

        // SMTP without AUTH: the relay policy, whatever the store; the limiter does not count it.
        if req.method == Method::None {
            let o = relay::relay(&self.cfg, &req);
            return Start::Done(self.conclude_req(&req, o, Tickets::default(), ctx, trace));
        }

        // The limiter first: a refused source costs no lookup and no password check. Every
        // credential check that goes on holds a ticket until its outcome settles it.
        let mut tickets = match self.admit(&req, &mut trace) {
            Ok(t) => Tickets { local: t.into_iter().collect(), fleet: Vec::new() },
            Err(o) => return Start::Done(self.conclude_req(&req, *o, Tickets::default(), ctx, trace)),
        };
        // The fleet's budget next, on the thread pool (a network round trip), for whatever the
        // local limiter let through.
        if self.fleet.is_some() && self.offload && !tickets.local.is_empty() {
            trace.step(|| "shared limiter on the thread pool".into());
            return Start::Offload(Job::new(req, ctx, tickets, Stage::Fleet, trace));
        }
        match self.after_admit(&req, &mut tickets, false, ctx.costly_full, &mut trace) {
            Stage::Done(o) => Start::Done(self.conclude_req(&req, o, tickets, ctx, trace)),
            stage => Start::Offload(Job::new(req, ctx, tickets, stage, trace)),
        }
    }

    /// After the limiters admitted the request: the decision, or the stage left for the pool
    /// (`on_pool`: this is a pool thread, where anything may block: never `Decide` then).
    /// `costly_full`: see [`Ctx::costly_full`] (known on the event loop only).
    fn after_admit(
        &self,
        req: &AuthRequest,
        tickets: &mut Tickets,
        on_pool: bool,
        costly_full: bool,
        trace: &mut Trace,
    ) -> Stage {
        if req.method.is_oauth() && self.store.is_none() {
            // a bearer token alone decides (cheap: one signature); the access phase of a
            // Basic-bridge location never lets one through
            return Stage::Done(self.oauth_login(req, None, on_pool, trace));
        }

        let Some(store) = self.store.as_deref() else {
            // Bridge mode: reaching the content phase means auth_basic/auth_request let it through.
            return Stage::Done(accept(&self.cfg, req, "access phase allowed the request"));
        };

        // A token that goes to introspection (an HTTP call; its cache is asked there too) is
        // decided on the thread pool, as a whole. A store that may block (SQLite: disk, locks) is
        // asked here only if it can answer without waiting; else the lookup goes to the pool.
        let introspect =
            req.method.is_oauth() && self.oauth.as_ref().is_some_and(|v| v.route(&req.pass) == Route::Introspect);
        let mut found = None;
        if !on_pool && self.offload && (introspect || store.may_block()) {
            let now = !introspect && matches!(req.method, Method::Plain | Method::Login);
            match now.then(|| store.try_lookup(&decide::query(req, &req.user))).flatten() {
                Some(f) => found = Some(f),
                None => {
                    trace.step(|| "lookup on the thread pool".into());
                    return Stage::Decide;
                }
            }
        }
        self.after_lookup(req, store, tickets, found, on_pool, costly_full, trace)
    }

    /// Lookup (`found`: its result if already asked), policy, the cache, and the verification
    /// if it is cheap; what is left for the pool comes back as a `Verify` or `Pad` stage (on a
    /// pool thread too: costly work is scheduled from the event loop, see [`Job::costly`]).
    ///
    /// `costly_full`: the costly queue has no place now. Then an account whose failure needs
    /// padding on the pool (or whose cheap app passwords would be tried before a costly main
    /// password) is not checked: it gets the temporary failure, given back, that an unknown
    /// user and a costly account get (their verification finds no place). Checked, its right
    /// password would be OK at once and a wrong one a temporary failure that must then count
    /// (an oracle otherwise), while an unknown name's does not: bans would tell them apart.
    #[allow(clippy::too_many_arguments)]
    fn after_lookup(
        &self,
        req: &AuthRequest,
        store: &dyn Store,
        tickets: &mut Tickets,
        found: Option<decide::Found>,
        on_pool: bool,
        costly_full: bool,
        trace: &mut Trace,
    ) -> Stage {
        let p = match self.lookup(req, store, tickets, found, on_pool, trace) {
            Step::Answer(o) => return Stage::Done(o),
            Step::Verify(p) => p,
        };
        let mut p = p;
        let key = self.cache_key(req, &p);
        // (asked only when the queue is full: `pads` estimates every credential's cost)
        let needs_place =
            |p: &Pending| if p.own_is_costly() { p.has_cheap_first() } else { p.pads() && p.template_is_costly() };
        if costly_full && self.offload && needs_place(&p) {
            return match self.cached(req, p, key, trace) {
                Ok(o) => Stage::Done(o),
                Err(p) => {
                    trace.step(|| "no place in the costly queue for its padding: not checked".into());
                    Stage::Done(finish(&self.cfg, req, p, VerifyResult::Overloaded))
                }
            };
        }
        if p.own_is_costly() && self.offload {
            // cheap app passwords first, here: a match needs no thread and no cache
            if p.has_cheap_first() {
                let matched = self.timed(|| p.run_cheap(&req.pass));
                trace.step(|| format!("cheap credentials first: {}", if matched { "match" } else { "no match" }));
                if matched {
                    return Stage::Done(finish(&self.cfg, req, p, VerifyResult::Match));
                }
            }
            return match self.cached(req, p, key, trace) {
                Ok(o) => Stage::Done(o),
                Err(p) => {
                    trace.step(|| {
                        format!("costly verification ({}) on the thread pool", scheme::scheme_name(p.stored()))
                    });
                    Stage::Verify(p, key)
                }
            };
        }
        // a cheap scheme is verified here; only a failure's padding may need the pool
        match self.verify_own(req, p, key, true, trace) {
            Verified::Done(o) => Stage::Done(o),
            Verified::Pad(p, r, key) if self.offload && p.template_is_costly() => {
                trace.step(|| "timing padding on the thread pool".into());
                Stage::Pad(p, r, key)
            }
            Verified::Pad(p, r, key) => Stage::Done(self.pad(req, p, r, key, trace)),
        }
    }

    /// Back on the event loop after [`Job::run`]: the answer, or the costly part still to run
    /// (hand it to the scheduler again). A job that did not run is a temporary failure.
    pub fn complete(&self, job: Box<Job>) -> Start {
        if !job.ran {
            return Start::Done(self.abandon(job, false));
        }
        match job.stage {
            Stage::Verify(..) | Stage::Pad(..) => Start::Offload(job),
            Stage::Done(_) | Stage::Decide | Stage::Fleet => {
                let Job { req, ctx, tickets, stage, trace, .. } = *job;
                let o = match stage {
                    Stage::Done(o) => o,
                    _ => outcome::temp_fail(&self.cfg, &req, AuthResult::InternalError, "lookup did not run".into()),
                };
                Start::Done(self.conclude_req(&req, o, tickets, ctx, trace))
            }
        }
    }

    /// A job that will not run: the thread pool's queue was full or the task failed
    /// (`overloaded == false`), or the scheduler's bounds were reached. A temporary failure,
    /// never OK.
    ///
    /// A failed verification whose timing padding is abandoned (`Pad`), or whose cheap app
    /// passwords were tried before its costly main password was abandoned, was checked, and
    /// failed: its attempt stays counted, as any wrong password (the answer is the temporary
    /// failure all abandoned jobs get). Given back, it would let a client that keeps the
    /// verification queue busy guess without limit: wrong = temporary failure, right = OK.
    pub fn abandon(&self, job: Box<Job>, overloaded: bool) -> Decision {
        let Job { req, ctx, tickets, stage, trace, ran, running_checked } = *job;
        // Some(wrong): checked and failed; `wrong` when its verdict is known (a mismatch, or a
        // right password the account's rules refuse, which must look the same), so that its
        // repeats are refused alike
        let checked = match &stage {
            Stage::Pad(_, r, key) => {
                if *r == VerifyResult::Mismatch {
                    self.remember(*key, Verdict::Mismatch, None);
                }
                Some(true)
            }
            // a run that panicked (its stage taken out): what that stage had checked
            Stage::Decide if !ran => running_checked,
            // the cheap app passwords were tried (and failed) before the costly main password
            // (not known to be wrong: its repeats are checked again)
            stage => stage.checked(),
        };
        let o = match stage {
            Stage::Verify(p, _) | Stage::Pad(p, ..) if overloaded => {
                finish(&self.cfg, &req, p, VerifyResult::Overloaded)
            }
            Stage::Decide | Stage::Fleet if overloaded => outcome::temp_fail(
                &self.cfg,
                &req,
                AuthResult::Overloaded,
                "too many lookups waiting in this worker (mail_auth_lookup_concurrency)".to_string(),
            ),
            stage => {
                let what = match stage {
                    Stage::Decide => "lookup",
                    Stage::Fleet => "shared limiter",
                    _ => "verification",
                };
                let reason = format!("{what} did not run (thread pool queue full or task failed)");
                outcome::temp_fail(&self.cfg, &req, AuthResult::InternalError, reason)
            }
        };
        let how = checked.map(|wrong| Settle::Failure { password: &req.pass, wrong });
        self.conclude_settled(&req, o, tickets, ctx, trace, how)
    }

    /// A job that waited for another request's verification of the same credential: its
    /// verdict from the cache, else (that one gave none) the job to schedule again.
    pub fn retry(&self, mut job: Box<Job>) -> Start {
        if let Stage::Verify(p, key) = std::mem::replace(&mut job.stage, Stage::Decide) {
            match self.cached(&job.req, p, key, &mut job.trace) {
                Ok(o) => job.stage = Stage::Done(o),
                Err(p) => {
                    job.stage = Stage::Verify(p, key);
                    return Start::Offload(job);
                }
            }
            job.ran = true;
            return self.complete(job);
        }
        Start::Offload(job)
    }

    /// The whole decision inline (tests, fuzzing, nginx without a thread pool).
    pub fn decide(&self, view: &HeaderView<'_>, ctx: Ctx) -> Decision {
        let mut next = self.start(view, ctx);
        loop {
            match next {
                Start::Done(d) => return d,
                Start::Offload(mut job) => {
                    job.run(self);
                    next = self.complete(job);
                }
            }
        }
    }
    /// An access-phase refusal in a Basic-bridge location (auth_basic / auth_request answered
    /// 401 or 403, or a 5xx): the auth_http answer for it. `None` when the request is not an
    /// auth_http request (no valid Auth-Protocol): leave the HTTP error alone.
    ///
    /// A 401 (auth_basic's and an auth_request upstream's "wrong credentials") is a wrong
    /// password for `mail_auth_limit` too (counted, and it may start a ban), as the store's
    /// verdict is in other locations: the FFI layer asks only in a Basic-bridge location, where
    /// the access phase checked the password. A 403 is no verdict on the password (auth_basic's
    /// answer when its user file is missing, a `deny` rule, an upstream's "forbidden"): a
    /// temporary failure, not counted, as a 5xx.
    pub fn bridge_refusal(&self, view: &HeaderView<'_>, status: u16, ctx: Ctx) -> Option<Decision> {
        let verdict = status == 401;
        if verdict {
            if let Some(d) = self.bridge_failure(view, status, ctx) {
                return Some(d);
            }
        }
        let mut fields = self.log_fields(view);
        let protocol = fields.protocol?;
        fields.method = fields.method.or(Some(Method::Plain));
        let user = String::from_utf8_lossy(&fields.user).into_owned();
        let mut reason = format!("access phase answered HTTP {status}");
        if status == 403 {
            reason.push_str(", no verdict on the password (auth_basic_user_file missing? a deny rule? an auth_request upstream's 403?)");
        }
        let o = if verdict {
            outcome::failed_unparsed(&self.cfg, Some(protocol), &user, AuthResult::Invalid, reason)
        } else {
            outcome::temp_fail_for(&self.cfg, Some(protocol), &user, AuthResult::StoreError, reason)
        };
        Some(self.conclude(fields, o, ctx, Trace::new(ctx), view.salted()))
    }

    /// An access-phase refusal of a parsed request, counted by the limiter like a wrong
    /// password (`None`: the request does not parse, or names no usable client).
    fn bridge_failure(&self, view: &HeaderView<'_>, status: u16, ctx: Ctx) -> Option<Decision> {
        let mut trace = Trace::new(ctx);
        let mut req = view.request().ok()?;
        if req.method == Method::None || self.real_client(view, &mut req, &mut trace).is_err() {
            return None;
        }
        let tickets = match self.admit(&req, &mut trace) {
            Ok(t) => Tickets { local: t.into_iter().collect(), fleet: Vec::new() },
            Err(o) => return Some(self.conclude_req(&req, *o, Tickets::default(), ctx, trace)),
        };
        let reason = format!("access phase answered HTTP {status}");
        let o = outcome::fail(&self.cfg, &req, None, AuthResult::Invalid, reason);
        Some(self.conclude_req(&req, o, tickets, ctx, trace))
    }

    fn admit(&self, req: &AuthRequest, trace: &mut Trace) -> Result<Option<Ticket>, Box<Outcome>> {
        let Some(limiter) = self.limiter_for(req) else { return Ok(None) };
        let now = unix_now();
        let ip = self.limited_ip(req);
        let refused = match limiter.banned(ip, &req.user, now) {
            Some(r) => Err(r),
            None => limiter.admit(ip, &req.user, &req.pass, now).map(Some),
        };
        if let Ok(Some(t)) = &refused {
            if t.evicted_ban() {
                trace.warn("mail_auth: the mail_auth_limit zone is full of live bans: one was dropped to count this attempt (make the zone bigger)".into());
            }
        }
        refused.map_err(|r| {
            trace.step(|| format!("limiter: {}", r.reason));
            Box::new(self.limited(req, r))
        })
    }

    /// A refusal by the limiter: the usual failed login with the limiter's growing Auth-Wait;
    /// no password checked.
    fn limited(&self, req: &AuthRequest, r: crate::limiter::Refusal) -> Outcome {
        outcome::fail(&self.cfg, req, Some(r.wait), AuthResult::RateLimited, r.reason)
    }

    /// Lookup and policy for any credential-carrying method.
    /// A store that knows the account under another spelling (`name`, e.g. a case-insensitive
    /// SQLite query) also has that name's budget checked and counted: 8 spellings of one
    /// account share one per-user limit.
    fn lookup(
        &self,
        req: &AuthRequest,
        store: &dyn Store,
        tickets: &mut Tickets,
        found: Option<decide::Found>,
        on_pool: bool,
        trace: &mut Trace,
    ) -> Step {
        if req.method.is_oauth() {
            return Step::Answer(self.oauth_login(req, Some(store), on_pool, trace));
        }
        // APOP/CRAM-MD5 check their response inside the lookup: the account's budget is asked
        // there, between the lookup and the check
        let mut gate = |name: &str| self.admit_account(req, name, tickets, on_pool, trace);
        let step = decide::lookup_with(&self.cfg, req, store, found, &mut gate);
        let Step::Verify(p) = &step else { return step };
        trace.step(|| format!("looked up: {p:?}"));
        let Some(name) = p.account_name() else { return step };
        match self.admit_account(req, name, tickets, on_pool, trace) {
            None => step,
            Some(o) => Step::Answer(o),
        }
    }

    /// The budget of the store's own spelling `name` of the account a login named (empty: the
    /// name as asked), when it is not the name the client gave (that one's was asked before
    /// the lookup): checked and counted, with the client's trust for the account. `Some`: the
    /// answer when the limiter refuses the account.
    fn admit_account(
        &self,
        req: &AuthRequest,
        name: &str,
        tickets: &mut Tickets,
        on_pool: bool,
        trace: &mut Trace,
    ) -> Option<Outcome> {
        let limiter = self.limiter_for(req)?;
        // (the usual case, the name as asked, without lower-casing two copies)
        if name.is_empty() || name == req.user {
            return None;
        }
        if crate::limiter::fold(name) == crate::limiter::fold(&req.user) {
            // one budget, counted already; a success trusts the client for the account's own
            // spelling too (trust is per exact name: a case-sensitive store may hold both)
            if let Some(t) = tickets.local.first_mut() {
                limiter.trust_account(t, name);
            }
            if let (Some(fleet), Some(t)) = (&self.fleet, tickets.fleet.first_mut()) {
                fleet.trust_account(t, self.limited_ip(req), name, Some(req.protocol), &self.trust_scope());
            }
            return None;
        }
        match limiter.admit_account(self.limited_ip(req), name, &req.pass, unix_now()) {
            Ok(t) => tickets.local.push(t),
            Err(r) => {
                trace.step(|| format!("limiter (account \"{name}\"): {}", r.reason));
                return Some(self.limited(req, r));
            }
        }
        if on_pool && self.fleet.is_some() {
            return self.fleet_admit(req, self.limited_ip(req), false, name, tickets, trace).err().map(|o| *o);
        }
        None
    }

    /// The fleet's shared limiter (`mail_auth_limit redis=`), after the local one admitted the
    /// attempt; blocks for a network round trip (thread pool only). A refusal (a ban it knows is
    /// then kept locally too: this proxy refuses the source without asking again); an
    /// unreachable store leaves the decision to the local limiter (a log line, a counter).
    /// `ip`: the client as the limiter counts it; `count_ip` false for the store's spelling of
    /// the account (its client is counted by the name as given; here only its trust applies, as
    /// the local limiter does).
    fn fleet_admit(
        &self,
        req: &AuthRequest,
        ip: Option<std::net::IpAddr>,
        count_ip: bool,
        user: &str,
        tickets: &mut Tickets,
        trace: &mut Trace,
    ) -> Result<(), Box<Outcome>> {
        let Some(fleet) = &self.fleet else { return Ok(()) };
        let scope = self.trust_scope();
        let admission = if count_ip {
            fleet.admit(ip, user, &req.pass, Some(req.protocol), &scope)
        } else {
            fleet.admit_account(ip, user, &req.pass, Some(req.protocol), &scope)
        };
        match admission {
            crate::fleet::Admission::Admitted(t) => {
                tickets.fleet.push(t);
                Ok(())
            }
            crate::fleet::Admission::Refused(r, ban) => {
                trace.step(|| format!("shared limiter: {}", r.reason));
                // only a client's ban is kept locally: a user's ban in the zone would refuse that
                // user's trusted clients, which the shared store (holding the fleet's trust marks)
                // lets through; a user's ban is asked of the shared store each time
                if let (Some((crate::limiter::Side::Ip, left, refusals)), Some(ip), Some(l)) =
                    (ban, ip, self.limiter_for(req))
                {
                    l.learn_ip_ban(ip, left, refusals, unix_now());
                }
                if let Some(m) = self.metrics() {
                    m.fleet(true);
                }
                Err(Box::new(self.limited(req, r)))
            }
            crate::fleet::Admission::Unavailable(line) => {
                trace.step(|| "shared limiter unavailable: the local limiter decides alone".into());
                if let Some(line) = line {
                    trace.warn(format!("mail_auth: {line}"));
                }
                if let Some(m) = self.metrics() {
                    m.fleet(false);
                }
                Ok(())
            }
        }
    }

    /// XOAUTH2 / OAUTHBEARER: the token checked locally (JWT) or by introspection, then the
    /// account rules of [`methods::oauth`].
    fn oauth_login(&self, req: &AuthRequest, store: Option<&dyn Store>, on_pool: bool, trace: &mut Trace) -> Outcome {
        let mut cached = false;
        let mut o = methods::oauth(&self.cfg, req, store, self.oauth.as_deref(), |v| match v.route(&req.pass) {
            Route::Jwt => (v.verify(&req.pass, &req.user, unix_now()), v.cfg.user_claim.as_str()),
            Route::Introspect => {
                let claim = v.cfg.introspect.as_ref().map_or("username", |i| i.user_claim.as_str());
                (self.introspect(v, req, on_pool, &mut cached, trace), claim)
            }
        });
        if cached {
            o.reason.push_str(" (cached introspection answer)");
        }
        o
    }

    /// RFC 7662 introspection of an opaque token, through `mail_auth_cache`: the key is a keyed
    /// hash of the endpoint, the claim rules, `Auth-User` and the token (never the token
    /// itself); an active token's answer is kept no longer than its `exp` (and the cache ttl),
    /// an inactive token's for the negative ttl; failures of the call are not kept. The HTTP
    /// call is made only on a pool thread (`on_pool`); elsewhere it is a temporary failure.
    fn introspect(
        &self,
        v: &crate::oauth::Verifier,
        req: &AuthRequest,
        on_pool: bool,
        cached: &mut bool,
        trace: &mut Trace,
    ) -> Result<crate::oauth::Verified, TokenError> {
        let now = unix_now();
        let key = self.cache_table().map(|(cache, _)| {
            let c = &v.cfg;
            let url = c.introspect.as_ref().map_or("", |i| i.url.as_str());
            let claim = c.introspect.as_ref().map_or("", |i| i.user_claim.as_str());
            // the endpoint answers for the client that asks (RFC 7662: a token another resource
            // may not use is inactive to this one): two locations sharing a zone with other
            // clients must not share a verdict
            let client = c.introspect.as_ref().map_or("", |i| i.client_id.as_str());
            let secret =
                c.introspect.as_ref().map_or(&b""[..], |i| i.client_secret_file.as_os_str().as_encoded_bytes());
            cache.key(&[
                b"oauth2-introspect",
                url.as_bytes(),
                client.as_bytes(),
                secret,
                c.issuer.as_bytes(),
                c.audience.as_bytes(),
                c.scope.as_deref().unwrap_or("").as_bytes(),
                claim.as_bytes(),
                req.user.as_bytes(),
                &req.pass,
            ])
        });
        if let Some(ok) = self.probe(key).map(|v| v != Verdict::Mismatch) {
            trace.step(|| format!("introspection cache hit: {}", if ok { "active" } else { "inactive" }));
            *cached = true;
            return if ok {
                Ok(crate::oauth::Verified { user: req.user.clone(), exp: 0 })
            } else {
                Err(TokenError::Inactive)
            };
        }
        if !on_pool {
            return Err(TokenError::Introspection("not on the thread pool (mail_auth_thread_pool)".into()));
        }
        trace.step(|| "introspection call".into());
        let r = v.introspect(&req.pass, &req.user, now);
        match &r {
            Ok(ok) => self.remember(key, Verdict::Match(0), Some(ok.exp.saturating_sub(now))),
            Err(TokenError::Inactive) => self.remember(key, Verdict::Mismatch, None),
            Err(_) => {}
        }
        r
    }

    /// The cache key of this verification (`None`: no cache), made once per verification:
    /// the key binds the verdict to the stored credentials themselves (the main password and
    /// every app password tried, with their labels, in store order), so a changed password, a
    /// revoked or added app password (or account, or store) is a new key at once, whatever any
    /// worker remembers. A verdict names the credential that matched by its index under that
    /// key; its rules (protocols, networks) are checked again at every request.
    fn cache_key(&self, req: &AuthRequest, p: &Pending) -> Option<CacheKey> {
        let (cache, _) = self.cache_table()?;
        // a store whose server checks the password (LDAP bind) has nothing to cache: its stored
        // value is made anew at each lookup, a verdict for it would never be read again
        if self.store.as_ref().is_some_and(|s| !s.verdicts_cacheable()) {
            return None;
        }
        let scope = self.store.as_ref().map(|s| s.scope()).unwrap_or_default();
        let subject = if p.is_unknown() { &b"unknown"[..] } else { &b"account"[..] };
        let key = if p.app_passwords() == 0 {
            cache.key(&[
                req.protocol.as_str().as_bytes(),
                scope.as_bytes(),
                req.user.as_bytes(),
                &req.pass,
                subject,
                p.stored().as_bytes(),
            ])
        } else {
            let mut parts: Vec<&[u8]> = vec![
                req.protocol.as_str().as_bytes(),
                scope.as_bytes(),
                req.user.as_bytes(),
                &req.pass,
                b"account with app passwords",
            ];
            for (label, stored) in p.credentials() {
                parts.push(label.as_bytes());
                parts.push(stored.as_bytes());
            }
            cache.key(&parts)
        };
        Some(key)
    }

    /// The cache's verdict under `key` (when the cache is on), counted as a hit or a miss.
    fn probe(&self, key: Option<CacheKey>) -> Option<Verdict> {
        let (key, (cache, _)) = (key?, self.cache_table()?);
        let hit = cache.get_verdict(&key, unix_now());
        if let Some(m) = self.metrics() {
            m.cache(hit.is_some());
        }
        hit
    }

    /// Remembers a verdict under `key` (when the cache is on) for the ttl of its kind, or
    /// `cap` seconds if that is shorter.
    fn remember(&self, key: Option<CacheKey>, v: Verdict, cap: Option<u64>) {
        if let (Some(key), Some((cache, settings))) = (key, self.cache_table()) {
            let ttl = if v == Verdict::Mismatch { settings.negative_ttl } else { settings.ttl };
            cache.put_verdict(&key, v, cap.map_or(ttl, |c| ttl.min(c)), unix_now());
        }
    }

    /// The answer from the cache's verdict, if it has one (`Err`: the verification to run).
    /// Cheap (a keyed hash and a table probe): done on the event loop before anything is
    /// offloaded, so a warm cache costs no thread-pool round trip.
    fn cached(
        &self,
        req: &AuthRequest,
        mut p: Pending,
        key: Option<CacheKey>,
        trace: &mut Trace,
    ) -> Result<Outcome, Pending> {
        let Some(v) = self.probe(key) else { return Err(p) };
        if matches!(v, Verdict::Match(i) if usize::from(i) >= p.order().len().max(1)) {
            return Err(p); // names no credential of this key (cannot happen): verify again
        }
        trace.step(|| format!("cache hit: {v:?}"));
        let r = match v {
            Verdict::Match(i) => {
                p.matched = Some(i);
                VerifyResult::Match
            }
            Verdict::Mismatch => VerifyResult::Mismatch,
        };
        let mut o = finish(&self.cfg, req, p, r);
        o.reason.push_str(" (cached verdict)");
        Ok(o)
    }

    /// Runs `f` as a verification, timed for the counters (only when counted). (Costly ones
    /// reach a pool thread only through the event loop's [`sched::Scheduler`], which bounds
    /// them.)
    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let m = self.metrics();
        let t = m.as_ref().map(|_| Instant::now());
        let r = f();
        if let (Some(m), Some(t)) = (m, t) {
            m.verification(micros(t.elapsed()));
        }
        r
    }

    /// The first part of a verification: the cached verdict, else the account's own
    /// verification. A failure that still needs its timing padding comes back as `Pad`.
    fn verify_own(
        &self,
        req: &AuthRequest,
        p: Pending,
        key: Option<CacheKey>,
        check_cache: bool,
        trace: &mut Trace,
    ) -> Verified {
        // (no key: no cache to ask, nothing to move through it)
        let mut p = match (check_cache, key) {
            (true, Some(_)) => match self.cached(req, p, key, trace) {
                Ok(o) => return Verified::Done(o),
                Err(p) => p,
            },
            _ => p,
        };
        let r = self.timed(|| p.run_own(&req.pass));
        trace.step(|| format!("verified: {r:?}"));
        if r == VerifyResult::Match {
            // a right password the account's rules refuse looks like a wrong one: kept as long
            // as a mismatch, and padded as one (or a repeat's speed, or the answer's, tells)
            let refused = decide::refused_after_match(&self.cfg, req, &p);
            let cap = self.cache.filter(|_| refused).map(|s| s.negative_ttl);
            self.remember(key, Verdict::Match(p.matched().unwrap_or(0)), cap);
            if !(refused && p.pads()) {
                return Verified::Done(finish(&self.cfg, req, p, r));
            }
            return Verified::Pad(p, r, key);
        }
        if p.pads() {
            return Verified::Pad(p, r, key);
        }
        Verified::Done(self.failed(req, p, r, key))
    }

    /// A failed verification of a cheaper account, padded with the template's.
    fn pad(&self, req: &AuthRequest, p: Pending, r: VerifyResult, key: Option<CacheKey>, trace: &mut Trace) -> Outcome {
        #[cfg(test)]
        if PANIC_IN_PAD.with(|c| c.replace(false)) {
            panic!("a panic injected in the padding (test)");
        }
        self.timed(|| p.pad(&req.pass));
        trace.step(|| "padded with the store's timing template".into());
        self.failed(req, p, r, key)
    }

    /// The answer to a failed verification, remembered in the cache when it is a verdict.
    fn failed(&self, req: &AuthRequest, p: Pending, r: VerifyResult, key: Option<CacheKey>) -> Outcome {
        if r == VerifyResult::Mismatch {
            self.remember(key, Verdict::Mismatch, None);
        }
        finish(&self.cfg, req, p, r)
    }

    fn conclude_req(&self, req: &AuthRequest, o: Outcome, tickets: Tickets, ctx: Ctx, trace: Trace) -> Decision {
        self.conclude_settled(req, o, tickets, ctx, trace, None)
    }

    /// [`Engine::conclude_req`], the tickets settled as `how` says (`None`: as the outcome says).
    fn conclude_settled(
        &self,
        req: &AuthRequest,
        mut o: Outcome,
        tickets: Tickets,
        ctx: Ctx,
        trace: Trace,
        how: Option<Settle<'_>>,
    ) -> Decision {
        if req.method.is_oauth() {
            // every refusal of a token login carries the RFC 7628 error (nginx sends it as the
            // SASL challenge): invalid_token unless the verifier said more
            if let AuthResponse::Fail { error_sasl: e @ None, .. } = &mut o.response {
                *e = Some(methods::oauth_error(self.oauth.as_deref(), None));
            }
        }
        let how = how.unwrap_or(match (&o.response, o.result) {
            (AuthResponse::Ok { .. }, _) => Settle::Success,
            (AuthResponse::Fail { .. }, AuthResult::RateLimited | AuthResult::BadRequest | AuthResult::RelayDenied) => {
                Settle::Neutral
            }
            // every refusal is a wrong password for the repeat mark: its repeats are refused as
            // an unknown user's are. A right password refused by the account's rules (network,
            // protocol, certificate, `app_only`, disabled) checked at every repeat would tell a
            // guesser it was right; an unusable stored value (a locked `!` hash, a NULL
            // password), a method it can't serve, a refused token: likewise told apart, or an
            // introspection call or a signature check per repeat
            (AuthResponse::Fail { .. }, _) => Settle::Failure { password: &req.pass, wrong: true },
            (AuthResponse::TempFail { .. }, _) => Settle::Neutral,
        });
        let limiter = if tickets.local.is_empty() { None } else { self.limiter() };
        if let Some(limiter) = limiter {
            for ticket in tickets.local {
                limiter.settle(ticket, how, unix_now());
            }
        }
        if let Some(fleet) = &self.fleet {
            // queued for the fleet's settlement thread: never waited for here
            for ticket in tickets.fleet {
                fleet.settle(ticket, how);
            }
        }
        // the outcome's user moves into the log fields (the decision line reads it there); the
        // request's is borrowed
        let user = match o.user.take() {
            Some(u) => std::borrow::Cow::Owned(u.into_bytes()),
            None => std::borrow::Cow::Borrowed(req.user.as_bytes()),
        };
        let fields = LogFields {
            user,
            client: req.client_ip,
            protocol: Some(req.protocol),
            method: Some(req.method),
            attempt: req.login_attempt,
        };
        self.conclude(fields, o, ctx, trace, req.salt.is_some())
    }

    fn count(&self, fields: Option<&LogFields<'_>>, result: AuthResult, ctx: Ctx) {
        if let Some(m) = self.metrics() {
            m.request(
                fields.and_then(|f| f.protocol),
                fields.and_then(|f| f.method),
                result,
                micros(ctx.started.elapsed()),
            );
        }
    }

    /// Counts the answer, and makes the log lines: the store's notices, then the decision.
    /// On an nginx without the CVE-2026-27651 fix, a refusal of a request that carried
    /// `Auth-Salt` (`salted`) gets `Auth-Wait: 0` (nginx then closes the session; see
    /// `config::auth_wait_fixed`): such an nginx forgets the session's password for every method
    /// but PLAIN once a salt exists (APOP, CRAM-MD5, and LOGIN, XOAUTH2, OAUTHBEARER, SMTP
    /// `none` after a CRAM-MD5 challenge), and sends `Auth-Salt` in exactly those requests.
    fn conclude(&self, fields: LogFields<'_>, mut o: Outcome, ctx: Ctx, trace: Trace, salted: bool) -> Decision {
        let salted = salted || matches!(fields.method, Some(Method::Apop | Method::CramMd5));
        if !self.cfg.nginx_auth_wait_fixed && salted {
            if let AuthResponse::Fail { wait, .. } | AuthResponse::TempFail { wait, .. } = &mut o.response {
                *wait = Some(0);
            }
        }
        self.count(Some(&fields), o.result, ctx);
        let mut lines: Vec<(Level, String)> = Vec::new();
        if !trace.warnings.is_empty() {
            lines.extend(trace.warnings.into_iter().map(|w| (Level::Warn, w)));
        }
        if let Some(store) = &self.store {
            let notices = store.take_notices();
            if !notices.is_empty() {
                lines.extend(notices.into_iter().map(|n| (n.level.into(), format!("mail_auth: {}", n.message))));
            }
        }
        if let Some(fleet) = &self.fleet {
            let (notices, lost) = fleet.backend.take_notices();
            lines.extend(notices.into_iter().map(|n| (Level::Warn, format!("mail_auth: {n}"))));
            if let (Some(m), true) = (self.metrics(), lost > 0) {
                m.fleet_lost(lost);
            }
        }
        if let Some(v) = &self.oauth {
            for (warning, n) in v.take_notices() {
                lines.push((if warning { Level::Warn } else { Level::Notice }, format!("mail_auth_oauth2: {n}")));
            }
        }
        // Broken stores and configuration problems are the operator's business whatever the level.
        let level = if o.result.is_operator_problem() { Level::Error } else { self.log_level };
        if level <= ctx.verbosity {
            lines.push((level, decision_line(&fields, &o, ctx.started.elapsed())));
        }
        Decision { reply: Reply::Answer(o.response), result: o.result, lines, trace: trace.lines }
    }
}

/// One line per decision: user, client, protocol, method, result, reason, time taken. Every
/// client- or store-given value is escaped once, here.
pub fn decision_line(f: &LogFields<'_>, o: &Outcome, took: Duration) -> String {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "mail_auth: user=\"{}\" client={} protocol={} method={} attempt={} result={} reason=\"{}\" time={:.3}ms",
        printable(&f.user, 256),
        f.client.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
        f.protocol.map_or("-", |p| p.as_str()),
        f.method.map_or("-", |m| m.as_str()),
        f.attempt,
        o.result,
        printable(o.full_reason().as_bytes(), 512),
        took.as_secs_f64() * 1000.0,
    );
    s
}
