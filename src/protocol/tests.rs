#![forbid(unsafe_code)]

use super::*;

fn req(h: &[(&str, &[u8])]) -> Result<AuthRequest, ProtocolError> {
    parse_request(h.iter().map(|(n, v)| (n.as_bytes(), *v)))
}

/// A request exactly as nginx 1.28 builds it for a PLAIN/LOGIN login.
fn nginx_plain(user: &[u8], pass: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        ("Host".into(), b"localhost".to_vec()),
        ("Auth-Method".into(), b"plain".to_vec()),
        ("Auth-User".into(), escape(user)),
        ("Auth-Pass".into(), escape(pass)),
        ("Auth-Protocol".into(), b"imap".to_vec()),
        ("Auth-Login-Attempt".into(), b"1".to_vec()),
        ("Client-IP".into(), b"127.0.0.1".to_vec()),
    ]
}

fn parse_owned(h: &[(String, Vec<u8>)]) -> Result<AuthRequest, ProtocolError> {
    parse_request(h.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())))
}

fn base() -> Vec<(&'static str, &'static [u8])> {
    vec![("Auth-Method", b"plain"), ("Auth-User", b"alice"), ("Auth-Pass", b"secret"), ("Auth-Protocol", b"imap")]
}

fn with(name: &'static str, value: &'static [u8]) -> Vec<(&'static str, &'static [u8])> {
    let mut h: Vec<_> = base().into_iter().filter(|(n, _)| *n != name).collect();
    h.push((name, value));
    h
}

fn without(name: &str) -> Vec<(&'static str, &'static [u8])> {
    base().into_iter().filter(|(n, _)| *n != name).collect()
}

#[test]
fn escape_mirrors_nginx_table() {
    // NGX_ESCAPE_MAIL_AUTH ("memcached" table): 0x00-0x1F, ' ', '%'; nothing else.
    for b in 0u8..=255 {
        let e = escape(&[b]);
        let expect_escaped = b <= 0x1f || b == 0x20 || b == 0x25;
        assert_eq!(e.len() == 3, expect_escaped, "byte {b:#04x}");
        if expect_escaped {
            assert_eq!(e, format!("%{b:02X}").into_bytes());
        } else {
            assert_eq!(e, vec![b]);
        }
    }
    assert_eq!(escape(b"a b%c\r\n"), b"a%20b%25c%0D%0A".to_vec());
    assert_eq!(escape(b"\x7f"), b"\x7f".to_vec());
}

#[test]
fn unescape_cases() {
    assert_eq!(unescape(b"john%20doe").unwrap(), b"john doe");
    assert_eq!(unescape(b"100%25").unwrap(), b"100%");
    assert_eq!(unescape(b"a%0D%0Ab").unwrap(), b"a\r\nb");
    assert_eq!(unescape(b"%0d%0a").unwrap(), b"\r\n", "lowercase hex");
    assert_eq!(unescape(b"%00").unwrap(), vec![0u8]);
    assert_eq!(unescape(b"%41").unwrap(), b"A", "needlessly escaped is fine");
    assert_eq!(unescape("j\u{fc}rgen".as_bytes()).unwrap(), "j\u{fc}rgen".as_bytes());
    assert_eq!(unescape(b"+").unwrap(), b"+", "'+' is not a space here");
    assert_eq!(unescape(b"").unwrap(), b"");
    assert_eq!(unescape(b"ab%zz"), Err(ProtocolError::BadEscape { header: "value", offset: 2 }));
    assert_eq!(unescape(b"%4"), Err(ProtocolError::BadEscape { header: "value", offset: 0 }));
    assert_eq!(unescape(b"x%"), Err(ProtocolError::BadEscape { header: "value", offset: 1 }));
    assert_eq!(unescape(b"%g1"), Err(ProtocolError::BadEscape { header: "value", offset: 0 }));
}

#[test]
fn round_trip_all_bytes() {
    let all: Vec<u8> = (0u8..=255).collect();
    assert_eq!(unescape(&escape(&all)).unwrap(), all);
    for s in ["p@ss w%rd", "\u{444}\u{44b}\u{432}", "tab\there", "%%%", " lead", "trail "] {
        assert_eq!(unescape(&escape(s.as_bytes())).unwrap(), s.as_bytes());
    }
}

#[test]
fn parses_nginx_plain_request() {
    let h = nginx_plain("j\u{fc}rgen doe".as_bytes(), b"p%ss w\r\nord \xff");
    let r = parse_owned(&h).unwrap();
    assert_eq!(r.method, Method::Plain);
    assert_eq!(r.user, "j\u{fc}rgen doe");
    assert_eq!(&*r.pass, b"p%ss w\r\nord \xff");
    assert_eq!(r.protocol, Protocol::Imap);
    assert_eq!(r.login_attempt, 1);
    assert_eq!(r.client_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(r.ssl, None);
}

#[test]
fn spaces_and_leading_trailing_space_survive_escaping() {
    // nginx escapes spaces, so leading/trailing spaces are not lost by header trimming.
    let h = nginx_plain(b" bob ", b"  two spaces  ");
    let r = parse_owned(&h).unwrap();
    assert_eq!(r.user, " bob ");
    assert_eq!(&*r.pass, b"  two spaces  ");
}

#[test]
fn header_names_case_insensitive_and_values_trimmed() {
    let r = req(&[
        ("auth-method", b"PLAIN"),
        ("AUTH-USER", b"alice"),
        ("aUtH-pAsS", b" secret\t"),
        ("Auth-protocol", b"Smtp"),
        ("client-ip", b"::1"),
        ("CLIENT-HOST", b"localhost"),
        ("auth-login-attempt", b"3"),
    ])
    .unwrap();
    assert_eq!(r.method, Method::Plain);
    assert_eq!(r.protocol, Protocol::Smtp);
    assert_eq!(&*r.pass, b"secret");
    assert_eq!(r.client_ip, Some("::1".parse().unwrap()));
    assert_eq!(r.login_attempt, 3);
}

#[test]
fn all_methods_and_protocols() {
    for m in ["plain", "login", "apop", "cram-md5", "external", "none"] {
        let mut h = with("Auth-Method", b"x");
        h.retain(|(n, _)| *n != "Auth-Method");
        h.push(("Auth-Method", m.as_bytes()));
        assert_eq!(req(&h).unwrap().method.as_str(), m);
    }
    for p in Protocol::ALL {
        let mut h = without("Auth-Protocol");
        h.push(("Auth-Protocol", p.as_str().as_bytes()));
        assert_eq!(req(&h).unwrap().protocol, p);
    }
}

#[test]
fn missing_headers() {
    assert_eq!(req(&without("Auth-Method")), Err(ProtocolError::MissingHeader("Auth-Method")));
    assert_eq!(req(&without("Auth-Protocol")), Err(ProtocolError::MissingHeader("Auth-Protocol")));
    assert_eq!(req(&without("Auth-User")), Err(ProtocolError::MissingHeader("Auth-User")));
    assert_eq!(req(&without("Auth-Pass")), Err(ProtocolError::MissingHeader("Auth-Pass")));
    assert_eq!(req(&[]), Err(ProtocolError::MissingHeader("Auth-Method")));
    // A plain HTTP request, nothing auth_http about it.
    assert_eq!(req(&[("Host", b"x"), ("User-Agent", b"curl")]), Err(ProtocolError::MissingHeader("Auth-Method")));
}

#[test]
fn none_and_external_need_no_credentials() {
    // What nginx sends for an SMTP transaction with "smtp_auth none".
    let r = req(&[
        ("Auth-Method", b"none"),
        ("Auth-User", b""),
        ("Auth-Pass", b""),
        ("Auth-Protocol", b"smtp"),
        ("Auth-Login-Attempt", b"1"),
        ("Client-IP", b"127.0.0.1"),
        ("Client-Host", b"[UNAVAILABLE]"),
        ("Auth-SMTP-Helo", b"client.example"),
        ("Auth-SMTP-From", b"MAIL FROM:<a@example.com>"),
        ("Auth-SMTP-To", b"RCPT TO:<b@example.com>"),
    ])
    .unwrap();
    assert_eq!(r.method, Method::None);
    assert_eq!(r.user, "");
    assert!(r.pass.is_empty());
    assert_eq!(r.smtp_from.as_deref(), Some("MAIL FROM:<a@example.com>"));
    assert_eq!(r.smtp_to.as_deref(), Some("RCPT TO:<b@example.com>"));

    let r = req(&[("Auth-Method", b"external"), ("Auth-Protocol", b"imap")]).unwrap();
    assert_eq!(r.method, Method::External);
    assert_eq!(r.user, "");
}

#[test]
fn unknown_method_and_protocol() {
    assert_eq!(req(&with("Auth-Method", b"digest-md5")), Err(ProtocolError::UnknownMethod("digest-md5".into())));
    assert_eq!(req(&with("Auth-Protocol", b"http")), Err(ProtocolError::UnknownProtocol("http".into())));
    let e = req(&with("Auth-Method", b"x\r\ny\xff")).unwrap_err();
    assert_eq!(e.to_string(), "unknown Auth-Method \"x\\x0d\\x0ay\\xff\"");
}

#[test]
fn duplicates_refused() {
    let mut h = base();
    h.push(("auth-user", b"mallory"));
    assert_eq!(req(&h), Err(ProtocolError::DuplicateHeader("Auth-User")));
    let mut h = base();
    h.push(("Auth-Pass", b"other"));
    assert_eq!(req(&h), Err(ProtocolError::DuplicateHeader("Auth-Pass")));
    let mut h = base();
    h.push(("Auth-Protocol", b"smtp"));
    assert_eq!(req(&h), Err(ProtocolError::DuplicateHeader("Auth-Protocol")));
}

#[test]
fn bad_escapes_name_the_header() {
    assert_eq!(req(&with("Auth-User", b"al%zzice")), Err(ProtocolError::BadEscape { header: "Auth-User", offset: 2 }));
    assert_eq!(req(&with("Auth-Pass", b"secret%4")), Err(ProtocolError::BadEscape { header: "Auth-Pass", offset: 6 }));
}

#[test]
fn nul_bytes_refused() {
    assert_eq!(req(&with("Auth-User", b"alice%00admin")), Err(ProtocolError::NulByte("Auth-User")));
    assert_eq!(req(&with("Auth-Pass", b"secret%00garbage")), Err(ProtocolError::NulByte("Auth-Pass")));
}

#[test]
fn user_rules() {
    assert_eq!(req(&with("Auth-User", b"bob%0D%0A")), Err(ProtocolError::ControlChar("Auth-User")));
    assert_eq!(req(&with("Auth-User", b"bob%09")), Err(ProtocolError::ControlChar("Auth-User")));
    assert_eq!(req(&with("Auth-User", b"bob\x7f")), Err(ProtocolError::ControlChar("Auth-User")));
    // U+0085 (C1 control) in UTF-8.
    assert_eq!(req(&with("Auth-User", b"bob\xc2\x85")), Err(ProtocolError::ControlChar("Auth-User")));
    assert_eq!(req(&with("Auth-User", b"bob\xff")), Err(ProtocolError::UserNotUtf8));
    assert_eq!(req(&with("Auth-User", b"%C3%28")), Err(ProtocolError::UserNotUtf8));
    // UTF-8 escaped byte by byte is still UTF-8.
    assert_eq!(req(&with("Auth-User", b"j%C3%BCrgen")).unwrap().user, "j\u{fc}rgen");
    // An empty user is a request, not a protocol error (answered as an unknown user).
    assert_eq!(req(&with("Auth-User", b"")).unwrap().user, "");
}

#[test]
fn password_may_hold_control_bytes_and_non_utf8() {
    let r = req(&with("Auth-Pass", b"a%0D%0Ab%09%1F\xfe\x7f")).unwrap();
    assert_eq!(&*r.pass, b"a\r\nb\t\x1f\xfe\x7f");
}

#[test]
fn too_long_values() {
    let long_user = vec![b'a'; MAX_USER_LEN + 1];
    let h = [
        ("Auth-Method", b"plain".as_slice()),
        ("Auth-User", long_user.as_slice()),
        ("Auth-Pass", b"x".as_slice()),
        ("Auth-Protocol", b"imap".as_slice()),
    ];
    assert_eq!(req(&h), Err(ProtocolError::TooLong { header: "Auth-User", len: MAX_USER_LEN + 1, max: MAX_USER_LEN }));
    // Exactly at the cap is fine, and the cap applies after unescaping.
    let ok_user = vec![b'a'; MAX_USER_LEN];
    let h2 = [
        ("Auth-Method", b"plain".as_slice()),
        ("Auth-User", ok_user.as_slice()),
        ("Auth-Pass", b"x".as_slice()),
        ("Auth-Protocol", b"imap".as_slice()),
    ];
    assert_eq!(req(&h2).unwrap().user.len(), MAX_USER_LEN);
    let escaped_pass = b"%20".repeat(MAX_PASS_LEN);
    let h3 = [
        ("Auth-Method", b"plain".as_slice()),
        ("Auth-User", b"u".as_slice()),
        ("Auth-Pass", escaped_pass.as_slice()),
        ("Auth-Protocol", b"imap".as_slice()),
    ];
    assert_eq!(req(&h3).unwrap().pass.len(), MAX_PASS_LEN);
    let too_long_pass = b"%20".repeat(MAX_PASS_LEN + 1);
    let h4 = [
        ("Auth-Method", b"plain".as_slice()),
        ("Auth-User", b"u".as_slice()),
        ("Auth-Pass", too_long_pass.as_slice()),
        ("Auth-Protocol", b"imap".as_slice()),
    ];
    assert!(matches!(req(&h4), Err(ProtocolError::TooLong { header: "Auth-Pass", .. })));
    // a header this module does not read is not its business, however long
    let big_host = vec![b'h'; MAX_OTHER_LEN + 1];
    let mut h5 = base();
    h5.push(("Client-Host", big_host.as_slice()));
    assert!(req(&h5).is_ok());
}

#[test]
fn bad_values() {
    assert!(matches!(
        req(&with("Auth-Login-Attempt", b"x1")),
        Err(ProtocolError::BadValue { header: "Auth-Login-Attempt", .. })
    ));
    assert!(matches!(
        req(&with("Auth-Login-Attempt", b"99999999999")),
        Err(ProtocolError::BadValue { header: "Auth-Login-Attempt", .. })
    ));
    assert!(matches!(
        req(&with("Auth-Login-Attempt", b"-1")),
        Err(ProtocolError::BadValue { header: "Auth-Login-Attempt", .. })
    ));
    assert!(matches!(req(&with("Client-IP", b"localhost")), Err(ProtocolError::BadValue { header: "Client-IP", .. })));
    assert_eq!(req(&with("Client-IP", b"unix:")).unwrap().client_ip, None);
    assert_eq!(req(&with("Client-IP", b"[::1]")).unwrap().client_ip, Some("::1".parse().unwrap()));
    // an IPv4 client of a dual-stack listener: its IPv4 form (the stores' :client_ip saw both)
    assert_eq!(req(&with("Client-IP", b"::ffff:192.0.2.7")).unwrap().client_ip, Some("192.0.2.7".parse().unwrap()));
}

#[test]
fn error_messages_are_clear() {
    assert_eq!(ProtocolError::MissingHeader("Auth-Pass").to_string(), "missing header \"Auth-Pass\"");
    assert_eq!(
        ProtocolError::TooLong { header: "Auth-User", len: 5000, max: 4096 }.to_string(),
        "\"Auth-User\" too long (5000 bytes, at most 4096)"
    );
    assert_eq!(
        ProtocolError::BadEscape { header: "Auth-User", offset: 3 }.to_string(),
        "bad %-escape in \"Auth-User\" at offset 3"
    );
    assert_eq!(ProtocolError::UserNotUtf8.to_string(), "\"Auth-User\" is not valid UTF-8");
    assert_eq!(ProtocolError::NulByte("Auth-Pass").to_string(), "NUL byte in \"Auth-Pass\"");
}

#[test]
fn ssl_and_salt() {
    let cert = escape(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let h: Vec<(&str, &[u8])> = vec![
        ("Auth-Method", b"apop"),
        ("Auth-User", b"bob"),
        ("Auth-Pass", b"c4c9334bac560ecc979e58001b3e22fb"),
        ("Auth-Salt", b"<1896.697170952@dbc.mtview.ca.us>"),
        ("Auth-Protocol", b"pop3"),
        ("Auth-SSL", b"on"),
        ("Auth-SSL-Protocol", b"TLSv1.3"),
        ("Auth-SSL-Cipher", b"TLS_AES_256_GCM_SHA384"),
        ("Auth-SSL-Verify", b"SUCCESS"),
        ("Auth-SSL-Subject", b"CN=bob"),
        ("Auth-SSL-Issuer", b"CN=ca"),
        ("Auth-SSL-Serial", b"01"),
        ("Auth-SSL-Fingerprint", b"abcdef"),
        ("Auth-SSL-Cert", &cert),
    ];
    let r = req(&h).unwrap();
    assert_eq!(r.salt.as_deref(), Some(&b"<1896.697170952@dbc.mtview.ca.us>"[..]));
    assert!(r.tls(), "Auth-SSL: on");
    let ssl = r.ssl.unwrap();
    assert_eq!(ssl.verify.as_deref(), Some("SUCCESS"));
    assert_eq!(ssl.subject.as_deref(), Some("CN=bob"));
    assert_eq!(ssl.fingerprint.as_deref(), Some("abcdef"));
    // the certificate itself is not read (nothing decides on it): not even a bad escape matters
    assert!(req(&with("Auth-SSL-Cert", b"%zz")).is_ok());
    // Auth-SSL: on alone.
    assert_eq!(req(&with("Auth-SSL", b"on")).unwrap().ssl, Some(SslInfo { on: true, ..SslInfo::default() }));
    assert!(req(&with("Auth-SSL", b"on")).unwrap().tls());
    // certificate details without Auth-SSL: on (nginx never sends that) are not TLS
    let r = req(&with("Auth-SSL-Verify", b"SUCCESS")).unwrap();
    assert!(!r.tls() && r.ssl.is_some());
    assert!(!req(&with("Auth-SSL", b"off")).unwrap().tls());
}

#[test]
fn listener_marker() {
    assert_eq!(req(&base()).unwrap().listener, None);
    let r = req(&with("X-Mail-Auth-Listener", b" mx ")).unwrap();
    assert_eq!(r.listener.as_deref(), Some("mx"));
    // spelled otherwise: refused (nginx copies a reverse-DNS name into Client-Host unchecked
    // and lower-cased: "a\r\nx-mail-auth-listener: submission" adds a header of the client's)
    assert_eq!(
        req(&with("x-mail-auth-listener", b"submission")).unwrap_err(),
        ProtocolError::MisspelledHeader("X-Mail-Auth-Listener")
    );
    for h in [
        "auth-ssl",
        "auth-ssl-verify",
        "auth-ssl-subject",
        "auth-ssl-fingerprint",
        "proxy-protocol-addr",
        "auth-smtp-from",
        "auth-smtp-to",
    ] {
        assert!(matches!(req(&with(h, b"on")), Err(ProtocolError::MisspelledHeader(_))), "{h}");
    }
    // an empty marker names no listener
    assert_eq!(req(&with("X-Mail-Auth-Listener", b"")).unwrap().listener, None);
    // twice (two auth_http_header lines): refused like any repeated header
    let mut h = with("X-Mail-Auth-Listener", b"mx");
    h.push(("X-Mail-Auth-Listener", b"submission"));
    assert_eq!(req(&h), Err(ProtocolError::DuplicateHeader("X-Mail-Auth-Listener")));
}

fn hdr(resp: &AuthResponse) -> Vec<(&'static str, String)> {
    resp.headers().into_iter().map(|(n, v)| (n, String::from_utf8(v).unwrap())).collect()
}

#[test]
fn ok_response() {
    let r = AuthResponse::Ok { server: srv("127.0.0.1"), port: 8143, user: None, pass: None };
    assert_eq!(
        hdr(&r),
        vec![("Auth-Status", "OK".into()), ("Auth-Server", "127.0.0.1".into()), ("Auth-Port", "8143".into())]
    );
    let r = AuthResponse::Ok {
        server: srv("[::1]"),
        port: 143,
        user: Some("j\u{fc}rgen doe".into()),
        pass: Some(b"pa%ss word".to_vec()),
    };
    // Auth-User/Auth-Pass are sent raw: nginx 1.28 copies them without unescaping.
    assert_eq!(
        hdr(&r),
        vec![
            ("Auth-Status", "OK".into()),
            ("Auth-Server", "::1".into()),
            ("Auth-Port", "143".into()),
            ("Auth-User", "j\u{fc}rgen doe".into()),
            ("Auth-Pass", "pa%ss word".into()),
        ]
    );
    assert!(r.is_ok());
}

#[test]
fn unsendable_ok_becomes_tempfail() {
    let bad = [
        AuthResponse::Ok { server: srv("127.0.0.1"), port: 0, user: None, pass: None },
        AuthResponse::Ok {
            server: srv("127.0.0.1"),
            port: 143,
            user: Some("a\r\nAuth-Server: 10.0.0.1".into()),
            pass: None,
        },
        AuthResponse::Ok { server: srv("127.0.0.1"), port: 143, user: Some(" bob".into()), pass: None },
        AuthResponse::Ok { server: srv("127.0.0.1"), port: 143, user: Some(String::new()), pass: None },
        AuthResponse::Ok { server: srv("127.0.0.1"), port: 143, user: None, pass: Some(b"x\0y".to_vec()) },
        AuthResponse::Ok { server: srv("127.0.0.1"), port: 143, user: None, pass: Some(b"trailing ".to_vec()) },
    ];
    for r in bad {
        assert!(r.validate().is_err(), "{r:?}");
        assert_eq!(hdr(&r), vec![("Auth-Status", MSG_TEMP.to_string())], "{r:?}");
    }
    // a backend address is an IP literal or nothing: an answer cannot name anything else
    for s in ["mail.example.com", "127.0.0.1\r\nX: y", "", "[127.0.0.1", "1.2.3.04", "::1]"] {
        assert_eq!(ServerAddr::parse(s), None, "{s:?}");
    }
    assert_eq!(ServerAddr::parse("[::1]").unwrap().as_str(), "::1");
    assert_eq!(ServerAddr::parse("[10.0.0.1]").unwrap().as_str(), "10.0.0.1");
    assert_eq!(ServerAddr::parse("2001:DB8:0:0::1").unwrap().as_str(), "2001:db8::1");
}

#[test]
fn fail_response_sanitized() {
    let r = AuthResponse::Fail {
        error_sasl: None,
        message: "Invalid login or password".into(),
        wait: Some(3),
        error_code: Some("535 5.7.8".into()),
    };
    assert_eq!(
        hdr(&r),
        vec![
            ("Auth-Status", "Invalid login or password".into()),
            ("Auth-Wait", "3".into()),
            ("Auth-Error-Code", "535 5.7.8".into()),
        ]
    );
    let r = AuthResponse::Fail {
        error_sasl: None,
        message: "bad\r\nAuth-Status: OK\0".into(),
        wait: None,
        error_code: Some("\r\n".into()),
    };
    assert_eq!(hdr(&r), vec![("Auth-Status", "bad  Auth-Status: OK".into())]);
    // Texts nginx would read as success or WAIT, or nothing at all, fall back.
    for m in ["OK", " OK ", "WAIT", "", "\r\n"] {
        let r = AuthResponse::Fail { error_sasl: None, message: m.into(), wait: None, error_code: None };
        assert_eq!(hdr(&r), vec![("Auth-Status", MSG_INVALID.to_string())], "{m:?}");
        let r = AuthResponse::TempFail { message: m.into(), wait: Some(1), error_code: None };
        assert_eq!(hdr(&r)[0], ("Auth-Status", MSG_TEMP.to_string()), "{m:?}");
    }
    // "ok" in another case is just a message to nginx (it compares "OK" exactly).
    let r = AuthResponse::Fail { error_sasl: None, message: "ok".into(), wait: None, error_code: None };
    assert_eq!(hdr(&r), vec![("Auth-Status", "ok".to_string())]);
    // Length cap at a character boundary.
    let r = AuthResponse::Fail { error_sasl: None, message: "\u{fc}".repeat(400), wait: None, error_code: None };
    let m = &hdr(&r)[0].1;
    assert!(m.len() <= MAX_MESSAGE_LEN && m.len() >= MAX_MESSAGE_LEN - 1);
    assert!(m.chars().all(|c| c == '\u{fc}'));
}

#[test]
fn temp_and_wait_responses() {
    let r = AuthResponse::TempFail { message: MSG_TEMP.into(), wait: Some(5), error_code: Some("451 4.3.0".into()) };
    assert_eq!(
        hdr(&r),
        vec![("Auth-Status", MSG_TEMP.into()), ("Auth-Wait", "5".into()), ("Auth-Error-Code", "451 4.3.0".into())]
    );
}

#[test]
fn no_header_value_ever_contains_cr_lf_nul() {
    let nasty = "a\r\nb\0c\n\rd\u{85}\u{2028}";
    let rs = [
        AuthResponse::Fail { error_sasl: None, message: nasty.into(), wait: Some(1), error_code: Some(nasty.into()) },
        AuthResponse::TempFail { message: nasty.into(), wait: None, error_code: Some(nasty.into()) },
        AuthResponse::Ok {
            server: srv("10.0.0.1"),
            port: 1,
            user: Some(nasty.into()),
            pass: Some(nasty.as_bytes().to_vec()),
        },
        AuthResponse::Ok {
            server: srv("10.0.0.1"),
            port: 1,
            user: Some("ok".into()),
            pass: Some(nasty.as_bytes().to_vec()),
        },
    ];
    for r in rs {
        for (_, v) in r.headers() {
            assert!(!v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0), "{r:?}");
        }
    }
}

#[test]
fn debug_hides_password() {
    let r = req(&with("Auth-Pass", b"hunter2")).unwrap();
    let d = format!("{r:?}");
    assert!(!d.contains("hunter2") && d.contains("<redacted, 7 bytes>"), "{d}");
}

#[test]
fn protocol_helpers() {
    assert_eq!(Protocol::Pop3.as_str(), "pop3");
    assert_eq!(Protocol::parse(b"POP3"), Some(Protocol::Pop3));
    assert_eq!(Protocol::parse(b"pop"), None);
    assert_eq!(Protocol::Imap.default_port(), 143);
    assert_eq!(Method::parse(b"CRAM-MD5"), Some(Method::CramMd5));
    assert!(Method::Plain.has_credentials());
    assert!(!Method::None.has_credentials());
    assert_eq!(printable(b"ab\"\\\x00", 10), "ab\\x22\\x5c\\x00");
    assert_eq!(printable(b"abcdef", 3), "abc...");
}

#[test]
fn oauth_methods_and_error_sasl() {
    assert_eq!(Method::parse(b"XOAUTH2"), Some(Method::Xoauth2));
    assert_eq!(Method::parse(b"oauthbearer"), Some(Method::Oauthbearer));
    assert!(Method::Xoauth2.is_oauth() && Method::Oauthbearer.has_credentials() && !Method::Plain.is_oauth());
    let fail = |sasl: &str| AuthResponse::Fail {
        error_sasl: Some(sasl.into()),
        message: "Invalid login or password".into(),
        wait: Some(1),
        error_code: None,
    };
    let h = fail("eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=").headers();
    assert_eq!(h.last(), Some(&("Auth-Error-SASL", b"eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=".to_vec())));
    // anything but base64 is not sent (it would reach the client as a challenge)
    for bad in ["", "a b", "x\r\nAuth-Status: OK", "{}"] {
        assert!(fail(bad).headers().iter().all(|(n, _)| *n != "Auth-Error-SASL"), "{bad:?}");
    }
}

#[test]
fn failure_texts_carry_the_protocols_response_codes() {
    use super::{failure_text, Failure};
    // nginx writes "<tag> NO " / "-ERR " before the text: the code must be its first word
    for kind in [Failure::Invalid, Failure::Denied, Failure::Temporary] {
        let imap = failure_text(kind, Some(Protocol::Imap));
        let pop3 = failure_text(kind, Some(Protocol::Pop3));
        assert!(imap.starts_with('[') && pop3.starts_with('['), "{imap} / {pop3}");
        // SMTP's code is Auth-Error-Code's; no IMAP/POP3 code in its text
        assert!(!failure_text(kind, Some(Protocol::Smtp)).contains('['));
        assert!(!failure_text(kind, None).contains('['));
    }
    assert_eq!(
        failure_text(Failure::Invalid, Some(Protocol::Imap)),
        "[AUTHENTICATIONFAILED] Invalid login or password"
    );
    assert!(failure_text(Failure::Denied, Some(Protocol::Imap)).starts_with("[CONTACTADMIN] "));
    assert!(failure_text(Failure::Temporary, Some(Protocol::Imap)).starts_with("[UNAVAILABLE] "));
    assert_eq!(failure_text(Failure::Invalid, Some(Protocol::Pop3)), "[AUTH] Invalid login or password");
    assert_eq!(failure_text(Failure::Denied, Some(Protocol::Pop3)), "[AUTH] Invalid login or password");
    assert!(failure_text(Failure::Temporary, Some(Protocol::Pop3)).starts_with("[SYS/TEMP] "));
    assert_eq!(failure_text(Failure::Invalid, Some(Protocol::Smtp)), MSG_INVALID);
    assert_eq!(failure_text(Failure::Temporary, Some(Protocol::Smtp)), MSG_TEMP);
    // sent as they are (nothing for the sanitizer to change)
    for t in [MSG_INVALID_IMAP, MSG_DENIED_IMAP, MSG_TEMP_IMAP, MSG_INVALID_POP3, MSG_TEMP_POP3] {
        let r = AuthResponse::TempFail { message: t.into(), wait: None, error_code: None };
        assert_eq!(r.headers()[0], ("Auth-Status", t.as_bytes().to_vec()));
    }
}

/// A backend address of a test (a valid literal).
fn srv(s: &str) -> ServerAddr {
    ServerAddr::parse(s).unwrap()
}
