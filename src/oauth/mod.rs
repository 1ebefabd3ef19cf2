//! OAuth 2.0 bearer tokens (SASL XOAUTH2 / OAUTHBEARER, RFC 7628): local verification of JWT
//! access tokens against a JWKS file, and the RFC 7628 §3.2.2 error answer.
//!
//! Plain Rust, no nginx types, no unsafe. Signatures are checked by `jsonwebtoken` (ring); the
//! header, the key selection and every claim rule are here, so each refusal has its own reason.
//!
//! Rules (fail closed):
//! * The token is a compact JWS (`header.payload.signature`). Its header's `alg` must be one
//!   the selected key allows: the key's own `alg` when the JWKS gives one, else the family of
//!   its `kty`/`crv` (RSA: RS256/384/512, PS256/384/512; EC P-256: ES256, P-384: ES384; OKP
//!   Ed25519: EdDSA; oct: HS256/384/512). `none` and any unknown `alg` are refused, and an HS
//!   token can never be checked with an RSA/EC key's public material (HS/RS confusion).
//! * Key selection: a `kid` in the header picks the keys with that `kid` (none: `unknown kid`);
//!   without a `kid` every key allowing the `alg` is tried.
//! * Claims: `iss` must equal the configured issuer, `aud` (a string or an array) must hold the
//!   configured audience; `exp` is required and `now < exp + skew`; `nbf`, when present,
//!   `nbf <= now + skew`; a configured scope must be one of the space-separated `scope` claim
//!   (or of the `scp` array).
//! * The mailbox claim (default `email`; `preferred_username`, `sub`, any string claim) must
//!   equal the SASL identity nginx sends as `Auth-User`, compared ASCII case-insensitively
//!   (mail operators treat `User@Example.ORG` and `user@example.org` as one mailbox; non-ASCII
//!   letters must match exactly). The claim's value is the user the login goes on with.
//! * The JWKS file is read at configuration time and re-read when it changes, by each worker's
//!   watcher thread (`mail-auth-watch`, as for the passwd-file: off the event loop), which looks
//!   at its identity (inode, size, mtime, ctime) every second. A file that stops parsing
//!   keeps the last good keys (and says so); one that never parsed makes every login a
//!   temporary failure.
//! * Tokens are never logged nor shown: reasons name the claim and the rule, never the value.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::store::watch::{self, FileId};

pub mod introspect;
#[cfg(test)]
pub(crate) mod tests;

pub use introspect::IntrospectConfig;

/// Default `mail_auth_oauth2_clock_skew`, seconds.
pub const DEFAULT_SKEW: u64 = 60;
/// Default mailbox claim.
pub const DEFAULT_USER_CLAIM: &str = "email";
/// Longest token looked at (nginx's own line limits are smaller).
pub const MAX_TOKEN_LEN: usize = 8192;

/// What a `mail_auth` location checks tokens against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthConfig {
    /// `jwks=PATH` (none: every token goes to introspection)
    pub jwks: Option<PathBuf>,
    /// `mail_auth_oauth2_issuer ISS`
    pub issuer: String,
    /// `mail_auth_oauth2_audience AUD`
    pub audience: String,
    /// `mail_auth_oauth2_scope SCOPE` (none: no scope required)
    pub scope: Option<String>,
    /// `mail_auth_oauth2_user_claim NAME`
    pub user_claim: String,
    /// `mail_auth_oauth2_clock_skew SECONDS`
    pub skew: u64,
    /// `mail_auth_oauth2_openid_configuration URL`: sent in the error answer.
    pub openid_configuration: Option<String>,
    /// `introspect=URL client_id=ID client_secret_file=PATH`: RFC 7662 for opaque tokens.
    pub introspect: Option<IntrospectConfig>,
}

impl OauthConfig {
    pub fn new(jwks: PathBuf, issuer: String, audience: String) -> OauthConfig {
        OauthConfig {
            jwks: Some(jwks),
            issuer,
            audience,
            scope: None,
            user_claim: DEFAULT_USER_CLAIM.to_string(),
            skew: DEFAULT_SKEW,
            openid_configuration: None,
            introspect: None,
        }
    }
}

/// `mail_auth_oauth2 jwks=PATH issuer=ISS audience=AUD [scope=SCOPE] [user_claim=NAME]
/// [clock_skew=TIME] [openid_configuration=URL] [introspect=URL client_id=ID
/// client_secret_file=PATH]`: the arguments to a configuration (`resolve` makes a relative
/// path absolute, as nginx does with its prefix). `jwks`, `introspect` or both; `issuer` and
/// `audience` are required with `jwks`, optional (checked when given) with `introspect` alone.
pub fn parse_directive(args: &[&str], resolve: impl Fn(&str) -> String) -> Result<OauthConfig, String> {
    const KNOWN: [&str; 10] = [
        "jwks",
        "issuer",
        "audience",
        "scope",
        "user_claim",
        "clock_skew",
        "openid_configuration",
        "introspect",
        "client_id",
        "client_secret_file",
    ];
    let mut seen: Vec<&str> = Vec::new();
    let (mut jwks, mut issuer, mut audience) = (None, None, None);
    let (mut url, mut client_id, mut secret, mut user_claim) = (None, None, None, None);
    let mut c = OauthConfig::new(PathBuf::new(), String::new(), String::new());
    for (k, v) in crate::config::key_values(args, &KNOWN)? {
        if seen.contains(&k) {
            return Err(format!("duplicate parameter \"{k}\""));
        }
        seen.push(k);
        if v.is_empty() || v.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
            return Err(format!("invalid value of \"{k}\""));
        }
        match k {
            "jwks" => jwks = Some(PathBuf::from(resolve(v))),
            "issuer" => issuer = Some(v.to_string()),
            "audience" => audience = Some(v.to_string()),
            "scope" if v.contains(' ') => return Err("\"scope\" is one scope token".into()),
            "scope" => c.scope = Some(v.to_string()),
            "user_claim" => user_claim = Some(v.to_string()),
            "introspect" => {
                introspect::check_url(v)?;
                url = Some(v.to_string())
            }
            "client_id" => client_id = Some(v.to_string()),
            "client_secret_file" => secret = Some(PathBuf::from(resolve(v))),
            "clock_skew" => {
                c.skew = u64::from(crate::config::parse_seconds(v).map_err(|e| format!("\"clock_skew\": {e}"))?)
            }
            _ => c.openid_configuration = Some(v.to_string()),
        }
    }
    if let Some(u) = &user_claim {
        c.user_claim.clone_from(u);
    }
    c.introspect = match (url, client_id, secret) {
        (None, None, None) => None,
        (Some(url), Some(client_id), Some(client_secret_file)) => Some(IntrospectConfig {
            url,
            client_id,
            client_secret_file,
            user_claim: user_claim.unwrap_or_else(|| introspect::DEFAULT_USER_CLAIM.to_string()),
        }),
        _ => return Err("introspect=URL needs client_id=ID and client_secret_file=PATH (and they need it)".into()),
    };
    if jwks.is_none() && c.introspect.is_none() {
        return Err("jwks=PATH or introspect=URL is required".into());
    }
    if jwks.is_some() {
        c.issuer = issuer.ok_or("issuer=ISS is required with jwks")?;
        c.audience = audience.ok_or("audience=AUD is required with jwks")?;
    } else {
        c.issuer = issuer.unwrap_or_default();
        c.audience = audience.unwrap_or_default();
    }
    c.jwks = jwks;
    Ok(c)
}

/// Why a token was refused (or could not be checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a compact JWS, bad base64/JSON, or too long.
    Malformed(&'static str),
    /// `alg` is `none`, unknown, or not allowed for the selected key.
    Alg(String),
    /// No key has the header's `kid`.
    UnknownKid,
    /// No key allows the header's `alg`.
    NoKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A required claim is absent or not of the right type.
    MissingClaim(String),
    /// The configured scope is not granted.
    InsufficientScope,
    /// The mailbox claim is not `Auth-User`.
    UserMismatch,
    /// No usable keys (the JWKS file never parsed): a temporary failure.
    Keys(String),
    /// The introspection endpoint said `"active": false`.
    Inactive,
    /// The introspection call failed (unreachable, timeout, not 200, not JSON): temporary.
    Introspection(String),
}

impl TokenError {
    /// RFC 7628 §3.2.2 `status`.
    pub fn status(&self) -> &'static str {
        match self {
            TokenError::InsufficientScope => "insufficient_scope",
            _ => "invalid_token",
        }
    }

    /// A temporary failure (the token may be good), not a refusal.
    pub fn is_temporary(&self) -> bool {
        matches!(self, TokenError::Keys(_) | TokenError::Introspection(_))
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(w) => write!(f, "malformed token: {w}"),
            TokenError::Alg(a) => write!(f, "token alg {a} not allowed"),
            TokenError::UnknownKid => f.write_str("unknown kid"),
            TokenError::NoKey => f.write_str("no key for the token's alg"),
            TokenError::BadSignature => f.write_str("bad signature"),
            TokenError::Expired => f.write_str("token expired (exp)"),
            TokenError::NotYetValid => f.write_str("token not yet valid (nbf)"),
            TokenError::WrongIssuer => f.write_str("wrong issuer (iss)"),
            TokenError::WrongAudience => f.write_str("wrong audience (aud)"),
            TokenError::MissingClaim(c) => write!(f, "claim \"{c}\" missing or not usable"),
            TokenError::InsufficientScope => f.write_str("required scope not granted"),
            TokenError::UserMismatch => f.write_str("token is for another user"),
            TokenError::Keys(e) => write!(f, "no usable JWKS: {e}"),
            TokenError::Inactive => f.write_str("token not active (introspection)"),
            TokenError::Introspection(e) => write!(f, "introspection failed: {e}"),
        }
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The mailbox claim's value.
    pub user: String,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
}

/// One key of the JWKS.
struct Key {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

const RSA_ALGS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];
const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

fn b64url(v: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).map_err(|e| e.to_string())
}

/// One JWK to a key. `Err`: why it is unusable.
fn parse_jwk(v: &Value) -> Result<Key, String> {
    let s = |name: &str| v.get(name).and_then(Value::as_str);
    let need = |name: &str| s(name).ok_or_else(|| format!("no \"{name}\""));
    if let Some(u) = s("use") {
        if u != "sig" {
            return Err(format!("\"use\": \"{u}\" is not sig"));
        }
    }
    let kty = need("kty")?;
    let (family, key): (Vec<Algorithm>, DecodingKey) = match kty {
        "RSA" => {
            let (n, e) = (need("n")?, need("e")?);
            if b64url(n)?.len() < 256 {
                return Err("RSA key shorter than 2048 bits".into());
            }
            (RSA_ALGS.to_vec(), DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?)
        }
        "EC" => {
            let alg = match need("crv")? {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                c => return Err(format!("EC curve {c} not supported")),
            };
            (vec![alg], DecodingKey::from_ec_components(need("x")?, need("y")?).map_err(|e| e.to_string())?)
        }
        "OKP" => {
            if need("crv")? != "Ed25519" {
                return Err("OKP curve not supported (Ed25519 only)".into());
            }
            (vec![Algorithm::EdDSA], DecodingKey::from_ed_components(need("x")?).map_err(|e| e.to_string())?)
        }
        "oct" => {
            let k = b64url(need("k")?)?;
            if k.len() < 32 {
                return Err("oct key shorter than 256 bits".into());
            }
            (HMAC_ALGS.to_vec(), DecodingKey::from_secret(&k))
        }
        k => return Err(format!("kty {k} not supported")),
    };
    let algs = match s("alg") {
        None => family,
        Some(a) => match family.iter().find(|f| alg_name(**f) == a) {
            Some(f) => vec![*f],
            None => return Err(format!("alg {a} does not fit kty {kty}")),
        },
    };
    Ok(Key { kid: s("kid").map(str::to_string), algs, key })
}

/// A JWKS document to its usable keys, and a line for each skipped one.
fn parse_jwks(text: &[u8]) -> Result<(Vec<Key>, Vec<String>), String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let Some(list) = v.get("keys").and_then(Value::as_array) else {
        return Err("no \"keys\" array".into());
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in list.iter().enumerate() {
        match parse_jwk(k) {
            Ok(k) => keys.push(k),
            Err(e) => skipped.push(format!("key #{i} skipped: {e}")),
        }
    }
    Ok((keys, skipped))
}

struct KeyState {
    id: Option<FileId>,
    checked: Option<Instant>,
    /// Shared with the verifications under way (the lock is not held while a signature is checked).
    keys: Arc<Vec<Key>>,
    /// Why the file could not be used (kept until it parses again).
    error: Option<String>,
    /// (a warning, the text)
    notices: Vec<(bool, String)>,
}

/// How often the JWKS file's identity is looked at.
const RECHECK: Duration = Duration::from_secs(1);

/// The verifier of one `mail_auth` location.
pub struct Verifier {
    pub cfg: OauthConfig,
    shared: Arc<Shared>,
    /// The introspection endpoint's client (`introspect=`).
    client: Option<introspect::Client>,
}

/// Where a token is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Locally, as a JWT against the JWKS file.
    Jwt,
    /// By the introspection endpoint (blocking: on the thread pool only).
    Introspect,
}

/// What the verifier shares with its watcher thread.
struct Shared {
    jwks: PathBuf,
    state: Mutex<KeyState>,
    /// The process whose watcher thread is running (a forked worker starts its own).
    started_in: AtomicU32,
    /// No watcher thread: verifications look at the file themselves (when due).
    inline: AtomicBool,
    stop: Mutex<Option<Arc<watch::Stop>>>,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        if let Some(stop) = lock(&self.shared.stop).take() {
            stop.stop();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One look of the watcher thread; `false` ends it (the verifier is gone).
fn tick(shared: &Weak<Shared>) -> bool {
    let Some(shared) = shared.upgrade() else { return false };
    refresh(&shared);
    true
}

/// Looks at the JWKS file and takes what it holds. The file is looked at and read without the
/// lock every token login takes on the event loop: a read that is slow (a hung network mount)
/// holds the watcher thread only.
fn refresh(shared: &Shared) {
    let seen = lock(&shared.state).id;
    let l = look(&shared.jwks, seen);
    apply(&shared.jwks, &mut lock(&shared.state), Instant::now(), l);
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads the JWKS file and the introspection client secret: `Err` when one is unusable
    /// (a configuration error).
    pub fn new(cfg: OauthConfig) -> Result<Verifier, String> {
        let client = cfg.introspect.as_ref().map(introspect::Client::new).transpose()?;
        let shared = Arc::new(Shared {
            jwks: cfg.jwks.clone().unwrap_or_default(),
            state: Mutex::new(KeyState {
                id: None,
                checked: None,
                keys: Arc::new(Vec::new()),
                error: None,
                notices: Vec::new(),
            }),
            started_in: AtomicU32::new(0),
            inline: AtomicBool::new(false),
            stop: Mutex::new(None),
        });
        let v = Verifier { cfg, shared, client };
        if v.cfg.jwks.is_some() {
            let mut st = v.lock();
            reload(&v.shared.jwks, &mut st, Instant::now());
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            st.notices.retain(|(warning, _)| *warning);
        }
        if v.cfg.introspect.is_some() && v.cfg.audience.is_empty() {
            // many endpoints call any token of the realm active, whichever client it was issued
            // to: without an audience, a token made for an unrelated application opens the mailbox
            v.lock().notices.push((
                true,
                "introspect= without audience=: a token issued to any client the endpoint knows is accepted (set audience= to the mail proxy's)".into(),
            ));
        }
        Ok(v)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyState> {
        lock(&self.shared.state)
    }

    /// The first verification in this process starts the watcher thread (`mail-auth-watch`,
    /// as for the passwd-file): the JWKS file is looked at and re-read off the event loop. If
    /// the thread cannot start, verifications look at it themselves.
    fn start(&self) {
        if self.cfg.jwks.is_none() {
            return;
        }
        let pid = crate::store::watch::process_id();
        if self.shared.started_in.load(Ordering::Acquire) == pid {
            return;
        }
        let mut stop = lock(&self.shared.stop);
        if self.shared.started_in.load(Ordering::Acquire) == pid {
            return;
        }
        // the keys this process holds were read when the configuration was loaded (weeks ago,
        // for a worker respawned since): the file is looked at once here, on the event loop as
        // the passwd-file's first lookup does (a stat; a read of at most MAX_JWKS_BYTES if it
        // changed), so a key removed since is not trusted by the logins that come before the
        // watcher's first look
        refresh(&self.shared);
        let weak = Arc::downgrade(&self.shared);
        match watch::spawn(RECHECK, move || tick(&weak)) {
            Ok(s) => {
                *stop = Some(s);
                self.shared.inline.store(false, Ordering::Release);
            }
            Err(e) => {
                self.lock().notices.push((
                    true,
                    format!("cannot start the {} thread ({e}): the JWKS file is checked by logins", watch::THREAD_NAME),
                ));
                self.shared.inline.store(true, Ordering::Release);
            }
        }
        self.shared.started_in.store(pid, Ordering::Release);
    }
}

/// What the JWKS file holds now, seen without the key state's lock (a stat and, when the file
/// changed, a read that never waits: a FIFO put at the path is refused, not waited on).
enum Look {
    Unchanged,
    Gone(String),
    Read(FileId, Result<(Vec<Key>, Vec<String>), String>),
}

/// The largest JWKS file read (a provider's set is a few KiB; the first token login of a worker
/// reads a changed file on the event loop).
const MAX_JWKS_BYTES: u64 = 1 << 20;

fn look(path: &std::path::Path, seen: Option<FileId>) -> Look {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Look::Gone(format!("JWKS file \"{}\": {e}", path.display())),
    };
    let id = FileId::of(&meta);
    if seen == Some(id) {
        return Look::Unchanged;
    }
    if meta.len() > MAX_JWKS_BYTES {
        return Look::Read(id, Err(format!("larger than {MAX_JWKS_BYTES} bytes")));
    }
    let parsed = watch::open_regular(path)
        .and_then(|(mut f, _)| {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut text).map_err(|e| e.to_string())?;
            Ok(text)
        })
        .and_then(|t| parse_jwks(&t));
    Look::Read(id, parsed)
}

/// Looks at the JWKS file and takes what it holds (under the caller's lock: at configuration
/// time, and on the event loop when no watcher thread could start).
fn reload(path: &std::path::Path, st: &mut KeyState, now: Instant) {
    let seen = st.id;
    apply(path, st, now, look(path, seen));
}

fn apply(path: &std::path::Path, st: &mut KeyState, now: Instant, look: Look) {
    st.checked = Some(now);
    let (id, parsed) = match look {
        Look::Unchanged => return,
        Look::Gone(msg) => {
            if st.error.as_ref() != Some(&msg) {
                st.notices.push((true, keeping(&msg, st.keys.len())));
            }
            st.error = Some(msg);
            st.id = None;
            return;
        }
        Look::Read(id, parsed) => (id, parsed),
    };
    st.id = Some(id);
    match parsed {
        Ok((keys, skipped)) => {
            // a JWKS that parses is the key set, even when none of its keys is usable: keys
            // removed from it (revoked) must not stay trusted
            st.notices
                .push((keys.is_empty(), format!("JWKS file \"{}\" loaded: {} key(s)", path.display(), keys.len())));
            st.error = keys
                .is_empty()
                .then(|| format!("JWKS file \"{}\": no usable key ({})", path.display(), skipped.join("; ")));
            st.notices.extend(skipped.into_iter().map(|s| (true, format!("JWKS file \"{}\": {s}", path.display()))));
            st.keys = Arc::new(keys);
        }
        Err(e) => {
            let msg = format!("JWKS file \"{}\": {e}", path.display());
            st.notices.push((true, keeping(&msg, st.keys.len())));
            st.error = Some(msg);
        }
    }
}

impl Verifier {
    /// Notices for the error log since the last call: `(true, _)` warnings (skipped keys,
    /// broken files), `(false, _)` news (a reload).
    pub fn take_notices(&self) -> Vec<(bool, String)> {
        std::mem::take(&mut self.lock().notices)
    }

    /// Verifies `token` for the SASL identity `auth_user` at `now` (seconds since the epoch).
    pub fn verify(&self, token: &[u8], auth_user: &str, now: u64) -> Result<Verified, TokenError> {
        let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed("not ASCII"))?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed("not a JWS (three dot-separated parts)"));
        };
        let header: Value = b64url(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed("header is not base64url JSON"))?;
        let alg_s = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed("no alg"))?;
        let alg: Algorithm = alg_s.parse().map_err(|_| TokenError::Alg(shown(alg_s)))?;
        if header.get("crit").is_some() {
            return Err(TokenError::Malformed("crit header not supported"));
        }
        let kid = header.get("kid").and_then(Value::as_str);

        let keys = {
            self.start();
            let mut st = self.lock();
            let now_i = Instant::now();
            let due = st.checked.is_none_or(|c| now_i.duration_since(c) >= RECHECK);
            if due && self.shared.inline.load(Ordering::Acquire) {
                reload(&self.shared.jwks, &mut st, now_i);
            }
            if st.keys.is_empty() {
                return Err(TokenError::Keys(st.error.clone().unwrap_or_else(|| "no keys".into())));
            }
            Arc::clone(&st.keys)
        };
        let claims = {
            let candidates: Vec<&Key> = keys.iter().filter(|k| kid.is_none() || k.kid.as_deref() == kid).collect();
            if candidates.is_empty() {
                return Err(TokenError::UnknownKid);
            }
            let usable: Vec<&Key> = candidates.into_iter().filter(|k| k.algs.contains(&alg)).collect();
            if usable.is_empty() {
                return Err(if kid.is_some() { TokenError::Alg(alg_name(alg)) } else { TokenError::NoKey });
            }
            let mut v = Validation::new(alg);
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            v.required_spec_claims.clear();
            let mut result = Err(TokenError::BadSignature);
            for k in usable {
                match jsonwebtoken::decode::<Value>(token, &k.key, &v) {
                    Ok(d) => {
                        result = Ok(d.claims);
                        break;
                    }
                    Err(e) => {
                        use jsonwebtoken::errors::ErrorKind as K;
                        match e.kind() {
                            K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {}
                            K::InvalidAlgorithm => result = Err(TokenError::Alg(alg_name(alg))),
                            _ => return Err(TokenError::Malformed("payload is not base64url JSON")),
                        }
                    }
                }
            }
            result?
        };
        self.check_claims(&claims, auth_user, now, &self.cfg.user_claim)
    }

    /// Where `token` is checked: with both a JWKS and an introspection endpoint, a token that
    /// is a compact JWS whose header's `kid` is absent or one of the JWKS's goes to the JWT
    /// path, any other (opaque, or an unknown `kid`) to introspection.
    pub fn route(&self, token: &[u8]) -> Route {
        if self.client.is_none() {
            return Route::Jwt;
        }
        if self.cfg.jwks.is_none() {
            return Route::Introspect;
        }
        let header = std::str::from_utf8(token).ok().and_then(|t| {
            let mut parts = t.split('.');
            let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return None;
            };
            b64url(h).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()).filter(|h| h.get("alg").is_some())
        });
        let Some(header) = header else { return Route::Introspect };
        let Some(kid) = header.get("kid") else { return Route::Jwt };
        self.start();
        let known = self.lock().keys.iter().any(|k| k.kid.is_some() && k.kid.as_deref() == kid.as_str());
        if known {
            Route::Jwt
        } else {
            Route::Introspect
        }
    }

    /// Has the introspection endpoint check `token` for `auth_user` at `now`. Blocking (an
    /// HTTP call of up to [`introspect::TIMEOUT`]): call it on a thread-pool thread only.
    pub fn introspect(&self, token: &[u8], auth_user: &str, now: u64) -> Result<Verified, TokenError> {
        let Some(client) = &self.client else {
            return Err(TokenError::Introspection("no introspect= endpoint configured".into()));
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        if token.is_empty() || token.iter().any(|b| !b.is_ascii_graphic()) {
            return Err(TokenError::Malformed("not a bearer token (RFC 6750 characters)"));
        }
        let answer = client.call(token)?;
        self.check_introspection(&answer, auth_user, now)
    }

    /// The rules on an introspection answer (RFC 7662 §2.2).
    pub fn check_introspection(&self, answer: &Value, auth_user: &str, now: u64) -> Result<Verified, TokenError> {
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Inactive);
        }
        let claim = self.cfg.introspect.as_ref().map_or(introspect::DEFAULT_USER_CLAIM, |i| i.user_claim.as_str());
        self.check_claims(answer, auth_user, now, claim)
    }

    /// The claim rules, after the signature (or the introspection's `active`). An empty
    /// configured issuer or audience (introspection without them) is not checked.
    fn check_claims(&self, c: &Value, auth_user: &str, now: u64, user_claim: &str) -> Result<Verified, TokenError> {
        let cfg = &self.cfg;
        let num = |name: &str| c.get(name).and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)));
        let exp = num("exp").ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        if now >= exp.saturating_add(cfg.skew) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = c.get("nbf") {
            let nbf = nbf
                .as_u64()
                .or_else(|| nbf.as_f64().map(|f| f as u64))
                .ok_or_else(|| TokenError::MissingClaim("nbf".into()))?;
            if nbf > now.saturating_add(cfg.skew) {
                return Err(TokenError::NotYetValid);
            }
        }
        if !cfg.issuer.is_empty() {
            match c.get("iss").and_then(Value::as_str) {
                None => return Err(TokenError::MissingClaim("iss".into())),
                Some(i) if i != cfg.issuer => return Err(TokenError::WrongIssuer),
                Some(_) => {}
            }
        }
        if !cfg.audience.is_empty() {
            let aud_ok = match c.get("aud") {
                Some(Value::String(a)) => *a == cfg.audience,
                Some(Value::Array(l)) => l.iter().any(|a| a.as_str() == Some(cfg.audience.as_str())),
                _ => return Err(TokenError::MissingClaim("aud".into())),
            };
            if !aud_ok {
                return Err(TokenError::WrongAudience);
            }
        }
        if let Some(want) = &cfg.scope {
            let granted = match (c.get("scope"), c.get("scp")) {
                (Some(Value::String(s)), _) => s.split(' ').any(|s| s == want),
                (_, Some(Value::Array(l))) => l.iter().any(|s| s.as_str() == Some(want.as_str())),
                (_, Some(Value::String(s))) => s.split(' ').any(|s| s == want),
                _ => false,
            };
            if !granted {
                return Err(TokenError::InsufficientScope);
            }
        }
        let user = c
            .get(user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty() && !u.chars().any(char::is_control))
            .ok_or_else(|| TokenError::MissingClaim(user_claim.to_string()))?;
        if !user.eq_ignore_ascii_case(auth_user) {
            return Err(TokenError::UserMismatch);
        }
        // an address the identity provider says it has not verified names no mailbox: a user may
        // put any address on their own profile there (Keycloak lets them unless told otherwise),
        // alice's too (OpenID Connect Core §5.1; some providers send the flag as a string)
        if user_claim == "email" && matches!(c.get("email_verified"), Some(v) if *v == false || *v == "false") {
            return Err(TokenError::MissingClaim("email_verified".into()));
        }
        Ok(Verified { user: user.to_string(), exp })
    }

    /// The RFC 7628 §3.2.2 error for `Auth-Error-SASL`: base64 of
    /// `{"status":..., "scope":..., "openid-configuration":...}`.
    pub fn error_sasl(&self, e: &TokenError) -> String {
        let mut m = serde_json::Map::new();
        m.insert("status".into(), Value::String(e.status().into()));
        if let Some(s) = &self.cfg.scope {
            m.insert("scope".into(), Value::String(s.clone()));
        }
        if let Some(u) = &self.cfg.openid_configuration {
            m.insert("openid-configuration".into(), Value::String(u.clone()));
        }
        STANDARD.encode(Value::Object(m).to_string())
    }
}

fn keeping(msg: &str, n: usize) -> String {
    if n > 0 {
        format!("{msg} (keeping the {n} key(s) loaded before)")
    } else {
        msg.to_string()
    }
}

/// A short printable rendering of a header value for a reason.
fn shown(s: &str) -> String {
    crate::protocol::printable(s.as_bytes(), 32)
}
