//! HTTP Basic credentials from auth_http's Auth-User / Auth-Pass (the bridge to `auth_basic`
//! and `auth_request`). Plain Rust, no nginx types.

#![forbid(unsafe_code)]

use base64::Engine as _;

use crate::protocol;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasicError {
    /// The escaped header value could not be decoded.
    Escape(String),
    /// Basic authentication cannot carry a user name containing ':' (RFC 7617 §2).
    ColonInUser,
    /// Control characters (CR, LF, NUL ...) have no place in a user name.
    ControlInUser,
    EmptyUser,
}

impl std::fmt::Display for BasicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BasicError::Escape(e) => write!(f, "bad escape in Auth-User/Auth-Pass: {e}"),
            BasicError::ColonInUser => write!(f, "user name contains ':', which Basic credentials cannot carry"),
            BasicError::ControlInUser => write!(f, "user name contains control characters"),
            BasicError::EmptyUser => write!(f, "empty user name"),
        }
    }
}

/// `Basic base64(user ":" pass)` from the *escaped* header values as nginx sends them.
pub fn basic_credentials(user_escaped: &[u8], pass_escaped: &[u8]) -> Result<Vec<u8>, BasicError> {
    let user = protocol::unescape(user_escaped).map_err(|e| BasicError::Escape(e.to_string()))?;
    let pass = protocol::unescape(pass_escaped).map_err(|e| BasicError::Escape(e.to_string()))?;
    if user.is_empty() {
        return Err(BasicError::EmptyUser);
    }
    if user.contains(&b':') {
        return Err(BasicError::ColonInUser);
    }
    if user.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(BasicError::ControlInUser);
    }
    let mut raw = user;
    raw.push(b':');
    raw.extend_from_slice(&pass);
    let mut out = b"Basic ".to_vec();
    out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&raw).as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(v: &[u8]) -> Vec<u8> {
        let b64 = v.strip_prefix(b"Basic ").expect("Basic prefix");
        base64::engine::general_purpose::STANDARD.decode(b64).expect("valid base64")
    }

    #[test]
    fn plain_ascii() {
        let v = basic_credentials(b"alice", b"secret").unwrap();
        assert_eq!(v, b"Basic YWxpY2U6c2VjcmV0".to_vec());
    }

    #[test]
    fn escaped_space_percent_and_utf8_are_decoded() {
        let v = basic_credentials(b"bob%40example.org", "p%20w%25d-\u{e9}t\u{e9}".as_bytes()).unwrap();
        assert_eq!(decode(&v), "bob@example.org:p w%d-\u{e9}t\u{e9}".as_bytes());
    }

    #[test]
    fn colon_in_password_is_fine_but_not_in_user() {
        let v = basic_credentials(b"carol", b"a:b:c").unwrap();
        assert_eq!(decode(&v), b"carol:a:b:c");
        assert_eq!(basic_credentials(b"ca:rol", b"x"), Err(BasicError::ColonInUser));
    }

    #[test]
    fn control_characters_and_empty_user_refused() {
        assert_eq!(basic_credentials(b"eve%0D%0AX-Injected", b"x"), Err(BasicError::ControlInUser));
        assert_eq!(basic_credentials(b"", b"x"), Err(BasicError::EmptyUser));
    }

    #[test]
    fn bad_escape_is_an_error() {
        assert!(matches!(basic_credentials(b"a%zz", b"x"), Err(BasicError::Escape(_))));
        assert!(matches!(basic_credentials(b"a", b"x%4"), Err(BasicError::Escape(_))));
    }
}
