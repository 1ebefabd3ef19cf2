//! Directives and the location configuration.
//!
//! Each directive is declared once, in the `directives!` table below: its name, where it may
//! appear and how many arguments it takes, the setter that parses its arguments, and the
//! [`Directives`] field the setter fills with that field's merge rule. nginx's command table
//! ([`COMMANDS`], its size included), the struct and the inheritance are generated from it.
//! [`merge_loc_conf`] then gives a `mail_auth` location the defaults of `crate::config` and builds
//! its engine (opening the store, so that `nginx -t` reports problems).

use std::ffi::{c_char, c_void};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_2MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS,
    NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_CONF_TAKE2, NGX_CONF_TAKE23, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_SRV_CONF, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use ngx::{ngx_conf_log_error, ngx_string};

use super::zone::{self, Zone};
use super::{bridge, conf_err, conf_ok, guard, offload, util};
use crate::cidr::Cidr;
use crate::config::{
    self, AuthConfig, Backend, CacheSettings, Listener, LookupConcurrency, MasterUser, StoreConf, VerifyConcurrency,
};
use crate::engine::{Engine, Level, Region, SharedMemory};
use crate::limiter::{self, LimitConfig};
use crate::oauth::{OauthConfig, Verifier};
use crate::protocol::Protocol;
use crate::realip::TrustedProxies;
use crate::store::{self, NoticeLevel, Store};

/// The status counters' zone, added by the first `mail_auth` or `mail_auth_status`.
const STATS_ZONE: &str = config::STATUS_ZONE;
const STATS_ZONE_SIZE: usize = 64 * 1024;

/// What a location answers, and the status counters' zone it counts into.
#[derive(Clone, Copy)]
pub enum Content {
    /// `mail_auth;`
    MailAuth(Zone),
    /// `mail_auth_status;`
    Status(Zone),
    /// `mail_auth_json;`: the Nauthilus-compatible JSON API (Dovecot's Lua passdb/userdb).
    Json(Zone),
    /// `mail_auth_limit_bans;`: the limiter's live bans, listed and lifted.
    Bans,
}

/// `mail_auth_cache zone=NAME:SIZE [ttl=T] [negative_ttl=T]`
#[derive(Clone, Copy)]
pub struct CacheConf {
    pub zone: Zone,
    pub settings: CacheSettings,
}

/// `mail_auth_limit zone=NAME:SIZE [ip=RATE] [user=RATE] [ban=TIME] [redis=NAME]`
#[derive(Clone)]
pub struct LimitConf {
    pub zone: Zone,
    pub cfg: LimitConfig,
    /// The zone's name (the shared store's counters are per zone name).
    pub name: String,
    /// `redis=NAME`: the fleet's shared budget in that `mail_auth_redis`.
    pub redis: Option<String>,
}

/// `mail_auth_redis NAME ...` (http level): the shared store, made once and shared by the
/// locations whose `mail_auth_limit` names it.
#[derive(Clone)]
pub struct RedisDef {
    pub name: String,
    pub backend: Arc<dyn crate::fleet::Backend>,
}

/// The shared limit of a location's `mail_auth_limit redis=NAME` (`None` without `redis=`).
pub fn fleet_of(d: &Directives) -> Result<Option<crate::fleet::SharedLimit>, String> {
    let Some(l) = &d.limit else { return Ok(None) };
    let Some(name) = &l.redis else { return Ok(None) };
    let def = d
        .redis
        .iter()
        .flatten()
        .find(|r| r.name == *name)
        .ok_or_else(|| format!("\"mail_auth_limit\": no \"mail_auth_redis {name}\" at the http level"))?;
    Ok(Some(crate::fleet::SharedLimit { backend: Arc::clone(&def.backend), cfg: l.cfg, scope: l.name.clone() }))
}

/// `mail_auth_backend` slots: imap, pop3, smtp (submission), mx (SMTP without AUTH).
const BACKENDS: usize = 4;
const MX: usize = 3;

/// A field's merge rule: `inherit` takes the enclosing level's value when this level has none;
/// `own` belongs to its location alone.
trait Inherit {
    fn inherit(&mut self, parent: &Self);
}

impl<T: Clone> Inherit for Option<T> {
    fn inherit(&mut self, parent: &Self) {
        if self.is_none() {
            self.clone_from(parent);
        }
    }
}

impl<T: Inherit, const N: usize> Inherit for [T; N] {
    fn inherit(&mut self, parent: &Self) {
        for (mine, theirs) in self.iter_mut().zip(parent) {
            mine.inherit(theirs);
        }
    }
}

macro_rules! merge_rule {
    (inherit, $mine:expr, $theirs:expr) => {
        Inherit::inherit(&mut $mine, &$theirs)
    };
    (own, $mine:expr, $theirs:expr) => {};
}

/// `field: type, rule { "directive" contexts | arguments => setter; ... }`: each directive's
/// setter gets its arguments and `&mut` the field.
macro_rules! directives {
    ($(
        $(#[$doc:meta])*
        $field:ident: $ty:ty, $rule:ident {
            $($name:literal $kind:expr => $set:path;)+
        }
    )*) => {
        /// The values the directives set at one level (http, server, location); `None` until set.
        #[derive(Default)]
        pub struct Directives {
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Directives {
            /// Inherit-if-unset from the enclosing level, field by field.
            fn inherit(&mut self, parent: &Directives) {
                $(merge_rule!($rule, self.$field, parent.$field);)*
            }
        }

        const DIRECTIVES: &[Directive] = &[
            $($(Directive { name: ngx_string!($name), kind: $kind, set: |a, d| $set(a, &mut d.$field) },)+)*
        ];
    };
}

const LOC: u32 = NGX_HTTP_LOC_CONF;
const ANY: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

directives! {
    /// `mail_auth;` / `mail_auth_status;`: what this location answers.
    content: Option<Content>, own {
        "mail_auth" LOC | NGX_CONF_NOARGS => set_mail_auth;
        "mail_auth_status" LOC | NGX_CONF_NOARGS => set_status;
        "mail_auth_json" LOC | NGX_CONF_NOARGS => set_json;
        "mail_auth_limit_bans" LOC | NGX_CONF_NOARGS => set_bans;
    }
    /// `mail_auth_json`: the `Auth-Status` of a disabled account.
    json_disabled: Option<String>, inherit {
        "mail_auth_json_disabled_message" ANY | NGX_CONF_TAKE1 => set_json_disabled;
    }
    /// Where the users are (a new kind of store: a `StoreConf` variant and its directive here).
    store: Option<StoreConf>, inherit {
        "mail_auth_passwd_file" ANY | NGX_CONF_TAKE1 => set_passwd_file;
        "mail_auth_sqlite" ANY | NGX_CONF_TAKE1 => set_sqlite;
        "mail_auth_sql" ANY | NGX_CONF_2MORE => set_sql;
        "mail_auth_ldap" ANY | NGX_CONF_2MORE => set_ldap;
    }
    /// `FIELD=ATTRIBUTE` pairs of the LDAP store.
    ldap_attrs: Option<Vec<String>>, inherit {
        "mail_auth_ldap_attrs" ANY | NGX_CONF_1MORE => set_ldap_attrs;
    }
    sql_query: Option<String>, inherit {
        "mail_auth_sql_query" ANY | NGX_CONF_TAKE1 => set_sqlite_query;
    }
    sqlite_query: Option<String>, inherit {
        "mail_auth_sqlite_query" ANY | NGX_CONF_TAKE1 => set_sqlite_query;
    }
    /// The app passwords of a passwd-file store.
    app_passwords: Option<String>, inherit {
        "mail_auth_app_passwords" ANY | NGX_CONF_TAKE1 => set_app_passwords;
    }
    /// The app passwords query of a SQLite store.
    sqlite_app_query: Option<String>, inherit {
        "mail_auth_sqlite_app_query" ANY | NGX_CONF_TAKE1 => set_sqlite_query;
    }
    /// Protocols on which main passwords are not accepted (only app passwords); empty: `off`.
    app_only: Option<Vec<Protocol>>, inherit {
        "mail_auth_app_only" ANY | NGX_CONF_1MORE => set_app_only;
    }
    /// Rows of the SQLite store each worker keeps (validated by the file's change counter).
    sqlite_cache_rows: Option<usize>, inherit {
        "mail_auth_sqlite_cache_rows" ANY | NGX_CONF_TAKE1 => set_sqlite_cache_rows;
    }
    /// `mail_auth_json`'s list-accounts from SQLite.
    sqlite_accounts_query: Option<String>, inherit {
        "mail_auth_sqlite_accounts_query" ANY | NGX_CONF_TAKE1 => set_sqlite_query;
    }
    /// imap, pop3, smtp, mx: each inherited on its own.
    backends: [Option<Backend>; BACKENDS], inherit {
        "mail_auth_backend" ANY | NGX_CONF_TAKE2 => set_backend;
    }
    relay_domains: Option<Vec<String>>, inherit {
        "mail_auth_relay_domains" ANY | NGX_CONF_1MORE => set_relay_domains;
    }
    /// Balancers whose PROXY-protocol address is the client; repeated at one level: added up.
    real_ip_from: Option<TrustedProxies>, inherit {
        "mail_auth_real_ip_from" ANY | NGX_CONF_1MORE => set_real_ip_from;
    }
    master_user: Option<MasterUser>, inherit {
        "mail_auth_master_user" ANY | NGX_CONF_TAKE23 => set_master_user;
    }
    /// Protocols whose cleartext logins need TLS.
    require_tls: Option<Vec<Protocol>>, inherit {
        "mail_auth_require_tls" ANY | NGX_CONF_1MORE => set_require_tls;
    }
    /// Declared listeners: a level that declares any replaces the enclosing level's list.
    listeners: Option<Vec<Listener>>, inherit {
        "mail_auth_listener" ANY | NGX_CONF_1MORE => set_listener;
    }
    listener_required: Option<bool>, inherit {
        "mail_auth_listener_required" ANY | NGX_CONF_FLAG => set_listener_required;
    }
    fail_wait: Option<u32>, inherit {
        "mail_auth_fail_wait" ANY | NGX_CONF_TAKE1 => set_fail_wait;
    }
    basic_header: Option<bool>, inherit {
        "mail_auth_basic_header" ANY | NGX_CONF_FLAG => set_basic_header;
    }
    /// The operator's word on the CVE-2026-27651 fix of this nginx (default: the build's).
    auth_wait_fixed: Option<bool>, inherit {
        "mail_auth_nginx_auth_wait_fixed" ANY | NGX_CONF_FLAG => set_auth_wait_fixed;
    }
    log_level: Option<Level>, inherit {
        "mail_auth_log_level" ANY | NGX_CONF_TAKE1 => set_log_level;
    }
    /// A pool name, or "off".
    thread_pool: Option<String>, inherit {
        "mail_auth_thread_pool" ANY | NGX_CONF_TAKE1 => set_thread_pool;
    }
    cache: Option<CacheConf>, inherit {
        "mail_auth_cache" ANY | NGX_CONF_1MORE => set_cache;
    }
    limit: Option<LimitConf>, inherit {
        "mail_auth_limit" ANY | NGX_CONF_1MORE => set_limit;
    }
    /// Shared stores of the fleet's limiter, by name (http level only).
    redis: Option<Vec<RedisDef>>, inherit {
        "mail_auth_redis" NGX_HTTP_MAIN_CONF | NGX_CONF_2MORE => set_redis;
    }
    /// Networks the limiter never counts nor refuses.
    limit_exempt: Option<Vec<Cidr>>, inherit {
        "mail_auth_limit_exempt" ANY | NGX_CONF_1MORE => set_limit_exempt;
    }
    concurrency: Option<VerifyConcurrency>, inherit {
        "mail_auth_verify_concurrency" ANY | NGX_CONF_TAKE12 => set_verify_concurrency;
    }
    lookups: Option<LookupConcurrency>, inherit {
        "mail_auth_lookup_concurrency" ANY | NGX_CONF_TAKE12 => set_lookup_concurrency;
    }
    /// OAuth 2.0 bearer tokens (SASL XOAUTH2/OAUTHBEARER, sent by freenginx 1.27.1+).
    oauth: Option<OauthConfig>, inherit {
        "mail_auth_oauth2" ANY | NGX_CONF_1MORE => set_oauth2;
    }
}

/// This module's location configuration: what the directives set, and for a `mail_auth`
/// location what `merge_loc_conf` built from it.
#[derive(Default)]
pub struct LocConf {
    pub directives: Directives,
    pub engine: Option<Arc<Engine>>,
    /// The thread pool the engine's jobs go to.
    pub pool: Option<offload::PoolRef>,
    /// The names of this location's server's `server_name` (kept for every location; read by
    /// `mail_auth` and `mail_auth_limit_bans`): the hosts their requests may name besides
    /// addresses and `localhost` ([`util::foreign_host`]).
    pub host_names: Vec<Box<[u8]>>,
}

impl LocConf {
    /// `mail_auth;` in this location.
    pub fn is_mail_auth(&self) -> bool {
        matches!(self.directives.content, Some(Content::MailAuth(_)))
    }

    /// The status counters' zone of a `mail_auth` or `mail_auth_status` location.
    pub fn stats(&self) -> Option<Zone> {
        match self.directives.content? {
            Content::MailAuth(z) | Content::Status(z) | Content::Json(z) => Some(z),
            Content::Bans => None,
        }
    }

    pub fn basic_header(&self) -> bool {
        self.directives.basic_header()
    }

    /// nginx's level for the decision line.
    pub fn log_level(&self) -> ngx_uint_t {
        util::ngx_level(self.directives.log_level.unwrap_or(config::DEFAULT_LOG_LEVEL)) as ngx_uint_t
    }
}

impl Directives {
    fn basic_header(&self) -> bool {
        self.basic_header == Some(true)
    }
}

/// One directive: what nginx needs to dispatch it, and its setter.
struct Directive {
    /// NUL-terminated (`ngx_string!`): nginx compares names with strcmp.
    name: ngx_str_t,
    /// Contexts and number of arguments (`NGX_HTTP_*_CONF | NGX_CONF_*`).
    kind: u32,
    set: fn(&Args, &mut Directives) -> Result<(), String>,
}

const N_COMMANDS: usize = DIRECTIVES.len() + 1;

/// nginx's command table, made from `DIRECTIVES` (and the closing null command). Every entry
/// calls `set_directive`, which finds the directive by its index in `offset`.
pub static mut COMMANDS: [ngx_command_t; N_COMMANDS] = command_table();

const fn command_table() -> [ngx_command_t; N_COMMANDS] {
    let mut table = [ngx_command_t::empty(); N_COMMANDS];
    let mut i = 0;
    while i < DIRECTIVES.len() {
        let d = &DIRECTIVES[i];
        table[i] = ngx_command_t {
            name: d.name,
            type_: d.kind as ngx_uint_t,
            set: Some(set_directive),
            conf: NGX_HTTP_LOC_CONF_OFFSET,
            offset: i,
            post: std::ptr::null_mut(),
        };
        i += 1;
    }
    table
}

/// A directive's arguments after its name, as UTF-8 strings (nginx has checked their number).
pub struct Args<'a> {
    cf: *mut ngx_conf_t,
    name: &'static str,
    v: Vec<&'a str>,
}

impl Args<'_> {
    fn new(cf: *mut ngx_conf_t, name: &'static ngx_str_t) -> Result<Self, String> {
        // SAFETY: nginx calls directive handlers with `cf->args` holding the directive name and
        // its arguments as ngx_str_t values allocated from the configuration pool.
        let raw = unsafe { (*(*cf).args).as_slice::<ngx_str_t>() };
        let v = raw
            .iter()
            .skip(1)
            .map(|s| std::str::from_utf8(s.as_bytes()).map_err(|_| "argument is not valid UTF-8".to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Args { cf, name: std::str::from_utf8(name.as_bytes()).unwrap_or("mail_auth"), v })
    }

    fn duplicate(&self) -> String {
        format!("\"{}\" directive is duplicate", self.name)
    }

    /// Fills an unset slot with what `parse` makes of the arguments; the directive a second time
    /// at the same level is an error.
    fn once<T>(&self, slot: &mut Option<T>, parse: impl FnOnce() -> Result<T, String>) -> Result<(), String> {
        if slot.is_some() {
            return Err(self.duplicate());
        }
        *slot = Some(parse()?);
        Ok(())
    }

    /// Argument `i` as a path, relative ones resolved against nginx's prefix (like
    /// ngx_conf_full_name).
    fn path(&self, i: usize) -> String {
        self.full_path(self.v[i])
    }

    /// A path, relative ones resolved against nginx's prefix.
    fn full_path(&self, p: &str) -> String {
        if p.starts_with('/') {
            return p.to_string();
        }
        // SAFETY: cf->cycle is the cycle being configured; its prefix is a valid ngx_str_t.
        let prefix = unsafe { (*(*self.cf).cycle).prefix.as_bytes() };
        let mut s = String::from_utf8_lossy(prefix).into_owned();
        if !s.is_empty() && !s.ends_with('/') {
            s.push('/');
        }
        s.push_str(p);
        s
    }

    /// `zone=NAME:SIZE` of argument 0.
    fn zone(&self) -> Result<(String, usize), String> {
        config::parse_zone(self.v[0]).map_err(|e| format!("\"{}\": {e}", self.name))
    }

    /// Registers a zone of its own for this directive (another directive's name is refused).
    fn add_zone(&self, (name, size): (String, usize)) -> Result<Zone, String> {
        zone::add(self.cf, &name, size, module_tag())
    }

    /// The `key=value` arguments from `from` on.
    fn key_values(&self, from: usize, known: &[&str]) -> Result<Vec<(&str, &str)>, String> {
        config::key_values(&self.v[from..], known).map_err(|e| format!("\"{}\": {e}", self.name))
    }
}

/// The one handler of every directive in `COMMANDS`: parses the arguments, runs the setter.
extern "C" fn set_directive(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    guard(ngx::core::NGX_CONF_ERROR, || {
        // SAFETY: nginx calls this with one of our COMMANDS, whose offset is the directive's
        // index in DIRECTIVES.
        let Some(d) = DIRECTIVES.get(unsafe { (*cmd).offset }) else {
            return conf_err(cf, "mail_auth: unknown directive");
        };
        // SAFETY: NGX_HTTP_LOC_CONF_OFFSET: nginx passes this module's loc conf.
        let lc = unsafe { loc(conf) };
        match Args::new(cf, &d.name).and_then(|a| (d.set)(&a, &mut lc.directives)) {
            Ok(()) => conf_ok(),
            Err(e) => conf_err(cf, &e),
        }
    })
}

/// # Safety
/// `conf` is this module's location configuration, as nginx passes it to its callbacks.
unsafe fn loc<'a>(conf: *mut c_void) -> &'a mut LocConf {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &mut *(conf as *mut LocConf) }
}

fn module_tag() -> *mut c_void {
    std::ptr::addr_of!(super::ngx_http_mail_auth_module) as *mut c_void
}

type ContentHandler = unsafe extern "C" fn(*mut ngx::ffi::ngx_http_request_t) -> ngx::ffi::ngx_int_t;

/// Makes `handler` the content handler of the location being configured; refused when another
/// module's (`proxy_pass`, `fastcgi_pass`, ...) is set already (one set after this is caught by
/// [`content_handler_kept`]).
fn set_content_handler(cf: *mut ngx_conf_t, handler: ContentHandler) -> Result<(), String> {
    let clcf = NgxHttpCoreModule::location_conf_mut(
        // SAFETY: cf is live during directive processing.
        unsafe { &*cf },
    )
    .ok_or("no http core location configuration")?;
    if clcf.handler.is_some() {
        return Err(OTHER_HANDLER.into());
    }
    clcf.handler = Some(handler);
    Ok(())
}

/// nginx runs one content handler per location, whichever directive set it last.
const OTHER_HANDLER: &str = "\"mail_auth\", \"mail_auth_json\", \"mail_auth_status\" and \"mail_auth_limit_bans\" cannot share a location with another content handler (\"proxy_pass\", \"fastcgi_pass\", \"uwsgi_pass\", \"scgi_pass\", \"grpc_pass\", \"memcached_pass\", another module's): whichever directive came last would answer, and another's answer would reach nginx mail as this module's";

/// The module's own handler for `content`.
fn handler_of(content: Content) -> ContentHandler {
    match content {
        Content::MailAuth(_) => super::handler::content_handler,
        Content::Status(_) => super::status::content_handler,
        Content::Json(_) => super::json::content_handler,
        Content::Bans => super::status::bans_handler,
    }
}

/// Whether the location being merged (an `if` block of one of the module's locations:
/// `if_block`) still runs the module's handler for `content`: no other module set its own
/// there after the module's directive (in either order, `mail_auth; proxy_pass ...;` set
/// nginx's one handler twice), and an `if` block sets none (nginx then runs the location's).
/// nginx merges the static modules (proxy, fastcgi, ...) before this one (loaded by
/// load_module), so the handlers they set in their directives or merge are seen here.
fn content_handler_kept(cf: *mut ngx_conf_t, content: Content, if_block: bool) -> Result<(), String> {
    // SAFETY: cf is live during the merge; its context is the location being merged.
    let Some(clcf) = NgxHttpCoreModule::location_conf(unsafe { &*cf }) else { return Ok(()) };
    // compared by address (the module's handlers are plain non-generic functions)
    let ours = handler_of(content) as usize;
    match clcf.handler {
        Some(h) if h as usize == ours => Ok(()),
        None if if_block => Ok(()),
        _ => Err(OTHER_HANDLER.into()),
    }
}

const SHARED_LOCATION: &str =
    "\"mail_auth\", \"mail_auth_json\", \"mail_auth_status\" and \"mail_auth_limit_bans\" cannot share a location";

fn set_mail_auth(a: &Args, content: &mut Option<Content>) -> Result<(), String> {
    match content {
        Some(Content::MailAuth(_)) => return Err(a.duplicate()),
        Some(_) => return Err(SHARED_LOCATION.into()),
        None => {}
    }
    *content = Some(Content::MailAuth(zone::shared(a.cf, STATS_ZONE, STATS_ZONE_SIZE, module_tag())?));
    set_content_handler(a.cf, super::handler::content_handler)
}

fn set_status(a: &Args, content: &mut Option<Content>) -> Result<(), String> {
    match content {
        Some(Content::Status(_)) => return Err(a.duplicate()),
        Some(_) => return Err(SHARED_LOCATION.into()),
        None => {}
    }
    *content = Some(Content::Status(zone::shared(a.cf, STATS_ZONE, STATS_ZONE_SIZE, module_tag())?));
    set_content_handler(a.cf, super::status::content_handler)
}

fn set_bans(a: &Args, content: &mut Option<Content>) -> Result<(), String> {
    match content {
        Some(Content::Bans) => return Err(a.duplicate()),
        Some(_) => return Err(SHARED_LOCATION.into()),
        None => {}
    }
    *content = Some(Content::Bans);
    set_content_handler(a.cf, super::status::bans_handler)
}

fn set_json(a: &Args, content: &mut Option<Content>) -> Result<(), String> {
    match content {
        Some(Content::Json(_)) => return Err(a.duplicate()),
        Some(_) => return Err(SHARED_LOCATION.into()),
        None => {}
    }
    *content = Some(Content::Json(zone::shared(a.cf, STATS_ZONE, STATS_ZONE_SIZE, module_tag())?));
    set_content_handler(a.cf, super::json::content_handler)
}

fn set_json_disabled(a: &Args, msg: &mut Option<String>) -> Result<(), String> {
    a.once(msg, || {
        let m = a.v[0];
        if m.is_empty() || m.bytes().any(|b| b < 0x20 || b == 0x7f) || m.trim() != m {
            return Err(
                "\"mail_auth_json_disabled_message\": an empty text, a control character or leading/trailing spaces"
                    .into(),
            );
        }
        Ok(m.to_string())
    })
}

/// One store per level: the same directive twice is a duplicate, two kinds a conflict.
fn set_store(a: &Args, slot: &mut Option<StoreConf>, store: StoreConf) -> Result<(), String> {
    match slot {
        Some(s) if std::mem::discriminant(s) == std::mem::discriminant(&store) => Err(a.duplicate()),
        Some(_) => Err(
            "only one of \"mail_auth_passwd_file\", \"mail_auth_sqlite\", \"mail_auth_sql\" and \"mail_auth_ldap\" may be used in one location"
                .into(),
        ),
        None => {
            *slot = Some(store);
            Ok(())
        }
    }
}

fn set_passwd_file(a: &Args, store: &mut Option<StoreConf>) -> Result<(), String> {
    // the app passwords file is the one in effect where the store is used (`store_conf`)
    set_store(a, store, StoreConf::PasswdFile { path: a.path(0), apps: None })
}

fn set_sqlite(a: &Args, store: &mut Option<StoreConf>) -> Result<(), String> {
    // the query is the mail_auth_sqlite_query in effect where the store is used (`store_conf`)
    set_store(a, store, StoreConf::Sqlite { path: a.path(0), query: None, rows: None, app_query: None })
}

fn set_app_passwords(a: &Args, path: &mut Option<String>) -> Result<(), String> {
    a.once(path, || Ok(a.path(0)))
}

/// `mail_auth_app_only off | PROTOCOL ...`
fn set_app_only(a: &Args, list: &mut Option<Vec<Protocol>>) -> Result<(), String> {
    a.once(list, || {
        if a.v.len() == 1 && a.v[0] == "off" {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for v in &a.v {
            let p = config::parse_protocol(v).map_err(|e| format!("\"mail_auth_app_only\": {e} (or \"off\")"))?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    })
}

fn set_sql(a: &Args, store: &mut Option<StoreConf>) -> Result<(), String> {
    let driver = match a.v[0].to_ascii_lowercase().as_str() {
        "postgresql" | "postgres" | "pgsql" => "postgresql",
        "mysql" | "mariadb" => "mysql",
        _ => return Err(format!("\"mail_auth_sql\": unknown driver \"{}\" (postgresql, mysql)", a.v[0])),
    };
    let options = a.v[2..]
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k @ ("password_file" | "ssl_ca"), v)) if !v.is_empty() => format!("{k}={}", a.full_path(v)),
            _ => o.to_string(),
        })
        .collect();
    // the query is the mail_auth_sql_query in effect where the store is used (`store_conf`)
    set_store(a, store, StoreConf::Sql { driver: driver.into(), dsn: a.v[1].to_string(), options, query: None })
}

fn set_ldap(a: &Args, store: &mut Option<StoreConf>) -> Result<(), String> {
    let args =
        a.v.iter()
            .map(|o| match o.split_once('=') {
                Some((k @ ("bind_password_file" | "ssl_ca"), v)) if !v.is_empty() => format!("{k}={}", a.full_path(v)),
                _ => o.to_string(),
            })
            .collect();
    // the attribute mapping is the mail_auth_ldap_attrs in effect where the store is used
    set_store(a, store, StoreConf::Ldap { args, attrs: Vec::new() })
}

fn set_ldap_attrs(a: &Args, attrs: &mut Option<Vec<String>>) -> Result<(), String> {
    a.once(attrs, || Ok(a.v.iter().map(|v| v.to_string()).collect()))
}

fn set_sqlite_cache_rows(a: &Args, rows: &mut Option<usize>) -> Result<(), String> {
    a.once(rows, || {
        a.v[0]
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 10_000_000)
            .ok_or_else(|| format!("\"mail_auth_sqlite_cache_rows\": invalid number \"{}\" (0..10000000)", a.v[0]))
    })
}

fn set_sqlite_query(a: &Args, query: &mut Option<String>) -> Result<(), String> {
    a.once(query, || Ok(a.v[0].to_string()))
}

/// The slot of `mail_auth_backend NAME` and its default port.
fn backend_slot(name: &str) -> Result<(usize, u16), String> {
    if name.eq_ignore_ascii_case("mx") {
        return Ok((MX, Protocol::Smtp.default_port()));
    }
    let proto = config::parse_protocol(name)
        .map_err(|e| format!("\"mail_auth_backend\": {e} (or \"mx\" for SMTP without AUTH)"))?;
    let slot = match proto {
        Protocol::Imap => 0,
        Protocol::Pop3 => 1,
        Protocol::Smtp => 2,
    };
    Ok((slot, proto.default_port()))
}

fn set_backend(a: &Args, backends: &mut [Option<Backend>; BACKENDS]) -> Result<(), String> {
    let name = a.v[0];
    let (i, port) = backend_slot(name)?;
    if backends[i].is_some() {
        return Err(format!("duplicate \"mail_auth_backend\" for {name}"));
    }
    let b = config::parse_backend(a.v[1], port).map_err(|e| format!("invalid \"mail_auth_backend\" address {e}"))?;
    backends[i] = Some(b);
    Ok(())
}

fn set_relay_domains(a: &Args, domains: &mut Option<Vec<String>>) -> Result<(), String> {
    a.once(domains, || {
        a.v.iter().map(|d| config::parse_domain(d).map_err(|e| format!("\"mail_auth_relay_domains\": {e}"))).collect()
    })
}

/// nginx's warning for a network written with address bits below its prefix (`allow`,
/// `set_real_ip_from`, `geo` give it too): the rule covers the whole network, which for a typo
/// (`10.0.0.5/3` for `/32`) is far more than the operator listed.
fn warn_host_bits(a: &Args) {
    for v in a.v.iter().filter(|v| Cidr::has_host_bits(v)) {
        let net = Cidr::parse(v).map(|c| c.to_string()).unwrap_or_default();
        ngx_conf_log_error!(
            NGX_LOG_WARN,
            a.cf,
            "low address bits of {v} are meaningless in \"{}\": it covers all of {net}",
            a.name
        );
    }
}

fn set_real_ip_from(a: &Args, trusted: &mut Option<TrustedProxies>) -> Result<(), String> {
    warn_host_bits(a);
    // like set_real_ip_from: each occurrence adds to the list of this level
    trusted
        .get_or_insert_with(TrustedProxies::default)
        .add(&a.v)
        .map_err(|e| format!("\"mail_auth_real_ip_from\": {e}"))
}

fn set_oauth2(a: &Args, oauth: &mut Option<OauthConfig>) -> Result<(), String> {
    a.once(oauth, || {
        crate::oauth::parse_directive(&a.v, |p| a.full_path(p)).map_err(|e| format!("\"mail_auth_oauth2\": {e}"))
    })
}

fn set_master_user(a: &Args, master: &mut Option<MasterUser>) -> Result<(), String> {
    a.once(master, || {
        let mut separator = config::DEFAULT_MASTER_SEPARATOR.to_string();
        for (_, v) in a.key_values(2, &["separator"])? {
            separator = v.to_string();
        }
        let m = MasterUser { name: a.v[0].to_string(), password: a.v[1].to_string(), separator };
        config::check_master_user(&m).map_err(|e| format!("\"mail_auth_master_user\": {e}"))?;
        Ok(m)
    })
}

fn set_require_tls(a: &Args, protocols: &mut Option<Vec<Protocol>>) -> Result<(), String> {
    a.once(protocols, || config::parse_require_tls(&a.v).map_err(|e| format!("\"mail_auth_require_tls\": {e}")))
}

fn set_listener(a: &Args, listeners: &mut Option<Vec<Listener>>) -> Result<(), String> {
    let l = config::parse_listener(&a.v).map_err(|e| format!("\"mail_auth_listener\": {e}"))?;
    let list = listeners.get_or_insert_with(Vec::new);
    if list.iter().any(|o| o.name.eq_ignore_ascii_case(&l.name)) {
        return Err(format!("\"mail_auth_listener\": listener \"{}\" is declared twice", l.name));
    }
    list.push(l);
    Ok(())
}

fn set_listener_required(a: &Args, on: &mut Option<bool>) -> Result<(), String> {
    a.once(on, || {
        config::parse_on_off(a.v[0]).ok_or_else(|| {
            format!("invalid value \"{}\" in \"mail_auth_listener_required\", it must be \"on\" or \"off\"", a.v[0])
        })
    })
}

fn set_fail_wait(a: &Args, wait: &mut Option<u32>) -> Result<(), String> {
    a.once(wait, || config::parse_seconds(a.v[0]).map_err(|e| format!("\"mail_auth_fail_wait\": {e}")))
}

fn set_basic_header(a: &Args, on: &mut Option<bool>) -> Result<(), String> {
    a.once(on, || match a.v[0].to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        v => Err(format!("invalid value \"{v}\" in \"mail_auth_basic_header\", it must be \"on\" or \"off\"")),
    })
}

fn set_auth_wait_fixed(a: &Args, fixed: &mut Option<bool>) -> Result<(), String> {
    a.once(fixed, || match a.v[0].to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        v => Err(format!("invalid value \"{v}\" in \"mail_auth_nginx_auth_wait_fixed\", it must be \"on\" or \"off\"")),
    })
}

/// What the build knows of the CVE-2026-27651 fix in the nginx it was built against (see
/// `config::auth_wait_fixed`): nginx's `NGINX_VER` and `nginx_version` (from nginx-sys, passed
/// on by build.rs), and `MAIL_AUTH_NGINX_AUTH_WAIT_FIXED` if the build was given it.
fn built_auth_wait_fixed() -> (bool, String) {
    let declared = option_env!("MAIL_AUTH_BUILT_AUTH_WAIT_FIXED").and_then(config::parse_flag);
    let number = option_env!("MAIL_AUTH_BUILT_NGINX_VERSION_NUMBER").and_then(|n| n.parse().ok());
    config::auth_wait_fixed(declared, option_env!("MAIL_AUTH_BUILT_NGINX_VER"), number)
}

/// The configuration-time line saying how refused APOP/CRAM-MD5 logins are answered: once per
/// configuration read (`nginx -t`, start, reload), and again for a location that differs.
fn log_auth_wait_fixed(cf: *mut ngx_conf_t, directive: Option<bool>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // the cycle being configured and the last value logged for it (bit 1: logged, bit 0: value)
    static LOGGED: AtomicUsize = AtomicUsize::new(0);
    static VALUE: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: nginx passes merge handlers a live configuration context.
    let cycle = unsafe { (*cf).cycle } as usize;
    let (built, why) = built_auth_wait_fixed();
    let fixed = directive.unwrap_or(built);
    let value = 2 | usize::from(fixed);
    if LOGGED.swap(cycle, Ordering::Relaxed) == cycle && VALUE.swap(value, Ordering::Relaxed) == value {
        return;
    }
    VALUE.store(value, Ordering::Relaxed);
    let from = match directive {
        Some(true) => "\"mail_auth_nginx_auth_wait_fixed on\"",
        Some(false) => "\"mail_auth_nginx_auth_wait_fixed off\"",
        None => "the build",
    };
    if fixed {
        ngx_conf_log_error!(
            NGX_LOG_NOTICE,
            cf,
            "mail_auth: refused APOP/CRAM-MD5 logins get the usual Auth-Wait ({from}: {why})"
        );
    } else {
        ngx_conf_log_error!(NGX_LOG_NOTICE, cf, "mail_auth: refused APOP/CRAM-MD5 logins get \"Auth-Wait: 0\", nginx closes the session ({from}: {why}; set \"mail_auth_nginx_auth_wait_fixed on\" if this nginx has the fix)");
    }
}

fn set_log_level(a: &Args, level: &mut Option<Level>) -> Result<(), String> {
    a.once(level, || {
        let v = a.v[0].to_ascii_lowercase();
        config::parse_log_level(&v).ok_or_else(|| {
            format!("invalid log level \"{v}\" in \"mail_auth_log_level\" (debug, info, notice, warn, error)")
        })
    })
}

fn set_thread_pool(a: &Args, pool: &mut Option<String>) -> Result<(), String> {
    a.once(pool, || {
        let name = a.v[0];
        if name.is_empty() {
            return Err("empty thread pool name in \"mail_auth_thread_pool\"".into());
        }
        if !cfg!(ngx_feature = "threads") && name != "off" {
            return Err(
                "\"mail_auth_thread_pool\" requires nginx built --with-threads (use \"mail_auth_thread_pool off\")"
                    .into(),
            );
        }
        Ok(name.to_string())
    })
}

fn set_cache(a: &Args, cache: &mut Option<CacheConf>) -> Result<(), String> {
    a.once(cache, || {
        let zone = a.zone()?;
        let mut settings = CacheSettings::default();
        for (k, v) in a.key_values(1, &["ttl", "negative_ttl"])? {
            let secs = u64::from(config::parse_seconds(v).map_err(|e| format!("\"mail_auth_cache\" {k}: {e}"))?);
            if k == "ttl" {
                settings.ttl = secs
            } else {
                settings.negative_ttl = secs
            }
        }
        Ok(CacheConf { zone: a.add_zone(zone)?, settings })
    })
}

fn set_limit(a: &Args, limit: &mut Option<LimitConf>) -> Result<(), String> {
    a.once(limit, || {
        let zone = a.zone()?;
        let mut redis = None;
        let mut args = Vec::new();
        for v in &a.v[1..] {
            match v.strip_prefix("redis=") {
                Some(_) if redis.is_some() => return Err("\"mail_auth_limit\" duplicate parameter \"redis\"".into()),
                Some(name) if !name.is_empty() => redis = Some(name.to_string()),
                _ => args.push(*v),
            }
        }
        let cfg = limiter::parse_limit_args(&args).map_err(|e| format!("\"mail_auth_limit\" {e}"))?;
        let name = zone.0.clone();
        Ok(LimitConf { zone: a.add_zone(zone)?, cfg, name, redis })
    })
}

/// `mail_auth_redis NAME ADDRESS [key_file=PATH] [password_file=PATH] ...`
fn set_redis(a: &Args, defs: &mut Option<Vec<RedisDef>>) -> Result<(), String> {
    let name = a.v[0];
    let list = defs.get_or_insert_with(Vec::new);
    if list.iter().any(|d| d.name == name) {
        return Err(format!("\"mail_auth_redis\": \"{name}\" is defined twice"));
    }
    let conf = crate::fleet::parse_server(name, &a.v[1..], |p| a.full_path(p))
        .map_err(|e| format!("\"mail_auth_redis\" {name}: {e}"))?;
    list.push(RedisDef { name: name.to_string(), backend: redis_backend(conf)? });
    Ok(())
}

#[cfg(feature = "redis")]
fn redis_backend(conf: crate::fleet::ServerConf) -> Result<Arc<dyn crate::fleet::Backend>, String> {
    if !cfg!(ngx_feature = "threads") {
        return Err("\"mail_auth_redis\" needs an nginx built with threads (--with-threads)".into());
    }
    let name = conf.name.clone();
    let b = crate::fleet::redis::RedisBackend::new(conf).map_err(|e| format!("\"mail_auth_redis\" {name}: {e}"))?;
    Ok(Arc::new(b))
}

#[cfg(not(feature = "redis"))]
fn redis_backend(_conf: crate::fleet::ServerConf) -> Result<Arc<dyn crate::fleet::Backend>, String> {
    Err("this build of the module has no Redis support (cargo feature \"redis\")".into())
}

fn set_limit_exempt(a: &Args, nets: &mut Option<Vec<Cidr>>) -> Result<(), String> {
    a.once(nets, || {
        warn_host_bits(a);
        a.v.iter()
            .map(|n| Cidr::parse(n).map_err(|e| format!("\"mail_auth_limit_exempt\": invalid network \"{n}\": {e}")))
            .collect()
    })
}

fn set_verify_concurrency(a: &Args, concurrency: &mut Option<VerifyConcurrency>) -> Result<(), String> {
    a.once(concurrency, || {
        let (limit, queue) = concurrency_args(a, config::DEFAULT_VERIFY_QUEUE)?;
        Ok(VerifyConcurrency { limit, queue })
    })
}

fn set_lookup_concurrency(a: &Args, lookups: &mut Option<LookupConcurrency>) -> Result<(), String> {
    a.once(lookups, || {
        let (limit, queue) = concurrency_args(a, LookupConcurrency::default().queue)?;
        Ok(LookupConcurrency { limit, queue })
    })
}

/// `N [queue=M]`: N in 1..1024, M in 0..65536 (`default_queue` when not given).
fn concurrency_args(a: &Args, default_queue: usize) -> Result<(usize, usize), String> {
    let name = a.name;
    let limit = a.v[0]
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| format!("\"{name}\": invalid number \"{}\" (1..1024)", a.v[0]))?;
    let mut queue = default_queue;
    for (_, v) in a.key_values(1, &["queue"])? {
        queue = v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 65536)
            .ok_or_else(|| format!("\"{name}\": invalid queue \"{v}\" (0..65536)"))?;
    }
    Ok((limit, queue))
}

/// merge_loc_conf: inherit from the enclosing level, then build the engine of a `mail_auth`
/// location. Hand-written: ngx's `Merge` sees neither `cf` nor a message to report.
pub unsafe extern "C" fn merge_loc_conf(cf: *mut ngx_conf_t, prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    guard(ngx::core::NGX_CONF_ERROR, || {
        // SAFETY: nginx passes the parent's and this level's conf of this module (never the same).
        let (prev, lc) = unsafe { (loc(prev), loc(conf)) };
        match merge(cf, prev, lc) {
            Ok(()) => conf_ok(),
            Err(e) => conf_err(cf, &e),
        }
    })
}

/// A Basic bridge must see its access phase's 401/403: no `error_page` for them may be in effect
/// (given here, in an `if` block, or inherited from the server or http level), or nginx sends
/// them to that page and the bridge neither answers nor counts them for `mail_auth_limit`.
fn bridge_keeps_refusals(cf: *mut ngx_conf_t, lc: &LocConf) -> Result<(), String> {
    if lc.directives.basic_header() && bridge::error_page_for_refusals(cf) {
        return Err("\"mail_auth_basic_header on\" cannot be used with an \"error_page\" for 401 or 403 in effect (set here, in an \"if\" block, or inherited from the server or http level): nginx would send the access phase's refusals to that page, and the bridge would neither answer nor count them for \"mail_auth_limit\" (give this location an \"error_page\" of its own for other codes, or none)".into());
    }
    Ok(())
}

fn merge(cf: *mut ngx_conf_t, prev: &LocConf, lc: &mut LocConf) -> Result<(), String> {
    // (not a mail_auth location's: nginx mail asks with GET only, and a Basic bridge's block may
    // turn its credential check off, `limit_except GET { auth_basic off; }`: its other methods
    // keep nginx's static handler, which answers no Auth-Status)
    let limit_except = matches!(prev.directives.content, Some(Content::Json(_) | Content::Status(_) | Content::Bans))
        && bridge::is_limit_except_block(cf);
    if limit_except {
        // nginx runs the content handler of the block's own configuration for the methods the
        // block covers: one it has none of gets nginx's static handler (a DELETE of
        // mail_auth_limit_bans was a bare 405, a POST to mail_auth_json a 404). Given the
        // location's, as proxy_pass does for its blocks; then taken as an `if` block below.
        // SAFETY: cf is live during the merge; its context is the block being merged.
        if let Some(clcf) = NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
            if clcf.handler.is_none() {
                clcf.handler = prev.directives.content.map(handler_of);
            }
        }
    }
    if matches!(prev.directives.content, Some(Content::MailAuth(_) | Content::Json(_) | Content::Status(_)))
        && bridge::is_if_block(cf)
        || limit_except
    {
        // nginx runs the location's content handler for requests that enter the block, with the
        // block's configuration: it gets the location's own (content, engine, pool), or a plain
        // location answered them with a bare 500 and a Basic-bridge one skipped its Host and ban
        // checks before auth_basic. nginx allows none of the module's directives inside it, so
        // the block has nothing of its own to keep. (A mail_auth_limit_bans location reads only
        // what its block inherits: it worked there already.)
        lc.directives.inherit(&prev.directives);
        lc.directives.content = prev.directives.content;
        lc.engine.clone_from(&prev.engine);
        lc.pool = prev.pool;
        lc.host_names.clone_from(&prev.host_names);
        // proxy_pass and the like may be given in an if block: its handler would answer
        if let Some(content) = lc.directives.content {
            content_handler_kept(cf, content, !limit_except)?;
        }
        // error_page may be given in an if block: the bridge's refusals must still reach it
        return bridge_keeps_refusals(cf, lc);
    }
    // an app passwords file belongs to the passwd-file it was given with: a level that names a
    // store of its own does not take the one of the enclosing level's other store (its users'
    // app passwords logged in the users of the same names in this store)
    let other_store = lc.directives.store.is_some()
        && prev.directives.store.is_some()
        && lc.directives.store != prev.directives.store;
    let own_apps = lc.directives.app_passwords.is_some();
    lc.directives.inherit(&prev.directives);
    if other_store && !own_apps && prev.directives.app_passwords.is_some() {
        lc.directives.app_passwords = None;
    }
    // every location's (not only those of mail_auth, mail_auth_json and mail_auth_limit_bans: an
    // `if` block in one has a configuration of its own, which their handlers then read)
    lc.host_names = util::server_names(cf);
    if let Some(content) = lc.directives.content {
        content_handler_kept(cf, content, false)?;
    }
    if let Some(Content::Json(stats)) = lc.directives.content {
        return merge_json(cf, lc, stats);
    }
    if matches!(lc.directives.content, Some(Content::Bans)) && lc.directives.limit.is_none() {
        return Err("\"mail_auth_limit_bans\" needs a \"mail_auth_limit\" in effect in its location (declare it at http or server level)".into());
    }
    if matches!(lc.directives.content, Some(Content::Bans)) && !bridge::access_restricted(cf) {
        // the listing names clients and users, and anyone who reaches it may lift any ban
        ngx_conf_log_error!(
            NGX_LOG_WARN,
            cf,
            "\"mail_auth_limit_bans\" in location \"{}\" without a \"deny\" rule, \"auth_basic\" or \"auth_request\": whoever reaches it can read the bans (client addresses, user names) and lift any of them",
            util::location_name(cf)
        );
    }
    let Some(Content::MailAuth(stats)) = lc.directives.content else {
        return Ok(());
    };
    if lc.directives.basic_header() && !bridge::access_checks_credentials(cf) {
        // the bridge only hands the credentials to the access phase: with nothing there to check
        // them, every login would be OK
        return Err("\"mail_auth_basic_header on\" needs \"auth_basic\" (with \"auth_basic_user_file\") or \"auth_request\" in effect in the same location".into());
    }
    if lc.directives.basic_header() && bridge::satisfy_any(cf) {
        return Err("\"mail_auth_basic_header on\" cannot be used with \"satisfy any\": an \"allow\" that matches nginx mail's address would let every login in".into());
    }
    bridge_keeps_refusals(cf, lc)?;
    if bridge::error_page_for_5xx(cf) {
        // the module's own failures are answered as such (not as a 5xx), but not the 5xx of
        // others in the location: warned, not refused (nginx's stock nginx.conf has one)
        ngx_conf_log_error!(
            NGX_LOG_WARN,
            cf,
            "\"mail_auth\" in location \"{}\" with an \"error_page\" for 5xx in effect (set here or inherited from the server or http level, as in nginx's stock nginx.conf): a 5xx of another module in this location (limit_req's 503, an auth_request upstream down) goes to that page instead of becoming a temporary failure, and nginx mail, answered without \"Auth-Status\", closes the session (give this location an \"error_page\" of its own for other codes, or none)",
            util::location_name(cf)
        );
    }
    let (engine, pool) = build_engine(cf, &lc.directives, stats)?;
    log_auth_wait_fixed(cf, lc.directives.auth_wait_fixed);
    lc.engine = Some(Arc::new(engine));
    lc.pool = pool;
    Ok(())
}

/// A `mail_auth_json` location: the engine of a `mail_auth` location with a store of its own
/// (no Basic bridge). Its answers name no backend, so the protocols without a
/// `mail_auth_backend` get a placeholder one (the engine's OK needs one; it is never sent).
fn merge_json(cf: *mut ngx_conf_t, lc: &mut LocConf, stats: Zone) -> Result<(), String> {
    if lc.directives.basic_header() || lc.directives.store.is_none() {
        return Err("\"mail_auth_json\" needs a credential store (\"mail_auth_passwd_file\", \"mail_auth_sqlite\", \"mail_auth_sql\", \"mail_auth_ldap\") and no \"mail_auth_basic_header on\"".into());
    }
    if !bridge::access_checks_credentials(cf) {
        // legitimate behind a unix socket or a loopback-only listener, so not an error
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "\"mail_auth_json\" without \"auth_basic\" or \"auth_request\" in the location: anyone who reaches it can check passwords and read the accounts' data");
    }
    for (slot, b) in lc.directives.backends.iter_mut().enumerate() {
        if b.is_none() {
            let port = [143, 110, 25, 25][slot];
            *b = Some(Backend { server: std::net::IpAddr::from([127, 0, 0, 1]).into(), port });
        }
    }
    let (mut engine, pool) = build_engine(cf, &lc.directives, stats)?;
    engine.cfg.names_no_backend = true;
    if let Some(sql) = &lc.directives.sqlite_accounts_query {
        engine.store = Some(sqlite_accounts(cf, store_conf(&lc.directives)?, engine.store.take(), sql)?);
    }
    lc.engine = Some(Arc::new(engine));
    lc.pool = pool;
    Ok(())
}

/// `mail_auth_sqlite_accounts_query`: the SQLite store listing its accounts with that query
/// (checked now, so `nginx -t` reports a bad one).
#[cfg(feature = "sqlite")]
fn sqlite_accounts(
    cf: *mut ngx_conf_t,
    conf: Option<StoreConf>,
    store: Option<Arc<dyn Store>>,
    sql: &str,
) -> Result<Arc<dyn Store>, String> {
    let (Some(StoreConf::Sqlite { path, .. }), Some(store)) = (conf, store) else {
        return Err("\"mail_auth_sqlite_accounts_query\" needs \"mail_auth_sqlite\"".into());
    };
    match store::sqlite_accounts::check(&path, sql) {
        Ok(Some(w)) => {
            ngx_conf_log_error!(NGX_LOG_WARN, cf, "mail_auth_sqlite \"{path}\": {w}");
        }
        Ok(None) => {}
        Err(e) => return Err(format!("mail_auth_sqlite_accounts_query: \"{path}\": {e}")),
    }
    Ok(Arc::new(store::sqlite_accounts::ListedBy::new(store, &path, sql)))
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_accounts(
    _cf: *mut ngx_conf_t,
    _conf: Option<StoreConf>,
    _store: Option<Arc<dyn Store>>,
    _sql: &str,
) -> Result<Arc<dyn Store>, String> {
    Err("this build of the module has no SQLite support (cargo feature \"sqlite\")".into())
}

/// The engine of a `mail_auth` location: what its directives set, `crate::config`'s defaults for
/// the rest.
fn build_engine(
    cf: *mut ngx_conf_t,
    d: &Directives,
    stats: Zone,
) -> Result<(Engine, Option<offload::PoolRef>), String> {
    let store = match store_conf(d)? {
        Some(s) => Some(open_store(cf, &s)?),
        None if d.basic_header() => None,
        None => return Err("\"mail_auth\" needs a credential store: \"mail_auth_passwd_file\", \"mail_auth_sqlite\", \"mail_auth_sql\" or \"mail_auth_ldap\" (or \"mail_auth_basic_header on\" with auth_basic/auth_request in the location)".into()),
    };
    if store.is_none() && d.app_only.as_ref().is_some_and(|l| !l.is_empty()) {
        // auth_basic/auth_request check whatever password comes: none is known as an app one
        return Err("\"mail_auth_app_only\" needs a credential store in the location: with \"mail_auth_basic_header on\" and none, the access phase checks the password and no app password is known (set \"mail_auth_app_only off\" here)".into());
    }
    if d.backends.iter().all(Option::is_none) {
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "\"mail_auth\" without any \"mail_auth_backend\": logins will succeed only for users whose store entry names a server");
    }

    let mut cfg = AuthConfig::default();
    [cfg.imap_backend, cfg.pop3_backend, cfg.smtp_backend, cfg.mx_backend] = d.backends.clone();
    if let Some(domains) = &d.relay_domains {
        cfg.relay_domains.clone_from(domains);
    }
    if let Some(m) = &d.master_user {
        cfg.master_user = Some(m.clone());
    }
    if let Some(t) = &d.real_ip_from {
        cfg.trusted_proxies = t.clone();
    }
    if let Some(w) = d.fail_wait {
        cfg.fail_wait = w;
    }
    cfg.transport = config::Transport {
        require_tls: d.require_tls.clone().unwrap_or_default(),
        listeners: d.listeners.clone().unwrap_or_default(),
        listener_required: d.listener_required == Some(true),
    };
    if cfg.transport.listener_required && cfg.transport.listeners.is_empty() {
        return Err("\"mail_auth_listener_required on\" needs at least one \"mail_auth_listener\"".into());
    }
    cfg.nginx_auth_wait_fixed = d.auth_wait_fixed.unwrap_or_else(|| built_auth_wait_fixed().0);
    if let Some(l) = &d.app_only {
        cfg.app_only.clone_from(l);
    }

    let pool = match d.thread_pool.as_deref().unwrap_or(config::DEFAULT_THREAD_POOL) {
        _ if !cfg!(ngx_feature = "threads") => None,
        "off" => None,
        name => Some(offload::pool_add(cf, name).ok_or("cannot register the thread pool for \"mail_auth\"")?),
    };
    // a network store is never asked on the event loop
    if pool.is_none() && matches!(d.store, Some(StoreConf::Sql { .. })) {
        return Err(
            "\"mail_auth_sql\" needs a thread pool (nginx --with-threads, \"mail_auth_thread_pool\" not off)".into()
        );
    }
    if pool.is_none() && matches!(d.store, Some(StoreConf::Ldap { .. })) {
        return Err(
            "\"mail_auth_ldap\" needs a thread pool (nginx --with-threads, \"mail_auth_thread_pool\" not off)".into()
        );
    }
    // the JWKS file is read now: a missing or unusable one fails `nginx -t`
    let oauth = match &d.oauth {
        None => None,
        // a Basic-bridge location would have auth_basic/auth_request judge the token first
        // a directory or SQL server matches names by its own rules (LDAP's caseIgnoreMatch
        // takes a fullwidth "ａlice" for alice, MySQL's collations "älice" or "alice "): a token
        // whose claim is such a spelling would open another mailbox than the one it names
        Some(_) if store.is_none() || matches!(d.store, Some(StoreConf::Sql { .. } | StoreConf::Ldap { .. })) => {
            return Err("\"mail_auth_oauth2\" needs a store of the mailboxes: \"mail_auth_passwd_file\" or \"mail_auth_sqlite\"".into());
        }
        // the introspection call blocks: it is made on the thread pool only
        Some(c) if c.introspect.is_some() && pool.is_none() => {
            return Err("\"mail_auth_oauth2 introspect=\" needs a thread pool (nginx --with-threads, \"mail_auth_thread_pool\" not off)".into());
        }
        Some(c) => {
            let v = Verifier::new(c.clone()).map_err(|e| format!("mail_auth_oauth2: {e}"))?;
            for (_, n) in v.take_notices() {
                ngx_conf_log_error!(NGX_LOG_WARN, cf, "mail_auth_oauth2: {n}");
            }
            Some(Arc::new(v))
        }
    };
    let fleet = fleet_of(d)?;
    if fleet.is_some() && pool.is_none() {
        return Err(
            "\"mail_auth_limit redis=\" needs a thread pool (nginx --with-threads, \"mail_auth_thread_pool\" not off)"
                .into(),
        );
    }
    let shared = Zones::new(d.cache.map(|c| c.zone), d.limit.as_ref().map(|l| l.zone), Some(stats));
    let engine = Engine {
        cfg,
        store,
        shared: Arc::new(shared),
        cache: d.cache.map(|c| c.settings),
        limit: d.limit.as_ref().map(|l| l.cfg),
        fleet,
        limit_exempt: d.limit_exempt.clone().unwrap_or_default(),
        offload: pool.is_some(),
        concurrency: d.concurrency.unwrap_or_default(),
        lookups: d.lookups.unwrap_or_default(),
        log_level: d.log_level.unwrap_or(config::DEFAULT_LOG_LEVEL),
        oauth,
    };
    Ok((engine, pool))
}

/// The store in effect, with the SQLite query in effect.
fn store_conf(d: &Directives) -> Result<Option<StoreConf>, String> {
    let Some(mut s) = d.store.clone() else { return Ok(None) };
    match &mut s {
        StoreConf::Sqlite { query, rows, app_query, .. } => {
            query.clone_from(&d.sqlite_query);
            *rows = d.sqlite_cache_rows;
            app_query.clone_from(&d.sqlite_app_query);
            if d.app_passwords.is_some() {
                return Err("\"mail_auth_app_passwords\" is a file for \"mail_auth_passwd_file\"; with \"mail_auth_sqlite\" use \"mail_auth_sqlite_app_query\"".into());
            }
        }
        StoreConf::PasswdFile { apps, .. } => {
            apps.clone_from(&d.app_passwords);
            if d.sqlite_app_query.is_some() {
                return Err("\"mail_auth_sqlite_app_query\" needs \"mail_auth_sqlite\"; with \"mail_auth_passwd_file\" use \"mail_auth_app_passwords\"".into());
            }
        }
        StoreConf::Sql { query, .. } => {
            query.clone_from(&d.sql_query);
            if d.app_passwords.is_some() || d.sqlite_app_query.is_some() {
                return Err("app passwords (\"mail_auth_app_passwords\", \"mail_auth_sqlite_app_query\") are not supported with \"mail_auth_sql\" yet".into());
            }
        }
        StoreConf::Ldap { attrs, .. } => {
            attrs.clone_from(&d.ldap_attrs.clone().unwrap_or_default());
            if d.app_passwords.is_some() || d.sqlite_app_query.is_some() {
                return Err("app passwords (\"mail_auth_app_passwords\", \"mail_auth_sqlite_app_query\") are not supported with \"mail_auth_ldap\"".into());
            }
        }
    }
    Ok(Some(s))
}

/// Opens the store (`nginx -t` reports what is wrong with it) and logs its notices.
fn open_store(cf: *mut ngx_conf_t, conf: &StoreConf) -> Result<Arc<dyn Store>, String> {
    let s: Arc<dyn Store> = match conf {
        StoreConf::PasswdFile { path, apps } => {
            let f = store::passwd_file::PasswdFile::open(path).map_err(|e| format!("mail_auth_passwd_file: {e}"))?;
            match apps {
                Some(a) => Arc::new(f.with_app_passwords(a).map_err(|e| format!("mail_auth_app_passwords: {e}"))?),
                None => Arc::new(f),
            }
        }
        StoreConf::Sqlite { path, query, rows, app_query } => {
            sqlite_store(cf, path, query.as_deref(), *rows, app_query.as_deref())?
        }
        StoreConf::Sql { driver, dsn, options, query } => sql_store(driver, dsn, options, query.as_deref())?,
        StoreConf::Ldap { args, attrs } => ldap_store(args, attrs)?,
    };
    for n in s.take_notices() {
        let level = match n.level {
            NoticeLevel::Error => NGX_LOG_ERR,
            NoticeLevel::Warn => NGX_LOG_WARN,
            NoticeLevel::Info => NGX_LOG_INFO,
        };
        ngx_conf_log_error!(level, cf, "mail_auth: {}", n.message);
    }
    Ok(s)
}

#[cfg(feature = "sqlite")]
fn sqlite_store(
    cf: *mut ngx_conf_t,
    path: &str,
    query: Option<&str>,
    rows: Option<usize>,
    app_query: Option<&str>,
) -> Result<Arc<dyn Store>, String> {
    let query = query.unwrap_or(store::sqlite::DEFAULT_QUERY);
    match store::sqlite::SqliteStore::check_query(path, query) {
        Ok(Some(warning)) => {
            ngx_conf_log_error!(NGX_LOG_WARN, cf, "mail_auth_sqlite \"{path}\": {warning}");
        }
        Ok(None) => {}
        Err(e) => return Err(format!("mail_auth_sqlite \"{path}\": {e}")),
    }
    let app_query = app_query.map(|q| if q == "default" { store::sqlite::DEFAULT_APP_QUERY } else { q });
    if let Some(q) = app_query {
        match store::sqlite::SqliteStore::check_app_query(path, q) {
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => return Err(format!("mail_auth_sqlite_app_query: \"{path}\": {e}")),
        }
    }
    let s = store::sqlite::SqliteStore::new(path, query).map_err(|e| format!("mail_auth_sqlite \"{path}\": {e}"))?;
    Ok(Arc::new(s.with_cache_rows(rows.unwrap_or(store::sqlite::DEFAULT_CACHE_ROWS)).with_app_query(app_query)))
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_store(
    _cf: *mut ngx_conf_t,
    _path: &str,
    _query: Option<&str>,
    _rows: Option<usize>,
    _app_query: Option<&str>,
) -> Result<Arc<dyn Store>, String> {
    Err("this build of the module has no SQLite support (cargo feature \"sqlite\")".into())
}

/// `mail_auth_sql`: checks the DSN, options and query's parameters; connects to nothing (a
/// server down at start only fails logins temporarily until it answers). Needs nginx's thread
/// pool: a network store is never asked on the event loop.
fn sql_store(driver: &str, dsn: &str, options: &[String], query: Option<&str>) -> Result<Arc<dyn Store>, String> {
    if !cfg!(ngx_feature = "threads") {
        return Err("\"mail_auth_sql\" needs an nginx built with threads (--with-threads)".into());
    }
    let opts = store::sql_server::parse_options(dsn, options).map_err(|e| format!("mail_auth_sql: {e}"))?;
    let query = query.ok_or("\"mail_auth_sql\" needs \"mail_auth_sql_query\"")?;
    match driver {
        #[cfg(feature = "pgsql")]
        "postgresql" => {
            let s = store::pgsql::PgStore::new(opts, query).map_err(|e| format!("mail_auth_sql: {e}"))?;
            return Ok(Arc::new(s));
        }
        #[cfg(feature = "mysql")]
        "mysql" => {
            let s = store::mysql::MysqlStore::new(opts, query).map_err(|e| format!("mail_auth_sql: {e}"))?;
            return Ok(Arc::new(s));
        }
        _ => {}
    }
    let _ = (opts, query);
    Err(format!("this build of the module has no {driver} support (cargo features \"pgsql\", \"mysql\")"))
}

/// `mail_auth_ldap`: checks the servers' URLs, the options, the filter and the attribute
/// mapping; connects to nothing. Needs nginx's thread pool, like `mail_auth_sql`.
fn ldap_store(args: &[String], attrs: &[String]) -> Result<Arc<dyn Store>, String> {
    if !cfg!(ngx_feature = "threads") {
        return Err("\"mail_auth_ldap\" needs an nginx built with threads (--with-threads)".into());
    }
    #[cfg(feature = "ldap")]
    {
        let opts = store::ldap::parse_options(args, attrs).map_err(|e| format!("mail_auth_ldap: {e}"))?;
        let s = store::ldap::LdapStore::new(opts).map_err(|e| format!("mail_auth_ldap: {e}"))?;
        Ok(Arc::new(s))
    }
    #[cfg(not(feature = "ldap"))]
    {
        let _ = (args, attrs);
        Err("this build of the module has no LDAP support (cargo feature \"ldap\")".into())
    }
}

/// The zones an engine uses, seen by the engine as `SharedMemory`.
pub struct Zones {
    cache: Option<Zone>,
    limit: Option<Zone>,
    stats: Option<Zone>,
    /// Each zone's region once nginx has initialised it (it then stays mapped at that address
    /// for the process's life): a request reads it here, not through the zone's two pointers.
    mapped: [std::sync::OnceLock<&'static [AtomicU64]>; 3],
}

impl Zones {
    fn new(cache: Option<Zone>, limit: Option<Zone>, stats: Option<Zone>) -> Zones {
        Zones { cache, limit, stats, mapped: Default::default() }
    }
}

impl SharedMemory for Zones {
    fn region(&self, which: Region) -> Option<&[AtomicU64]> {
        let (zone, slot) = match which {
            Region::Cache => (self.cache, 0),
            Region::Limiter => (self.limit, 1),
            Region::Metrics => (self.stats, 2),
        };
        let mapped = &self.mapped[slot];
        if let Some(words) = mapped.get() {
            return Some(words);
        }
        // not initialised yet (configuration time): asked again next time
        let words = zone?.words()?;
        Some(mapped.get_or_init(|| words))
    }
}
