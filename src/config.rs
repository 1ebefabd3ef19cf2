//! The configuration the engine decides with, and the parsing of directive arguments (plain
//! Rust, unit-tested; the FFI layer only calls these).

#![forbid(unsafe_code)]

use crate::engine::Level;
use crate::protocol::{self, Protocol};
use crate::realip::TrustedProxies;

/// A backend address: `server` an IP literal, `port` 1..65535.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub server: crate::protocol::ServerAddr,
    pub port: u16,
}

/// A Dovecot-style master user (`mail_auth_master_user`): the IMAP/POP3 backend login becomes
/// `<user><separator><name>`, the password `password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterUser {
    pub name: String,
    pub password: String,
    pub separator: String,
}

/// Default `mail_auth_fail_wait`, seconds.
pub const DEFAULT_FAIL_WAIT: u32 = 3;

/// Default `mail_auth_log_level`: the level of the line logged per decision.
pub const DEFAULT_LOG_LEVEL: Level = Level::Info;

/// Default `mail_auth_thread_pool`: nginx's own default pool.
pub const DEFAULT_THREAD_POOL: &str = "default";

/// Default `separator=` of `mail_auth_master_user` (Dovecot's `auth_master_user_separator`).
pub const DEFAULT_MASTER_SEPARATOR: &str = "*";

/// What the decision needs from the nginx configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `mail_auth_backend imap|pop3|smtp ADDR:PORT`
    pub imap_backend: Option<Backend>,
    pub pop3_backend: Option<Backend>,
    pub smtp_backend: Option<Backend>,
    /// `mail_auth_backend mx ADDR`: where SMTP without AUTH (`none`) goes for accepted domains.
    pub mx_backend: Option<Backend>,
    /// Auth-Wait on a failed login or a temporary failure (`mail_auth_fail_wait`), seconds.
    pub fail_wait: u32,
    /// `mail_auth_relay_domains`: lower-case domains; `.example.org` also matches subdomains.
    pub relay_domains: Vec<String>,
    /// `mail_auth_master_user`.
    pub master_user: Option<MasterUser>,
    /// `mail_auth_real_ip_from`: balancers whose `Proxy-Protocol-Addr` names the client.
    pub trusted_proxies: TrustedProxies,
    /// `mail_auth_require_tls`, `mail_auth_listener`, `mail_auth_listener_required`.
    pub transport: Transport,
    /// The nginx has the CVE-2026-27651 fix (`mail_auth_nginx_auth_wait_fixed`, default from
    /// the build, see [`auth_wait_fixed`]); `false`: a refused APOP/CRAM-MD5 login is answered
    /// with `Auth-Wait: 0`, which makes nginx close the session instead of crashing a worker on
    /// the client's next try.
    pub nginx_auth_wait_fixed: bool,
    /// `mail_auth_app_only`: protocols on which no account's main password is accepted, only
    /// its app passwords.
    pub app_only: Vec<Protocol>,
    /// The answers name no backend (a `mail_auth_json` location): an OK needs no usable backend
    /// address or backend password from the account (`host=`, `user=` are not looked at).
    pub names_no_backend: bool,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            imap_backend: None,
            pop3_backend: None,
            smtp_backend: None,
            mx_backend: None,
            fail_wait: DEFAULT_FAIL_WAIT,
            relay_domains: Vec::new(),
            master_user: None,
            trusted_proxies: TrustedProxies::default(),
            transport: Transport::default(),
            nginx_auth_wait_fixed: true,
            app_only: Vec::new(),
            names_no_backend: false,
        }
    }
}

impl AuthConfig {
    /// The configured backend for a protocol.
    pub fn backend(&self, p: Protocol) -> Option<&Backend> {
        match p {
            Protocol::Imap => self.imap_backend.as_ref(),
            Protocol::Pop3 => self.pop3_backend.as_ref(),
            Protocol::Smtp => self.smtp_backend.as_ref(),
        }
    }

    /// Sets the backend for a protocol.
    pub fn set_backend(&mut self, p: Protocol, b: Backend) {
        let slot = match p {
            Protocol::Imap => &mut self.imap_backend,
            Protocol::Pop3 => &mut self.pop3_backend,
            Protocol::Smtp => &mut self.smtp_backend,
        };
        *slot = Some(b);
    }
}

/// The transport policy (see `engine::transport`): which logins need TLS, and what each
/// listener (a mail `server {}` block naming itself with `auth_http_header
/// X-Mail-Auth-Listener NAME`) allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    /// `mail_auth_require_tls`: the protocols (imap, pop3, smtp) whose cleartext logins need TLS.
    pub require_tls: Vec<Protocol>,
    /// `mail_auth_listener`: the declared listeners.
    pub listeners: Vec<Listener>,
    /// `mail_auth_listener_required on`: a login whose listener is not declared (no marker, or
    /// an unknown name) is a temporary failure.
    pub listener_required: bool,
}

impl Transport {
    /// The declared listener of that name (ASCII case-insensitive).
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name.eq_ignore_ascii_case(name))
    }
}

/// `mail_auth_listener NAME [auth=on|off] [require_tls=on|off]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    /// `auth=off`: every login (any method but SMTP without AUTH) is refused.
    pub auth: bool,
    /// `require_tls=`: overrides `mail_auth_require_tls` for this listener; `None`: it applies.
    pub require_tls: Option<bool>,
}

/// `mail_auth_require_tls imap|pop3|smtp ... | on | off`: `on` is all three, `off` none (to
/// switch off an inherited setting).
pub fn parse_require_tls(args: &[&str]) -> Result<Vec<Protocol>, String> {
    match args {
        [] => return Err("no protocol".into()),
        [one] if one.eq_ignore_ascii_case("off") => return Ok(Vec::new()),
        [one] if one.eq_ignore_ascii_case("on") => return Ok(Protocol::ALL.to_vec()),
        _ => {}
    }
    let mut list = Vec::new();
    for a in args {
        let p = Protocol::parse(a.as_bytes())
            .ok_or_else(|| format!("invalid value \"{a}\", expected imap, pop3, smtp, or on / off alone"))?;
        if list.contains(&p) {
            return Err(format!("\"{a}\" given twice"));
        }
        list.push(p);
    }
    Ok(list)
}

/// A listener name: what `auth_http_header X-Mail-Auth-Listener NAME` sends (letters, digits,
/// `.`, `_`, `-`; at most 64).
pub fn parse_listener_name(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!("invalid listener name \"{v}\" (letters, digits, '.', '_', '-'; at most 64)"));
    }
    Ok(v.to_string())
}

/// `on` / `off` (any case).
pub fn parse_on_off(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// `mail_auth_listener NAME [auth=on|off] [require_tls=on|off]`.
pub fn parse_listener(args: &[&str]) -> Result<Listener, String> {
    let (name, rest) = args.split_first().ok_or("no listener name")?;
    let mut l = Listener { name: parse_listener_name(name)?, auth: true, require_tls: None };
    let mut seen = Vec::new();
    for (k, v) in key_values(rest, &["auth", "require_tls"])? {
        if seen.contains(&k) {
            return Err(format!("\"{k}\" given twice"));
        }
        seen.push(k);
        let on = parse_on_off(v).ok_or_else(|| format!("{k}=\"{v}\": expected on or off"))?;
        match k {
            "auth" => l.auth = on,
            _ => l.require_tls = Some(on),
        }
    }
    Ok(l)
}

/// `mail_auth_cache zone=NAME:SIZE [ttl=T] [negative_ttl=T]`: how long verdicts are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub ttl: u64,
    pub negative_ttl: u64,
}

impl Default for CacheSettings {
    fn default() -> CacheSettings {
        CacheSettings { ttl: 60, negative_ttl: 10 }
    }
}

/// `mail_auth_verify_concurrency N [queue=M]`: costly verifications (bcrypt, Argon2, SHA-crypt
/// above 5000 rounds) on the thread pool at once from one worker, and how many more the
/// worker's event loop may hold for a turn (a held request holds no pool thread and no
/// verification memory; one for a credential already under verification waits for that
/// verdict without taking a place); beyond that a login gets a temporary failure (result
/// `overloaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyConcurrency {
    pub limit: usize,
    pub queue: usize,
}

impl Default for VerifyConcurrency {
    /// One fewer than the machine has CPUs (at least one), so that a flood of costly
    /// verifications leaves the event loop a core; [`DEFAULT_VERIFY_QUEUE`] waiting.
    fn default() -> VerifyConcurrency {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        VerifyConcurrency { limit: cpus.saturating_sub(1).max(1), queue: DEFAULT_VERIFY_QUEUE }
    }
}

/// Default `queue=` of `mail_auth_verify_concurrency`: a burst of this many costly logins per
/// worker only waits.
pub const DEFAULT_VERIFY_QUEUE: usize = 64;

/// `mail_auth_lookup_concurrency N [queue=M]`: a location's jobs that wait on I/O on the thread
/// pool (lookups of a store that may block: SQLite under a lock, SQL servers, LDAP searches and
/// binds; the fleet's Redis; introspection calls) at once from one worker, and how many more
/// the worker's event loop may hold for a turn; beyond that a login gets a temporary failure
/// (`overloaded`). A directory that hangs then holds at most N pool threads per location and
/// worker, and the others stay free for the costly verifications and the other locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupConcurrency {
    pub limit: usize,
    pub queue: usize,
}

impl Default for LookupConcurrency {
    /// A quarter of nginx's default pool (32 threads): room for three such locations and the
    /// costly verifications; a burst of 256 logins only waits.
    fn default() -> LookupConcurrency {
        LookupConcurrency { limit: 8, queue: 256 }
    }
}

/// Where a `mail_auth` location finds its users: one variant per kind of store (and directive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConf {
    /// `mail_auth_passwd_file PATH`, and the `mail_auth_app_passwords` file in effect where it
    /// is used.
    PasswdFile { path: String, apps: Option<String> },
    /// `mail_auth_sqlite PATH`, and the `mail_auth_sqlite_query` in effect where it is used
    /// (`None`: the default query).
    /// `rows`: `mail_auth_sqlite_cache_rows` in effect (`None`: the default).
    /// `app_query`: `mail_auth_sqlite_app_query` in effect (`None`: no app passwords).
    Sqlite { path: String, query: Option<String>, rows: Option<usize>, app_query: Option<String> },
    /// `mail_auth_sql DRIVER DSN [name=value ...]` (paths in the values already resolved), and
    /// the `mail_auth_sql_query` in effect where it is used (`None`: the default query).
    Sql { driver: String, dsn: String, options: Vec<String>, query: Option<String> },
    /// `mail_auth_ldap URL... name=value...` (paths in the values already resolved), and the
    /// `mail_auth_ldap_attrs` in effect where it is used.
    Ldap { args: Vec<String>, attrs: Vec<String> },
}

/// A `mail_auth_log_level` value (nginx's level names, case-insensitive).
pub fn parse_log_level(v: &str) -> Option<Level> {
    Some(match v.to_ascii_lowercase().as_str() {
        "debug" => Level::Debug,
        "info" => Level::Info,
        "notice" => Level::Notice,
        "warn" => Level::Warn,
        "error" => Level::Error,
        _ => return None,
    })
}

/// `HOST[:PORT]` or `[IPv6]:PORT` split (the port 1..65535 if given); an IPv6 address must be
/// in brackets. Used for backends, directory and Redis addresses.
pub fn split_host_port(v: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("\"{v}\": missing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("\"{v}\": unexpected \"{after}\" after ']'")),
        };
        (host, port)
    } else {
        match v.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!("\"{v}\": IPv6 addresses must be written in brackets, e.g. [::1]:143"))
            }
            Some((h, p)) => (h, Some(p)),
            None => (v, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("invalid port \"{p}\"")),
        },
    };
    Ok((host, port))
}

/// `mail_auth_backend PROTOCOL ADDR[:PORT]`: ADDR is an IPv4 literal or a bracketed IPv6
/// literal (nginx mail parses Auth-Server with ngx_parse_addr: no host names).
pub fn parse_backend(v: &str, default_port: u16) -> Result<Backend, String> {
    let (host, port) = split_host_port(v)?;
    let ip = protocol::parse_server(host)
        .ok_or_else(|| format!("\"{host}\" is not an IP address (nginx mail needs an IP literal for Auth-Server)"))?;
    Ok(Backend { server: ip.into(), port: port.unwrap_or(default_port) })
}

pub fn parse_protocol(v: &str) -> Result<Protocol, String> {
    Protocol::parse(v.as_bytes()).ok_or_else(|| format!("invalid protocol \"{v}\", expected imap, pop3 or smtp"))
}

/// Whether the nginx a module is built against can be sent a non-zero `Auth-Wait` for a
/// refused APOP or CRAM-MD5 login, and why (for the configuration-time log line).
///
/// nginx before 1.28.3 (stable) / 1.29.7 (mainline) keeps the length of its password buffer
/// after an APOP/CRAM-MD5 auth_http request, and crashes the worker on the client's next
/// CRAM-MD5 attempt in the same session (CVE-2026-27651, fixed by "Mail: fixed clearing
/// s->passwd in auth http requests"); a session that gets `Auth-Wait: 0` is closed instead.
/// Fixed: 1.28.3 and later 1.28.x, 1.29.7 and later. freenginx keeps its own version line:
/// 1.27.1 has the fault (`s->passwd.data = NULL` without the length), later ones were not
/// checked, so every freenginx (and any other fork) counts as unfixed.
///
/// `declared`: what the build was told (`MAIL_AUTH_NGINX_AUTH_WAIT_FIXED` at build time, set
/// by `scripts/package` when Debian's package carries the backported fix); `nginx_ver`: nginx's
/// `NGINX_VER` ("nginx/1.28.3"); `number`: its `nginx_version` (1028003).
pub fn auth_wait_fixed(declared: Option<bool>, nginx_ver: Option<&str>, number: Option<u64>) -> (bool, String) {
    let name = nginx_ver.unwrap_or("an unknown nginx");
    if let Some(fixed) = declared {
        let how = if fixed { "has" } else { "lacks" };
        return (fixed, format!("{name} {how} the CVE-2026-27651 fix, as the module's build was told"));
    }
    let fixed = match (nginx_ver, number) {
        (Some(v), Some(n)) if v.starts_with("nginx/") => (1_028_003..1_029_000).contains(&n) || n >= 1_029_007,
        _ => false,
    };
    let why =
        if fixed { "1.28.3+ or 1.29.7+: has" } else { "older than 1.28.3 / 1.29.7, or not nginx.org's: may lack" };
    (fixed, format!("{name} ({why} the CVE-2026-27651 fix)"))
}

/// The value of a build-time yes/no setting (`1`, `on`, `yes` / `0`, `off`, `no`).
pub fn parse_flag(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// nginx time syntax reduced to what Auth-Wait carries (whole seconds): "3", "3s", "2m", "1h".
pub fn parse_seconds(v: &str) -> Result<u32, String> {
    let bad = || format!("invalid time \"{v}\" (whole seconds, e.g. 3s, 2m)");
    let (num, mult) = match v.as_bytes().last() {
        Some(b's') => (&v[..v.len() - 1], 1),
        Some(b'm') => (&v[..v.len() - 1], 60),
        Some(b'h') => (&v[..v.len() - 1], 3600),
        Some(c) if c.is_ascii_digit() => (v, 1),
        _ => return Err(bad()),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).filter(|s| *s <= 24 * 3600).ok_or_else(|| format!("time \"{v}\" is too long (24h at most)"))
}

/// The shared zone of the status counters: added automatically (by `mail_auth` and
/// `mail_auth_status`), so no directive may declare a zone of that name.
pub const STATUS_ZONE: &str = "mail_auth_status";

/// `zone=NAME:SIZE` (SIZE in bytes, or with k/m suffix; at least 32k). NAME is not
/// [`STATUS_ZONE`]: a cache or limiter there would share the counters' memory.
pub fn parse_zone(v: &str) -> Result<(String, usize), String> {
    let (name, size) = v
        .strip_prefix("zone=")
        .and_then(|z| z.rsplit_once(':'))
        .ok_or_else(|| format!("\"{v}\": expected zone=NAME:SIZE"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!("invalid zone name \"{name}\""));
    }
    if name == STATUS_ZONE {
        return Err(format!("zone name \"{name}\" is reserved for the status counters (added automatically)"));
    }
    let (num, mult) = match size.as_bytes().last() {
        Some(b'k' | b'K') => (&size[..size.len() - 1], 1024),
        Some(b'm' | b'M') => (&size[..size.len() - 1], 1024 * 1024),
        _ => (size, 1),
    };
    let bytes = num
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid zone size \"{size}\""))?;
    if bytes < 32 * 1024 {
        return Err(format!("zone \"{name}\" is too small ({size}; 32k at least)"));
    }
    Ok((name.to_string(), bytes))
}

/// Splits `key=value` arguments; unknown keys are an error.
pub fn key_values<'a>(args: &[&'a str], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    args.iter()
        .map(|a| {
            let (k, v) = a.split_once('=').ok_or_else(|| format!("invalid parameter \"{a}\""))?;
            if !known.contains(&k) {
                return Err(format!("unknown parameter \"{k}\" (known: {})", known.join(", ")));
            }
            Ok((k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerAddr;

    #[test]
    fn zones() {
        assert_eq!(parse_zone("zone=auth:1m"), Ok(("auth".into(), 1 << 20)));
        assert_eq!(parse_zone("zone=a_b-1:64k"), Ok(("a_b-1".into(), 64 << 10)));
        assert_eq!(parse_zone("zone=x:40000"), Ok(("x".into(), 40000)));
        for bad in
            ["auth:1m", "zone=:1m", "zone=a b:1m", "zone=a:1x", "zone=a:16k", "zone=a", "zone=a:99999999999999999999m"]
        {
            assert!(parse_zone(bad).is_err(), "{bad}");
        }
        let reserved = parse_zone("zone=mail_auth_status:64k").unwrap_err();
        assert!(reserved.contains("\"mail_auth_status\" is reserved"), "{reserved}");
        // zone names are case-sensitive in nginx: another spelling is another zone
        assert_eq!(parse_zone("zone=Mail_Auth_Status:64k"), Ok(("Mail_Auth_Status".into(), 64 << 10)));
    }

    #[test]
    fn key_value_args() {
        assert_eq!(key_values(&["ttl=5m", "ip=3/m"], &["ttl", "ip"]), Ok(vec![("ttl", "5m"), ("ip", "3/m")]));
        assert!(key_values(&["ttl"], &["ttl"]).is_err());
        assert!(key_values(&["foo=1"], &["ttl"]).is_err());
    }

    #[test]
    fn backend_forms() {
        assert_eq!(
            parse_backend("127.0.0.1:1143", 143),
            Ok(Backend { server: ServerAddr::parse("127.0.0.1").unwrap(), port: 1143 })
        );
        assert_eq!(
            parse_backend("127.0.0.1", 110),
            Ok(Backend { server: ServerAddr::parse("127.0.0.1").unwrap(), port: 110 })
        );
        assert_eq!(
            parse_backend("[::1]:2525", 25),
            Ok(Backend { server: ServerAddr::parse("::1").unwrap(), port: 2525 })
        );
        assert_eq!(parse_backend("[::1]", 25), Ok(Backend { server: ServerAddr::parse("::1").unwrap(), port: 25 }));
    }

    #[test]
    fn backend_errors() {
        for bad in
            ["mail.example.org:143", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "::1:143", "[::1", "[::1]x", ""]
        {
            assert!(parse_backend(bad, 143).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("3"), Ok(3));
        assert_eq!(parse_seconds("3s"), Ok(3));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert_eq!(parse_seconds("1h"), Ok(3600));
        assert_eq!(parse_seconds("0"), Ok(0));
        for bad in ["", "s", "-1", "1.5s", "3d", "25h", "99999999999"] {
            assert!(parse_seconds(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("info"), Some(Level::Info));
        assert_eq!(parse_log_level("WARN"), Some(Level::Warn));
        assert_eq!(parse_log_level("debug"), Some(Level::Debug));
        assert_eq!(parse_log_level("crit"), None);
        assert_eq!(parse_log_level(""), None);
    }

    #[test]
    fn require_tls_values() {
        use Protocol::*;
        assert_eq!(parse_require_tls(&["imap"]), Ok(vec![Imap]));
        assert_eq!(parse_require_tls(&["IMAP", "smtp"]), Ok(vec![Imap, Smtp]));
        assert_eq!(parse_require_tls(&["on"]), Ok(vec![Imap, Pop3, Smtp]));
        assert_eq!(parse_require_tls(&["off"]), Ok(vec![]));
        for bad in [&["imap", "imap"][..], &["imap", "off"], &["on", "smtp"], &["lmtp"], &[]] {
            assert!(parse_require_tls(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listener_values() {
        let l = |n: &str, auth, tls| Listener { name: n.into(), auth, require_tls: tls };
        assert_eq!(parse_listener(&["mx", "auth=off"]), Ok(l("mx", false, None)));
        assert_eq!(parse_listener(&["submission"]), Ok(l("submission", true, None)));
        assert_eq!(parse_listener(&["lan-imap", "require_tls=OFF"]), Ok(l("lan-imap", true, Some(false))));
        assert_eq!(parse_listener(&["a.b_c", "require_tls=on", "auth=on"]), Ok(l("a.b_c", true, Some(true))));
        for bad in [
            &["mx", "auth=maybe"][..],
            &["mx", "auth"],
            &["mx", "auth=off", "auth=on"],
            &["mx", "tls=on"],
            &["m x"],
            &[""],
            &["mx:25"],
            &[],
        ] {
            assert!(parse_listener(bad).is_err(), "{bad:?}");
        }
        let t = Transport { listeners: vec![l("MX", false, None)], ..Transport::default() };
        assert_eq!(t.listener("mx").map(|l| l.auth), Some(false));
        assert!(t.listener("mx2").is_none());
    }

    #[test]
    fn protocols() {
        assert_eq!(parse_protocol("imap"), Ok(Protocol::Imap));
        assert_eq!(parse_protocol("POP3"), Ok(Protocol::Pop3));
        assert!(parse_protocol("lmtp").is_err());
    }
}

/// A `mail_auth_relay_domains` entry: a domain name (lower-cased), or `.domain` for the domain
/// and its subdomains (`smtp::domain_accepted`).
pub fn parse_domain(v: &str) -> Result<String, String> {
    let d = v.trim_end_matches('.').to_ascii_lowercase();
    let name = d.strip_prefix('.').unwrap_or(&d);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("invalid domain \"{v}\""));
    }
    Ok(d)
}

/// A master user's name, password and separator must be sendable as Auth-User / Auth-Pass
/// (no control characters) and not empty.
pub fn check_master_user(m: &MasterUser) -> Result<(), String> {
    for (what, v) in [("name", &m.name), ("password", &m.password), ("separator", &m.separator)] {
        if v.is_empty() {
            return Err(format!("empty {what}"));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("control characters in the {what}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod auth_wait_tests {
    use super::*;

    #[test]
    fn cve_2026_27651_thresholds() {
        let built = |v: &str, n: u64| auth_wait_fixed(None, Some(v), Some(n)).0;
        for (v, n, fixed) in [
            ("nginx/1.22.1", 1_022_001, false),
            ("nginx/1.26.3", 1_026_003, false),
            ("nginx/1.28.0", 1_028_000, false),
            ("nginx/1.28.2", 1_028_002, false),
            ("nginx/1.28.3", 1_028_003, true),
            ("nginx/1.28.10", 1_028_010, true),
            ("nginx/1.29.0", 1_029_000, false),
            ("nginx/1.29.6", 1_029_006, false),
            ("nginx/1.29.7", 1_029_007, true),
            ("nginx/1.30.0", 1_030_000, true),
            ("nginx/2.0.0", 2_000_000, true),
            ("freenginx/1.27.1", 1_027_001, false),
            ("freenginx/1.29.9", 1_029_009, false),
            ("angie/1.30.0", 1_030_000, false),
        ] {
            assert_eq!(built(v, n), fixed, "{v}");
        }
        // unknown: unfixed
        assert!(!auth_wait_fixed(None, None, None).0);
        assert!(!auth_wait_fixed(None, Some("nginx/1.28.3"), None).0);
        // what the build was told wins, both ways (Debian's 1.22.1-9+deb12u5 and later)
        assert!(auth_wait_fixed(Some(true), Some("nginx/1.22.1"), Some(1_022_001)).0);
        assert!(!auth_wait_fixed(Some(false), Some("nginx/1.28.3"), Some(1_028_003)).0);
        let (_, why) = auth_wait_fixed(None, Some("nginx/1.22.1"), Some(1_022_001));
        assert!(why.starts_with("nginx/1.22.1 ") && why.contains("may lack"), "{why}");
    }

    #[test]
    fn flags() {
        for (v, want) in [("1", Some(true)), ("on", Some(true)), ("YES", Some(true)), ("0", Some(false))] {
            assert_eq!(parse_flag(v), want);
        }
        assert_eq!(parse_flag("off"), Some(false));
        assert_eq!(parse_flag(""), None);
        assert_eq!(parse_flag("maybe"), None);
    }
}

#[cfg(test)]
mod domain_tests {
    use super::*;

    #[test]
    fn relay_domains_and_master_users() {
        assert_eq!(parse_domain("Example.ORG.").as_deref(), Ok("example.org"));
        assert_eq!(parse_domain(".sub.example.net").as_deref(), Ok(".sub.example.net"));
        for bad in ["", ".", "-a.example", "a..b", "a_b.example", "exa mple.org", "*.example.org"] {
            assert!(parse_domain(bad).is_err(), "{bad}");
        }
        let m = |n: &str, p: &str, s: &str| MasterUser { name: n.into(), password: p.into(), separator: s.into() };
        assert!(check_master_user(&m("master", "pw", "*")).is_ok());
        assert!(check_master_user(&m("", "pw", "*")).is_err());
        assert!(check_master_user(&m("master", "p\r\nw", "*")).is_err());
        assert!(check_master_user(&m("master", "pw", "")).is_err());
    }

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("db.example.net:5432"), Ok(("db.example.net", Some(5432))));
        assert_eq!(split_host_port("127.0.0.1"), Ok(("127.0.0.1", None)));
        assert_eq!(split_host_port("[::1]:389"), Ok(("::1", Some(389))));
        assert_eq!(split_host_port("[::1]"), Ok(("::1", None)));
        for bad in ["::1:389", "[::1]x", "[::1", "h:0", "h:65536", "h:x"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }
}
