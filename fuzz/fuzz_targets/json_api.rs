//! The JSON API's request body (`mail_auth_json`, Dovecot's Lua passdb/userdb): parsing and the
//! engine request made from it.
//!
//! Input: the request body.
//!
//! Invariants: nothing panics; a request made from a body has a non-empty user without control
//! characters and a password without NUL, within the auth_http size caps; the answers built
//! from what was parsed are JSON that parses back to the same values.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::protocol::json::{auth_request, error_body, lookup_user, ok_body, parse_body};
use ngx_http_mail_auth_module::protocol::{MAX_PASS_LEN, MAX_USER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(j) = parse_body(data) else { return };
    if let Ok(r) = auth_request(&j) {
        assert!(!r.user.is_empty() && r.user.len() <= MAX_USER_LEN);
        assert!(!r.user.chars().any(char::is_control), "control char in {:?}", r.user);
        assert!(!r.pass.contains(&0) && r.pass.len() <= MAX_PASS_LEN);
    }
    if let Ok((user, _)) = lookup_user(&j) {
        assert!(!user.chars().any(char::is_control));
        let attrs = vec![(j.service.clone(), vec![j.method.clone(), j.client_id.clone()])];
        let v: serde_json::Value = serde_json::from_str(&ok_body(&user, &attrs)).expect("ok body is JSON");
        assert_eq!(v["account"], serde_json::Value::String(user.clone()));
        assert_eq!(v["attributes"][&j.service][1], serde_json::Value::String(j.client_id.clone()));
        let e: serde_json::Value = serde_json::from_str(&error_body(&j.ssl_protocol)).expect("error body is JSON");
        assert_eq!(e["error"], serde_json::Value::String(j.ssl_protocol.clone()));
    }
});
