//! Tokens and JWKS made by `testdata/gen.sh` (keys from openssl, tokens by python3-jwt), all
//! verified at a fixed `NOW`.

use super::*;
use crate::testutil::TempDir;
use std::path::Path;

const NOW: u64 = 1_700_000_000;
const EXP: u64 = 1_700_003_600;

fn token(name: &str) -> &'static str {
    include_str!("testdata/tokens.txt")
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no token {name}"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/oauth/testdata").join(name)
}

fn cfg() -> OauthConfig {
    OauthConfig::new(data("jwks.json"), "https://idp.example".into(), "mail".into())
}

fn verifier() -> Verifier {
    Verifier::new(cfg()).expect("jwks loads")
}

#[test]
fn every_algorithm_verifies() {
    let v = verifier();
    for name in ["rs256", "ps256", "es256", "eddsa", "hs256", "nokid"] {
        let r = v.verify(token(name).as_bytes(), "alice@example.org", NOW);
        assert_eq!(r, Ok(Verified { user: "Alice@Example.org".into(), exp: EXP }), "{name}");
    }
}

#[test]
fn user_compared_ascii_case_insensitively() {
    let v = verifier();
    assert!(v.verify(token("rs256").as_bytes(), "ALICE@EXAMPLE.ORG", NOW).is_ok());
    assert_eq!(v.verify(token("rs256").as_bytes(), "bob@example.org", NOW), Err(TokenError::UserMismatch));
    assert_eq!(v.verify(token("rs256").as_bytes(), "alice@example.org ", NOW), Err(TokenError::UserMismatch));
}

#[test]
fn time_rules_with_skew() {
    let v = verifier();
    let t = token("rs256").as_bytes();
    assert!(v.verify(t, "alice@example.org", EXP + 59).is_ok(), "inside the 60 s skew");
    assert_eq!(v.verify(t, "alice@example.org", EXP + 60), Err(TokenError::Expired));
    // nbf 1699999000
    assert!(v.verify(t, "alice@example.org", 1_699_999_000 - 60).is_ok());
    assert_eq!(v.verify(t, "alice@example.org", 1_699_999_000 - 61), Err(TokenError::NotYetValid));
    let mut c = cfg();
    c.skew = 0;
    let v0 = Verifier::new(c).unwrap();
    assert_eq!(v0.verify(t, "alice@example.org", EXP), Err(TokenError::Expired));
    assert_eq!(
        v.verify(token("noexp").as_bytes(), "alice@example.org", NOW),
        Err(TokenError::MissingClaim("exp".into()))
    );
}

#[test]
fn issuer_and_audience() {
    let mut c = cfg();
    c.issuer = "https://other.example".into();
    let v = Verifier::new(c).unwrap();
    assert_eq!(v.verify(token("rs256").as_bytes(), "alice@example.org", NOW), Err(TokenError::WrongIssuer));
    let mut c = cfg();
    c.audience = "other".into();
    let v = Verifier::new(c).unwrap();
    assert_eq!(v.verify(token("rs256").as_bytes(), "alice@example.org", NOW), Err(TokenError::WrongAudience));
    // aud as an array
    assert!(verifier().verify(token("noscope").as_bytes(), "alice@example.org", NOW).is_ok());
}

#[test]
fn scope() {
    let mut c = cfg();
    c.scope = Some("mail.access".into());
    c.openid_configuration = Some("https://idp.example/.well-known/openid-configuration".into());
    let v = Verifier::new(c).unwrap();
    assert!(v.verify(token("rs256").as_bytes(), "alice@example.org", NOW).is_ok());
    let e = v.verify(token("noscope").as_bytes(), "alice@example.org", NOW).unwrap_err();
    assert_eq!(e, TokenError::InsufficientScope);
    let json = String::from_utf8(STANDARD.decode(v.error_sasl(&e)).unwrap()).unwrap();
    let j: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(j["status"], "insufficient_scope");
    assert_eq!(j["scope"], "mail.access");
    assert_eq!(j["openid-configuration"], "https://idp.example/.well-known/openid-configuration");
    // scp array, sub as the mailbox claim
    let mut c = cfg();
    c.scope = Some("mail.access".into());
    c.user_claim = "sub".into();
    let v = Verifier::new(c).unwrap();
    assert_eq!(v.verify(token("sub").as_bytes(), "Bob", NOW).map(|v| v.user), Ok("bob".into()));
    assert_eq!(
        v.verify(token("rs256").as_bytes(), "alice@example.org", NOW),
        Err(TokenError::MissingClaim("sub".into()))
    );
}

#[test]
fn attacks_refused() {
    let v = verifier();
    let u = "alice@example.org";
    assert_eq!(v.verify(token("wrongkey").as_bytes(), u, NOW), Err(TokenError::BadSignature));
    assert_eq!(v.verify(token("none").as_bytes(), u, NOW), Err(TokenError::Alg("none".into())));
    // HS256 keyed with the RSA public key: r1 allows only RS*/PS*
    assert_eq!(v.verify(token("confusion").as_bytes(), u, NOW), Err(TokenError::Alg("HS256".into())));
    // RS256 with an EC key's kid
    assert_eq!(v.verify(token("es-as-rs").as_bytes(), u, NOW), Err(TokenError::Alg("RS256".into())));
    assert_eq!(v.verify(token("unknownkid").as_bytes(), u, NOW), Err(TokenError::UnknownKid));
    assert_eq!(v.verify(token("rs256-r2").as_bytes(), u, NOW), Err(TokenError::UnknownKid));
    for bad in ["", "a.b", "a.b.c.d", "!!!.x.y", "password"] {
        assert!(matches!(v.verify(bad.as_bytes(), u, NOW), Err(TokenError::Malformed(_))), "{bad}");
    }
    // a valid token with its payload swapped
    let t = token("rs256");
    let other = token("noscope");
    let mut parts: Vec<&str> = t.split('.').collect();
    parts[1] = other.split('.').nth(1).unwrap();
    assert_eq!(v.verify(parts.join(".").as_bytes(), u, NOW), Err(TokenError::BadSignature));
    let e = TokenError::BadSignature;
    assert_eq!(STANDARD.decode(v.error_sasl(&e)).unwrap(), br#"{"status":"invalid_token"}"#);
}

/// A verifier on a copy of the test JWKS in a directory of its own (`dir`, `path`), which
/// verifies the RSA test token.
fn verifier_on_a_jwks_copy(tag: &str) -> (TempDir, std::path::PathBuf, Verifier) {
    let dir = TempDir::new(&format!("oauth-{tag}"));
    let path = dir.join("jwks.json");
    std::fs::copy(data("jwks.json"), &path).unwrap();
    let mut c = cfg();
    c.jwks = Some(path.clone());
    let v = Verifier::new(c).unwrap();
    assert!(v.verify(token("rs256").as_bytes(), "alice@example.org", NOW).is_ok());
    (dir, path, v)
}

#[test]
fn jwks_rotation_and_broken_files() {
    let (dir, path, v) = verifier_on_a_jwks_copy("test");
    let u = "alice@example.org";
    // rotate: replace the file (rename), then wait out the recheck interval
    let tmp = dir.join("new");
    std::fs::copy(data("jwks2.json"), &tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    // the watcher thread (started by the first verification) re-reads it within a second
    let t = Instant::now();
    while v.verify(token("rs256-r2").as_bytes(), u, NOW).is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "re-read by the watcher");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(v.verify(token("rs256").as_bytes(), u, NOW), Err(TokenError::UnknownKid));
    // a broken file keeps the last good keys
    std::fs::write(&tmp, b"{not json").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t = Instant::now();
    while !v.take_notices().iter().any(|(w, n)| *w && n.contains("keeping the 1 key(s)")) {
        assert!(t.elapsed() < Duration::from_secs(5), "the broken file noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(v.verify(token("rs256-r2").as_bytes(), u, NOW).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
    // never parsed: a configuration error
    let mut c = cfg();
    c.jwks = Some(dir.join("absent.json"));
    assert!(Verifier::new(c).is_err());
}

#[test]
fn a_jwks_over_a_mebibyte_is_refused_unread() {
    let d = TempDir::new("jwks-big");
    // the test key set, padded with white space past the bound (valid JSON all the same)
    let mut text = std::fs::read(data("jwks.json")).unwrap();
    text.resize(MAX_JWKS_BYTES as usize + 1, b' ');
    let mut c = cfg();
    c.jwks = Some(d.file("big.json", &text));
    let e = Verifier::new(c).expect_err("too large");
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    text.truncate(MAX_JWKS_BYTES as usize);
    let mut c = cfg();
    c.jwks = Some(d.file("at-the-bound.json", &text));
    assert!(Verifier::new(c).is_ok(), "at the bound: read");
}

#[test]
fn jwk_rules() {
    let bad = [
        (r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#, "shorter than 2048"),
        (r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#, "P-521"),
        (r#"{"kty":"oct","k":"c2hvcnQ"}"#, "shorter than 256"),
        (r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#, "Ed25519 only"),
        (r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","use":"enc"}"#, "not sig"),
    ];
    for (j, why) in bad {
        let e = parse_jwk(&serde_json::from_str(j).unwrap()).err().unwrap();
        assert!(e.contains(why), "{j}: {e}");
    }
    let jwks: Value = serde_json::from_str(include_str!("testdata/jwks.json")).unwrap();
    let mut rsa = jwks["keys"][0].clone();
    rsa["alg"] = "HS256".into();
    assert!(parse_jwk(&rsa).err().unwrap().contains("does not fit"));
    rsa["alg"] = "PS256".into();
    assert_eq!(parse_jwk(&rsa).unwrap().algs, vec![Algorithm::PS256]);
    assert!(parse_jwks(b"{\"keys\":[]}").unwrap().0.is_empty());
}

#[test]
fn directive() {
    let r = |p: &str| format!("/prefix/{p}");
    let c = parse_directive(&["jwks=k.json", "issuer=https://idp", "audience=mail"], r).unwrap();
    assert_eq!(c, OauthConfig::new("/prefix/k.json".into(), "https://idp".into(), "mail".into()));
    let c = parse_directive(
        &[
            "issuer=i",
            "audience=a",
            "jwks=/k",
            "scope=mail",
            "user_claim=sub",
            "clock_skew=2m",
            "openid_configuration=https://x/",
        ],
        r,
    )
    .unwrap();
    assert_eq!((c.scope.as_deref(), c.user_claim.as_str(), c.skew), (Some("mail"), "sub", 120));
    assert_eq!(c.openid_configuration.as_deref(), Some("https://x/"));
    for bad in [
        &["issuer=i", "audience=a"][..],
        &["jwks=/k", "audience=a"],
        &["jwks=/k", "issuer=i"],
        &["jwks=/k", "issuer=i", "audience=a", "audience=b"],
        &["jwks=/k", "issuer=i", "audience=a", "colour=red"],
        &["jwks=/k", "issuer=i", "audience=a", "clock_skew=forever"],
        &["jwks=/k", "issuer=i", "audience="],
        &["jwks=/k", "issuer=i\"", "audience=a"],
    ] {
        assert!(parse_directive(bad, r).is_err(), "{bad:?}");
    }
}

// RFC 7662 introspection

/// A loopback HTTP server answering each request with the next of `answers` (status, body);
/// the requests it got come back from the join handle.
pub(crate) fn introspection_server(answers: Vec<(u16, String)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/introspect", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        for (status, body) in answers {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut b = vec![0; len];
            r.read_exact(&mut b).unwrap();
            head.push_str(&String::from_utf8(b).unwrap());
            got.push(head);
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        got
    });
    (url, h)
}

/// A configuration with introspection at `url`; its client secret file is in the directory
/// returned (removed when dropped: keep it until the verifier is made, which reads the file).
pub(crate) fn introspect_cfg(url: &str, jwks: bool) -> (OauthConfig, TempDir) {
    let dir = TempDir::new("introspect");
    let secret = dir.file("secret", b"s3cr:et\n");
    let mut c = cfg();
    if !jwks {
        c.jwks = None;
        c.issuer = String::new();
        c.audience = String::new();
    }
    c.introspect = Some(IntrospectConfig {
        url: url.into(),
        client_id: "mail proxy".into(),
        client_secret_file: secret,
        user_claim: "username".into(),
    });
    (c, dir)
}

#[test]
fn introspection_directive() {
    let r = |p: &str| format!("/prefix/{p}");
    let c = parse_directive(&["introspect=http://127.0.0.1:1/i", "client_id=m", "client_secret_file=s"], r).unwrap();
    assert_eq!(c.jwks, None);
    assert_eq!((c.issuer.as_str(), c.audience.as_str()), ("", ""));
    let i = c.introspect.unwrap();
    assert_eq!(
        (i.url.as_str(), i.client_id.as_str(), i.client_secret_file, i.user_claim.as_str()),
        ("http://127.0.0.1:1/i", "m", PathBuf::from("/prefix/s"), "username")
    );
    let c = parse_directive(
        &[
            "jwks=k",
            "issuer=i",
            "audience=a",
            "user_claim=sub",
            "introspect=http://idp:8080/i",
            "client_id=m",
            "client_secret_file=/s",
        ],
        r,
    )
    .unwrap();
    assert_eq!((c.user_claim.as_str(), c.introspect.unwrap().user_claim.as_str()), ("sub", "sub"));
    for bad in [
        &["introspect=http://h/i", "client_id=m"][..],
        &["introspect=http://h/i", "client_secret_file=s"],
        &["client_id=m", "client_secret_file=s"],
        &["introspect=https://h/i", "client_id=m", "client_secret_file=s"],
        &["introspect=http:///i", "client_id=m", "client_secret_file=s"],
        &["jwks=k", "introspect=http://h/i", "client_id=m", "client_secret_file=s"],
    ] {
        assert!(parse_directive(bad, r).is_err(), "{bad:?}");
    }
}

#[test]
fn introspection_encoding() {
    assert_eq!(introspect::form_encode(b"a-Z.0_~ +/=%\xff"), "a-Z.0_%7E+%2B%2F%3D%25%FF");
    // RFC 6749 2.3.1: both form-encoded, then base64
    assert_eq!(
        introspect::basic_auth("mail proxy", "s3cr:et"),
        format!("Basic {}", STANDARD.encode("mail+proxy:s3cr%3Aet"))
    );
    assert!(introspect::parse_answer(b"[]").is_err());
    assert!(introspect::parse_answer(b"{\"active\":").is_err());
    assert!(introspect::parse_answer(b"{\"active\":false}").is_ok());
}

#[test]
fn introspection_routes() {
    let v = Verifier::new(introspect_cfg("http://127.0.0.1:9/i", true).0).unwrap();
    assert_eq!(v.route(token("rs256").as_bytes()), Route::Jwt);
    assert_eq!(v.route(token("nokid").as_bytes()), Route::Jwt);
    assert_eq!(v.route(token("unknownkid").as_bytes()), Route::Introspect);
    assert_eq!(v.route(b"2YotnFZFEjr1zCsicMWpAA"), Route::Introspect);
    assert_eq!(v.route(b"a.b.c"), Route::Introspect);
    assert_eq!(verifier().route(b"2YotnFZFEjr1zCsicMWpAA"), Route::Jwt, "no introspect=: JWT path");
    let v = Verifier::new(introspect_cfg("http://127.0.0.1:9/i", false).0).unwrap();
    assert_eq!(v.route(token("rs256").as_bytes()), Route::Introspect, "no jwks=: all to introspection");
    let (mut c, _dir) = introspect_cfg("http://127.0.0.1:9/i", false);
    c.introspect.as_mut().unwrap().client_secret_file = "/nonexistent/secret".into();
    assert!(Verifier::new(c).is_err(), "an unreadable secret file is a configuration error");
}

#[test]
fn introspection_answer_rules() {
    let v = Verifier::new(introspect_cfg("http://127.0.0.1:9/i", true).0).unwrap();
    let a = |j: &str| v.check_introspection(&serde_json::from_str(j).unwrap(), "alice@example.org", NOW);
    let good =
        r#"{"active":true,"username":"Alice@Example.org","exp":1700003600,"iss":"https://idp.example","aud":"mail"}"#;
    assert_eq!(a(good), Ok(Verified { user: "Alice@Example.org".into(), exp: EXP }));
    assert_eq!(a(r#"{"active":false}"#), Err(TokenError::Inactive));
    assert_eq!(a(r#"{"active":"true","username":"alice@example.org","exp":1700003600}"#), Err(TokenError::Inactive));
    assert_eq!(a(r#"{"username":"alice@example.org"}"#), Err(TokenError::Inactive));
    assert_eq!(
        a(r#"{"active":true,"username":"alice@example.org","iss":"https://idp.example","aud":"mail"}"#),
        Err(TokenError::MissingClaim("exp".into()))
    );
    assert!(
        a(r#"{"active":true,"username":"alice@example.org","exp":1699999999,"iss":"https://idp.example","aud":"mail"}"#)
            .is_ok(),
        "exp 1 s ago: inside the 60 s skew"
    );
    assert_eq!(
        a(
            r#"{"active":true,"username":"alice@example.org","exp":1699990000,"iss":"https://idp.example","aud":"mail"}"#
        ),
        Err(TokenError::Expired)
    );
    assert_eq!(
        a(r#"{"active":true,"username":"alice@example.org","exp":1700003600,"iss":"https://evil","aud":"mail"}"#),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        a(r#"{"active":true,"username":"alice@example.org","exp":1700003600,"iss":"https://idp.example","aud":["x"]}"#),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        a(r#"{"active":true,"username":"bob@example.org","exp":1700003600,"iss":"https://idp.example","aud":"mail"}"#),
        Err(TokenError::UserMismatch)
    );
    assert_eq!(
        a(r#"{"active":true,"email":"alice@example.org","exp":1700003600,"iss":"https://idp.example","aud":"mail"}"#),
        Err(TokenError::MissingClaim("username".into()))
    );
    // introspection alone: iss/aud not configured, not checked
    let v = Verifier::new(introspect_cfg("http://127.0.0.1:9/i", false).0).unwrap();
    let j = serde_json::json!({"active": true, "username": "alice@example.org", "exp": EXP});
    assert!(v.check_introspection(&j, "ALICE@example.org", NOW).is_ok());
}

#[test]
fn introspection_calls() {
    let ok =
        r#"{"active":true,"username":"alice@example.org","exp":1700003600,"iss":"https://idp.example","aud":"mail"}"#;
    let (url, server) = introspection_server(vec![
        (200, ok.into()),
        (200, r#"{"active":false}"#.into()),
        (401, r#"{"error":"invalid_client"}"#.into()),
        (200, "not json".into()),
    ]);
    let v = Verifier::new(introspect_cfg(&url, true).0).unwrap();
    let t = b"opaque/tok+en=";
    assert!(v.introspect(t, "alice@example.org", NOW).is_ok());
    assert_eq!(v.introspect(t, "alice@example.org", NOW), Err(TokenError::Inactive));
    let e = v.introspect(t, "alice@example.org", NOW).unwrap_err();
    assert!(e.is_temporary() && e.to_string().contains("HTTP 401"), "{e}");
    let e = v.introspect(t, "alice@example.org", NOW).unwrap_err();
    assert!(e.is_temporary() && e.to_string().contains("not JSON"), "{e}");
    let got = server.join().unwrap();
    let first = &got[0];
    assert!(first.starts_with("POST /introspect HTTP/1.1\r\n"), "{first}");
    let lower = first.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/x-www-form-urlencoded"), "{first}");
    assert!(first.contains(&introspect::basic_auth("mail proxy", "s3cr:et")), "{first}");
    assert!(first.ends_with("\r\n\r\ntoken=opaque%2Ftok%2Ben%3D&token_type_hint=access_token"), "{first}");
    // nothing listens: a temporary failure, quickly
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/i", l.local_addr().unwrap());
    drop(l);
    let v = Verifier::new(introspect_cfg(&dead, true).0).unwrap();
    let e = v.introspect(t, "alice@example.org", NOW).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(
        v.introspect(b"bad token", "alice@example.org", NOW),
        Err(TokenError::Malformed("not a bearer token (RFC 6750 characters)"))
    );
}

#[test]
fn introspection_times_out() {
    // a listener that never answers (the kernel completes the connection, nobody reads)
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/i", l.local_addr().unwrap());
    let v = Verifier::new(introspect_cfg(&url, true).0).unwrap();
    let t = std::time::Instant::now();
    let e = v.introspect(b"opaque", "alice@example.org", NOW).unwrap_err();
    let took = t.elapsed();
    assert!(e.is_temporary(), "{e}");
    assert!(took >= introspect::TIMEOUT && took < introspect::TIMEOUT + Duration::from_secs(2), "{took:?}");
    drop(l);
}

// ---- review tests ----

/// An endpoint that sends its headers at once, then the body one byte every 200 ms: the whole
/// call must still end within TIMEOUT (+ slack) as a temporary failure.
#[test]
fn introspection_slow_body_is_bounded() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/i", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut s = s;
        let body = br#"{"active":true,"username":"alice@example.org","exp":1700003600}"#;
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
        for _ in 0..60 {
            for b in body.iter() {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let v = Verifier::new(introspect_cfg(&url, false).0).unwrap();
    let t = Instant::now();
    let e = v.introspect(b"opaque", "alice@example.org", NOW).unwrap_err();
    let took = t.elapsed();
    assert!(e.is_temporary(), "{e}");
    assert!(took < introspect::TIMEOUT + Duration::from_secs(2), "took {took:?}");
    drop(h);
}

/// A verifier on a copy of the test JWKS, which is then replaced by `new`: the result of a
/// token of the old RSA key once the change was seen (polled for up to 3 s), or while it is not.
fn after_jwks_replaced_by(new: &[u8], tag: &str) -> Result<Verified, TokenError> {
    let (dir, path, v) = verifier_on_a_jwks_copy(tag);
    let u = "alice@example.org";
    let tmp = dir.join("new");
    std::fs::write(&tmp, new).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t = Instant::now();
    let mut r = v.verify(token("rs256").as_bytes(), u, NOW);
    while r.is_ok() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        r = v.verify(token("rs256").as_bytes(), u, NOW);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

/// Revoking every key at once (`{"keys":[]}`, e.g. a compromised key), or rotating to keys this
/// module cannot use (here EC P-521): the dropped RSA key must not stay trusted.
#[test]
fn a_jwks_with_no_usable_key_revokes_the_old_keys() {
    let r = after_jwks_replaced_by(br#"{"keys":[]}"#, "jwks-empty");
    assert!(r.is_err(), "3 s after the JWKS was emptied, a token of a removed key still verifies: {r:?}");
    let p521 = br#"{"keys":[{"kid":"p521","kty":"EC","crv":"P-521","x":"AA","y":"AA","use":"sig"}]}"#;
    let r = after_jwks_replaced_by(p521, "jwks-p521");
    assert!(r.is_err(), "the JWKS no longer has kid r1, yet its token still verifies: {r:?}");
}

#[test]
fn empty_jwks_is_still_a_configuration_error() {
    let dir = TempDir::new("oauth-jwks-cfg");
    let mut c = cfg();
    c.jwks = Some(dir.file("jwks.json", br#"{"keys":[]}"#));
    let r = Verifier::new(c).map(|_| ());
    assert!(r.is_err());
}

#[test]
fn claim_edge_cases() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = URL_SAFE_NO_PAD.decode("czQzdVNHRHFjbExqYk02VkJoVzg5WHh1VlVtZm1RaHZKaG1FT09iRW9Raw").unwrap();
    let key = EncodingKey::from_secret(&secret);
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("h1".into());
    let mk = |claims: Value| encode(&h, &claims, &key).unwrap();
    let base = || serde_json::json!({"iss":"https://idp.example","aud":"mail","email":"alice@example.org","exp":EXP});
    let mut c = cfg();
    c.scope = Some("mail".into());
    let v = Verifier::new(c).unwrap();
    let u = "alice@example.org";
    let with = |k: &str, val: Value| {
        let mut b = base();
        b["scope"] = "mail".into();
        b[k] = val;
        v.verify(mk(b).as_bytes(), u, NOW)
    };
    assert!(with("x", Value::Null).is_ok());
    assert_eq!(with("exp", "1700003600".into()), Err(TokenError::MissingClaim("exp".into())));
    assert_eq!(with("exp", Value::Null), Err(TokenError::MissingClaim("exp".into())));
    assert_eq!(with("exp", (-1).into()), Err(TokenError::Expired));
    assert!(with("exp", 1e300.into()).is_ok());
    assert!(with("exp", u64::MAX.into()).is_ok());
    assert_eq!(with("nbf", "0".into()), Err(TokenError::MissingClaim("nbf".into())));
    assert_eq!(with("nbf", u64::MAX.into()), Err(TokenError::NotYetValid));
    assert_eq!(with("iss", "https://idp.example/".into()), Err(TokenError::WrongIssuer));
    assert_eq!(with("aud", serde_json::json!(["x", "mail"])).map(|_| ()), Ok(()));
    assert_eq!(with("aud", serde_json::json!([["mail"]])), Err(TokenError::WrongAudience));
    assert_eq!(with("aud", serde_json::json!({"mail": 1})), Err(TokenError::MissingClaim("aud".into())));
    assert_eq!(with("scope", serde_json::json!(["mail"])), Err(TokenError::InsufficientScope));
    assert_eq!(with("scope", "mailx mail.read".into()), Err(TokenError::InsufficientScope));
    assert_eq!(with("email", "alice@example.org ".into()), Err(TokenError::UserMismatch));
    assert_eq!(with("email", "alİce@example.org".into()), Err(TokenError::UserMismatch));
    assert_eq!(with("email", "alice@example.org\n".into()), Err(TokenError::MissingClaim("email".into())));
    assert_eq!(with("email", serde_json::json!(["alice@example.org"])), Err(TokenError::MissingClaim("email".into())));
    // crit header, alg none with a valid signature part, signature stripped
    let mut hc = serde_json::json!({"alg":"HS256","kid":"h1","crit":["exp"]});
    let t = mk({
        let mut b = base();
        b["scope"] = "mail".into();
        b
    });
    let parts: Vec<&str> = t.split('.').collect();
    let hdr = |j: &Value| URL_SAFE_NO_PAD.encode(j.to_string());
    assert!(matches!(
        v.verify(format!("{}.{}.{}", hdr(&hc), parts[1], parts[2]).as_bytes(), u, NOW),
        Err(TokenError::Malformed(_))
    ));
    hc = serde_json::json!({"alg":"none","kid":"h1"});
    assert!(v.verify(format!("{}.{}.", hdr(&hc), parts[1]).as_bytes(), u, NOW).is_err());
    assert_eq!(v.verify(format!("{}.{}.", parts[0], parts[1]).as_bytes(), u, NOW), Err(TokenError::BadSignature));
    // HS256 token signed with the RSA key's "n" as secret, no kid: only the oct key is tried
    let jwks: Value = serde_json::from_str(include_str!("testdata/jwks.json")).unwrap();
    let n = jwks["keys"][0]["n"].as_str().unwrap().to_string();
    let hk = Header::new(Algorithm::HS256);
    let forged = encode(
        &hk,
        &{
            let mut b = base();
            b["scope"] = "mail".into();
            b
        },
        &EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    assert_eq!(v.verify(forged.as_bytes(), u, NOW), Err(TokenError::BadSignature));
    // RS256 header with kid of the oct key
    let mut hr = Header::new(Algorithm::HS256);
    hr.kid = Some("r1".into());
    let t = encode(&hr, &base(), &EncodingKey::from_secret(&secret)).unwrap();
    assert_eq!(v.verify(t.as_bytes(), u, NOW), Err(TokenError::Alg("HS256".into())));
}

#[test]
fn an_email_the_provider_has_not_verified_names_no_mailbox() {
    let (mut c, _dir) = introspect_cfg("http://127.0.0.1:9/i", false);
    c.introspect.as_mut().unwrap().user_claim = "email".into();
    let v = Verifier::new(c).unwrap();
    let a = |extra: &str| {
        let j = format!(r#"{{"active":true,"email":"alice@example.org","exp":1700003600{extra}}}"#);
        v.check_introspection(&serde_json::from_str(&j).unwrap(), "alice@example.org", NOW)
    };
    assert!(a("").is_ok(), "no flag: as before (many providers send none)");
    assert!(a(r#","email_verified":true"#).is_ok());
    for unverified in [r#","email_verified":false"#, r#","email_verified":"false""#] {
        assert_eq!(a(unverified), Err(TokenError::MissingClaim("email_verified".into())), "{unverified}");
    }
}
