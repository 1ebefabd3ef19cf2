//! Running costly work (bcrypt, argon2, high-round sha-crypt; SQLite lookups) on an nginx thread
//! pool, so one login never stalls the worker's event loop. The request waits (count + 1,
//! NGX_DONE) and resumes on the event loop when the task is done.

// Without threads only the inline fallbacks below are compiled.
#![cfg_attr(not(ngx_feature = "threads"), allow(unused_imports, dead_code))]

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_conf_t, ngx_event_t, ngx_http_finalize_request, ngx_http_request_t,
    ngx_http_run_posted_requests, ngx_int_t, ngx_log_t, ngx_pool_t, ngx_str_t, ngx_thread_task_t,
    NGX_OK,
};

/// Opaque nginx `ngx_thread_pool_t`.
#[repr(C)]
pub struct ThreadPool {
    _private: [u8; 0],
}

// nginx's thread-pool API (src/core/ngx_thread_pool.h) is not in nginx-sys's bindings; these are
// its exact C prototypes, exported by every nginx built `--with-threads`. Without threads they do
// not exist, and referencing them would keep the module from loading at all.
#[cfg(ngx_feature = "threads")]
extern "C" {
    fn ngx_thread_pool_add(cf: *mut ngx_conf_t, name: *mut ngx_str_t) -> *mut ThreadPool;
    fn ngx_thread_task_alloc(pool: *mut ngx_pool_t, size: usize) -> *mut ngx_thread_task_t;
    fn ngx_thread_task_post(tp: *mut ThreadPool, task: *mut ngx_thread_task_t) -> ngx_int_t;
}

/// A thread pool reference that can live in the (immutable after config) location conf.
#[derive(Clone, Copy)]
pub struct PoolRef(*mut ThreadPool);

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
pub fn post(_pool: PoolRef, _r: *mut ngx_http_request_t, job: Box<dyn Job>) -> Result<(), Box<dyn Job>> {
    Err(job)
}

/// Registers (or finds) the named thread pool at configuration time.
#[cfg(ngx_feature = "threads")]
pub fn pool_add(cf: *mut ngx_conf_t, name: &str) -> Option<PoolRef> {
    let s = super::util::pool_str(
        // SAFETY: cf is live during configuration; its pool outlives the cycle's config.
        unsafe { (*cf).pool },
        name.as_bytes(),
    )?;
    let mut s = s;
    // SAFETY: cf is live; nginx copies nothing but keeps `name` (allocated from cf->pool above).
    let tp = unsafe { ngx_thread_pool_add(cf, &mut s) };
    if tp.is_null() {
        None
    } else {
        Some(PoolRef(tp))
    }
}

/// Work to do off the event loop, then to finish on it.
pub trait Job: Send + 'static {
    /// Runs on a pool thread. Must not touch nginx.
    fn run(&mut self);
    /// Runs back on the event loop; returns the status to finalize the request with.
    fn complete(self: Box<Self>, r: *mut ngx_http_request_t) -> ngx_int_t;
}

#[repr(C)]
struct Slot {
    job: *mut Box<dyn Job>,
    r: *mut ngx_http_request_t,
}

#[cfg(ngx_feature = "threads")]
/// Posts `job` for request `r`. On success the request is held (count + 1) and the caller must
/// return NGX_DONE from its handler. On failure (queue overflow, no memory) the job is handed
/// back so the caller can answer without it.
pub fn post(
    pool: PoolRef,
    r: *mut ngx_http_request_t,
    job: Box<dyn Job>,
) -> Result<(), Box<dyn Job>> {
    // SAFETY: `r` is the live request of the running content handler; the task is allocated
    // from its pool, which stays alive while we hold a reference (count + 1).
    unsafe {
        let task = ngx_thread_task_alloc((*r).pool, std::mem::size_of::<Slot>());
        if task.is_null() {
            return Err(job);
        }
        let raw = Box::into_raw(Box::new(job));
        let slot = (*task).ctx as *mut Slot;
        slot.write(Slot { job: raw, r });
        (*task).handler = Some(run_in_thread);
        (*task).event.data = task as *mut c_void;
        (*task).event.handler = Some(done_on_event_loop);
        if ngx_thread_task_post(pool.0, task) != NGX_OK as ngx_int_t {
            return Err(*Box::from_raw(raw));
        }
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
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
        let job = Box::from_raw(slot.job);
        slot.job = std::ptr::null_mut();
        (slot.r, *job)
    };
    let rc = super::guard(ngx::ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || job.complete(r));
    // SAFETY: `r` is still alive (we hold a reference); finalizing drops that reference.
    unsafe {
        let c = (*r).connection;
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}
