//! Vectors made by the real tools (testdata/schemes/make-vectors.sh records each command, and
//! each line of vectors.tsv carries its own).

#![forbid(unsafe_code)]

use super::*;

const VECTORS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/schemes/vectors.tsv"));

struct Vector {
    scheme: &'static str,
    password: &'static str,
    stored: &'static str,
    command: &'static str,
}

fn vectors() -> impl Iterator<Item = Vector> {
    VECTORS.lines().filter(|l| !l.is_empty()).map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 4, "vectors.tsv line needs 4 tab-separated fields: {l:?}");
        Vector { scheme: f[0], password: f[1], stored: f[2], command: f[3] }
    })
}

fn supported() -> impl Iterator<Item = Vector> {
    vectors().filter(|v| !v.scheme.starts_with("unsupported:"))
}

fn find(scheme: &str) -> Vector {
    supported().find(|v| v.scheme == scheme).unwrap_or_else(|| panic!("no {scheme} vector"))
}

#[test]
fn every_real_tool_vector_verifies_and_rejects_wrong_passwords() {
    let mut checked = 0;
    for v in supported() {
        let what = format!("{} from `{}`: {}", v.scheme, v.command, v.stored);
        assert_eq!(verify(v.stored, v.password.as_bytes()), Ok(true), "{what}");
        let mut wrong = v.password.as_bytes().to_vec();
        wrong.push(b'x');
        assert_eq!(verify(v.stored, &wrong), Ok(false), "appended byte must fail: {what}");
        if !v.password.is_empty() {
            assert_eq!(verify(v.stored, b""), Ok(false), "empty password must fail: {what}");
            let mut flipped = v.password.as_bytes().to_vec();
            flipped[0] ^= 0x20;
            assert_eq!(verify(v.stored, &flipped), Ok(false), "changed case must fail: {what}");
        }
        assert_ne!(scheme_name(v.stored), "unknown", "{what}");
        checked += 1;
    }
    assert!(checked >= 150, "only {checked} vectors");
    // The three kinds of password are all there, for every tool.
    for pw in ["secret", "p w%d:é", "q'\"\\ Ünï €🔑"] {
        assert!(supported().filter(|v| v.password == pw).count() >= 50, "{pw}");
    }
}

#[test]
fn unsupported_real_tool_output_is_an_error_not_a_match() {
    let mut n = 0;
    for v in vectors().filter(|v| v.scheme.starts_with("unsupported:")) {
        assert!(verify(v.stored, v.password.as_bytes()).is_err(), "{} must not verify: {}", v.scheme, v.stored);
        assert_eq!(scheme_name(v.stored), "unknown", "{}", v.scheme);
        assert!(plain_password(v.stored).is_none(), "{}", v.scheme);
        n += 1;
    }
    assert!(n >= 10);
    assert!(
        matches!(verify(find_unsupported("SCRAM-SHA-1"), b"secret"), Err(SchemeError::Unknown(s)) if s == "SCRAM-SHA-1")
    );
}

fn find_unsupported(name: &str) -> &'static str {
    vectors().find(|v| v.scheme.strip_prefix("unsupported:") == Some(name)).map(|v| v.stored).unwrap_or_default()
}

#[test]
fn scheme_names() {
    for (scheme, name) in [
        ("bcrypt", "BLF-CRYPT"),
        ("BLF-CRYPT", "BLF-CRYPT"),
        ("CRYPT", "BLF-CRYPT"),
        ("sha512-crypt", "SHA512-CRYPT"),
        ("sha256-crypt", "SHA256-CRYPT"),
        ("SHA256-CRYPT", "SHA256-CRYPT"),
        ("md5-crypt", "MD5-CRYPT"),
        ("MD5", "MD5-CRYPT"),
        ("MD5-hex", "PLAIN-MD5"),
        ("LDAP-MD5", "PLAIN-MD5"),
        ("apr1", "APR1"),
        ("SHA", "SHA"),
        ("SHA1", "SHA"),
        ("SHA-hex-guessed", "SHA"),
        ("SSHA", "SSHA"),
        ("SSHA512.HEX", "SSHA512"),
        ("SMD5", "SMD5"),
        ("PLAIN", "PLAIN"),
        ("PLAIN-B64", "PLAIN"),
        ("CLEAR", "PLAIN"),
        ("ARGON2I", "ARGON2I"),
        ("ARGON2ID", "ARGON2ID"),
        ("argon2id", "ARGON2ID"),
        ("CRAM-MD5", "CRAM-MD5"),
        ("HMAC-MD5", "CRAM-MD5"),
    ] {
        assert_eq!(scheme_name(find(scheme).stored), name, "{scheme}");
    }
    assert_eq!(scheme_name("{NOPE}x"), "unknown");
    assert_eq!(scheme_name(""), "unknown");
}

#[test]
fn cost_classes() {
    for v in supported() {
        let costly = match scheme_name(v.stored) {
            "BLF-CRYPT" | "ARGON2I" | "ARGON2ID" => true,
            "SHA512-CRYPT" | "SHA256-CRYPT" => {
                let rounds = v
                    .stored
                    .split("rounds=")
                    .nth(1)
                    .and_then(|r| r.split('$').next())
                    .map_or(5000, |n| n.parse().unwrap());
                rounds > 5000
            }
            _ => false,
        };
        assert_eq!(is_costly(v.stored), costly, "{} {}", v.scheme, v.stored);
    }
    assert!(!is_costly(find("sha512-crypt").stored), "default 5000 rounds are cheap enough inline");
    // ... with a short password: a long one goes to the pool, a very long one is refused unhashed
    let sha512 = find("sha512-crypt");
    assert!(!is_costly_for(sha512.stored, sha512.password.len()));
    assert!(!is_costly_for(sha512.stored, 20), "one block a round");
    assert!(is_costly_for(sha512.stored, 100), "each round hashes the password twice");
    assert!(is_costly_for(sha512.stored, CRYPT_MAX_PASSWORD - 1));
    assert!(!is_costly_for(sha512.stored, CRYPT_MAX_PASSWORD), "refused without hashing");
    let md5 = find("md5-crypt").stored;
    assert!(!is_costly_for(md5, 100) && is_costly_for(md5, CRYPT_MAX_PASSWORD - 1));
    // the bound, as libxcrypt's: 511 bytes verify, 512 never match (not even their own hash)
    let params = sha_crypt::Sha512Params::new(5000).unwrap();
    for (len, matches) in [(CRYPT_MAX_PASSWORD - 1, true), (CRYPT_MAX_PASSWORD, false), (4000, false)] {
        let pw = vec![b'p'; len];
        let stored = format!("$6$saltsalt${}", sha_crypt::sha512_crypt_b64(&pw, b"saltsalt", &params).unwrap());
        assert_eq!(verify(&stored, &pw), Ok(matches), "{len} bytes");
    }
    assert!(hash_password(HashKind::Sha512Crypt, &[b'p'; CRYPT_MAX_PASSWORD]).is_err());
    for v in vectors() {
        // no other scheme's cost depends on the password's length
        if !matches!(parse(v.stored), Ok(Stored::ShaCrypt(_)) | Ok(Stored::Md5Crypt(_))) {
            assert_eq!(is_costly_for(v.stored, 4000), is_costly(v.stored), "{}", v.stored);
        }
    }
    assert!(is_costly("$6$rounds=5001$0123456789abcdef$Sawg4kKwlTQ9xVljMPfN1Cxri6jyez7qsUdmJ8P5dbYdaeQ8eaa483gxip.kV2biFsGJmh7rcv4ZkyvY0.Gqv0"));
    assert!(!is_costly("garbage"));
    assert!(!is_costly("$2y$99$x"), "a malformed hash is not worth a thread");
    // the braced names decided without decoding agree with the full parse
    let full = |s: &str| match parse(s) {
        Ok(Stored::Bcrypt(_)) | Ok(Stored::Argon2(_)) => true,
        Ok(Stored::ShaCrypt(h)) => h.rounds() > 5000,
        _ => false,
    };
    let bcrypt = "$2y$10$6B0z.tj3oE5hN.WxVX52MukGZ.L.9tkN4wSFd.7QodUyMYwtwrvDq";
    for s in [
        format!("{{BLF-CRYPT}}{bcrypt}"),
        format!("{{blf-crypt}}{bcrypt}"),
        format!("{{CRYPT}}{bcrypt}"),
        format!("{{SSHA}}{bcrypt}"),
        format!("{{PLAIN}}{bcrypt}"),
        format!("{{CRAM-MD5}}{bcrypt}"),
        format!("{{MD5}}{bcrypt}"),
        format!("{{BLF-CRYPT.B64}}{bcrypt}"),
        format!("{{A-VERY-LONG-SCHEME-NAME-BEYOND-32-BYTES}}{bcrypt}"),
        "{SSHA}not base64!".to_string(),
        "{SHA512.HEX}00".to_string(),
        "{ssha}".to_string(),
        "{}".to_string(),
        "{\u{e9}}x".to_string(),
    ] {
        assert_eq!(is_costly(&s), full(&s), "{s}");
    }
    assert!(is_costly(&format!("{{BLF-CRYPT}}{bcrypt}")));
    for v in vectors() {
        assert_eq!(is_costly(v.stored), full(v.stored), "{}", v.stored);
    }
}

#[test]
fn braces_are_case_insensitive() {
    assert_eq!(verify("{plain}secret", b"secret"), Ok(true));
    assert_eq!(verify("{Plain-B64}c2VjcmV0", b"secret"), Ok(true));
    assert_eq!(verify("{sha.hex}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4", b"secret"), Ok(true));
    assert_eq!(verify("{blf-crypt}$2y$04$/BOeZOdGOry4PXv5/IRQ3.DcGSvzznZFK9DaECFh.6CYjK6kFP8vS", b"secret"), Ok(true));
    for v in supported().filter(|v| v.stored.starts_with('{')) {
        let (name, rest) = v.stored[1..].split_once('}').unwrap();
        let lower = format!("{{{}}}{rest}", name.to_ascii_lowercase());
        assert_eq!(verify(&lower, v.password.as_bytes()), Ok(true), "{lower}");
    }
}

#[test]
fn plain_password_is_only_for_recoverable_schemes() {
    for v in supported() {
        let expect = (scheme_name(v.stored) == "PLAIN").then(|| v.password.as_bytes().to_vec());
        assert_eq!(plain_password(v.stored), expect, "{} {}", v.scheme, v.stored);
    }
    assert_eq!(plain_password("{PLAIN}p w"), Some(b"p w".to_vec()));
    assert_eq!(plain_password("{PLAIN}"), Some(Vec::new()));
    assert_eq!(plain_password("{PLAIN-B64}***"), None);
    assert_eq!(plain_password("secret"), None, "a bare value is not a stored password");
}

#[test]
fn malformed_and_unknown_inputs_are_errors_and_never_panic() {
    let cases = [
        "",
        "secret",
        "{}",
        "{",
        "}",
        "{PLAIN",
        "{SHA}",
        "{SHA}!!!notbase64",
        "{SHA}c2hvcnQ=",
        "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=x",
        "{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{SSHA512.HEX}zz",
        "{SSHA512.HEX}abc",
        "{SHA.ZIP}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{SHA.}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{PLAIN-B64}***",
        "{PLAIN.HEX}7",
        "{NTLM}deadbeef",
        "{MD5}",
        "{MD5}$apr1$abc$51YrpNiEtKAQp4coykJmu.",
        "{BLF-CRYPT}$6$abc$def",
        "{BLF-CRYPT}",
        "{BLF-CRYPT.HEX}$2y$04$/BOeZOdGOry4PXv5/IRQ3.DcGSvzznZFK9DaECFh.6CYjK6kFP8vS",
        "{SHA512-CRYPT}$2y$04$/BOeZOdGOry4PXv5/IRQ3.DcGSvzznZFK9DaECFh.6CYjK6kFP8vS",
        "{SHA256-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        "{MD5-CRYPT}$apr1$abc$51YrpNiEtKAQp4coykJmu.",
        "{CRYPT}$apr1$abc$51YrpNiEtKAQp4coykJmu.",
        "{CRYPT}CU87NKhf.V9S6",
        "{ARGON2I}$argon2id$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo",
        "{CRYPT}$argon2id$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo",
        "$2y$",
        "$2y$05$short",
        "$2y$99$8wtCUgiXSwtK6Fs9gxQOm.qIHUaFSmldZoxKjpgTqdxVxZK7/0qly",
        "$2y$ab$8wtCUgiXSwtK6Fs9gxQOm.qIHUaFSmldZoxKjpgTqdxVxZK7/0qly",
        "$2x$05$8wtCUgiXSwtK6Fs9gxQOm.qIHUaFSmldZoxKjpgTqdxVxZK7/0qly",
        "$6$",
        "$6$salt$tooshort",
        "$6$rounds=abc$salt$x",
        "$6$rounds=$salt$x",
        "$5$salt",
        "$1$salt$short",
        "$1$toolongsalt$D80zpYEzjE72KtYRAVIqY.",
        "$apr1$",
        "$argon2id$v=19$m=65536",
        "$argon2d$v=19$m=65536,t=3,p=1$z0ps7Uwwgc91eq0Ns4w+hw$NYAHHqSwznWJD933Lwgrqo0NGrZpjhI5/Bxkq06pP00",
        "$y$j9T$salt$hash",
        "$$",
        "$",
        "abcdefghijklm",
        "\0",
        "{PLAIN\0}x",
        "é{SHA}",
        "{é}x",
    ];
    for c in cases {
        assert!(verify(c, b"secret").is_err(), "{c:?} must be an error");
        assert!(!is_costly(c), "{c:?}");
        assert_eq!(scheme_name(c), "unknown", "{c:?}");
        assert_eq!(plain_password(c), None, "{c:?}");
        let e = verify(c, b"secret").unwrap_err().to_string();
        assert!(!e.is_empty() && !e.contains("secret"), "{e}");
    }
}

#[test]
fn truncated_or_altered_vectors_never_match() {
    for v in supported() {
        let s = v.stored;
        let pw = v.password.as_bytes();
        for end in (0..s.len()).filter(|&i| s.is_char_boundary(i)) {
            let t = &s[..end];
            let _ = (is_costly(t), scheme_name(t), plain_password(t));
            if is_costly(t) {
                continue; // a shorter valid argon2 output: verified once below, not 40 times
            }
            if s[end..].bytes().all(|c| c == b'=') {
                continue; // only base64 padding gone: the same value (padding is optional)
            }
            assert_ne!(verify(t, pw), Ok(true), "truncated {t:?} of {} matched", v.scheme);
        }
        // Change the last character of the value: a different hash, digest or salt.
        let (head, last) = s.split_at(s.len() - s.chars().next_back().map_or(0, char::len_utf8));
        let other = if last.eq_ignore_ascii_case("a") { "B" } else { "A" }; // hex is case-insensitive
        let changed = format!("{head}{other}");
        if !is_costly(&changed)
            || v.scheme == "bcrypt" && s.starts_with("$2a$04$")
            || v.scheme == "argon2id" && v.password == "secret"
        {
            assert_ne!(verify(&changed, pw), Ok(true), "{changed:?} matched");
        }
    }
}

#[test]
fn hash_password_output_verifies_and_matches_tool_formats() {
    let b = hash_password(HashKind::Bcrypt { cost: 4 }, "pä ss".as_bytes()).unwrap();
    assert!(b.starts_with("$2y$04$") && b.len() == 60, "{b}");
    assert_eq!(verify(&b, "pä ss".as_bytes()), Ok(true));
    assert_eq!(verify(&b, b"pass"), Ok(false));
    assert_ne!(b, hash_password(HashKind::Bcrypt { cost: 4 }, "pä ss".as_bytes()).unwrap(), "salt must be random");
    for cost in [0, 3, 32, 99] {
        assert!(hash_password(HashKind::Bcrypt { cost }, b"pw").is_err(), "cost {cost}");
    }

    let s = hash_password(HashKind::Sha512Crypt, b"pw").unwrap();
    assert!(s.starts_with("$6$") && s.split('$').count() == 4 && s.len() == 106, "{s}");
    assert_eq!(verify(&s, b"pw"), Ok(true));
    assert_eq!(verify(&s, b"pW"), Ok(false));
    assert_ne!(s, hash_password(HashKind::Sha512Crypt, b"pw").unwrap(), "salt must be random");

    let x = hash_password(HashKind::Ssha512, b"pw").unwrap();
    assert!(x.starts_with("{SSHA512}"));
    assert_eq!(verify(&x, b"pw"), Ok(true));
    assert_eq!(verify(&x, b"pW"), Ok(false));
    assert_eq!(scheme_name(&x), "SSHA512");
}

/// Runs a real tool if it is installed; None (and a note) when it is not.
fn run(tool: &str, args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new(tool).args(args).output() {
        Ok(o) => Some(o),
        Err(e) => {
            eprintln!("{tool} not runnable ({e}): cross-check skipped");
            None
        }
    }
}

#[test]
fn real_tools_accept_what_hash_password_writes() {
    let pw = "p w%d:é";
    // openssl recomputes SHA-512-crypt with our salt and must write the same string.
    let s = hash_password(HashKind::Sha512Crypt, pw.as_bytes()).unwrap();
    let salt = s.split('$').nth(2).unwrap();
    if let Some(out) = run("openssl", &["passwd", "-6", "-salt", salt, pw]) {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), s);
    }
    // htpasswd -v checks our bcrypt in a file, as Apache would.
    let b = hash_password(HashKind::Bcrypt { cost: 4 }, pw.as_bytes()).unwrap();
    let dir = crate::testutil::TempDir::new("scheme");
    let file = dir.file("htpasswd", format!("u:{b}\n").as_bytes());
    let path = file.to_str().unwrap();
    if let Some(ok) = run("htpasswd", &["-vb", path, "u", pw]) {
        assert!(ok.status.success(), "htpasswd -v refused {b}: {}", String::from_utf8_lossy(&ok.stderr));
        let bad = run("htpasswd", &["-vb", path, "u", "wrong"]).unwrap();
        assert!(!bad.status.success());
    }
    // doveadm pw -t verifies each form with Dovecot's own code.
    let x = hash_password(HashKind::Ssha512, pw.as_bytes()).unwrap();
    for stored in [x, format!("{{BLF-CRYPT}}{b}"), format!("{{SHA512-CRYPT}}{s}")] {
        let Some(out) = run("doveadm", &["-o", "stats_writer_socket_path=", "pw", "-t", &stored, "-p", pw]) else {
            break;
        };
        assert!(String::from_utf8_lossy(&out.stdout).contains("(verified)"), "doveadm refused {stored}: {out:?}");
    }
}

#[test]
fn challenge_responses_check_against_plain_and_dovecot_cram_md5() {
    // RFC 2195's example, checked against what doveadm stored for the same password: this pins
    // the byte order of the {CRAM-MD5} key states.
    let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
    let rfc = b"b913a602c7eda7a495b4e6e7334d3890";
    let dove = vectors()
        .find(|v| v.scheme == "CRAM-MD5" && v.password == "tanstaaftanstaaf")
        .expect("doveadm CRAM-MD5 vector");
    assert_eq!(verify_challenge(Challenge::CramMd5, dove.stored, challenge, rfc), Ok(true));
    assert_eq!(
        verify_challenge(Challenge::CramMd5, dove.stored, challenge, &rfc.to_ascii_uppercase()),
        Ok(true),
        "hex digits in either case"
    );
    assert_eq!(verify_challenge(Challenge::CramMd5, dove.stored, b"<other@host>", rfc), Ok(false));
    assert_eq!(verify_challenge(Challenge::CramMd5, dove.stored, challenge, b"b913a602"), Ok(false));
    assert_eq!(verify_challenge(Challenge::CramMd5, dove.stored, challenge, b"zz"), Ok(false));
    // APOP can't be checked from HMAC key states.
    assert_eq!(
        verify_challenge(Challenge::Apop, dove.stored, challenge, rfc),
        Err(ChallengeError::Unsuitable("CRAM-MD5"))
    );
    // Every doveadm CRAM-MD5 vector answers a response made from its password.
    for v in vectors().filter(|v| v.scheme == "CRAM-MD5" || v.scheme == "HMAC-MD5") {
        let resp = challenge_response(Challenge::CramMd5, v.password.as_bytes(), b"<1.2@x>");
        assert_eq!(
            verify_challenge(Challenge::CramMd5, v.stored, b"<1.2@x>", resp.as_bytes()),
            Ok(true),
            "{}",
            v.command
        );
        assert_eq!(
            cram_md5_stored(v.password.as_bytes()).split_once('}').unwrap().1,
            v.stored.split_once('}').unwrap().1
        );
    }

    // Plain stored passwords serve both methods (RFC 1939's APOP example).
    let apop_salt = b"<1896.697170952@dbc.mtview.ca.us>";
    let apop_resp = b"c4c9334bac560ecc979e58001b3e22fb";
    assert_eq!(verify_challenge(Challenge::Apop, "{PLAIN}tanstaaf", apop_salt, apop_resp), Ok(true));
    assert_eq!(verify_challenge(Challenge::Apop, "{PLAIN}tanstaafx", apop_salt, apop_resp), Ok(false));
    assert_eq!(verify_challenge(Challenge::CramMd5, "{PLAIN}tanstaaftanstaaf", challenge, rfc), Ok(true));
    // Hashes that keep neither form are unsuitable, named for the log; broken ones are errors.
    for v in vectors().filter(|v| v.scheme == "sha512-crypt" || v.scheme == "SSHA").take(2) {
        assert!(matches!(
            verify_challenge(Challenge::Apop, v.stored, apop_salt, apop_resp),
            Err(ChallengeError::Unsuitable(_))
        ));
    }
    assert!(matches!(
        verify_challenge(Challenge::Apop, "{NOPE}x", apop_salt, apop_resp),
        Err(ChallengeError::Scheme(_))
    ));
    // An empty stored password is no password: the response to the empty key, which anyone can
    // compute, is refused, whatever form keeps it.
    let cram_empty = cram_md5_stored(b"");
    for stored in ["{PLAIN}", "{CLEAR}", "{PLAIN.HEX}", "{PLAIN-B64}", "{PLAIN.B64}", cram_empty.as_str()] {
        for kind in [Challenge::Apop, Challenge::CramMd5] {
            if kind == Challenge::Apop && stored.starts_with("{CRAM-MD5}") {
                continue;
            }
            let resp = challenge_response(kind, b"", apop_salt);
            assert_eq!(
                verify_challenge(kind, stored, apop_salt, resp.as_bytes()),
                Err(ChallengeError::Empty),
                "{stored}"
            );
        }
    }
    // (a password of one space is a password)
    let resp = challenge_response(Challenge::CramMd5, b" ", apop_salt);
    assert_eq!(verify_challenge(Challenge::CramMd5, "{PLAIN} ", apop_salt, resp.as_bytes()), Ok(true));
}

/// `cost_estimate` orders schemes as their verification times do.
#[test]
fn cost_estimates_order_schemes_by_verification_time() {
    let b = |cost: u32| format!("$2y${cost:02}$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu");
    let sha512 = find("sha512-crypt").stored;
    let md5 = find("md5-crypt").stored;
    let apr1 = find("apr1").stored;
    let ssha = find("SSHA").stored;
    let argon_64m = "$argon2id$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo";
    let argon_64m_t1 =
        "$argon2id$v=19$m=65536,t=1,p=4$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo";
    let c = cost_estimate;
    assert!(c(&b(12)) > c(&b(10)));
    assert!(c(&b(10)) > c(sha512), "bcrypt 10 > sha512-crypt 5000");
    assert!(c(sha512) > c(md5), "sha512-crypt 5000 > md5-crypt");
    assert!(c(md5) > c(ssha), "md5-crypt > SSHA");
    assert_eq!(c(md5), c(apr1), "apr1 is md5-crypt");
    assert!(c(argon_64m) > c(&b(10)), "argon2 m=64MiB t=3 > bcrypt 10");
    assert!(c(argon_64m) > c(argon_64m_t1), "passes count");
    let rounds_50k = shacrypt::hash(b"x", 512, Some(50_000)).unwrap();
    assert!(c(&rounds_50k) > c(sha512), "rounds count");
    assert!(c(sha512) > c(find("sha256-crypt").stored), "SHA-512 rounds cost more here");
    assert!(c(ssha) > 0 && c("{PLAIN}x") > 0 && c(&cram_md5_stored(b"x")) > 0);
    for bad in ["", "garbage", "$2y$99$x", "{NOSUCH}x", "$6$rounds=1x$salt$hash", "!"] {
        assert_eq!(c(bad), 0, "{bad:?}");
    }
    for v in supported() {
        assert!(c(v.stored) > 0, "{} {}", v.scheme, v.stored);
    }
    // 0 exactly when verify() refuses the value (the cheap ones; the fuzz target checks more).
    for v in vectors().filter(|v| !is_costly(v.stored)) {
        let r = verify(v.stored, v.password.as_bytes());
        assert_eq!(c(v.stored) == 0, r.is_err(), "{} {}: {r:?}", v.scheme, v.stored);
    }
    assert_eq!(c(&b(16)), 55 << 16, "bcrypt 16 is taken");
    assert_eq!(c(&b(17)), 0, "bcrypt 17 asks for more than MAX_WORK_US");
}

#[test]
fn stored_values_asking_for_more_than_max_work_are_malformed_before_any_work() {
    let b = |cost: u32| format!("$2y${cost:02}$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu");
    let salt = "yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo";
    let costly = [
        b(31),
        b(17),
        "$6$rounds=999999999$0123456789abcdef$Sawg4kKwlTQ9xVljMPfN1Cxri6jyez7qsUdmJ8P5dbYdaeQ8eaa483gxip.kV2biFsGJmh7rcv4ZkyvY0.Gqv0"
            .to_string(),
        format!("$argon2id$v=19$m=1048576,t=1024,p=1${salt}"),
        format!("{{ARGON2ID}}$argon2id$v=19$m=1048576,t=7,p=1${salt}"),
    ];
    for stored in &costly {
        let t = std::time::Instant::now();
        let r = verify(stored, b"x");
        assert!(t.elapsed() < std::time::Duration::from_millis(50), "{stored}: refused at once");
        let e = r.expect_err(stored).to_string();
        assert!(e.contains("a verification (at most 4 s are taken)"), "{stored}: {e}");
        assert_eq!(cost_estimate(stored), 0, "{stored}: never a template");
        assert_eq!(problem(stored), Some(e));
        assert!(!is_costly(stored), "nothing to run");
    }
    // the costliest taken: parsed, not run here
    for stored in [b(16), format!("$argon2id$v=19$m=1048576,t=6,p=1${salt}")] {
        assert!(cost_estimate(&stored) > 0 && cost_estimate(&stored) <= MAX_WORK_US, "{stored}");
        assert_eq!(problem(&stored), None);
    }
}

/// Prints measured verification times next to `cost_estimate` (run by hand on a new machine:
/// `cargo test --release --lib cost_estimate_calibration -- --ignored --nocapture`).
#[test]
#[ignore]
fn cost_estimate_calibration() {
    let argon = |m: u32, t: u32, p: u32| {
        let params = argon2::Params::new(m, t, p, None).unwrap();
        let h = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        h.hash_password(b"x", &salt).unwrap().to_string()
    };
    let cases = [
        blf::hash(b"x", 8).unwrap(),
        blf::hash(b"x", 10).unwrap(),
        shacrypt::hash(b"x", 512, None).unwrap(),
        shacrypt::hash(b"x", 256, None).unwrap(),
        shacrypt::hash(b"x", 512, Some(50_000)).unwrap(),
        find("md5-crypt").stored.to_string(),
        find("apr1").stored.to_string(),
        find("SSHA").stored.to_string(),
        find("SSHA512").stored.to_string(),
        "{PLAIN}secret".to_string(),
        argon(65536, 3, 1),
        argon(65536, 1, 4),
        argon(19456, 2, 1),
    ];
    for stored in &cases {
        let n = if is_costly(stored) { 3 } else { 50 };
        let t = std::time::Instant::now();
        for _ in 0..n {
            let _ = verify(stored, b"wrong");
        }
        let us = t.elapsed().as_micros() / n;
        eprintln!("{:>8} µs measured {:>8} estimated  {}", us, cost_estimate(stored), &stored[..stored.len().min(40)]);
    }
}

#[test]
fn crypt_characters_are_exactly_the_crypt_alphabet() {
    for c in 0..=255u8 {
        assert_eq!(is_crypt_char(c), CRYPT_ALPHABET.contains(&c), "byte {c:#04x}");
    }
}

#[test]
fn padding_tops_a_cheaper_failure_up_to_the_template() {
    let b = |cost: u32| format!("$2y${cost:02}$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu");
    let sum = |t: &str, own: u64| -> (Vec<String>, u64) {
        let v: Vec<String> = padding(t, own).into_iter().map(|c| c.into_owned()).collect();
        for x in &v {
            assert_eq!(problem(x), None, "{x}: a usable value");
            assert_eq!(verify(x, b"x").ok(), Some(false), "{x}: never a match");
        }
        let total = v.iter().map(|x| cost_estimate(x)).sum();
        (v, total)
    };
    // a cheap account: the template itself, as before
    assert_eq!(sum(&b(11), cost_estimate(find("SSHA").stored)).0, [b(11)]);
    // bcrypt(10) beside a bcrypt(11) template: one bcrypt(10) more, not a whole bcrypt(11)
    let (v, total) = sum(&b(11), cost_estimate(&b(10)));
    assert_eq!(v, [b(10)]);
    assert_eq!(cost_estimate(&b(10)) + total, cost_estimate(&b(11)));
    // bcrypt(10) beside bcrypt(12): 11 and 10 (the difference's binary digits)
    let (v, total) = sum(&b(12), cost_estimate(&b(10)));
    assert_eq!(v, [b(11), b(10)]);
    assert_eq!(cost_estimate(&b(10)) + total, cost_estimate(&b(12)));
    // the template's prefix is kept
    let braced = format!("{{BLF-CRYPT}}{}", b(11));
    assert_eq!(sum(&braced, cost_estimate(&b(10))).0, [format!("{{BLF-CRYPT}}{}", b(10))]);
    // as costly as the template (within a twentieth): nothing
    assert!(sum(&b(11), cost_estimate(&b(11)) - 1).0.is_empty());
    // another scheme: PBKDF2 rounds for the difference (argon2 64 MiB beside bcrypt(10))
    let argon = "$argon2id$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo";
    let own = cost_estimate(&b(10));
    let (v, total) = sum(argon, own);
    assert!(!v.is_empty() && v.iter().all(|x| x.starts_with("{PBKDF2}$1$")), "{v:?}");
    let want = cost_estimate(argon) - own;
    assert!(total.abs_diff(want) * 50 < want, "{total} µs of padding for {want}");
    // an unusable template pads nothing (an error at once, as its verification was)
    assert!(padding("{NOSUCH}x", 0).is_empty());
}
