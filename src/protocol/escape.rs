//! Escaping as nginx does it for Auth-User/Auth-Pass, and printable renderings for logs.

#![forbid(unsafe_code)]

use super::ProtocolError;
use crate::hex;

/// A printable, shortened rendering of untrusted bytes for logs and error messages.
pub fn printable(v: &[u8], max: usize) -> String {
    let mut out = String::new();
    for (i, &b) in v.iter().enumerate() {
        if i >= max {
            out.push_str("...");
            break;
        }
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Decodes `%XX`; `Err(offset of the bad '%')`.
pub(super) fn unescape_raw(v: &[u8]) -> Result<Vec<u8>, usize> {
    // the usual value has no escape at all: one copy
    let Some(first) = v.iter().position(|&b| b == b'%') else {
        return Ok(v.to_vec());
    };
    let mut out = Vec::with_capacity(v.len());
    out.extend_from_slice(&v[..first]);
    let mut i = first;
    while i < v.len() {
        let b = v[i];
        if b == b'%' {
            let hi = v.get(i + 1).copied().and_then(hex::digit).ok_or(i)?;
            let lo = v.get(i + 2).copied().and_then(hex::digit).ok_or(i)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// Inverse of nginx's `ngx_escape_uri(..., NGX_ESCAPE_MAIL_AUTH)`: `%XX` (either hex case)
/// becomes the byte, everything else is kept. A `%` without two hex digits is an error
/// (nginx always escapes `%` itself, so a bare one means the value was not made by nginx).
pub fn unescape(v: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    unescape_raw(v).map_err(|offset| ProtocolError::BadEscape { header: "value", offset })
}

/// Whether nginx's NGX_ESCAPE_MAIL_AUTH table escapes this byte: 0x00-0x1F, ' ' and '%'.
pub fn mail_auth_escapes(b: u8) -> bool {
    b <= b' ' || b == b'%' // 0x00-0x1F and 0x20
}

/// The same escaping nginx applies to Auth-User/Auth-Pass (uppercase hex). Used by tests and
/// by anything that has to build a request the way nginx does.
pub fn escape(v: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(v.len());
    for &b in v {
        if mail_auth_escapes(b) {
            out.push(b'%');
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b);
        }
    }
    out
}
