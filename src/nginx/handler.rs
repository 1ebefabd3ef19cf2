//! The `mail_auth` content handler: auth_http request in, Auth-* answer out.

use std::time::Instant;

use ngx::ffi::{
    ngx_http_discard_request_body, ngx_http_request_t, ngx_http_send_header, ngx_int_t,
    ngx_uint_t, NGX_HTTP_BAD_REQUEST, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_DONE, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, Request};

use std::sync::Arc;

use super::conf::Engine;
use super::{guard, offload, util, Module};
use crate::auth::{self, Outcome, Pending, Step, VerifyResult};
use crate::limiter::Verdict;
use crate::protocol::{self, AuthRequest, AuthResponse};
use crate::store::NoticeLevel;

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
    let Some(engine) = lc.engine.as_ref() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let log = req.log();

    // SAFETY: reading the parsed method of the live request.
    let method = unsafe { (*r).method };
    if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t == 0 {
        util::log(log, NGX_LOG_INFO as _, "mail_auth: refused a request that is not GET/HEAD (not an auth_http request)");
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: the request is live; discarding its body is allowed from a content handler.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }

    let started = Instant::now();
    let headers = util::headers_in(req);
    let areq = match protocol::parse_request(headers.iter().copied()) {
        Ok(a) => a,
        Err(e) if !looks_like_auth_http(&headers) => {
            util::log(log, NGX_LOG_ERR as _, &format!("mail_auth: not an auth_http request: {e}"));
            count(engine, None, None, "bad-request", started);
            return NGX_HTTP_BAD_REQUEST as ngx_int_t;
        }
        Err(e) => {
            // An auth_http request with unusable values: a normal failed login for the client.
            let fields = LogFields::from_headers(&headers);
            let outcome = auth::bad_request(&engine.cfg, fields.protocol, &e);
            log_decision(lc.log_level(), log, &fields, &outcome, started);
            count(engine, fields.protocol, fields.method, outcome.result, started);
            return send(r, &outcome);
        }
    };

    let level = lc.log_level();

    // The limiter first: a refused source costs no lookup and no password check.
    if let Some(limiter) = engine.limiter() {
        if let Verdict::Refuse { wait, reason } = limiter.check(areq.client_ip, &areq.user, unix_now()) {
            let outcome = auth::limited(&engine.cfg, &areq, wait, reason);
            return answer(r, level, engine, &areq, outcome, started);
        }
    }

    // SMTP without AUTH: the relay policy, whatever the store (or none in bridge mode).
    if areq.method == protocol::Method::None {
        let outcome = auth::relay(&engine.cfg, &areq);
        return answer(r, level, engine, &areq, outcome, started);
    }

    let Some(store) = engine.store.as_ref() else {
        // Bridge mode: reaching the content phase means auth_basic/auth_request let it through.
        let outcome = auth::accept(&engine.cfg, &areq, "access phase allowed the request");
        return answer(r, level, engine, &areq, outcome, started);
    };

    // A store that may block (SQLite: disk, locks) is asked on the thread pool, as a whole.
    if store.may_block() {
        if let Some(pool) = engine.thread_pool {
            let job = Box::new(DecideJob { engine: engine.clone(), areq, outcome: None, level, started });
            return match offload::post(pool, r, job) {
                Ok(()) => NGX_DONE as ngx_int_t,
                Err(job) => job.complete(r),
            };
        }
    }

    match auth::begin(&engine.cfg, &areq, store.as_ref()) {
        Step::Answer(outcome) => answer(r, level, engine, &areq, outcome, started),
        Step::Verify(pending) => {
            if pending.is_costly() {
                if let Some(pool) = engine.thread_pool {
                    let job = Box::new(VerifyJob { engine: engine.clone(), areq, pending, result: None, level, started, generation: store.generation() });
                    return match offload::post(pool, r, job) {
                        Ok(()) => NGX_DONE as ngx_int_t,
                        Err(job) => job.complete(r),
                    };
                }
            }
            let (result, cached) = verify(engine, &areq, store.generation(), &pending);
            let outcome = finish(engine, &areq, pending, result, cached);
            answer(r, level, engine, &areq, outcome, started)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs the password verification, or takes its verdict from the shared cache (and fills the
/// cache afterwards). Returns the result and whether it came from the cache. Safe on a pool
/// thread: the cache is shared memory accessed through atomics.
fn verify(engine: &Engine, areq: &AuthRequest, generation: u64, pending: &Pending) -> (VerifyResult, bool) {
    let Some((cache, conf)) = engine.cache() else {
        return (run_timed(engine, pending), false);
    };
    let scope = match &engine.store {
        Some(s) => format!("{}|{}", areq.protocol.as_str(), s.describe()),
        None => areq.protocol.as_str().to_string(),
    };
    let key = cache.key(generation, &scope, &areq.user, &areq.pass);
    let now = unix_now();
    let verdict = cache.get(&key, now);
    if let Some(m) = engine.metrics() {
        m.cache(verdict.is_some());
    }
    match verdict {
        Some(true) => (VerifyResult::Match, true),
        Some(false) => (VerifyResult::Mismatch, true),
        None => {
            let result = run_timed(engine, pending);
            match result {
                VerifyResult::Match => cache.put(&key, true, conf.ttl, now),
                VerifyResult::Mismatch => cache.put(&key, false, conf.negative_ttl, now),
                // an unusable stored hash is not a verdict worth remembering
                VerifyResult::Error(_) => {}
            }
            (result, false)
        }
    }
}

fn finish(engine: &Engine, areq: &AuthRequest, pending: Pending, result: VerifyResult, cached: bool) -> Outcome {
    let mut outcome = auth::finish(&engine.cfg, areq, pending, result);
    if cached {
        outcome.reason.push_str(" (cached verdict)");
    }
    outcome
}

/// Tells the limiter how a login ended: successes trust the IP for the user, failed logins
/// count (malformed requests, refusals by the limiter itself and temporary failures do not).
fn record(engine: &Engine, areq: &AuthRequest, outcome: &Outcome) {
    let Some(limiter) = engine.limiter() else { return };
    let now = unix_now();
    match (&outcome.response, outcome.result) {
        (AuthResponse::Ok { .. }, _) => limiter.record_success(areq.client_ip, &areq.user, now),
        // a refused relay recipient is not a failed login
        (AuthResponse::Fail { .. }, "rate-limited" | "bad-request" | "relay-denied") => {}
        (AuthResponse::Fail { .. }, _) => limiter.record_failure(areq.client_ip, &areq.user, &areq.pass, now),
        _ => {}
    }
}

/// Logs the decision (and anything the store wants logged) and sends the answer.
fn answer(
    r: *mut ngx_http_request_t,
    level: ngx_uint_t,
    engine: &Engine,
    areq: &AuthRequest,
    outcome: Outcome,
    started: Instant,
) -> ngx_int_t {
    // SAFETY: `r` is live (content handler or offload completion holding a reference).
    let log = unsafe { (*(*r).connection).log };
    record(engine, areq, &outcome);
    log_store_notices(engine, log);
    let fields = LogFields::of(areq, &outcome);
    log_decision(level, log, &fields, &outcome, started);
    count(engine, fields.protocol, fields.method, outcome.result, started);
    send(r, &outcome)
}

/// Counts an answered request for `mail_auth_status`.
pub fn count(engine: &Engine, proto: Option<protocol::Protocol>, method: Option<protocol::Method>, result: &str, started: Instant) {
    if let Some(m) = engine.metrics() {
        m.request(proto, method, result, micros(started));
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Runs the verification and times it for `mail_auth_status`.
fn run_timed(engine: &Engine, pending: &Pending) -> VerifyResult {
    let t = Instant::now();
    let result = pending.run();
    if let Some(m) = engine.metrics() {
        m.verification(micros(t));
    }
    result
}

/// Costly password verification on the thread pool.
struct VerifyJob {
    engine: Arc<Engine>,
    areq: AuthRequest,
    pending: Pending,
    result: Option<(VerifyResult, bool)>,
    level: ngx_uint_t,
    started: Instant,
    generation: u64,
}

impl offload::Job for VerifyJob {
    fn run(&mut self) {
        self.result = Some(verify(&self.engine, &self.areq, self.generation, &self.pending));
    }
    fn complete(self: Box<Self>, r: *mut ngx_http_request_t) -> ngx_int_t {
        let VerifyJob { engine, areq, pending, result, level, started, .. } = *self;
        let outcome = match result {
            Some((res, cached)) => finish(&engine, &areq, pending, res, cached),
            // Not run (queue overflow) or panicked: never OK.
            None => auth::temporary(&engine.cfg, &areq, "verification did not run (thread pool queue full or task failed)"),
        };
        answer(r, level, &engine, &areq, outcome, started)
    }
}

/// The whole decision (lookup + verification) on the thread pool, for stores that may block.
struct DecideJob {
    engine: Arc<Engine>,
    areq: AuthRequest,
    outcome: Option<Outcome>,
    level: ngx_uint_t,
    started: Instant,
}

impl offload::Job for DecideJob {
    fn run(&mut self) {
        let Some(store) = &self.engine.store else { return };
        self.outcome = Some(match auth::begin(&self.engine.cfg, &self.areq, store.as_ref()) {
            Step::Answer(outcome) => outcome,
            Step::Verify(pending) => {
                let (result, cached) = verify(&self.engine, &self.areq, store.generation(), &pending);
                finish(&self.engine, &self.areq, pending, result, cached)
            }
        });
    }
    fn complete(self: Box<Self>, r: *mut ngx_http_request_t) -> ngx_int_t {
        let DecideJob { engine, areq, outcome, level, started } = *self;
        let outcome = outcome.unwrap_or_else(|| {
            auth::temporary(&engine.cfg, &areq, "lookup did not run (thread pool queue full or task failed)")
        });
        answer(r, level, &engine, &areq, outcome, started)
    }
}

/// An auth_http request names a method and a protocol nginx knows; anything else (a browser, a
/// health check, a misrouted request) gets HTTP 400 rather than an Auth-Status answer.
fn looks_like_auth_http(headers: &[(&[u8], &[u8])]) -> bool {
    util::find_header(headers, "Auth-Method").and_then(protocol::Method::parse).is_some()
        && util::find_header(headers, "Auth-Protocol").and_then(protocol::Protocol::parse).is_some()
}

fn log_store_notices(engine: &Engine, log: *mut ngx::ffi::ngx_log_t) {
    if let Some(store) = &engine.store {
        for n in store.take_notices() {
            let level = match n.level {
                NoticeLevel::Error => NGX_LOG_ERR,
                NoticeLevel::Warn => ngx::ffi::NGX_LOG_WARN,
                NoticeLevel::Info => NGX_LOG_INFO,
            };
            util::log(log, level as _, &format!("mail_auth: {}", n.message));
        }
    }
}

/// Who a decision was about, for its log line.
pub struct LogFields {
    user: Vec<u8>,
    client: String,
    /// `None` when the request did not name a valid one (logged as `-`).
    pub protocol: Option<protocol::Protocol>,
    pub method: Option<protocol::Method>,
    attempt: u32,
}

impl LogFields {
    pub fn of(areq: &AuthRequest, o: &Outcome) -> LogFields {
        LogFields {
            user: o.user.as_bytes().to_vec(),
            client: areq.client_ip.map_or_else(|| "-".into(), |ip| ip.to_string()),
            protocol: Some(areq.protocol),
            method: Some(areq.method),
            attempt: areq.login_attempt,
        }
    }

    /// For a request that did not parse: what its headers say, as far as they say it (the user
    /// as the bytes it unescapes to, the other values only when valid).
    pub fn from_headers(headers: &[(&[u8], &[u8])]) -> LogFields {
        let h = |name| util::find_header(headers, name);
        let user = h("Auth-User").map(|raw| protocol::unescape(raw).unwrap_or_else(|_| raw.to_vec()));
        LogFields {
            user: user.unwrap_or_default(),
            client: h("Client-IP")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
                .map_or_else(|| "-".into(), |ip| ip.to_string()),
            protocol: h("Auth-Protocol").and_then(protocol::Protocol::parse),
            method: h("Auth-Method").and_then(protocol::Method::parse),
            attempt: h("Auth-Login-Attempt")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        }
    }
}

/// One line per decision: user, client, protocol, method, result, reason, time taken.
pub fn log_decision(level: ngx_uint_t, log: *mut ngx::ffi::ngx_log_t, f: &LogFields, o: &Outcome, started: Instant) {
    // Broken stores and configuration problems are the operator's business whatever the level.
    let level = if matches!(o.result, "store-error" | "backend-error" | "internal-error") { NGX_LOG_ERR as _ } else { level };
    // SAFETY: `log` is the live request/connection log; reading its level is what nginx's own
    // ngx_log_error macro does. Skipping here saves formatting a line nobody will see.
    if log.is_null() || level > unsafe { (*log).log_level } {
        return;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    util::log(
        log,
        level,
        &format!(
            "mail_auth: user=\"{}\" client={} protocol={} method={} attempt={} result={} reason=\"{}\" time={ms:.3}ms",
            protocol::printable(&f.user, 256),
            f.client,
            f.protocol.map_or("-", |p| p.as_str()),
            f.method.map_or("-", |m| m.as_str()),
            f.attempt,
            o.result,
            protocol::printable(o.reason.as_bytes(), 512),
        ),
    );
}

/// Sends the answer: status 200, the Auth-* headers, no body.
pub fn send(r: *mut ngx_http_request_t, o: &Outcome) -> ngx_int_t {
    for (k, v) in o.response.headers() {
        if util::push_header_out(r, k, &v).is_none() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    }
    // SAFETY: `r` is the live request; we set the status and an empty body, then hand it to
    // nginx's header and body filter chains as every content handler does.
    unsafe {
        (*r).headers_out.status = NGX_HTTP_OK as ngx_uint_t;
        (*r).headers_out.content_length_n = 0;
        (*r).set_header_only(1);
        ngx_http_send_header(r)
    }
}
