//! `mail_auth_json;`: the Nauthilus-compatible JSON API Dovecot's Lua passdb/userdb/iterate
//! call (see `crate::protocol::json`), answered with the location's engine (store, schemes,
//! policy, cache, limiter, thread pool, counters, decision log).
//!
//! The body is read through nginx (`ngx_http_read_client_request_body`, which also answers
//! `Expect: 100-continue`), bounded by [`json::MAX_BODY`]. A password check goes through
//! `Engine::start_parsed` (and the thread pool when the engine hands back a job); an OK, and
//! every `mode=no-auth` request, then looks the account up for its attributes (on the thread
//! pool when the store may block). `mode=list-accounts` writes the names into an unlinked
//! temporary file on the thread pool and sends that file (nginx reads it in
//! `output_buffers`-sized pieces): no buffer of the whole list in the worker.

use std::fs::File;
use std::io::{BufWriter, Seek};
use std::net::IpAddr;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use ngx::core::Buffer;
use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_file_t, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_int_t, ngx_pcalloc, ngx_pool_cleanup_add, ngx_pool_cleanup_file, ngx_pool_cleanup_file_t,
    ngx_str_t, ngx_uint_t, NGX_DONE, NGX_HTTP_BAD_REQUEST, NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_NOT_ALLOWED, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_LOG_INFO,
    NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HTTPStatus, HttpModuleLocationConf, Method as HttpMethod, Request};
use ngx::ngx_log_error;

use super::handler::log_decision;
use super::{guard, offload, util, Module};
use crate::engine::{AuthResult, Decision, Engine, Level, Reply, Start};
use crate::protocol::json::{self, Mode};
use crate::protocol::{printable, AuthResponse, Method, Protocol, MSG_INVALID, MSG_TEMP};
use crate::store::{Account, Query, StoreError};

const CONTENT_TYPE: &str = "application/json";

/// nginx content handler for `mail_auth_json;` locations.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || handle(r))
}

fn args(r: *mut ngx_http_request_t) -> Vec<u8> {
    // SAFETY: `r` is the live request; args is an ngx_str_t into its header buffer.
    unsafe { (*r).args.as_bytes().to_vec() }
}

fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live, non-null request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let session = json::session_id();
    if util::subrequest(req, NGX_LOG_ERR as ngx_uint_t, "mail_auth_json", format_args!(" session={session}")) {
        return NGX_HTTP_FORBIDDEN as ngx_int_t;
    }
    if let Some(lc) = Module::location_conf(req) {
        // a web page rebinding its own name to this listener (DNS rebinding) could read the
        // accounts' data and check passwords: nothing is counted, a 403 and a log line
        if util::foreign_host(r, req, &lc.host_names, NGX_LOG_WARN as ngx_uint_t, "mail_auth_json") {
            return refuse(r, &session, NGX_HTTP_FORBIDDEN, "a request for a host that is not this server's");
        }
    }
    // a page in a browser that can reach this listener (on this host, or let in by allow) could
    // make it POST password checks that fail (a form's text/plain body is JSON enough): each
    // counted by the limiter, so the page could ban any user or client address it names
    if let Some(why) = crate::limiter::from_browser(util::headers_in(req)) {
        ngx_log_error!(
            NGX_LOG_WARN,
            req.log(),
            "mail_auth_json: refused a request sent by a web browser ({why}); nothing checked or counted session={session}"
        );
        return refuse(
            r,
            &session,
            NGX_HTTP_FORBIDDEN,
            "requests from web browsers are not taken (an Origin or Sec-Fetch-Site header)",
        );
    }
    let mode = match Mode::from_query(&args(r)) {
        Ok(m) => m,
        Err(e) => {
            ngx_log_error!(NGX_LOG_ERR, req.log(), "mail_auth_json: bad request: {e} session={session}");
            let rc = req.discard_request_body();
            if rc != ngx::core::Status::NGX_OK {
                // a broken body (a bad chunk): nginx's special response, which closes the
                // connection; answering with keep-alive would read the rest as a new request
                return rc.0;
            }
            return reply(r, &session, NGX_HTTP_BAD_REQUEST as ngx_uint_t, "Bad request", None, &json::error_body(&e));
        }
    };
    if mode == Mode::ListAccounts {
        if !matches!(req.method(), HttpMethod::GET | HttpMethod::HEAD) {
            return refuse(r, &session, NGX_HTTP_NOT_ALLOWED, "list-accounts is a GET request");
        }
        let rc = req.discard_request_body();
        if rc != ngx::core::Status::NGX_OK {
            return rc.0;
        }
        return list_accounts(r, session);
    }
    if req.method() != HttpMethod::POST {
        return refuse(r, &session, NGX_HTTP_NOT_ALLOWED, "the JSON API takes POST requests");
    }
    // SAFETY: `r` is the live request; content_length_n was set by nginx's header parser.
    let length = unsafe { (*r).headers_in.content_length_n };
    if usize::try_from(length).is_ok_and(|n| n > json::MAX_BODY) {
        ngx_log_error!(
            NGX_LOG_ERR,
            req.log(),
            "mail_auth_json: request body of {length} bytes refused (at most {})",
            json::MAX_BODY
        );
        // the connection is closed after the answer: the body is not read
        // SAFETY: `r` is the live request.
        unsafe { (*r).set_keepalive(0) };
        return reply(
            r,
            &session,
            NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_uint_t,
            "Bad request",
            None,
            &json::error_body("request body too big"),
        );
    }
    // SAFETY: `r` is the live request; nginx calls `body_read` once the body is in (and answers
    // `Expect: 100-continue` itself).
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
}

/// A request the API does not take (its method): the body discarded, the usual JSON answer
/// (every answer of the API carries the session id).
fn refuse(r: *mut ngx_http_request_t, session: &str, status: u32, what: &str) -> ngx_int_t {
    // SAFETY: `r` is the live request of the content handler.
    let req = unsafe { Request::from_ngx_http_request(r) };
    ngx_log_error!(NGX_LOG_INFO, req.log(), "mail_auth_json: refused: {what} session={session}");
    let rc = req.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }
    reply(r, session, status as ngx_uint_t, "Bad request", None, &json::error_body(what))
}

/// The body is in: decide, and finalize the request with what was sent (or NGX_DONE while a
/// job is on the thread pool).
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    let rc = guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || on_body(r));
    // SAFETY: `r` is live: reading the body held a reference, which this call releases.
    unsafe { ngx_http_finalize_request(r, rc) };
}

/// The request body from memory (`None`: too big, or nginx wrote it to a file).
fn body(r: *mut ngx_http_request_t) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    // SAFETY: `r` is live and its body has been read: request_body and its chain of buffers are
    // nginx's, allocated from the request pool.
    unsafe {
        let rb = (*r).request_body;
        if rb.is_null() {
            return Some(out);
        }
        let mut cl = (*rb).bufs;
        while !cl.is_null() {
            let b = (*cl).buf;
            if !b.is_null() {
                if (*b).in_file() != 0 {
                    return None;
                }
                let (pos, last) = ((*b).pos, (*b).last);
                if !pos.is_null() && last > pos {
                    let len = last.offset_from(pos) as usize;
                    if out.len() + len > json::MAX_BODY {
                        return None;
                    }
                    out.extend_from_slice(std::slice::from_raw_parts(pos, len));
                }
            }
            cl = (*cl).next;
        }
    }
    Some(out)
}

fn on_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: the body handler runs with the live request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let Some(lc) = Module::location_conf(req) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let (Some(engine), pool) = (lc.engine.clone(), lc.pool) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let disabled = lc.directives.json_disabled.clone().unwrap_or_else(|| json::MSG_DISABLED.to_string());
    let session = json::session_id();
    let dovecot_session = req
        .headers_in_iterator()
        .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(b"x-dovecot-session"))
        .map(|(_, v)| printable(v.as_bytes(), 64))
        .unwrap_or_else(|| "-".into());
    let bad = |e: String| {
        ngx_log_error!(
            NGX_LOG_ERR,
            req.log(),
            "mail_auth_json: bad request: {} session={session} dovecot_session={dovecot_session}",
            printable(e.as_bytes(), 256)
        );
        if let Some(m) = engine.metrics() {
            m.request(None, None, AuthResult::BadRequest, 0);
        }
        reply(r, &session, NGX_HTTP_BAD_REQUEST as ngx_uint_t, "Bad request", None, &json::error_body(&e))
    };
    let Some(body) = body(r) else {
        return bad(format!("request body too big (at most {} bytes, in memory)", json::MAX_BODY));
    };
    let mode = match Mode::from_query(&args(r)) {
        Ok(m) => m,
        Err(e) => return bad(e),
    };
    let j = match json::parse_body(&body) {
        Ok(j) => j,
        Err(e) => return bad(e),
    };
    let ctx = util::log_ctx(req.log()).with_costly_full(super::handler::costly_full(&engine));
    // the session ids beside the decision line (at its level), to follow a login from
    // Dovecot's log to this one
    ngx_log_error!(
        util::ngx_level(engine.log_level) as ngx_uint_t,
        req.log(),
        "mail_auth_json: session={session} dovecot_session={dovecot_session} mode={mode:?} service={}",
        printable(j.service.as_bytes(), 32)
    );
    let mut call = Box::new(Call {
        engine: engine.clone(),
        pool,
        session: session.clone(),
        disabled,
        mode,
        user: String::new(),
        client_ip: None,
        protocol: json::protocol_of(&j.service),
        started: ctx.started,
        decision: None,
        account: None,
        lookup: false,
        logged: false,
        ran: false,
        refused: false,
    });
    match mode {
        Mode::NoAuth => {
            let (user, ip) = match json::lookup_user(&j) {
                Ok(v) => v,
                Err(e) => return bad(e),
            };
            call.user = user;
            call.client_ip = ip;
            call.proceed(r)
        }
        _ => {
            let areq = match json::auth_request(&j) {
                Ok(a) => a,
                Err(e) => return bad(e),
            };
            call.user = areq.user.clone();
            call.client_ip = areq.client_ip;
            match engine.start_parsed(areq, ctx) {
                Start::Done(d) => {
                    call.decision = Some(d);
                    call.proceed(r)
                }
                // scheduled like any auth_http request's job (costly verifications bounded), then on
                Start::Offload(job) => {
                    let (engine, pool) = (call.engine.clone(), call.pool);
                    let finish = move |r, d| {
                        call.decision = Some(d);
                        call.proceed(r)
                    };
                    super::handler::schedule(r, engine, pool, job, Box::new(finish))
                }
            }
        }
    }
}

/// One JSON API request on its way: the engine's job and decision, the account looked up.
struct Call {
    engine: Arc<Engine>,
    pool: Option<offload::PoolRef>,
    session: String,
    /// `Auth-Status` of a disabled account.
    disabled: String,
    mode: Mode,
    /// The user name asked for.
    user: String,
    client_ip: Option<IpAddr>,
    protocol: Option<Protocol>,
    started: std::time::Instant,
    decision: Option<Decision>,
    account: Option<Result<Option<Account>, StoreError>>,
    /// Look the account up in `run`.
    lookup: bool,
    /// The decision's lines are in the log.
    logged: bool,
    /// `run` ran (on a pool thread, or inline without a pool).
    ran: bool,
    /// The thread pool refused the task (queue full): nothing more is posted, the answer is a
    /// temporary failure.
    refused: bool,
}

impl offload::Task for Call {
    fn run(&mut self) {
        self.ran = true;
        if self.lookup && self.account.is_none() {
            self.account = Some(self.look_up());
        }
    }

    fn complete(mut self: Box<Self>, r: *mut ngx_http_request_t) -> Option<ngx_int_t> {
        if !self.ran {
            // not posted: no account lookup is attempted (a temporary failure)
            self.refused = true;
        }
        self.ran = false;
        Some(self.proceed(r))
    }
}

impl Call {
    fn query(&self) -> Query<'_> {
        Query {
            user: &self.user,
            protocol: self.protocol.unwrap_or(Protocol::Imap),
            method: Method::Plain,
            client_ip: self.client_ip,
            password: None,
        }
    }

    fn look_up(&self) -> Result<Option<Account>, StoreError> {
        match self.engine.store.as_deref() {
            Some(store) => store.lookup(&self.query()),
            None => Err(StoreError { source: "mail_auth_json".into(), cause: "no store".into() }),
        }
    }

    /// The account, if it can be had without waiting (`None`: ask on the thread pool).
    fn account_now(&mut self) -> Option<Result<Option<Account>, StoreError>> {
        if let Some(a) = self.account.take() {
            return Some(a);
        }
        match self.engine.store.as_deref() {
            Some(store) => store.try_lookup(&self.query()),
            None => Some(self.look_up()),
        }
    }

    /// Onto the thread pool (inline when there is none or it refuses the task).
    fn post(self: Box<Self>, r: *mut ngx_http_request_t) -> ngx_int_t {
        let done = match self.pool {
            // as auth_http lookups: bounded per location (mail_auth_lookup_concurrency); the
            // pool or the scheduler refusing it (queue full, no memory): a temporary failure,
            // never costly work on the event loop
            Some(p) => {
                let engine = self.engine.clone();
                super::handler::post_lookup(r, &engine, p, self)
            }
            // no thread pool (`mail_auth_thread_pool off`): here
            None => {
                let mut task = self;
                offload::Task::run(&mut *task);
                offload::Task::complete(task, r)
            }
        };
        done.unwrap_or(NGX_DONE as ngx_int_t)
    }

    /// The account lookup could not be posted: a temporary failure.
    fn not_posted(&self, r: *mut ngx_http_request_t) -> ngx_int_t {
        let e = StoreError { source: "mail_auth_json".into(), cause: "the thread pool refused the lookup".into() };
        self.store_error(r, &e)
    }

    /// Answers, or goes to the thread pool for the account first.
    fn proceed(mut self: Box<Self>, r: *mut ngx_http_request_t) -> ngx_int_t {
        // SAFETY: `r` is live (content phase, body handler, or offload completion).
        let req = unsafe { Request::from_ngx_http_request(r) };
        if self.mode == Mode::NoAuth {
            let Some(found) = self.account_now() else {
                if self.refused {
                    return self.not_posted(r);
                }
                self.lookup = true;
                return self.post(r);
            };
            return self.answer_userdb(r, found);
        }
        let Some(d) = self.decision.take() else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        if !self.logged {
            log_decision(req, &d);
            self.logged = true;
        }
        match &d.reply {
            Reply::Answer(AuthResponse::Ok { .. }) => {
                let Some(found) = self.account_now() else {
                    if self.refused {
                        return self.not_posted(r);
                    }
                    self.decision = Some(d);
                    self.lookup = true;
                    return self.post(r);
                };
                self.answer_ok(r, found)
            }
            // Nauthilus' texts, without the IMAP/POP3 response codes of the auth_http answer
            // (Dovecot, the client here, speaks to the mail client with its own)
            Reply::Answer(AuthResponse::Fail { .. }) => {
                let msg = if d.result == AuthResult::Disabled { self.disabled.as_str() } else { MSG_INVALID };
                reply(r, &self.session, 403, msg, None, &json::fail_body(msg))
            }
            Reply::Answer(AuthResponse::TempFail { .. }) => {
                reply(r, &self.session, 503, MSG_TEMP, None, &json::error_body(MSG_TEMP))
            }
            Reply::Status(s) => {
                let s = ngx_uint_t::from(*s);
                reply(r, &self.session, s, "Bad request", None, &json::error_body("bad request"))
            }
        }
    }

    /// The password was right: 200 with the account's attributes (looked up after the check).
    fn answer_ok(&self, r: *mut ngx_http_request_t, found: Result<Option<Account>, StoreError>) -> ngx_int_t {
        // SAFETY: `r` is live.
        let req = unsafe { Request::from_ngx_http_request(r) };
        match found {
            Ok(Some(a)) if a.enabled => self.success(r, &a),
            Ok(_) => {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    req.log(),
                    "mail_auth_json: \"{}\" changed in the store during its login: temporary failure session={}",
                    printable(self.user.as_bytes(), 256),
                    self.session
                );
                reply(r, &self.session, 503, MSG_TEMP, None, &json::error_body(MSG_TEMP))
            }
            Err(e) => self.store_error(r, &e),
        }
    }

    fn success(&self, r: *mut ngx_http_request_t, a: &Account) -> ngx_int_t {
        let name = json::account_name(a, &self.user);
        let body = json::ok_body(name, &json::attributes(a));
        reply(r, &self.session, 200, "OK", Some(name), &body)
    }

    fn store_error(&self, r: *mut ngx_http_request_t, e: &StoreError) -> ngx_int_t {
        // SAFETY: `r` is live.
        let req = unsafe { Request::from_ngx_http_request(r) };
        ngx_log_error!(
            NGX_LOG_ERR,
            req.log(),
            "mail_auth_json: user=\"{}\" store error: {} session={}",
            printable(self.user.as_bytes(), 256),
            printable(e.to_string().as_bytes(), 512),
            self.session
        );
        reply(r, &self.session, 503, MSG_TEMP, None, &json::error_body(MSG_TEMP))
    }

    /// `mode=no-auth`: the account's data, no password check, not counted by the limiter. A
    /// disabled account is found too: disabling refuses logins (the passdb side), as Dovecot's
    /// `nologin` does, while its userdb still knows the user, so LMTP delivers its mail instead
    /// of bouncing it as to an unknown user.
    fn answer_userdb(&self, r: *mut ngx_http_request_t, found: Result<Option<Account>, StoreError>) -> ngx_int_t {
        // SAFETY: `r` is live.
        let req = unsafe { Request::from_ngx_http_request(r) };
        let result = match &found {
            Ok(Some(_)) => AuthResult::Ok,
            Ok(None) => AuthResult::UnknownUser,
            Err(_) => AuthResult::StoreError,
        };
        if let Some(m) = self.engine.metrics() {
            let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            m.request(self.protocol, None, result, micros);
        }
        if result != AuthResult::StoreError && self.engine.log_level <= Level::Info {
            ngx_log_error!(
                util::ngx_level(self.engine.log_level) as ngx_uint_t,
                req.log(),
                "mail_auth_json: userdb user=\"{}\" result={result} session={}",
                printable(self.user.as_bytes(), 256),
                self.session
            );
        }
        match found {
            Ok(Some(a)) => self.success(r, &a),
            Ok(None) => reply(r, &self.session, 403, json::MSG_UNKNOWN, None, &json::fail_body(json::MSG_UNKNOWN)),
            Err(e) => self.store_error(r, &e),
        }
    }
}

/// Sends a JSON answer with `Auth-Status`, `Auth-User` (when given) and `X-Nauthilus-Session`.
fn reply(
    r: *mut ngx_http_request_t,
    session: &str,
    status: ngx_uint_t,
    auth_status: &str,
    auth_user: Option<&str>,
    body: &str,
) -> ngx_int_t {
    // SAFETY: `r` is live.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let clean = |v: &str| -> Vec<u8> { v.bytes().filter(|b| *b >= 0x20 && *b != 0x7f).collect() };
    let mut headers = vec![("Auth-Status", clean(auth_status)), ("X-Nauthilus-Session", clean(session))];
    if let Some(u) = auth_user {
        headers.push(("Auth-User", clean(u)));
    }
    for (k, v) in &headers {
        if util::push_header_out(r, k, v).is_none() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    }
    let pool = req.pool();
    let Some(mut buf) = pool.create_buffer_from_str(body) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    buf.set_last_buf(req.is_main());
    buf.set_last_in_chain(true);
    if set_json_headers(r, status, body.len()).is_none() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    let rc = req.send_header();
    if rc == ngx::core::Status::NGX_ERROR || rc.0 > NGX_OK as ngx_int_t || req.header_only() {
        return rc.0;
    }
    let mut out = ngx_chain_t { buf: buf.as_ngx_buf_mut(), next: std::ptr::null_mut() };
    req.output_filter(&mut out).0
}

/// Status, Content-Type: application/json and Content-Length.
fn set_json_headers(r: *mut ngx_http_request_t, status: ngx_uint_t, length: usize) -> Option<()> {
    // SAFETY: `r` is live.
    let req = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the request pool is live for the request's lifetime.
    let ct = unsafe { ngx_str_t::from_bytes(req.pool().as_ptr(), CONTENT_TYPE.as_bytes()) }?;
    req.set_status(HTTPStatus(status));
    req.set_content_length_n(length);
    // SAFETY: `r` is the live request; the content type lives in its pool, as nginx's own
    // handlers set it (ngx's Request has no content-type setter).
    unsafe {
        (*r).headers_out.content_type = ct;
        (*r).headers_out.content_type_len = ct.len;
    }
    Some(())
}

/// `mode=list-accounts`: the store's names written on the thread pool into an unlinked
/// temporary file, which nginx then sends.
struct ListTask {
    engine: Arc<Engine>,
    session: String,
    result: Option<Result<(File, u64), String>>,
}

impl ListTask {
    fn write(&self) -> Result<(File, u64), String> {
        let store = self.engine.store.as_deref().ok_or("no store")?;
        let dir = std::env::temp_dir();
        let path = dir.join(format!("ngx-mail-auth-accounts-{}-{}", std::process::id(), self.session));
        // (readable by this worker's user only: the names are the accounts')
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        // unlinked at once: the open descriptor is all that is left, closed with the request
        let _ = std::fs::remove_file(&path);
        let mut w = json::ListWriter::begin(BufWriter::new(file)).map_err(|e| e.to_string())?;
        let mut failed = None;
        store
            .accounts(&mut |name| match w.name(name) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e.to_string());
                    false
                }
            })
            .map_err(|e| e.to_string())?;
        if let Some(e) = failed {
            return Err(format!("writing the list: {e}"));
        }
        let mut file = w.end().and_then(|b| b.into_inner().map_err(|e| e.into_error())).map_err(|e| e.to_string())?;
        let len = file.stream_position().map_err(|e| e.to_string())?;
        Ok((file, len))
    }
}

impl offload::Task for ListTask {
    fn run(&mut self) {
        self.result = Some(self.write());
    }

    fn complete(self: Box<Self>, r: *mut ngx_http_request_t) -> Option<ngx_int_t> {
        Some(self.answer(r))
    }
}

impl ListTask {
    fn answer(self, r: *mut ngx_http_request_t) -> ngx_int_t {
        // SAFETY: `r` is live.
        let req = unsafe { Request::from_ngx_http_request(r) };
        match self.result {
            Some(Ok((file, len))) => send_file(r, &self.session, file, len),
            other => {
                let e = match other {
                    Some(Err(e)) => e,
                    _ => "the thread pool refused the task".into(),
                };
                ngx_log_error!(
                    NGX_LOG_ERR,
                    req.log(),
                    "mail_auth_json: list-accounts: {} session={}",
                    printable(e.as_bytes(), 512),
                    self.session
                );
                reply(r, &self.session, 503, MSG_TEMP, None, &json::error_body(MSG_TEMP))
            }
        }
    }
}

fn list_accounts(r: *mut ngx_http_request_t, session: String) -> ngx_int_t {
    // SAFETY: `r` is live.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let Some(lc) = Module::location_conf(req) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(engine) = lc.engine.clone() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    ngx_log_error!(NGX_LOG_INFO, req.log(), "mail_auth_json: session={session} mode=ListAccounts");
    let task = Box::new(ListTask { engine, session, result: None });
    let posted = match lc.pool {
        Some(p) => offload::post(p, r, task, false),
        None => Err(task),
    };
    match posted {
        Ok(()) => NGX_DONE as ngx_int_t,
        // the pool refused it (queue full): a temporary failure, not a walk on the event loop
        Err(task) if lc.pool.is_some() => task.answer(r),
        // no thread pool (mail_auth_thread_pool off): written here, on the event loop
        Err(mut task) => {
            offload::Task::run(&mut *task);
            task.answer(r)
        }
    }
}

/// Sends `len` bytes of `file` as the JSON body; the descriptor is closed with the request pool.
fn send_file(r: *mut ngx_http_request_t, session: &str, file: File, len: u64) -> ngx_int_t {
    // SAFETY: `r` is live.
    let req = unsafe { Request::from_ngx_http_request(r) };
    for (k, v) in [("Auth-Status", "OK"), ("X-Nauthilus-Session", session)] {
        if util::push_header_out(r, k, v.as_bytes()).is_none() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    }
    let Ok(size) = usize::try_from(len) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
    let Ok(last) = i64::try_from(len) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
    let fd = file.into_raw_fd();
    // SAFETY: the request pool is live; the cleanup closes `fd` when the request is freed (so
    // the descriptor is ours until then, and nginx reads it through the buffer below); a
    // zeroed ngx_buf_t / ngx_file_t is how nginx's ngx_calloc_buf / ngx_pcalloc start them.
    let (b, sent_ok) = unsafe {
        let pool = (*r).pool;
        let cln = ngx_pool_cleanup_add(pool, std::mem::size_of::<ngx_pool_cleanup_file_t>());
        if cln.is_null() {
            drop(<File as std::os::fd::FromRawFd>::from_raw_fd(fd));
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        (*cln).handler = Some(ngx_pool_cleanup_file);
        let clnf = (*cln).data as *mut ngx_pool_cleanup_file_t;
        (*clnf).fd = fd;
        (*clnf).name = c"mail_auth_json account list".as_ptr() as *mut u8;
        (*clnf).log = (*(*r).connection).log;
        let f = ngx_pcalloc(pool, std::mem::size_of::<ngx_file_t>()) as *mut ngx_file_t;
        let b = ngx_pcalloc(pool, std::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
        if f.is_null() || b.is_null() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        (*f).fd = fd;
        (*f).name = ngx_str_t::from_bytes(pool, b"mail_auth_json account list").unwrap_or_else(ngx_str_t::empty);
        (*f).log = (*(*r).connection).log;
        (*b).file = f;
        (*b).file_pos = 0;
        (*b).file_last = last;
        (*b).set_in_file(1);
        (*b).set_last_buf(if (*r).main == r { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        (b, set_json_headers(r, 200, size).is_some())
    };
    if !sent_ok {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    let rc = req.send_header();
    if rc == ngx::core::Status::NGX_ERROR || rc.0 > NGX_OK as ngx_int_t || req.header_only() {
        return rc.0;
    }
    let mut out = ngx_chain_t { buf: b, next: std::ptr::null_mut() };
    req.output_filter(&mut out).0
}
