//! Password scheme parsing and verification: input = stored form, NUL, password. Costly
//! stored forms (bcrypt, argon2, SHA-crypt > 5000 rounds) are skipped so a run is not spent
//! hashing. Invariants: no panic; a recoverable stored password verifies and a different one
//! does not; challenge checks never panic and only succeed for the right response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::scheme::{self, Challenge};

fuzz_target!(|data: &[u8]| {
    let (stored, password) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let stored = String::from_utf8_lossy(stored);
    if scheme::is_costly(&stored) {
        return;
    }
    let _ = scheme::scheme_name(&stored);
    let verdict = scheme::verify(&stored, password);
    if let Some(plain) = scheme::plain_password(&stored) {
        assert_eq!(scheme::verify(&stored, &plain), Ok(true), "stored password must verify");
        let mut other = plain.clone();
        other.push(b'x');
        assert_eq!(scheme::verify(&stored, &other), Ok(false), "another password must not");
        assert_eq!(verdict == Ok(true), password == plain.as_slice());
    }
    let salt = b"<1.2@fuzz>";
    for kind in [Challenge::Apop, Challenge::CramMd5] {
        let _ = scheme::verify_challenge(kind, &stored, salt, password);
        if let Some(plain) = scheme::plain_password(&stored) {
            let right = scheme::challenge_response(kind, &plain, salt);
            assert_eq!(scheme::verify_challenge(kind, &stored, salt, right.as_bytes()), Ok(true));
        }
    }
});
