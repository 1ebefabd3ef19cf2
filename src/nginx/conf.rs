//! Directives and the location configuration.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_str_t, ngx_uint_t, NGX_CONF_FLAG, NGX_CONF_NOARGS,
    NGX_CONF_1MORE, NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_CONF_TAKE2, NGX_CONF_TAKE23, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF,
    NGX_HTTP_SRV_CONF, NGX_LOG_DEBUG, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use ngx::{ngx_conf_log_error, ngx_string};

use std::sync::atomic::AtomicU64;

use super::{conf_err, conf_ok, guard, util};
use crate::config::{self, AuthConfig, Backend, CacheSettings, MasterUser, VerifyConcurrency};
use crate::engine::{Engine, Region, SharedMemory};
use crate::protocol::Protocol;
use crate::limiter::{self, LimitConfig};
use crate::store::{self, NoticeLevel, Store};
use super::zone::{self, Zone};

/// The shared zone of the status counters (`config::STATUS_ZONE`), added by the first
/// `mail_auth` or `mail_auth_status`.
const STATS_ZONE: &str = config::STATUS_ZONE;
const STATS_ZONE_SIZE: usize = 64 * 1024;

/// `mail_auth_cache zone=NAME:SIZE [ttl=T] [negative_ttl=T]`
#[derive(Clone, Copy)]
pub struct CacheConf {
    pub zone: Zone,
    pub settings: CacheSettings,
}

/// `mail_auth_limit zone=NAME:SIZE [ip=RATE] [user=RATE] [ban=TIME]`
#[derive(Clone, Copy)]
pub struct LimitConf {
    pub zone: Zone,
    pub cfg: LimitConfig,
}

/// The zones an engine uses, seen by the engine as `SharedMemory`.
pub struct Zones {
    cache: Option<Zone>,
    limit: Option<Zone>,
    stats: Option<Zone>,
}

impl SharedMemory for Zones {
    fn region(&self, which: Region) -> Option<&[AtomicU64]> {
        let zone = match which {
            Region::Cache => self.cache,
            Region::Limiter => self.limit,
            Region::Metrics => self.stats,
        }?;
        zone.words()
    }
}

#[derive(Default)]
pub struct LocConf {
    /// `mail_auth;` in this location.
    pub enabled: bool,
    pub passwd_file: Option<String>,
    pub sqlite: Option<String>,
    pub sqlite_query: Option<String>,
    /// imap, pop3, smtp (submission), mx (SMTP without AUTH).
    pub backends: [Option<Backend>; 4],
    /// `mail_auth_relay_domains`
    pub relay_domains: Option<Vec<String>>,
    /// `mail_auth_master_user`
    pub master_user: Option<MasterUser>,
    pub fail_wait: Option<u32>,
    pub basic_header: Option<bool>,
    pub log_level: Option<ngx_uint_t>,
    /// `mail_auth_thread_pool NAME|off` (default: nginx's `default` pool).
    pub thread_pool: Option<String>,
    pub cache: Option<CacheConf>,
    pub limit: Option<LimitConf>,
    /// `mail_auth_status;` in this location.
    pub status: bool,
    /// The status counters' zone (set by `mail_auth` / `mail_auth_status`).
    pub stats: Option<Zone>,
    /// `mail_auth_verify_concurrency`
    pub concurrency: Option<VerifyConcurrency>,
    pub engine: Option<Arc<Engine>>,
    /// The thread pool the engine's jobs go to.
    pub pool: Option<super::offload::PoolRef>,
}

impl LocConf {
    pub fn log_level(&self) -> ngx_uint_t {
        self.log_level.unwrap_or(NGX_LOG_INFO as ngx_uint_t)
    }
    pub fn basic_header(&self) -> bool {
        self.basic_header.unwrap_or(false)
    }
}

const ANY: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

macro_rules! command {
    ($name:literal, $flags:expr, $set:ident) => {
        ngx_command_t {
            name: ngx_string!($name),
            type_: ($flags) as ngx_uint_t,
            set: Some($set),
            conf: NGX_HTTP_LOC_CONF_OFFSET,
            offset: 0,
            post: std::ptr::null_mut(),
        }
    };
}

pub static mut COMMANDS: [ngx_command_t; 16] = [
    command!("mail_auth", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, set_mail_auth),
    command!("mail_auth_status", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, set_status),
    command!("mail_auth_passwd_file", ANY | NGX_CONF_TAKE1, set_passwd_file),
    command!("mail_auth_sqlite", ANY | NGX_CONF_TAKE1, set_sqlite),
    command!("mail_auth_sqlite_query", ANY | NGX_CONF_TAKE1, set_sqlite_query),
    command!("mail_auth_backend", ANY | NGX_CONF_TAKE2, set_backend),
    command!("mail_auth_fail_wait", ANY | NGX_CONF_TAKE1, set_fail_wait),
    command!("mail_auth_basic_header", ANY | NGX_CONF_FLAG, set_basic_header),
    command!("mail_auth_log_level", ANY | NGX_CONF_TAKE1, set_log_level),
    command!("mail_auth_thread_pool", ANY | NGX_CONF_TAKE1, set_thread_pool),
    command!("mail_auth_cache", ANY | NGX_CONF_1MORE, set_cache),
    command!("mail_auth_limit", ANY | NGX_CONF_1MORE, set_limit),
    command!("mail_auth_relay_domains", ANY | NGX_CONF_1MORE, set_relay_domains),
    command!("mail_auth_master_user", ANY | NGX_CONF_TAKE23, set_master_user),
    command!("mail_auth_verify_concurrency", ANY | NGX_CONF_TAKE12, set_verify_concurrency),
    ngx_command_t::empty(),
];

/// The directive's arguments after the name, as byte slices.
fn args<'a>(cf: *mut ngx_conf_t) -> Vec<&'a [u8]> {
    // SAFETY: nginx calls directive handlers with `cf->args` holding the directive name and its
    // arguments as ngx_str_t values allocated from the configuration pool.
    unsafe { (*(*cf).args).as_slice::<ngx_str_t>() }.iter().skip(1).map(|s| s.as_bytes()).collect()
}

fn arg_str<'a>(cf: *mut ngx_conf_t, i: usize) -> Result<&'a str, String> {
    let a = args(cf);
    let v = a.get(i).ok_or_else(|| "missing argument".to_string())?;
    std::str::from_utf8(v).map_err(|_| "argument is not valid UTF-8".to_string())
}

/// # Safety
/// `conf` is this module's location configuration, as nginx passes it to directive handlers.
unsafe fn loc<'a>(conf: *mut c_void) -> &'a mut LocConf {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &mut *(conf as *mut LocConf) }
}

/// Resolves a relative path against nginx's prefix (like ngx_conf_full_name).
fn full_path(cf: *mut ngx_conf_t, p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    // SAFETY: cf->cycle is the cycle being configured; its prefix is a valid ngx_str_t.
    let prefix = unsafe { (*(*cf).cycle).prefix.as_bytes() };
    let mut s = String::from_utf8_lossy(prefix).into_owned();
    if !s.is_empty() && !s.ends_with('/') {
        s.push('/');
    }
    s.push_str(p);
    s
}

macro_rules! setter {
    ($name:ident, |$cf:ident, $lc:ident| $body:block) => {
        extern "C" fn $name(
            $cf: *mut ngx_conf_t,
            _cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            guard(ngx::core::NGX_CONF_ERROR, || {
                // SAFETY: nginx passes this module's loc conf for NGX_HTTP_LOC_CONF_OFFSET.
                let $lc = unsafe { loc(conf) };
                let r: Result<(), String> = (|| $body)();
                match r {
                    Ok(()) => conf_ok(),
                    Err(e) => conf_err($cf, &e),
                }
            })
        }
    };
}

fn once<T>(slot: &Option<T>, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("\"{name}\" directive is duplicate"));
    }
    Ok(())
}

/// Makes `handler` the content handler of the location being configured.
fn set_content_handler(
    cf: *mut ngx_conf_t,
    handler: unsafe extern "C" fn(*mut ngx::ffi::ngx_http_request_t) -> ngx::ffi::ngx_int_t,
) -> Result<(), String> {
    let clcf = NgxHttpCoreModule::location_conf_mut(
        // SAFETY: cf is live during directive processing.
        unsafe { &*cf },
    )
    .ok_or("no http core location configuration")?;
    clcf.handler = Some(handler);
    Ok(())
}

setter!(set_mail_auth, |cf, lc| {
    if lc.enabled {
        return Err("\"mail_auth\" directive is duplicate".into());
    }
    if lc.status {
        return Err("\"mail_auth\" and \"mail_auth_status\" cannot share a location".into());
    }
    lc.enabled = true;
    lc.stats = Some(zone::shared(cf, STATS_ZONE, STATS_ZONE_SIZE, module_tag())?);
    set_content_handler(cf, super::handler::content_handler)
});

setter!(set_status, |cf, lc| {
    if lc.status {
        return Err("\"mail_auth_status\" directive is duplicate".into());
    }
    if lc.enabled {
        return Err("\"mail_auth\" and \"mail_auth_status\" cannot share a location".into());
    }
    lc.status = true;
    lc.stats = Some(zone::shared(cf, STATS_ZONE, STATS_ZONE_SIZE, module_tag())?);
    set_content_handler(cf, super::status::content_handler)
});

setter!(set_passwd_file, |cf, lc| {
    once(&lc.passwd_file, "mail_auth_passwd_file")?;
    lc.passwd_file = Some(full_path(cf, arg_str(cf, 0)?));
    Ok(())
});

setter!(set_sqlite, |cf, lc| {
    once(&lc.sqlite, "mail_auth_sqlite")?;
    lc.sqlite = Some(full_path(cf, arg_str(cf, 0)?));
    Ok(())
});

setter!(set_sqlite_query, |cf, lc| {
    once(&lc.sqlite_query, "mail_auth_sqlite_query")?;
    lc.sqlite_query = Some(arg_str(cf, 0)?.to_string());
    Ok(())
});

/// `mail_auth_backend mx ...`: where SMTP without AUTH goes.
const MX: usize = 3;

setter!(set_backend, |cf, lc| {
    let name = arg_str(cf, 0)?;
    let (idx, port) = if name.eq_ignore_ascii_case("mx") {
        (MX, 25)
    } else {
        let proto = config::parse_protocol(name)
            .map_err(|e| format!("\"mail_auth_backend\": {e} (or \"mx\" for SMTP without AUTH)"))?;
        (proto_index(proto), proto.default_port())
    };
    if lc.backends[idx].is_some() {
        return Err(format!("duplicate \"mail_auth_backend\" for {name}"));
    }
    let b = config::parse_backend(arg_str(cf, 1)?, port)
        .map_err(|e| format!("invalid \"mail_auth_backend\" address {e}"))?;
    lc.backends[idx] = Some(b);
    Ok(())
});

setter!(set_fail_wait, |cf, lc| {
    once(&lc.fail_wait, "mail_auth_fail_wait")?;
    lc.fail_wait = Some(config::parse_seconds(arg_str(cf, 0)?).map_err(|e| format!("\"mail_auth_fail_wait\": {e}"))?);
    Ok(())
});

setter!(set_basic_header, |cf, lc| {
    once(&lc.basic_header, "mail_auth_basic_header")?;
    lc.basic_header = Some(match arg_str(cf, 0)?.to_ascii_lowercase().as_str() {
        "on" => true,
        "off" => false,
        v => return Err(format!("invalid value \"{v}\" in \"mail_auth_basic_header\", it must be \"on\" or \"off\"")),
    });
    Ok(())
});

setter!(set_log_level, |cf, lc| {
    once(&lc.log_level, "mail_auth_log_level")?;
    lc.log_level = Some(match arg_str(cf, 0)?.to_ascii_lowercase().as_str() {
        "debug" => NGX_LOG_DEBUG as ngx_uint_t,
        "info" => NGX_LOG_INFO as ngx_uint_t,
        "notice" => NGX_LOG_NOTICE as ngx_uint_t,
        "warn" => NGX_LOG_WARN as ngx_uint_t,
        "error" => NGX_LOG_ERR as ngx_uint_t,
        v => return Err(format!("invalid log level \"{v}\" in \"mail_auth_log_level\" (debug, info, notice, warn, error)")),
    });
    Ok(())
});

setter!(set_thread_pool, |cf, lc| {
    once(&lc.thread_pool, "mail_auth_thread_pool")?;
    let name = arg_str(cf, 0)?;
    if name.is_empty() {
        return Err("empty thread pool name in \"mail_auth_thread_pool\"".into());
    }
    if !cfg!(ngx_feature = "threads") && name != "off" {
        return Err("\"mail_auth_thread_pool\" requires nginx built --with-threads (use \"mail_auth_thread_pool off\")".into());
    }
    lc.thread_pool = Some(name.to_string());
    Ok(())
});

/// All arguments of the directive as UTF-8 strings.
fn arg_strs<'a>(cf: *mut ngx_conf_t) -> Result<Vec<&'a str>, String> {
    args(cf)
        .into_iter()
        .map(|a| std::str::from_utf8(a).map_err(|_| "argument is not valid UTF-8".to_string()))
        .collect()
}

fn module_tag() -> *mut c_void {
    std::ptr::addr_of!(super::ngx_http_mail_auth_module) as *mut c_void
}

setter!(set_cache, |cf, lc| {
    if lc.cache.is_some() {
        return Err("\"mail_auth_cache\" directive is duplicate".into());
    }
    let a = arg_strs(cf)?;
    let (name, size) = config::parse_zone(a[0]).map_err(|e| format!("\"mail_auth_cache\": {e}"))?;
    let mut settings = CacheSettings::default();
    for (k, v) in config::key_values(&a[1..], &["ttl", "negative_ttl"]).map_err(|e| format!("\"mail_auth_cache\": {e}"))? {
        let secs = u64::from(config::parse_seconds(v).map_err(|e| format!("\"mail_auth_cache\" {k}: {e}"))?);
        if k == "ttl" { settings.ttl = secs } else { settings.negative_ttl = secs }
    }
    let zone = zone::add(cf, &name, size, module_tag())?;
    lc.cache = Some(CacheConf { zone, settings });
    Ok(())
});

setter!(set_limit, |cf, lc| {
    if lc.limit.is_some() {
        return Err("\"mail_auth_limit\" directive is duplicate".into());
    }
    let a = arg_strs(cf)?;
    let (name, size) = config::parse_zone(a[0]).map_err(|e| format!("\"mail_auth_limit\": {e}"))?;
    let mut cfg = LimitConfig::default();
    for (k, v) in config::key_values(&a[1..], &["ip", "user", "ban"]).map_err(|e| format!("\"mail_auth_limit\": {e}"))? {
        match k {
            "ip" => cfg.ip = Some(limiter::parse_rate(v)?),
            "user" => cfg.user = Some(limiter::parse_rate(v)?),
            _ => cfg.ban = u64::from(config::parse_seconds(v).map_err(|e| format!("\"mail_auth_limit\" ban: {e}"))?),
        }
    }
    if cfg.ip.is_none() && cfg.user.is_none() {
        return Err("\"mail_auth_limit\" needs ip=RATE and/or user=RATE".into());
    }
    let zone = zone::add(cf, &name, size, module_tag())?;
    lc.limit = Some(LimitConf { zone, cfg });
    Ok(())
});

setter!(set_relay_domains, |cf, lc| {
    once(&lc.relay_domains, "mail_auth_relay_domains")?;
    let domains = arg_strs(cf)?
        .into_iter()
        .map(|d| config::parse_domain(d).map_err(|e| format!("\"mail_auth_relay_domains\": {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    lc.relay_domains = Some(domains);
    Ok(())
});

setter!(set_master_user, |cf, lc| {
    once(&lc.master_user, "mail_auth_master_user")?;
    let a = arg_strs(cf)?;
    let mut separator = "*".to_string();
    for (_, v) in config::key_values(&a[2..], &["separator"]).map_err(|e| format!("\"mail_auth_master_user\": {e}"))? {
        separator = v.to_string();
    }
    let m = MasterUser { name: a[0].to_string(), password: a[1].to_string(), separator };
    config::check_master_user(&m).map_err(|e| format!("\"mail_auth_master_user\": {e}"))?;
    lc.master_user = Some(m);
    Ok(())
});

setter!(set_verify_concurrency, |cf, lc| {
    once(&lc.concurrency, "mail_auth_verify_concurrency")?;
    let a = arg_strs(cf)?;
    let limit = a[0]
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| format!("\"mail_auth_verify_concurrency\": invalid number \"{}\" (1..1024)", a[0]))?;
    let mut c = VerifyConcurrency { limit, queue: config::DEFAULT_VERIFY_QUEUE };
    for (_, v) in config::key_values(&a[1..], &["queue"]).map_err(|e| format!("\"mail_auth_verify_concurrency\": {e}"))? {
        c.queue = v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 65536)
            .ok_or_else(|| format!("\"mail_auth_verify_concurrency\": invalid queue \"{v}\" (0..65536)"))?;
    }
    lc.concurrency = Some(c);
    Ok(())
});

pub fn proto_index(p: Protocol) -> usize {
    match p {
        Protocol::Imap => 0,
        Protocol::Pop3 => 1,
        Protocol::Smtp => 2,
    }
}

/// merge_loc_conf: inherit from the enclosing level, then build the engine of a `mail_auth`
/// location (open and check the store so that `nginx -t` reports problems).
pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    guard(ngx::core::NGX_CONF_ERROR, || {
        // SAFETY: nginx passes the parent's and this level's conf of this module.
        let (prev, lc) = unsafe { (loc(prev), loc(conf)) };
        if lc.passwd_file.is_none() && lc.sqlite.is_none() {
            lc.passwd_file.clone_from(&prev.passwd_file);
            lc.sqlite.clone_from(&prev.sqlite);
        }
        if lc.sqlite_query.is_none() {
            lc.sqlite_query.clone_from(&prev.sqlite_query);
        }
        for i in 0..lc.backends.len() {
            if lc.backends[i].is_none() {
                lc.backends[i].clone_from(&prev.backends[i]);
            }
        }
        if lc.relay_domains.is_none() {
            lc.relay_domains.clone_from(&prev.relay_domains);
        }
        if lc.master_user.is_none() {
            lc.master_user.clone_from(&prev.master_user);
        }
        lc.fail_wait = lc.fail_wait.or(prev.fail_wait);
        lc.basic_header = lc.basic_header.or(prev.basic_header);
        lc.log_level = lc.log_level.or(prev.log_level);
        if lc.thread_pool.is_none() {
            lc.thread_pool.clone_from(&prev.thread_pool);
        }
        lc.cache = lc.cache.or(prev.cache);
        lc.limit = lc.limit.or(prev.limit);
        lc.concurrency = lc.concurrency.or(prev.concurrency);

        if !lc.enabled {
            return conf_ok();
        }
        match build_engine(cf, lc) {
            Ok((engine, pool)) => {
                lc.engine = Some(Arc::new(engine));
                lc.pool = pool;
                conf_ok()
            }
            Err(e) => conf_err(cf, &e),
        }
    })
}

#[cfg(feature = "sqlite")]
fn sqlite_store(cf: *mut ngx_conf_t, path: &str, query: Option<&str>) -> Result<Arc<dyn Store>, String> {
    let query = query.unwrap_or(store::sqlite::DEFAULT_QUERY);
    match store::sqlite::SqliteStore::check_query(path, query) {
        Ok(Some(warning)) => {
            ngx_conf_log_error!(NGX_LOG_WARN, cf, "mail_auth_sqlite \"{path}\": {warning}");
        }
        Ok(None) => {}
        Err(e) => return Err(format!("mail_auth_sqlite \"{path}\": {e}")),
    }
    let s = store::sqlite::SqliteStore::new(path, query).map_err(|e| format!("mail_auth_sqlite \"{path}\": {e}"))?;
    Ok(Arc::new(s))
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_store(_cf: *mut ngx_conf_t, _path: &str, _query: Option<&str>) -> Result<Arc<dyn Store>, String> {
    Err("this build of the module has no SQLite support (cargo feature \"sqlite\")".into())
}

fn build_engine(cf: *mut ngx_conf_t, lc: &LocConf) -> Result<(Engine, Option<super::offload::PoolRef>), String> {
    if lc.passwd_file.is_some() && lc.sqlite.is_some() {
        return Err("\"mail_auth_passwd_file\" and \"mail_auth_sqlite\" cannot both be used in one location".into());
    }
    let store: Option<Arc<dyn Store>> = if let Some(path) = &lc.passwd_file {
        let s = store::passwd_file::PasswdFile::open(path)
            .map_err(|e| format!("mail_auth_passwd_file: {e}"))?;
        Some(Arc::new(s))
    } else if let Some(path) = &lc.sqlite {
        Some(sqlite_store(cf, path, lc.sqlite_query.as_deref())?)
    } else if lc.basic_header() {
        None
    } else {
        return Err("\"mail_auth\" needs a credential store: \"mail_auth_passwd_file\" or \"mail_auth_sqlite\" (or \"mail_auth_basic_header on\" with auth_basic/auth_request in the location)".into());
    };
    if let Some(s) = &store {
        for n in s.take_notices() {
            let level = match n.level {
                NoticeLevel::Error => NGX_LOG_ERR,
                NoticeLevel::Warn => NGX_LOG_WARN,
                NoticeLevel::Info => NGX_LOG_INFO,
            };
            ngx_conf_log_error!(level, cf, "mail_auth: {}", n.message);
        }
    }
    if lc.backends.iter().all(|b| b.is_none()) {
        ngx_conf_log_error!(NGX_LOG_WARN, cf, "\"mail_auth\" without any \"mail_auth_backend\": logins will succeed only for users whose store entry names a server");
    }
    let mut cfg = AuthConfig::default();
    for (p, b) in [Protocol::Imap, Protocol::Pop3, Protocol::Smtp].into_iter().zip(&lc.backends) {
        if let Some(b) = b {
            cfg.set_backend(p, b.clone());
        }
    }
    cfg.mx_backend.clone_from(&lc.backends[MX]);
    cfg.relay_domains = lc.relay_domains.clone().unwrap_or_default();
    cfg.master_user.clone_from(&lc.master_user);
    if let Some(w) = lc.fail_wait {
        cfg.fail_wait = w;
    }
    let thread_pool = match lc.thread_pool.as_deref() {
        Some("off") => None,
        _ if !cfg!(ngx_feature = "threads") => None,
        name => Some(
            super::offload::pool_add(cf, name.unwrap_or("default"))
                .ok_or("cannot register the thread pool for \"mail_auth\"")?,
        ),
    };
    let shared = Zones { cache: lc.cache.map(|c| c.zone), limit: lc.limit.map(|l| l.zone), stats: lc.stats };
    let engine = Engine {
        cfg,
        store,
        shared: Arc::new(shared),
        cache: lc.cache.map(|c| c.settings),
        limit: lc.limit.map(|l| l.cfg),
        offload: thread_pool.is_some(),
        concurrency: lc.concurrency.unwrap_or_default(),
        log_level: util::engine_level(lc.log_level()),
    };
    Ok((engine, thread_pool))
}
