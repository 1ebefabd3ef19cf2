//! auth_http requests: header parsing and unescaping, then the whole decision against a small
//! in-memory store. Invariants: a parsed user has no control characters, a parsed password no
//! NUL; every answer validates and carries no CR, LF or NUL in a header value; a plain/login
//! OK happens only for the stored password; escape/unescape round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::auth::{self, AuthConfig, Backend};
use ngx_http_mail_auth_module::protocol::{self, Method, Protocol};
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
    fn generation(&self) -> u64 {
        1
    }
    fn describe(&self) -> String {
        "mem".into()
    }
}

fn config() -> AuthConfig {
    let mut c = AuthConfig::default();
    for p in [Protocol::Imap, Protocol::Pop3, Protocol::Smtp] {
        c.set_backend(p, Backend { server: "127.0.0.1".into(), port: 10143 });
    }
    c.mx_backend = Some(Backend { server: "::1".into(), port: 25 });
    c.relay_domains = vec!["example.org".into(), ".example.net".into()];
    c
}

fuzz_target!(|data: &[u8]| {
    // escape/unescape round trip on the raw input
    assert_eq!(protocol::unescape(&protocol::escape(data)).ok().as_deref(), Some(data));
    let _ = protocol::unescape(data);

    // "Name: value" lines
    let headers: Vec<(&[u8], &[u8])> = data
        .split(|b| *b == b'\n')
        .filter_map(|l| {
            let i = l.iter().position(|b| *b == b':')?;
            Some((&l[..i], &l[i + 1..]))
        })
        .collect();
    let Ok(req) = protocol::parse_request(headers.iter().copied()) else { return };
    assert!(!req.user.chars().any(char::is_control), "control character in user");
    assert!(!req.pass.contains(&0), "NUL in password");

    let o = auth::decide(&config(), &req, &Mem);
    o.response.validate().expect("every answer validates");
    for (name, value) in o.response.headers() {
        assert!(!value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{name} carries CR/LF/NUL");
    }
    if o.response.is_ok() && matches!(req.method, Method::Plain | Method::Login) {
        let right = match req.user.as_str() {
            "alice" => &b"alice-pw"[..],
            "bob" | "carol" => &b"secret"[..],
            _ => panic!("OK for unknown user {:?}", req.user),
        };
        assert_eq!(req.pass, right, "OK for a wrong password");
    }
});
