//! The `mail_auth` content handler: hands the request's headers to the engine and sends what
//! it decides. A job the engine hands back runs on the thread pool (`offload`), then the
//! engine completes it on the event loop.

use std::sync::Arc;

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, ngx_uint_t, NGX_DONE, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED,
    NGX_LOG_INFO,
};
use ngx::http::{HttpModuleLocationConf, Method, Request};
use ngx::{ngx_log_debug_http, ngx_log_error};

use super::{guard, offload, util, Module};
use crate::engine::{Decision, Engine, Job, Reply, Start};
use crate::protocol::HeaderView;

/// nginx content handler for `mail_auth;` locations.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || handle(r))
}

fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live, non-null request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let Some(lc) = Module::location_conf(req) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let (Some(engine), pool) = (lc.engine.clone(), lc.pool) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    if !matches!(req.method(), Method::GET | Method::HEAD) {
        ngx_log_error!(
            NGX_LOG_INFO,
            req.log(),
            "mail_auth: refused a request that is not GET/HEAD (not an auth_http request)"
        );
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    let rc = req.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }

    let ctx = util::log_ctx(req.log());
    let headers = util::headers_in(req);
    let view = HeaderView::new(headers.iter().copied());
    match engine.start(&view, ctx) {
        Start::Done(d) => send(r, &d),
        Start::Offload(job) => {
            let task = Box::new(OffloadJob { engine, job: Some(job) });
            let posted = match pool {
                Some(pool) => offload::post(pool, r, task),
                None => Err(task as Box<dyn offload::Task>),
            };
            match posted {
                Ok(()) => NGX_DONE as ngx_int_t,
                // not posted: the engine answers a temporary failure (never OK)
                Err(task) => task.complete(r),
            }
        }
    }
}

/// An engine job travelling to the thread pool and back.
struct OffloadJob {
    engine: Arc<Engine>,
    job: Option<Box<Job>>,
}

impl offload::Task for OffloadJob {
    fn run(&mut self) {
        if let Some(job) = self.job.as_mut() {
            job.run(&self.engine);
        }
    }

    fn complete(mut self: Box<Self>, r: *mut ngx_http_request_t) -> ngx_int_t {
        let Some(job) = self.job.take() else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
        let d = self.engine.complete(job);
        send(r, &d)
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
    // SAFETY: `r` is the live request; a header-only answer, as nginx's own handlers send (ngx's
    // Request reads header_only but cannot set it).
    unsafe { (*r).set_header_only(1) };
    req.send_header().0
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
