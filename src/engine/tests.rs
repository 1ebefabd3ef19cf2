#![forbid(unsafe_code)]

use super::*;
use crate::config::{Backend, MasterUser};
use crate::limiter::{LimitConfig, Side};
use crate::protocol::HeaderView;
use crate::protocol::{
    Protocol, MSG_DENIED_IMAP, MSG_INVALID, MSG_INVALID_IMAP, MSG_INVALID_POP3, MSG_RELAY, MSG_TEMP, MSG_TEMP_IMAP,
};
use crate::scheme::{self, Challenge};
use crate::store::{Account, Query};

/// The steps of a decision inline, without the limiter, cache and counters.
fn decide(cfg: &AuthConfig, req: &AuthRequest, store: &dyn Store) -> Outcome {
    match lookup(cfg, req, store) {
        Step::Answer(o) => o,
        Step::Verify(mut p) => {
            let r = p.run(&req.pass);
            finish(cfg, req, p, r)
        }
    }
}
use crate::cidr::Cidr;
use crate::store::{StoreError, StoreNotice};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// In-memory store; `broken` makes every lookup fail; counts lookups.
#[derive(Default)]
struct MemStore {
    users: HashMap<String, Account>,
    broken: bool,
    name: String,
    lookups: AtomicUsize,
    queries: Mutex<Vec<String>>,
    template: Option<String>,
    /// `verdicts_cacheable() == false` (a store whose server checks passwords).
    uncacheable: bool,
}

impl MemStore {
    fn with(users: &[(&str, Account)]) -> MemStore {
        MemStore { users: users.iter().map(|(u, a)| (u.to_string(), a.clone())).collect(), ..MemStore::default() }
    }
}

impl Store for MemStore {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.queries.lock().unwrap().push(format!("{} {} {} {:?}", q.user, q.protocol, q.method, q.client_ip));
        if self.broken {
            return Err(StoreError { source: "mem".into(), cause: "disk on fire".into() });
        }
        Ok(self.users.get(q.user).cloned())
    }
    fn take_notices(&self) -> Vec<StoreNotice> {
        Vec::new()
    }
    fn verdicts_cacheable(&self) -> bool {
        !self.uncacheable
    }

    fn timing_template(&self) -> Option<String> {
        self.template.clone()
    }
    fn describe(&self) -> String {
        format!("mem{}", self.name)
    }
}

fn acct(pw: &str) -> Account {
    Account { password: pw.into(), enabled: true, ..Account::default() }
}

fn req(proto: Protocol, user: &str, pass: &[u8]) -> AuthRequest {
    AuthRequest {
        method: Method::Plain,
        user: user.into(),
        pass: pass.into(),
        protocol: proto,
        login_attempt: 1,
        client_ip: Some("127.0.0.1".parse().unwrap()),
        peer_ip: Some("127.0.0.1".parse().unwrap()),
        salt: None,
        smtp_from: None,
        smtp_to: None,
        ssl: None,
        listener: None,
    }
}

fn cfg() -> AuthConfig {
    let mut c = AuthConfig::default();
    c.set_backend(Protocol::Imap, Backend { server: srv("127.0.0.1"), port: 10143 });
    c.set_backend(Protocol::Pop3, Backend { server: srv("::1"), port: 10110 });
    c.set_backend(Protocol::Smtp, Backend { server: srv("127.0.0.1"), port: 10025 });
    c
}

/// A failed IMAP login.
fn invalid(wait: u32) -> AuthResponse {
    failed(MSG_INVALID_IMAP, wait)
}

fn failed(message: &str, wait: u32) -> AuthResponse {
    AuthResponse::Fail { error_sasl: None, message: message.into(), wait: Some(wait), error_code: None }
}

fn store() -> MemStore {
    MemStore::with(&[
        ("alice", acct("{PLAIN}alice pw")),
        ("j\u{fc}rgen", acct("{PLAIN}p\u{e4}ss")),
        ("off", Account { enabled: false, ..acct("{PLAIN}pw") }),
        ("imaponly", Account { protocols: Some(vec![Protocol::Imap]), ..acct("{PLAIN}pw") }),
        ("lan", Account { networks: Some(vec![Cidr::parse("10.0.0.0/8").unwrap()]), ..acct("{PLAIN}pw") }),
        ("slow", Account { wait: Some(30), ..acct("{PLAIN}pw") }),
        ("slowoff", Account { wait: Some(30), enabled: false, ..acct("{PLAIN}pw") }),
        ("slowweird", Account { wait: Some(30), ..acct("{NOSUCHSCHEME}abc") }),
        (
            "slownet",
            Account { wait: Some(30), networks: Some(vec!["10.0.0.0/8".parse().unwrap()]), ..acct("{PLAIN}pw") },
        ),
        ("weird", acct("{NOSUCHSCHEME}abc")),
        (
            "routed",
            Account {
                server: Some("127.0.0.2".into()),
                port: Some(1143),
                backend_user: Some("routed@backend".into()),
                backend_pass: Some("master secret".into()),
                ..acct("{PLAIN}pw")
            },
        ),
        ("badhost", Account { server: Some("mail.example.com".into()), ..acct("{PLAIN}pw") }),
        ("badbuser", Account { backend_user: Some("x\r\nAuth-Server: 10.6.6.6".into()), ..acct("{PLAIN}pw") }),
        ("portonly", Account { port: Some(2143), ..acct("{PLAIN}pw") }),
    ])
}

#[test]
fn ok_with_configured_backend() {
    let s = store();
    let o = decide(&cfg(), &req(Protocol::Imap, "alice", b"alice pw"), &s);
    assert_eq!(o.result, "ok");
    assert_eq!(o.response, AuthResponse::Ok { server: srv("127.0.0.1"), port: 10143, user: None, pass: None });
    assert_eq!(o.full_reason(), "backend 127.0.0.1:10143");
    assert_eq!(o.user, None, "the request's user");
    let o = decide(&cfg(), &req(Protocol::Pop3, "j\u{fc}rgen", "p\u{e4}ss".as_bytes()), &s);
    assert_eq!(o.result, "ok");
    assert_eq!(o.full_reason(), "backend [::1]:10110");
    assert_eq!(s.queries.lock().unwrap()[0], "alice imap plain Some(127.0.0.1)");
}

#[test]
fn login_method_is_accepted_too() {
    let mut r = req(Protocol::Smtp, "alice", b"alice pw");
    r.method = Method::Login;
    assert_eq!(decide(&cfg(), &r, &store()).result, "ok");
}

#[test]
fn wrong_password() {
    let o = decide(&cfg(), &req(Protocol::Imap, "alice", b"alice PW"), &store());
    assert_eq!(o.result, "invalid");
    assert_eq!(o.reason, "wrong password");
    assert_eq!(o.response, invalid(3));
}

fn smtp_invalid() -> AuthResponse {
    AuthResponse::Fail {
        error_sasl: None,
        message: MSG_INVALID.into(),
        wait: Some(3),
        error_code: Some("535 5.7.8".into()),
    }
}

#[test]
fn smtp_failures_carry_error_codes() {
    let o = decide(&cfg(), &req(Protocol::Smtp, "alice", b"nope"), &store());
    assert_eq!(
        o.response,
        AuthResponse::Fail {
            error_sasl: None,
            message: MSG_INVALID.into(),
            wait: Some(3),
            error_code: Some("535 5.7.8".into())
        }
    );
    let mut broken = store();
    broken.broken = true;
    let o = decide(&cfg(), &req(Protocol::Smtp, "alice", b"alice pw"), &broken);
    assert_eq!(
        o.response,
        AuthResponse::TempFail { message: MSG_TEMP.into(), wait: Some(3), error_code: Some("451 4.3.0".into()) }
    );
}

#[test]
fn unknown_user_runs_a_template_verification_and_answers_like_wrong_password() {
    let s = store();
    let c = cfg();
    let r = req(Protocol::Imap, "nobody", b"whatever");
    let Step::Verify(mut p) = begin(&c, &r, &s) else { panic!("unknown user must verify") };
    assert_ne!(p.stored(), "", "the timing template is verified");
    assert_eq!(p.run(&r.pass), VerifyResult::Mismatch, "the template never matches");
    let o = finish(&c, &r, p, VerifyResult::Match);
    assert_eq!(o.result, "unknown-user", "even a (forged) match never lets an unknown user in");
    assert_eq!(o.reason, "no such user");
    let wrong = decide(&c, &req(Protocol::Imap, "alice", b"whatever"), &s);
    assert_eq!(o.response, wrong.response, "same answer as a wrong password");
}

#[test]
fn unknown_users_verify_against_the_store_template() {
    let mut s = store();
    let c = cfg();
    // A store that names no template: the bcrypt default, from the first request on.
    let Step::Verify(mut p) = begin(&c, &req(Protocol::Imap, "ghost", b"x"), &s) else { panic!() };
    assert_eq!(p.stored(), DEFAULT_TEMPLATE);
    assert!(p.is_costly(), "runs on the thread pool like a bcrypt account");
    assert_eq!(p.run(b"x"), VerifyResult::Mismatch, "the template verification never matches");
    // The store's template: whatever was looked up before.
    s.template = Some("{PLAIN}alice pw".into());
    let _ = decide(&c, &req(Protocol::Imap, "alice", b"x"), &s);
    let Step::Verify(p) = begin(&c, &req(Protocol::Imap, "ghost", b"x"), &s) else { panic!() };
    assert_eq!(p.stored(), "{PLAIN}alice pw");
    // even the template account's real password does not let an unknown user in
    let Step::Verify(mut p) = begin(&c, &req(Protocol::Imap, "ghost", b"alice pw"), &s) else { panic!() };
    assert_eq!(p.run(b"alice pw"), VerifyResult::Mismatch);
}

#[test]
fn failures_of_cheaper_accounts_are_padded_to_the_template() {
    let mut s = store();
    s.template = Some(DEFAULT_TEMPLATE.into());
    let c = cfg();
    let Step::Verify(mut p) = begin(&c, &req(Protocol::Imap, "alice", b"wrong"), &s) else { panic!() };
    assert!(p.is_costly(), "a {{PLAIN}} account of a bcrypt store fails as slowly as bcrypt");
    let t = std::time::Instant::now();
    assert_eq!(p.run(b"wrong"), VerifyResult::Mismatch);
    let padded = t.elapsed();
    let Step::Verify(mut p) = begin(&c, &req(Protocol::Imap, "alice", b"alice pw"), &s) else { panic!() };
    let t = std::time::Instant::now();
    assert_eq!(p.run(b"alice pw"), VerifyResult::Match);
    assert!(t.elapsed() * 10 < padded, "a right password is not padded: {:?} vs {padded:?}", t.elapsed());
}

#[test]
fn policy_refusals() {
    let s = store();
    let c = cfg();
    // the right password of an account that may not log in: IMAP says "ask the admin", POP3
    // has no such code (RFC 3206 files policy under AUTH), SMTP says what a wrong password gets
    let o = decide(&c, &req(Protocol::Imap, "off", b"pw"), &s);
    assert_eq!((o.result.as_str(), o.reason.as_str()), ("disabled", "account disabled"));
    assert_eq!(o.response, failed(MSG_DENIED_IMAP, 3));
    assert_eq!(decide(&c, &req(Protocol::Pop3, "off", b"pw"), &s).response, failed(MSG_INVALID_POP3, 3));
    let o = decide(&c, &req(Protocol::Pop3, "imaponly", b"pw"), &s);
    assert_eq!(o.result, "protocol-denied");
    assert_eq!(o.response, failed(MSG_INVALID_POP3, 3));
    // over IMAP, a protocol not allowed with the right password: not [CONTACTADMIN]
    let mut pop_only = store();
    pop_only.users.insert("poponly".into(), Account { protocols: Some(vec![Protocol::Pop3]), ..acct("{PLAIN}pw") });
    let o = decide(&c, &req(Protocol::Imap, "poponly", b"pw"), &pop_only);
    assert_eq!((o.result, &o.response), (AuthResult::ProtocolDenied, &invalid(3)));
    let o = decide(&c, &req(Protocol::Smtp, "off", b"pw"), &s);
    assert_eq!((o.result, &o.response), (AuthResult::Disabled, &smtp_invalid()));
    assert_eq!(decide(&c, &req(Protocol::Imap, "imaponly", b"pw"), &s).result, "ok");
    let o = decide(&c, &req(Protocol::Imap, "lan", b"pw"), &s);
    assert_eq!(o.result, "network-denied");
    assert_eq!(o.reason, "client 127.0.0.1 not in allowed networks");
    // a network rule is not told to a client from elsewhere, even with the right password
    assert_eq!(o.response, invalid(3));
    let mut r = req(Protocol::Imap, "lan", b"pw");
    r.client_ip = Some("::ffff:10.1.2.3".parse().unwrap());
    assert_eq!(decide(&c, &r, &s).result, "ok");
}

#[test]
fn refused_account_with_wrong_password_is_invalid() {
    let s = store();
    let Step::Verify(p) = begin(&cfg(), &req(Protocol::Imap, "off", b"bad"), &s) else {
        panic!("a refused account is still verified (timing)")
    };
    assert_eq!(p.stored(), "{PLAIN}pw");
    let o = decide(&cfg(), &req(Protocol::Imap, "off", b"bad"), &s);
    assert_eq!(o.result, "invalid");
    assert_eq!(o.reason, "wrong password (account disabled too)");
    // a guesser sees what an unknown user or a wrong password gets, never [CONTACTADMIN]
    assert_eq!(o.response, invalid(3));
    assert_eq!(decide(&cfg(), &req(Protocol::Imap, "ghost", b"bad"), &s).response, invalid(3));
}

#[test]
fn per_account_wait() {
    let s = store();
    // only after the right password: without it, the answer of an unknown user (the account's
    // own wait would tell a guesser that it exists)
    let o = decide(&cfg(), &req(Protocol::Imap, "slow", b"bad"), &s);
    assert_eq!(o.response, invalid(3));
    assert_eq!(decide(&cfg(), &req(Protocol::Imap, "slowoff", b"bad"), &s).response, invalid(3));
    assert_eq!(decide(&cfg(), &req(Protocol::Imap, "slowweird", b"bad"), &s).response, invalid(3));
    let o = decide(&cfg(), &req(Protocol::Imap, "slowoff", b"pw"), &s);
    assert_eq!((o.result, o.response), (AuthResult::Disabled, failed(MSG_DENIED_IMAP, 30)));
    // elsewhere a right password refused by the account's rules gets the location's wait, as a
    // wrong one does: its own would confirm the guess (POP3 does not say "disabled")
    let o = decide(&cfg(), &req(Protocol::Pop3, "slowoff", b"pw"), &s);
    let wrong = decide(&cfg(), &req(Protocol::Pop3, "slowoff", b"bad"), &s);
    assert_eq!((o.result, &o.response), (AuthResult::Disabled, &wrong.response));
    let o = decide(&cfg(), &req(Protocol::Imap, "slownet", b"pw"), &s);
    assert_eq!((o.result, o.response), (AuthResult::NetworkDenied, invalid(3)));
    let mut c = cfg();
    c.fail_wait = 7;
    assert_eq!(decide(&c, &req(Protocol::Imap, "alice", b"bad"), &s).response, invalid(7));
    assert_eq!(decide(&c, &req(Protocol::Imap, "ghost", b"bad"), &s).response, invalid(7));
}

#[test]
fn scheme_error_fails_closed() {
    let o = decide(&cfg(), &req(Protocol::Imap, "weird", b"abc"), &store());
    assert_eq!(o.result, "scheme-error");
    assert!(o.reason.starts_with("stored password unusable (scheme "), "{}", o.reason);
    assert_eq!(o.response, invalid(3));
}

#[test]
fn store_error_is_temporary() {
    let mut s = store();
    s.broken = true;
    let o = decide(&cfg(), &req(Protocol::Imap, "alice", b"alice pw"), &s);
    assert_eq!(o.result, "store-error");
    assert_eq!(o.reason, "mem: disk on fire");
    assert_eq!(o.response, AuthResponse::TempFail { message: MSG_TEMP_IMAP.into(), wait: Some(3), error_code: None });
}

#[test]
fn per_user_routing_and_rewrite() {
    let o = decide(&cfg(), &req(Protocol::Imap, "routed", b"pw"), &store());
    assert_eq!(o.result, "ok");
    assert_eq!(
        o.response,
        AuthResponse::Ok {
            server: srv("127.0.0.2"),
            port: 1143,
            user: Some("routed@backend".into()),
            pass: Some(b"master secret".to_vec()),
        }
    );
    assert_eq!(o.full_reason(), "backend 127.0.0.2:1143 as \"routed@backend\"");
    let o = decide(&cfg(), &req(Protocol::Imap, "portonly", b"pw"), &store());
    assert_eq!(o.response, AuthResponse::Ok { server: srv("127.0.0.1"), port: 2143, user: None, pass: None });
}

#[test]
fn backend_problems_are_temporary() {
    let s = store();
    let o = decide(&AuthConfig::default(), &req(Protocol::Imap, "alice", b"alice pw"), &s);
    assert_eq!(o.result, "backend-error");
    assert_eq!(o.reason, "no backend for imap");
    assert!(matches!(o.response, AuthResponse::TempFail { .. }));
    let o = decide(&cfg(), &req(Protocol::Imap, "badhost", b"pw"), &s);
    assert_eq!(o.result, "backend-error");
    assert!(o.reason.contains("not an IP address"), "{}", o.reason);
    let o = decide(&cfg(), &req(Protocol::Imap, "badbuser", b"pw"), &s);
    assert_eq!(o.result, "backend-error");
    assert!(matches!(o.response, AuthResponse::TempFail { .. }));
    // Account server without port and no configured backend: the protocol's usual port.
    let s2 = MemStore::with(&[("r", Account { server: Some("127.0.0.3".into()), ..acct("{PLAIN}pw") })]);
    let o = decide(&AuthConfig::default(), &req(Protocol::Pop3, "r", b"pw"), &s2);
    assert_eq!(o.response, AuthResponse::Ok { server: srv("127.0.0.3"), port: 110, user: None, pass: None });
}

#[test]
fn an_answer_that_names_no_backend_ignores_the_accounts_backend() {
    // the JSON API: an unusable `host=` or a backend login without a recoverable password is
    // not a reason to refuse (before: a temporary failure, and a token login "invalid")
    let s = store();
    let json = AuthConfig { names_no_backend: true, ..cfg() };
    let o = decide(&json, &req(Protocol::Imap, "badhost", b"pw"), &s);
    assert_eq!(o.result, "ok", "{}", o.reason);
    let hashed = Account { backend_user: Some("other".into()), ..acct("{SSHA}8Zp+4cSUUH/DHEUCGPkCDjt6RqpYPQ6T") };
    let mut cram = req(Protocol::Imap, "u", b"x");
    cram.method = crate::protocol::Method::CramMd5;
    let o = decide::accept_account(&json, &cram, &hashed, "u");
    assert_eq!(o.result, "ok", "{}", o.reason);
    let o = decide::accept_account(&cfg(), &cram, &hashed, "u");
    assert_eq!(o.result, "method-denied", "auth_http still needs the backend password");
}

fn ok_parts(o: &Outcome) -> (String, u16, Option<String>, Option<Vec<u8>>) {
    match &o.response {
        AuthResponse::Ok { server, port, user, pass } => (server.to_string(), *port, user.clone(), pass.clone()),
        other => panic!("not OK: {other:?} ({} {})", o.result, o.full_reason()),
    }
}

fn challenge_req(method: Method, proto: Protocol, user: &str, salt: &[u8], response: &str) -> AuthRequest {
    let mut r = req(proto, user, response.as_bytes());
    r.method = method;
    r.salt = Some(salt.to_vec());
    r
}

#[test]
fn apop_and_cram_md5_check_the_response_and_hand_the_backend_a_password() {
    let salt = b"<4711.1700000000@mail.example>";
    let mut cram = acct(&scheme::cram_md5_stored(b"carol pw"));
    cram.extra.push(("x".into(), "y".into()));
    let s = MemStore::with(&[
        ("alice", acct("{PLAIN}alice pw")),
        ("bob", acct("$2y$04$F79D22O7l/TjxN/1V7s7eOq3ESuBGbCXDRCkeuPbmld/.B/Aq7iwW")),
        ("carol", cram),
        ("dave", Account { backend_pass: Some("dave-backend".into()), ..acct(&scheme::cram_md5_stored(b"dave pw")) }),
        ("off", Account { enabled: false, ..acct("{PLAIN}pw") }),
    ]);
    let apop = |user: &str, pw: &[u8]| {
        challenge_req(Method::Apop, Protocol::Pop3, user, salt, &scheme::challenge_response(Challenge::Apop, pw, salt))
    };
    let cram_req = |user: &str, pw: &[u8]| {
        challenge_req(
            Method::CramMd5,
            Protocol::Imap,
            user,
            salt,
            &scheme::challenge_response(Challenge::CramMd5, pw, salt),
        )
    };

    // APOP: right response → OK, and nginx gets the password back (it forgot it).
    let o = decide(&cfg(), &apop("alice", b"alice pw"), &s);
    assert_eq!(ok_parts(&o), ("::1".into(), 10110, None, Some(b"alice pw".to_vec())));
    let o = decide(&cfg(), &apop("alice", b"wrong"), &s);
    assert_eq!((o.result.as_str(), o.reason.as_str()), ("invalid", "wrong apop response"));
    assert_eq!(o.response, failed(MSG_INVALID_POP3, 3));
    // the same response to another challenge (a replay) fails
    let mut replay = apop("alice", b"alice pw");
    replay.salt = Some(b"<1.2@other>".to_vec());
    assert_eq!(decide(&cfg(), &replay, &s).result, "invalid");
    // a bcrypt user can't use APOP: refused, the log says why
    let o = decide(&cfg(), &apop("bob", b"whatever"), &s);
    assert_eq!(o.result, "method-denied");
    assert!(o.reason.contains("BLF-CRYPT") && o.reason.contains("{PLAIN}"), "{}", o.reason);
    assert_eq!(decide(&cfg(), &apop("ghost", b"x"), &s).result, "unknown-user");
    assert_eq!(decide(&cfg(), &apop("off", b"pw"), &s).result, "disabled");
    assert_eq!(decide(&cfg(), &apop("off", b"bad"), &s).result, "invalid");
    let mut nosalt = apop("alice", b"alice pw");
    nosalt.salt = None;
    assert_eq!(decide(&cfg(), &nosalt, &s).result, "bad-request");

    // CRAM-MD5 against a {PLAIN} and a {CRAM-MD5} store.
    let o = decide(&cfg(), &cram_req("alice", b"alice pw"), &s);
    assert_eq!(ok_parts(&o).3, Some(b"alice pw".to_vec()));
    assert_eq!(decide(&cfg(), &cram_req("carol", b"wrong"), &s).result, "invalid");
    // {CRAM-MD5}: verified, but nothing to give the backend → refused with the reason
    let o = decide(&cfg(), &cram_req("carol", b"carol pw"), &s);
    assert_eq!(o.result, "method-denied");
    assert!(o.reason.contains("verified") && o.reason.contains("CRAM-MD5"), "{}", o.reason);
    // ... unless the account has a backend password, or there is a master user
    let o = decide(&cfg(), &cram_req("dave", b"dave pw"), &s);
    assert_eq!(ok_parts(&o).3, Some(b"dave-backend".to_vec()));
    let mut c = cfg();
    c.master_user = Some(MasterUser { name: "master".into(), password: "m-pw".into(), separator: "*".into() });
    let o = decide(&c, &cram_req("carol", b"carol pw"), &s);
    assert_eq!(ok_parts(&o), ("127.0.0.1".into(), 10143, Some("carol*master".into()), Some(b"m-pw".to_vec())));
    assert!(o.full_reason().ends_with("as \"carol*master\""), "{}", o.full_reason());
    // an account's own backend login wins over the master user
    let o = decide(&c, &cram_req("dave", b"dave pw"), &s);
    assert_eq!((ok_parts(&o).2, ok_parts(&o).3), (None, Some(b"dave-backend".to_vec())));
    // and the master user applies to plain logins too
    let o = decide(&c, &req(Protocol::Imap, "alice", b"alice pw"), &s);
    assert_eq!(ok_parts(&o).2, Some("alice*master".into()));
}

fn cert_req(verify: &str, subject: &str, authzid: &str) -> AuthRequest {
    let mut r = req(Protocol::Imap, authzid, b"");
    r.method = Method::External;
    r.ssl = Some(crate::protocol::SslInfo {
        on: true,
        verify: Some(verify.into()),
        subject: Some(subject.into()),
        fingerprint: Some("0a1b2c3d4e5f60718293a4b5c6d7e8f901234567".into()),
    });
    r
}

#[test]
fn external_maps_a_verified_certificate_to_its_account() {
    let s = MemStore::with(&[
        ("alice", acct("{PLAIN}alice pw")),
        ("bob", acct("$6$abc$xyz")),
        (
            "carol",
            Account {
                extra: vec![(
                    "cert_fingerprint".into(),
                    "0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:01:23:45:67".into(),
                )],
                ..acct("{PLAIN}carol pw")
            },
        ),
        ("dave", Account { extra: vec![("cert_fingerprint".into(), "ffff".into())], ..acct("{PLAIN}dave pw") }),
        ("off", Account { enabled: false, ..acct("{PLAIN}pw") }),
    ]);
    let o = decide(&cfg(), &cert_req("SUCCESS", "CN=alice,O=Test CA", ""), &s);
    assert_eq!(ok_parts(&o), ("127.0.0.1".into(), 10143, Some("alice".into()), Some(b"alice pw".to_vec())));
    assert_eq!(o.user.as_deref(), Some("alice"), "the certificate's CN");
    // the client may name itself, but only as the certificate's CN
    assert!(decide(&cfg(), &cert_req("SUCCESS", "CN=alice", "alice"), &s).response.is_ok());
    let o = decide(&cfg(), &cert_req("SUCCESS", "CN=alice", "bob"), &s);
    assert_eq!(o.result, "cert-denied");
    for v in ["FAILED:self signed certificate", "NONE", ""] {
        let o = decide(&cfg(), &cert_req(v, "CN=alice", ""), &s);
        assert_eq!(o.result, "cert-denied", "{v}");
        assert!(!o.response.is_ok());
    }
    let mut no_tls = cert_req("SUCCESS", "CN=alice", "");
    no_tls.ssl = None;
    assert_eq!(decide(&cfg(), &no_tls, &s).result, "cert-denied");
    assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "O=No Name", ""), &s).result, "cert-denied");
    assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "CN=ghost", ""), &s).result, "unknown-user");
    assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "CN=off", ""), &s).result, "disabled");
    // pinned fingerprint: the right certificate only (any case, colons or not)
    assert!(decide(&cfg(), &cert_req("SUCCESS", "CN=carol", ""), &s).response.is_ok());
    assert_eq!(decide(&cfg(), &cert_req("SUCCESS", "CN=dave", ""), &s).result, "cert-denied");
    // no recoverable password and no master user: nothing to log in to the backend with
    let o = decide(&cfg(), &cert_req("SUCCESS", "CN=bob", ""), &s);
    assert_eq!(o.result, "method-denied");
    // SMTP needs no backend password
    let mut smtp = cert_req("SUCCESS", "CN=bob", "");
    smtp.protocol = Protocol::Smtp;
    let o = decide(&cfg(), &smtp, &s);
    assert_eq!(ok_parts(&o).3, None);
}

#[test]
fn subject_cn_reads_rfc2253() {
    assert_eq!(subject_cn("CN=alice,O=Test").as_deref(), Some("alice"));
    assert_eq!(subject_cn("emailAddress=a@b,cn=Alice Smith,O=x").as_deref(), Some("Alice Smith"));
    assert_eq!(subject_cn(r"CN=Smith\, John,O=x").as_deref(), Some("Smith, John"));
    assert_eq!(subject_cn(r"CN=a\2Cb").as_deref(), Some("a,b"));
    assert_eq!(subject_cn("OU=x+CN=multi,O=y").as_deref(), Some("multi"));
    // several CNs: ambiguous (nginx's RFC 2253 form lists the certificate's last one first)
    assert_eq!(subject_cn("CN=alice,CN=mallory,O=Test"), None);
    assert_eq!(subject_cn("OU=x+CN=a+CN=b"), None);
    // OpenSSL's RFC 2253 output for CN=jürgen (`openssl x509 -nameopt RFC2253`, nginx's form)
    assert_eq!(subject_cn(r"CN=j\C3\BCrgen,O=Test").as_deref(), Some("jürgen"));
    assert_eq!(subject_cn(r"CN=\E7\94\B0\E4\B8\AD").as_deref(), Some("田中"));
    assert_eq!(subject_cn(r"CN=bad\C3").as_deref(), None, "not UTF-8");
    assert_eq!(subject_cn("O=x"), None);
    assert_eq!(subject_cn("CN="), None);
    assert_eq!(subject_cn(""), None);
    assert_eq!(subject_cn("CN=trailing\\"), Some("trailing".into()));
}

fn relay_req(to: &str) -> AuthRequest {
    let mut r = req(Protocol::Smtp, "", b"");
    r.method = Method::None;
    r.smtp_from = Some("MAIL FROM:<a@elsewhere.example>".into());
    r.smtp_to = Some(to.into());
    r
}

#[test]
fn smtp_without_auth_relays_only_to_accepted_domains() {
    let mut c = cfg();
    c.mx_backend = Some(Backend { server: srv("127.0.0.9"), port: 2525 });
    c.relay_domains = vec!["example.org".into(), ".sub.example.net".into()];
    let s = store();
    for to in [
        "RCPT TO:<bob@example.org>",
        "rcpt to: <Bob@EXAMPLE.org.>",
        "RCPT TO:<x@a.sub.example.net> NOTIFY=NEVER",
        // nginx's convention: a leading dot is the domain and its subdomains
        "RCPT TO:<bob@sub.example.net>",
        "RCPT TO:<postmaster>",
    ] {
        let o = decide(&c, &relay_req(to), &s);
        assert_eq!(ok_parts(&o), ("127.0.0.9".into(), 2525, None, None), "{to}");
    }
    for to in [
        "RCPT TO:<bob@example.com>",
        "RCPT TO:<bob@example.net>",
        "RCPT TO:<bob@evilexample.org>",
        "RCPT TO:<bob@example.org@evil.example>",
        "RCPT TO:<\"x@example.org>\"@evil.com>",
        "RCPT TO:<@example.org:u@evil.com>",
        "RCPT TO:<u@[127.0.0.1]>",
        "RCPT TO:<u@example.org>junk",
        "RCPT TO:<nodomain>",
        "RCPT TO:<>",
        "",
    ] {
        let o = decide(&c, &relay_req(to), &s);
        assert_eq!(o.result, "relay-denied", "{to}");
        assert_eq!(
            o.response,
            AuthResponse::Fail {
                message: MSG_RELAY.into(),
                wait: Some(3),
                error_code: Some("550 5.7.1".into()),
                error_sasl: None
            },
            "{to}"
        );
    }
    // no domains configured: nothing is relayed; an accepted domain without an mx: temporary
    let o = decide(&cfg(), &relay_req("RCPT TO:<bob@example.org>"), &s);
    assert_eq!(o.result, "relay-denied");
    assert!(o.reason.contains("no mail_auth_relay_domains"), "{}", o.reason);
    let mut no_mx = c.clone();
    no_mx.mx_backend = None;
    assert_eq!(decide(&no_mx, &relay_req("RCPT TO:<bob@example.org>"), &s).result, "backend-error");
    // never for IMAP/POP3; no store lookup either way
    let mut imap = relay_req("RCPT TO:<bob@example.org>");
    imap.protocol = Protocol::Imap;
    assert_eq!(decide(&c, &imap, &s).result, "relay-denied");
    assert_eq!(s.lookups.load(Ordering::SeqCst), 0);
}

#[test]
fn empty_password_refused_for_everyone_without_lookup() {
    let s = MemStore::with(&[("empty", acct("{PLAIN}"))]);
    for u in ["empty", "ghost", ""] {
        let o = decide(&cfg(), &req(Protocol::Imap, u, b""), &s);
        assert_eq!((o.result.as_str(), o.reason.as_str()), ("invalid", "empty password"));
        assert_eq!(o.response, invalid(3));
    }
    assert_eq!(s.lookups.load(Ordering::SeqCst), 0);
}

#[test]
fn pending_debug_shows_no_secret() {
    // the client's password is not in a pending verification (each run is handed it), and
    // the account's stored password is left out of its Debug
    let Step::Verify(p) = begin(&cfg(), &req(Protocol::Imap, "alice", b"s3cr3t-pw"), &store()) else { panic!() };
    let d = format!("{p:?}");
    assert!(!d.contains("s3cr3t-pw") && !d.contains("alice pw") && d.contains("PLAIN"), "{d}");
}

#[test]
fn steps_can_cross_threads() {
    let s = MemStore { template: Some("{PLAIN}x".into()), ..store() };
    let c = cfg();
    let r = req(Protocol::Imap, "alice", b"alice pw");
    let Step::Verify(mut p) = begin(&c, &r, &s) else { panic!() };
    assert!(!p.is_costly(), "{{PLAIN}} is cheap");
    let (p, v) = std::thread::spawn(move || {
        let v = p.run(b"alice pw");
        (p, v)
    })
    .join()
    .unwrap();
    assert_eq!(v, VerifyResult::Match);
    assert_eq!(finish(&c, &r, p, v).result, "ok");
}

#[test]
fn accept_without_store() {
    let r = req(Protocol::Pop3, "anyone", b"x");
    let o = accept(&cfg(), &r, "access phase allowed the request");
    assert_eq!(o.result, "ok");
    assert_eq!(o.reason, "access phase allowed the request");
    assert_eq!(o.response, AuthResponse::Ok { server: srv("::1"), port: 10110, user: None, pass: None });
    let o = accept(&AuthConfig::default(), &r, "x");
    assert_eq!((o.result.as_str(), o.reason.as_str()), ("backend-error", "no backend for pop3"));
    assert!(matches!(o.response, AuthResponse::TempFail { .. }));
}

#[test]
fn refusal_from_http_status() {
    let e = engine(store());
    let h: Vec<(&[u8], &[u8])> =
        vec![(b"auth-protocol", b"smtp"), (b"Auth-User", b"j%C3%BCrgen%20x"), (b"Auth-Pass", b"pw")];
    let d = e.bridge_refusal(&HeaderView::new(h.iter().copied()), 401, ctx()).unwrap();
    assert_eq!(d.result, AuthResult::Invalid);
    assert!(d.lines[0].1.contains("user=\"j\\xc3\\xbcrgen x\""), "{:?}", d.lines);
    assert!(d.lines[0].1.contains("reason=\"access phase answered HTTP 401\""), "{:?}", d.lines);
    assert_eq!(
        d.reply,
        Reply::Answer(AuthResponse::Fail {
            message: MSG_INVALID.into(),
            wait: Some(3),
            error_code: Some("535 5.7.8".into()),
            error_sasl: None
        })
    );
    let d = e.bridge_refusal(&HeaderView::new(h.iter().copied()), 502, ctx()).unwrap();
    assert_eq!(d.result, AuthResult::StoreError);
    assert_eq!(
        d.reply,
        Reply::Answer(AuthResponse::TempFail {
            message: MSG_TEMP.into(),
            wait: Some(3),
            error_code: Some("451 4.3.0".into())
        })
    );
    let imap: Vec<(&[u8], &[u8])> = vec![(b"Auth-Protocol", b"imap"), (b"Auth-User", b"%zz")];
    let d = e.bridge_refusal(&HeaderView::new(imap.iter().copied()), 401, ctx()).unwrap();
    assert_eq!(d.reply, Reply::Answer(invalid(3)));
    // a 403 is no verdict on the password (auth_basic's user file missing, a deny rule)
    let d = e.bridge_refusal(&HeaderView::new(imap.iter().copied()), 403, ctx()).unwrap();
    assert_eq!(d.result, AuthResult::StoreError);
    assert!(matches!(d.reply, Reply::Answer(AuthResponse::TempFail { .. })), "{:?}", d.reply);
    let plain: Vec<(&[u8], &[u8])> = vec![(b"Host", b"x")];
    assert!(e.bridge_refusal(&HeaderView::new(plain.iter().copied()), 401, ctx()).is_none());
    let other: Vec<(&[u8], &[u8])> = vec![(b"Auth-Protocol", b"http")];
    assert!(e.bridge_refusal(&HeaderView::new(other.iter().copied()), 401, ctx()).is_none());
}

/// A Basic-bridge location: its access phase's 401/403 count as wrong passwords, and a ban or
/// the transport policy is decided before the access phase (no password check).
#[test]
fn bridge_counts_refusals_and_checks_before_the_access_phase() {
    let mut e = engine(store());
    e.store = None;
    e.limit = Some(LimitConfig { ip: Some(crate::limiter::Rate { count: 2, window: 60 }), ..LimitConfig::default() });
    e.cfg.transport.require_tls = vec![Protocol::Imap];
    let h = |pass: &'static [u8], tls: bool| -> Vec<(&'static [u8], &'static [u8])> {
        let mut h: Vec<(&[u8], &[u8])> = vec![
            (b"Auth-Method", b"plain"),
            (b"Auth-Protocol", b"imap"),
            (b"Auth-User", b"alice"),
            (b"Auth-Pass", pass),
            (b"Client-IP", b"192.0.2.30"),
        ];
        if tls {
            h.push((b"Auth-SSL", b"on"));
        }
        h
    };
    let pre = |v: &[(&[u8], &[u8])]| e.bridge_precheck(&HeaderView::new(v.iter().copied()), ctx()).map(|d| d.result);
    assert_eq!(pre(&h(b"right", true)), None, "nothing to decide yet: the access phase goes on");
    assert_eq!(pre(&h(b"right", false)), Some(AuthResult::TlsRequired));
    for pass in [&b"wrong-1"[..], b"wrong-2"] {
        let v = h(pass, true);
        let d = e.bridge_refusal(&HeaderView::new(v.iter().copied()), 401, ctx()).unwrap();
        assert_eq!(d.result, AuthResult::Invalid);
    }
    assert_eq!(pre(&h(b"right", true)), Some(AuthResult::RateLimited), "the two 401s banned the client");
    // a request that does not parse, and SMTP without AUTH, are left to the content handler
    assert_eq!(pre(&[(b"Host", b"x")]), None);
    assert_eq!(pre(&[(b"Auth-Method", b"none"), (b"Auth-Protocol", b"smtp"), (b"Client-IP", b"192.0.2.30")]), None);
}

/// The whole chain on real hashes: nginx-escaped headers -> parse_request -> passwd file
/// fixtures (made by htpasswd / doveadm, see testdata/passwd/README.md) -> scheme -> answer.
#[test]
fn passwd_file_fixtures_end_to_end() {
    use crate::protocol::{escape, parse_request};
    use crate::store::passwd_file::PasswdFile;

    let dir = crate::testutil::TempDir::new("e2e");
    let path = dir.join("users");
    let mut data = include_str!("../../testdata/passwd/htpasswd").to_string();
    data.push_str(include_str!("../../testdata/passwd/users.passwd"));
    std::fs::write(&path, data).unwrap();
    let store = PasswdFile::open(&path).unwrap();
    let c = cfg();

    let run = |proto: &str, client: &str, user: &str, pass: &str| {
        let (eu, ep) = (escape(user.as_bytes()), escape(pass.as_bytes()));
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"Auth-Method", b"plain"),
            (b"Auth-User", &eu),
            (b"Auth-Pass", &ep),
            (b"Auth-Protocol", proto.as_bytes()),
            (b"Auth-Login-Attempt", b"1"),
            (b"Client-IP", client.as_bytes()),
        ];
        let r = parse_request(h).unwrap();
        decide(&c, &r, &store)
    };
    let lo = "127.0.0.1";
    for (user, pass) in [
        ("alice", "alice secret"),
        ("bob", "bob%pw"),
        ("carol", "carol pw"),
        ("j\u{fc}rgen", "p\u{e4}ssw\u{f6}rd"),
        ("gina", "gina pw"),
    ] {
        let o = run("imap", lo, user, pass);
        assert_eq!(
            (o.result, &o.response),
            (AuthResult::Ok, &AuthResponse::Ok { server: srv("127.0.0.1"), port: 10143, user: None, pass: None }),
            "{user}: {}",
            o.full_reason()
        );
        let o = run("imap", lo, user, &format!("{pass}x"));
        assert_eq!(o.result, "invalid", "{user}: {}", o.reason);
    }
    // dave: SHA512-CRYPT, allow_nets, per-user backend and backend login.
    let o = run("pop3", "::1", "dave", "dave pw");
    assert_eq!(o.result, "ok", "{}", o.full_reason());
    assert_eq!(
        o.response,
        AuthResponse::Ok { server: srv("127.0.0.1"), port: 10143, user: Some("dave@backend".into()), pass: None }
    );
    assert_eq!(run("pop3", "192.0.2.1", "dave", "dave pw").result, "network-denied");
    // erin: BLF-CRYPT, nologin.
    assert_eq!(run("imap", lo, "erin", "erin pw").result, "disabled");
    assert_eq!(run("imap", lo, "erin", "nope").result, "invalid");
    // frank: SSHA256, protocols=imap,smtp, wait=7.
    assert_eq!(run("smtp", lo, "frank", "frank pw").result, "ok");
    assert_eq!(run("pop3", lo, "frank", "frank pw").result, "protocol-denied");
    // (its own wait=7 only once the password is right: a wrong one gets the location's)
    assert_eq!(run("imap", lo, "frank", "bad").response, invalid(3));
    // Unknown user: same answer as a wrong password.
    let o = run("imap", lo, "mallory", "alice secret");
    assert_eq!((o.result, &o.response), (AuthResult::UnknownUser, &invalid(3)));
    // Unknown users cost a verification of the file's costliest hash (bcrypt).
    let ghost = AuthRequest { user: "ghost".into(), ..req(Protocol::Imap, "", b"pw") };
    let Step::Verify(mut p) = begin(&c, &ghost, &store) else { panic!() };
    assert!(p.stored().starts_with("$2"), "{}", p.stored());
    assert!(p.is_costly());
    assert_eq!(p.run(b"pw"), VerifyResult::Mismatch);
}

#[test]
fn bad_request_outcome() {
    let e = engine(store());
    let h: Vec<(&[u8], &[u8])> =
        vec![(b"Auth-Method", b"plain"), (b"Auth-Protocol", b"smtp"), (b"Auth-User", b"alice")];
    let d = e.decide(&HeaderView::new(h.iter().copied()), ctx());
    assert_eq!(d.result, AuthResult::BadRequest);
    assert!(d.lines[0].1.contains("reason=\"missing header \\x22Auth-Pass\\x22\""), "{:?}", d.lines);
    assert_eq!(
        d.reply,
        Reply::Answer(AuthResponse::Fail {
            message: MSG_INVALID.into(),
            wait: Some(3),
            error_code: Some("535 5.7.8".into()),
            error_sasl: None
        })
    );
    // not an auth_http request at all: HTTP 400
    let h: Vec<(&[u8], &[u8])> = vec![(b"Host", b"x")];
    let d = e.decide(&HeaderView::new(h.iter().copied()), ctx());
    assert_eq!(d.reply, Reply::Status(400));
}

// ---- the engine as nginx runs it: headers in, decision out, shared memory in vectors ----

/// Shared regions in plain memory.
struct VecShared {
    cache: Vec<AtomicU64>,
    limiter: Vec<AtomicU64>,
    metrics: Vec<AtomicU64>,
}

impl SharedMemory for VecShared {
    fn region(&self, which: Region) -> Option<&[AtomicU64]> {
        Some(match which {
            Region::Cache => &self.cache,
            Region::Limiter => &self.limiter,
            Region::Metrics => &self.metrics,
        })
    }
}

fn words(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn engine(store: MemStore) -> Engine {
    Engine {
        cfg: cfg(),
        store: Some(Arc::new(store)),
        shared: Arc::new(VecShared { cache: words(4096), limiter: words(8192), metrics: words(crate::metrics::WORDS) }),
        cache: Some(CacheSettings::default()),
        limit: None,
        limit_exempt: Vec::new(),
        fleet: None,
        offload: false,
        concurrency: VerifyConcurrency::default(),
        lookups: Default::default(),
        log_level: Level::Info,
        oauth: None,
    }
}

fn ctx() -> Ctx {
    Ctx::new(Level::Info, false)
}

fn login(e: &Engine, user: &str, pass: &str, ip: &str) -> Decision {
    let (u, p) = (crate::protocol::escape(user.as_bytes()), crate::protocol::escape(pass.as_bytes()));
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", &u),
        (b"Auth-Pass", &p),
        (b"Client-IP", ip.as_bytes()),
    ];
    e.decide(&HeaderView::new(h.iter().copied()), ctx())
}

#[test]
fn engine_counts_logs_and_answers() {
    let e = engine(store());
    let d = login(&e, "alice", "alice pw", "192.0.2.1");
    assert_eq!(d.result, AuthResult::Ok);
    assert!(matches!(d.reply, Reply::Answer(AuthResponse::Ok { .. })));
    assert_eq!(d.lines.len(), 1);
    assert_eq!(d.lines[0].0, Level::Info);
    assert!(
        d.lines[0]
            .1
            .starts_with("mail_auth: user=\"alice\" client=192.0.2.1 protocol=imap method=plain attempt=1 result=ok"),
        "{}",
        d.lines[0].1
    );
    let d = login(&e, "alice", "nope", "192.0.2.1");
    assert_eq!(d.result, AuthResult::Invalid);
    let m = e.metrics().unwrap();
    assert_eq!((m.result_total(AuthResult::Ok), m.result_total(AuthResult::Invalid)), (1, 1));
    // a log that shows only errors gets no decision line for an ordinary failure
    let h: Vec<(&[u8], &[u8])> =
        vec![(b"Auth-Method", b"plain"), (b"Auth-Protocol", b"imap"), (b"Auth-User", b"x"), (b"Auth-Pass", b"y")];
    let d = e.decide(&HeaderView::new(h.iter().copied()), Ctx::new(Level::Error, false));
    assert!(d.lines.is_empty());
    // the debug trace names the steps
    let d = e.decide(&HeaderView::new(h.iter().copied()), Ctx::new(Level::Debug, true));
    assert!(d.trace.iter().any(|l| l.starts_with("cache hit")), "{:?}", d.trace);
}

#[test]
fn cached_verdicts_are_bound_to_the_stored_credential() {
    let mut s = store();
    s.users.insert("bob".into(), acct("{PLAIN}old"));
    let e = engine(s);
    assert_eq!(login(&e, "bob", "old", "192.0.2.1").result, AuthResult::Ok);
    assert_eq!(login(&e, "bob", "old", "192.0.2.1").result, AuthResult::Ok, "cached");
    // The store changes under the same engine (a reload, another worker, SQLite): the cached
    // OK for the old password cannot answer any more.
    let mut s = store();
    s.users.insert("bob".into(), acct("{PLAIN}new"));
    let e2 = Engine { store: Some(Arc::new(s)), ..e };
    assert_eq!(login(&e2, "bob", "old", "192.0.2.1").result, AuthResult::Invalid);
    assert_eq!(login(&e2, "bob", "new", "192.0.2.1").result, AuthResult::Ok);
}

#[test]
fn jobs_cross_threads_and_complete() {
    let mut e = engine(store());
    e.offload = true;
    e.store = Some(Arc::new(MemStore { template: Some(DEFAULT_TEMPLATE.into()), ..store() }));
    let h: Vec<(&[u8], &[u8])> =
        vec![(b"Auth-Method", b"plain"), (b"Auth-Protocol", b"imap"), (b"Auth-User", b"ghost"), (b"Auth-Pass", b"pw")];
    let Start::Offload(mut job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else {
        panic!("costly: offloaded")
    };
    let e = Arc::new(e);
    let e2 = e.clone();
    let job = std::thread::spawn(move || {
        job.run(&e2);
        job
    })
    .join()
    .unwrap();
    assert_eq!(done(e.complete(job)).result, AuthResult::UnknownUser);
    // a {PLAIN} account's right password is known at once, on the event loop
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"alice"),
        (b"Auth-Pass", b"alice pw"),
    ];
    let Start::Done(d) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else { panic!("cheap: inline") };
    assert_eq!(d.result, AuthResult::Ok);
    // its wrong password is padded to the bcrypt template: that part goes to the pool
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"alice"),
        (b"Auth-Pass", b"nope"),
    ];
    let Start::Offload(job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else { panic!("padding: offloaded") };
    // a right password the account's network rule refuses is padded as a wrong one (answered at
    // once, it would confirm the guess): to the pool too, and refused after the padding
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"slownet"),
        (b"Auth-Pass", b"pw"),
        (b"Client-IP", b"192.0.2.1"),
    ];
    let Start::Offload(mut refused) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else {
        panic!("a right password refused by policy is padded on the pool")
    };
    refused.run(&e);
    assert_eq!(done(e.complete(refused)).result, AuthResult::NetworkDenied);
    // a job that could not be posted is a temporary failure, never OK
    let d = e.abandon(job, false);
    assert_eq!(d.result, AuthResult::InternalError);
    assert!(matches!(d.reply, Reply::Answer(AuthResponse::TempFail { .. })));
}

#[test]
fn the_per_user_limit_counts_the_account_the_store_resolved() {
    let mut s = store();
    for alias in ["al1", "al2", "al3", "al4", "al5"] {
        s.users.insert(alias.into(), Account { name: "alice".into(), ..acct("{PLAIN}alice pw") });
    }
    let mut e = engine(s);
    e.limit =
        Some(LimitConfig { ip: None, user: Some(crate::limiter::Rate { count: 3, window: 60 }), ..Default::default() });
    let results: Vec<AuthResult> = ["al1", "al2", "al3", "al4", "al5"]
        .iter()
        .enumerate()
        .map(|(i, u)| login(&e, u, &format!("guess-{i}"), &format!("192.0.2.{}", i + 1)).result)
        .collect();
    assert_eq!(
        results,
        [
            AuthResult::Invalid,
            AuthResult::Invalid,
            AuthResult::Invalid,
            AuthResult::RateLimited,
            AuthResult::RateLimited
        ],
        "five spellings of one account share its budget"
    );
}

#[test]
fn a_warm_cache_answers_on_the_event_loop() {
    let mut s = store();
    let bcrypt = "$2y$04$DO39LgexR.cOLzZu5JSsPOTUIWSJDCgOIp20RLO4njqVFrdLFGIWa"; // htpasswd -nbB -C 4 u pw
    s.users.insert("bob".into(), acct(bcrypt));
    s.template = Some(bcrypt.into());
    let mut e = engine(s);
    e.offload = true;
    let h: Vec<(&[u8], &[u8])> =
        vec![(b"Auth-Method", b"plain"), (b"Auth-Protocol", b"imap"), (b"Auth-User", b"bob"), (b"Auth-Pass", b"pw")];
    let Start::Offload(mut job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else {
        panic!("cold: offloaded")
    };
    job.run(&e);
    assert_eq!(done(e.complete(job)).result, AuthResult::Ok);
    let Start::Done(d) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else {
        panic!("warm: no pool round trip")
    };
    assert_eq!(d.result, AuthResult::Ok);
}

// XOAUTH2 / OAUTHBEARER (tokens from src/oauth/testdata, minted for 2023: a huge skew keeps
// them valid today; the time rules themselves are tested in src/oauth/tests.rs)
fn oauth_engine(users: &[(&str, Account)], store: bool) -> Engine {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/oauth/testdata");
    let mut c = crate::oauth::OauthConfig::new(dir.join("jwks.json"), "https://idp.example".into(), "mail".into());
    c.skew = 20 * 365 * 86400;
    c.openid_configuration = Some("https://idp.example/.well-known/openid-configuration".into());
    let mut e = engine(MemStore::with(users));
    e.oauth = Some(Arc::new(crate::oauth::Verifier::new(c).unwrap()));
    if !store {
        e.store = None;
    }
    e
}

fn oauth_token(name: &str) -> String {
    include_str!("../oauth/testdata/tokens.txt")
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap()
        .to_string()
}

fn token_login(e: &Engine, method: &str, proto: &str, user: &str, token: &str) -> Decision {
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", method.as_bytes()),
        (b"Auth-Protocol", proto.as_bytes()),
        (b"Auth-User", user.as_bytes()),
        (b"Auth-Pass", token.as_bytes()),
        (b"Client-IP", b"192.0.2.7"),
    ];
    e.decide(&HeaderView::new(h.iter().copied()), ctx())
}

fn sasl_json(d: &Decision) -> String {
    use base64::Engine as _;
    let Reply::Answer(r) = &d.reply else { panic!() };
    let h = r.headers();
    let (_, v) = h.iter().find(|(n, _)| *n == "Auth-Error-SASL").expect("Auth-Error-SASL");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap()
}

#[test]
fn oauth_token_logins() {
    let with_pass = Account { backend_pass: Some("backend pw".into()), ..acct("{SHA512-CRYPT}$6$x$y") };
    let off = Account { enabled: false, ..with_pass.clone() };
    let hashed = acct("{SHA512-CRYPT}$6$x$y");
    let users = [("alice@example.org", with_pass), ("off@example.org", off), ("hashed@example.org", hashed)];
    let e = oauth_engine(&users, true);
    let t = oauth_token("rs256");
    for m in ["xoauth2", "oauthbearer"] {
        let d = token_login(&e, m, "imap", "alice@example.org", &t);
        assert_eq!(d.result, AuthResult::Ok, "{:?}", d.lines);
        assert_eq!(
            d.reply,
            Reply::Answer(AuthResponse::Ok {
                server: srv("127.0.0.1"),
                port: 10143,
                user: None,
                pass: Some(b"backend pw".to_vec())
            })
        );
        assert!(d.lines[0].1.contains(&format!("method={m}")), "{}", d.lines[0].1);
        assert!(d.lines[0].1.contains(r#"reason="token verified (claim \x22email\x22), backend"#), "{}", d.lines[0].1);
        assert!(!d.lines[0].1.contains(&t[..20]), "the token is never logged");
    }
    // refused tokens: invalid-token, the RFC 7628 error, SMTP 535 5.7.8
    let d = token_login(&e, "xoauth2", "smtp", "alice@example.org", &oauth_token("wrongkey"));
    assert_eq!(d.result, AuthResult::InvalidToken);
    assert!(
        d.lines[0].1.contains(r#"reason="token refused: bad signature (user claim \x22email\x22)""#),
        "{}",
        d.lines[0].1
    );
    assert_eq!(
        sasl_json(&d),
        r#"{"openid-configuration":"https://idp.example/.well-known/openid-configuration","status":"invalid_token"}"#
    );
    let Reply::Answer(AuthResponse::Fail { error_code, .. }) = &d.reply else { panic!() };
    assert_eq!(error_code.as_deref(), Some("535 5.7.8"));
    assert_eq!(token_login(&e, "oauthbearer", "imap", "bob@example.org", &t).result, AuthResult::InvalidToken);
    assert_eq!(
        token_login(&e, "oauthbearer", "imap", "alice@example.org", &oauth_token("none")).result,
        AuthResult::InvalidToken
    );
    // a good token for an account the store refuses, or does not have: refused, with the error
    let mut disabled = users.to_vec();
    disabled[0].1.enabled = false;
    let d = token_login(&oauth_engine(&disabled, true), "xoauth2", "imap", "alice@example.org", &t);
    assert_eq!(d.result, AuthResult::Disabled);
    assert!(sasl_json(&d).contains("invalid_token"));
    let d = token_login(&e, "xoauth2", "imap", "ALICE@example.org", &t);
    assert_eq!(d.result, AuthResult::UnknownUser, "looked up as Auth-User");
    assert!(sasl_json(&d).contains("invalid_token"));
    // no backend password, no master user: IMAP refused, SMTP goes on
    let mut c = users.to_vec();
    c[0].1 = acct("{SHA512-CRYPT}$6$x$y");
    let e2 = oauth_engine(&c, true);
    assert_eq!(token_login(&e2, "xoauth2", "imap", "alice@example.org", &t).result, AuthResult::MethodDenied);
    assert_eq!(token_login(&e2, "xoauth2", "smtp", "alice@example.org", &t).result, AuthResult::Ok);
    // the master user logs in for it
    let mut e3 = oauth_engine(&c, true);
    e3.cfg.master_user = Some(MasterUser { name: "master".into(), password: "mpw".into(), separator: "*".into() });
    let d = token_login(&e3, "xoauth2", "imap", "alice@example.org", &t);
    assert_eq!(
        d.reply,
        Reply::Answer(AuthResponse::Ok {
            server: srv("127.0.0.1"),
            port: 10143,
            user: Some("alice@example.org*master".into()),
            pass: Some(b"mpw".to_vec())
        })
    );
    // without a store: the token alone, the configured backend, the master user
    let mut e4 = oauth_engine(&[], false);
    assert_eq!(token_login(&e4, "xoauth2", "imap", "alice@example.org", &t).result, AuthResult::MethodDenied);
    e4.cfg.master_user = e3.cfg.master_user.clone();
    assert_eq!(token_login(&e4, "xoauth2", "imap", "alice@example.org", &t).result, AuthResult::Ok);
    assert_eq!(
        token_login(&e4, "xoauth2", "imap", "alice@example.org", &oauth_token("wrongkey")).result,
        AuthResult::InvalidToken
    );
    // a location without the verifier refuses the methods
    let e5 = engine(store());
    let d = token_login(&e5, "oauthbearer", "imap", "alice", &t);
    assert_eq!(d.result, AuthResult::MethodDenied);
    assert_eq!(sasl_json(&d), r#"{"status":"invalid_token"}"#);
    // counted by method
    let m = e.metrics().unwrap();
    assert!(m.result_total(AuthResult::InvalidToken) >= 3);
}

#[test]
fn oauth_bad_tokens_count_in_the_limiter() {
    let users = [("alice@example.org", Account { backend_pass: Some("b".into()), ..acct("{PLAIN}x") })];
    let mut e = oauth_engine(&users, true);
    e.limit =
        Some(LimitConfig { ip: None, user: Some(crate::limiter::Rate { count: 2, window: 60 }), ..Default::default() });
    // distinct bad tokens (the limiter counts a repeated identical wrong credential once)
    let results: Vec<AuthResult> = ["wrongkey", "none", "confusion"]
        .iter()
        .map(|t| token_login(&e, "xoauth2", "imap", "alice@example.org", &oauth_token(t)).result)
        .collect();
    assert_eq!(results, [AuthResult::InvalidToken, AuthResult::InvalidToken, AuthResult::RateLimited]);
    let d = token_login(&e, "xoauth2", "imap", "alice@example.org", &oauth_token("rs256"));
    assert_eq!(d.result, AuthResult::RateLimited);
    assert!(sasl_json(&d).contains("invalid_token"), "a refusal of a token login carries the error");
}

#[test]
fn a_repeated_bad_token_is_refused_without_a_check_like_a_repeated_wrong_password() {
    let users = [("alice@example.org", Account { backend_pass: Some("b".into()), ..acct("{PLAIN}x") })];
    let mut e = oauth_engine(&users, true);
    e.limit = Some(LimitConfig {
        ip: None,
        user: Some(crate::limiter::Rate { count: 100, window: 60 }),
        ..Default::default()
    });
    let bad = oauth_token("wrongkey");
    let results: Vec<AuthResult> =
        (0..6).map(|_| token_login(&e, "xoauth2", "imap", "alice@example.org", &bad).result).collect();
    // checked REPEATS_CHECKED + 1 times, then refused without a check within the second (a
    // refused token was a policy refusal: checked at every repeat)
    let checked = results.iter().filter(|r| **r == AuthResult::InvalidToken).count();
    assert!((3..=4).contains(&checked), "{results:?}");
    assert_eq!(results.last(), Some(&AuthResult::RateLimited), "{results:?}");
}

#[test]
fn introspected_tokens_go_to_the_pool_and_the_cache() {
    let now = unix_now();
    let active = format!(r#"{{"active":true,"username":"alice@example.org","exp":{}}}"#, now + 3600);
    let (url, server) = crate::oauth::tests::introspection_server(vec![
        (200, active),
        (200, r#"{"active":false}"#.into()),
        (503, "{}".into()),
    ]);
    let with_pass = Account { backend_pass: Some("backend pw".into()), ..acct("{SHA512-CRYPT}$6$x$y") };
    let mut e = oauth_engine(&[("alice@example.org", with_pass)], true);
    let (c, _dir) = crate::oauth::tests::introspect_cfg(&url, false);
    e.oauth = Some(Arc::new(crate::oauth::Verifier::new(c).unwrap()));
    e.offload = true;
    let login_to = |e: &Engine, tok: &[u8]| {
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"Auth-Method", b"xoauth2"),
            (b"Auth-Protocol", b"imap"),
            (b"Auth-User", b"alice@example.org"),
            (b"Auth-Pass", tok),
        ];
        e.start(&HeaderView::new(h.iter().copied()), ctx())
    };
    let login = |tok: &[u8]| login_to(&e, tok);
    // the HTTP call never runs on the event loop: offloaded, then OK
    let Start::Offload(mut job) = login(b"opaque-1") else { panic!("offloaded") };
    job.run(&e);
    let d = done(e.complete(job));
    assert_eq!(d.result, AuthResult::Ok, "{:?}", d.lines);
    // a second login: the cache answers (on the pool), no request to the server
    let Start::Offload(mut job) = login(b"opaque-1") else { panic!("offloaded") };
    job.run(&e);
    let d = done(e.complete(job));
    assert_eq!(d.result, AuthResult::Ok);
    assert!(d.lines.last().unwrap().1.contains("cached introspection answer"), "{:?}", d.lines);
    // inactive: refused with the RFC 7628 error, then cached
    for _ in 0..2 {
        let Start::Offload(mut job) = login(b"opaque-2") else { panic!("offloaded") };
        job.run(&e);
        let d = done(e.complete(job));
        assert_eq!(d.result, AuthResult::InvalidToken, "{:?}", d.lines);
        assert!(sasl_json(&d).contains("invalid_token"));
    }
    // the endpoint fails: temporary, never OK, not cached
    let Start::Offload(mut job) = login(b"opaque-3") else { panic!("offloaded") };
    job.run(&e);
    let d = done(e.complete(job));
    assert_eq!(d.result, AuthResult::StoreError, "{:?}", d.lines);
    assert!(matches!(d.reply, Reply::Answer(AuthResponse::TempFail { .. })));
    assert!(d.lines.last().unwrap().1.contains("HTTP 503"), "{:?}", d.lines);
    assert_eq!(server.join().unwrap().len(), 3, "three requests for five logins");
    // no pool: refused to run on the event loop, a temporary failure
    e.offload = false;
    let Start::Done(d) = login_to(&e, b"opaque-4") else { panic!("inline") };
    assert_eq!(d.result, AuthResult::StoreError, "{:?}", d.lines);
}

/// The decision of a job that ran to its end.
fn done(s: Start) -> Decision {
    match s {
        Start::Done(d) => d,
        Start::Offload(job) => panic!("more to run: {job:?}"),
    }
}

#[test]
fn a_sqlite_lookup_that_need_not_wait_is_answered_on_the_event_loop() {
    // a store that may block but answers now (try_lookup: Some) costs no pool round trip
    struct Quick(MemStore);
    impl Store for Quick {
        fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
            self.0.lookup(q)
        }
        fn take_notices(&self) -> Vec<crate::store::StoreNotice> {
            Vec::new()
        }
        fn describe(&self) -> String {
            "quick".into()
        }
        fn may_block(&self) -> bool {
            true
        }
        fn try_lookup(&self, q: &Query<'_>) -> Option<Result<Option<Account>, StoreError>> {
            (q.user != "busy").then(|| self.0.lookup(q))
        }
    }
    let mut e = engine(store());
    let mut s = store();
    s.users.insert("busy".into(), acct("{PLAIN}busy pw"));
    e.store = Some(Arc::new(Quick(s)));
    e.offload = true;
    let start = |u: &str, p: &str| {
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"Auth-Method", b"plain"),
            (b"Auth-Protocol", b"imap"),
            (b"Auth-User", u.as_bytes()),
            (b"Auth-Pass", p.as_bytes()),
        ];
        e.start(&HeaderView::new(h.iter().copied()), ctx())
    };
    let Start::Done(d) = start("alice", "alice pw") else { panic!("answered now") };
    assert_eq!(d.result, AuthResult::Ok);
    // the store would wait: the lookup goes to the pool
    let Start::Offload(mut job) = start("busy", "busy pw") else { panic!("offloaded") };
    assert_eq!(job.costly(), None, "a lookup is not a costly job");
    job.run(&e);
    assert_eq!(done(e.complete(job)).result, AuthResult::Ok);
}

#[test]
fn a_lookup_on_the_pool_hands_its_costly_verification_back_to_the_scheduler() {
    struct Slow(MemStore);
    impl Store for Slow {
        fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
            self.0.lookup(q)
        }
        fn take_notices(&self) -> Vec<crate::store::StoreNotice> {
            Vec::new()
        }
        fn describe(&self) -> String {
            "slow".into()
        }
        fn may_block(&self) -> bool {
            true
        }
        fn try_lookup(&self, _: &Query<'_>) -> Option<Result<Option<Account>, StoreError>> {
            None
        }
        fn timing_template(&self) -> Option<String> {
            self.0.timing_template()
        }
    }
    let bcrypt = "$2y$04$DO39LgexR.cOLzZu5JSsPOTUIWSJDCgOIp20RLO4njqVFrdLFGIWa"; // htpasswd -nbB -C 4 u pw
    let mut s = store();
    s.users.insert("bob".into(), acct(bcrypt));
    s.template = Some(bcrypt.into());
    let mut e = engine(store());
    e.store = Some(Arc::new(Slow(s)));
    e.offload = true;
    let h: Vec<(&[u8], &[u8])> =
        vec![(b"Auth-Method", b"plain"), (b"Auth-Protocol", b"imap"), (b"Auth-User", b"bob"), (b"Auth-Pass", b"pw")];
    let Start::Offload(mut job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else { panic!("lookup") };
    assert_eq!(job.costly(), None);
    job.run(&e);
    let Start::Offload(mut job) = e.complete(job) else { panic!("the bcrypt comes back to be scheduled") };
    assert!(job.costly().is_some());
    // a second request for the same credential, waiting for that verdict, reads it afterwards
    let Start::Offload(mut follower) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else { panic!() };
    follower.run(&e);
    let Start::Offload(follower) = e.complete(follower) else { panic!() };
    job.run(&e);
    assert_eq!(done(e.complete(job)).result, AuthResult::Ok);
    let d = done(e.retry(follower));
    assert_eq!(d.result, AuthResult::Ok);
    assert!(d.lines.iter().any(|(_, l)| l.contains("cached verdict")) || e.cache.is_none(), "{:?}", d.lines);
}

/// A login through a PROXY-protocol balancer: `Client-IP` the balancer, `pp` the
/// `Proxy-Protocol-Addr` values nginx sent.
fn login_via(e: &Engine, user: &str, pass: &str, balancer: &str, pp: &[&str]) -> Decision {
    let (u, p) = (crate::protocol::escape(user.as_bytes()), crate::protocol::escape(pass.as_bytes()));
    let mut h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", &u),
        (b"Auth-Pass", &p),
        (b"Client-IP", balancer.as_bytes()),
    ];
    for a in pp {
        h.push((b"Proxy-Protocol-Addr", a.as_bytes()));
        h.push((b"Proxy-Protocol-Port", b"40000"));
    }
    e.decide(&HeaderView::new(h.iter().copied()), Ctx::new(Level::Debug, true))
}

#[test]
fn a_trusted_balancer_names_the_client_for_policy_limiter_store_and_log() {
    let mut e = engine(store());
    e.cache = None;
    e.limit = Some(LimitConfig { ip: Some(crate::limiter::Rate { count: 2, window: 60 }), ..LimitConfig::default() });
    e.cfg.trusted_proxies = crate::realip::TrustedProxies::parse(&["192.0.2.0/24"]).unwrap();

    // network rule and log line: the client the balancer named
    let d = login_via(&e, "lan", "pw", "192.0.2.1", &["10.1.2.3"]);
    assert_eq!(d.result, AuthResult::Ok, "{:?}", d.lines);
    assert!(d.lines[0].1.contains(" client=10.1.2.3 "), "{}", d.lines[0].1);
    assert!(d.trace.iter().any(|l| l.contains("named by trusted proxy 192.0.2.1")), "{:?}", d.trace);
    let d = login_via(&e, "lan", "pw", "192.0.2.1", &["203.0.113.5"]);
    assert_eq!(d.result, AuthResult::NetworkDenied);
    assert!(d.lines[0].1.contains("client 203.0.113.5 not in allowed networks"), "{}", d.lines[0].1);

    // the store sees it (SQLite's :client_ip)
    let s = Arc::new(store());
    let e2 = Engine { store: Some(s.clone()), cfg: e.cfg.clone(), ..engine(MemStore::default()) };
    login_via(&e2, "alice", "alice pw", "192.0.2.1", &["198.51.100.7"]);
    assert!(s.queries.lock().unwrap().last().unwrap().ends_with("Some(198.51.100.7)"));

    // the limiter counts each client behind the balancer on its own
    for pw in ["wrong 1", "wrong 2"] {
        assert_eq!(login_via(&e, "alice", pw, "192.0.2.1", &["198.51.100.66"]).result, AuthResult::Invalid);
    }
    assert_eq!(login_via(&e, "alice", "wrong 3", "192.0.2.1", &["198.51.100.66"]).result, AuthResult::RateLimited);
    assert_eq!(login_via(&e, "alice", "alice pw", "192.0.2.1", &["198.51.100.77"]).result, AuthResult::Ok);
    assert_eq!(login_via(&e, "alice", "alice pw", "192.0.2.1", &["198.51.100.66"]).result, AuthResult::RateLimited);
}

#[test]
fn an_untrusted_source_cannot_name_a_client() {
    let mut e = engine(store());
    e.cfg.trusted_proxies = crate::realip::TrustedProxies::parse(&["192.0.2.1"]).unwrap();
    let d = login_via(&e, "lan", "pw", "192.0.2.2", &["10.1.2.3"]);
    assert_eq!(d.result, AuthResult::NetworkDenied);
    assert!(d.lines[0].1.contains(" client=192.0.2.2 "), "{}", d.lines[0].1);
    // a garbage or repeated address from an untrusted source is not looked at
    assert_eq!(login_via(&e, "alice", "alice pw", "192.0.2.2", &["999.1.1.1"]).result, AuthResult::Ok);
    assert_eq!(login_via(&e, "alice", "alice pw", "192.0.2.2", &["10.0.0.1", "10.0.0.2"]).result, AuthResult::Ok);
    // nothing listed: the header is ignored (main's behaviour)
    let e = engine(store());
    assert_eq!(login_via(&e, "lan", "pw", "192.0.2.1", &["10.1.2.3"]).result, AuthResult::NetworkDenied);
}

#[test]
fn a_trusted_balancer_without_a_usable_address_is_a_temporary_failure() {
    let mut e = engine(store());
    // the balancer's own network is allowed for "lan": falling back to it would let anyone in
    e.cfg.trusted_proxies = crate::realip::TrustedProxies::parse(&["10.0.0.1"]).unwrap();
    for pp in [&["999.1.2.3"][..], &[""], &["10.9.9.9", "10.9.9.8"]] {
        let d = login_via(&e, "lan", "pw", "10.0.0.1", pp);
        assert_eq!(d.result, AuthResult::ProxyError, "{pp:?}");
        assert!(matches!(d.reply, Reply::Answer(AuthResponse::TempFail { .. })), "{pp:?}");
        let line = &d.lines.last().unwrap().1;
        assert_eq!(d.lines.last().unwrap().0, Level::Error, "{line}");
        assert!(line.contains("result=proxy-error") && line.contains("trusted proxy 10.0.0.1"), "{line}");
    }
    // no header at all (PROXY UNKNOWN, a listener without proxy_protocol): the balancer itself
    assert_eq!(login_via(&e, "lan", "pw", "10.0.0.1", &[]).result, AuthResult::Ok);
    // an unparsable request still logs the client the balancer named
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"a%zz"),
        (b"Auth-Pass", b"x"),
        (b"Client-IP", b"10.0.0.1"),
        (b"Proxy-Protocol-Addr", b"198.51.100.9"),
    ];
    let d = e.decide(&HeaderView::new(h.iter().copied()), ctx());
    assert_eq!(d.result, AuthResult::BadRequest);
    assert!(d.lines[0].1.contains(" client=198.51.100.9 "), "{}", d.lines[0].1);
}

fn login_with(e: &Engine, user: &str, pass: &str, extra: &[(&str, &str)]) -> Decision {
    let (u, p) = (crate::protocol::escape(user.as_bytes()), crate::protocol::escape(pass.as_bytes()));
    let mut h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", &u),
        (b"Auth-Pass", &p),
        (b"Client-IP", b"192.0.2.7"),
    ];
    h.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    e.decide(&HeaderView::new(h.iter().copied()), ctx())
}

#[test]
fn transport_refusals_check_no_password_and_count_nothing() {
    let mut e = engine(store());
    let mem = Arc::new(store());
    e.store = Some(mem.clone());
    e.cfg.transport.require_tls = vec![Protocol::Imap];
    e.cfg.transport.listeners = vec![crate::config::Listener { name: "mx".into(), auth: false, require_tls: None }];
    e.limit = Some(LimitConfig { user: Some(crate::limiter::parse_rate("1/m").unwrap()), ..LimitConfig::default() });
    // right and wrong password, known and unknown user: one answer, no lookup
    for (user, pass) in [("alice", "alice pw"), ("alice", "wrong"), ("alice", "wrong2"), ("nobody", "x")] {
        let d = login_with(&e, user, pass, &[]);
        assert_eq!(d.result, AuthResult::TlsRequired, "{user} {pass}");
        let Reply::Answer(AuthResponse::Fail { message, wait, error_code, .. }) = d.reply else { panic!() };
        assert_eq!(message, "[PRIVACYREQUIRED] Encryption required for requested authentication mechanism");
        assert_eq!((wait, error_code), (Some(3), None));
        let d = login_with(&e, user, pass, &[("Auth-SSL", "on"), ("X-Mail-Auth-Listener", "mx")]);
        assert_eq!(d.result, AuthResult::ListenerDenied, "{user} {pass}");
    }
    assert_eq!(mem.lookups.load(Ordering::SeqCst), 0, "no lookup");
    // nothing was counted against alice's budget of one failure a minute
    let d = login_with(&e, "alice", "alice pw", &[("Auth-SSL", "on")]);
    assert_eq!(d.result, AuthResult::Ok);
    let m = e.metrics().unwrap();
    assert_eq!((m.result_total(AuthResult::TlsRequired), m.result_total(AuthResult::ListenerDenied)), (4, 4));
    // a request of the JSON API (Dovecot's, with its own TLS rules) is not subject to it
    let Start::Done(d) = e.start_parsed(req(Protocol::Imap, "imaponly", b"pw"), ctx()) else { panic!() };
    assert_eq!(d.result, AuthResult::Ok);
}

/// The auth_http answer's Auth-Wait for headers `h`.
fn wait_of(e: &Engine, h: &[(&[u8], &[u8])]) -> Option<u32> {
    match e.decide(&HeaderView::new(h.iter().copied()), ctx()).reply {
        Reply::Answer(AuthResponse::Fail { wait, .. } | AuthResponse::TempFail { wait, .. }) => wait,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn refused_challenge_logins_get_no_wait_on_an_nginx_without_the_cve_2026_27651_fix() {
    let salt: &[u8] = b"<1896.697170952@dbc.mtview.ca.us>";
    let apop: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"apop"),
        (b"Auth-Protocol", b"pop3"),
        (b"Auth-User", b"alice"),
        (b"Auth-Pass", b"00000000000000000000000000000000"),
        (b"Auth-Salt", salt),
    ];
    let cram: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"cram-md5"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"ghost"),
        (b"Auth-Pass", b"00000000000000000000000000000000"),
        (b"Auth-Salt", salt),
    ];
    let plain: Vec<(&[u8], &[u8])> =
        vec![(b"Auth-Method", b"plain"), (b"Auth-Protocol", b"imap"), (b"Auth-User", b"alice"), (b"Auth-Pass", b"x")];
    // without the salt nginx always sends: a bad request, refused all the same
    let bad: Vec<(&[u8], &[u8])> = apop[..4].to_vec();

    let mut e = engine(store());
    assert!(e.cfg.nginx_auth_wait_fixed, "the default: a fixed nginx");
    for h in [&apop, &cram, &plain, &bad] {
        assert_eq!(wait_of(&e, h), Some(3));
    }
    e.cfg.nginx_auth_wait_fixed = false;
    for h in [&apop, &cram, &bad] {
        assert_eq!(wait_of(&e, h), Some(0), "nginx closes the session instead of crashing on the next try");
    }
    assert_eq!(wait_of(&e, &plain), Some(3), "other methods keep their wait");
    // a temporary failure too
    let mut broken = store();
    broken.broken = true;
    let e = Engine { store: Some(Arc::new(broken)), ..e };
    assert_eq!(wait_of(&e, &cram), Some(0));
    assert_eq!(wait_of(&e, &plain), Some(3));
}

fn app(label: &str, pw: &str) -> crate::store::AppPassword {
    crate::store::AppPassword { label: label.into(), password: pw.into(), ..Default::default() }
}

/// An account with a main password and app passwords.
fn with_apps(main: &str, apps: Vec<crate::store::AppPassword>) -> Account {
    Account { app_passwords: apps, ..acct(main) }
}

#[test]
fn app_passwords_log_in_with_their_label_and_rules() {
    let mut s = store();
    let mut smtp_only = app("mailer", "{PLAIN}mailer secret");
    smtp_only.protocols = Some(vec![Protocol::Smtp]);
    let mut lan = app("lan", "{PLAIN}lan secret");
    lan.networks = Some(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
    s.users.insert(
        "bob".into(),
        with_apps("{PLAIN}main", vec![app("phone", "{PLAIN}phone secret"), smtp_only, lan.clone()]),
    );
    let c = cfg();
    let main = decide(&c, &req(Protocol::Imap, "bob", b"main"), &s);
    assert_eq!((main.result, &*main.full_reason()), (AuthResult::Ok, "backend 127.0.0.1:10143"));
    let o = decide(&c, &req(Protocol::Imap, "bob", b"phone secret"), &s);
    assert_eq!((o.result, &*o.full_reason()), (AuthResult::Ok, "backend 127.0.0.1:10143 (app password 'phone')"));
    assert!(matches!(o.response, AuthResponse::Ok { .. }));
    // its own protocols
    assert_eq!(decide(&c, &req(Protocol::Smtp, "bob", b"mailer secret"), &s).result, AuthResult::Ok);
    let o = decide(&c, &req(Protocol::Imap, "bob", b"mailer secret"), &s);
    assert_eq!(o.result, AuthResult::ProtocolDenied);
    assert_eq!(o.reason, "app password 'mailer': protocol imap not allowed (allowed: smtp)");
    // the credential was right, but a guesser must not learn it: the usual refusal
    assert_eq!(o.response, invalid(3), "the client sees the usual refusal");
    // its own networks (the request comes from 127.0.0.1)
    let o = decide(&c, &req(Protocol::Imap, "bob", b"lan secret"), &s);
    assert_eq!(o.result, AuthResult::NetworkDenied);
    assert!(o.reason.starts_with("app password 'lan': client 127.0.0.1 not in allowed networks"), "{}", o.reason);
    let mut from_lan = req(Protocol::Imap, "bob", b"lan secret");
    from_lan.client_ip = Some("10.1.2.3".parse().unwrap());
    assert_eq!(decide(&c, &from_lan, &s).result, AuthResult::Ok);
    // a wrong password says how many credentials were tried
    let o = decide(&c, &req(Protocol::Imap, "bob", b"nope"), &s);
    assert_eq!(
        (o.result, o.reason.as_str()),
        (AuthResult::Invalid, "wrong password (main password and 3 app passwords tried)")
    );
    // the account's own rules come first: a disabled account's app password is refused
    s.users.get_mut("bob").unwrap().enabled = false;
    assert_eq!(decide(&c, &req(Protocol::Smtp, "bob", b"phone secret"), &s).result, AuthResult::Disabled);
    // another account's app password is nothing to this one
    assert_eq!(decide(&c, &req(Protocol::Imap, "alice", b"phone secret"), &s).result, AuthResult::Invalid);
}

#[test]
fn main_password_can_be_refused_per_protocol() {
    let mut s = store();
    s.users.insert(
        "bob".into(),
        Account { app_only: Some(vec![Protocol::Imap]), ..with_apps("{PLAIN}main", vec![app("phone", "{PLAIN}ph")]) },
    );
    s.users.insert("carol".into(), with_apps("{PLAIN}main", vec![app("phone", "{PLAIN}ph")]));
    let mut c = cfg();
    let o = decide(&c, &req(Protocol::Imap, "bob", b"main"), &s);
    assert_eq!(o.result, AuthResult::ProtocolDenied);
    assert_eq!(o.reason, "main password not accepted for imap (app passwords only)");
    // the right main password is not confirmed to a guesser on IMAP: the answer of a wrong one
    assert_eq!(o.response, invalid(3));
    assert_eq!(o.response, decide(&c, &req(Protocol::Imap, "bob", b"not main"), &s).response);
    assert_eq!(decide(&c, &req(Protocol::Smtp, "bob", b"main"), &s).result, AuthResult::Ok);
    assert_eq!(decide(&c, &req(Protocol::Imap, "bob", b"ph"), &s).result, AuthResult::Ok);
    assert_eq!(decide(&c, &req(Protocol::Pop3, "carol", b"main"), &s).result, AuthResult::Ok);
    // mail_auth_app_only: for everyone, accounts without app passwords included
    c.app_only = vec![Protocol::Pop3];
    assert_eq!(decide(&c, &req(Protocol::Pop3, "carol", b"main"), &s).result, AuthResult::ProtocolDenied);
    assert_eq!(decide(&c, &req(Protocol::Pop3, "carol", b"ph"), &s).result, AuthResult::Ok);
    assert_eq!(decide(&c, &req(Protocol::Pop3, "alice", b"alice pw"), &s).result, AuthResult::ProtocolDenied);
    assert_eq!(decide(&c, &req(Protocol::Imap, "carol", b"main"), &s).result, AuthResult::Ok);
}

#[test]
fn credentials_are_tried_cheapest_first_and_bounded() {
    let bcrypt = scheme::hash_password(scheme::HashKind::Bcrypt { cost: 4 }, b"laptop").unwrap();
    let mut apps = vec![app("laptop", &bcrypt), app("phone", "{PLAIN}phone")];
    for i in 0..30 {
        apps.push(app(&format!("extra{i}"), &format!("{{PLAIN}}extra {i}")));
    }
    let a = with_apps(&bcrypt, apps);
    let subject = |a: &Account| super::verify::Subject::Known { account: Box::new(a.clone()), refusal: None };
    let mut p = Pending::new(DEFAULT_TEMPLATE.into(), subject(&a), 8);
    assert_eq!(p.app_passwords(), crate::store::MAX_APP_PASSWORDS, "at most MAX_APP_PASSWORDS tried");
    assert!(p.is_costly() && p.has_cheap_first());
    assert_eq!(p.order()[0], 2, "the cheap ones first");
    assert!(p.run_cheap(b"phone"), "found among the cheap ones, no bcrypt run");
    assert_eq!(p.matched(), Some(2));
    // beyond the bound: never tried
    let mut p = Pending::new(DEFAULT_TEMPLATE.into(), subject(&a), 8);
    assert_eq!(p.run(b"extra 20"), VerifyResult::Mismatch);
    let mut p = Pending::new(DEFAULT_TEMPLATE.into(), subject(&a), 8);
    assert_eq!(p.run(b"extra 13"), VerifyResult::Match);
    // the costly ones after the cheap ones failed
    let mut p = Pending::new(DEFAULT_TEMPLATE.into(), subject(&a), 8);
    assert!(!p.run_cheap(b"laptop"));
    assert_eq!(p.run_own(b"laptop"), VerifyResult::Match);
    assert_eq!(p.matched(), Some(0), "the main password (same secret) comes first in store order");
}

#[test]
fn revoked_app_password_is_not_answered_from_the_cache() {
    let bcrypt = scheme::hash_password(scheme::HashKind::Bcrypt { cost: 4 }, b"laptop secret").unwrap();
    let apps = vec![app("phone", "{PLAIN}phone secret"), app("laptop", &bcrypt)];
    let mut s = store();
    s.users.insert("bob".into(), with_apps("{PLAIN}main", apps.clone()));
    let e = engine(s);
    let d = login(&e, "bob", "laptop secret", "192.0.2.1");
    assert_eq!(d.result, AuthResult::Ok);
    let d = login(&e, "bob", "laptop secret", "192.0.2.1");
    assert!(d.lines[0].1.contains("(app password 'laptop') (cached verdict)"), "{}", d.lines[0].1);
    // the cached verdict names the credential: its rules still apply at every request
    let mut s = store();
    let mut restricted = apps.clone();
    restricted[1].protocols = Some(vec![Protocol::Smtp]);
    s.users.insert("bob".into(), with_apps("{PLAIN}main", restricted));
    let e = Engine { store: Some(Arc::new(s)), ..e };
    let d = login(&e, "bob", "laptop secret", "192.0.2.1");
    assert_eq!(d.result, AuthResult::ProtocolDenied);
    assert!(d.lines[0].1.contains("app password 'laptop': protocol imap"), "{}", d.lines[0].1);
    // revoked (the store no longer has it): a new key, verified again, refused
    let mut s = store();
    s.users.insert("bob".into(), with_apps("{PLAIN}main", apps[..1].to_vec()));
    let e = Engine { store: Some(Arc::new(s)), ..e };
    let d = login(&e, "bob", "laptop secret", "192.0.2.1");
    assert_eq!(d.result, AuthResult::Invalid);
    assert!(!d.lines[0].1.contains("cached"), "{}", d.lines[0].1);
    // a failure with an app password counts like any failed password for the limiter
    let mut e = e;
    e.limit = Some(LimitConfig { user: Some(crate::limiter::Rate { count: 2, window: 60 }), ..LimitConfig::default() });
    assert_eq!(login(&e, "bob", "guess 1", "192.0.2.9").result, AuthResult::Invalid);
    assert_eq!(login(&e, "bob", "laptop secret", "192.0.2.9").result, AuthResult::Invalid);
    assert_eq!(login(&e, "bob", "phone secret", "192.0.2.9").result, AuthResult::RateLimited);
}

#[test]
fn cheap_app_password_is_answered_on_the_event_loop_beside_a_costly_main_password() {
    let bcrypt = scheme::hash_password(scheme::HashKind::Bcrypt { cost: 4 }, b"main").unwrap();
    let mut s = store();
    let ssha = scheme::hash_password(scheme::HashKind::Ssha512, b"phone secret").unwrap();
    s.users.insert("bob".into(), with_apps(&bcrypt, vec![app("phone", &ssha)]));
    let mut e = engine(s);
    e.offload = true;
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"bob"),
        (b"Auth-Pass", b"phone secret"),
    ];
    let Start::Done(d) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else { panic!("cheap: inline") };
    assert_eq!(d.result, AuthResult::Ok);
    // the main password: the bcrypt goes to the pool
    let h: Vec<(&[u8], &[u8])> =
        vec![(b"Auth-Method", b"plain"), (b"Auth-Protocol", b"imap"), (b"Auth-User", b"bob"), (b"Auth-Pass", b"main")];
    let Start::Offload(mut job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else { panic!("costly") };
    assert!(job.costly().is_some());
    job.run(&e);
    assert_eq!(done(e.complete(job)).result, AuthResult::Ok);
}

#[test]
fn app_only_applies_to_apop_and_cram_md5_too() {
    let salt = b"<4711.1700000000@mail.example>";
    let s = MemStore::with(&[("alice", acct("{PLAIN}alice pw"))]);
    let apop = challenge_req(
        Method::Apop,
        Protocol::Pop3,
        "alice",
        salt,
        &scheme::challenge_response(Challenge::Apop, b"alice pw", salt),
    );
    assert_eq!(decide(&cfg(), &apop, &s).result, AuthResult::Ok);
    let mut c = cfg();
    c.app_only = vec![Protocol::Pop3];
    let o = decide(&c, &apop, &s);
    assert_eq!(
        (o.result, o.reason.as_str()),
        (AuthResult::ProtocolDenied, "main password not accepted for pop3 (app passwords only)")
    );
}

#[test]
fn an_exempt_client_has_no_per_client_budget_but_counts_on_the_users() {
    let mut e = engine(store());
    e.cache = None;
    e.limit = Some(LimitConfig {
        ip: Some(crate::limiter::Rate { count: 1, window: 60 }),
        user: Some(crate::limiter::Rate { count: 3, window: 60 }),
        ..LimitConfig::default()
    });
    e.limit_exempt = vec![Cidr::parse("192.0.2.10").unwrap()];
    // the webmail: more failures than its per-client budget, never refused as a client
    for pw in ["w1", "w2"] {
        assert_eq!(login(&e, "alice", pw, "192.0.2.10").result, AuthResult::Invalid);
    }
    assert_eq!(login(&e, "imaponly", "pw", "192.0.2.10").result, AuthResult::Ok, "no per-client ban");
    // but its failures count on alice's budget: the third bans alice, from the webmail too
    assert_eq!(login(&e, "alice", "w3", "192.0.2.10").result, AuthResult::Invalid);
    assert_eq!(login(&e, "alice", "alice pw", "192.0.2.10").result, AuthResult::RateLimited);
    assert_eq!(login(&e, "alice", "alice pw", "198.51.100.1").result, AuthResult::RateLimited);
    // a non-exempt client has its per-client budget
    assert_eq!(login(&e, "imaponly", "b1", "198.51.100.2").result, AuthResult::Invalid);
    assert_eq!(login(&e, "imaponly", "pw", "198.51.100.2").result, AuthResult::RateLimited);
}

// ---- the fleet's shared limiter (mail_auth_limit redis=), with a scripted store ----

/// A shared store that answers every admission with `reply` (`None`: unreachable) and records
/// what it is asked.
struct FakeFleet {
    keys: crate::fleet::Keys,
    reply: Mutex<Option<crate::fleet::AdmitReply>>,
    admits: Mutex<Vec<crate::fleet::AdmitCall>>,
    settles: Mutex<Vec<crate::fleet::SettleCall>>,
}

impl crate::fleet::Backend for FakeFleet {
    fn name(&self) -> &str {
        "fake"
    }
    fn keys(&self) -> &crate::fleet::Keys {
        &self.keys
    }
    fn admit(&self, call: &crate::fleet::AdmitCall) -> Result<crate::fleet::AdmitReply, Option<String>> {
        self.admits.lock().unwrap().push(call.clone());
        (*self.reply.lock().unwrap()).ok_or_else(|| Some("redis \"fake\": down".to_string()))
    }
    fn settle(&self, call: crate::fleet::SettleCall) {
        self.settles.lock().unwrap().push(call);
    }
    fn forget(&self, _keys: Vec<String>) {}
    fn take_notices(&self) -> (Vec<String>, u64) {
        (Vec::new(), 0)
    }
}

/// An engine with a zone (5/m per client and user) and the scripted shared store answering
/// `reply` to admissions.
fn fleet_engine(reply: crate::fleet::AdmitReply) -> (Engine, Arc<FakeFleet>) {
    let fake = Arc::new(FakeFleet {
        keys: crate::fleet::Keys::new(b"0123456789abcdef".to_vec(), "k:").unwrap(),
        reply: Mutex::new(Some(reply)),
        admits: Mutex::new(Vec::new()),
        settles: Mutex::new(Vec::new()),
    });
    let limit = LimitConfig {
        ip: crate::limiter::parse_rate("5/m").ok(),
        user: crate::limiter::parse_rate("5/m").ok(),
        ..LimitConfig::default()
    };
    let mut e = engine(store());
    e.limit = Some(limit);
    e.offload = true;
    e.fleet = Some(crate::fleet::SharedLimit { backend: fake.clone(), cfg: limit, scope: "z".into() });
    (e, fake)
}

#[test]
fn the_fleet_admits_after_the_zone_settles_without_passwords_and_its_bans_are_kept_locally() {
    use crate::fleet::{AdmitReply, Outcome};
    let (e, fake) = fleet_engine(AdmitReply::Admitted { ip_start: Some(1), user_start: Some(1) });
    // admitted by both: verified, settled as a failure in the shared store, by keys only
    let d = login(&e, "alice", "s3cret-guess", "192.0.2.1");
    assert_eq!(d.result, AuthResult::Invalid);
    assert_eq!(fake.admits.lock().unwrap().len(), 1);
    let s = fake.settles.lock().unwrap().pop().expect("settled");
    assert_eq!(s.how, Outcome::Failure);
    let dump = format!("{s:?}{:?}", fake.admits.lock().unwrap());
    assert!(!dump.contains("s3cret") && !dump.contains("alice") && !dump.contains("192.0.2"), "{dump}");
    // a success is settled as one (trust)
    assert_eq!(login(&e, "alice", "alice pw", "192.0.2.1").result, AuthResult::Ok);
    assert_eq!(fake.settles.lock().unwrap().pop().map(|s| s.how), Some(Outcome::Success));
    // unreachable: the zone decides alone, the log says so, nothing is settled there
    *fake.reply.lock().unwrap() = None;
    let d = login(&e, "alice", "alice pw", "192.0.2.2");
    assert_eq!(d.result, AuthResult::Ok);
    assert!(d.lines.iter().any(|(l, t)| *l == Level::Warn && t.contains("redis \"fake\": down")), "{:?}", d.lines);
    assert!(fake.settles.lock().unwrap().is_empty());
    assert_eq!(login(&e, "alice", "wrong", "192.0.2.2").result, AuthResult::Invalid);
    // a ban in the shared store: refused (its growing wait), and then by the zone, unasked
    *fake.reply.lock().unwrap() = Some(AdmitReply::Refused { side: Side::Ip, refusals: 2, ban_left: Some(100) });
    let d = login(&e, "alice", "alice pw", "192.0.2.3");
    assert_eq!(d.result, AuthResult::RateLimited);
    assert!(matches!(&d.reply, Reply::Answer(AuthResponse::Fail { wait: Some(4), .. })), "{:?}", d.reply);
    assert!(d.lines.iter().any(|(_, t)| t.contains("shared by redis \\x22fake\\x22")), "{:?}", d.lines);
    let asked = fake.admits.lock().unwrap().len();
    let d = login(&e, "alice", "alice pw", "192.0.2.3");
    assert_eq!(d.result, AuthResult::RateLimited);
    assert!(matches!(&d.reply, Reply::Answer(AuthResponse::Fail { wait: Some(8), .. })), "{:?}", d.reply);
    assert_eq!(fake.admits.lock().unwrap().len(), asked, "the zone refused without asking");
    assert!(login(&e, "alice", "alice pw", "192.0.2.4").result == AuthResult::RateLimited, "others asked: banned too");
    let m = e.metrics().unwrap().render(&crate::metrics::Gauges { fleet: true, ..Default::default() });
    assert!(
        m.contains("mail_auth_limiter_redis_refusals_total 2")
            && m.contains("mail_auth_limiter_redis_unavailable_total 2"),
        "{m}"
    );
}

/// A user's ban in the shared store is not copied into the zone: the zone has not the fleet's
/// trust marks, and would refuse the owner's trusted client that the shared store lets in.
#[test]
fn a_users_ban_in_the_fleet_is_asked_each_time_not_kept_locally() {
    use crate::fleet::AdmitReply;
    let (e, fake) = fleet_engine(AdmitReply::Refused { side: Side::User, refusals: 0, ban_left: Some(100) });
    assert_eq!(login(&e, "alice", "guess", "192.0.2.7").result, AuthResult::RateLimited);
    // the owner's client, trusted by the shared store: admitted there, so admitted
    *fake.reply.lock().unwrap() = Some(AdmitReply::Admitted { ip_start: Some(1), user_start: None });
    let asked = fake.admits.lock().unwrap().len();
    assert_eq!(login(&e, "alice", "alice pw", "192.0.2.8").result, AuthResult::Ok);
    assert_eq!(fake.admits.lock().unwrap().len(), asked + 1, "the shared store was asked");
}

/// A store whose server checks the password (LDAP bind) gets no verdicts kept: none would ever
/// be read again, and they would push other verdicts out of the zone.
#[test]
fn a_store_that_checks_passwords_itself_keeps_no_verdicts() {
    let e = engine(MemStore { uncacheable: true, ..store() });
    for _ in 0..3 {
        assert_eq!(login(&e, "alice", "alice pw", "192.0.2.1").result, AuthResult::Ok);
        assert_eq!(login(&e, "alice", "wrong", "192.0.2.1").result, AuthResult::Invalid);
    }
    let m = e.metrics().unwrap().render(&crate::metrics::Gauges::default());
    assert!(m.contains("mail_auth_cache_hits_total 0") && m.contains("mail_auth_cache_misses_total 0"), "{m}");
    // the same store, cacheable: the cache is asked
    let e = engine(store());
    assert_eq!(login(&e, "alice", "alice pw", "192.0.2.1").result, AuthResult::Ok);
    let m = e.metrics().unwrap().render(&crate::metrics::Gauges::default());
    assert!(!m.contains("mail_auth_cache_misses_total 0"), "{m}");
}

/// A backend address of a test (a valid literal).
fn srv(s: &str) -> crate::protocol::ServerAddr {
    crate::protocol::ServerAddr::parse(s).unwrap()
}

#[test]
fn introspection_cache_is_bound_to_user_and_token() {
    let now = unix_now();
    let active = |u: &str| format!(r#"{{"active":true,"username":"{u}","exp":{}}}"#, now + 3600);
    let (url, server) = crate::oauth::tests::introspection_server(vec![
        (200, active("alice@example.org")),
        (200, active("alice@example.org")),
        (200, active("alice@example.org")),
    ]);
    let with_pass = Account { backend_pass: Some("backend pw".into()), ..acct("{SHA512-CRYPT}$6$x$y") };
    let users = [("alice@example.org", with_pass.clone()), ("bob@example.org", with_pass)];
    let mut e = oauth_engine(&users, true);
    let (c, _dir) = crate::oauth::tests::introspect_cfg(&url, false);
    e.oauth = Some(Arc::new(crate::oauth::Verifier::new(c).unwrap()));
    e.offload = true;
    let login = |user: &[u8], tok: &[u8]| {
        let h: Vec<(&[u8], &[u8])> =
            vec![(b"Auth-Method", b"xoauth2"), (b"Auth-Protocol", b"imap"), (b"Auth-User", user), (b"Auth-Pass", tok)];
        let Start::Offload(mut job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else { panic!() };
        job.run(&e);
        done(e.complete(job))
    };
    assert_eq!(login(b"alice@example.org", b"tok-A").result, AuthResult::Ok);
    // same token, another user: not the cached verdict; the endpoint says alice: refused
    let d = login(b"bob@example.org", b"tok-A");
    assert_eq!(d.result, AuthResult::InvalidToken, "{:?}", d.lines);
    // same user, another token: asked again
    let d = login(b"alice@example.org", b"tok-B");
    assert_eq!(d.result, AuthResult::Ok);
    assert!(!d.lines.last().unwrap().1.contains("cached"), "{:?}", d.lines);
    assert_eq!(server.join().unwrap().len(), 3);
}

/// A panic while a failed verification waits for its timing padding (a wrong password found
/// already) leaves the attempt counted, as an abandoned padding does: the user's limit of one
/// failure bans, and the right password is then refused.
#[test]
fn a_panic_in_the_padding_keeps_the_failure_counted() {
    let mut e = engine(MemStore { template: Some(DEFAULT_TEMPLATE.into()), ..store() });
    e.offload = true;
    e.limit =
        Some(LimitConfig { ip: None, user: Some(crate::limiter::Rate { count: 1, window: 60 }), ..Default::default() });
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"alice"),
        (b"Auth-Pass", b"nope"),
        (b"Client-IP", b"192.0.2.1"),
    ];
    let Start::Offload(mut job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else {
        panic!("padding: offloaded")
    };
    assert_eq!(job.costly(), Some(None), "the padding stage");
    PANIC_IN_PAD.with(|c| c.set(true));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&e)));
    assert!(caught.is_err(), "the injected panic");
    let d = done(e.complete(job));
    assert!(matches!(d.reply, Reply::Answer(AuthResponse::TempFail { .. })), "{:?}", d.result);
    assert_eq!(login(&e, "alice", "alice pw", "192.0.2.2").result, AuthResult::RateLimited, "counted: banned");
}

/// The same when the padding runs inside the verification's own job (an account's costly hash
/// cheaper than the store's template, topped up at once): the failure found before it stays
/// counted after a panic in it.
#[test]
fn a_panic_in_a_verifications_own_padding_keeps_the_failure_counted() {
    let bcrypt = "$2y$04$DO39LgexR.cOLzZu5JSsPOTUIWSJDCgOIp20RLO4njqVFrdLFGIWa"; // htpasswd -nbB -C 4 u pw
    let mut e = engine(MemStore { template: Some(DEFAULT_TEMPLATE.into()), ..MemStore::with(&[("u", acct(bcrypt))]) });
    e.offload = true;
    e.limit =
        Some(LimitConfig { ip: None, user: Some(crate::limiter::Rate { count: 1, window: 60 }), ..Default::default() });
    let h: Vec<(&[u8], &[u8])> = vec![
        (b"Auth-Method", b"plain"),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-User", b"u"),
        (b"Auth-Pass", b"nope"),
        (b"Client-IP", b"192.0.2.1"),
    ];
    let Start::Offload(mut job) = e.start(&HeaderView::new(h.iter().copied()), ctx()) else {
        panic!("verification: offloaded")
    };
    assert!(matches!(job.costly(), Some(Some(_)) | Some(None)), "a costly verification");
    assert!(!matches!(job.stage, Stage::Pad(..)), "its own verification, not a padding job");
    PANIC_IN_PAD.with(|c| c.set(true));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&e)));
    assert!(caught.is_err(), "the injected panic");
    let d = done(e.complete(job));
    assert!(matches!(d.reply, Reply::Answer(AuthResponse::TempFail { .. })), "{:?}", d.result);
    assert_eq!(login(&e, "u", "pw", "192.0.2.2").result, AuthResult::RateLimited, "counted: banned");
}
