//! Password schemes found in real htpasswd and Dovecot passwd-files, verified in constant time.
//!
//! | stored form | scheme |
//! |---|---|
//! | `$2a$` `$2b$` `$2y$` `$2x$`, `{BLF-CRYPT}`, `{BCRYPT}` | bcrypt |
//! | `$6$`, `{SHA512-CRYPT}` / `$5$`, `{SHA256-CRYPT}` | SHA-crypt (with `rounds=N`) |
//! | `$1$`, `{MD5-CRYPT}`, `{MD5}` / `$apr1$` | MD5-crypt / Apache APR1 |
//! | `{CRYPT}...` | any of the crypt forms above |
//! | `{SHA}`, `{SSHA}`, `{SHA256}`, `{SSHA256}`, `{SHA512}`, `{SSHA512}` (base64, or `.HEX`) | salted/unsalted SHA |
//! | `{PLAIN-MD5}` (hex), `{LDAP-MD5}` (base64) | MD5 digest |
//! | `{PLAIN}`, `{CLEARTEXT}`, `{PLAIN-B64}` | stored password |
//! | `$argon2i$` `$argon2id$` (PHC), `{ARGON2I}`, `{ARGON2ID}` | Argon2 |
//!
//! Scheme names in braces are case-insensitive. Anything else is an error: the user fails
//! closed, never matches.

mod md5crypt;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeError {
    /// The scheme is not one we verify (the name, for the log).
    Unknown(String),
    /// The stored value has the scheme's prefix but not its form.
    Malformed(String),
}

impl fmt::Display for SchemeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemeError::Unknown(s) => write!(f, "unsupported password scheme \"{s}\""),
            SchemeError::Malformed(s) => write!(f, "malformed {s} hash"),
        }
    }
}

impl std::error::Error for SchemeError {}

/// What `hash_password` produces (for the admin tool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Bcrypt { cost: u32 },
    Sha512Crypt,
    Ssha512,
}

/// The parsed form of a stored password.
enum Stored<'a> {
    Bcrypt(&'a str),
    ShaCrypt { bits: u16, rounds: usize, salt: &'a str, hash: &'a str },
    Md5Crypt { magic: &'static str, salt: &'a str, hash: &'a str },
    Digest { kind: DigestKind, digest: Vec<u8>, salt: Vec<u8> },
    Plain(Vec<u8>),
    Argon2(&'a str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DigestKind {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl DigestKind {
    fn len(self) -> usize {
        match self {
            DigestKind::Md5 => 16,
            DigestKind::Sha1 => 20,
            DigestKind::Sha256 => 32,
            DigestKind::Sha512 => 64,
        }
    }
    fn compute(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
        fn run<D: Digest>(p: &[u8], s: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(p);
            d.update(s);
            d.finalize().to_vec()
        }
        match self {
            DigestKind::Md5 => run::<md5::Md5>(password, salt),
            DigestKind::Sha1 => run::<Sha1>(password, salt),
            DigestKind::Sha256 => run::<Sha256>(password, salt),
            DigestKind::Sha512 => run::<Sha512>(password, salt),
        }
    }
}

/// Splits `{SCHEME}rest` into (upper-cased scheme, rest).
fn braced(stored: &str) -> Option<(String, &str)> {
    let rest = stored.strip_prefix('{')?;
    let end = rest.find('}')?;
    Some((rest[..end].to_ascii_uppercase(), &rest[end + 1..]))
}

fn malformed(name: &str) -> SchemeError {
    SchemeError::Malformed(name.to_string())
}

fn parse(stored: &str) -> Result<Stored<'_>, SchemeError> {
    if let Some((scheme, rest)) = braced(stored) {
        return parse_braced(&scheme, rest);
    }
    parse_crypt(stored)
}

/// The crypt(3)-style forms (`$id$...`) and PHC argon2 strings.
fn parse_crypt(s: &str) -> Result<Stored<'_>, SchemeError> {
    if s.starts_with("$2a$") || s.starts_with("$2b$") || s.starts_with("$2y$") || s.starts_with("$2x$") {
        // $2x$ is the old buggy variant; bcrypt verifies it as $2a$ would, so refuse it.
        if s.starts_with("$2x$") {
            return Err(SchemeError::Unknown("bcrypt $2x$".into()));
        }
        let cost: Option<u32> = s.get(4..6).and_then(|c| c.parse().ok());
        if s.len() != 60 || !matches!(cost, Some(4..=31)) || s.as_bytes()[6] != b'$' {
            return Err(malformed("bcrypt"));
        }
        return Ok(Stored::Bcrypt(s));
    }
    if let Some(rest) = s.strip_prefix("$6$").map(|r| (512u16, r)).or_else(|| s.strip_prefix("$5$").map(|r| (256u16, r))) {
        let (bits, rest) = rest;
        let name = if bits == 512 { "SHA512-CRYPT" } else { "SHA256-CRYPT" };
        let (rounds, rest) = match rest.strip_prefix("rounds=") {
            Some(r) => {
                let (n, rest) = r.split_once('$').ok_or_else(|| malformed(name))?;
                let n: usize = n.parse().map_err(|_| malformed(name))?;
                // glibc clamps out-of-range values; so do we.
                (n.clamp(1000, 999_999_999), rest)
            }
            None => (5000, rest),
        };
        let (salt, hash) = rest.rsplit_once('$').ok_or_else(|| malformed(name))?;
        let want = if bits == 512 { 86 } else { 43 };
        if hash.len() != want || salt.len() > 16 || salt.contains('$') {
            return Err(malformed(name));
        }
        return Ok(Stored::ShaCrypt { bits, rounds, salt, hash });
    }
    if s.starts_with("$1$") || s.starts_with("$apr1$") {
        let (magic, salt, hash) = md5crypt::split(s).ok_or_else(|| malformed("MD5-CRYPT"))?;
        return Ok(Stored::Md5Crypt { magic, salt, hash });
    }
    if s.starts_with("$argon2i$") || s.starts_with("$argon2id$") {
        let parsed = argon2::PasswordHash::new(s).map_err(|_| malformed("ARGON2"))?;
        if parsed.hash.is_none() || parsed.salt.is_none() {
            return Err(malformed("ARGON2"));
        }
        return Ok(Stored::Argon2(s));
    }
    if s.starts_with("$argon2d$") {
        return Err(SchemeError::Unknown("argon2d".into()));
    }
    let what = if s.starts_with('$') {
        s.split('$').nth(1).map(|id| format!("${id}$")).unwrap_or_else(|| "$".into())
    } else if s.len() == 13 {
        "DES crypt".to_string()
    } else {
        "no scheme prefix".to_string()
    };
    Err(SchemeError::Unknown(what))
}

fn decode_digest(name: &str, kind: DigestKind, v: &str, salted: bool, hex: bool) -> Result<Stored<'static>, SchemeError> {
    let raw = if hex { decode_hex(v) } else { B64.decode(v.trim()).ok() }.ok_or_else(|| malformed(name))?;
    let n = kind.len();
    if raw.len() < n || (!salted && raw.len() != n) || (salted && raw.len() == n) {
        return Err(malformed(name));
    }
    Ok(Stored::Digest { kind, digest: raw[..n].to_vec(), salt: raw[n..].to_vec() })
}

fn decode_hex(v: &str) -> Option<Vec<u8>> {
    let v = v.trim().as_bytes();
    if v.len() % 2 != 0 {
        return None;
    }
    v.chunks(2)
        .map(|p| std::str::from_utf8(p).ok().and_then(|s| u8::from_str_radix(s, 16).ok()))
        .collect()
}

fn parse_braced<'a>(scheme: &str, rest: &'a str) -> Result<Stored<'a>, SchemeError> {
    let (base, hex) = match scheme.strip_suffix(".HEX") {
        Some(b) => (b, true),
        None => (scheme.strip_suffix(".B64").unwrap_or(scheme), false),
    };
    match base {
        "PLAIN" | "CLEARTEXT" if !hex => Ok(Stored::Plain(rest.as_bytes().to_vec())),
        "PLAIN-B64" => B64.decode(rest.trim()).map(Stored::Plain).map_err(|_| malformed(scheme)),
        "SHA" | "SHA1" => decode_digest(scheme, DigestKind::Sha1, rest, false, hex),
        "SSHA" => decode_digest(scheme, DigestKind::Sha1, rest, true, hex),
        "SHA256" => decode_digest(scheme, DigestKind::Sha256, rest, false, hex),
        "SSHA256" => decode_digest(scheme, DigestKind::Sha256, rest, true, hex),
        "SHA512" => decode_digest(scheme, DigestKind::Sha512, rest, false, hex),
        "SSHA512" => decode_digest(scheme, DigestKind::Sha512, rest, true, hex),
        "PLAIN-MD5" => decode_digest(scheme, DigestKind::Md5, rest, false, true),
        "LDAP-MD5" => decode_digest(scheme, DigestKind::Md5, rest, false, false),
        "SMD5" => decode_digest(scheme, DigestKind::Md5, rest, true, hex),
        "BLF-CRYPT" | "BCRYPT" | "SHA512-CRYPT" | "SHA256-CRYPT" | "MD5-CRYPT" | "MD5" | "CRYPT"
        | "ARGON2I" | "ARGON2ID" => {
            let inner = parse_crypt(rest)?;
            let fits = match (&inner, base) {
                (_, "CRYPT") => true,
                (Stored::Bcrypt(_), "BLF-CRYPT" | "BCRYPT") => true,
                (Stored::ShaCrypt { bits: 512, .. }, "SHA512-CRYPT") => true,
                (Stored::ShaCrypt { bits: 256, .. }, "SHA256-CRYPT") => true,
                (Stored::Md5Crypt { magic: "$1$", .. }, "MD5-CRYPT" | "MD5") => true,
                (Stored::Argon2(s), "ARGON2I") => s.starts_with("$argon2i$"),
                (Stored::Argon2(s), "ARGON2ID") => s.starts_with("$argon2id$"),
                _ => false,
            };
            if fits {
                Ok(inner)
            } else {
                Err(malformed(scheme))
            }
        }
        _ => Err(SchemeError::Unknown(scheme.to_string())),
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Does `password` match `stored`? Constant-time in the compared values. `Err`: the stored
/// value can't be used (unknown scheme, malformed); callers fail the login.
pub fn verify(stored: &str, password: &[u8]) -> Result<bool, SchemeError> {
    match parse(stored)? {
        Stored::Bcrypt(h) => bcrypt::verify(password, h).map_err(|_| malformed("bcrypt")),
        Stored::ShaCrypt { bits, rounds, salt, hash } => {
            let computed = if bits == 512 {
                let p = sha_crypt::Sha512Params::new(rounds).map_err(|_| malformed("SHA512-CRYPT"))?;
                sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p)
            } else {
                let p = sha_crypt::Sha256Params::new(rounds).map_err(|_| malformed("SHA256-CRYPT"))?;
                sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p)
            }
            .map_err(|_| malformed("SHA-CRYPT"))?;
            Ok(ct_eq(computed.as_bytes(), hash.as_bytes()))
        }
        Stored::Md5Crypt { magic, salt, hash } => {
            let computed = md5crypt::hash_part(password, salt.as_bytes(), magic.as_bytes());
            Ok(ct_eq(computed.as_bytes(), hash.as_bytes()))
        }
        Stored::Digest { kind, digest, salt } => Ok(ct_eq(&kind.compute(password, &salt), &digest)),
        Stored::Plain(p) => Ok(ct_eq(&p, password)),
        Stored::Argon2(h) => {
            use argon2::PasswordVerifier;
            let parsed = argon2::PasswordHash::new(h).map_err(|_| malformed("ARGON2"))?;
            match argon2::Argon2::default().verify_password(password, &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(_) => Err(malformed("ARGON2")),
            }
        }
    }
}

/// Costly to verify (tens of milliseconds or more): run it off the event loop.
pub fn is_costly(stored: &str) -> bool {
    match parse(stored) {
        Ok(Stored::Bcrypt(_)) | Ok(Stored::Argon2(_)) => true,
        Ok(Stored::ShaCrypt { rounds, .. }) => rounds > 5000,
        _ => false,
    }
}

/// The scheme's name, for logs.
pub fn scheme_name(stored: &str) -> &'static str {
    match parse(stored) {
        Ok(Stored::Bcrypt(_)) => "BLF-CRYPT",
        Ok(Stored::ShaCrypt { bits: 512, .. }) => "SHA512-CRYPT",
        Ok(Stored::ShaCrypt { .. }) => "SHA256-CRYPT",
        Ok(Stored::Md5Crypt { magic: "$apr1$", .. }) => "APR1",
        Ok(Stored::Md5Crypt { .. }) => "MD5-CRYPT",
        Ok(Stored::Digest { kind, salt, .. }) => match (kind, salt.is_empty()) {
            (DigestKind::Md5, true) => "MD5",
            (DigestKind::Md5, false) => "SMD5",
            (DigestKind::Sha1, true) => "SHA",
            (DigestKind::Sha1, false) => "SSHA",
            (DigestKind::Sha256, true) => "SHA256",
            (DigestKind::Sha256, false) => "SSHA256",
            (DigestKind::Sha512, true) => "SHA512",
            (DigestKind::Sha512, false) => "SSHA512",
        },
        Ok(Stored::Plain(_)) => "PLAIN",
        Ok(Stored::Argon2(s)) if s.starts_with("$argon2id$") => "ARGON2ID",
        Ok(Stored::Argon2(_)) => "ARGON2I",
        Err(_) => "unknown",
    }
}

/// The stored password itself, for schemes that keep it recoverable (APOP/CRAM-MD5 need it).
pub fn plain_password(stored: &str) -> Option<Vec<u8>> {
    match parse(stored) {
        Ok(Stored::Plain(p)) => Some(p),
        _ => None,
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::getrandom(&mut b).is_err() {
        // No OS randomness: derive from the clock and the address space layout (only used for
        // salts and dummy passwords, never for secrets that guard anything).
        let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &b);
        let d = Sha256::digest(seed.as_bytes());
        for (i, x) in b.iter_mut().enumerate() {
            *x = d[i % d.len()];
        }
    }
    b
}

fn crypt_salt<const N: usize>() -> String {
    const A: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    random_bytes::<N>().iter().map(|b| A[(*b & 63) as usize] as char).collect()
}

/// Makes a new stored password (for the admin tool). bcrypt is written `$2y$` as `htpasswd -B`
/// does; SHA-512-crypt as `openssl passwd -6`; SSHA512 as `doveadm pw -s SSHA512`.
pub fn hash_password(kind: HashKind, password: &[u8]) -> Result<String, SchemeError> {
    match kind {
        HashKind::Bcrypt { cost } => bcrypt::hash_with_result(password, cost)
            .map(|h| h.format_for_version(bcrypt::Version::TwoY))
            .map_err(|e| SchemeError::Malformed(format!("bcrypt (cost {cost}): {e}"))),
        HashKind::Sha512Crypt => {
            let salt = crypt_salt::<16>();
            let p = sha_crypt::Sha512Params::new(5000).map_err(|_| malformed("SHA512-CRYPT"))?;
            let h = sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p).map_err(|_| malformed("SHA512-CRYPT"))?;
            Ok(format!("$6${salt}${h}"))
        }
        HashKind::Ssha512 => {
            let salt = random_bytes::<8>();
            let mut raw = DigestKind::Sha512.compute(password, &salt);
            raw.extend_from_slice(&salt);
            Ok(format!("{{SSHA512}}{}", B64.encode(raw)))
        }
    }
}

/// A valid hash of the same family and cost as `like`, for a random password nobody knows:
/// verifying an unknown user against it costs what a known user costs, and never matches.
/// Made once per family/cost and kept.
pub fn dummy_hash(like: &str) -> &'static str {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let (key, make): (String, Box<dyn Fn(&[u8]) -> Option<String>>) = match parse(like) {
        Ok(Stored::Bcrypt(h)) => {
            let cost: u32 = h.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(10).min(16);
            (format!("bcrypt{cost}"), Box::new(move |p| bcrypt::hash(p, cost).ok()))
        }
        Ok(Stored::ShaCrypt { bits, rounds, .. }) => {
            let rounds = rounds.min(5_000_000);
            (
                format!("sha{bits}-{rounds}"),
                Box::new(move |p| {
                    let salt = crypt_salt::<16>();
                    let (id, h) = if bits == 512 {
                        ("6", sha_crypt::sha512_crypt_b64(p, salt.as_bytes(), &sha_crypt::Sha512Params::new(rounds).ok()?).ok()?)
                    } else {
                        ("5", sha_crypt::sha256_crypt_b64(p, salt.as_bytes(), &sha_crypt::Sha256Params::new(rounds).ok()?).ok()?)
                    };
                    Some(format!("${id}$rounds={rounds}${salt}${h}"))
                }),
            )
        }
        Ok(Stored::Argon2(h)) => {
            let params = argon2::PasswordHash::new(h).ok().and_then(|p| argon2::Params::try_from(&p).ok());
            let alg = if h.starts_with("$argon2id$") { argon2::Algorithm::Argon2id } else { argon2::Algorithm::Argon2i };
            let params = params.unwrap_or_default();
            (
                format!("argon2-{alg:?}-{}-{}-{}", params.m_cost(), params.t_cost(), params.p_cost()),
                Box::new(move |p| {
                    use argon2::password_hash::{PasswordHasher, SaltString};
                    let salt = SaltString::encode_b64(&random_bytes::<16>()).ok()?;
                    argon2::Argon2::new(alg, argon2::Version::V0x13, params.clone())
                        .hash_password(p, &salt)
                        .ok()
                        .map(|h| h.to_string())
                }),
            )
        }
        Ok(Stored::Md5Crypt { magic, .. }) => (
            format!("md5crypt{magic}"),
            Box::new(move |p| {
                let salt = crypt_salt::<8>();
                Some(format!("{magic}{salt}${}", md5crypt::hash_part(p, salt.as_bytes(), magic.as_bytes())))
            }),
        ),
        // Salted digests and plain text are cheap: any cheap valid hash does.
        _ => ("ssha512".to_string(), Box::new(|p| hash_password(HashKind::Ssha512, p).ok())),
    };
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(h) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return h;
    }
    // Computed outside the lock (it may take a while); a racing thread's value is as good.
    let password = random_bytes::<24>();
    let made = make(&password).unwrap_or_else(|| "{SSHA512}invalid".to_string());
    let mut g = cache.lock().unwrap_or_else(|e| e.into_inner());
    *g.entry(key).or_insert_with(|| Box::leak(made.into_boxed_str()))
}

#[cfg(test)]
mod tests;
