//! bcrypt (`$2a$`, `$2b$`, `$2y$`; Dovecot's BLF-CRYPT), on the `bcrypt` crate. Its `verify`
//! compares the digests with `subtle` (constant time).
//!
//! `$2x$` (the old sign-extension bug's hashes) is refused: the crate would verify it as `$2a$`,
//! which is wrong for non-ASCII passwords. Like crypt_blowfish, only the first 72 bytes of the
//! password count.

#![forbid(unsafe_code)]

use super::{is_crypt_char, malformed, SchemeError};

pub(super) struct Bcrypt<'a> {
    stored: &'a str,
    cost: u32,
}

pub(super) fn is_bcrypt(s: &str) -> bool {
    s.starts_with("$2")
}

/// `$2?$NN$` + 22 salt characters + 31 hash characters.
pub(super) fn parse(s: &str) -> Result<Bcrypt<'_>, SchemeError> {
    let b = s.as_bytes();
    match b.get(2) {
        Some(b'a' | b'b' | b'y') if b.get(3) == Some(&b'$') => {}
        Some(b'x') if b.get(3) == Some(&b'$') => return Err(SchemeError::Unknown("bcrypt $2x$".into())),
        _ => return Err(SchemeError::Unknown(format!("${}$", s[1..].split('$').next().unwrap_or("")))),
    }
    let cost = match (b.get(4), b.get(5), b.get(6)) {
        (Some(d1 @ b'0'..=b'9'), Some(d2 @ b'0'..=b'9'), Some(b'$')) => u32::from((d1 - b'0') * 10 + (d2 - b'0')),
        _ => return Err(malformed("bcrypt (cost)")),
    };
    if !(4..=31).contains(&cost) {
        return Err(malformed(format!("bcrypt (cost {cost} outside 4..31)")));
    }
    // every character checked, without an early exit (fewer branches: every request for a
    // bcrypt account checks its 53 characters, for the cache key too)
    if b.len() != 60 || !b[7..].iter().fold(true, |ok, &c| ok & is_crypt_char(c)) {
        return Err(malformed("bcrypt (length or characters)"));
    }
    Ok(Bcrypt { stored: s, cost })
}

impl Bcrypt<'_> {
    pub(super) fn cost(&self) -> u32 {
        self.cost
    }

    pub(super) fn verify(&self, password: &[u8]) -> Result<bool, SchemeError> {
        bcrypt::verify(password, self.stored).map_err(|e| malformed(format!("bcrypt ({e})")))
    }
}

/// A new `$2y$` hash (what `htpasswd -B` writes), random salt.
pub(super) fn hash(password: &[u8], cost: u32) -> Result<String, SchemeError> {
    bcrypt::hash_with_result(password, cost)
        .map(|h| h.format_for_version(bcrypt::Version::TwoY))
        .map_err(|e| malformed(format!("bcrypt (cost {cost}): {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // htpasswd -nbB -C 4 u secret
    const H: &str = "$2y$04$/BOeZOdGOry4PXv5/IRQ3.DcGSvzznZFK9DaECFh.6CYjK6kFP8vS";

    #[test]
    fn cost_and_form_are_checked() {
        assert_eq!(parse(H).map(|h| h.cost()).ok(), Some(4));
        assert_eq!(parse(H).unwrap().verify(b"secret"), Ok(true));
        let body = &H[7..];
        let bad = [
            format!("$2y$03${body}"),
            format!("$2y$32${body}"),
            format!("$2y$4${body}"),
            format!("$2y$o4${body}"),
            H[..59].to_string(),
            format!("{H}x"),
            format!("{}+", &H[..59]),
            format!("{}é", &H[..58]),
            "$2y$0".to_string(),
            "$2".to_string(),
            "$2y$".to_string(),
            format!("$2z$04${body}"),
        ];
        for bad in &bad {
            assert!(parse(bad).is_err(), "{bad}");
            assert!(super::super::verify(bad, b"secret").is_err(), "{bad}");
        }
        assert!(matches!(parse(&format!("$2x$04${body}")), Err(SchemeError::Unknown(_))));
    }

    #[test]
    fn only_the_first_72_bytes_count_as_in_crypt_blowfish() {
        let long = [b'a'; 72];
        let h = hash(&long, 4).unwrap();
        let mut longer = long.to_vec();
        longer.extend_from_slice(b"anything");
        assert_eq!(parse(&h).unwrap().verify(&longer), Ok(true));
        assert_eq!(parse(&h).unwrap().verify(&long[..71]), Ok(false));
    }
}
