//! Challenge-response checks: APOP (RFC 1939: `MD5(challenge || password)`) and CRAM-MD5
//! (RFC 2195: `HMAC-MD5(password, challenge)`), and Dovecot's `{CRAM-MD5}` stored form.
//!
//! `{CRAM-MD5}` (`doveadm pw -s CRAM-MD5`) keeps, as 64 hex digits, the two MD5 states after
//! the HMAC key blocks: the outer (key XOR 0x5c) state, then the inner (key XOR 0x36) one, each
//! as four little-endian 32-bit words. The password itself can't be recovered from it, but a
//! CRAM-MD5 response can be checked (finish both states), and so can a plain password (make the
//! states from it and compare). The RustCrypto `md-5` crate does not let a state be set, so the
//! MD5 compression function is written out here (RFC 1321) and tested against that crate.

#![forbid(unsafe_code)]

use md5::{Digest as _, Md5};

use super::{ct_eq, malformed, SchemeError};
use crate::hex;

/// MD5's initial state (RFC 1321 3.3).
const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Per-round shift amounts (RFC 1321 3.4).
const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

/// The sine table T[i] = floor(|sin(i + 1)| * 2^32) (RFC 1321 3.4); f64 is exact enough for
/// all 64 values (checked by the tests against the `md-5` crate).
fn sine_table() -> &'static [u32; 64] {
    static T: std::sync::OnceLock<[u32; 64]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = [0u32; 64];
        for (i, v) in t.iter_mut().enumerate() {
            *v = ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32;
        }
        t
    })
}

/// One MD5 compression of a 64-byte block into `state`.
fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let t = sine_table();
    let mut m = [0u32; 16];
    for (i, w) in m.iter_mut().enumerate() {
        *w = u32::from_le_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let shift = SHIFTS[(i / 16) * 4 + i % 4];
        let rotated = a.wrapping_add(f).wrapping_add(t[i]).wrapping_add(m[g]).rotate_left(shift);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// Finishes an MD5 computation that already compressed `done_blocks` 64-byte blocks into
/// `state`, with the remaining `tail` bytes.
fn finish(mut state: [u32; 4], done_blocks: u64, tail: &[u8]) -> [u8; 16] {
    let total_bits = (done_blocks * 64 + tail.len() as u64).wrapping_mul(8);
    let mut rest = tail.to_vec();
    rest.push(0x80);
    while rest.len() % 64 != 56 {
        rest.push(0);
    }
    rest.extend_from_slice(&total_bits.to_le_bytes());
    for chunk in rest.chunks_exact(64) {
        let block: &[u8; 64] = chunk.try_into().expect("chunks_exact yields 64 bytes");
        compress(&mut state, block);
    }
    let mut out = [0u8; 16];
    for (i, w) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The HMAC-MD5 key states for `password`: (inner, outer).
fn key_states(password: &[u8]) -> ([u32; 4], [u32; 4]) {
    let mut key = [0u8; 64];
    if password.len() > 64 {
        key[..16].copy_from_slice(&Md5::digest(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let mut ipad = [0u8; 64];
    let mut opad = [0u8; 64];
    for i in 0..64 {
        ipad[i] = key[i] ^ 0x36;
        opad[i] = key[i] ^ 0x5c;
    }
    let mut inner = MD5_INIT;
    compress(&mut inner, &ipad);
    let mut outer = MD5_INIT;
    compress(&mut outer, &opad);
    (inner, outer)
}

fn hmac_from_states(inner: [u32; 4], outer: [u32; 4], message: &[u8]) -> [u8; 16] {
    let ihash = finish(inner, 1, message);
    finish(outer, 1, &ihash)
}

/// A parsed `{CRAM-MD5}` value.
#[derive(Clone, Debug)]
pub(crate) struct CramMd5 {
    inner: [u32; 4],
    outer: [u32; 4],
}

pub(crate) fn parse(rest: &str) -> Result<CramMd5, SchemeError> {
    let bytes = hex::decode(rest.as_bytes())
        .filter(|b| b.len() == 32)
        .ok_or_else(|| malformed("{CRAM-MD5} (want 64 hex digits)"))?;
    let word = |i: usize| u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    Ok(CramMd5 { outer: [word(0), word(1), word(2), word(3)], inner: [word(4), word(5), word(6), word(7)] })
}

impl CramMd5 {
    /// A plain password matches when it yields the same key states.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        let (inner, outer) = key_states(password);
        ct_eq(&words_bytes(&self.inner, &self.outer), &words_bytes(&inner, &outer))
    }

    /// Whether this is the `{CRAM-MD5}` of the empty password (no password at all).
    pub(crate) fn is_empty_password(&self) -> bool {
        self.verify(b"")
    }

    /// HMAC-MD5 of `challenge` under the stored key.
    pub(crate) fn hmac(&self, challenge: &[u8]) -> [u8; 16] {
        hmac_from_states(self.inner, self.outer, challenge)
    }
}

fn words_bytes(a: &[u32; 4], b: &[u32; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, w) in a.iter().chain(b.iter()).enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// `{CRAM-MD5}` of a password, as `doveadm pw -s CRAM-MD5` writes it.
pub(crate) fn hash(password: &[u8]) -> String {
    let (inner, outer) = key_states(password);
    format!("{{CRAM-MD5}}{}", hex::encode(&words_bytes(&outer, &inner)))
}

/// HMAC-MD5(password, message) (RFC 2104).
pub(crate) fn hmac_md5(password: &[u8], message: &[u8]) -> [u8; 16] {
    let (inner, outer) = key_states(password);
    hmac_from_states(inner, outer, message)
}

/// MD5(challenge || password), the APOP digest.
pub(crate) fn apop(challenge: &[u8], password: &[u8]) -> [u8; 16] {
    let mut d = Md5::new();
    d.update(challenge);
    d.update(password);
    d.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::encode as hex;

    #[test]
    fn md5_written_out_agrees_with_the_md5_crate() {
        for len in [0usize, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200, 1000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let ours = finish(MD5_INIT, 0, &msg);
            assert_eq!(ours[..], Md5::digest(&msg)[..], "length {len}");
        }
    }

    #[test]
    fn rfc_2104_and_2195_vectors() {
        // RFC 2104 appendix: key "Jefe", "what do ya want for nothing?"
        assert_eq!(hex(&hmac_md5(b"Jefe", b"what do ya want for nothing?")), "750c783e6ab0b503eaa86e310a5db738");
        // RFC 2195 section 2: tim / tanstaaftanstaaf
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(hex(&hmac_md5(b"tanstaaftanstaaf", challenge)), "b913a602c7eda7a495b4e6e7334d3890");
        // a key longer than a block is hashed first (RFC 2104 2.)
        let long = [0xaau8; 80];
        assert_eq!(
            hex(&hmac_md5(&long, b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
        );
    }

    #[test]
    fn rfc_1939_apop_vector() {
        assert_eq!(hex(&apop(b"<1896.697170952@dbc.mtview.ca.us>", b"tanstaaf")), "c4c9334bac560ecc979e58001b3e22fb");
    }

    #[test]
    fn stored_states_check_passwords_and_responses() {
        let stored = hash(b"tanstaaftanstaaf");
        let c = parse(stored.strip_prefix("{CRAM-MD5}").unwrap()).unwrap();
        assert!(c.verify(b"tanstaaftanstaaf"));
        assert!(!c.verify(b"tanstaaftanstaafx"));
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(hex(&c.hmac(challenge)), "b913a602c7eda7a495b4e6e7334d3890");
        assert!(parse("abc").is_err());
        assert!(parse(&"g".repeat(64)).is_err());
        assert!(parse(&"0".repeat(66)).is_err());
    }
}
