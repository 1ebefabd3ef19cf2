//! What ngx/nginx-sys do not provide: response headers with byte values (Auth-Pass may be any
//! bytes but CR/LF/NUL, which `Request::add_header_out(&str)` can't carry), replacing the
//! request's own Authorization header (the Basic bridge), and the engine's log levels.

use ngx::ffi::{
    ngx_conf_t, ngx_http_request_t, ngx_http_server_name_t, ngx_list_part_t, ngx_list_push, ngx_log_t, ngx_str_t,
    ngx_table_elt_t, ngx_uint_t, NGX_LOG_DEBUG, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::log::{check_mask, DebugMask, DEBUG};

use crate::engine::{Ctx, Level};

/// nginx's level for an engine level.
pub fn ngx_level(l: Level) -> u32 {
    match l {
        Level::Error => NGX_LOG_ERR,
        Level::Warn => NGX_LOG_WARN,
        Level::Notice => NGX_LOG_NOTICE,
        Level::Info => NGX_LOG_INFO,
        Level::Debug => NGX_LOG_DEBUG,
    }
}

/// The engine level for an nginx level (`mail_auth_log_level`).
pub fn engine_level(l: ngx_uint_t) -> Level {
    [Level::Error, Level::Warn, Level::Notice, Level::Info, Level::Debug]
        .into_iter()
        .find(|x| ngx_level(*x) as ngx_uint_t >= l)
        .unwrap_or(Level::Debug)
}

/// A request's context for the engine: how verbose its log is, whether it traces.
pub fn log_ctx(log: *mut ngx_log_t) -> Ctx {
    // SAFETY: `log` is the live request log; reading its level is what nginx's own
    // ngx_log_error macro does.
    let level = if log.is_null() { 0 } else { unsafe { (*log).log_level } };
    // with "debug", nginx sets the debug mask bits instead of a level: everything shows
    Ctx::new(engine_level(level.min(NGX_LOG_DEBUG as ngx_uint_t)), DEBUG && check_mask(DebugMask::Http, level))
}

/// Appends a response header (`headers_out.headers`). Values are bytes: the caller has
/// validated them (see `protocol::AuthResponse::headers`).
pub fn push_header_out(r: *mut ngx_http_request_t, key: &'static str, value: &[u8]) -> Option<()> {
    // SAFETY: `r` is the live request nginx handed to our handler; its headers_out list and pool
    // are initialised by nginx before any content handler or header filter runs. The name is
    // static text, which nginx only reads (as its own modules' `ngx_str_set` names are); the
    // value is copied into the request pool, which outlives the headers.
    unsafe {
        let pool = (*r).pool;
        let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
        if h.is_null() {
            return None;
        }
        (*h).key = ngx_str_t { len: key.len(), data: key.as_ptr().cast_mut() };
        (*h).value = ngx_str_t::from_bytes(pool, value)?;
        (*h).hash = 1;
        (*h).lowcase_key = std::ptr::null_mut();
        #[cfg(nginx1_23_0)]
        {
            (*h).next = std::ptr::null_mut();
        }
        Some(())
    }
}

/// Sets the request's own `Authorization` header (headers_in), replacing any existing one, so
/// that `auth_basic` and `auth_request` in the same location see it; `None` as `value` removes
/// it (and any duplicates), so that nothing a client sent reaches the access phase.
pub fn set_authorization_in(r: *mut ngx_http_request_t, value: Option<&[u8]>) -> Option<()> {
    const KEY: &[u8] = b"Authorization";
    const LOW: &[u8] = b"authorization";
    // SAFETY: `r` is a live request in a phase handler; headers_in was filled by nginx's header
    // parser; all memory we store is allocated from the request pool, which outlives it.
    unsafe {
        let pool = (*r).pool;
        // auth_basic caches the decoded user in r->headers_in.user; make sure it re-decodes.
        (*r).headers_in.user = ngx_str_t::empty();
        (*r).headers_in.passwd = ngx_str_t::empty();
        // Every Authorization line leaves the list, whether or not headers_in.authorization
        // points at it. Not hash 0: the proxy (fastcgi, grpc ...) modules forward every entry of
        // the list whatever its hash, so a hash-0 line would still reach an auth_request upstream.
        let is_auth = |h: &ngx_table_elt_t| h.key.as_bytes().eq_ignore_ascii_case(KEY);
        let (mut total, mut found) = (0usize, false);
        let mut part: *mut ngx_list_part_t = &mut (*r).headers_in.headers.part;
        while !part.is_null() {
            let elts = (*part).elts as *mut ngx_table_elt_t;
            for i in 0..(*part).nelts {
                total += 1;
                found |= is_auth(&*elts.add(i));
            }
            part = (*part).next;
        }
        if found {
            let size = std::mem::size_of::<ngx_table_elt_t>();
            let l = ngx::ffi::ngx_list_create(pool, total + 1, size);
            if l.is_null() {
                return None;
            }
            let mut part: *mut ngx_list_part_t = &mut (*r).headers_in.headers.part;
            while !part.is_null() {
                let elts = (*part).elts as *mut ngx_table_elt_t;
                for i in 0..(*part).nelts {
                    let h = &*elts.add(i);
                    if !is_auth(h) {
                        let d = ngx_list_push(l) as *mut ngx_table_elt_t;
                        if d.is_null() {
                            return None;
                        }
                        std::ptr::copy_nonoverlapping(h, d, 1);
                    }
                }
                part = (*part).next;
            }
            // one part (room for all): `last` must point at the request's own copy of it
            (*r).headers_in.headers = std::ptr::read(l);
            (*r).headers_in.headers.last = &mut (*r).headers_in.headers.part;
        }
        (*r).headers_in.authorization = std::ptr::null_mut();
        let Some(value) = value else { return Some(()) };
        let h = ngx_list_push(&mut (*r).headers_in.headers) as *mut ngx_table_elt_t;
        if h.is_null() {
            return None;
        }
        (*h).key = ngx_str_t::from_bytes(pool, KEY)?;
        (*h).lowcase_key = ngx_str_t::from_bytes(pool, LOW)?.data;
        (*h).hash = ngx::ffi::ngx_hash_key(LOW.as_ptr() as *mut u8, LOW.len());
        (*h).value = ngx_str_t::from_bytes(pool, value)?;
        #[cfg(nginx1_23_0)]
        {
            (*h).next = std::ptr::null_mut();
        }
        (*r).headers_in.authorization = h;
        Some(())
    }
}

/// The request headers as byte pairs, in order (read in place: nothing is copied).
pub fn headers_in(r: &ngx::http::Request) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
    r.headers_in_iterator().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
}

/// The names of `server_name` in the server whose location is being merged (lower case, as
/// nginx keeps them), without its regular expressions (nginx keeps those without their `~`:
/// they are left out, and never match a Host here). Copied
/// at configuration: nginx keeps the list in the configuration's temporary pool, and only the
/// first name (`server_name`) after it.
pub fn server_names(cf: *mut ngx_conf_t) -> Vec<Box<[u8]>> {
    use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule};
    // SAFETY: cf is live during the merge; its context is the server being merged.
    let Some(cscf) = NgxHttpCoreModule::server_conf(unsafe { &*cf }) else {
        return Vec::new();
    };
    let names = &cscf.server_names;
    if names.elts.is_null() || names.nelts == 0 {
        return Vec::new();
    }
    // SAFETY: server_names is an ngx_array_t of ngx_http_server_name_t (ngx_http_core_module
    // creates it so), alive in the temporary pool for the whole configuration pass.
    let names = unsafe { std::slice::from_raw_parts(names.elts.cast::<ngx_http_server_name_t>(), names.nelts) };
    names
        .iter()
        .filter(|n| !n.name.data.is_null() && n.name.len > 0 && !is_regex(n))
        // SAFETY: each name is an ngx_str_t into the configuration's buffers (see above).
        .map(|n| Box::from(unsafe { std::slice::from_raw_parts(n.name.data, n.name.len) }))
        .collect()
}

/// The name of the location being merged, for messages.
pub fn location_name(cf: *mut ngx_conf_t) -> String {
    use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
    // SAFETY: cf is live during the merge; its context is the location being merged.
    match NgxHttpCoreModule::location_conf(unsafe { &*cf }) {
        Some(c) if !c.name.data.is_null() => String::from_utf8_lossy(c.name.as_bytes()).into_owned(),
        _ => String::new(),
    }
}

/// A `~` name of `server_name` (a regular expression: only with PCRE).
fn is_regex(n: &ngx_http_server_name_t) -> bool {
    #[cfg(ngx_feature = "pcre")]
    return !n.regex.is_null();
    #[cfg(not(ngx_feature = "pcre"))]
    {
        let _ = n;
        false
    }
}

/// Whether the request names a host that is neither an address, `localhost`, nor one of its
/// server's `server_name` names (`names`, see [`server_names`]; logged at `level`, after `who`): nginx mail sends its
/// auth_http URL's host ("localhost" for a unix socket); a web page that rebinds its own name to
/// this address sends its own, and would read the answers (auth_http's backend passwords, a
/// claimed client address or certificate believed; the ban listing's addresses and names).
pub fn foreign_host(
    r: *mut ngx_http_request_t,
    req: &ngx::http::Request,
    names: &[Box<[u8]>],
    level: ngx_uint_t,
    who: &str,
) -> bool {
    // SAFETY: `r` is the live request; headers_in.server is an ngx_str_t into its buffers.
    let host = unsafe { (*r).headers_in.server.as_bytes() };
    if crate::limiter::host_is_ours(host, names.iter().map(|n| &n[..])) {
        return false;
    }
    ngx::ngx_log_error!(
        level,
        req.log(),
        "{who}: refused a request for host \"{}\", neither a name of this server's server_name nor an address (a web page can rebind its own name to this address); a name nginx mail or a client uses must be in server_name",
        crate::protocol::printable(host, 128)
    );
    true
}

/// Whether the request is a subrequest (SSI, `auth_request`, `mirror` from another location),
/// logged at `level` after `who` (and `extra`): nginx runs no access phase for one, so neither
/// the location's `allow`/`deny` nor its `auth_basic`/`auth_request` judged it. The module's
/// content handlers refuse them.
pub fn subrequest(req: &ngx::http::Request, level: ngx_uint_t, who: &str, extra: std::fmt::Arguments<'_>) -> bool {
    if req.is_main() {
        return false;
    }
    ngx::ngx_log_error!(level, req.log(), "{who}: a subrequest is refused (no access phase ran){extra}");
    true
}
