//! Bearer tokens (XOAUTH2/OAUTHBEARER `Auth-Pass`): the JWT verifier on arbitrary bytes (compact
//! form, base64url, header JSON, alg and kid selection, signature, claims) with the unit tests'
//! JWKS, and the `mail_auth_oauth2` directive parser.
//! Invariants: no panic; whatever verifies is a token of the test keys for the asked user (ASCII
//! case aside); every refusal has an RFC 7628 error that is base64 of JSON with a known status.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::oauth::{self, OauthConfig, Verifier};

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let v = VERIFIER.get_or_init(|| {
        let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/oauth/testdata/jwks.json");
        let mut c = OauthConfig::new(jwks.into(), "https://idp.example".into(), "mail".into());
        c.skew = u64::MAX / 4; // the test tokens are from 2023
        c.scope = Some("mail.access".into());
        Verifier::new(c).expect("the unit tests' JWKS loads")
    });
    match v.verify(data, "alice@example.org", 1_700_000_000) {
        Ok(t) => assert!(t.user.eq_ignore_ascii_case("alice@example.org"), "{t:?}"),
        Err(e) => {
            let json = base64::engine::general_purpose::STANDARD.decode(v.error_sasl(&e)).expect("base64");
            let j: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
            assert!(j["status"] == "invalid_token" || j["status"] == "insufficient_scope", "{j}");
            assert!(!e.to_string().contains(|c: char| c.is_control()), "{e}");
        }
    }
    let s = String::from_utf8_lossy(data);
    let args: Vec<&str> = s.split(' ').collect();
    if let Ok(c) = oauth::parse_directive(&args, |p| p.to_string()) {
        assert!(!c.issuer.is_empty() && !c.audience.is_empty() && !c.user_claim.is_empty());
    }
});
