//! Running costly work (bcrypt, argon2, high-round sha-crypt; SQLite lookups) on an nginx thread
//! pool, so one login never stalls the worker's event loop. The request waits (count + 1,
//! NGX_DONE) and resumes on the event loop when the task is done.
//! Hand-written: ngx 0.5 has no thread-pool task API (its async executor runs on the event loop).

// Without threads only the inline fallbacks below are compiled.
#![cfg_attr(not(ngx_feature = "threads"), allow(unused_imports, dead_code))]

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_conf_t, ngx_event_t, ngx_http_finalize_request, ngx_http_request_t, ngx_http_run_posted_requests, ngx_int_t,
    ngx_log_t, ngx_str_t, NGX_OK,
};
// nginx-sys generates the thread-pool API from the headers of an nginx built --with-threads;
// it is only referenced there (an nginx without threads has no such symbols, and a reference
// would keep the module from loading).
#[cfg(ngx_feature = "threads")]
use ngx::ffi::{
    ngx_thread_pool_add, ngx_thread_pool_t, ngx_thread_task_alloc, ngx_thread_task_post, ngx_thread_task_t,
};

#[cfg(not(ngx_feature = "threads"))]
#[allow(non_camel_case_types)]
type ngx_thread_pool_t = c_void;

/// A thread pool reference that can live in the (immutable after config) location conf.
#[derive(Clone, Copy)]
pub struct PoolRef(*mut ngx_thread_pool_t);

// SAFETY: the pointer is only dereferenced by nginx (ngx_thread_task_post) on the worker's event
// loop thread; the struct it points to lives in the cycle pool for the cycle's lifetime.
unsafe impl Send for PoolRef {}
// SAFETY: see above; we never read or write through it from Rust.
unsafe impl Sync for PoolRef {}

/// Without threads there is no pool: everything runs inline (the directive refuses other values).
#[cfg(not(ngx_feature = "threads"))]
pub fn pool_add(_cf: *mut ngx_conf_t, _name: &str) -> Option<PoolRef> {
    None
}

#[cfg(not(ngx_feature = "threads"))]
pub fn post<T: Task>(_pool: PoolRef, _r: *mut ngx_http_request_t, job: Box<T>, _held: bool) -> Result<(), Box<T>> {
    Err(job)
}

/// Registers (or finds) the named thread pool at configuration time.
#[cfg(ngx_feature = "threads")]
pub fn pool_add(cf: *mut ngx_conf_t, name: &str) -> Option<PoolRef> {
    // SAFETY: cf is live during configuration; its pool outlives the cycle's config.
    let mut s = unsafe { ngx_str_t::from_bytes((*cf).pool, name.as_bytes()) }?;
    // SAFETY: cf is live; nginx copies nothing but keeps `name` (allocated from cf->pool above).
    let tp = unsafe { ngx_thread_pool_add(cf, &mut s) };
    if tp.is_null() {
        None
    } else {
        Some(PoolRef(tp))
    }
}

/// Work to do off the event loop, then to finish on it.
pub trait Task: Send + 'static {
    /// Runs on a pool thread. Must not touch nginx.
    fn run(&mut self);
    /// Runs back on the event loop; returns the status to finalize the request with, or
    /// `None` when the request was handed on (posted again, or held by the scheduler): it
    /// stays held and is finalized later.
    fn complete(self: Box<Self>, r: *mut ngx_http_request_t) -> Option<ngx_int_t>;
}

#[repr(C)]
struct Slot {
    job: *mut Box<dyn Task>,
    r: *mut ngx_http_request_t,
    /// A timer armed while the task is out: a worker shutting down gracefully waits for its
    /// timers, so it does not exit (leaving the request open) while a verification runs.
    pending: ngx_event_t,
}

/// How often the pending-task timer re-arms itself (it only keeps the worker alive).
#[cfg(ngx_feature = "threads")]
const PENDING_TIMER_MS: ngx::ffi::ngx_msec_t = 60_000;

#[cfg(ngx_feature = "threads")]
unsafe extern "C" fn pending_timer(ev: *mut ngx_event_t) {
    // SAFETY: `ev` is the Slot's own event, alive until the task completes (which deletes it).
    unsafe { ngx::ffi::ngx_add_timer(ev, PENDING_TIMER_MS) };
}

#[cfg(ngx_feature = "threads")]
/// Posts `job` for request `r`. On success the request is held (count + 1, unless `held`: the
/// caller holds it already) and a content handler must return NGX_DONE. On failure (queue
/// overflow, no memory) the job is handed back so the caller can answer without it.
pub fn post<T: Task>(pool: PoolRef, r: *mut ngx_http_request_t, job: Box<T>, held: bool) -> Result<(), Box<T>> {
    // SAFETY: `r` is the live request of the running content handler; the task is allocated
    // from its pool, which stays alive while we hold a reference (count + 1).
    unsafe {
        let task = ngx_thread_task_alloc((*r).pool, std::mem::size_of::<Slot>());
        if task.is_null() {
            return Err(job);
        }
        let raw: *mut Box<dyn Task> = Box::into_raw(Box::new(job as Box<dyn Task>));
        let slot = (*task).ctx as *mut Slot;
        // the task context is zeroed by ngx_thread_task_alloc: a zeroed event is a valid one
        (*slot).job = raw;
        (*slot).r = r;
        (*task).handler = Some(run_in_thread);
        (*task).event.data = task as *mut c_void;
        (*task).event.handler = Some(done_on_event_loop);
        if ngx_thread_task_post(pool.0, task) != NGX_OK as ngx_int_t {
            // not posted: no other thread saw it. The inner box was made from a Box<T> just
            // above, so its data pointer is that T's allocation.
            let inner: Box<dyn Task> = *Box::from_raw(raw);
            return Err(Box::from_raw(Box::into_raw(inner) as *mut T));
        }
        if !held {
            hold(r);
        }
        let ev = std::ptr::addr_of_mut!((*slot).pending);
        (*ev).handler = Some(pending_timer);
        (*ev).data = task as *mut c_void;
        (*ev).log = (*(*r).connection).log;
        ngx::ffi::ngx_add_timer(ev, PENDING_TIMER_MS);
    }
    Ok(())
}

#[cfg(ngx_feature = "threads")]
/// Pool thread: runs the job. A panic is caught here; the job then completes with whatever state
/// it has (the handler answers a temporary failure: fail closed).
unsafe extern "C" fn run_in_thread(data: *mut c_void, _log: *mut ngx_log_t) {
    // SAFETY: `data` is the task ctx we filled in `post`; only this thread touches the job until
    // nginx posts the completion event (nginx's queue mutex orders the accesses).
    let slot = unsafe { &mut *(data as *mut Slot) };
    let job = unsafe { &mut *slot.job };
    let _ = catch_unwind(AssertUnwindSafe(|| job.run()));
}

#[cfg(ngx_feature = "threads")]
/// Event loop: finish the job, answer, release the request.
unsafe extern "C" fn done_on_event_loop(ev: *mut ngx_event_t) {
    // SAFETY: ev->data is the task we allocated in `post`; its ctx is our Slot; the job pointer
    // came from Box::into_raw and is taken back exactly once, here.
    let (r, job) = unsafe {
        let task = (*ev).data as *mut ngx_thread_task_t;
        let slot = &mut *((*task).ctx as *mut Slot);
        if slot.pending.timer_set() != 0 {
            ngx::ffi::ngx_del_timer(&mut slot.pending);
        }
        let job = Box::from_raw(slot.job);
        slot.job = std::ptr::null_mut();
        (slot.r, *job)
    };
    // a caught panic: answered as the content handler's (a mail_auth location's temporary failure)
    if let Some(rc) = super::handler::guard_request(r, || job.complete(r), Some) {
        finalize(r, rc);
    }
}

/// Holds request `r` (count + 1, blocked + 1) while it waits off its content handler; [`finalize`]
/// lets go.
pub fn hold(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is a live request (its content handler runs, or it is already held).
    unsafe {
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
        // as nginx's own thread tasks do (copy filter, upstream): a request terminated while it
        // is held (an error on its connection, e.g. a bad chunk of a body being discarded) is
        // then only marked, and closed by our `finalize`, not freed under the job or the queue
        (*main).set_blocked((*main).blocked() + 1);
    }
}

/// Finalizes a held request with `rc` (dropping the reference [`hold`] took) and runs the
/// requests posted on its connection: for a request answered outside its content handler.
pub fn finalize(r: *mut ngx_http_request_t, rc: ngx_int_t) {
    // SAFETY: `r` is alive: it is held (count + 1, and blocked: nginx cannot terminate it under
    // us) until this call drops that reference.
    unsafe {
        let c = (*r).connection;
        let main = (*r).main;
        (*main).set_blocked((*main).blocked().saturating_sub(1));
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}
