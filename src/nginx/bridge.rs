//! The Basic-credential bridge (no set_misc needed):
//! - `$mail_auth_basic` = `Basic base64(user:pass)` from the unescaped Auth-User / Auth-Pass;
//! - `mail_auth_basic_header on;` puts that value into the request's Authorization header before
//!   the access phase, so `auth_basic` / `auth_request` in the same location check mail users;
//! - a header filter turns the access phase's 401/403 (and 5xx) in a `mail_auth` location into a
//!   proper auth_http failure answer, so nobody needs `error_page` tricks.

use std::ffi::CStr;

use ngx::ffi::{
    ngx_array_push, ngx_array_t, ngx_conf_t, ngx_http_complex_value_t, ngx_http_handler_pt,
    ngx_http_output_header_filter_pt, ngx_http_phases_NGX_HTTP_PREACCESS_PHASE, ngx_http_request_t,
    ngx_http_variable_t, ngx_int_t, ngx_module_t, ngx_str_t, ngx_uint_t, ngx_variable_value_t, NGX_DECLINED, NGX_DONE,
    NGX_ERROR, NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_MODULE, NGX_HTTP_OK, NGX_HTTP_UNAUTHORIZED,
    NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::http::{HttpModuleConfExt, HttpModuleLocationConf, HttpModuleMainConf, Method, NgxHttpCoreModule, Request};
use ngx::ngx_log_error;

use super::{guard, util, Module};
use crate::protocol::HeaderView;

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

pub fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut name = ngx::ngx_string!("mail_auth_basic");
    // SAFETY: called from preconfiguration with a live cf; nginx copies the name.
    let v: *mut ngx_http_variable_t =
        unsafe { ngx::ffi::ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as _) };
    if v.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: `v` was just returned non-null by ngx_http_add_variable.
    unsafe {
        (*v).get_handler = Some(basic_variable);
        (*v).data = 0;
    }
    NGX_OK as ngx_int_t
}

pub fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: postconfiguration runs once, single-threaded, with a live cf; pushing a phase
    // handler and chaining the header filter is the documented way for modules to hook in (ngx
    // 0.5 has no helper for either).
    unsafe {
        let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
            return NGX_ERROR as ngx_int_t;
        };
        let h = ngx_array_push(&mut cmcf.phases[ngx_http_phases_NGX_HTTP_PREACCESS_PHASE as usize].handlers)
            as *mut ngx_http_handler_pt;
        if h.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        *h = Some(preaccess_handler);

        NEXT_HEADER_FILTER = ngx::ffi::ngx_http_top_header_filter;
        ngx::ffi::ngx_http_top_header_filter = Some(header_filter);
    }
    NGX_OK as ngx_int_t
}

/// ngx_http_auth_basic_module's location configuration (`ngx_http_auth_basic_loc_conf_t`, private
/// to src/http/modules/ngx_http_auth_basic_module.c).
#[repr(C)]
struct AuthBasicConf {
    realm: *mut ngx_http_complex_value_t,
    user_file: *mut ngx_http_complex_value_t,
}

/// ngx_http_auth_request_module's (`ngx_http_auth_request_conf_t`, in its .c file).
#[repr(C)]
struct AuthRequestConf {
    uri: ngx_str_t,
    vars: *mut ngx_array_t,
}

/// ngx_http_access_module's location configuration (`ngx_http_access_loc_conf_t`, in its .c
/// file): the `allow`/`deny` rules for IPv4, IPv6 and unix-socket clients, each NULL when none.
#[repr(C)]
struct AccessConf {
    rules: *mut ngx_array_t,
    rules6: *mut ngx_array_t,
    rules_un: *mut ngx_array_t,
}

// nginx has the last two fields only with IPv6 and unix-domain sockets (every Linux build)
const _: () = assert!(ngx::ffi::NGX_HAVE_INET6 == 1 && ngx::ffi::NGX_HAVE_UNIX_DOMAIN == 1);

/// The rules of those arrays (`ngx_http_access_rule_t`, `_rule6_t`, `_rule_un_t`): each ends
/// with its `deny` flag (the other fields are there for the layout).
#[repr(C)]
#[allow(dead_code)]
struct AccessRule {
    mask: u32,
    addr: u32,
    deny: ngx_uint_t,
}

#[repr(C)]
#[allow(dead_code)]
struct AccessRule6 {
    addr: [u8; 16],
    mask: [u8; 16],
    deny: ngx_uint_t,
}

#[repr(C)]
struct AccessRuleUn {
    deny: ngx_uint_t,
}

/// An HTTP module of the cycle being configured, by name: the access modules may be missing
/// from an nginx build (auth_request is optional), so they are looked up, never linked to.
fn find_module(cf: &ngx_conf_t, name: &CStr) -> Option<&'static ngx_module_t> {
    // SAFETY: during configuration cf->cycle->modules holds cycle->modules_n module pointers
    // (static ones, then those load_module added); each name is a NUL-terminated C string.
    unsafe {
        let cycle = &*cf.cycle;
        if cycle.modules.is_null() {
            return None;
        }
        std::slice::from_raw_parts(cycle.modules, cycle.modules_n)
            .iter()
            .filter_map(|m| m.as_ref())
            .find(|m| !m.name.is_null() && CStr::from_ptr(m.name) == name && m.type_ == NGX_HTTP_MODULE as ngx_uint_t)
    }
}

/// Whether the access phase of the location being merged checks the Authorization header the
/// bridge puts in: `auth_basic` with a realm other than `off` and a user file (without one
/// auth_basic lets every request pass), or `auth_request` with a URI.
///
/// Called from merge_loc_conf, where cf->ctx holds the location's configurations. nginx merges
/// one module at a time over all locations, in module order (ngx_http_block): the static
/// auth_basic/auth_request modules come before this one, loaded by load_module, so their values
/// here are merged (inherited ones included). Were this module built in ahead of them, an
/// inherited value would still read as unset: refused, never let through.
pub fn access_checks_credentials(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf is live during the merge.
    let cf = unsafe { &*cf };
    auth_basic_on(cf) || auth_request_on(cf)
}

/// Whether anything restricts who may use the location being merged: a `deny` rule (its own or
/// inherited), `auth_basic` or `auth_request`. Called from merge_loc_conf, after those
/// static modules merged (see [`access_checks_credentials`]).
pub fn access_restricted(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf is live during the merge.
    access_checks_credentials(cf) || access_rules(unsafe { &*cf })
}

/// Whether a `deny` rule is in effect (its own or inherited): nginx lets a request that matches
/// no rule through, so `allow` rules alone (`allow all;`, `allow 10.0.0.0/8;`) restrict nothing.
fn access_rules(cf: &ngx_conf_t) -> bool {
    let Some(m) = find_module(cf, c"ngx_http_access_module") else { return false };
    // SAFETY: that module's location conf is an ngx_http_access_loc_conf_t (create_loc_conf,
    // zeroed; a rule's array is made at its first `allow`/`deny`).
    let Some(c) = (unsafe { cf.http_location_conf_unchecked::<AccessConf>(m) }) else { return false };
    // SAFETY: see above; it lives in the configuration pool.
    let c = unsafe { c.as_ref() };
    // SAFETY: each non-NULL array holds its module's rule type (checked by its element size).
    unsafe {
        any_deny::<AccessRule>(c.rules, |r| r.deny)
            || any_deny::<AccessRule6>(c.rules6, |r| r.deny)
            || any_deny::<AccessRuleUn>(c.rules_un, |r| r.deny)
    }
}

/// Whether an array of access rules of type `T` holds a `deny` one; an array whose elements are
/// not of `T`'s size (another nginx's layout) counts as holding one (no warning rather than a
/// wrong one).
///
/// # Safety
/// `a` is NULL or an ngx_array_t of the configuration pool whose elements are `T`s.
unsafe fn any_deny<T>(a: *const ngx_array_t, deny: impl Fn(&T) -> ngx_uint_t) -> bool {
    // SAFETY: the caller's contract.
    let Some(a) = (unsafe { a.as_ref() }) else { return false };
    if a.nelts == 0 || a.elts.is_null() {
        return false;
    }
    if a.size != std::mem::size_of::<T>() {
        return true;
    }
    // SAFETY: nelts elements of size_of::<T>() at elts (checked above), alive for the
    // configuration pass.
    let rules = unsafe { std::slice::from_raw_parts(a.elts.cast::<T>(), a.nelts) };
    rules.iter().any(|r| deny(r) != 0)
}

/// An `error_page` for 401 or 403 in effect in the location being merged (core merges before
/// this module, so one inherited from the server or http level counts): nginx sends such a
/// refusal to the error page's location before any header filter runs, so the bridge would never
/// see it to count (the limiter) or answer it; an array of another layout counts as having one.
pub fn error_page_for_refusals(cf: *mut ngx_conf_t) -> bool {
    error_page_for(cf, |s| s == 401 || s == 403)
}

/// An `error_page` for a 5xx in effect in the location being merged (as
/// [`error_page_for_refusals`]): nginx sends a 5xx the module does not answer itself (limit_req's
/// 503, an auth_request upstream down) to that page, not to the status filter.
pub fn error_page_for_5xx(cf: *mut ngx_conf_t) -> bool {
    error_page_for(cf, |s| s >= 500)
}

/// An `error_page` for a status `which` takes in effect in the location being merged.
fn error_page_for(cf: *mut ngx_conf_t, which: impl Fn(ngx_int_t) -> bool) -> bool {
    // SAFETY: cf is live during the merge.
    let Some(c) = NgxHttpCoreModule::location_conf(unsafe { &*cf }) else { return false };
    // SAFETY: error_pages is NULL or core's array of ngx_http_err_page_t in the configuration
    // pool (checked by its element size below).
    let Some(a) = (unsafe { c.error_pages.as_ref() }) else { return false };
    if a.nelts == 0 || a.elts.is_null() {
        return false;
    }
    if a.size != std::mem::size_of::<ngx::ffi::ngx_http_err_page_t>() {
        return true;
    }
    // SAFETY: nelts elements of that type at elts (checked above), alive for the configuration.
    let pages = unsafe { std::slice::from_raw_parts(a.elts.cast::<ngx::ffi::ngx_http_err_page_t>(), a.nelts) };
    pages.iter().any(|p| which(p.status))
}

/// Whether the location being merged is an `if` block (core's configuration of one has no name
/// of its own, like `limit_except`'s, which is not one).
pub fn is_if_block(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf is live during the merge.
    NgxHttpCoreModule::location_conf(unsafe { &*cf }).is_some_and(|c| c.noname() != 0 && c.lmt_excpt() == 0)
}

/// Whether the location being merged is a `limit_except` block: the configuration nginx switches
/// a request to when its method is not one the block names.
pub fn is_limit_except_block(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf is live during the merge.
    NgxHttpCoreModule::location_conf(unsafe { &*cf }).is_some_and(|c| c.lmt_excpt() != 0)
}

/// `satisfy any` in the location being merged (core merges before this module): one passing
/// access check would do, and an `allow` for nginx mail's own address would let every login in.
pub fn satisfy_any(cf: *mut ngx_conf_t) -> bool {
    // SAFETY: cf is live during the merge.
    NgxHttpCoreModule::location_conf(unsafe { &*cf })
        .is_some_and(|c| c.satisfy == ngx::ffi::NGX_HTTP_SATISFY_ANY as ngx::ffi::ngx_uint_t)
}

fn auth_basic_on(cf: &ngx_conf_t) -> bool {
    let Some(m) = find_module(cf, c"ngx_http_auth_basic_module") else { return false };
    // SAFETY: that module's location conf is an ngx_http_auth_basic_loc_conf_t (create_loc_conf).
    let Some(c) = (unsafe { cf.http_location_conf_unchecked::<AuthBasicConf>(m) }) else { return false };
    // SAFETY: see above; it lives in the configuration pool.
    let c = unsafe { c.as_ref() };
    // NULL: "not set anywhere" after the merge; NGX_CONF_UNSET_PTR: not merged yet
    let set = |p: *mut ngx_http_complex_value_t| !p.is_null() && p as usize != usize::MAX;
    if !set(c.realm) || !set(c.user_file) {
        return false;
    }
    // SAFETY: a set realm is a complex value compiled by ngx_http_set_complex_value_slot.
    let realm = unsafe { &*c.realm };
    // "auth_basic off" is a constant realm (no lengths code) "off"
    !(realm.lengths.is_null() && realm.value.as_bytes() == b"off")
}

fn auth_request_on(cf: &ngx_conf_t) -> bool {
    let Some(m) = find_module(cf, c"ngx_http_auth_request_module") else { return false };
    // SAFETY: that module's location conf is an ngx_http_auth_request_conf_t (create_conf).
    let Some(c) = (unsafe { cf.http_location_conf_unchecked::<AuthRequestConf>(m) }) else { return false };
    // SAFETY: see above. Unset (zeroed) and "auth_request off" leave the uri empty.
    unsafe { c.as_ref() }.uri.len > 0
}

/// `Basic base64(user:pass)` from the request's Auth-User/Auth-Pass, or why not.
fn basic_value(view: &HeaderView<'_>) -> Result<Vec<u8>, String> {
    let (user, pass) = view.credentials();
    let user = user.ok_or("no Auth-User header")?;
    let pass = pass.ok_or("no Auth-Pass header")?;
    crate::basic::basic_credentials(user, pass).map_err(|e| e.to_string())
}

unsafe extern "C" fn basic_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls variable handlers with a live request and value slot.
        let req = unsafe { Request::from_ngx_http_request(r) };
        let value = basic_value(&HeaderView::new(util::headers_in(req))).unwrap_or_default();
        // SAFETY: the request pool is live for the request's lifetime.
        let Some(s) = (unsafe { ngx_str_t::from_bytes(req.pool().as_ptr(), &value) }) else {
            return NGX_ERROR as ngx_int_t;
        };
        // SAFETY: `v` is the live slot nginx asked us to fill; data lives in the request pool.
        // (ngx's http_variable_get! would only wrap this signature, without the panic guard.)
        unsafe {
            (*v).data = s.data;
            (*v).set_len(s.len as _);
            (*v).set_valid(1);
            (*v).set_no_cacheable(0);
            (*v).set_not_found(0);
            (*v).set_escape(0);
        }
        NGX_OK as ngx_int_t
    })
}

unsafe extern "C" fn preaccess_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // a caught panic: a mail_auth location's temporary failure (not a 5xx an error_page would
    // take), as the content handler's
    super::handler::guard_request(
        r,
        || preaccess(r),
        |rc| {
            // SAFETY: `r` is the live request this phase handler was given; after finalizing it,
            // the phase returns NGX_DONE and nginx touches it no more.
            unsafe { ngx::ffi::ngx_http_finalize_request(r, rc) };
            NGX_DONE as ngx_int_t
        },
    )
}

fn preaccess(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: phase handlers get a live request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let Some(lc) = Module::location_conf(req) else {
        return NGX_DECLINED as ngx_int_t;
    };
    if !lc.is_mail_auth() || !lc.basic_header() || !req.is_main() {
        return NGX_DECLINED as ngx_int_t;
    }
    // before auth_basic/auth_request answer a page that rebinds its name to this address
    // (a right password and a wrong one told apart): a temporary failure, not counted
    if util::foreign_host(r, req, &lc.host_names, ngx::ffi::NGX_LOG_ERR as ngx_uint_t, "mail_auth") {
        let rc = match lc.engine.as_ref() {
            Some(engine) => super::handler::temporary_failure(r, engine),
            None => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        };
        // SAFETY: `r` is the live request this phase handler was given; after finalizing
        // it, the phase returns NGX_DONE and nginx touches it no more.
        unsafe { ngx::ffi::ngx_http_finalize_request(r, rc) };
        return NGX_DONE as ngx_int_t;
    }
    // what does not depend on the password is decided before auth_basic/auth_request
    // check it: the transport policy and the limiter's bans (the content handler answers
    // anything else, a method other than GET/HEAD included)
    let get = matches!(req.method(), Method::GET | Method::HEAD);
    let view = HeaderView::new(util::headers_in(req));
    if let (Some(engine), true) = (lc.engine.as_ref(), get) {
        if let Some(d) = engine.bridge_precheck(&view, util::log_ctx(req.log())) {
            let rc = req.discard_request_body();
            let rc = if rc == ngx::core::Status::NGX_OK { super::handler::send(r, &d) } else { rc.0 };
            // as the content phase does with its handler's status: the request is over
            // SAFETY: `r` is the live request this phase handler was given; after
            // finalizing it, the phase returns NGX_DONE and nginx touches it no more.
            unsafe { ngx::ffi::ngx_http_finalize_request(r, rc) };
            return NGX_DONE as ngx_int_t;
        }
    }
    // only an auth_http request (a GET whose headers parse) has its password checked:
    // anything else gets no credentials, whatever it carries, so auth_basic answers 401
    // to a right password as to a wrong one (no oracle past the limiter's bans, which only
    // an auth_http request is checked against)
    let checked = if get && view.request().is_ok() {
        basic_value(&view)
    } else {
        Err("not an auth_http request (a GET with Auth-Method, Auth-User, Auth-Pass, Auth-Protocol)".into())
    };
    let value = match checked {
        Ok(v) => Some(v),
        Err(e) => {
            // No usable credentials: no Authorization at all (not even one the client
            // sent), so auth_basic answers 401 and the header filter turns that into a
            // failed login.
            ngx_log_error!(lc.log_level(), req.log(), "mail_auth: no Basic credentials for this request: {e}");
            None
        }
    };
    if util::set_authorization_in(r, value.as_deref()).is_none() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    NGX_DECLINED as ngx_int_t
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    let converted = guard(Err(()), || convert_refusal(r));
    if converted.is_err() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: NEXT_HEADER_FILTER was set in postconfiguration before any request runs.
    match unsafe { NEXT_HEADER_FILTER } {
        Some(next) => unsafe { next(r) },
        None => NGX_OK as ngx_int_t,
    }
}

/// In a `mail_auth` location, a 5xx becomes a temporary failure, and in a Basic-bridge location
/// (`mail_auth_basic_header on`) a 401 (auth_basic, auth_request: their verdict on the
/// password) a failed login ("Invalid login or password", with the protocol's response code,
/// counted by the limiter) and a 403 (auth_basic's user file missing, `deny`: no verdict on the
/// password) a temporary failure, not counted: nginx mail then tells the client, waits
/// Auth-Wait, and never sees an HTTP error. Elsewhere a 401/403 (`deny`, an access check that
/// never saw the password) says nothing about a password: it stays an HTTP error (nginx mail
/// logs it and answers a temporary failure), and the user and client address it names are not
/// counted.
fn convert_refusal(r: *mut ngx_http_request_t) -> Result<(), ()> {
    // SAFETY: header filters get a live request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    if !req.is_main() {
        return Ok(());
    }
    let Some(lc) = Module::location_conf(req) else { return Ok(()) };
    // only auth_http answers (a mail_auth_json location has an engine too: its 403/503 must stay)
    if !lc.is_mail_auth() {
        return Ok(());
    }
    let Some(engine) = lc.engine.as_ref() else { return Ok(()) };
    // the module decided already (its answer's headers are in): one decision per answer
    if super::handler::answered(req) {
        return Ok(());
    }
    // SAFETY: reading the status of the live request.
    let status = unsafe { (*r).headers_out.status };
    match status as u32 {
        500.. => {}
        NGX_HTTP_UNAUTHORIZED | NGX_HTTP_FORBIDDEN if lc.basic_header() => {}
        _ => return Ok(()),
    }
    let view = HeaderView::new(util::headers_in(req));
    let Some(decision) = engine.bridge_refusal(&view, status as u16, util::log_ctx(req.log())) else {
        // Not an auth_http request at all (no Auth-Protocol): leave the HTTP error alone.
        return Ok(());
    };
    super::handler::log_decision(req, &decision);
    let crate::engine::Reply::Answer(response) = decision.reply else { return Ok(()) };
    // SAFETY: the live request's output headers; hash = 0 makes nginx skip a header, which is
    // how WWW-Authenticate from auth_basic is dropped.
    unsafe {
        let wa = (*r).headers_out.www_authenticate;
        if !wa.is_null() {
            (*wa).hash = 0;
        }
        (*r).headers_out.status = NGX_HTTP_OK as ngx_uint_t;
        (*r).headers_out.status_line.len = 0;
        (*r).err_status = 0;
    }
    for (k, v) in response.headers() {
        util::push_header_out(r, k, &v).ok_or(())?;
    }
    Ok(())
}
