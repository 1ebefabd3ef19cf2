//! Stored passwords: `{PLAIN}`, `{CLEARTEXT}`, `{CLEAR}` (the rest of the value, as is, or
//! decoded with Dovecot's `.B64` / `.HEX` suffix) and `{PLAIN-B64}` (base64).
//!
//! The comparison hashes both sides with SHA-256 and compares the digests in constant time, so
//! neither the content nor the length of the stored password shows in the timing.

#![forbid(unsafe_code)]

use sha2::{Digest as _, Sha256};

use super::digest::decode_b64;
use super::{ct_eq, malformed, Encoding, SchemeError};
use crate::hex;

pub(super) struct Plain(Vec<u8>);

pub(super) fn is_plain(name: &str) -> bool {
    matches!(name, "PLAIN" | "CLEARTEXT" | "CLEAR" | "PLAIN-B64")
}

pub(super) fn parse(name: &str, encoding: Encoding, value: &str) -> Result<Plain, SchemeError> {
    let decoded = match (name, encoding) {
        ("PLAIN-B64", Encoding::Default) | (_, Encoding::Base64) => decode_b64(value.trim_ascii()),
        ("PLAIN-B64", _) => return Err(SchemeError::Unknown(format!("{name} with an encoding suffix"))),
        (_, Encoding::Hex) => hex::decode(value.trim_ascii().as_bytes()),
        (_, Encoding::Default) => Some(value.as_bytes().to_vec()),
    };
    decoded.map(Plain).ok_or_else(|| malformed(format!("{{{name}}} (encoding)")))
}

impl Plain {
    pub(super) fn verify(&self, password: &[u8]) -> bool {
        ct_eq(&Sha256::digest(&self.0), &Sha256::digest(password))
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_encodings() {
        let ok = |n, e, v: &str, pw: &[u8]| {
            let p = parse(n, e, v).unwrap();
            assert!(p.verify(pw) && !p.verify(b"x") && p.into_bytes() == pw, "{n} {v}");
        };
        ok("PLAIN", Encoding::Default, "p w:%é", "p w:%é".as_bytes());
        ok("PLAIN", Encoding::Default, " keeps spaces ", b" keeps spaces ");
        ok("CLEAR", Encoding::Default, "", b"");
        ok("PLAIN-B64", Encoding::Default, "c2VjcmV0", b"secret");
        ok("PLAIN", Encoding::Base64, "c2VjcmV0", b"secret");
        ok("CLEARTEXT", Encoding::Hex, "736563726574", b"secret");
        assert!(parse("PLAIN-B64", Encoding::Default, "***").is_err());
        assert!(parse("PLAIN-B64", Encoding::Hex, "00").is_err());
        assert!(parse("PLAIN", Encoding::Hex, "7").is_err());
    }
}
