//! PBKDF2 (RFC 8018) as other systems store it, one derived block of HMAC-SHA-1/256/512:
//!
//! | stored form | written by | salt | derived key |
//! |---|---|---|---|
//! | `{PBKDF2}$1$<salt>$<rounds>$<hex>` | Dovecot (`doveadm pw -s PBKDF2 [-r N]`), HMAC-SHA-1 | the text itself | 40 hex digits |
//! | `$pbkdf2$<rounds>$<salt>$<key>` (SHA-1), `$pbkdf2-sha256$...`, `$pbkdf2-sha512$...` | passlib (Mailu, many Python apps) | passlib's "ab64" | "ab64" |
//! | `{PBKDF2}$pbkdf2-sha512$...` (any of the three above) | Mailu 1.x: passlib's hash behind Dovecot's scheme name | | |
//! | `pbkdf2_sha256$<rounds>$<salt>$<key>`, `pbkdf2_sha1$...` | Django (passlib's `django_pbkdf2_*`) | the text itself | standard base64, padded |
//!
//! "ab64" is base64 with `.` for `+` and no padding (`+` is read too, as passlib does). The
//! key is the PRF's output size (20/32/64 bytes), compared in constant time. Rounds are
//! decimal in 1..=[`ROUNDS_MAX`] (passlib and Django write no leading zero, so none is read
//! there; Dovecot's parser allows them), salts at most [`SALT_MAX`] bytes (passlib's own
//! limit). Anything else is malformed: a hostile store line costs at most `ROUNDS_MAX` rounds.
//!
//! PBKDF2 with a one-block output is a short loop over HMAC (`hmac`, `sha1`, `sha2`, already
//! dependencies), so it is written here rather than adding the `pbkdf2` crate; the keyed HMAC
//! state is computed once and cloned per round, as that crate does.

#![forbid(unsafe_code)]

use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{ct_eq, malformed, SchemeError};
use crate::hex;

/// The most rounds a stored value may ask for (Django 5 writes ~10^6; 10^7 SHA-512 rounds take
/// a few seconds of one core).
pub(super) const ROUNDS_MAX: u32 = 10_000_000;
/// The longest salt, in bytes (passlib's maximum).
pub(super) const SALT_MAX: usize = 1024;
/// ab64 text of `SALT_MAX` bytes.
const SALT_AB64_MAX: usize = (SALT_MAX * 4).div_ceil(3);

/// passlib's ab64 once `.` is mapped back to `+`: no padding; non-zero trailing bits are read
/// as Python's base64 reads them.
const AB64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Prf {
    Sha1,
    Sha256,
    Sha512,
}

impl Prf {
    fn len(self) -> usize {
        match self {
            Prf::Sha1 => 20,
            Prf::Sha256 => 32,
            Prf::Sha512 => 64,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Dovecot,
    Passlib,
    Django,
}

pub(super) struct Pbkdf2 {
    form: Form,
    prf: Prf,
    rounds: u32,
    salt: Vec<u8>,
    key: Vec<u8>,
}

fn name(form: Form, prf: Prf) -> &'static str {
    match (form, prf) {
        (Form::Dovecot, _) => "PBKDF2",
        (Form::Passlib, Prf::Sha1) => "PBKDF2-SHA1",
        (Form::Passlib, Prf::Sha256) => "PBKDF2-SHA256",
        (Form::Passlib, Prf::Sha512) => "PBKDF2-SHA512",
        (Form::Django, Prf::Sha1) => "DJANGO-PBKDF2-SHA1",
        (Form::Django, _) => "DJANGO-PBKDF2-SHA256",
    }
}

/// A passlib (`$pbkdf2$`, `$pbkdf2-sha256$`, `$pbkdf2-sha512$`) or Django (`pbkdf2_sha1$`,
/// `pbkdf2_sha256$`) value, as an htpasswd-style store holds it without a scheme name.
pub(super) fn is_pbkdf2(s: &str) -> bool {
    s.starts_with("$pbkdf2$") || s.starts_with("$pbkdf2-") || s.starts_with("pbkdf2_")
}

/// The value after `{PBKDF2}`: Dovecot's `$1$...`, or (Mailu) a passlib value.
pub(super) fn parse_braced(rest: &str) -> Result<Pbkdf2, SchemeError> {
    match rest.strip_prefix("$1$") {
        Some(fields) => parse_dovecot(fields),
        None if rest.starts_with("$pbkdf2") => parse(rest),
        None => Err(malformed("PBKDF2 (neither $1$ nor a passlib $pbkdf2 value)")),
    }
}

/// A passlib or Django value (see [`is_pbkdf2`]).
pub(super) fn parse(s: &str) -> Result<Pbkdf2, SchemeError> {
    let (form, prf, fields) = if let Some(r) = s.strip_prefix("$pbkdf2$") {
        (Form::Passlib, Prf::Sha1, r)
    } else if let Some(r) = s.strip_prefix("$pbkdf2-sha256$") {
        (Form::Passlib, Prf::Sha256, r)
    } else if let Some(r) = s.strip_prefix("$pbkdf2-sha512$") {
        (Form::Passlib, Prf::Sha512, r)
    } else if let Some(r) = s.strip_prefix("pbkdf2_sha256$") {
        (Form::Django, Prf::Sha256, r)
    } else if let Some(r) = s.strip_prefix("pbkdf2_sha1$") {
        (Form::Django, Prf::Sha1, r)
    } else {
        let what = s.split('$').find(|f| !f.is_empty()).unwrap_or_default();
        return Err(SchemeError::Unknown(what.chars().take(32).collect()));
    };
    let what = name(form, prf);
    let (rounds, salt, key) = three(fields).ok_or_else(|| malformed(format!("{what} (fields)")))?;
    let rounds = parse_rounds(rounds, false).ok_or_else(|| malformed(format!("{what} (rounds)")))?;
    let (salt, key) = if form == Form::Passlib {
        let salt = if salt.len() <= SALT_AB64_MAX { ab64(salt) } else { None };
        (salt, if key.len() <= 88 { ab64(key) } else { None })
    } else {
        let salt = (!salt.is_empty() && salt.len() <= SALT_MAX).then(|| salt.as_bytes().to_vec());
        (salt, if key.len() <= 88 { STANDARD.decode(key).ok() } else { None })
    };
    let salt = salt.filter(|s| s.len() <= SALT_MAX).ok_or_else(|| malformed(format!("{what} (salt)")))?;
    let key = key.filter(|k| k.len() == prf.len()).ok_or_else(|| malformed(format!("{what} (key)")))?;
    Ok(Pbkdf2 { form, prf, rounds, salt, key })
}

/// Dovecot's `<salt>$<rounds>$<hex>` after `{PBKDF2}$1$`.
fn parse_dovecot(fields: &str) -> Result<Pbkdf2, SchemeError> {
    let (salt, rounds, key) = three(fields).ok_or_else(|| malformed("PBKDF2 (fields)"))?;
    if salt.len() > SALT_MAX {
        return Err(malformed("PBKDF2 (salt)"));
    }
    let rounds = parse_rounds(rounds, true).ok_or_else(|| malformed("PBKDF2 (rounds)"))?;
    let key = if key.len() == 40 { hex::decode(key.as_bytes()) } else { None };
    let key = key.ok_or_else(|| malformed("PBKDF2 (key: 40 hex digits)"))?;
    Ok(Pbkdf2 { form: Form::Dovecot, prf: Prf::Sha1, rounds, salt: salt.as_bytes().to_vec(), key })
}

/// Exactly three `$`-separated fields.
fn three(s: &str) -> Option<(&str, &str, &str)> {
    let mut it = s.split('$');
    let r = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some(r)
}

/// Decimal rounds in 1..=ROUNDS_MAX.
fn parse_rounds(s: &str, leading_zeros: bool) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if s.starts_with('0') && !leading_zeros {
        return None;
    }
    let n: u64 = s.parse().ok()?;
    u32::try_from(n).ok().filter(|n| (1..=ROUNDS_MAX).contains(n))
}

/// passlib's ab64 (`.` for `+`, no padding; `+` accepted too).
fn ab64(s: &str) -> Option<Vec<u8>> {
    let std: String = s.chars().map(|c| if c == '.' { '+' } else { c }).collect();
    AB64.decode(std).ok()
}

/// PBKDF2's first (and here only) block: U1 = PRF(P, S || INT(1)), Ui = PRF(P, Ui-1), T = xor.
fn derive<M: Mac + KeyInit + Clone>(password: &[u8], salt: &[u8], rounds: u32) -> Vec<u8> {
    // HMAC takes keys of any length: new_from_slice can't fail for it.
    let Ok(keyed) = <M as KeyInit>::new_from_slice(password) else {
        return Vec::new();
    };
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = mac.finalize().into_bytes();
    let mut t = u.to_vec();
    for _ in 1..rounds {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes();
        for (x, y) in t.iter_mut().zip(u.iter()) {
            *x ^= y;
        }
    }
    t
}

/// Microseconds per 1000 rounds on the reference machine (see `cost_estimate` in mod.rs; two
/// compression-function calls per round; SHA-1 and SHA-256 with the CPU's SHA extensions,
/// measured by the ignored test `pbkdf2_cost_calibration` next to bcrypt and SHA-crypt).
fn us_per_1000_rounds(prf: Prf) -> u64 {
    match prf {
        Prf::Sha1 | Prf::Sha256 => 100,
        Prf::Sha512 => 600,
    }
}

impl Pbkdf2 {
    pub(super) fn name(&self) -> &'static str {
        name(self.form, self.prf)
    }

    /// Estimated microseconds for one verification (see `cost_estimate` in mod.rs).
    pub(super) fn cost(&self) -> u64 {
        u64::from(self.rounds) * us_per_1000_rounds(self.prf) / 1000 + 1
    }

    pub(super) fn verify(&self, password: &[u8]) -> bool {
        let derived = match self.prf {
            Prf::Sha1 => derive::<Hmac<Sha1>>(password, &self.salt, self.rounds),
            Prf::Sha256 => derive::<Hmac<Sha256>>(password, &self.salt, self.rounds),
            Prf::Sha512 => derive::<Hmac<Sha512>>(password, &self.salt, self.rounds),
        };
        ct_eq(&derived, &self.key)
    }
}

#[cfg(test)]
#[path = "pbkdf2_tests.rs"]
mod tests;
