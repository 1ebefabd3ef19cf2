//! Load client for `scripts/bench` (std only: one thread per connection, blocking sockets).
//!
//! ```text
//! mail-auth-loadgen http --target tcp:127.0.0.1:PORT|unix:/path [--path /auth] [--conns N] [--secs S]
//!                        [--keepalive] [--users FILE|PATTERN] [--pass PATTERN] [--count N]
//!                        [--protocol imap] [--host HOST] [--requests N] [--spin]
//! mail-auth-loadgen imap --target 127.0.0.1:PORT|unix:/path [--conns N] [--secs S] [--users ...] [--pass ...]
//! mail-auth-loadgen imap-backend --listen 127.0.0.1:PORT [--threads N]
//! ```
//!
//! `http` sends the request nginx mail's auth_http module builds (`ngx_mail_auth_http_create_request`,
//! nginx 1.28: the same headers in the same order, Auth-User/Auth-Pass escaped the same way) on a
//! fresh HTTP/1.0 connection per request, or with `--keepalive` as HTTP/1.1 on kept connections.
//! With `--spin` one thread keeps the `--conns` requests in flight on non-blocking sockets and
//! polls them without sleeping (see `spin_http`); otherwise a thread per connection blocks.
//! `imap` logs in through nginx mail: greeting, `a LOGIN`, `b LOGOUT`, close. Both print one line
//! of JSON: counts, req/s, p50/p99 latency in µs, and the CPU the client itself used.
//!
//! Credentials: `--users FILE` reads `user:password` lines; otherwise `--users` and `--pass` are
//! patterns where `{i}` is the request number modulo `--count` and `{n}` the request number
//! (`--users 'u{i}' --pass 'pw-{i}' --count 100000`, or `--users bench --pass 'cold-{n}'` for a
//! distinct password each request). `--pass` also overrides the file's passwords.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::exit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  mail-auth-loadgen http --target tcp:HOST:PORT|unix:/path [--path /auth] [--conns N] [--secs S] [--keepalive]
                         [--users FILE|PATTERN] [--pass PATTERN] [--count N] [--protocol imap] [--host HOST]
                         [--requests N] [--spin]
  mail-auth-loadgen imap --target HOST:PORT|unix:/path [--conns N] [--secs S] [--users ...] [--pass ...] [--count N]
  mail-auth-loadgen imap-backend --listen HOST:PORT [--threads N]";

fn die(msg: &str) -> ! {
    eprintln!("mail-auth-loadgen: {msg}");
    exit(2)
}

/// `--name value` options and `--flag` switches.
struct Args {
    opts: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse(args: &[String], switches: &[&str]) -> Args {
        let mut opts = HashMap::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else { die(&format!("unexpected argument {a:?}\n{USAGE}")) };
            if switches.contains(&name) {
                flags.push(name.to_string());
            } else {
                let v = it.next().unwrap_or_else(|| die(&format!("--{name} needs a value")));
                opts.insert(name.to_string(), v.clone());
            }
        }
        Args { opts, flags }
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.opts.get(name).map(String::as_str)
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| die(&format!("--{name}: not a number: {v:?}"))),
        }
    }
    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[derive(Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(String),
}

impl Target {
    fn parse(s: &str) -> Target {
        if let Some(p) = s.strip_prefix("unix:") {
            return Target::Unix(p.to_string());
        }
        let a = s.strip_prefix("tcp:").unwrap_or(s);
        Target::Tcp(a.parse().unwrap_or_else(|_| die(&format!("bad target {s:?} (tcp:IP:PORT or unix:/path)"))))
    }
    fn connect(&self) -> io::Result<Stream> {
        let s = match self {
            Target::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Target::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        };
        let t = Some(Duration::from_secs(10));
        match &s {
            Stream::Tcp(x) => {
                x.set_read_timeout(t)?;
                x.set_write_timeout(t)?;
            }
            Stream::Unix(x) => {
                x.set_read_timeout(t)?;
                x.set_write_timeout(t)?;
            }
        }
        Ok(s)
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(true),
            Stream::Unix(s) => s.set_nonblocking(true),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the user names and passwords come from.
enum Creds {
    List(Vec<(String, String)>, Option<String>),
    Pattern(String, String, u64),
}

impl Creds {
    fn from_args(a: &Args) -> Creds {
        let users = a.get("users").unwrap_or("u{i}");
        let pass = a.get("pass").map(str::to_string);
        if std::path::Path::new(users).is_file() {
            let text = std::fs::read_to_string(users).unwrap_or_else(|e| die(&format!("{users}: {e}")));
            let list: Vec<_> = text
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (u, p) = l.split_once(':').unwrap_or((l, ""));
                    (u.to_string(), p.to_string())
                })
                .collect();
            if list.is_empty() {
                die(&format!("{users}: no user:password lines"));
            }
            Creds::List(list, pass)
        } else {
            let pass = pass.unwrap_or_else(|| "pw-{i}".to_string());
            Creds::Pattern(users.to_string(), pass, a.num("count", 1u64).max(1))
        }
    }
    /// The credentials of request number `n`.
    fn get(&self, n: u64) -> (String, String) {
        let fill = |pat: &str, i: u64| pat.replace("{i}", &i.to_string()).replace("{n}", &n.to_string());
        match self {
            Creds::List(l, over) => {
                let i = n % l.len() as u64;
                let (u, p) = &l[i as usize];
                (u.clone(), over.as_deref().map_or_else(|| p.clone(), |o| fill(o, i)))
            }
            Creds::Pattern(u, p, count) => {
                let i = n % count;
                (fill(u, i), fill(p, i))
            }
        }
    }
}

/// nginx's `ngx_escape_uri(.., NGX_ESCAPE_MAIL_AUTH)`: space, `%` and bytes below 0x20.
fn escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b <= 0x20 || b == b'%' {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

/// Per-thread counts and latencies (µs).
#[derive(Default)]
struct Stats {
    ok: u64,
    fail: u64,
    other: u64,
    errors: u64,
    lat: Vec<u32>,
    first_error: Option<String>,
}

impl Stats {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
    fn count(&mut self, r: &Response) {
        match r.answer {
            Answer::Ok => self.ok += 1,
            Answer::Fail => self.fail += 1,
            Answer::Other => self.other += 1,
        }
    }
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.fail += o.fail;
        self.other += o.other;
        self.errors += o.errors;
        self.lat.extend(o.lat);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// CPU time of this process so far, all its live threads (ns, from schedstat).
fn self_cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Runs `threads` threads of `body` (which keep `conns` connections busy in all) until `secs`
/// have passed; prints the JSON report.
fn run<F>(kind: &str, threads: usize, conns: usize, secs: f64, extra: &str, body: F)
where
    F: Fn(usize, Instant, &mut Stats) + Send + Sync + 'static,
{
    let body = Arc::new(body);
    let cpu0 = self_cpu_ns();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (tx, rx) = mpsc::channel();
    let release = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (body, tx, release) = (body.clone(), tx.clone(), release.clone());
            thread::spawn(move || {
                let mut st = Stats { lat: Vec::with_capacity(1 << 16), ..Stats::default() };
                body(t, end, &mut st);
                tx.send(st).ok();
                // stay alive until the CPU time of every thread has been read
                release.wait();
            })
        })
        .collect();
    let mut total = Stats::default();
    for _ in 0..threads {
        total.merge(rx.recv().expect("a load thread died"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = self_cpu_ns().saturating_sub(cpu0) as f64 / 1000.0;
    release.wait();
    for h in handles {
        h.join().ok();
    }
    total.lat.sort_unstable();
    let pct = |p: usize| total.lat.get((total.lat.len() * p / 100).min(total.lat.len().saturating_sub(1))).copied();
    let done = total.ok + total.fail + total.other;
    let first_error = match &total.first_error {
        Some(e) => format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\"")),
        None => "null".into(),
    };
    println!(
        "{{\"mode\":\"{kind}\",{extra}\"conns\":{conns},\"requests\":{done},\"ok\":{},\"fail\":{},\"other\":{},\
         \"errors\":{},\"secs\":{elapsed:.4},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"client_cpu_us\":{cpu_us:.0},\
         \"first_error\":{first_error}}}",
        total.ok,
        total.fail,
        total.other,
        total.errors,
        done as f64 / elapsed,
        pct(50).map_or("null".into(), |v| v.to_string()),
        pct(99).map_or("null".into(), |v| v.to_string()),
    );
}

/// What an auth_http answer said.
enum Answer {
    Ok,
    Fail,
    Other,
}

struct Response {
    answer: Answer,
    /// the server keeps the connection open for another request
    keep: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP response (headers and body) from `s`; `buf` is scratch space.
fn read_response(s: &mut Stream, buf: &mut Vec<u8>) -> io::Result<Response> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(r) = parse_response(buf, n == 0)? {
            return Ok(r);
        }
    }
}

/// The response in `buf` if it is complete (`eof`: the server closed its end after it), `None`
/// while more bytes are needed, an error if it can no longer complete.
fn parse_response(buf: &[u8], eof: bool) -> io::Result<Option<Response>> {
    let cut = |what: &str| Err(io::Error::new(io::ErrorKind::UnexpectedEof, what.to_string()));
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|p| p + 4) else {
        if eof {
            return cut("connection closed before the answer");
        }
        if buf.len() > 65536 {
            return Err(io::Error::other("answer header over 64 KiB"));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut sl = status_line.split(' ');
    let version = sl.next().unwrap_or("");
    let code: u16 = sl.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let (mut auth_status, mut length, mut chunked, mut conn) = (None, None, false, None);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("auth-status") {
            auth_status = Some(v.to_string());
        } else if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            conn = Some(v.to_ascii_lowercase());
        }
    }
    let mut keep = match conn.as_deref() {
        Some("close") => false,
        Some("keep-alive") => true,
        _ => version == "HTTP/1.1",
    };
    let body = &buf[head_end..];
    if code == 204 || code == 304 || (100..200).contains(&code) {
        // no body
    } else if let Some(len) = length {
        if body.len() < len {
            return if eof { cut("body cut short") } else { Ok(None) };
        }
    } else if chunked {
        // the answers here carry no body worth parsing: read up to the last chunk
        if find(body, b"0\r\n\r\n").is_none() {
            return if eof { cut("chunked body cut short") } else { Ok(None) };
        }
    } else if !eof {
        return Ok(None); // body delimited by the close
    } else {
        keep = false;
    }
    let answer = match auth_status.as_deref() {
        Some("OK") if (200..300).contains(&code) => Answer::Ok,
        Some(_) if (200..300).contains(&code) => Answer::Fail,
        _ => Answer::Other,
    };
    Ok(Some(Response { answer, keep }))
}

fn http(a: &Args) {
    let target = Target::parse(a.get("target").unwrap_or_else(|| die("--target is required")));
    let path = a.get("path").unwrap_or("/auth").to_string();
    let conns: usize = a.num("conns", 16);
    let secs: f64 = a.num("secs", 3.0);
    let keepalive = a.flag("keepalive");
    let spin = a.flag("spin");
    // --requests N: stop after N requests in all (a warm-up pass over N users), or at --secs
    let limit: u64 = a.num("requests", u64::MAX);
    let protocol = a.get("protocol").unwrap_or("imap").to_string();
    // auth_http's Host: the host part of its URL, "localhost" for a unix socket
    let host = a.get("host").map(str::to_string).unwrap_or_else(|| match &target {
        Target::Tcp(sa) => sa.ip().to_string(),
        Target::Unix(_) => "localhost".into(),
    });
    let creds = Creds::from_args(a);
    let seq = AtomicU64::new(0);
    let version = if keepalive { "HTTP/1.1" } else { "HTTP/1.0" };
    // the next request into `req`, None once --requests are sent
    let next = move |req: &mut Vec<u8>| -> Option<()> {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        if n >= limit {
            return None;
        }
        let (user, pass) = creds.get(n);
        req.clear();
        req.extend_from_slice(
            format!("GET {path} {version}\r\nHost: {host}\r\nAuth-Method: plain\r\nAuth-User: ").as_bytes(),
        );
        escape(req, &user);
        req.extend_from_slice(b"\r\nAuth-Pass: ");
        escape(req, &pass);
        req.extend_from_slice(
            format!("\r\nAuth-Protocol: {protocol}\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n")
                .as_bytes(),
        );
        Some(())
    };
    let extra = format!("\"keepalive\":{keepalive},\"spin\":{spin},");
    if spin {
        run("http", 1, conns, secs, &extra, move |_, end, st| spin_http(&target, conns, keepalive, end, st, &next));
        return;
    }
    run("http", conns, conns, secs, &extra, move |_, end, st| {
        let mut req = Vec::with_capacity(512);
        let mut buf = Vec::with_capacity(4096);
        let mut conn: Option<Stream> = None;
        while Instant::now() < end {
            if next(&mut req).is_none() {
                break;
            }
            let t0 = Instant::now();
            let mut s = match conn.take() {
                Some(s) => s,
                None => match target.connect() {
                    Ok(s) => s,
                    Err(e) => {
                        st.error(format!("connect: {e}"));
                        thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                },
            };
            if let Err(e) = s.write_all(&req) {
                st.error(format!("send: {e}"));
                continue;
            }
            match read_response(&mut s, &mut buf) {
                Ok(r) => {
                    st.lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    st.count(&r);
                    // like nginx mail, close as soon as the answer is in (nginx closes its end
                    // after an HTTP/1.0 answer, so this leaves no TIME_WAIT on the client side)
                    if keepalive && r.keep {
                        conn = Some(s);
                    }
                }
                Err(e) => st.error(format!("answer: {e}")),
            }
        }
    });
}

/// One connection of `--spin`: its stream, when its request went out, what has come back.
struct SpinConn {
    stream: Option<Stream>,
    busy: bool,
    t0: Instant,
    buf: Vec<u8>,
}

/// `--spin`: one thread keeps `conns` requests in flight on non-blocking sockets and polls them
/// in turn without ever sleeping, so the server never has to wake the client (a wake-up of an
/// idle CPU is an inter-processor interrupt, paid by the server's CPU when it answers; with a
/// blocking client that cost grows with the client's idle time, i.e. with the server's slowness).
fn spin_http(
    target: &Target,
    conns: usize,
    keepalive: bool,
    end: Instant,
    st: &mut Stats,
    next: &dyn Fn(&mut Vec<u8>) -> Option<()>,
) {
    let mut slots: Vec<SpinConn> = (0..conns)
        .map(|_| SpinConn { stream: None, busy: false, t0: Instant::now(), buf: Vec::with_capacity(4096) })
        .collect();
    let mut req = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let mut sending = true;
    let give_up = end + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if sending && now >= end {
            sending = false;
        }
        if !sending && (now >= give_up || slots.iter().all(|c| !c.busy)) {
            break;
        }
        for c in slots.iter_mut() {
            if !c.busy {
                if !sending {
                    continue;
                }
                if next(&mut req).is_none() {
                    sending = false;
                    continue;
                }
                c.t0 = Instant::now();
                let mut s = match c.stream.take() {
                    Some(s) => s,
                    None => match target.connect().and_then(|s| s.set_nonblocking().map(|()| s)) {
                        Ok(s) => s,
                        Err(e) => {
                            // as the threaded client: a refused connect is not retried at once
                            st.error(format!("connect: {e}"));
                            thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                    },
                };
                // a request of a few hundred bytes on an idle socket: taken whole or not at all
                match s.write(&req) {
                    Ok(n) if n == req.len() => {}
                    Ok(_) => {
                        st.error("send: request cut short");
                        continue;
                    }
                    Err(e) => {
                        st.error(format!("send: {e}"));
                        continue;
                    }
                }
                c.buf.clear();
                c.stream = Some(s);
                c.busy = true;
                continue;
            }
            let Some(s) = c.stream.as_mut() else { continue };
            let eof = match s.read(&mut chunk) {
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    n == 0
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    st.error(format!("answer: {e}"));
                    c.stream = None;
                    c.busy = false;
                    continue;
                }
            };
            match parse_response(&c.buf, eof) {
                Ok(None) => {}
                Ok(Some(r)) => {
                    st.lat.push(c.t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    st.count(&r);
                    if !(keepalive && r.keep) {
                        c.stream = None;
                    }
                    c.busy = false;
                }
                Err(e) => {
                    st.error(format!("answer: {e}"));
                    c.stream = None;
                    c.busy = false;
                }
            }
        }
    }
    for _ in slots.iter().filter(|c| c.busy) {
        st.error("answer: none within 10 s of the end");
    }
}

fn read_tagged(r: &mut BufReader<Stream>, line: &mut Vec<u8>, tag: &[u8]) -> io::Result<Option<bool>> {
    loop {
        line.clear();
        if r.read_until(b'\n', line)? == 0 {
            return Ok(None);
        }
        if line.starts_with(tag) {
            return Ok(Some(line[tag.len()..].starts_with(b"OK")));
        }
    }
}

/// An IMAP string argument: an atom when it can be one, else a quoted string.
fn imap_string(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b)) {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// One IMAP session: greeting, LOGIN, LOGOUT. Ok(true) logged in, Ok(false) refused.
fn imap_session(target: &Target, user: &str, pass: &str) -> io::Result<bool> {
    let s = target.connect()?;
    let mut r = BufReader::new(s);
    let mut line = Vec::with_capacity(256);
    r.read_until(b'\n', &mut line)?;
    if !line.starts_with(b"* OK") {
        return Err(io::Error::other(format!("greeting: {:?}", String::from_utf8_lossy(&line))));
    }
    let login = format!("a LOGIN {} {}\r\n", imap_string(user), imap_string(pass));
    r.get_mut().write_all(login.as_bytes())?;
    let ok = match read_tagged(&mut r, &mut line, b"a ")? {
        Some(ok) => ok,
        None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the LOGIN answer")),
    };
    if ok {
        r.get_mut().write_all(b"b LOGOUT\r\n")?;
        // the backend answers BYE and b OK, then closes
        read_tagged(&mut r, &mut line, b"b ")?;
    }
    Ok(ok)
}

fn imap(a: &Args) {
    let target = Target::parse(a.get("target").unwrap_or_else(|| die("--target is required")));
    let conns: usize = a.num("conns", 16);
    let secs: f64 = a.num("secs", 3.0);
    let creds = Arc::new(Creds::from_args(a));
    let seq = Arc::new(AtomicU64::new(0));
    run("imap", conns, conns, secs, "", move |_, end, st| {
        while Instant::now() < end {
            let (user, pass) = creds.get(seq.fetch_add(1, Ordering::Relaxed));
            let t0 = Instant::now();
            match imap_session(&target, &user, &pass) {
                Ok(ok) => {
                    st.lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if ok {
                        st.ok += 1
                    } else {
                        st.fail += 1
                    }
                }
                Err(e) => {
                    st.error(format!("imap: {e}"));
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    });
}

/// Reads one IMAP command, literals included (`{N}` answered with a continuation, `{N+}` not).
fn read_command(r: &mut BufReader<TcpStream>, cmd: &mut Vec<u8>) -> io::Result<bool> {
    cmd.clear();
    loop {
        let from = cmd.len();
        if r.read_until(b'\n', cmd)? == 0 {
            return Ok(false);
        }
        let line = &cmd[from..];
        let trimmed = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n")).unwrap_or(line);
        let Some(open) = trimmed.iter().rposition(|&b| b == b'{') else { return Ok(true) };
        if !trimmed.ends_with(b"}") {
            return Ok(true);
        }
        let inner = &trimmed[open + 1..trimmed.len() - 1];
        let (digits, plus) = match inner.strip_suffix(b"+") {
            Some(d) => (d, true),
            None => (inner, false),
        };
        let Some(len) = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<usize>().ok()) else {
            return Ok(true);
        };
        if !plus {
            r.get_mut().write_all(b"+ OK\r\n")?;
        }
        let mut lit = vec![0u8; len];
        r.read_exact(&mut lit)?;
        cmd.extend_from_slice(&lit);
    }
}

fn backend_session(s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(s);
    r.get_mut().write_all(b"* OK ready\r\n")?;
    let mut cmd = Vec::with_capacity(256);
    while read_command(&mut r, &mut cmd)? {
        let text = String::from_utf8_lossy(&cmd);
        let mut words = text.split_ascii_whitespace();
        let tag = words.next().unwrap_or("*").to_string();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let answer = match verb.as_str() {
            "LOGIN" | "AUTHENTICATE" => format!("{tag} OK LOGIN completed\r\n"),
            "CAPABILITY" => format!("* CAPABILITY IMAP4rev1\r\n{tag} OK CAPABILITY completed\r\n"),
            "LOGOUT" => {
                r.get_mut().write_all(format!("* BYE logging out\r\n{tag} OK LOGOUT completed\r\n").as_bytes())?;
                return Ok(());
            }
            "" => continue,
            _ => format!("{tag} OK {verb} completed\r\n"),
        };
        r.get_mut().write_all(answer.as_bytes())?;
    }
    Ok(())
}

fn imap_backend(a: &Args) {
    let addr = a.get("listen").unwrap_or_else(|| die("--listen is required"));
    let threads: usize = a.num("threads", 64);
    let l = TcpListener::bind(addr).unwrap_or_else(|e| die(&format!("listen {addr}: {e}")));
    eprintln!("mail-auth-loadgen imap-backend: listening on {addr} ({threads} threads)");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let l = l.try_clone().unwrap_or_else(|e| die(&format!("listener: {e}")));
            thread::spawn(move || loop {
                match l.accept() {
                    Ok((s, _)) => {
                        backend_session(s).ok();
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            })
        })
        .collect();
    for h in handles {
        h.join().ok();
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else { die(USAGE) };
    let args = Args::parse(&argv[1..], &["keepalive", "spin"]);
    match cmd.as_str() {
        "http" => http(&args),
        "imap" => imap(&args),
        "imap-backend" => imap_backend(&args),
        "-h" | "--help" | "help" => println!("{USAGE}"),
        _ => die(USAGE),
    }
}
