//! The configuration the engine decides with, and the parsing of directive arguments (plain
//! Rust, unit-tested; the FFI layer only calls these).

#![forbid(unsafe_code)]

use crate::engine::Level;
use crate::protocol::{self, Protocol};

/// A backend address: `server` an IP literal, `port` 1..65535.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub server: String,
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
    /// `mail_auth_app_only`: protocols on which no account's main password is accepted, only
    /// its app passwords.
    pub app_only: Vec<Protocol>,
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
            app_only: Vec::new(),
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

/// `mail_auth_backend PROTOCOL ADDR[:PORT]`: ADDR is an IPv4 literal or a bracketed IPv6
/// literal (nginx mail parses Auth-Server with ngx_parse_addr: no host names).
pub fn parse_backend(v: &str, default_port: u16) -> Result<Backend, String> {
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| format!("\"{v}\": missing ']'"))?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
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
    let ip = protocol::parse_server(host)
        .ok_or_else(|| format!("\"{host}\" is not an IP address (nginx mail needs an IP literal for Auth-Server)"))?;
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("invalid port \"{p}\"")),
        },
    };
    Ok(Backend { server: ip.to_string(), port })
}

pub fn parse_protocol(v: &str) -> Result<Protocol, String> {
    Protocol::parse(v.as_bytes()).ok_or_else(|| format!("invalid protocol \"{v}\", expected imap, pop3 or smtp"))
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
        assert_eq!(parse_backend("127.0.0.1:1143", 143), Ok(Backend { server: "127.0.0.1".into(), port: 1143 }));
        assert_eq!(parse_backend("127.0.0.1", 110), Ok(Backend { server: "127.0.0.1".into(), port: 110 }));
        assert_eq!(parse_backend("[::1]:2525", 25), Ok(Backend { server: "::1".into(), port: 2525 }));
        assert_eq!(parse_backend("[::1]", 25), Ok(Backend { server: "::1".into(), port: 25 }));
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
}
