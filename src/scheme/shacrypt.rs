//! SHA-crypt (`$5$` SHA-256, `$6$` SHA-512, Drepper's spec, glibc/libxcrypt), on the
//! `sha-crypt` crate's primitive; the encoded result is compared in constant time here.
//!
//! Form: `$6$[rounds=N$]salt$hash`, read as libxcrypt (Debian's crypt(3), which Dovecot and
//! perl use) reads it: N is plain decimal without a leading zero in 1000..=999999999 (default
//! 5000); the salt is at most 16 printable ASCII characters other than `$ : ; * ! \`. What
//! libxcrypt refuses is malformed here too. (Old glibc clamped N instead; real tools never
//! write such values.)

#![forbid(unsafe_code)]

use super::{crypt_salt, ct_eq, is_crypt_char, malformed, SchemeError};

const ROUNDS_DEFAULT: usize = 5000;
const ROUNDS_MIN: usize = 1000;
const ROUNDS_MAX: usize = 999_999_999;

pub(super) struct ShaCrypt<'a> {
    bits: u16,
    rounds: usize,
    salt: &'a str,
    hash: &'a str,
}

fn name(bits: u16) -> &'static str {
    if bits == 512 {
        "SHA512-CRYPT"
    } else {
        "SHA256-CRYPT"
    }
}

pub(super) fn parse(s: &str) -> Result<ShaCrypt<'_>, SchemeError> {
    let (bits, rest) = if let Some(r) = s.strip_prefix("$6$") {
        (512u16, r)
    } else if let Some(r) = s.strip_prefix("$5$") {
        (256u16, r)
    } else {
        return Err(SchemeError::Unknown("not SHA-crypt".into()));
    };
    let what = name(bits);
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let bad = || malformed(format!("{what} (rounds)"));
            let (n, rest) = r.split_once('$').ok_or_else(bad)?;
            if n.is_empty() || n.len() > 9 || n.starts_with('0') || !n.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let n: usize = n.parse().map_err(|_| bad())?;
            if !(ROUNDS_MIN..=ROUNDS_MAX).contains(&n) {
                return Err(bad());
            }
            (n, rest)
        }
        None => (ROUNDS_DEFAULT, rest),
    };
    let (salt, hash) = rest.split_once('$').ok_or_else(|| malformed(what))?;
    if salt.len() > 16 || !salt.bytes().all(|c| c.is_ascii_graphic() && !b":;*!\\".contains(&c)) {
        return Err(malformed(format!("{what} (salt)")));
    }
    let want = if bits == 512 { 86 } else { 43 };
    if hash.len() != want || !hash.bytes().all(is_crypt_char) {
        return Err(malformed(format!("{what} (hash length or characters)")));
    }
    Ok(ShaCrypt { bits, rounds, salt, hash })
}

/// The encoded hash part for these parameters.
fn compute(bits: u16, password: &[u8], salt: &[u8], rounds: usize) -> Result<String, SchemeError> {
    let r = if bits == 512 {
        let p = sha_crypt::Sha512Params::new(rounds).map_err(|_| malformed("SHA512-CRYPT (rounds)"))?;
        sha_crypt::sha512_crypt_b64(password, salt, &p)
    } else {
        let p = sha_crypt::Sha256Params::new(rounds).map_err(|_| malformed("SHA256-CRYPT (rounds)"))?;
        sha_crypt::sha256_crypt_b64(password, salt, &p)
    };
    r.map_err(|_| malformed(name(bits)))
}

impl ShaCrypt<'_> {
    pub(super) fn bits(&self) -> u16 {
        self.bits
    }

    pub(super) fn rounds(&self) -> usize {
        self.rounds
    }

    /// The salt's length (at most 16).
    pub(super) fn salt_len(&self) -> usize {
        self.salt.len()
    }

    pub(super) fn name(&self) -> &'static str {
        name(self.bits)
    }

    pub(super) fn verify(&self, password: &[u8]) -> Result<bool, SchemeError> {
        // as libxcrypt: a password this long never matches (and is not hashed: the work grows
        // with the square of its length)
        if password.len() >= super::CRYPT_MAX_PASSWORD {
            return Ok(false);
        }
        let computed = compute(self.bits, password, self.salt.as_bytes(), self.rounds)?;
        Ok(ct_eq(computed.as_bytes(), self.hash.as_bytes()))
    }
}

/// A new hash with a random 16-character salt. `rounds: None` writes the default form without
/// `rounds=` (what `openssl passwd -6` writes).
pub(super) fn hash(password: &[u8], bits: u16, rounds: Option<usize>) -> Result<String, SchemeError> {
    if password.len() >= super::CRYPT_MAX_PASSWORD {
        return Err(SchemeError::Malformed(format!(
            "{} (a password of {} bytes or more never matches; libxcrypt refuses it too)",
            name(bits),
            super::CRYPT_MAX_PASSWORD
        )));
    }
    let salt = crypt_salt::<16>();
    let id = if bits == 512 { 6 } else { 5 };
    match rounds {
        None => Ok(format!("${id}${salt}${}", compute(bits, password, salt.as_bytes(), ROUNDS_DEFAULT)?)),
        Some(r) => Ok(format!("${id}$rounds={r}${salt}${}", compute(bits, password, salt.as_bytes(), r)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_read_as_libxcrypt_reads_them() {
        // perl -e 'print crypt("secret", q($5$rounds=1000$abc))'
        let h = "$5$rounds=1000$abc$Mz4DiYKTnNKbZLo/mIp3d8Y4aQBhv3uhSwxLDy55/Y8";
        let p = parse(h).unwrap();
        assert_eq!((p.bits(), p.rounds()), (256, 1000));
        assert_eq!(p.verify(b"secret"), Ok(true));
        // perl -e 'print crypt("secret", q($5$$))': an empty salt is valid
        let p = parse("$5$$o1w7HPzHt8gHmL5zUzDkRqt6Az.BjDfkvuDNNLWnXx5").unwrap();
        assert_eq!((p.rounds(), p.verify(b"secret")), (5000, Ok(true)));
        // libxcrypt answers "*0" (failure) for each of these settings.
        let h43 = "a".repeat(43);
        for bad in
            ["rounds=999$", "rounds=01000$", "rounds=+1000$", "rounds=1000000000$", "rounds=99999999999999999999$"]
        {
            assert!(parse(&format!("$5${bad}abc${h43}")).is_err(), "{bad}");
        }
        for salt in ["a:c", "a c", "a*c", "a!c", "a\\c", "a;c", "aéc", "a\tc"] {
            assert!(parse(&format!("$5${salt}${h43}")).is_err(), "{salt:?}");
        }
        assert!(parse(&format!("$5$a-_=c${h43}")).is_ok());
    }

    #[test]
    fn malformed_forms_are_refused() {
        let h86 = "a".repeat(86);
        for bad in [
            format!("$6$rounds=$abc${h86}"),
            format!("$6$rounds=-5$abc${h86}"),
            format!("$6$rounds=5000abc${h86}"),
            format!("$6$12345678901234567$${h86}"),
            format!("$6$abc${}", &h86[..85]),
            format!("$6$abc${}!", &h86[..85]),
            format!("$5$abc${h86}"),
            "$6$".to_string(),
            "$6$abc".to_string(),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_we_make_have_the_tool_forms() {
        let h = hash(b"pw", 512, None).unwrap();
        assert!(h.starts_with("$6$") && h.len() == 3 + 16 + 1 + 86, "{h}");
        let h = hash(b"pw", 256, Some(6000)).unwrap();
        assert!(h.starts_with("$5$rounds=6000$"), "{h}");
        let p = parse(&h).unwrap();
        assert_eq!((p.rounds(), p.verify(b"pw"), p.verify(b"pW")), (6000, Ok(true), Ok(false)));
    }
}
