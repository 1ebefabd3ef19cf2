//! Hex digits: the one decoder (and the lowercase encoder) the crate uses, for `%XX` escapes,
//! `.HEX` stored values, `{CRAM-MD5}` key states and APOP / CRAM-MD5 responses.

#![forbid(unsafe_code)]

/// The value of one hex digit, either case.
pub(crate) fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Hex digits, either case, two per byte; `None` when of odd length or not hex.
pub(crate) fn decode(s: &[u8]) -> Option<Vec<u8>> {
    let pairs = s.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs.map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Lowercase hex.
pub(crate) fn encode(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[usize::from(x >> 4)] as char);
        s.push(H[usize::from(x & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_in_either_case() {
        let all: Vec<(u8, u8)> = (0..=255u8).filter_map(|b| Some((b, digit(b)?))).collect();
        assert_eq!(all.len(), 22);
        for (b, v) in all {
            assert_eq!(u32::from(v), char::from(b).to_digit(16).unwrap(), "{b}");
        }
    }

    #[test]
    fn decode_and_encode() {
        assert_eq!(decode(b""), Some(vec![]));
        assert_eq!(decode(b"00ff7Fa0"), Some(vec![0, 255, 127, 160]));
        for bad in [&b"0"[..], b"abc", b"0g", b"g0", b" 0", b"0x00", b"+1"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        let all: Vec<u8> = (0..=255).collect();
        let e = encode(&all);
        assert_eq!(&e[..8], "00010203");
        assert_eq!(&e[e.len() - 4..], "feff");
        assert_eq!(decode(e.as_bytes()), Some(all.clone()));
        assert_eq!(decode(e.to_uppercase().as_bytes()), Some(all));
    }
}
