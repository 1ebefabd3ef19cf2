//! Small parsers of values that reach the module from configuration or from auth_http
//! headers: certificate subjects, SMTP addresses, domains, backends, zones, times, rates.
//! Invariants: no panic; a parsed domain is lower case; a parsed backend has a usable server.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::{config, engine, limiter, protocol, smtp};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = engine::subject_cn(&s);
    // a recipient that parses has an ASCII lower-case domain, printable when shown
    if let Ok(r) = smtp::rcpt_target(&s) {
        if let Some(d) = r.domain() {
            assert!(!d.is_empty() && d.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()), "{d:?}");
        }
        assert!(protocol::printable(r.to_string().as_bytes(), 2048).bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    let _ = smtp::mail_from(&s);
    if let Ok(d) = config::parse_domain(&s) {
        assert_eq!(d, d.to_ascii_lowercase());
    }
    if let Ok(b) = config::parse_backend(&s, 143) {
        assert!(protocol::parse_server(b.server.as_str()).is_some() && b.port != 0);
    }
    let _ = config::parse_zone(&s);
    let _ = config::parse_seconds(&s);
    let _ = limiter::parse_rate(&s);
    let _ = protocol::printable(data, 64);
});
