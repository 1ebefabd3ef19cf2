use super::*;

fn keys() -> Keys {
    Keys::new(b"0123456789abcdef-fleet-secret".to_vec(), "p:").unwrap()
}

#[test]
fn keys_are_keyed_fixed_size_and_tell_nothing() {
    let k = keys();
    let a = k.key('c', &[b"zone", b"user", b"alice"]);
    assert!(a.starts_with("p:c:") && a.len() == 4 + 32, "{a}");
    assert!(a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!a.contains("alice"));
    assert_eq!(a, k.key('c', &[b"zone", b"user", b"alice"]), "stable: every proxy derives the same key");
    // length-prefixed parts: no two splits of one text collide
    assert_ne!(a, k.key('c', &[b"zone", b"usera", b"lice"]));
    assert_ne!(a, k.key('f', &[b"zone", b"user", b"alice"]), "kinds apart");
    // another secret, other keys (a dictionary of names is useless without it)
    let other = Keys::new(b"another secret of the fleet".to_vec(), "p:").unwrap();
    assert_ne!(a[4..], other.key('c', &[b"zone", b"user", b"alice"])[4..]);
    assert!(Keys::new(b"short".to_vec(), "p:").is_err());
    assert!(!format!("{k:?}").contains("fleet-secret"));
}

#[test]
fn server_arguments_parse() {
    let dir = crate::testutil::TempDir::new("fleet");
    let key = dir.file("key", b"0123456789abcdef0123");
    let pw = dir.file("pw", b"s3cret\nignored\n");
    let kf = format!("key_file={}", key.display());
    let c = parse_server(
        "fleet",
        &["127.0.0.1:6380", &kf, &format!("password_file={}", pw.display()), "timeout=200ms", "retry=5s", "db=2"],
        str::to_string,
    )
    .unwrap();
    assert_eq!(c.addr, Addr::Tcp("127.0.0.1".into(), 6380));
    assert_eq!(c.password.as_deref(), Some("s3cret"));
    assert_eq!((c.timeout, c.retry, c.db, c.tls), (Duration::from_millis(200), Duration::from_secs(5), 2, false));
    assert_eq!((c.connect_timeout, c.pool), (DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL));
    assert_eq!(c.addr.to_string(), "127.0.0.1:6380");
    let c = parse_server("f", &["[::1]:7000", &kf, "tls=on", "prefix=x:", "user=proxy"], str::to_string).unwrap();
    assert_eq!((c.addr.to_string(), c.tls, c.user.as_deref()), ("[::1]:7000".into(), true, Some("proxy")));
    assert_eq!(
        parse_server("f", &["redis.internal", &kf], str::to_string).unwrap().addr.to_string(),
        "redis.internal:6379"
    );
    assert_eq!(
        parse_server("f", &["unix:/run/redis.sock", &kf], str::to_string).unwrap().addr,
        Addr::Unix("/run/redis.sock".into())
    );
    // relative paths are the caller's to resolve
    let rel = parse_server("f", &["h", "key_file=key"], |p| format!("{}/{p}", dir.display())).unwrap();
    assert_eq!(rel.addr, Addr::Tcp("h".into(), 6379));
    for bad in [
        &["127.0.0.1:6379"][..],
        &["127.0.0.1:0", &kf],
        &["127.0.0.1:x", &kf],
        &["unix:relative", &kf],
        &["unix:/s", &kf, "tls=on"],
        &["h", &kf, "timeout=0"],
        &["h", &kf, "pool=0"],
        &["h", &kf, "db=-1"],
        &["h", &kf, "nope=1"],
        &["h", &kf, "timeout=1s", "timeout=2s"],
        &["h", "key_file=/nonexistent"],
        &["h", &kf, "password_file=/nonexistent"],
        &[],
    ] {
        assert!(parse_server("f", bad, str::to_string).is_err(), "{bad:?}");
    }
    let short = dir.file("short", b"tiny");
    let e = parse_server("f", &["h", &format!("key_file={}", short.display())], str::to_string).unwrap_err();
    assert!(e.contains("16 bytes"), "{e}");
    assert!(parse_server("bad name", &["h", &kf], str::to_string).is_err());
}

#[test]
fn health_logs_once_per_interval_and_the_recovery() {
    let mut h = Health::default();
    let t0 = Instant::now();
    let retry = Duration::from_secs(2);
    assert!(h.may_try(t0, retry));
    let first = h.failed("redis", "connection refused", t0, retry).unwrap();
    assert!(first.contains("connection refused") && first.contains("own counters only"), "{first}");
    // not tried again before `retry`; one caller gets to try after it
    assert!(!h.may_try(t0 + Duration::from_secs(1), retry));
    assert!(h.may_try(t0 + Duration::from_secs(2), retry));
    assert!(!h.may_try(t0 + Duration::from_secs(2), retry), "one probe per retry");
    // the same cause within the interval: silent
    assert_eq!(h.failed("redis", "connection refused", t0 + Duration::from_secs(3), retry), None);
    // a new cause is told at once; the same again after the interval
    assert!(h.failed("redis", "timed out", t0 + Duration::from_secs(4), retry).is_some());
    let again = h.failed("redis", "timed out", t0 + LOG_INTERVAL + Duration::from_secs(5), retry).unwrap();
    assert!(again.contains("still"), "{again}");
    let back = h.usable("redis").unwrap();
    assert!(back.contains("usable again") && back.contains("timed out"), "{back}");
    assert_eq!(h.usable("redis"), None);
    assert!(h.may_try(t0, retry));
}
