//! LDAP store (OpenLDAP, Active Directory, 389 DS ...): the account is the one entry a search
//! finds for the user, its attributes mapped to the same fields as a SQL row.
//!
//! - Two modes, as Dovecot has them:
//!   - `bind` (the default): the password is checked by binding as the entry's DN with it, so
//!     any hash the directory holds works (and a directory that never reveals passwords, like
//!     Active Directory). The account's stored password is then a fresh `{SSHA512}` of the
//!     client's password when the bind succeeded, and of 32 random bytes when the directory
//!     answered invalidCredentials: the engine's verification, policy and answer run unchanged.
//!     APOP/CRAM-MD5 can't be served this way (no recoverable password): `method-denied`.
//!   - `password`: the `userPassword` attribute (or the one `mail_auth_ldap_attrs password=`
//!     names) in `{SCHEME}` form is read and verified by the module's schemes, as a passwd-file
//!     hash is (the service account needs read access to it).
//! - The search: `base`, `scope` and `filter` with `%u` (user), `%n` (its local part), `%d`
//!   (its domain), `%s` (protocol), `%r` (client IP) escaped as RFC 4515 says, so a user name
//!   can't change the filter. No entry: unknown user; more than one: a store error.
//! - Lookups run only on nginx's thread pool ([`Store::may_block`] true, [`Store::try_lookup`]
//!   `None`); nothing connects at configuration time. Each connection has its own
//!   current-thread tokio runtime (the `ldap3` crate's synchronous API), driven only by the
//!   pool thread that holds it.
//! - A pool per worker: searches use connections bound as the service DN (or anonymous), user
//!   binds use connections of their own (a bind changes a connection's identity); at most `pool`
//!   of each kept idle.
//! - Failover: the servers are tried in order at each connect; a pooled connection that fails
//!   is dropped and the lookup retried once on a new one.
//! - Timeouts: `connect_timeout` per server, `query_timeout` per operation (bind or search).
//! - Every failure (server down, refused service bind, timeout, TLS refused, a bad filter or
//!   base, an unusable attribute value) is a `StoreError`: a temporary failure, never OK and
//!   never "wrong password", logged once per new cause; the recovery is logged.
//! - TLS: `ldaps://` or `starttls=on`, always verified (the system's CAs, or `ssl_ca=PATH`)
//!   with the server's name (or IP address) checked against the URL's host.

#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry, SearchOptions};

use super::sql_row::{escape_controls, map_fields, NO_PASSWORD};
use super::sql_server::{parse_duration, read_secret_line, Failure, Health, Pool};
use super::watch::Events;
use super::{lock, Account, Query, Store, StoreError};
use crate::protocol;
use crate::scheme;

/// Default `pool=`: idle connections of each kind each worker keeps.
pub const DEFAULT_POOL: usize = 4;
/// The filter when none is given.
pub const DEFAULT_FILTER: &str = "(uid=%u)";
/// The fields an attribute may be mapped to (`mail_auth_ldap_attrs FIELD=ATTRIBUTE`): those of a
/// SQL row (see `sql_row::map_fields`).
pub const FIELDS: &[&str] = &[
    "password",
    "name",
    "enabled",
    "protocols",
    "networks",
    "server",
    "port",
    "user",
    "backend_pass",
    "wait",
    "client_cert",
    "app_only",
    "allow_nets",
    "allow_real_nets",
];
/// Fields that take a list: an attribute's values are joined with commas (one network a value
/// is a directory's natural layout for Dovecot's `allow_nets`).
const LIST_FIELDS: &[&str] = &["protocols", "networks", "app_only", "allow_nets", "allow_real_nets"];

/// The (field, value) pairs an entry gives for `attrs`: a list field's values joined with
/// commas, another field's first value, an extra field once per value (Dovecot collects a
/// repeated name's values).
fn entry_fields<'a>(entry: &SearchEntry, attrs: &'a [(String, String)]) -> Vec<(&'a str, Option<String>)> {
    let mut fields: Vec<(&str, Option<String>)> = Vec::with_capacity(attrs.len() + 1);
    for (field, attr) in attrs {
        let values = attr_values(entry, attr);
        if !FIELDS.contains(&field.as_str()) {
            fields.extend(values.into_iter().map(|v| (field.as_str(), Some(v))));
            continue;
        }
        let v = if values.is_empty() {
            None
        } else if LIST_FIELDS.contains(&field.as_str()) {
            Some(values.join(","))
        } else {
            values.into_iter().next()
        };
        fields.push((field.as_str(), v));
    }
    fields
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The directory checks the password (a bind as the entry's DN).
    Bind,
    /// The entry's password attribute is read and verified here.
    Password,
}

/// The configuration of `mail_auth_ldap URL... name=value...` and `mail_auth_ldap_attrs`. Its
/// `Debug` output leaves the service account's password out.
#[derive(Clone, PartialEq)]
pub struct Options {
    pub urls: Vec<String>,
    pub base: String,
    pub scope: Scope,
    pub filter: String,
    pub mode: Mode,
    pub bind_dn: Option<String>,
    /// Read from `bind_password_file=` at configuration time (its first line).
    pub bind_password: Option<String>,
    pub starttls: bool,
    pub ssl_ca: Option<String>,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub pool: usize,
    /// (field, attribute), from `mail_auth_ldap_attrs`; in `password` mode `password` defaults to
    /// `userPassword`.
    pub attrs: Vec<(String, String)>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("urls", &self.urls)
            .field("base", &self.base)
            .field("filter", &self.filter)
            .field("mode", &self.mode)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &self.bind_password.as_ref().map(|_| "<redacted>"))
            .field("attrs", &self.attrs)
            .finish_non_exhaustive()
    }
}

/// Checks a filter template: parenthesised, balanced, and its placeholders known; it must name
/// the user (`%u` or `%n`), else every login would find the same entries.
fn check_filter(f: &str) -> Result<(), String> {
    if !(f.starts_with('(') && f.ends_with(')')) {
        return Err(format!("filter \"{f}\": must be in parentheses"));
    }
    let mut depth = 0i32;
    let mut user = false;
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
            }
            '%' => match chars.next() {
                Some('u' | 'n') => user = true,
                Some('d' | 's' | 'r' | '%') => {}
                other => {
                    return Err(format!(
                        "filter \"{f}\": unknown placeholder \"%{}\" (%u, %n, %d, %s, %r, %%)",
                        other.map(String::from).unwrap_or_default()
                    ))
                }
            },
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("filter \"{f}\": unbalanced parentheses"));
    }
    if !user {
        return Err(format!("filter \"{f}\": it must name the user (%u or %n)"));
    }
    Ok(())
}

/// The filter for `q`: each placeholder replaced by its value escaped as RFC 4515 says
/// (`*`, `(`, `)`, `\` and NUL as `\2a` ...), so a user name can't change the filter.
pub fn filter_for(template: &str, q: &Query<'_>) -> String {
    let (local, domain) = match q.user.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (q.user, ""),
    };
    let ip = q.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let mut out = String::with_capacity(template.len() + q.user.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&ldap3::ldap_escape(q.user)),
            Some('n') => out.push_str(&ldap3::ldap_escape(local)),
            Some('d') => out.push_str(&ldap3::ldap_escape(domain)),
            Some('s') => out.push_str(q.protocol.as_str()),
            Some('r') => out.push_str(&ip),
            Some('%') => out.push('%'),
            Some(o) => {
                // checked at configuration time: not reached
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `ldap://HOST[:PORT][/]` or `ldaps://...` (HOST a name, an IPv4 address or `[IPv6]`): the
/// server only; the DN and filter are options of their own.
fn check_url(u: &str) -> Result<(), String> {
    let bad = || format!("\"{u}\": expected ldap://HOST[:PORT] or ldaps://HOST[:PORT] (base= and filter= are options)");
    let rest = u.split_once("://").map(|(_, r)| r).ok_or_else(bad)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '@', '#', ' ']) {
        return Err(bad());
    }
    let (host, _) = crate::config::split_host_port(authority).map_err(|_| bad())?;
    let v6 = authority.starts_with('[');
    if host.is_empty() || (v6 && host.parse::<std::net::Ipv6Addr>().is_err()) {
        return Err(bad());
    }
    Ok(())
}

fn is_ldap_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.starts_with("ldap://") || l.starts_with("ldaps://")
}

/// `mail_auth_ldap URL [URL ...] name=value ...`: the servers (`ldap://`, `ldaps://`, tried in
/// order), then `base=` (required), `scope=sub|one|base`, `filter=`, `mode=bind|password`,
/// `bind_dn=`, `bind_password_file=` (its first line, read now), `starttls=on|off`,
/// `ssl_ca=`, `connect_timeout=`, `query_timeout=`, `pool=`.
pub fn parse_options(args: &[String], attrs: &[String]) -> Result<Options, String> {
    let mut o = Options {
        urls: Vec::new(),
        base: String::new(),
        scope: Scope::Subtree,
        filter: DEFAULT_FILTER.into(),
        mode: Mode::Bind,
        bind_dn: None,
        bind_password: None,
        starttls: false,
        ssl_ca: None,
        connect_timeout: Duration::from_secs(3),
        query_timeout: Duration::from_secs(3),
        pool: DEFAULT_POOL,
        attrs: Vec::new(),
    };
    for a in args {
        if is_ldap_url(a) {
            for u in a.split_whitespace() {
                check_url(u)?;
                o.urls.push(u.to_string());
            }
            continue;
        }
        let (k, v) = a.split_once('=').ok_or_else(|| format!("\"{a}\": expected an ldap:// URL or name=value"))?;
        let bad = || format!("invalid \"{a}\"");
        match k {
            "base" => o.base = v.to_string(),
            "scope" => {
                o.scope = match v {
                    "sub" | "subtree" => Scope::Subtree,
                    "one" | "onelevel" => Scope::OneLevel,
                    "base" => Scope::Base,
                    _ => return Err(format!("invalid \"{a}\" (sub, one, base)")),
                }
            }
            "filter" => o.filter = v.to_string(),
            "mode" => {
                o.mode = match v {
                    "bind" => Mode::Bind,
                    "password" => Mode::Password,
                    _ => return Err(format!("invalid \"{a}\" (bind, password)")),
                }
            }
            "bind_dn" if !v.is_empty() => o.bind_dn = Some(v.to_string()),
            "bind_password_file" => o.bind_password = Some(read_secret_line(k, v)?),
            "starttls" => {
                o.starttls = match v {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad()),
                }
            }
            "ssl_ca" if !v.is_empty() => o.ssl_ca = Some(v.to_string()),
            "connect_timeout" => o.connect_timeout = parse_duration(v).ok_or_else(bad)?,
            "query_timeout" => o.query_timeout = parse_duration(v).ok_or_else(bad)?,
            "pool" => o.pool = v.parse().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(bad)?,
            _ => {
                return Err(format!(
                    "unknown option \"{a}\" (base, scope, filter, mode, bind_dn, bind_password_file, starttls, ssl_ca, connect_timeout, query_timeout, pool)"
                ))
            }
        }
    }
    if o.urls.is_empty() {
        return Err("no server (ldap://HOST[:PORT] or ldaps://HOST[:PORT])".into());
    }
    if o.base.is_empty() {
        return Err("base=DN is required".into());
    }
    check_filter(&o.filter)?;
    if o.bind_dn.is_some() != o.bind_password.is_some() {
        return Err("bind_dn= and bind_password_file= go together".into());
    }
    let ldaps = o.urls.iter().filter(|u| u.to_ascii_lowercase().starts_with("ldaps://")).count();
    if o.starttls && ldaps > 0 {
        return Err("starttls=on is for ldap:// URLs (ldaps:// is TLS already)".into());
    }
    if ldaps > 0 && ldaps < o.urls.len() {
        // the next server is asked when one fails: whoever drops the TLS one's packets would
        // have every bind (the users' passwords) sent to the other in clear
        return Err(
            "ldaps:// and ldap:// servers in one list: all TLS or none (ldap:// with starttls=on is TLS too)".into()
        );
    }
    let tls = o.starttls || ldaps > 0;
    if o.ssl_ca.is_some() && !tls {
        return Err("ssl_ca= needs ldaps:// or starttls=on (it would not be used)".into());
    }
    for m in attrs {
        let (field, attr) = m.split_once('=').ok_or_else(|| format!("\"{m}\": expected FIELD=ATTRIBUTE"))?;
        let field = field.to_ascii_lowercase();
        // any other name is an extra field: Dovecot's attributes in `mail_auth_json`'s answers
        // (`userdb_home=homeDirectory`), one per value
        let extra_name = !field.is_empty()
            && field.len() <= 64
            && field.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !FIELDS.contains(&field.as_str()) && !extra_name {
            return Err(format!(
                "\"{m}\": \"{field}\" is not a field ({}, or an extra field name: a-z, 0-9, _)",
                FIELDS.join(", ")
            ));
        }
        let valid_attr = !attr.is_empty()
            && attr.len() <= 128
            && attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';');
        if !valid_attr {
            return Err(format!("\"{m}\": \"{attr}\" is not an attribute name"));
        }
        if o.attrs.iter().any(|(f, _)| *f == field) {
            return Err(format!("\"{m}\": the field \"{field}\" is mapped twice"));
        }
        if let Some(both) = super::sql_row::same_field(&field, o.attrs.iter().map(|(f, _)| f.as_str())) {
            return Err(format!("\"{m}\": \"{both}\" gives the same field"));
        }
        if field == "password" && o.mode == Mode::Bind {
            return Err(format!("\"{m}\": in mode=bind the directory checks the password (use mode=password)"));
        }
        o.attrs.push((field, attr.to_string()));
    }
    if o.mode == Mode::Password && !o.attrs.iter().any(|(f, _)| f == "password") {
        o.attrs.push(("password".into(), "userPassword".into()));
    }
    Ok(o)
}

/// One connection and its runtime (the `ldap3` synchronous handle owns both).
struct Conn {
    ldap: LdapConn,
}

/// How long a bind the directory refused is remembered (per worker), and how many at most.
const REFUSED_TTL: Duration = Duration::from_secs(60);
const REFUSED_MAX: usize = 4096;

/// What a user bind said.
enum BindVerdict {
    Accepted,
    Refused,
}

/// LDAP result codes the store tells apart.
const RC_SUCCESS: u32 = 0;
const RC_SIZE_LIMIT: u32 = 4;
const RC_INVALID_CREDENTIALS: u32 = 49;

pub struct LdapStore {
    desc: String,
    /// [`Store::scope`]: see [`scope`].
    scope: String,
    opts: Options,
    /// The attributes a search asks for.
    wanted: Vec<String>,
    tls: Option<native_tls::TlsConnector>,
    /// Searches' connections (bound as the service DN) and user binds' (a bind changes a
    /// connection's identity), apart.
    search_pool: Pool<Conn>,
    bind_pool: Pool<Conn>,
    events: Events,
    health: Health,
    /// Binds the directory refused lately, by a keyed hash of (DN, password): the same wrong
    /// password again within [`REFUSED_TTL`] is refused without a bind (a client retrying a
    /// stale password, or a guess repeated, never locks the account out in the directory).
    refused: Mutex<std::collections::HashMap<[u8; 32], Instant>>,
    refused_key: [u8; 32],
    /// A cheap stored value for the timing template in bind mode (the directory did the costly
    /// part): a failure is not padded to bcrypt for nothing.
    bind_template: std::sync::Arc<str>,
}

/// What decides which entry (and which of its values) a name finds: the servers, `base=`,
/// `scope=`, `filter=`, `mode=`, the service DN (what it may read) and `mail_auth_ldap_attrs`;
/// never the service password.
fn scope(desc: &str, o: &Options) -> String {
    let mut parts: Vec<&[u8]> = vec![b"ldap"];
    parts.extend(o.urls.iter().map(|u| u.as_bytes()));
    parts.extend([b"base".as_slice(), o.base.as_bytes()]);
    parts.extend([
        b"scope".as_slice(),
        match o.scope {
            Scope::Base => b"base".as_slice(),
            Scope::OneLevel => b"one",
            Scope::Subtree => b"sub",
        },
    ]);
    parts.extend([b"filter".as_slice(), o.filter.as_bytes()]);
    parts.extend([
        b"mode".as_slice(),
        match o.mode {
            Mode::Bind => b"bind".as_slice(),
            Mode::Password => b"password",
        },
    ]);
    parts.extend([b"bind_dn".as_slice(), o.bind_dn.as_deref().map_or(b"\0".as_slice(), str::as_bytes)]);
    parts.push(b"attrs");
    for (field, attr) in &o.attrs {
        parts.extend([field.as_bytes(), attr.as_bytes()]);
    }
    super::scope_of(desc, &parts)
}

impl LdapStore {
    /// Checks the options and the TLS CA file; connects to nothing.
    pub fn new(opts: Options) -> Result<LdapStore, String> {
        let tls = match &opts.ssl_ca {
            None => None,
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| format!("ssl_ca \"{ca}\": {e}"))?;
                let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| format!("ssl_ca \"{ca}\": {e}"))?;
                let c = native_tls::TlsConnector::builder()
                    .add_root_certificate(cert)
                    .disable_built_in_roots(true)
                    .build()
                    .map_err(|e| format!("TLS: {e}"))?;
                Some(c)
            }
        };
        let hosts: Vec<&str> = opts.urls.iter().map(String::as_str).collect();
        let wanted = opts.attrs.iter().map(|(_, a)| a.clone()).collect();
        let filler = scheme::hash_password(scheme::HashKind::Ssha512, b"mail-auth ldap bind template")
            .map_err(|e| format!("template: {e}"))?;
        let pool = opts.pool;
        let desc = format!("ldap \"{}\"", hosts.join(" "));
        Ok(LdapStore {
            scope: scope(&desc, &opts),
            desc,
            opts,
            wanted,
            tls,
            search_pool: Pool::new(pool),
            bind_pool: Pool::new(pool),
            events: Events::default(),
            health: Health::default(),
            bind_template: filler.into(),
            refused: Mutex::new(std::collections::HashMap::new()),
            refused_key: {
                let mut k = [0u8; 32];
                getrandom::getrandom(&mut k).map_err(|e| format!("random: {e}"))?;
                k
            },
        })
    }

    /// Connects to the first server that answers; a search connection binds as the service DN.
    fn connect(&self, service: bool) -> Result<Conn, String> {
        let mut causes = Vec::new();
        for url in &self.opts.urls {
            let mut s =
                LdapConnSettings::new().set_conn_timeout(self.opts.connect_timeout).set_starttls(self.opts.starttls);
            if let Some(c) = &self.tls {
                s = s.set_connector(c.clone());
            }
            let mut ldap = match LdapConn::with_settings(s, url) {
                Ok(l) => l,
                Err(e) => {
                    causes.push(format!("{url}: {}", text(&e)));
                    continue;
                }
            };
            if service {
                if let (Some(dn), Some(pw)) = (&self.opts.bind_dn, &self.opts.bind_password) {
                    match ldap.with_timeout(self.opts.query_timeout).simple_bind(dn, pw) {
                        Ok(r) if r.rc == RC_SUCCESS => {}
                        Ok(r) => {
                            // the service account is refused: every server will say so
                            return Err(format!("{url}: service bind as \"{dn}\" refused: {}", rc_text(r.rc, &r.text)));
                        }
                        Err(e) => {
                            causes.push(format!("{url}: service bind: {}", text(&e)));
                            continue;
                        }
                    }
                }
            }
            return Ok(Conn { ldap });
        }
        Err(format!("cannot connect: {}", causes.join("; ")))
    }

    /// Runs `op` on a pooled connection of the kind, or a new one; a pooled connection that
    /// fails is dropped and `op` tried once more on a new one.
    fn with_conn<T>(&self, service: bool, op: impl Fn(&mut Conn) -> Result<T, Failure>) -> Result<T, String> {
        let pool = if service { &self.search_pool } else { &self.bind_pool };
        pool.with(|| self.connect(service), |_| true, op)
    }

    fn search(&self, q: &Query<'_>) -> Result<Option<(String, Account)>, String> {
        let filter = filter_for(&self.opts.filter, q);
        let timeout = self.opts.query_timeout;
        let wanted: Vec<&str> =
            if self.wanted.is_empty() { vec!["1.1"] } else { self.wanted.iter().map(String::as_str).collect() };
        let entries = self.with_conn(true, |c| {
            let r = c
                .ldap
                .with_search_options(SearchOptions::new().sizelimit(2))
                .with_timeout(timeout)
                .search(&self.opts.base, self.opts.scope, &filter, &wanted)
                .map_err(|e| failure(&e, timeout))?;
            let ldap3::SearchResult(entries, res) = r;
            match res.rc {
                RC_SUCCESS => Ok(entries),
                // more than one entry (or a server limit below 2): never the first of them
                RC_SIZE_LIMIT => Err(Failure {
                    cause: format!(
                        "more than one entry for user \"{}\" (filter {filter}; size limit exceeded)",
                        protocol::printable(q.user.as_bytes(), 64)
                    ),
                    retry: false,
                }),
                rc => Err(Failure { cause: format!("search: {}", rc_text(rc, &res.text)), retry: false }),
            }
        })?;
        let user = || protocol::printable(q.user.as_bytes(), 64);
        if entries.len() > 1 {
            return Err(format!("more than one entry for user \"{}\" (filter {filter})", user()));
        }
        let Some(entry) = entries.into_iter().next() else { return Ok(None) };
        let entry = SearchEntry::construct(entry);
        let mut fields = entry_fields(&entry, &self.opts.attrs);
        if fields.iter().any(|(f, v)| *f == "password" && v.is_none()) {
            // not "wrong password": most often the service account may not read it
            let attr = self.opts.attrs.iter().find(|(f, _)| f == "password").map_or("", |(_, a)| a.as_str());
            return Err(format!(
                "entry \"{}\" for user \"{}\" has no readable {attr} (may the service account read it?)",
                escape_controls(&entry.dn),
                user()
            ));
        }
        if self.opts.mode == Mode::Bind {
            // replaced after the bind
            fields.push(("password", Some(NO_PASSWORD.to_string())));
        }
        let mut account = map_fields(fields.iter().map(|(k, v)| (*k, v.as_deref()))).map_err(|e| {
            format!("entry \"{}\" for user \"{}\": {}", escape_controls(&entry.dn), user(), escape_controls(&e))
        })?;
        if account.name.is_empty() {
            account.name = q.user.to_string();
        }
        Ok(Some((entry.dn, account)))
    }

    /// [`bind`](Self::bind), unless the directory refused this DN with this password within
    /// [`REFUSED_TTL`]: then refused again without asking it.
    fn bind_once(&self, dn: &str, password: &str) -> Result<BindVerdict, String> {
        let tag = crate::shm::keyed_hash(&self.refused_key, &[dn.as_bytes(), password.as_bytes()]);
        if lock(&self.refused).get(&tag).is_some_and(|t| t.elapsed() < REFUSED_TTL) {
            return Ok(BindVerdict::Refused);
        }
        let v = self.bind(dn, password)?;
        if matches!(v, BindVerdict::Refused) {
            let mut m = lock(&self.refused);
            if m.len() >= REFUSED_MAX {
                m.retain(|_, t| t.elapsed() < REFUSED_TTL);
                if m.len() >= REFUSED_MAX {
                    if let Some(k) = m.keys().next().copied() {
                        m.remove(&k);
                    }
                }
            }
            m.insert(tag, Instant::now());
        }
        Ok(v)
    }

    /// A simple bind as `dn` with the client's password, on a bind connection.
    fn bind(&self, dn: &str, password: &str) -> Result<BindVerdict, String> {
        let timeout = self.opts.query_timeout;
        self.with_conn(false, |c| {
            let r = c.ldap.with_timeout(timeout).simple_bind(dn, password).map_err(|e| failure(&e, timeout))?;
            match r.rc {
                RC_SUCCESS => Ok(BindVerdict::Accepted),
                RC_INVALID_CREDENTIALS => Ok(BindVerdict::Refused),
                rc => Err(Failure { cause: format!("bind as \"{dn}\": {}", rc_text(rc, &r.text)), retry: false }),
            }
        })
    }

    fn lookup_inner(&self, q: &Query<'_>) -> Result<Option<Account>, String> {
        let found = self.search(q)?;
        if self.opts.mode == Mode::Password {
            return Ok(found.map(|(_, a)| a));
        }
        let password = q.password.and_then(|p| std::str::from_utf8(p).ok()).filter(|p| !p.is_empty());
        let Some((dn, mut account)) = found else {
            // an unknown user costs a round trip too: a bind the directory refuses (a DN of its
            // own, that does not exist under the base), remembered as a known user's refusal
            // is, so that a repeated password is answered alike; its answer is not used
            if let Some(p) = password {
                let dn = format!("cn={},cn=mail-auth-no-such-user,{}", ldap3::dn_escape(q.user), self.opts.base);
                let _ = self.bind_once(&dn, p);
            }
            return Ok(None);
        };
        // no usable password (none given, empty, not UTF-8): never a bind (an empty password
        // would be an unauthenticated bind, which many servers accept)
        let verdict = match password {
            Some(p) => self.bind_once(&dn, p)?,
            None => BindVerdict::Refused,
        };
        let stored = match (verdict, password) {
            (BindVerdict::Accepted, Some(p)) => scheme::hash_password(scheme::HashKind::Ssha512, p.as_bytes()),
            _ => {
                let mut random = [0u8; 32];
                getrandom::getrandom(&mut random).map_err(|e| format!("random: {e}"))?;
                scheme::hash_password(scheme::HashKind::Ssha512, &random)
            }
        };
        account.password = stored.map_err(|e| format!("hash: {e}"))?;
        Ok(Some(account))
    }
}

/// The values of `attr` in `entry` (attribute names are case-insensitive; a value that is not
/// UTF-8 is taken as lossy text), and those of its subtypes with options (`description;lang-en`:
/// asking for `description` returns them, RFC 4512 §2.5.2). Not seen, a restriction held in one
/// (`networks`, `protocols`, `enabled`) would have left the account unrestricted. The name's
/// own values first, then the subtypes' in the order of their names.
fn attr_values(entry: &SearchEntry, attr: &str) -> Vec<String> {
    let is = |k: &str| {
        k.eq_ignore_ascii_case(attr)
            || (k.len() > attr.len() && k.as_bytes()[attr.len()] == b';' && k[..attr.len()].eq_ignore_ascii_case(attr))
    };
    let mut found: Vec<(bool, &str, Vec<String>)> = entry
        .attrs
        .iter()
        .filter(|(k, _)| is(k))
        .map(|(k, v)| (k.len() != attr.len(), k.as_str(), v.clone()))
        .chain(entry.bin_attrs.iter().filter(|(k, _)| is(k)).map(|(k, v)| {
            (k.len() != attr.len(), k.as_str(), v.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect())
        }))
        .collect();
    found.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    found.into_iter().flat_map(|(_, _, v)| v).collect()
}

fn failure(e: &ldap3::LdapError, timeout: Duration) -> Failure {
    match e {
        // the connection's state is unknown: dropped, not retried
        ldap3::LdapError::Timeout { .. } => {
            Failure { cause: format!("timed out after {} ms", timeout.as_millis()), retry: false }
        }
        ldap3::LdapError::FilterParsing => Failure { cause: "invalid filter".into(), retry: false },
        e => Failure { cause: text(e), retry: true },
    }
}

fn text(e: &ldap3::LdapError) -> String {
    escape_controls(&e.to_string())
}

fn rc_text(rc: u32, text: &str) -> String {
    let name = match rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        8 => "strongerAuthRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        _ => "",
    };
    let text = escape_controls(text);
    match (name, text.is_empty()) {
        ("", true) => format!("result code {rc}"),
        ("", false) => format!("result code {rc} ({text})"),
        (n, true) => format!("{n} ({rc})"),
        (n, false) => format!("{n} ({rc}): {text}"),
    }
}

impl Store for LdapStore {
    fn lookup(&self, q: &Query<'_>) -> Result<Option<Account>, StoreError> {
        // the ldap3 crate panics on a malformed entry from the server: a store error here
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.lookup_inner(q)))
            .unwrap_or_else(|_| Err("malformed answer from the server".into()));
        self.health.answer(&self.events, &self.desc, r.map(Ok))
    }

    super::sql_server::network_store_common!();

    fn shared_timing_template(&self) -> Option<std::sync::Arc<str>> {
        (self.opts.mode == Mode::Bind).then(|| self.bind_template.clone())
    }

    fn verdicts_cacheable(&self) -> bool {
        self.opts.mode != Mode::Bind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Method, Protocol};

    fn q<'a>(user: &'a str, password: Option<&'a [u8]>) -> Query<'a> {
        Query { user, protocol: Protocol::Imap, method: Method::Plain, client_ip: None, password }
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The scope names the servers, base, scope, filter, mode, service DN and attributes,
    /// never the service password.
    #[test]
    fn scope_is_what_finds_the_entry() {
        let d = crate::testutil::TempDir::new("ldapscope");
        let (pw, pw2) = (d.join("pw"), d.join("pw2"));
        std::fs::write(&pw, "s3cret-pw\n").unwrap();
        std::fs::write(&pw2, "other-pw\n").unwrap();
        let scope = |a: &[&str], attrs: &[&str]| {
            LdapStore::new(parse_options(&args(a), &args(attrs)).unwrap()).unwrap().scope().into_owned()
        };
        let url = "ldap://127.0.0.1:389";
        let base = scope(&[url, "base=ou=a,dc=example"], &[]);
        assert!(base.starts_with("ldap \"ldap://127.0.0.1:389\" #"), "{base}");
        assert_eq!(base, scope(&[url, "base=ou=a,dc=example"], &[]), "stable");
        let (pw, pw2) =
            (format!("bind_password_file={}", pw.display()), format!("bind_password_file={}", pw2.display()));
        let svc = scope(&[url, "base=ou=a,dc=example", "bind_dn=cn=svc", &pw], &[]);
        assert_ne!(base, svc, "the service DN (what it may read)");
        assert_eq!(svc, scope(&[url, "base=ou=a,dc=example", "bind_dn=cn=svc", &pw2], &[]), "no password");
        assert_ne!(svc, scope(&[url, "base=ou=a,dc=example", "bind_dn=cn=other", &pw], &[]));
        assert!(!svc.contains("s3cret"));
        for (a, attrs) in [
            (&[url, "base=ou=b,dc=example"][..], &[][..]),
            (&["ldap://127.0.0.2:389", "base=ou=a,dc=example"], &[]),
            (&[url, "ldap://127.0.0.2", "base=ou=a,dc=example"], &[]),
            (&[url, "base=ou=a,dc=example", "scope=one"], &[]),
            (&[url, "base=ou=a,dc=example", "filter=(mail=%u)"], &[]),
            (&[url, "base=ou=a,dc=example", "mode=password"], &[]),
            (&[url, "base=ou=a,dc=example"], &["enabled=active"]),
        ] {
            assert_ne!(base, scope(a, attrs), "{a:?} {attrs:?}");
        }
    }

    #[test]
    fn filter_escapes_the_user() {
        let f = "(&(objectClass=inetOrgPerson)(uid=%u))";
        assert_eq!(filter_for(f, &q("alice", None)), "(&(objectClass=inetOrgPerson)(uid=alice))");
        assert_eq!(filter_for(f, &q("*", None)), "(&(objectClass=inetOrgPerson)(uid=\\2a))");
        assert_eq!(
            filter_for(f, &q("a)(uid=*))(|(uid=*", None)),
            "(&(objectClass=inetOrgPerson)(uid=a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a))"
        );
        assert_eq!(filter_for("(uid=%u)", &q("a\\b\0c", None)), "(uid=a\\5cb\\00c)");
        assert_eq!(
            filter_for("(&(uid=%n)(dc=%d)(p=%s)(x=%%))", &q("bob@ex.org", None)),
            "(&(uid=bob)(dc=ex.org)(p=imap)(x=%))"
        );
    }

    #[test]
    fn options() {
        let o = parse_options(
            &args(&["ldap://127.0.0.1:1 ldap://127.0.0.2:2", "base=dc=example,dc=org", "scope=one", "mode=password"]),
            &args(&["server=mailHost"]),
        )
        .unwrap();
        assert_eq!(o.urls, ["ldap://127.0.0.1:1", "ldap://127.0.0.2:2"]);
        assert_eq!(o.base, "dc=example,dc=org");
        assert_eq!(o.scope, Scope::OneLevel);
        assert_eq!(
            o.attrs,
            [("server".to_string(), "mailHost".to_string()), ("password".into(), "userPassword".into())]
        );
        let base = ["ldap://h", "base=dc=x"];
        for (bad, attrs) in [
            (&["base=dc=x"][..], &[][..]),
            (&["ldap://h"][..], &[][..]),
            (&["http://h", "base=dc=x"][..], &[][..]),
            (&["ldap://h/dc=x", "base=dc=x"][..], &[][..]),
            (&["ldap://[zz]:389", "base=dc=x"][..], &[][..]),
            (&["ldap://::1:389", "base=dc=x"][..], &[][..]),
            (&["ldap://h:0", "base=dc=x"][..], &[][..]),
            (&[base[0], base[1], "filter=(uid=alice)"][..], &[][..]),
            (&[base[0], base[1], "filter=(uid=%u"][..], &[][..]),
            (&[base[0], base[1], "filter=uid=%u"][..], &[][..]),
            (&[base[0], base[1], "filter=(uid=%x)"][..], &[][..]),
            (&[base[0], base[1], "scope=deep"][..], &[][..]),
            (&[base[0], base[1], "mode=compare"][..], &[][..]),
            (&[base[0], base[1], "bind_dn=cn=x"][..], &[][..]),
            (&[base[0], base[1], "ssl_ca=/etc/ssl/ca.pem"][..], &[][..]),
            (&["ldaps://h", "base=dc=x", "starttls=on"][..], &[][..]),
            // a failover from a TLS server to one in clear
            (&["ldaps://h ldap://g", "base=dc=x", "ssl_ca=/etc/ssl/ca.pem"][..], &[][..]),
            (&["ldap://g ldaps://h", "base=dc=x"][..], &[][..]),
            (&[base[0], base[1], "pool=0"][..], &[][..]),
            (&[base[0], base[1], "bogus=1"][..], &[][..]),
            (&base[..], &["password=userPassword"][..]),
            (&base[..], &["No-Pe=mail"][..]),
            (&base[..], &["server=mail host"][..]),
            (&base[..], &["server=a", "server=b"][..]),
        ] {
            assert!(parse_options(&args(bad), &args(attrs)).is_err(), "{bad:?} {attrs:?}");
        }
    }

    #[test]
    fn a_dead_server_is_a_store_error() {
        let mut o = parse_options(&args(&["ldap://127.0.0.1:1 ldap://127.0.0.1:2", "base=dc=x"]), &[]).unwrap();
        o.connect_timeout = Duration::from_millis(300);
        let s = LdapStore::new(o).unwrap();
        assert!(s.try_lookup(&q("u", Some(b"p"))).is_none(), "never on the event loop");
        let e = s.lookup(&q("u", Some(b"p"))).unwrap_err();
        assert!(e.cause.contains("cannot connect") && e.cause.contains("127.0.0.1:2"), "{e}");
        let _ = s.lookup(&q("u", Some(b"p"))).unwrap_err();
        assert_eq!(s.take_notices().len(), 1, "the failure logged once");
    }

    #[test]
    fn an_attribute_is_read_with_its_subtypes() {
        let mut e = SearchEntry { dn: "uid=alice".into(), attrs: Default::default(), bin_attrs: Default::default() };
        e.attrs.insert("Description;lang-en".into(), vec!["10.0.0.0/8".into()]);
        e.attrs.insert("descriptionx".into(), vec!["not it".into()]);
        e.attrs.insert("description".into(), vec!["192.0.2.0/24".into()]);
        e.bin_attrs.insert("description;binary".into(), vec![b"2001:db8::/32".to_vec()]);
        assert_eq!(attr_values(&e, "DESCRIPTION"), ["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(attr_values(&e, "descript"), Vec::<String>::new());
    }

    #[test]
    fn dovecots_network_fields_take_every_value() {
        // one network a value: before, each value was a field of its own, and the row mapping
        // refused the second as the restriction given twice (every login a temporary failure)
        let mut e = SearchEntry { dn: "uid=alice".into(), attrs: Default::default(), bin_attrs: Default::default() };
        e.attrs.insert("ipNetworks".into(), vec!["10.0.0.0/8".into(), "192.0.2.0/24".into()]);
        e.attrs.insert("realNets".into(), vec!["127.0.0.0/8".into(), "::1/128".into()]);
        e.attrs.insert("userPassword".into(), vec!["{PLAIN}x".into()]);
        let o = parse_options(
            &args(&["ldap://127.0.0.1", "base=dc=x"]),
            &args(&["allow_nets=ipNetworks", "allow_real_nets=realNets"]),
        )
        .unwrap();
        let mut fields = entry_fields(&e, &o.attrs);
        fields.push(("password", Some(NO_PASSWORD.to_string()))); // mode=bind, as the lookup adds it
        let a = map_fields(fields.iter().map(|(k, v)| (*k, v.as_deref()))).unwrap();
        assert_eq!(a.networks.unwrap().len(), 2);
        assert_eq!(a.real_networks.unwrap().len(), 2);
        // the module's name and Dovecot's for one field: refused at configuration
        assert!(
            parse_options(&args(&["ldap://127.0.0.1", "base=dc=x"]), &args(&["networks=a", "allow_nets=b"])).is_err()
        );
    }
}

#[cfg(test)]
mod live {
    use super::*;
    use crate::protocol::{Method, Protocol};

    /// `MAIL_AUTH_LDAP_URL=ldap://127.0.0.1:19389 cargo test --lib ldap::live -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing() {
        let url = std::env::var("MAIL_AUTH_LDAP_URL").unwrap();
        let o = parse_options(&[url, "base=ou=people,dc=example,dc=org".into()], &[]).unwrap();
        let s = LdapStore::new(o).unwrap();
        let t = std::time::Instant::now();
        for i in 0..50 {
            let user = format!("u{i}");
            let pw = format!("pw-{i}");
            let q = Query {
                user: &user,
                protocol: Protocol::Imap,
                method: Method::Plain,
                client_ip: None,
                password: Some(pw.as_bytes()),
            };
            assert!(s.lookup(&q).unwrap().is_some());
        }
        eprintln!("50 lookups: {:?}", t.elapsed());
    }
}
