//! SQLite store: the mapping of a result row to an account (`store::sqlite::map_row`). It takes
//! the columns as SqliteStore::lookup hands them over (lower-cased name, value as text, NULL =
//! None), so no database is needed.
//!
//! Input: one column per line: `name=value`, or `name` alone for NULL. Names are lower-cased
//! and values read as UTF-8 lossily, as lookup does.
//!
//! Invariants: an error (nginx logs it) has no control characters (CR, LF, NUL ...); an
//! account has the row's password (NULL/'' -> a value that never verifies); enabled unless a
//! non-NULL `enabled` says otherwise; port never 0; server an IP literal; backend user/pass
//! never ''; known columns never land in `extra`; an answer built from the account never
//! carries CR/LF/NUL.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::protocol::{parse_server, AuthResponse, ServerAddr};
use ngx_http_mail_auth_module::scheme::scheme_name;
use ngx_http_mail_auth_module::store::sqlite::map_row;

const KNOWN: &[&str] =
    &["password", "enabled", "protocols", "networks", "server", "port", "user", "backend_pass", "wait"];

fuzz_target!(|data: &[u8]| {
    let cols: Vec<(String, Option<String>)> = data
        .split(|&b| b == b'\n')
        .map(|line| {
            let (name, value) = match line.iter().position(|&b| b == b'=') {
                Some(i) => (&line[..i], Some(&line[i + 1..])),
                None => (line, None),
            };
            (String::from_utf8_lossy(name).to_ascii_lowercase(), value.map(|v| String::from_utf8_lossy(v).into_owned()))
        })
        .collect();
    // The last column of that name (map_row lets later columns win).
    let value = |name: &str| cols.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_deref());

    let a = match map_row(&cols) {
        Ok(a) => a,
        Err(e) => {
            // The reason goes into nginx's error log: one line, no raw control characters.
            assert!(!e.chars().any(char::is_control), "control character in error {e:?}");
            return;
        }
    };

    let password = value("password").expect("Ok without a password column");
    assert!(!a.password.is_empty());
    match password {
        None | Some("") => assert_eq!(scheme_name(&a.password), "unknown"),
        Some(p) => assert_eq!(a.password, p),
    }
    // (a NULL column is skipped, so only non-NULL `enabled` values count)
    if cols.iter().all(|(n, v)| n != "enabled" || v.is_none()) {
        assert!(a.enabled);
    }
    assert!(a.port != Some(0));
    if let Some(s) = &a.server {
        assert!(parse_server(s).is_some(), "server {s:?}");
    }
    assert!(a.backend_user.as_deref() != Some(""));
    assert!(a.backend_pass.as_deref() != Some(""));
    for (n, _) in &a.extra {
        assert!(!KNOWN.contains(&n.as_str()), "known column {n:?} in extra");
    }

    let answer = AuthResponse::Ok {
        // (a server that is no IP literal never reaches an answer: a temporary failure instead)
        server: a.server.as_deref().and_then(ServerAddr::parse).unwrap_or_else(|| ServerAddr::parse("127.0.0.1").unwrap()),
        port: a.port.unwrap_or(143),
        user: a.backend_user.clone(),
        pass: a.backend_pass.clone().map(String::into_bytes),
    };
    for (_, v) in answer.headers() {
        assert!(!v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
    }
});
