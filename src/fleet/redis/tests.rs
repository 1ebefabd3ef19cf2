//! The scripts and the client against a real `redis-server` (Debian's `redis-server` package),
//! started on a free loopback port in a temporary directory; skipped when it is not installed.

use super::*;
use crate::fleet::{parse_server, Admission, Outcome, SharedLimit};
use crate::limiter::{parse_rate, LiftTarget, LimitConfig, Rate, Settle};
use crate::testutil::TempDir;

/// A throwaway redis-server, killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
    dir: TempDir,
}

impl Server {
    fn start() -> Option<Server> {
        let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(bin) = bin else {
            eprintln!("skipped: redis-server is not installed (Debian package redis-server)");
            return None;
        };
        let dir = TempDir::new("redis");
        // The port is free when picked, but tests run in parallel: another test's server may
        // take it first. Ours then exits (address in use) while the other one answers, and is
        // killed under us when that test ends. So the server must be ours (its pid), else retry.
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = std::process::Command::new(bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&*dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let ours = format!("process_id:{}\r\n", child.id());
            for _ in 0..200 {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let info = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                    .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
                match info {
                    Ok(info) if info.contains(&ours) => return Some(Server { child, port, dir }),
                    Ok(_) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    fn backend(&self, extra: &[&str]) -> RedisBackend {
        let key = self.dir.file("key", b"the fleet's secret, 32 bytes ok");
        let addr = format!("127.0.0.1:{}", self.port);
        let kf = format!("key_file={}", key.display());
        let mut args = vec![addr.as_str(), kf.as_str()];
        args.extend_from_slice(extra);
        RedisBackend::new(parse_server("test", &args, str::to_string).unwrap()).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn counter(key: &str, rate: &str) -> Counter {
    Counter { key: key.into(), rate: parse_rate(rate).unwrap() }
}

/// An admission at `now` on the ip counter `ip` and user counter `user`.
fn call(ip: &str, user: &str, fp: &str, now: u64) -> AdmitCall {
    AdmitCall {
        ip: Some(counter(ip, "3/60s")),
        user: Some(counter(user, "100/60s")),
        trusted: Some(format!("t-{ip}-{user}")),
        fingerprint: fp.into(),
        now,
    }
}

/// Settles an admission at once (the queue's thread sends the same pipeline).
fn settle(b: &RedisBackend, c: &AdmitCall, reply: AdmitReply, how: Outcome, now: u64) {
    let (ip_start, user_start) = match reply {
        AdmitReply::Admitted { ip_start, user_start } => (ip_start, user_start),
        _ => (None, None),
    };
    let s = SettleCall {
        ip: c.ip.clone().zip(ip_start),
        user: c.user.clone().zip(user_start),
        how,
        ban: 0,
        fingerprint: (how == Outcome::Failure).then(|| (c.fingerprint.clone(), 60)),
        trusted: (how == Outcome::Success).then(|| (c.trusted.clone().unwrap(), 86400)),
        now,
    };
    let (_tx, rx) = sync_channel(1);
    let mut q = QueueThread { inner: Arc::clone(&b.inner), rx, con: None };
    q.send(&[Op::Settle(s)]).unwrap();
}

fn fail(b: &RedisBackend, ip: &str, user: &str, pw: &str, now: u64) -> AdmitReply {
    let c = call(ip, user, pw, now);
    let r = b.admit(&c).unwrap();
    if !matches!(r, AdmitReply::Refused { .. }) {
        settle(b, &c, r, Outcome::Failure, now);
    }
    r
}

#[test]
fn the_scripts_count_like_the_local_limiter() {
    let Some(srv) = Server::start() else { return };
    // two proxies: two clients with the same keys
    let (a, b) = (srv.backend(&[]), srv.backend(&[]));
    let t = 1_000;
    // failures spread over both count on one counter: the third bans (ip=3/60s)
    assert!(matches!(fail(&a, "ip1", "u1", "g1", t), AdmitReply::Admitted { ip_start: Some(1000), .. }));
    assert!(matches!(fail(&b, "ip1", "u2", "g2", t + 1), AdmitReply::Admitted { .. }));
    assert!(matches!(fail(&a, "ip1", "u3", "g3", t + 2), AdmitReply::Admitted { .. }));
    let r = b.admit(&call("ip1", "u4", "g4", t + 3)).unwrap();
    assert_eq!(r, AdmitReply::Refused { side: Side::Ip, refusals: 0, ban_left: Some(57) }, "banned until 1060");
    let r = a.admit(&call("ip1", "u4", "g4", t + 4)).unwrap();
    assert_eq!(r, AdmitReply::Refused { side: Side::Ip, refusals: 1, ban_left: Some(56) }, "growing wait");
    assert!(matches!(a.admit(&call("ip1", "u5", "g5", t + 60)).unwrap(), AdmitReply::Admitted { .. }), "window over");

    // attempts in flight count: 3 admitted, the 4th refused (full, not banned); one given back
    let ins: Vec<_> = (0..3).map(|i| (call("ip2", "v", &format!("p{i}"), t), i)).collect();
    let replies: Vec<_> = ins.iter().map(|(c, _)| a.admit(c).unwrap()).collect();
    assert!(replies.iter().all(|r| matches!(r, AdmitReply::Admitted { .. })));
    assert_eq!(
        b.admit(&call("ip2", "v", "p9", t)).unwrap(),
        AdmitReply::Refused { side: Side::Ip, refusals: 0, ban_left: None }
    );
    settle(&a, &ins[0].0, replies[0], Outcome::Neutral, t + 1);
    assert!(matches!(b.admit(&call("ip2", "v", "p8", t + 1)).unwrap(), AdmitReply::Admitted { .. }), "given back");

    // the same wrong password from the same source: counted once
    assert!(matches!(fail(&a, "ip3", "w", "stale", t), AdmitReply::Admitted { .. }));
    assert_eq!(fail(&b, "ip3", "w", "stale", t + 5), AdmitReply::Repeat);
    assert_eq!(fail(&a, "ip3", "w", "stale", t + 9), AdmitReply::Repeat);

    // a success trusts the client for the user: others' failures on the user do not refuse it
    let owner = call("ip4", "alice", "right", t);
    let r = a.admit(&owner).unwrap();
    settle(&a, &owner, r, Outcome::Success, t);
    for i in 0..3 {
        let mut c = call(&format!("ip5-{i}"), "alice", &format!("x{i}"), t);
        c.user = Some(counter("alice", "3/60s"));
        let r = b.admit(&c).unwrap();
        settle(&b, &c, r, Outcome::Failure, t);
    }
    let mut other = call("ip6", "alice", "y", t + 1);
    other.user = Some(counter("alice", "3/60s"));
    assert_eq!(a.admit(&other).unwrap(), AdmitReply::Refused { side: Side::User, refusals: 0, ban_left: Some(59) });
    let mut again = call("ip4", "alice", "right", t + 1);
    again.user = Some(counter("alice", "3/60s"));
    assert_eq!(b.admit(&again).unwrap(), AdmitReply::Admitted { ip_start: Some(1001), user_start: None }, "trusted");

    // a settlement for a window that is over is ignored
    let old = call("ip7", "z", "q", t);
    let r = a.admit(&old).unwrap();
    let new = call("ip7", "z", "q2", t + 61);
    let r2 = a.admit(&new).unwrap();
    settle(&a, &old, r, Outcome::Failure, t + 62);
    settle(&a, &old, r, Outcome::Neutral, t + 62);
    settle(&a, &new, r2, Outcome::Neutral, t + 62);
    for i in 0..3 {
        assert!(matches!(fail(&a, "ip7", "z", &format!("n{i}"), t + 63), AdmitReply::Admitted { .. }), "{i}");
    }
}

fn limit(ip: &str, ban: u64) -> LimitConfig {
    LimitConfig { ip: Some(parse_rate(ip).unwrap()), user: parse_rate("100/m").ok(), ban, ..LimitConfig::default() }
}

#[test]
fn a_ban_made_through_one_proxy_refuses_on_another_then_lifts() {
    let Some(srv) = Server::start() else { return };
    let shared = |b: RedisBackend| SharedLimit { backend: Arc::new(b), cfg: limit("2/m", 300), scope: "z".into() };
    let (a, b) = (shared(srv.backend(&[])), shared(srv.backend(&[])));
    let addr: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let ip = Some(addr);
    for (l, pw) in [(&a, "g1"), (&b, "g2")] {
        let Admission::Admitted(t) = l.admit(ip, "Bob", pw.as_bytes(), None, "s") else { panic!("admitted") };
        l.settle(t, Settle::Failure { password: pw.as_bytes(), wrong: true });
    }
    // the settlements go through each proxy's queue thread: wait for the ban
    let mut refusal = None;
    for _ in 0..200 {
        // refused at once (2 attempts in flight fill 2/m), banned once both failures are in
        if let Admission::Refused(r, ban @ Some(_)) = b.admit(ip, "carol", b"g3", None, "s") {
            refusal = Some((r, ban));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (r, ban) = refusal.expect("banned through the shared store");
    assert!(
        r.reason.contains("failed logins from 192.0.2.7") && r.reason.contains("shared by redis \"test\""),
        "{r:?}"
    );
    let (side, left, _) = ban.unwrap();
    assert!(side == Side::Ip && (295..=300).contains(&left), "{ban:?}");
    // nothing readable in Redis: no name, no address, no password
    let mut con = srv.backend(&[]).inner.connect().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert!(!keys.is_empty() && keys.iter().all(|k| k.starts_with("mail_auth:")), "{keys:?}");
    for k in &keys {
        assert!(!["bob", "192.0.2", "g1", "carol"].iter().any(|s| k.contains(s)), "{k}");
    }
    // lifting on one proxy lifts for all
    assert!(a.lift(&LiftTarget::Client(addr)));
    assert!(!a.lift(&LiftTarget::Key(5)));
    let mut lifted = false;
    for _ in 0..200 {
        if let Admission::Admitted(t) = b.admit(ip, "carol", b"g4", None, "s") {
            b.settle(t, Settle::Neutral);
            lifted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(lifted);
    assert_eq!(a.backend.take_notices(), (Vec::new(), 0));
}

#[test]
fn an_unreachable_server_is_told_once_and_skipped_until_retry() {
    let Some(srv) = Server::start() else { return };
    let port = srv.port;
    drop(srv);
    let dir = TempDir::new("redis-down");
    let key = dir.file("key", b"0123456789abcdef0123");
    let conf = parse_server(
        "down",
        &[&format!("127.0.0.1:{port}"), &format!("key_file={}", key.display()), "retry=60m"],
        str::to_string,
    )
    .unwrap();
    let l = SharedLimit {
        backend: Arc::new(RedisBackend::new(conf).unwrap()),
        cfg: LimitConfig { ip: Some(Rate { count: 1, window: 60 }), ..LimitConfig::default() },
        scope: "z".into(),
    };
    let ip = Some("192.0.2.1".parse().unwrap());
    let Admission::Unavailable(Some(line)) = l.admit(ip, "u", b"p", None, "s") else { panic!("unavailable, told") };
    assert!(line.contains("mail_auth_redis \"down\"") && line.contains("own counters only"), "{line}");
    let t = Instant::now();
    for _ in 0..100 {
        assert!(matches!(l.admit(ip, "u", b"p", None, "s"), Admission::Unavailable(None)), "not tried again, silent");
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    // settlements meanwhile are dropped by the queue thread (counted, never waited for)
    let dummy = crate::fleet::Ticket {
        ip: Some((counter("k", "1/m"), 1)),
        user: None,
        trusted: None,
        account_trusted: None,
        fingerprint: "f".into(),
    };
    l.settle(dummy, Settle::Neutral);
    let mut lost = 0;
    for _ in 0..100 {
        lost += l.backend.take_notices().1;
        if lost > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(lost, 1);
}

/// An ACL user that may name only the prefix's keys (the natural hardening): admissions and
/// settlements without a user counter or trusted mark name no key outside it.
#[test]
fn an_acl_user_limited_to_the_prefix_is_enough() {
    let Some(s) = Server::start() else { return };
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", s.port)).unwrap();
    let mut con = client.get_connection().unwrap();
    redis::cmd("ACL")
        .arg(&["SETUSER", "fleet", "on", ">fleet-pw", "~mail_auth:*", "+@all"][..])
        .query::<()>(&mut con)
        .unwrap();
    let pw = s.dir.file("redis.pw", b"fleet-pw\n");
    let pwf = format!("password_file={}", pw.display());
    let b = s.backend(&["user=fleet", &pwf]);
    let c = AdmitCall {
        ip: Some(counter("mail_auth:i:acl", "3/60s")),
        user: None,
        trusted: None,
        fingerprint: "mail_auth:f:acl".into(),
        now: 5000,
    };
    let r = b.admit(&c).unwrap();
    assert!(matches!(r, AdmitReply::Admitted { .. }), "{r:?}");
    let (ip_start, _) = match r {
        AdmitReply::Admitted { ip_start, user_start } => (ip_start, user_start),
        _ => unreachable!(),
    };
    let settle = SettleCall {
        ip: c.ip.clone().zip(ip_start),
        user: None,
        how: Outcome::Failure,
        ban: 0,
        fingerprint: Some((c.fingerprint.clone(), 60)),
        trusted: None,
        now: 5000,
    };
    let (_tx, rx) = sync_channel(1);
    let mut q = QueueThread { inner: Arc::clone(&b.inner), rx, con: None };
    q.send(&[Op::Settle(settle)]).expect("settled by the restricted user");
    let fails: Option<i64> = redis::cmd("HGET").arg("mail_auth:i:acl").arg("fails").query(&mut con).unwrap();
    assert_eq!(fails, Some(1), "the failure counted");
}

/// Scripts flushed (SCRIPT FLUSH, a restart behind a proxy that keeps the connection): the
/// settlement queue's kept connection loads the script again and the batch is applied.
#[test]
fn settlements_survive_a_script_flush() {
    let Some(srv) = Server::start() else { return };
    let b = srv.backend(&[]);
    let (_tx, rx) = sync_channel(1);
    let mut q = QueueThread { inner: Arc::clone(&b.inner), rx, con: None };
    let t = 5_000;
    let settle_on = |q: &mut QueueThread, c: &AdmitCall, r: AdmitReply| {
        let AdmitReply::Admitted { ip_start, user_start } = r else { panic!("{r:?}") };
        let s = SettleCall {
            ip: c.ip.clone().zip(ip_start),
            user: c.user.clone().zip(user_start),
            how: Outcome::Failure,
            ban: 0,
            fingerprint: Some((c.fingerprint.clone(), 60)),
            trusted: None,
            now: t,
        };
        q.send(&[Op::Settle(s)]).unwrap();
    };
    let c1 = call("ipf", "uf", "f1", t);
    let r = b.admit(&c1).unwrap();
    settle_on(&mut q, &c1, r);
    assert!(q.con.is_some(), "the connection is kept");
    let mut admin = b.inner.client.get_connection().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut admin).unwrap();
    let c2 = call("ipf", "uf", "f2", t);
    let r = b.admit(&c2).unwrap();
    settle_on(&mut q, &c2, r);
    let fails: Option<i64> = redis::cmd("HGET").arg("ipf").arg("fails").query(&mut admin).unwrap();
    assert_eq!(fails, Some(2), "both failures counted");
}

#[test]
fn an_account_behind_an_alias_keeps_its_owners_trust() {
    let Some(srv) = Server::start() else { return };
    let cfg =
        LimitConfig { ip: parse_rate("10/m").ok(), user: parse_rate("3/m").ok(), ban: 300, ..LimitConfig::default() };
    let l = SharedLimit { backend: Arc::new(srv.backend(&[])), cfg, scope: "z".into() };
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    let owner = ip("192.0.2.10");
    // the owner logs in as alice@x, which the store knows as alice: both names admitted
    let Admission::Admitted(t) = l.admit(owner, "alice@x", b"pw", None, "s") else { panic!("admitted") };
    let Admission::Admitted(a) = l.admit_account(owner, "alice", b"pw", None, "s") else { panic!("admitted") };
    l.settle(t, Settle::Success);
    l.settle(a, Settle::Success);
    // others guess "alice" until it is banned (the settlements go through the queue thread,
    // in order: the owner's trust is in when the ban is)
    for i in 1..=3 {
        let pw = format!("guess{i}");
        if let Admission::Admitted(t) = l.admit(ip(&format!("203.0.113.{i}")), "alice", pw.as_bytes(), None, "s") {
            l.settle(t, Settle::Failure { password: pw.as_bytes(), wrong: true });
        }
    }
    let banned = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        matches!(l.admit(ip("203.0.113.9"), "alice", b"x", None, "s"), Admission::Refused(..))
    });
    assert!(banned, "alice banned through the shared store");
    // through the alias: the owner's client is let in for the account, a stranger is not
    assert!(matches!(l.admit_account(owner, "alice", b"pw", None, "s"), Admission::Admitted(_)));
    assert!(matches!(l.admit_account(ip("203.0.113.50"), "alice", b"pw", None, "s"), Admission::Refused(..)));
    // and the account's admission does not count the client: its budget (10) is untouched
    for i in 0..9 {
        let pw = format!("other{i}");
        let Admission::Admitted(t) = l.admit(owner, &format!("u{i}"), pw.as_bytes(), None, "s") else {
            panic!("attempt {i} of the owner's 10")
        };
        l.settle(t, Settle::Neutral);
    }
}

#[test]
fn trust_is_for_the_account_of_one_store_as_it_is_spelt() {
    let Some(srv) = Server::start() else { return };
    let cfg =
        LimitConfig { ip: parse_rate("10/m").ok(), user: parse_rate("3/m").ok(), ban: 300, ..LimitConfig::default() };
    let l = SharedLimit { backend: Arc::new(srv.backend(&[])), cfg, scope: "z".into() };
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    let owner = ip("192.0.2.10");
    // the owner of store b's alice logs in, typing ALICE (the store's spelling: alice)
    let Admission::Admitted(mut t) = l.admit(owner, "ALICE", b"pw", None, "b") else { panic!("admitted") };
    l.trust_account(&mut t, owner, "alice", None, "b");
    l.settle(t, Settle::Success);
    // guesses on store a's alice ban the name (one budget, whatever the store)
    for i in 1..=3 {
        let pw = format!("guess{i}");
        if let Admission::Admitted(t) = l.admit(ip(&format!("203.0.113.{i}")), "alice", pw.as_bytes(), None, "a") {
            l.settle(t, Settle::Failure { password: pw.as_bytes(), wrong: true });
        }
    }
    let banned = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        matches!(l.admit(ip("203.0.113.9"), "alice", b"x", None, "a"), Admission::Refused(..))
    });
    assert!(banned, "alice banned through the shared store");
    let admitted = |user: &str, scope: &str| matches!(l.admit(owner, user, b"pw", None, scope), Admission::Admitted(_));
    assert!(admitted("ALICE", "b") && admitted("alice", "b"), "trusted for b's alice, as typed and as stored");
    assert!(!admitted("alice", "a"), "not for a's alice");
    assert!(!admitted("Alice", "b"), "nor for a spelling neither the owner nor the store used");
}

#[test]
fn a_slow_failure_settled_after_the_window_still_counts() {
    let Some(srv) = Server::start() else { return };
    let b = srv.backend(&[]);
    let t = 5_000;
    let at = |now: u64| AdmitCall {
        ip: Some(counter("slow-ip", "2/2s")),
        user: None,
        trusted: None,
        fingerprint: format!("fp{now}"),
        now,
    };
    // two guesses in one window of 2 s; their verifications end after it (and after the time
    // Redis kept the counter for the window alone: a second past its end)
    let (c1, c2) = (at(t), at(t + 1));
    let (r1, r2) = (b.admit(&c1).unwrap(), b.admit(&c2).unwrap());
    assert!(matches!(r2, AdmitReply::Admitted { ip_start: Some(s), .. } if s == t), "{r2:?}");
    std::thread::sleep(Duration::from_millis(3200));
    for (c, r) in [(&c1, r1), (&c2, r2)] {
        let AdmitReply::Admitted { ip_start, .. } = r else { panic!("admitted: {r:?}") };
        let s = SettleCall {
            ip: c.ip.clone().zip(ip_start),
            user: None,
            how: Outcome::Failure,
            ban: 60,
            fingerprint: None,
            trusted: None,
            now: t + 4,
        };
        let (_tx, rx) = sync_channel(1);
        QueueThread { inner: Arc::clone(&b.inner), rx, con: None }.send(&[Op::Settle(s)]).unwrap();
    }
    // both failures counted: the client is banned, as the proxy's own zone bans it (the counter
    // had expired and the settlements were dropped: no ban in Redis)
    let r = b.admit(&at(t + 5)).unwrap();
    assert!(matches!(r, AdmitReply::Refused { side: Side::Ip, ban_left: Some(_), .. }), "{r:?}");
    assert!(ADMIT.contains(&format!("now + {}", crate::limiter::SETTLE_GRACE)), "the zone's grace, in the script");
}

#[test]
fn a_burst_of_one_wrong_password_in_flight_counts_once() {
    let Some(srv) = Server::start() else { return };
    let (a, b) = (srv.backend(&[]), srv.backend(&[]));
    let t = 1_000;
    // one password on 3 connections at once, over two proxies: all admitted (counted in flight)
    let c = call("ipb", "ub", "stale", t);
    let replies: Vec<_> = [&a, &b, &a].iter().map(|p| p.admit(&c).unwrap()).collect();
    assert!(replies.iter().all(|r| matches!(r, AdmitReply::Admitted { ip_start: Some(_), .. })), "{replies:?}");
    for (p, r) in [&a, &b, &a].iter().zip(replies) {
        settle(p, &c, r, Outcome::Failure, t);
    }
    // counted once: 2 more failures to the ban (ip=3/60s)
    assert!(matches!(fail(&b, "ipb", "ub", "g1", t + 1), AdmitReply::Admitted { .. }));
    assert!(matches!(fail(&a, "ipb", "ub", "g2", t + 1), AdmitReply::Admitted { .. }));
    assert!(matches!(a.admit(&call("ipb", "ub", "g3", t + 2)).unwrap(), AdmitReply::Refused { ban_left: Some(_), .. }));
    // distinct passwords in flight each count
    let cs: Vec<_> = (0..3).map(|i| call("ipd", "ud", &format!("d{i}"), t)).collect();
    let rs: Vec<_> = cs.iter().map(|c| a.admit(c).unwrap()).collect();
    for (c, r) in cs.iter().zip(rs) {
        settle(&b, c, r, Outcome::Failure, t);
    }
    assert!(matches!(a.admit(&call("ipd", "ud", "d9", t + 1)).unwrap(), AdmitReply::Refused { ban_left: Some(_), .. }));
}
