//! The benchmark's floor (`scripts/bench`): what any content handler written on ngx-rust costs
//! nginx for an auth_http request, before it does any work of its own.
//!
//! `mail_auth_floor;` in a location makes this module's content handler answer every GET/HEAD
//! request there with a static `Auth-Status: OK` (and a fixed backend), checking nothing. It
//! goes through nginx's phases to the content phase as `mail_auth` does, where the benchmark's
//! ceiling (`return 204` with static headers) answers in the rewrite phase. The gap between the
//! ceiling and this floor is the price of being a content handler at all (with `mail_auth`
//! loaded beside it, its access-phase hook included); the gap between this floor and
//! `mail_auth` is the module's own work.
//!
//! Its header push repeats the shape of `src/nginx/util.rs`'s `push_header_out` (static name,
//! here a static value too): a separate crate cannot call into the module's FFI layer.
//!
//! It authenticates nobody: it exists for the benchmark, which builds it and loads it on
//! loopback only. It is not part of the module, its package or its tests.

use std::ffi::{c_char, c_void};
use std::ptr::{addr_of, addr_of_mut, null_mut};

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_module_t, ngx_http_request_t, ngx_int_t, ngx_list_push, ngx_module_t,
    ngx_str_t, ngx_table_elt_t, ngx_uint_t, NGX_CONF_NOARGS, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_LOC_CONF,
    NGX_HTTP_MODULE, NGX_HTTP_NOT_ALLOWED,
};
use ngx::http::{HttpModuleLocationConf, Method, NgxHttpCoreModule, Request};

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: None,
    merge_loc_conf: None,
};

static mut COMMANDS: [ngx_command_t; 2] = [
    ngx_command_t {
        name: ngx::ngx_string!("mail_auth_floor"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_floor),
        conf: 0,
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t::empty(),
];

ngx::ngx_modules!(ngx_http_mail_auth_floor_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_mail_auth_floor_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(CTX) as _,
    // SAFETY: only the address is taken; nginx reads the table while loading configuration.
    commands: unsafe { addr_of_mut!(COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as _,
    ..ngx_module_t::default()
};

extern "C" fn set_floor(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx hands a directive's handler the live configuration being parsed.
    let Some(clcf) = NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) else {
        return c"no http core location configuration".as_ptr().cast_mut();
    };
    clcf.handler = Some(floor_handler);
    null_mut() // NGX_CONF_OK
}

/// The static answer, header by header (names and values live as long as the module).
const ANSWER: [(&str, &str); 3] = [("Auth-Status", "OK"), ("Auth-Server", "127.0.0.1"), ("Auth-Port", "143")];

/// What `mail_auth`'s handler does around its decision, without the decision: GET/HEAD only,
/// the body discarded, the headers pushed, a header-only 200 sent.
unsafe extern "C" fn floor_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live, non-null request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    if !matches!(req.method(), Method::GET | Method::HEAD) {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    let rc = req.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }
    for (key, value) in ANSWER {
        // SAFETY: headers_out is initialised before any content handler runs; the name and the
        // value are static text, which nginx only reads.
        unsafe {
            let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
            if h.is_null() {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            }
            (*h).key = ngx_str_t { len: key.len(), data: key.as_ptr().cast_mut() };
            (*h).value = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
            (*h).hash = 1;
            (*h).lowcase_key = null_mut();
            // (the field nginx 1.23 added; this crate builds only against the vendored nginx 1.28)
            (*h).next = null_mut();
        }
    }
    req.set_status(ngx::http::HTTPStatus::OK);
    req.set_content_length_n(0);
    // SAFETY: `r` is the live request; a header-only answer, as nginx's own handlers send.
    unsafe { (*r).set_header_only(1) };
    req.send_header().0
}
