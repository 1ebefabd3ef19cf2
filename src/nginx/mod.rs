//! The FFI layer: everything that touches nginx lives below `src/nginx/`.
//!
//! - directives and the location configuration (`conf.rs`)
//! - the content handler answering auth_http (`handler.rs`)
//! - the `mail_auth_status` Prometheus endpoint (`status.rs`)
//! - the Basic-credential bridge: `$mail_auth_basic`, `mail_auth_basic_header`, and the header
//!   filter turning an access-phase 401/403 into an auth_http failure (`bridge.rs`)
//!
//! Every `extern "C"` entry point catches panics (`guard`) so none can unwind into nginx.

pub mod bridge;
pub mod conf;
pub mod handler;
pub mod json;
pub mod offload;
pub mod status;
pub mod util;
pub mod zone;

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::core::Status;
// The signal functions come from nginx-sys's bindings of the system headers nginx includes.
use ngx::ffi::{
    ngx_conf_t, ngx_http_module_t, ngx_int_t, ngx_module_t, pthread_sigmask, sigdelset, sigfillset, sigset_t,
    NGX_HTTP_MODULE, NGX_LOG_ALERT, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIG_BLOCK,
};
use ngx::http::HttpModule;

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only mutated by nginx while loading configuration
        // (single-threaded); taking a shared reference afterwards is what nginx itself does.
        unsafe { &*std::ptr::addr_of!(ngx_http_mail_auth_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        guard(Status::NGX_ERROR.into(), || bridge::add_variables(cf))
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        guard(Status::NGX_ERROR.into(), || bridge::install(cf))
    }
}

// SAFETY: `Module::LocationConf` is the type create_loc_conf allocates for this module.
unsafe impl ngx::http::HttpModuleLocationConf for Module {
    type LocationConf = conf::LocConf;
}

static NGX_HTTP_MAIL_AUTH_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

#[cfg(feature = "export-modules")]
ngx::ngx_modules!(ngx_http_mail_auth_module);

#[used]
#[allow(non_upper_case_globals)]
#[cfg_attr(not(feature = "export-modules"), no_mangle)]
pub static mut ngx_http_mail_auth_module: ngx_module_t = ngx_module_t {
    ctx: std::ptr::addr_of!(NGX_HTTP_MAIL_AUTH_MODULE_CTX) as _,
    // SAFETY: only the address is taken; nginx reads the command table during configuration.
    commands: unsafe { std::ptr::addr_of_mut!(conf::COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};

/// A worker starts. Its stores' watcher threads (started at its first lookup) run
/// `block_signals` first.
unsafe extern "C" fn init_process(_cycle: *mut ngx::ffi::ngx_cycle_t) -> ngx_int_t {
    guard(Status::NGX_OK.into(), || {
        crate::store::set_thread_start_hook(block_signals);
        // this worker's pid, known once: a lookup then needs no getpid() to see it is here
        crate::store::process_started();
        Status::NGX_OK.into()
    })
}

/// Blocks the signals meant for nginx in the calling thread, as nginx does in its own thread-pool
/// threads (ngx_thread_pool_cycle): all but those a fault raises synchronously (SIGILL, SIGFPE,
/// SIGSEGV, SIGBUS; Rust's stack-overflow guard needs SIGSEGV). nginx's handlers then always
/// run on the event loop's thread.
fn block_signals() {
    // SAFETY: sigset_t is plain data that sigfillset initialises; pthread_sigmask changes only the
    // calling thread's mask. It cannot fail with these arguments (EINVAL is for a bad `how`).
    unsafe {
        let mut set: sigset_t = std::mem::zeroed();
        sigfillset(&mut set);
        for sig in [SIGILL, SIGFPE, SIGSEGV, SIGBUS] {
            sigdelset(&mut set, sig as c_int);
        }
        pthread_sigmask(SIG_BLOCK as c_int, &set, std::ptr::null_mut());
    }
}

/// A worker exits: free what statics hold, before nginx unloads the module (valgrind would
/// report it as lost, since the statics' memory goes away with the module).
unsafe extern "C" fn exit_process(_cycle: *mut ngx::ffi::ngx_cycle_t) {
    guard((), || crate::store::stop_watchers(std::time::Duration::from_secs(2)))
}

/// Runs `f`, turning a panic into `on_panic` plus an alert in the cycle log: a bug in this module
/// must fail the request, never unwind into C.
/// Hand-written: ngx's handler macros and default callbacks catch nothing (a panic leaving an
/// `extern "C"` fn aborts the worker).
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let what = e
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            ngx::ngx_log_error!(
                NGX_LOG_ALERT,
                ngx::log::ngx_cycle_log().as_ptr(),
                "mail_auth: internal error (panic caught): {what}"
            );
            on_panic
        }
    }
}

/// Directive setters return these.
pub fn conf_ok() -> *mut c_char {
    ngx::core::NGX_CONF_OK
}

pub fn conf_err(cf: *mut ngx_conf_t, msg: &str) -> *mut c_char {
    ngx::ngx_conf_log_error!(ngx::ffi::NGX_LOG_EMERG, cf, "{msg}");
    ngx::core::NGX_CONF_ERROR
}
