//! Password schemes: parsing and verification of stored values (`scheme::verify`,
//! `is_costly`, `cost_estimate`, `scheme_name`, `plain_password`, `verify_challenge`).
//!
//! Input: `STORED NUL PASSWORD [NUL CHALLENGE]` (STORED read as UTF-8, lossily; the password
//! is the bytes up to the next NUL or the end). Stored values `is_costly` calls slow (bcrypt,
//! Argon2, SHA-crypt over 5000 rounds) are not verified, so that a run is not spent in key
//! stretching; their parsers still run (is_costly parses).
//!
//! Invariants: hashes made from the password verify with it and not with another; an unknown
//! scheme never verifies; a stored password ({PLAIN}, {CLEARTEXT}, .B64/.HEX ...) matches
//! exactly that password (verify and APOP), never another; a {CRAM-MD5} value matches a password
//! iff that password's CRAM-MD5 response is accepted; only plain and CRAM-MD5 values answer
//! challenges; `cost_estimate` (how the stores pick the timing template unknown users are
//! verified against) is 0 exactly for values that do not parse, never for a costly one, and for
//! a cheap one exactly when `verify` refuses it.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::scheme::{
    challenge_response, cost_estimate, cram_md5_stored, hash_password, is_costly, plain_password, scheme_name, verify,
    verify_challenge, Challenge, ChallengeError, HashKind,
};

const DEFAULT_CHALLENGE: &[u8] = b"<1896.697170952@dbc.mtview.ca.us>";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let (stored, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (password, challenge) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, DEFAULT_CHALLENGE),
    };
    let stored = String::from_utf8_lossy(stored);
    let stored = stored.as_ref();

    // Hashes made here from the fuzzed password verify with it, and only with it.
    let other: Vec<u8> = [password, b"x"].concat();
    let ssha = hash_password(HashKind::Ssha512, password).unwrap();
    assert_eq!(verify(&ssha, password), Ok(true));
    assert_eq!(verify(&ssha, &other), Ok(false));
    let cram = cram_md5_stored(password);
    assert_eq!(verify(&cram, password), Ok(true));
    let plain_hex = format!("{{PLAIN.HEX}}{}", hex(password));
    assert_eq!(plain_password(&plain_hex).as_deref(), Some(password));
    for kind in [Challenge::Apop, Challenge::CramMd5] {
        let resp = challenge_response(kind, password, challenge);
        assert_eq!(verify_challenge(kind, &plain_hex, challenge, resp.as_bytes()), Ok(true));
        let upper = resp.to_uppercase();
        assert_eq!(verify_challenge(kind, &plain_hex, challenge, upper.as_bytes()), Ok(true));
    }

    // The cost estimate: 0 for what does not parse (and only for that), never for a costly one.
    let name = scheme_name(stored);
    let cost = cost_estimate(stored);
    assert_eq!(cost == 0, name == "unknown", "{stored:?}: cost {cost}");
    if is_costly(stored) {
        assert!(cost > 0, "{stored:?}");
        return;
    }

    let result = verify(stored, password);
    if name == "unknown" {
        assert!(result.is_err(), "{stored:?}: unknown scheme verified: {result:?}");
    }
    if result.is_ok() {
        assert_ne!(name, "unknown");
    }
    // A cheap value verify() can use has a cost; one it refuses has none.
    assert_eq!(cost == 0, result.is_err(), "{stored:?}: cost {cost}, {result:?}");

    // A stored password: matches exactly that password and no other.
    if let Some(p) = plain_password(stored) {
        assert_eq!(name, "PLAIN");
        assert_eq!(result, Ok(p == password), "{stored:?}");
        assert_eq!(verify(stored, &p), Ok(true));
        for kind in [Challenge::Apop, Challenge::CramMd5] {
            let good = challenge_response(kind, &p, challenge);
            assert_eq!(verify_challenge(kind, stored, challenge, good.as_bytes()), Ok(true));
            let resp = challenge_response(kind, password, challenge);
            let r = verify_challenge(kind, stored, challenge, resp.as_bytes());
            if kind == Challenge::Apop || p == password {
                assert_eq!(r, Ok(p == password));
            } else {
                // HMAC keys that differ only by trailing NULs (or a >64-byte key and its MD5)
                // are the same key: a match is possible there, never an error.
                assert!(r.is_ok());
            }
        }
    }

    // {CRAM-MD5} key states: a password matches iff its CRAM-MD5 response is accepted.
    if name == "CRAM-MD5" {
        let matches = result.clone().unwrap();
        let resp = challenge_response(Challenge::CramMd5, password, challenge);
        assert_eq!(verify_challenge(Challenge::CramMd5, stored, challenge, resp.as_bytes()), Ok(matches));
        assert!(matches!(
            verify_challenge(Challenge::Apop, stored, challenge, resp.as_bytes()),
            Err(ChallengeError::Unsuitable(_))
        ));
    }

    // Any response (the fuzzed password as the client's hex digits) is checked without panic;
    // only plain and CRAM-MD5 stored values can answer a challenge.
    for kind in [Challenge::Apop, Challenge::CramMd5] {
        if verify_challenge(kind, stored, challenge, password).is_ok() {
            assert!(name == "PLAIN" || (name == "CRAM-MD5" && kind == Challenge::CramMd5));
        }
    }
});
