//! The SQLite row mapping (column name/value pairs to an account): input lines "name=value",
//! "name" alone for NULL. Invariants: no panic; an account's server is an IP literal nginx can
//! use and its port is not 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::protocol;
use ngx_http_mail_auth_module::store::sqlite;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let cols: Vec<(String, Option<String>)> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (l.to_ascii_lowercase(), None),
        })
        .collect();
    if let Ok(acct) = sqlite::map_row(&cols) {
        if let Some(s) = &acct.server {
            assert!(protocol::parse_server(s).is_some(), "unusable server {s:?}");
        }
        assert_ne!(acct.port, Some(0));
    }
});
