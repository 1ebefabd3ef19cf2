//! `mail_auth_status;`: the shared counters in Prometheus text format.
//! `mail_auth_limit_bans;`: the limiter's live bans (GET: JSON listing; DELETE or POST with
//! `?client=ADDR`, `?user=NAME` or `?key=HEX`: lifted in the shared zone, for every worker).

use ngx::core::{Buffer, Status};
use ngx::ffi::{
    ngx_chain_t, ngx_http_request_t, ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};
use ngx::http::{HTTPStatus, HttpModuleLocationConf, Method, Request};

use super::{guard, Module};
use crate::cache::Cache;
use crate::limiter::{self, LiftTarget, Limiter};
use crate::metrics::{Gauges, Metrics};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON_TYPE: &str = "application/json";
/// Bans listed at most (the answer stays small; `complete` says when there were more).
const MAX_LISTED: usize = 10_000;

/// nginx content handler for `mail_auth_limit_bans;` locations.
pub unsafe extern "C" fn bans_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || handle_bans(r))
}

fn handle_bans(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live, non-null request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    if super::util::subrequest(
        req,
        ngx::ffi::NGX_LOG_WARN as ngx::ffi::ngx_uint_t,
        "mail_auth_limit_bans",
        format_args!(""),
    ) {
        return ngx::ffi::NGX_HTTP_FORBIDDEN as ngx_int_t;
    }
    let lift = match req.method() {
        Method::GET | Method::HEAD => false,
        Method::DELETE | Method::POST => true,
        _ => return NGX_HTTP_NOT_ALLOWED as ngx_int_t,
    };
    // a body (POST from a form, say) is not read: everything is in the query
    let rc = req.discard_request_body();
    if rc != Status::NGX_OK {
        return rc.0;
    }
    let Some(lc) = Module::location_conf(req) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(l) = lc.directives.limit.as_ref().and_then(|l| Limiter::new(l.zone.words()?, l.cfg)) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // a page that rebound its own name to this address reads the listing as same-origin
    if super::util::foreign_host(
        r,
        req,
        &lc.host_names,
        ngx::ffi::NGX_LOG_WARN as ngx::ffi::ngx_uint_t,
        "mail_auth_limit_bans",
    ) {
        let body = format!(
            "{}\n",
            serde_json::json!({ "error": "the Host is neither a name of this server's server_name nor an address" })
        );
        return send(r, req, HTTPStatus::FORBIDDEN, JSON_TYPE, &body);
    }
    if lift {
        if let Some(why) = limiter::from_browser(super::util::headers_in(req)) {
            // a page in an administrator's browser (allowed by allow/deny like the
            // administrator) must not lift bans for whoever sent it there
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_WARN,
                req.log(),
                "mail_auth_limit_bans: refused a lift sent by a web browser ({why}); nothing lifted"
            );
            let body = format!(
                "{}\n",
                serde_json::json!({ "error": "lifts are not taken from web browsers (an Origin or Sec-Fetch-Site header)" })
            );
            return send(r, req, HTTPStatus::FORBIDDEN, JSON_TYPE, &body);
        }
    }
    let now = crate::engine::unix_now();
    let (status, body) = if lift {
        // SAFETY: `r` is the live request; args is an ngx_str_t into its header buffer.
        let query = unsafe { (*r).args.as_bytes().to_vec() };
        match limiter::parse_lift_query(&query) {
            Err(e) => (HTTPStatus::BAD_REQUEST, format!("{}\n", serde_json::json!({ "error": e }))),
            Ok(t) => {
                // the fleet's counters too (queued: never waited for here)
                let shared = match super::conf::fleet_of(&lc.directives) {
                    Ok(Some(f)) if f.lift(&t) => ", and in the shared store",
                    _ => "",
                };
                let (what, lifted) = match &t {
                    LiftTarget::Client(ip) => (format!("client {}", l.ip_label(*ip)), l.lift_client(*ip, now)),
                    LiftTarget::User(u) => {
                        (format!("user \"{}\"", crate::protocol::printable(u.as_bytes(), 128)), l.lift_user(u, now))
                    }
                    LiftTarget::Key(k) => (format!("key {k:016x}"), l.lift_key(*k, now)),
                };
                ngx::ngx_log_error!(
                    ngx::ffi::NGX_LOG_NOTICE,
                    req.log(),
                    "mail_auth_limit_bans: {what}: {lifted} ban(s) lifted, counters cleared{shared}"
                );
                let status = if lifted > 0 { HTTPStatus::OK } else { HTTPStatus::NOT_FOUND };
                (status, format!("{}\n", serde_json::json!({ "lifted": lifted })))
            }
        }
    } else {
        let bans = l.bans(now, MAX_LISTED + 1);
        let complete = bans.len() <= MAX_LISTED;
        (HTTPStatus::OK, limiter::bans_json(&bans[..bans.len().min(MAX_LISTED)], complete))
    };
    send(r, req, status, JSON_TYPE, &body)
}

/// nginx content handler for `mail_auth_status;` locations.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || handle(r))
}

fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live, non-null request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    // (SSI `include virtual`, `mirror`: the location's allow/deny and auth_basic never ran)
    if super::util::subrequest(
        req,
        ngx::ffi::NGX_LOG_WARN as ngx::ffi::ngx_uint_t,
        "mail_auth_status",
        format_args!(""),
    ) {
        return ngx::ffi::NGX_HTTP_FORBIDDEN as ngx_int_t;
    }
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
    g.fleet = matches!(&lc.directives.limit, Some(l) if l.redis.is_some());
    if let Some(l) = lc.directives.limit.as_ref().and_then(|l| Limiter::new(l.zone.words()?, l.cfg)) {
        let s = l.stats();
        g.limiter_refused_ip = Some(s.refused_ip);
        g.limiter_refused_user = Some(s.refused_user);
        g.limiter_evictions = Some(s.evictions);
        g.limiter_bans_evicted = Some(s.bans_evicted);
    }
    let body = metrics.render(&g);
    send(r, req, HTTPStatus::OK, CONTENT_TYPE, &body)
}

/// Sends `body` as the whole answer.
fn send(
    r: *mut ngx_http_request_t,
    req: &mut Request,
    status: HTTPStatus,
    content_type: &str,
    body: &str,
) -> ngx_int_t {
    let pool = req.pool();
    let Some(mut buf) = pool.create_buffer_from_str(body) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    buf.set_last_buf(req.is_main());
    buf.set_last_in_chain(true);
    // SAFETY: the request pool is live for the request's lifetime.
    let Some(content_type) = (unsafe { ngx::ffi::ngx_str_t::from_bytes(pool.as_ptr(), content_type.as_bytes()) })
    else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    req.set_status(status);
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
