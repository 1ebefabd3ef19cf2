//! auth_http requests: header parsing and unescaping, then the whole decision — the engine
//! nginx runs, with cache, limiter and counters in plain memory — against a small in-memory
//! store. Invariants: a parsed user has no control characters, a parsed password no
//! NUL; every answer validates and carries no CR, LF or NUL in a header value; a plain/login
//! OK happens only for the stored password; escape/unescape round-trips. Parser details: a
//! bad escape is reported at a '%'; a refusal's text is printable ASCII; the user and password
//! are exactly the unescaped Auth-User / Auth-Pass; the size caps hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use ngx_http_mail_auth_module::cidr::Cidr;
use ngx_http_mail_auth_module::config::{AuthConfig, Backend, CacheSettings, Listener, Transport, VerifyConcurrency};
use ngx_http_mail_auth_module::engine::{Ctx, Engine, Level, Region, Reply, SharedMemory};
use ngx_http_mail_auth_module::limiter::{LimitConfig, Rate};
use ngx_http_mail_auth_module::protocol::{self, HeaderView, Method, Protocol, ProtocolError, ServerAddr};
use ngx_http_mail_auth_module::realip::TrustedProxies;
use ngx_http_mail_auth_module::store::{Account, Query, Store, StoreError, StoreNotice};

struct Mem;

impl Store for Mem {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        let password = match q.user {
            "alice" => "{PLAIN}alice-pw",
            "bob" => "{SSHA}mBgzdS52X9GjHSZgalOZKLWalEsWaMFs", // "secret"
            "carol" => "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56",
            "broken" => "{SSHA}!!",
            "down" => return Err(StoreError { source: "mem".into(), cause: "down".into() }),
            _ => return Ok(None),
        };
        Ok(Some(Account { password: password.into(), enabled: true, ..Account::default() }))
    }
    fn take_notices(&self) -> Vec<StoreNotice> {
        Vec::new()
    }
    fn describe(&self) -> String {
        "mem".into()
    }
    fn timing_template(&self) -> Option<String> {
        Some("{SSHA}mBgzdS52X9GjHSZgalOZKLWalEsWaMFs".into())
    }
}

struct Regions(Vec<AtomicU64>, Vec<AtomicU64>, Vec<AtomicU64>);

impl SharedMemory for Regions {
    fn region(&self, which: Region) -> Option<&[AtomicU64]> {
        Some(match which {
            Region::Cache => &self.0,
            Region::Limiter => &self.1,
            Region::Metrics => &self.2,
        })
    }
}

fn words(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine {
        cfg: config(),
        store: Some(Arc::new(Mem)),
        shared: Arc::new(Regions(words(4096), words(4096), words(ngx_http_mail_auth_module::metrics::WORDS))),
        cache: Some(CacheSettings::default()),
        limit: Some(LimitConfig {
            ip: Some(Rate { count: 1000, window: 60 }),
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            ..LimitConfig::default()
        }),
        limit_exempt: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        fleet: None,
        offload: false,
        concurrency: VerifyConcurrency::default(),
        lookups: Default::default(),
        log_level: Level::Info,
        oauth: None,
    })
}

fn config() -> AuthConfig {
    let mut c = AuthConfig::default();
    for p in [Protocol::Imap, Protocol::Pop3, Protocol::Smtp] {
        c.set_backend(p, Backend { server: ServerAddr::parse("127.0.0.1").unwrap(), port: 10143 });
    }
    c.mx_backend = Some(Backend { server: ServerAddr::parse("::1").unwrap(), port: 25 });
    c.relay_domains = vec!["example.org".into(), ".example.net".into()];
    // Proxy-Protocol-Addr believed from 127.0.0.0/8, the transport policy for SMTP and an
    // "mx" listener without AUTH: headers of the input may name them
    c.trusted_proxies = TrustedProxies::parse(&["127.0.0.0/8", "unix:"]).unwrap();
    c.transport = Transport {
        require_tls: vec![Protocol::Smtp],
        listeners: vec![Listener { name: "mx".into(), auth: false, require_tls: None }],
        listener_required: false,
    };
    c
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The value of header `name` (trimmed), if it appears exactly once (names are compared as they
/// come, untrimmed, as `HeaderView` takes them).
fn single<'a>(headers: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
    let mut found = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()));
    let first = found.next()?;
    found.next().is_none().then(|| trim_ows(first.1))
}

fn check_unescape(v: &[u8]) {
    assert_eq!(protocol::unescape(&protocol::escape(v)).as_deref(), Ok(v));
    match protocol::unescape(v) {
        Ok(out) => {
            assert!(out.len() <= v.len());
            if !v.contains(&b'%') {
                assert_eq!(out, v);
            }
        }
        Err(ProtocolError::BadEscape { offset, .. }) => assert_eq!(v.get(offset), Some(&b'%')),
        Err(e) => panic!("unescape: unexpected error {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // escape/unescape round trip on the raw input
    check_unescape(data);

    // "Name: value" lines
    let headers: Vec<(&[u8], &[u8])> = data
        .split(|b| *b == b'\n')
        .filter_map(|l| {
            let i = l.iter().position(|b| *b == b':')?;
            Some((&l[..i], &l[i + 1..]))
        })
        .collect();
    let view = HeaderView::new(headers.iter().copied());
    // The decision nginx would get, and its log lines: each one line of printable text.
    let d = engine().decide(&view, Ctx::new(Level::Debug, true));
    for (_, line) in &d.lines {
        assert!(!line.bytes().any(|b| b < 0x20 || b == 0x7f), "control byte in a log line: {line:?}");
    }
    if let Reply::Answer(response) = &d.reply {
        response.validate().expect("every answer validates");
        for (name, value) in response.headers() {
            assert!(!value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{name} carries CR/LF/NUL");
        }
    }
    let req = match view.request() {
        Ok(req) => req,
        Err(e) => {
            // Display never carries raw client bytes (documented on ProtocolError).
            let s = e.to_string();
            assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)), "raw byte in error text: {s:?}");
            assert!(!matches!(d.reply, Reply::Answer(ref r) if r.is_ok()), "OK for an unparsable request");
            return;
        }
    };
    assert!(!req.user.chars().any(char::is_control), "control character in user");
    assert!(!req.pass.contains(&0), "NUL in password");
    assert!(req.user.len() <= protocol::MAX_USER_LEN && req.pass.len() <= protocol::MAX_PASS_LEN);
    assert!(req.salt.as_ref().is_none_or(|s| s.len() <= protocol::MAX_SALT_LEN));
    match single(&headers, "Auth-User") {
        Some(v) => assert_eq!(protocol::unescape(v).as_deref(), Ok(req.user.as_bytes())),
        None => assert!(req.user.is_empty() && !req.method.has_credentials()),
    }
    match single(&headers, "Auth-Pass") {
        Some(v) => assert_eq!(protocol::unescape(v).as_deref(), Ok(&req.pass[..])),
        None => assert!(req.pass.is_empty() && !req.method.has_credentials()),
    }

    let ok = matches!(d.reply, Reply::Answer(ref r) if r.is_ok());
    if ok && matches!(req.method, Method::Plain | Method::Login) {
        let right = match req.user.as_str() {
            "alice" => &b"alice-pw"[..],
            "bob" | "carol" => &b"secret"[..],
            _ => panic!("OK for unknown user {:?}", req.user),
        };
        assert_eq!(&*req.pass, right, "OK for a wrong password");
    }
});
