//! Password schemes found in real htpasswd files and Dovecot passwd-files, verified in
//! constant time. One file per family; this file parses the stored form and dispatches.
//!
//! | stored form | family (file) |
//! |---|---|
//! | `$2a$` `$2b$` `$2y$`, `{BLF-CRYPT}`, `{BCRYPT}`, `{CRYPT}$2y$...` | bcrypt (`blf.rs`) |
//! | `$6$` / `$5$` with optional `rounds=N`, `{SHA512-CRYPT}` / `{SHA256-CRYPT}`, `{CRYPT}` | SHA-crypt (`shacrypt.rs`) |
//! | `$1$`, `{MD5-CRYPT}`, `{MD5}$1$...`, `{CRYPT}$1$...` / Apache `$apr1$` | MD5-crypt (`md5crypt.rs`) |
//! | `{SHA}` `{SHA1}` `{SHA256}` `{SHA512}`, `{SSHA}` `{SSHA256}` `{SSHA512}`, `{SMD5}`, `{PLAIN-MD5}`, `{LDAP-MD5}`, `{MD5}` (not `$1$`) | digests (`digest.rs`) |
//! | `{PLAIN}`, `{CLEARTEXT}`, `{CLEAR}`, `{PLAIN-B64}` | stored password (`plain.rs`) |
//! | `$argon2i$` `$argon2id$` (PHC), `{ARGON2I}`, `{ARGON2ID}` | Argon2 (`argon.rs`) |
//! | `{CRAM-MD5}` / `{HMAC-MD5}` (Dovecot's HMAC-MD5 key states) | challenge-response (`cram.rs`) |
//! | `{PBKDF2}` (Dovecot), `$pbkdf2$` `$pbkdf2-sha256$` `$pbkdf2-sha512$` (passlib), `pbkdf2_sha1$` `pbkdf2_sha256$` (Django) | PBKDF2 (`pbkdf2.rs`) |
//!
//! [`verify_challenge`] checks the APOP and CRAM-MD5 responses nginx mail passes on: they need
//! the password itself (a plain scheme) or, for CRAM-MD5, the `{CRAM-MD5}` form.
//!
//! As in Dovecot, scheme names in braces are case-insensitive and may carry an encoding suffix
//! (`.B64`, `.BASE64`, `.HEX`) for the digest and plain schemes; an unsalted digest whose
//! length is twice its size is read as hex. Anything else is an error: the user fails closed,
//! never matches.

#![forbid(unsafe_code)]

mod argon;
mod blf;
mod cram;
mod digest;
mod md5crypt;
mod pbkdf2;
mod plain;
mod shacrypt;

use std::fmt;

use subtle::ConstantTimeEq;

use crate::hex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeError {
    /// The scheme is not one we verify (its name, for the log).
    Unknown(String),
    /// The stored value has the scheme's prefix but not its form (what is wrong, for the log).
    Malformed(String),
    /// The stored value's parameters ask for more work than [`MAX_WORK_US`] (its scheme, the
    /// estimated seconds).
    TooCostly(&'static str, u64),
}

impl fmt::Display for SchemeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemeError::Unknown(s) => write!(f, "unsupported password scheme \"{s}\""),
            SchemeError::Malformed(s) => write!(f, "malformed {s} hash"),
            SchemeError::TooCostly(s, secs) => write!(
                f,
                "{s} hash whose parameters ask for about {secs} s a verification (at most {} s are taken)",
                MAX_WORK_US / 1_000_000
            ),
        }
    }
}

impl std::error::Error for SchemeError {}

/// What `hash_password` produces (for the admin tool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `$2y$NN$...` as `htpasswd -B -C NN` writes it (cost 4..=31).
    Bcrypt { cost: u32 },
    /// `$6$salt$...` (5000 rounds, 16-character salt) as `openssl passwd -6` writes it.
    Sha512Crypt,
    /// `{SSHA512}base64(digest+salt)` as `doveadm pw -s SSHA512` writes it.
    Ssha512,
}

pub(crate) fn malformed(what: impl Into<String>) -> SchemeError {
    SchemeError::Malformed(what.into())
}

/// Equal lengths and equal bytes, in time independent of where they differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Random bytes for salts.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::getrandom(&mut b).is_err() {
        // No OS randomness (should not happen on Linux): fall back to hashing the clock, the
        // thread and an address. Only used for salts, which guard nothing.
        use sha2::Digest;
        let seed = format!("{:?}{:?}{:p}", std::time::SystemTime::now(), std::thread::current().id(), &b);
        let d = sha2::Sha256::digest(seed.as_bytes());
        for (i, x) in b.iter_mut().enumerate() {
            *x = d[i % d.len()];
        }
    }
    b
}

/// The crypt(3) alphabet (also bcrypt's, in another order).
pub(crate) const CRYPT_ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Which bytes are in [`CRYPT_ALPHABET`].
const IS_CRYPT_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < CRYPT_ALPHABET.len() {
        t[CRYPT_ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// `c` is in [`CRYPT_ALPHABET`] (a table: a search of the alphabet per character cost a
/// bcrypt hash's check ~10,000 instructions, range tests ~1,000; every request for a bcrypt
/// account checks its hash).
pub(crate) fn is_crypt_char(c: u8) -> bool {
    IS_CRYPT_CHAR[usize::from(c)]
}

/// `N` random characters of the crypt alphabet (uniform: 256 is a multiple of 64).
pub(crate) fn crypt_salt<const N: usize>() -> String {
    random_bytes::<N>().iter().map(|b| CRYPT_ALPHABET[(*b & 63) as usize] as char).collect()
}

/// The parsed form of a stored password.
enum Stored<'a> {
    Bcrypt(blf::Bcrypt<'a>),
    ShaCrypt(shacrypt::ShaCrypt<'a>),
    Md5Crypt(md5crypt::Md5Crypt<'a>),
    Digest(digest::Digest),
    Plain(plain::Plain),
    Argon2(Box<argon::Argon2<'a>>),
    CramMd5(cram::CramMd5),
    Pbkdf2(pbkdf2::Pbkdf2),
}

/// Encoding override after a `.` in a braced scheme name (Dovecot's `{SHA.HEX}`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Encoding {
    Default,
    Base64,
    Hex,
}

/// `{NAME}rest` split into `NAME` and `rest` (a byte loop: `split_once` with a `char` goes
/// through a generic searcher, a few hundred instructions for a 6-byte prefix).
fn braced(stored: &str) -> Option<(&str, &str)> {
    let rest = stored.strip_prefix('{')?;
    let end = rest.bytes().position(|b| b == b'}')?;
    // '}' is ASCII: both sides are on character boundaries
    Some((rest.get(..end)?, rest.get(end + 1..)?))
}

/// `name` split at its first `.` (the encoding suffix), by bytes as [`braced`].
fn dotted(name: &str) -> Option<(&str, &str)> {
    let at = name.bytes().position(|b| b == b'.')?;
    Some((name.get(..at)?, name.get(at + 1..)?))
}

fn parse(stored: &str) -> Result<Stored<'_>, SchemeError> {
    let p = match braced(stored) {
        Some((name, rest)) => parse_braced(name, rest),
        None => parse_crypt(stored),
    }?;
    let us = estimate(&p);
    if us > MAX_WORK_US {
        return Err(SchemeError::TooCostly(scheme_name_of(&p), us / 1_000_000));
    }
    Ok(p)
}

/// What a failed verification that cost about `own_us` ([`cost_estimate`]s) still verifies so
/// that the failure costs about what `template`'s verification costs (an unknown user's): the
/// template itself when the own work is negligible (under a tenth of it), nothing when it is
/// within a twentieth, else values of the template's own scheme with lower parameters whose
/// work adds up to the difference. A verification of these never matches (made-up values).
///
/// Padding with the template alone *added* its cost to the account's: a wrong password of a
/// bcrypt(10) account beside one bcrypt(11) account cost ~168 ms, an unknown user ~112 ms.
/// bcrypt's work doubles with each cost step: the difference is made of the template's own
/// value at lower costs (the difference's binary digits; exact in bcrypt's work). Other
/// templates are topped up with Dovecot-form PBKDF2-SHA1 rounds (0.1 µs each), whose work
/// does not grow with the password's length.
pub fn padding(template: &str, own_us: u64) -> Vec<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let Ok(p) = parse(template) else { return Vec::new() };
    let full = estimate(&p);
    let deficit = full.saturating_sub(own_us);
    if deficit.saturating_mul(10) >= full.saturating_mul(9) {
        return vec![Cow::Borrowed(template)];
    }
    if deficit.saturating_mul(20) < full {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Stored::Bcrypt(h) = &p {
        // `$2y$NN$` in the template (after a `{BLF-CRYPT}`/`{CRYPT}` prefix if any)
        let Some(at) = template.find("$2") else { return out };
        let mut units = deficit / BCRYPT_US_PER_UNIT;
        for cost in (4..h.cost()).rev() {
            if units >= 1 << cost {
                units -= 1 << cost;
                out.push(Cow::Owned(format!("{}{cost:02}{}", &template[..at + 4], &template[at + 6..])));
            }
        }
        return out;
    }
    // PBKDF2-SHA1 at 0.1 µs a round, at most its ROUNDS_MAX a value
    let mut rounds = deficit.saturating_mul(10);
    while rounds >= 1000 {
        let n = rounds.min(u64::from(pbkdf2::ROUNDS_MAX));
        rounds -= n;
        out.push(Cow::Owned(format!("{{PBKDF2}}$1$paddingpadding${n}${}", "0".repeat(40))));
    }
    out
}

/// [`estimate`]'s µs per unit of bcrypt work (2^cost units).
const BCRYPT_US_PER_UNIT: u64 = 55;

/// Why `stored` can't be verified (`None`: it can), for load-time warnings.
pub fn problem(stored: &str) -> Option<String> {
    parse(stored).err().map(|e| e.to_string())
}

/// A stored value whose parameters ask for more work than this ([`cost_estimate`], in µs) is
/// malformed: never verified, never a store's timing template. bcrypt up to cost 16, SHA-crypt
/// up to ~20 million rounds, Argon2 up to ~6.6 million KiB-passes (1 GiB, t = 6) are taken;
/// one line with bcrypt cost 31 (~33 hours) would otherwise become the template every unknown
/// user's login pays, and hold every verification slot for good.
pub const MAX_WORK_US: u64 = 4_000_000;

/// The crypt(3)-style forms (`$id$...`) and PHC argon2 strings, as htpasswd files hold them.
fn parse_crypt(s: &str) -> Result<Stored<'_>, SchemeError> {
    if blf::is_bcrypt(s) {
        return blf::parse(s).map(Stored::Bcrypt);
    }
    if s.starts_with("$5$") || s.starts_with("$6$") {
        return shacrypt::parse(s).map(Stored::ShaCrypt);
    }
    if s.starts_with("$1$") || s.starts_with("$apr1$") {
        return md5crypt::parse(s).map(Stored::Md5Crypt);
    }
    if s.starts_with("$argon2") {
        return argon::parse(s).map(|h| Stored::Argon2(Box::new(h)));
    }
    if pbkdf2::is_pbkdf2(s) {
        return pbkdf2::parse(s).map(Stored::Pbkdf2);
    }
    let what = if let Some(rest) = s.strip_prefix('$') {
        format!("${}$", rest.split('$').next().unwrap_or(""))
    } else if s.len() == 13 {
        "DES crypt".to_string()
    } else if s.is_empty() {
        "empty".to_string()
    } else {
        "no scheme prefix".to_string()
    };
    Err(SchemeError::Unknown(what))
}

fn parse_braced<'a>(name: &str, rest: &'a str) -> Result<Stored<'a>, SchemeError> {
    // a digest named as doveadm and the admin tool write it (upper case, no encoding suffix):
    // no copy of the name
    if let Some(kind) = digest::Kind::from_scheme(name) {
        return digest::parse(kind, name, Encoding::Default, rest).map(Stored::Digest);
    }
    // upper-cased on the stack (scheme names are short)
    let mut buf = [0u8; 32];
    let owned: String;
    let upper: &str = match buf.get_mut(..name.len()) {
        Some(b) => {
            b.copy_from_slice(name.as_bytes());
            b.make_ascii_uppercase();
            match std::str::from_utf8(b) {
                Ok(u) => u,
                Err(_) => {
                    owned = name.to_ascii_uppercase();
                    &owned
                }
            }
        }
        None => {
            owned = name.to_ascii_uppercase();
            &owned
        }
    };
    let (base, encoding) = match dotted(upper) {
        None => (upper, Encoding::Default),
        Some((b, "B64" | "BASE64")) => (b, Encoding::Base64),
        Some((b, "HEX")) => (b, Encoding::Hex),
        Some(_) => return Err(SchemeError::Unknown(name.to_string())),
    };
    if let Some(kind) = digest::Kind::from_scheme(base) {
        return digest::parse(kind, upper, encoding, rest).map(Stored::Digest);
    }
    if plain::is_plain(base) {
        return plain::parse(base, encoding, rest).map(Stored::Plain);
    }
    if matches!(base, "CRAM-MD5" | "HMAC-MD5") && encoding != Encoding::Base64 {
        return cram::parse(rest).map(Stored::CramMd5);
    }
    if base == "PBKDF2" && encoding == Encoding::Default {
        return pbkdf2::parse_braced(rest).map(Stored::Pbkdf2);
    }
    // The crypt families: the value is the crypt string itself, no encoding suffix.
    let crypt_scheme = matches!(
        base,
        "BLF-CRYPT"
            | "BCRYPT"
            | "SHA512-CRYPT"
            | "SHA256-CRYPT"
            | "MD5-CRYPT"
            | "MD5"
            | "CRYPT"
            | "ARGON2I"
            | "ARGON2ID"
    );
    if !crypt_scheme || encoding != Encoding::Default {
        return Err(SchemeError::Unknown(name.to_string()));
    }
    if base == "MD5" && !rest.starts_with("$1$") {
        // Dovecot's {MD5}: MD5-crypt when it starts with $1$, else a PLAIN-MD5 digest.
        return digest::parse(digest::Kind::PlainMd5, upper, encoding, rest).map(Stored::Digest);
    }
    let inner = parse_crypt(rest)?;
    let fits = match (&inner, base) {
        (Stored::Bcrypt(_), "BLF-CRYPT" | "BCRYPT" | "CRYPT") => true,
        (Stored::ShaCrypt(h), "SHA512-CRYPT") => h.bits() == 512,
        (Stored::ShaCrypt(h), "SHA256-CRYPT") => h.bits() == 256,
        (Stored::ShaCrypt(_), "CRYPT") => true,
        (Stored::Md5Crypt(h), "MD5-CRYPT" | "MD5" | "CRYPT") => !h.is_apr1(),
        (Stored::Argon2(h), "ARGON2I") => !h.is_id(),
        (Stored::Argon2(h), "ARGON2ID") => h.is_id(),
        _ => false,
    };
    if fits {
        Ok(inner)
    } else {
        Err(malformed(format!("{{{upper}}} (holds another scheme's hash)")))
    }
}

/// Does `password` match `stored`? The comparison is constant-time in the compared values.
/// `Err`: the stored value can't be used (unknown scheme, malformed); callers fail the login.
pub fn verify(stored: &str, password: &[u8]) -> Result<bool, SchemeError> {
    match parse(stored)? {
        Stored::Bcrypt(h) => h.verify(password),
        Stored::ShaCrypt(h) => h.verify(password),
        Stored::Md5Crypt(h) => Ok(h.verify(password)),
        Stored::Digest(h) => Ok(h.verify(password)),
        Stored::Plain(h) => Ok(h.verify(password)),
        Stored::Argon2(h) => h.verify(password),
        Stored::CramMd5(h) => Ok(h.verify(password)),
        Stored::Pbkdf2(h) => Ok(h.verify(password)),
    }
}

/// The crypt(3) schemes (SHA-crypt, MD5-crypt and Apache's `$apr1$`) never match a password of
/// this many bytes or more, and do not hash it: libxcrypt (Debian's crypt(3), which Dovecot
/// uses) refuses it the same way. Their work grows with the password's length (SHA-crypt's
/// with its square): 4,000 bytes against a default `$6$` hash are ~150 ms.
pub const CRYPT_MAX_PASSWORD: usize = 512;

/// Past this many estimated microseconds ([`cost_estimate`]) a verification belongs on the
/// thread pool (SHA512-CRYPT at its default 5000 rounds with a short password is about 1 ms).
const COSTLY_US: u64 = 1000;

/// [`is_costly`] for a password of `password_len` bytes: a crypt(3) scheme also is when the
/// password's length makes it so (each of its rounds hashes the password about twice: a
/// password of 100 bytes makes a default `$6$` hash three times as slow as one of 8).
pub fn is_costly_for(stored: &str, password_len: usize) -> bool {
    is_costly(stored) || crypt_cost_for(stored, password_len) > COSTLY_US
}

/// The estimated microseconds of a crypt(3) verification of a password of `password_len` bytes
/// (0 for other schemes, and for passwords they refuse unhashed): [`cost_estimate`] (made for
/// a short password) scaled by the hash blocks a round takes, plus SHA-crypt's initial
/// digest of the password repeated as many times as it has bytes.
fn crypt_cost_for(stored: &str, password_len: usize) -> u64 {
    // (every crypt(3) form has a `$`; a digest's base64 has none: no second parse for those)
    if password_len >= CRYPT_MAX_PASSWORD || !stored.contains('$') {
        return 0;
    }
    // a round hashes the last digest, the password 13/7 times and the salt 2/3 times, padded
    let round_blocks = |digest: usize, salt: usize, len: usize, block: usize, pad: usize| {
        (digest + salt * 2 / 3 + len * 13 / 7 + pad).div_ceil(block) as u64
    };
    let parsed = parse(stored);
    let (rounds, short, long, initial) = match &parsed {
        Ok(Stored::ShaCrypt(h)) => {
            let (digest, block, pad) = if h.bits() == 512 { (64, 128, 17) } else { (32, 64, 9) };
            let b = |len| round_blocks(digest, h.salt_len(), len, block, pad);
            (h.rounds() as u64, b(8), b(password_len), (password_len * password_len / block) as u64)
        }
        Ok(Stored::Md5Crypt(h)) => {
            let b = |len| round_blocks(16, h.salt_len(), len, 64, 9);
            (1000, b(8), b(password_len), 0)
        }
        _ => return 0,
    };
    // [`cost_estimate`] is for a short password: `rounds × short` blocks
    let ns_per_block = parsed.map_or(0, |p| estimate(&p)).saturating_mul(1000) / rounds.saturating_mul(short).max(1);
    rounds.saturating_mul(long).saturating_add(initial).saturating_mul(ns_per_block) / 1000
}

/// Costly to verify (milliseconds or more): run it off the event loop. bcrypt and Argon2
/// always; SHA-crypt when it asks for more than the default 5000 rounds (5000 take ~1 ms with a
/// short password; [`is_costly_for`] counts a long one too).
pub fn is_costly(stored: &str) -> bool {
    // a braced digest, plain-text or CRAM-MD5 value is never costly, valid or not: known from
    // its name, without decoding it (the verification decodes it once)
    if let Some((name, _)) = braced(stored) {
        // the usual spelling (upper case, no encoding suffix) first: no copy of the name
        if digest::Kind::from_scheme(name).is_some() {
            return false;
        }
        let mut buf = [0u8; 32];
        if let Some(upper) = buf.get_mut(..name.len()) {
            upper.copy_from_slice(name.as_bytes());
            upper.make_ascii_uppercase();
            if let Ok(upper) = std::str::from_utf8(upper) {
                let base = dotted(upper).map_or(upper, |(b, _)| b);
                if digest::Kind::from_scheme(base).is_some()
                    || plain::is_plain(base)
                    || matches!(base, "CRAM-MD5" | "HMAC-MD5")
                {
                    return false;
                }
            }
        }
    }
    match parse(stored) {
        Ok(Stored::Bcrypt(_)) | Ok(Stored::Argon2(_)) => true,
        Ok(Stored::ShaCrypt(h)) => h.rounds() > 5000,
        // Over ~1 ms, as SHA512-CRYPT past its default 5000 rounds.
        Ok(Stored::Pbkdf2(h)) => h.cost() > 1000,
        _ => false,
    }
}

/// A rough cost of one verification against `stored`, in microseconds on a reference machine
/// (one core of a current x86-64 server running this crate's implementations; measured by the
/// ignored test `cost_estimate_calibration`), from the scheme and its parameters: bcrypt
/// doubles with each cost step, SHA-crypt and Argon2 grow linearly with their rounds / memory
/// times passes, MD5-crypt (and `$apr1$`) is fixed, digests and plain text are about one. Only
/// the order is meant to be reliable (which of two hashes is slower to check). An unusable
/// value (unknown scheme, malformed) is 0.
pub fn cost_estimate(stored: &str) -> u64 {
    parse(stored).map_or(0, |p| estimate(&p))
}

/// [`cost_estimate`] of a parsed stored value.
fn estimate(parsed: &Stored<'_>) -> u64 {
    match parsed {
        // 55 µs per 2^cost (cost 10: 56 ms, cost 12: 225 ms).
        Stored::Bcrypt(h) => BCRYPT_US_PER_UNIT.saturating_mul(1u64 << h.cost().min(40)),
        // 0.2 µs per SHA-512 round, 0.1 µs per SHA-256 round (5000 rounds: 1 ms / 0.5 ms).
        Stored::ShaCrypt(h) => {
            let per_10 = if h.bits() == 512 { 2 } else { 1 };
            (h.rounds() as u64).saturating_mul(per_10) / 10 + 1
        }
        // 1000 fixed MD5 iterations.
        Stored::Md5Crypt(_) => 110,
        // 0.6 µs per KiB and pass (m=64 MiB, t=3: 118 ms).
        Stored::Argon2(h) => h.work_kib().saturating_mul(3) / 5 + 1,
        // Linear in the rounds, per PRF (see pbkdf2.rs).
        Stored::Pbkdf2(h) => h.cost(),
        Stored::Digest(_) | Stored::Plain(_) | Stored::CramMd5(_) => 1,
    }
}

/// The scheme's name, for logs ("unknown" when `stored` is not a hash we can verify).
pub fn scheme_name(stored: &str) -> &'static str {
    parse(stored).map_or("unknown", |p| scheme_name_of(&p))
}

fn scheme_name_of(p: &Stored<'_>) -> &'static str {
    match p {
        Stored::Bcrypt(_) => "BLF-CRYPT",
        Stored::ShaCrypt(h) => h.name(),
        Stored::Md5Crypt(h) => h.name(),
        Stored::Digest(h) => h.name(),
        Stored::Plain(_) => "PLAIN",
        Stored::Argon2(h) => h.name(),
        Stored::CramMd5(_) => "CRAM-MD5",
        Stored::Pbkdf2(h) => h.name(),
    }
}

/// The stored password itself, for the schemes that keep it recoverable ({PLAIN}, {CLEARTEXT},
/// {CLEAR}, {PLAIN-B64} and their .B64/.HEX forms); APOP/CRAM-MD5 need it.
pub fn plain_password(stored: &str) -> Option<Vec<u8>> {
    match parse(stored) {
        Ok(Stored::Plain(p)) => Some(p.into_bytes()),
        _ => None,
    }
}

/// A challenge-response login method nginx mail passes on with `Auth-Salt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// POP3 APOP: `hex(MD5(salt || password))` (RFC 1939).
    Apop,
    /// CRAM-MD5: `hex(HMAC-MD5(password, salt))` (RFC 2195).
    CramMd5,
}

/// Why a challenge response could not be checked against a stored password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    /// The stored scheme (named) keeps neither the password nor what the method needs.
    Unsuitable(&'static str),
    /// The stored value is unusable.
    Scheme(SchemeError),
    /// The stored password is empty: no password, so no login by any method (a password login
    /// refuses an empty password before the lookup; a challenge's response to the empty key
    /// is computable by anyone).
    Empty,
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeError::Unsuitable(s) => write!(
                f,
                "the stored password ({s}) can't check this method: it needs {{PLAIN}} (or {{CRAM-MD5}} for CRAM-MD5)"
            ),
            ChallengeError::Scheme(e) => e.fmt(f),
            ChallengeError::Empty => f.write_str("the stored password is empty (no password: no login)"),
        }
    }
}

/// Checks an APOP / CRAM-MD5 `response` (hex digits, either case, as the client sent them)
/// to `challenge` (nginx's Auth-Salt) against `stored`, in constant time.
pub fn verify_challenge(
    kind: Challenge,
    stored: &str,
    challenge: &[u8],
    response: &[u8],
) -> Result<bool, ChallengeError> {
    let parsed = parse(stored).map_err(ChallengeError::Scheme)?;
    let empty = match &parsed {
        Stored::Plain(p) => p.as_bytes().is_empty(),
        Stored::CramMd5(h) => h.is_empty_password(),
        _ => false,
    };
    if empty {
        return Err(ChallengeError::Empty);
    }
    let expected = match (&parsed, kind) {
        (Stored::Plain(p), Challenge::Apop) => cram::apop(challenge, p.as_bytes()),
        (Stored::Plain(p), Challenge::CramMd5) => cram::hmac_md5(p.as_bytes(), challenge),
        (Stored::CramMd5(h), Challenge::CramMd5) => h.hmac(challenge),
        _ => return Err(ChallengeError::Unsuitable(scheme_name(stored))),
    };
    Ok(match hex::decode(response) {
        Some(got) => ct_eq(&got, &expected),
        None => false,
    })
}

/// A response to `challenge` computed from a known password (for tests and tools).
pub fn challenge_response(kind: Challenge, password: &[u8], challenge: &[u8]) -> String {
    hex::encode(&match kind {
        Challenge::Apop => cram::apop(challenge, password),
        Challenge::CramMd5 => cram::hmac_md5(password, challenge),
    })
}

/// `{CRAM-MD5}` of a password, as `doveadm pw -s CRAM-MD5` writes it.
pub fn cram_md5_stored(password: &[u8]) -> String {
    cram::hash(password)
}

/// Makes a new stored password (for the admin tool): bcrypt as `$2y$` like `htpasswd -B`,
/// SHA-512-crypt like `openssl passwd -6`, SSHA512 like `doveadm pw -s SSHA512`.
pub fn hash_password(kind: HashKind, password: &[u8]) -> Result<String, SchemeError> {
    match kind {
        HashKind::Bcrypt { cost } => blf::hash(password, cost),
        HashKind::Sha512Crypt => shacrypt::hash(password, 512, None),
        HashKind::Ssha512 => Ok(digest::hash_ssha512(password)),
    }
}

#[cfg(test)]
mod tests;
