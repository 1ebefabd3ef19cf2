//! `mail_auth_status;`: the shared counters in Prometheus text format.

use ngx::core::{Buffer, Status};
use ngx::ffi::{
    ngx_chain_t, ngx_http_request_t, ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};
use ngx::http::{HTTPStatus, HttpModuleLocationConf, Method, Request};

use super::{guard, Module};
use crate::cache::Cache;
use crate::limiter::Limiter;
use crate::metrics::{Gauges, Metrics};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// nginx content handler for `mail_auth_status;` locations.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || handle(r))
}

fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live, non-null request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    if !matches!(req.method(), Method::GET | Method::HEAD) {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    let rc = req.discard_request_body();
    if rc != Status::NGX_OK {
        return rc.0;
    }
    let Some(lc) = Module::location_conf(req) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(metrics) = lc.stats().and_then(|z| z.words()).and_then(Metrics::new) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // The cache / limiter zones this location inherits (set at http or server level).
    let mut g = Gauges::default();
    if let Some(c) = lc.directives.cache.and_then(|c| c.zone.words()).and_then(Cache::new) {
        g.cache_evictions = Some(c.stats().evictions);
    }
    if let Some(l) = lc.directives.limit.and_then(|l| Limiter::new(l.zone.words()?, l.cfg)) {
        let s = l.stats();
        g.limiter_refused_ip = Some(s.refused_ip);
        g.limiter_refused_user = Some(s.refused_user);
        g.limiter_evictions = Some(s.evictions);
        g.limiter_bans_evicted = Some(s.bans_evicted);
    }
    let body = metrics.render(&g);

    let pool = req.pool();
    let Some(mut buf) = pool.create_buffer_from_str(&body) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    buf.set_last_buf(req.is_main());
    buf.set_last_in_chain(true);
    // SAFETY: the request pool is live for the request's lifetime.
    let Some(content_type) = (unsafe { ngx::ffi::ngx_str_t::from_bytes(pool.as_ptr(), CONTENT_TYPE.as_bytes()) })
    else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    req.set_status(HTTPStatus::OK);
    req.set_content_length_n(body.len());
    // SAFETY: `r` is the live request; the content type string lives in its pool, as nginx's
    // own handlers set it (ngx's Request has no content-type setter).
    unsafe {
        (*r).headers_out.content_type = content_type;
        (*r).headers_out.content_type_len = content_type.len;
    }
    let rc = req.send_header();
    if rc == Status::NGX_ERROR || rc.0 > NGX_OK as ngx_int_t || req.header_only() {
        return rc.0;
    }
    let mut out = ngx_chain_t { buf: buf.as_ngx_buf_mut(), next: std::ptr::null_mut() };
    req.output_filter(&mut out).0
}
