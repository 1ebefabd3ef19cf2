//! Small safe wrappers over nginx primitives used by the module.

use std::ffi::c_char;

use ngx::ffi::{
    ngx_conf_t, ngx_http_request_t, ngx_list_push, ngx_log_t, ngx_pnalloc, ngx_pool_t, ngx_str_t,
    ngx_table_elt_t, ngx_uint_t,
};

/// Copies `bytes` into memory owned by `pool` and returns an `ngx_str_t` pointing at it.
/// Returns `None` when the pool is out of memory.
pub fn pool_str(pool: *mut ngx_pool_t, bytes: &[u8]) -> Option<ngx_str_t> {
    if bytes.is_empty() {
        return Some(ngx_str_t { len: 0, data: std::ptr::null_mut() });
    }
    // SAFETY: `pool` is a live nginx pool (a request's or a cycle's); ngx_pnalloc returns either
    // NULL or `len` writable bytes that live as long as the pool.
    let p = unsafe { ngx_pnalloc(pool, bytes.len()) } as *mut u8;
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` points to `bytes.len()` freshly allocated bytes that cannot overlap `bytes`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    Some(ngx_str_t { len: bytes.len(), data: p })
}

/// Views an `ngx_str_t` as a byte slice.
///
/// # Safety
/// `s.data` must point to `s.len` readable bytes (or `s.len` must be 0) that outlive `'a`.
pub unsafe fn str_bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller (see above).
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

/// Appends a response header (`headers_out.headers`). Values are bytes: the caller has
/// validated them (see `protocol::AuthResponse::headers`).
pub fn push_header_out(r: *mut ngx_http_request_t, key: &'static str, value: &[u8]) -> Option<()> {
    // SAFETY: `r` is the live request nginx handed to our handler; its headers_out list and pool
    // are initialised by nginx before any content handler or header filter runs.
    unsafe {
        let pool = (*r).pool;
        let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
        if h.is_null() {
            return None;
        }
        (*h).key = pool_str(pool, key.as_bytes())?;
        (*h).value = pool_str(pool, value)?;
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
/// that `auth_basic` and `auth_request` in the same location see it.
pub fn set_authorization_in(r: *mut ngx_http_request_t, value: &[u8]) -> Option<()> {
    const KEY: &[u8] = b"Authorization";
    const LOW: &[u8] = b"authorization";
    // SAFETY: `r` is a live request in a phase handler; headers_in was filled by nginx's header
    // parser; all memory we store is allocated from the request pool, which outlives it.
    unsafe {
        let pool = (*r).pool;
        let existing = (*r).headers_in.authorization;
        let h = if existing.is_null() {
            let h = ngx_list_push(&mut (*r).headers_in.headers) as *mut ngx_table_elt_t;
            if h.is_null() {
                return None;
            }
            (*h).key = pool_str(pool, KEY)?;
            (*h).lowcase_key = pool_str(pool, LOW)?.data;
            (*h).hash = ngx::ffi::ngx_hash_key(LOW.as_ptr() as *mut u8, LOW.len());
            #[cfg(nginx1_23_0)]
            {
                (*h).next = std::ptr::null_mut();
            }
            (*r).headers_in.authorization = h;
            h
        } else {
            // Only one Authorization is meaningful; drop any duplicates chained to it (1.23+).
            #[cfg(nginx1_23_0)]
            {
                (*existing).next = std::ptr::null_mut();
            }
            existing
        };
        (*h).value = pool_str(pool, value)?;
        // auth_basic caches the decoded user in r->headers_in.user; make sure it re-decodes.
        (*r).headers_in.user.len = 0;
        (*r).headers_in.user.data = std::ptr::null_mut();
        (*r).headers_in.passwd.len = 0;
        (*r).headers_in.passwd.data = std::ptr::null_mut();
        Some(())
    }
}

/// Iterates the request headers as byte pairs.
pub fn headers_in(r: &ngx::http::Request) -> Vec<(&[u8], &[u8])> {
    r.headers_in_iterator().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect()
}

/// Writes a message to an nginx log at `level`, if that level is enabled.
pub fn log(log: *mut ngx_log_t, level: ngx_uint_t, msg: &str) {
    if log.is_null() {
        return;
    }
    // SAFETY: `log` is a live ngx_log_t (request, connection or cycle log); reading its level is
    // what nginx's own ngx_log_error macro does.
    if level > unsafe { (*log).log_level } {
        return;
    }
    // SAFETY: as above; log_error formats `msg` with "%*s", so it may contain '%' safely.
    unsafe { ngx::log::log_error(level, log, 0, msg.as_bytes()) };
}

/// Logs at config time with file:line context, like ngx_conf_log_error.
pub fn conf_log(cf: *mut ngx_conf_t, level: ngx_uint_t, msg: &str) {
    // SAFETY: `cf` is the live ngx_conf_t of the directive/merge being processed; the format
    // string is "%*s" with an explicit length, so the message is never interpreted.
    unsafe {
        ngx::ffi::ngx_conf_log_error(
            level,
            cf,
            0,
            c"%*s".as_ptr() as *const c_char,
            msg.len(),
            msg.as_ptr(),
        );
    }
}

/// Finds a request header by name (case-insensitive) in a list from `headers_in`.
pub fn find_header<'a>(headers: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
}
