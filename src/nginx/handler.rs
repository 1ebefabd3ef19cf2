//! The `mail_auth` content handler: hands the request's headers to the engine and sends what
//! it decides. A job the engine hands back runs on the thread pool (`offload`), then the
//! engine completes it on the event loop.

use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::sync::Arc;

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, ngx_uint_t, NGX_DONE, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED,
    NGX_LOG_INFO,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, Method, Request};
use ngx::{ngx_log_debug_http, ngx_log_error};

use super::offload::PoolRef;
use super::{guard, offload, util, Module};
use crate::cache::CacheKey;
use crate::engine::sched::{self, Admit, Freed, Scheduler, Turn};
use crate::engine::{Decision, Engine, Job, Reply, Start};
use crate::protocol::HeaderView;

/// nginx content handler for `mail_auth;` locations.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard_request(r, || handle(r), |rc| rc)
}

/// Runs `f`, the handling of request `r` (see [`guard`]); after a caught panic, [`after_panic`]'s
/// answer, handed to `answer` (the caller's way of giving back a status).
pub fn guard_request<T>(r: *mut ngx_http_request_t, f: impl FnOnce() -> T, answer: impl FnOnce(ngx_int_t) -> T) -> T {
    guard(None, || Some(f())).unwrap_or_else(|| answer(after_panic(r)))
}

/// The answer to request `r` after a panic in its handling was caught (the alert logged):
/// in a `mail_auth` location whose answer has not gone out, a temporary failure sent directly
/// ([`temporary_failure`]) with whatever headers the handling had put in cleared; else a 500
/// (a panic in this is caught too: a 500).
pub fn after_panic(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: `r` is live (its content handler runs, or it is held until finalized).
        let req = unsafe { Request::from_ngx_http_request(r) };
        // SAFETY: reading a flag of the live request.
        let sent = unsafe { (*r).header_sent() } != 0;
        let engine = Module::location_conf(req).filter(|lc| lc.is_mail_auth()).and_then(|lc| lc.engine.as_ref());
        match engine {
            Some(engine) if !sent && req.is_main() => {
                // SAFETY: the live request, its header not sent: nginx's own reset of the output
                // headers (as before an error page), dropping what a half-made answer put in.
                unsafe { ngx::ffi::ngx_http_clean_header(r) };
                temporary_failure(r, engine)
            }
            _ => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        }
    })
}

/// The module's own failure of auth_http request `r` (a foreign `Host`, a caught panic): a
/// temporary failure answered here, with the auth_http headers and the decision's status, not
/// counted by the limiter. Not a 5xx for the status filter to turn into one: an `error_page`
/// for 5xx in effect (nginx's stock nginx.conf has one at server level) sends a 5xx to its
/// page before any header filter runs, and nginx mail, given a page without `Auth-Status`,
/// closes the session with an internal error. A request that is not an auth_http one (no
/// `Auth-Protocol`) gets the 500 (the status filter leaves such a request's error alone too).
pub fn temporary_failure(r: *mut ngx_http_request_t, engine: &Engine) -> ngx_int_t {
    // SAFETY: `r` is live (see the callers).
    let req = unsafe { Request::from_ngx_http_request(r) };
    let rc = req.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }
    let view = HeaderView::new(util::headers_in(req));
    // what the status filter answered such a 500 with
    let status = NGX_HTTP_INTERNAL_SERVER_ERROR as u16;
    match engine.bridge_refusal(&view, status, util::log_ctx(req.log())) {
        Some(d) => send(r, &d),
        None => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    }
}

fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live, non-null request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let Some(lc) = Module::location_conf(req) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // borrowed: only a job sent to the thread pool holds a reference of its own
    let (Some(engine), pool) = (lc.engine.as_ref(), lc.pool) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // a bridge location's engine takes reaching here as auth_basic/auth_request's yes, and
    // whoever could make one would be counted against the users and clients it names
    if util::subrequest(req, ngx::ffi::NGX_LOG_ERR as ngx_uint_t, "mail_auth", format_args!("")) {
        return ngx::ffi::NGX_HTTP_FORBIDDEN as ngx_int_t;
    }
    if !matches!(req.method(), Method::GET | Method::HEAD) {
        ngx_log_error!(
            NGX_LOG_INFO,
            req.log(),
            "mail_auth: refused a request that is not GET/HEAD (not an auth_http request)"
        );
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    if util::foreign_host(r, req, &lc.host_names, ngx::ffi::NGX_LOG_ERR as ngx_uint_t, "mail_auth") {
        // a temporary failure, which the limiter does not count (a page's requests must not ban
        // the users it names)
        return temporary_failure(r, engine);
    }
    let rc = req.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }

    let ctx = util::log_ctx(req.log()).with_costly_full(costly_full(engine));
    let view = HeaderView::new(util::headers_in(req));
    match engine.start(&view, ctx) {
        Start::Done(d) => send(r, &d),
        Start::Offload(job) => schedule(r, engine.clone(), pool, job, Box::new(|r, d| send(r, &d))),
    }
}

/// Whether this worker's costly queue would refuse a new verification for `engine` now (see
/// [`crate::engine::Ctx::costly_full`]).
pub fn costly_full(engine: &Engine) -> bool {
    SCHED.with(|s| s.borrow().is_full(engine.concurrency.limit, engine.concurrency.queue))
}

/// What to do with a request's decision once its job is over: send the auth_http answer, or
/// (the JSON API) go on with it. Returns the status to finalize the request with.
pub type Finish = Box<dyn FnOnce(*mut ngx_http_request_t, Decision) -> ngx_int_t + Send>;

/// Runs an engine job off the event loop, then `finish`es with its decision: the status for a
/// content handler to return (`NGX_DONE` while the request is held).
pub fn schedule(
    r: *mut ngx_http_request_t,
    engine: Arc<Engine>,
    pool: Option<PoolRef>,
    job: Box<Job>,
    finish: Finish,
) -> ngx_int_t {
    let task = Box::new(OffloadJob { engine, pool, job: Some(job), place: None, finish: Some(finish) });
    dispatch(r, task, false).unwrap_or(NGX_DONE as ngx_int_t)
}

/// An engine job travelling to the thread pool and back.
struct OffloadJob {
    engine: Arc<Engine>,
    pool: Option<PoolRef>,
    job: Option<Box<Job>>,
    /// Set when the scheduler gave this costly job a place (and the key it was admitted
    /// with): given back when it is over.
    place: Option<Option<CacheKey>>,
    finish: Option<Finish>,
}

impl OffloadJob {
    /// The request's answer (or what comes after it) with this decision.
    fn finish(mut self, r: *mut ngx_http_request_t, d: Decision) -> ngx_int_t {
        match self.finish.take() {
            Some(f) => f(r, d),
            None => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        }
    }
}

/// A costly job waiting for a place, or for the verdict of the same credential's verification.
struct Held {
    r: *mut ngx_http_request_t,
    task: Box<OffloadJob>,
}

thread_local! {
    /// This worker's costly jobs (the event loop's thread only).
    static SCHED: RefCell<Scheduler<Held>> = RefCell::new(Scheduler::new());
    /// This worker's jobs that wait on I/O, one scheduler per location (its engine's address;
    /// engines live as long as the configuration, so as this worker): a hung directory holds
    /// at most `mail_auth_lookup_concurrency` pool threads (the event loop's thread only).
    static LOOKUPS: RefCell<HashMap<usize, Scheduler<Waiting>>> = RefCell::new(HashMap::new());
}

/// What a job that waits on I/O is told when its location's scheduler decides.
enum Go {
    /// Its turn: post it (`held`: the request is held already).
    Run { held: bool },
    /// Too many waiting: answer without it.
    Refused,
}

/// A job that waits on I/O (an auth_http lookup, the JSON API's account lookup) held for its
/// location's turn: what to do with it when the turn comes (or is refused).
struct Waiting {
    r: *mut ngx_http_request_t,
    go: Box<dyn FnOnce(*mut ngx_http_request_t, Go) -> Option<ngx_int_t>>,
}

/// Asks `location`'s scheduler for a turn: `go` runs now (`Run` or `Refused`) or, held, when
/// the turn comes. `Some`/`None` as [`dispatch`].
fn take_turn(
    r: *mut ngx_http_request_t,
    location: usize,
    (limit, queue): (usize, usize),
    held: bool,
    go: Box<dyn FnOnce(*mut ngx_http_request_t, Go) -> Option<ngx_int_t>>,
) -> Option<ngx_int_t> {
    let admit =
        LOOKUPS.with(|l| l.borrow_mut().entry(location).or_default().admit(None, Waiting { r, go }, limit, queue));
    match admit {
        Admit::Run(w) => (w.go)(w.r, Go::Run { held }),
        Admit::Held => {
            if !held {
                offload::hold(r);
            }
            None
        }
        Admit::Refused(w) => (w.go)(w.r, Go::Refused),
    }
}

/// Posts a task that waits on I/O (an auth_http lookup, the JSON API's account lookup) when its
/// location's scheduler gives it a turn: a hung directory holds at most
/// `mail_auth_lookup_concurrency` pool threads whichever API asks it. The turn goes out with
/// the task ([`Turned`]) and comes back when it completes. `refused`: the answer when too many
/// wait; `not_posted`: when the pool does not take it (its turn given back first). `Some`: the
/// status to finalize with now; `None`: the request is held (counted once: `held` says whether
/// it is already) and finalized later.
fn post_in_turn<T: offload::Task + 'static>(
    r: *mut ngx_http_request_t,
    engine: &Arc<Engine>,
    pool: Option<PoolRef>,
    task: Box<T>,
    held: bool,
    refused: impl FnOnce(*mut ngx_http_request_t, Box<T>) -> Option<ngx_int_t> + 'static,
    not_posted: impl FnOnce(*mut ngx_http_request_t, Box<T>) -> Option<ngx_int_t> + 'static,
) -> Option<ngx_int_t> {
    let (location, bounds) = (Arc::as_ptr(engine) as usize, (engine.lookups.limit, engine.lookups.queue));
    take_turn(
        r,
        location,
        bounds,
        held,
        Box::new(move |r, go| match go {
            Go::Run { held } => {
                let turned = Box::new(Turned { task, location });
                let posted = match pool {
                    Some(p) => offload::post(p, r, turned, held),
                    None => Err(turned),
                };
                match posted {
                    Ok(()) => None,
                    Err(t) => {
                        release_turn(location, Freed::Refused);
                        not_posted(r, t.task)
                    }
                }
            }
            Go::Refused => refused(r, task),
        }),
    )
}

/// A task of the JSON API that waits on I/O (its account lookup): refused, or not posted, it
/// completes without running (its answer: a temporary failure). As [`post_in_turn`].
pub fn post_lookup<T: offload::Task + 'static>(
    r: *mut ngx_http_request_t,
    engine: &Arc<Engine>,
    pool: PoolRef,
    task: Box<T>,
) -> Option<ngx_int_t> {
    let unrun = |r, t: Box<T>| offload::Task::complete(t, r);
    post_in_turn(r, engine, Some(pool), task, false, unrun, unrun)
}

/// A task that holds its location's turn while it is out; given back when it completes.
struct Turned<T> {
    task: Box<T>,
    location: usize,
}

impl<T: offload::Task> offload::Task for Turned<T> {
    fn run(&mut self) {
        self.task.run();
    }

    fn complete(self: Box<Self>, r: *mut ngx_http_request_t) -> Option<ngx_int_t> {
        release_turn(self.location, Freed::Done);
        self.task.complete(r)
    }
}

/// Sends a job on its way: a lookup straight to the pool, a costly verification through the
/// scheduler (run, held, or refused). `Some`: the status to finalize with now (the job did not
/// go, its answer is made); `None`: the request is held (counted once: `held` says whether it
/// is already) and will be finalized when its job completes.
fn dispatch(r: *mut ngx_http_request_t, mut task: Box<OffloadJob>, held: bool) -> Option<ngx_int_t> {
    let engine = task.engine.clone();
    if task.job.as_ref().is_some_and(|j| j.waits()) {
        let pool = task.pool;
        let refused = move |r, mut task: Box<OffloadJob>| {
            let job = task.job.take()?;
            let d = engine.abandon(job, true);
            Some(task.finish(r, d))
        };
        return post_in_turn(r, &task.engine.clone(), pool, task, held, refused, |r, t| Some(give_up(r, *t)));
    }
    let costly = task.job.as_ref().and_then(|j| j.costly());
    let Some(key) = costly else { return post(r, task, held) };
    let (limit, queue) = (engine.concurrency.limit, engine.concurrency.queue);
    task.place = Some(key);
    match SCHED.with(|s| s.borrow_mut().admit(key, Held { r, task }, limit, queue)) {
        Admit::Run(h) => post(h.r, h.task, held),
        Admit::Held => {
            if !held {
                offload::hold(r);
            }
            None
        }
        Admit::Refused(h) => {
            let mut task = *h.task;
            let job = task.job.take()?;
            let d = engine.abandon(job, true);
            Some(task.finish(r, d))
        }
    }
}

/// Posts to the pool; if it cannot be posted, the place it held is given back and the answer
/// is a temporary failure (never OK).
fn post(r: *mut ngx_http_request_t, task: Box<OffloadJob>, held: bool) -> Option<ngx_int_t> {
    let Some(pool) = task.pool else { return Some(give_up(r, *task)) };
    match offload::post(pool, r, task, held) {
        Ok(()) => None,
        Err(task) => Some(give_up(r, *task)),
    }
}

/// The answer to a job that could not be posted: a temporary failure; the place it held (if
/// any) comes back as refused.
fn give_up(r: *mut ngx_http_request_t, mut task: OffloadJob) -> ngx_int_t {
    if let Some(key) = task.place.take() {
        release(key, Freed::Refused);
    }
    let Some(job) = task.job.take() else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
    let d = task.engine.abandon(job, false);
    task.finish(r, d)
}

/// A costly job's place comes back (`how`: its job is over, or the pool refused it): the
/// queued ones get their turns and the requests that waited for its verdict read it (from the
/// cache) or are scheduled again, handed out by [`sched::drain`]'s loop (one on the stack at a
/// time: a refused hand-off, which comes back here, is handed on by the loop under way).
fn release(key: Option<CacheKey>, how: Freed) {
    SCHED.with(|s| s.borrow_mut().free(key, how));
    SCHED.with(|s| sched::drain(|| s.try_borrow_mut().ok(), hand_costly));
}

/// Hands a costly job's turn out (see [`release`]).
fn hand_costly(turn: Turn<Held>) {
    match turn {
        Turn::Run(h) => {
            let r = h.r;
            hand_off(r, || post(r, h.task, true));
        }
        Turn::Retry(mut f) => {
            let Some(job) = f.task.job.take() else { return };
            f.task.place = None;
            let r = f.r;
            hand_off(r, || match f.task.engine.retry(job) {
                Start::Done(d) => Some(f.task.finish(r, d)),
                Start::Offload(job) => {
                    f.task.job = Some(job);
                    dispatch(r, f.task, true)
                }
            });
        }
    }
}

/// A job that waited on I/O gives its location's turn back (`how`, as [`release`]): the next
/// ones waiting get it.
fn release_turn(location: usize, how: Freed) {
    LOOKUPS.with(|l| {
        if let Some(s) = l.borrow_mut().get_mut(&location) {
            s.free(None, how);
        }
    });
    LOOKUPS.with(|l| {
        let lend = || RefMut::filter_map(l.try_borrow_mut().ok()?, |m| m.get_mut(&location)).ok();
        sched::drain(lend, |turn| match turn {
            Turn::Run(w) => {
                let r = w.r;
                hand_off(r, || (w.go)(r, Go::Run { held: true }));
            }
            // not reached: lookups are admitted without a key, so nothing follows them
            Turn::Retry(w) => {
                let r = w.r;
                hand_off(r, || (w.go)(r, Go::Refused));
            }
        })
    });
}

/// Hands held request `r` its turn (`go`, as [`dispatch`]: `Some` finalizes it now), from
/// [`sched::drain`]'s loop (a job completed, or a post was refused). Each hand-off is guarded
/// on its own: a panic in one (its answer made without its job, say) is caught here, not by the
/// completing request's guard (nor by the loop's), so
/// `r` is finalized (answered as any caught panic, [`after_panic`]) instead of held for ever (count + 1, no
/// timer: its connection leaked), and the requests after it still get their turn. `go`
/// cannot have handed `r` on when it panics: posting it or queueing it is the last thing it
/// does.
fn hand_off(r: *mut ngx_http_request_t, go: impl FnOnce() -> Option<ngx_int_t>) {
    if let Some(rc) = guard_request(r, go, Some) {
        offload::finalize(r, rc);
    }
}

impl offload::Task for OffloadJob {
    fn run(&mut self) {
        if let Some(job) = self.job.as_mut() {
            job.run(&self.engine);
        }
    }

    fn complete(mut self: Box<Self>, r: *mut ngx_http_request_t) -> Option<ngx_int_t> {
        if let Some(key) = self.place.take() {
            release(key, Freed::Done);
        }
        let Some(job) = self.job.take() else { return Some(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
        match self.engine.complete(job) {
            Start::Done(d) => Some(self.finish(r, d)),
            // the lookup left a costly verification: scheduled like any other
            Start::Offload(job) => {
                self.job = Some(job);
                dispatch(r, self, true)
            }
        }
    }
}

/// Logs the decision's lines and sends its reply: status 200 with the Auth-* headers and no
/// body, or an HTTP error status.
pub fn send(r: *mut ngx_http_request_t, d: &Decision) -> ngx_int_t {
    // SAFETY: `r` is live (content handler, or offload completion holding a reference).
    let req = unsafe { Request::from_ngx_http_request(r) };
    log_decision(req, d);
    let response = match &d.reply {
        Reply::Status(s) => return ngx_int_t::from(i16::try_from(*s).unwrap_or(500)),
        Reply::Answer(a) => a,
    };
    // straight into headers_out (copied into the request pool), no intermediate list
    if response.each_header(|k, v| util::push_header_out(r, k, v)).is_none() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    req.set_status(ngx::http::HTTPStatus::OK);
    req.set_content_length_n(0);
    mark_answered(req);
    // SAFETY: `r` is the live request; a header-only answer, as nginx's own handlers send (ngx's
    // Request reads header_only but cannot set it). err_status: reached by an `error_page`
    // without `=` (another location's 502 sent to this one), nginx keeps that status there and
    // ngx_http_send_header would put it back over this 200 (the decision's headers then went
    // out as a 502, which the status filter took for a failure of this location: two decisions
    // in one answer). nginx reads it only there, in $status and in the access log, all of
    // which must say what is sent; `error_page ... =` clears it the same way
    // (ngx_http_send_error_page). The error_page flag stays set: no second redirect.
    unsafe {
        (*r).set_header_only(1);
        (*r).err_status = 0;
    }
    req.send_header().0
}

/// This module's per-request context: only its address is used, as the mark of a request the
/// module answered with a decision ([`mark_answered`]).
static ANSWERED: u8 = 0;

/// Marks `req` as answered with a decision: the status filter adds none of its own to it.
/// (nginx clears the modules' contexts at an internal redirect: a mark is never carried from
/// one location's handling to another's, and none comes after an answer.)
fn mark_answered(req: &Request) {
    req.set_module_ctx(std::ptr::addr_of!(ANSWERED) as *mut std::ffi::c_void, Module::module());
}

/// Whether the module answered `req` with a decision ([`mark_answered`]).
pub fn answered(req: &Request) -> bool {
    req.get_module_ctx::<u8>(Module::module()).is_some()
}

/// The decision's log lines (and its debug trace) in the request's log.
pub fn log_decision(req: &Request, d: &Decision) {
    for line in &d.trace {
        ngx_log_debug_http!(req, "mail_auth: {line}");
    }
    for (level, text) in &d.lines {
        ngx_log_error!(util::ngx_level(*level) as ngx_uint_t, req.log(), "{text}");
    }
}
