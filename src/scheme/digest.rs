//! Plain and salted message digests as Dovecot and OpenLDAP store them: `{SHA}` (also
//! `htpasswd -s`), `{SHA1}`, `{SHA256}`, `{SHA512}`, `{PLAIN-MD5}`, `{LDAP-MD5}`, `{MD5}` when not
//! MD5-crypt, and the salted `{SSHA}`, `{SSHA256}`, `{SSHA512}`, `{SMD5}` = base64(H(password ||
//! salt) || salt). On the RustCrypto `sha1`, `sha2`, `md-5` primitives; digests are compared in
//! constant time.
//!
//! Encodings follow Dovecot: a `.HEX` / `.B64` / `.BASE64` suffix on the scheme name says which;
//! without one, an unsalted digest is hex when its text is exactly twice the digest size (and
//! falls back to base64 if that is not hex), else base64; salted ones are base64.

#![forbid(unsafe_code)]

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{ct_eq, malformed, random_bytes, Encoding, SchemeError};
use crate::hex;

/// Standard alphabet; padding optional on input (LDAP tools and Dovecot both write it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Alg {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Alg {
    fn len(self) -> usize {
        match self {
            Alg::Md5 => 16,
            Alg::Sha1 => 20,
            Alg::Sha256 => 32,
            Alg::Sha512 => 64,
        }
    }

    /// H(password || salt), in a buffer of the largest digest's size (no allocation).
    fn compute(self, password: &[u8], salt: &[u8]) -> Out {
        fn run<D: sha2::Digest>(p: &[u8], s: &[u8]) -> Out {
            let mut d = D::new();
            d.update(p);
            d.update(s);
            let h = d.finalize();
            let mut out = Out { buf: [0; 64], len: h.len() };
            out.buf[..h.len()].copy_from_slice(&h);
            out
        }
        match self {
            Alg::Md5 => run::<Md5>(password, salt),
            Alg::Sha1 => run::<Sha1>(password, salt),
            Alg::Sha256 => run::<Sha256>(password, salt),
            Alg::Sha512 => run::<Sha512>(password, salt),
        }
    }
}

/// A digest of at most 64 bytes (SHA-512's size).
struct Out {
    buf: [u8; 64],
    len: usize,
}

impl Out {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// One of the digest schemes (aliases folded: SHA1 = SHA, LDAP-MD5 = MD5 = PLAIN-MD5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Sha,
    Sha256,
    Sha512,
    PlainMd5,
    Ssha,
    Ssha256,
    Ssha512,
    Smd5,
}

impl Kind {
    /// The digest scheme a braced name (upper case, no suffix) names. `MD5` is not here: it is
    /// MD5-crypt or PLAIN-MD5 depending on the value, which the caller decides.
    pub(super) fn from_scheme(name: &str) -> Option<Kind> {
        Some(match name {
            "SHA" | "SHA1" => Kind::Sha,
            "SHA256" => Kind::Sha256,
            "SHA512" => Kind::Sha512,
            "PLAIN-MD5" | "LDAP-MD5" => Kind::PlainMd5,
            "SSHA" => Kind::Ssha,
            "SSHA256" => Kind::Ssha256,
            "SSHA512" => Kind::Ssha512,
            "SMD5" => Kind::Smd5,
            _ => return None,
        })
    }

    fn alg(self) -> Alg {
        match self {
            Kind::Sha | Kind::Ssha => Alg::Sha1,
            Kind::Sha256 | Kind::Ssha256 => Alg::Sha256,
            Kind::Sha512 | Kind::Ssha512 => Alg::Sha512,
            Kind::PlainMd5 | Kind::Smd5 => Alg::Md5,
        }
    }

    fn salted(self) -> bool {
        matches!(self, Kind::Ssha | Kind::Ssha256 | Kind::Ssha512 | Kind::Smd5)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Sha => "SHA",
            Kind::Sha256 => "SHA256",
            Kind::Sha512 => "SHA512",
            Kind::PlainMd5 => "PLAIN-MD5",
            Kind::Ssha => "SSHA",
            Kind::Ssha256 => "SSHA256",
            Kind::Ssha512 => "SSHA512",
            Kind::Smd5 => "SMD5",
        }
    }
}

pub(super) struct Digest {
    kind: Kind,
    /// The decoded value: the digest, then the salt (if any).
    raw: Raw,
}

/// A decoded value, on the stack when it fits (every digest with a usual salt: a `{SSHA512}`
/// and a 32-byte salt are 96 bytes), so that verifying one allocates nothing.
enum Raw {
    Inline([u8; INLINE], usize),
    Heap(Vec<u8>),
}

const INLINE: usize = 96;

impl Raw {
    fn as_slice(&self) -> &[u8] {
        match self {
            Raw::Inline(buf, len) => &buf[..*len],
            Raw::Heap(v) => v,
        }
    }

    /// Base64 as [`decode_b64`] decodes it, on the stack when it fits: the usual form decoded
    /// there, anything else by the crate (the short way is not tried twice).
    fn b64(v: &str) -> Option<Raw> {
        let mut buf = [0u8; INLINE];
        let Some(out) = buf.get_mut(..b64_room(v.as_bytes())) else {
            return decode_b64(v).map(Raw::Heap);
        };
        match decode_b64_plain(v.as_bytes(), out) {
            Some(len) => Some(Raw::Inline(buf, len)),
            None => {
                let mut out = Vec::new();
                decode_b64_general(v, &mut out).map(|()| Raw::Heap(out))
            }
        }
    }
}

/// Base64 (padding optional) into a new Vec. `decode_vec` into an empty Vec allocates with
/// malloc; `decode` zero-allocates (calloc), which glibc serves past its per-thread cache, on
/// every request with a digest: that disturbed the heap enough to make nginx's own allocations
/// of the next request slower (scripts/profile: about 1,000 instructions a request).
#[allow(clippy::slow_vector_initialization)] // vec![0; n] is calloc (see above)
pub(super) fn decode_b64(v: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b64_room(v.as_bytes()));
    out.resize(out.capacity(), 0);
    if let Some(len) = decode_b64_plain(v.as_bytes(), &mut out) {
        out.truncate(len);
        return Some(out);
    }
    out.clear();
    decode_b64_general(v, &mut out)?;
    Some(out)
}

/// The crate's general decoder, into `out` (empty), for what [`decode_b64_plain`] does not answer.
fn decode_b64_general(v: &str, out: &mut Vec<u8>) -> Option<()> {
    B64.decode_vec(v, out).ok()
}

/// Room enough for what [`decode_b64_plain`] decodes from `v` (exactly what a value it
/// decodes decodes to).
fn b64_room(v: &[u8]) -> usize {
    let body = v.strip_suffix(b"==").or_else(|| v.strip_suffix(b"=")).unwrap_or(v);
    body.len() / 4 * 3 + (body.len() % 4).saturating_sub(1)
}

/// The value of each byte as a symbol of the standard alphabet (`INVALID`: not one).
const B64_VALUES: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};
const INVALID: u8 = 0xff;

/// The value of a symbol of the standard alphabet (`None`: not one).
fn b64_value(c: u8) -> Option<u32> {
    match B64_VALUES[usize::from(c)] {
        INVALID => None,
        v => Some(u32::from(v)),
    }
}

/// The usual stored value (standard alphabet, canonical padding or none, zero trailing
/// bits) decoded in a few instructions a byte: `None` for anything else, which [`B64`]
/// decodes or refuses. Where this answers, [`B64`] gives the same bytes (a unit test checks).
/// The crate's general decoder cost ~650 instructions for a 28-character `{SSHA}` value, on
/// every login with a digest. Decodes into `out` (at least [`b64_room`] bytes); the length.
fn decode_b64_plain(v: &[u8], out: &mut [u8]) -> Option<usize> {
    let body = v.strip_suffix(b"==").or_else(|| v.strip_suffix(b"=")).unwrap_or(v);
    let padding = v.len() - body.len();
    if (padding > 0 && !v.len().is_multiple_of(4)) || body.len() % 4 == 1 {
        return None;
    }
    let mut len = 0;
    let mut put = |bytes: &[u8]| -> Option<()> {
        out.get_mut(len..len + bytes.len())?.copy_from_slice(bytes);
        len += bytes.len();
        Some(())
    };
    let mut chunks = body.chunks_exact(4);
    for c in &mut chunks {
        let n = (b64_value(c[0])? << 18) | (b64_value(c[1])? << 12) | (b64_value(c[2])? << 6) | b64_value(c[3])?;
        put(&n.to_be_bytes()[1..])?;
    }
    match *chunks.remainder() {
        [] => {}
        [a, b] => {
            let n = (b64_value(a)? << 18) | (b64_value(b)? << 12);
            if n & 0xffff != 0 {
                return None;
            }
            put(&n.to_be_bytes()[1..2])?;
        }
        [a, b, c] => {
            let n = (b64_value(a)? << 18) | (b64_value(b)? << 12) | (b64_value(c)? << 6);
            if n & 0xff != 0 {
                return None;
            }
            put(&n.to_be_bytes()[1..3])?;
        }
        _ => return None,
    }
    Some(len)
}

/// Parses the value of `{scheme}value`; `label` is the scheme as written (for errors).
pub(super) fn parse(kind: Kind, label: &str, encoding: Encoding, value: &str) -> Result<Digest, SchemeError> {
    let n = kind.alg().len();
    let value = value.trim_ascii();
    let raw = match encoding {
        Encoding::Hex => hex::decode(value.as_bytes()).map(Raw::Heap),
        Encoding::Base64 => Raw::b64(value),
        Encoding::Default if !kind.salted() && value.len() == 2 * n => {
            hex::decode(value.as_bytes()).map(Raw::Heap).or_else(|| Raw::b64(value))
        }
        Encoding::Default => Raw::b64(value),
    }
    .ok_or_else(|| malformed(format!("{{{label}}} (encoding)")))?;
    let len = raw.as_slice().len();
    let ok = if kind.salted() { len > n } else { len == n };
    if !ok {
        return Err(malformed(format!("{{{label}}} (length {len} for a {n}-byte digest)")));
    }
    Ok(Digest { kind, raw })
}

impl Digest {
    /// The salt (empty for an unsalted digest).
    #[cfg(test)]
    fn salt(&self) -> &[u8] {
        &self.raw.as_slice()[self.kind.alg().len()..]
    }

    pub(super) fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub(super) fn verify(&self, password: &[u8]) -> bool {
        let (digest, salt) = self.raw.as_slice().split_at(self.kind.alg().len());
        ct_eq(self.kind.alg().compute(password, salt).as_slice(), digest)
    }
}

/// `{SSHA512}` with an 8-byte random salt (doveadm uses 4; longer is as valid).
pub(super) fn hash_ssha512(password: &[u8]) -> String {
    let salt = random_bytes::<8>();
    let mut raw = Alg::Sha512.compute(password, &salt).as_slice().to_vec();
    raw.extend_from_slice(&salt);
    format!("{{SSHA512}}{}", base64::engine::general_purpose::STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: Kind, enc: Encoding, v: &str) -> Result<Digest, SchemeError> {
        parse(kind, kind.name(), enc, v)
    }

    #[test]
    fn hex_is_guessed_only_for_unsalted_digests_of_twice_the_size() {
        // doveadm pw -s SHA.HEX -p secret / doveadm pw -s SHA -p secret
        let hex = "e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4";
        let b64 = "5en6G6MezRroT3XKqkdPOmY/BfQ=";
        for v in [hex, b64, "5en6G6MezRroT3XKqkdPOmY/BfQ", &hex.to_ascii_uppercase()] {
            assert!(p(Kind::Sha, Encoding::Default, v).unwrap().verify(b"secret"), "{v}");
        }
        assert!(p(Kind::Sha, Encoding::Hex, b64).is_err());
        assert!(p(Kind::Sha, Encoding::Base64, hex).is_err(), "40 base64 chars are 30 bytes");
        // A salted value that happens to look like hex is still base64.
        assert!(p(Kind::Ssha, Encoding::Default, &"ab".repeat(20)).is_ok_and(|d| d.salt().len() == 10));
    }

    /// The short way decodes what the crate decodes, to the same bytes, and answers for the
    /// usual values (random strings of the alphabet, `=`, and a few other bytes).
    #[test]
    fn plain_base64_agrees_with_the_crate() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let extra = b"=-_ .\n";
        let mut rng = crate::testutil::Xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = || rng.next().unwrap_or(0);
        let mut answered = 0;
        for round in 0..300_000 {
            let len = (next() % 24) as usize;
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 16 == 0 {
                        extra[(r >> 8) as usize % extra.len()]
                    } else {
                        alphabet[(r >> 8) as usize % 64]
                    }
                })
                .collect();
            if round % 3 == 0 {
                // what an encoder writes: a canonical value of random bytes, padded or not
                let raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                v = base64::engine::general_purpose::STANDARD.encode(raw).into_bytes();
                if round % 2 == 0 {
                    while v.last() == Some(&b'=') {
                        v.pop();
                    }
                }
            }
            let s = String::from_utf8(v.clone()).unwrap();
            let want = B64.decode(&s).ok();
            let mut out = vec![0u8; b64_room(&v)];
            let fast = decode_b64_plain(&v, &mut out).map(|n| out[..n].to_vec());
            if let Some(f) = &fast {
                answered += 1;
                assert_eq!(Some(f), want.as_ref(), "{s:?}");
            }
            if round % 3 == 0 {
                assert!(fast.is_some(), "an encoder's value: {s:?}");
            }
            assert_eq!(decode_b64(&s), want, "{s:?}");
            assert_eq!(Raw::b64(&s).map(|r| r.as_slice().to_vec()), want, "{s:?}");
        }
        assert!(answered > 100_000, "{answered}");
    }

    /// A value too long for the stack buffer is decoded on the heap, to the same bytes: a
    /// `{SSHA512}` with a 64-byte salt (128 bytes decoded) verifies, its neighbours at the
    /// buffer's edge too.
    #[test]
    fn long_salts_decode_on_the_heap() {
        let b64 = &base64::engine::general_purpose::STANDARD;
        for salt_len in [1, 31, 32, 33, 34, 64, 200] {
            let salt: Vec<u8> = (0..salt_len).map(|i| (i * 7 + 3) as u8).collect();
            let mut raw = Alg::Sha512.compute(b"secret", &salt).as_slice().to_vec();
            raw.extend_from_slice(&salt);
            let value = b64.encode(&raw);
            let decoded = Raw::b64(&value).expect("decodes");
            assert_eq!(decoded.as_slice(), &raw[..], "salt of {salt_len}");
            assert_eq!(matches!(decoded, Raw::Inline(..)), raw.len() <= INLINE, "salt of {salt_len}");
            assert_eq!(b64_room(value.as_bytes()), raw.len());
            let d = p(Kind::Ssha512, Encoding::Default, &value).expect("parses");
            assert!(d.verify(b"secret") && !d.verify(b"secreT"), "salt of {salt_len}");
            assert_eq!(d.salt(), &salt[..]);
        }
    }

    #[test]
    fn lengths_are_checked() {
        assert!(p(Kind::Sha, Encoding::Default, "c2hvcnQ=").is_err());
        // A salted digest needs a salt.
        assert!(p(Kind::Ssha, Encoding::Default, "5en6G6MezRroT3XKqkdPOmY/BfQ=").is_err());
        assert!(p(Kind::Ssha512, Encoding::Hex, "abc").is_err());
        assert!(p(Kind::Ssha512, Encoding::Hex, "zz").is_err());
        assert!(p(Kind::Sha256, Encoding::Default, "").is_err());
        assert!(p(Kind::Sha256, Encoding::Default, "!!!!").is_err());
    }

    #[test]
    fn ssha512_we_make_verifies() {
        let h = hash_ssha512(b"pw");
        let d = p(Kind::Ssha512, Encoding::Default, h.strip_prefix("{SSHA512}").unwrap()).unwrap();
        assert_eq!((d.salt().len(), d.verify(b"pw"), d.verify(b"pw ")), (8, true, false));
    }
}
