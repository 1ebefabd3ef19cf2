//! htpasswd / Dovecot passwd-file parsing: the whole file (`passwd_file::parse`) and each line
//! (`passwd_file::parse_line`), checked against each other.
//!
//! Input: the file's content.
//!
//! Invariants: a user name is non-empty, without ':' or control characters (so no CR/LF/NUL);
//! a password field is non-empty without ':' or CR/LF; port is never 0; extra-field keys and values have
//! no blanks; an answer built from an account never carries CR/LF/NUL; a notice is one log line
//! (no CR/LF) and their number is capped; every good line's user is in the result, and the
//! first good definition of a user is exactly the account returned.

#![no_main]
#![forbid(unsafe_code)]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::protocol::{AuthResponse, ServerAddr};
use ngx_http_mail_auth_module::store::passwd_file::{parse, parse_app_line, parse_line};
use ngx_http_mail_auth_module::store::valid_label;
use ngx_http_mail_auth_module::store::Account;

/// Per-line notices kept per load (MAX_LINE_NOTICES in passwd_file.rs), plus the summary line.
const MAX_NOTICES: usize = 50 + 1;

fn check_user(user: &str) {
    assert!(!user.is_empty());
    assert!(!user.chars().any(char::is_control), "control char in user {user:?}");
    assert!(!user.contains(':'), "':' in user {user:?}");
}

fn check_account(a: &Account) {
    assert!(!a.password.is_empty());
    assert!(!a.password.contains([':', '\r', '\n']), "password field {:?}", a.password);
    assert!(a.port != Some(0));
    if let Some(u) = &a.backend_user {
        assert!(!u.is_empty());
    }
    for (k, v) in &a.extra {
        assert!(!k.chars().any(char::is_whitespace) && !v.chars().any(char::is_whitespace));
    }
    // What nginx would get back for this account never holds CR/LF/NUL.
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
}

fuzz_target!(|data: &[u8]| {
    let (users, notices) = parse("f", data);

    assert!(notices.len() <= MAX_NOTICES, "{} notices", notices.len());
    for n in &notices {
        assert!(!n.message.contains(['\r', '\n']), "CR/LF in notice {:?}", n.message);
    }
    for (user, acct) in &users {
        check_user(user);
        check_account(acct);
    }

    // Line by line, as parse() reads them.
    let body = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let mut seen = HashSet::new();
    for raw in body.split(|&b| b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(line) = std::str::from_utf8(raw) else {
            continue;
        };
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut warnings = Vec::new();
        if let Ok((user, acct)) = parse_line(line, &mut warnings) {
            check_user(&user);
            check_account(&acct);
            let got = users.get(&user);
            assert!(got.is_some(), "user {user:?} of a good line missing");
            if seen.insert(user.clone()) {
                assert_eq!(got, Some(&acct), "user {user:?}");
            }
        }
        for w in &warnings {
            assert!(!w.contains(['\r', '\n']), "CR/LF in warning {w:?}");
        }
        // the same line as an app passwords file line: a good one has a usable user and label
        if let Ok((user, app)) = parse_app_line(line) {
            check_user(&user);
            assert!(valid_label(&app.label), "label {:?}", app.label);
            assert!(!app.password.is_empty() && !app.password.contains(['\r', '\n']));
        }
    }
    assert_eq!(seen.len(), users.len());
});
