//! The auth_http answer nginx reads.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

use super::request::parse_ip;
use super::{printable, MSG_INVALID, MSG_TEMP};

/// The answer to nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResponse {
    /// Login accepted: proxy to `server:port`; `user`/`pass` replace the login and password
    /// nginx presents to the backend (None: nginx keeps the client's own).
    Ok { server: String, port: u16, user: Option<String>, pass: Option<Vec<u8>> },
    /// Login refused; `message` is shown to the client.
    Fail {
        message: String,
        wait: Option<u32>,
        error_code: Option<String>,
        /// `Auth-Error-SASL` (XOAUTH2/OAUTHBEARER): base64 of the RFC 7628 §3.2.2 JSON error,
        /// which nginx sends to the client as the SASL challenge before the failure.
        error_sasl: Option<String>,
    },
    /// Temporary failure (store broken ...); `message` is shown to the client.
    TempFail { message: String, wait: Option<u32>, error_code: Option<String> },
}

/// Longest message/error code sent (bytes); longer ones are cut at a character boundary.
pub const MAX_MESSAGE_LEN: usize = 512;

/// Why an `AuthResponse::Ok` cannot be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError(pub String);

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResponseError {}

/// Parses a backend address as nginx's `ngx_parse_addr` would accept it (an IPv4 or IPv6
/// literal; surrounding `[]` tolerated here and removed).
pub fn parse_server(server: &str) -> Option<IpAddr> {
    parse_ip(server.as_bytes())
}

/// Checks a value nginx will copy raw from the answer and pass to the backend.
fn check_raw_credential(what: &str, v: &[u8]) -> Result<(), ResponseError> {
    if v.is_empty() {
        return Err(ResponseError(format!("{what} is empty")));
    }
    if let Some(b) = v.iter().find(|&&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ResponseError(format!("{what} contains byte 0x{b:02x} that cannot be passed to nginx")));
    }
    if v.first() == Some(&b' ') || v.last() == Some(&b' ') {
        return Err(ResponseError(format!("{what} starts or ends with a space, which nginx would drop")));
    }
    Ok(())
}

/// Makes a message safe for a header value nginx shows the client: control characters become
/// spaces, runs of spaces are kept but the ends are trimmed, length is capped, and the words
/// nginx treats specially (`OK`, `WAIT`) or an empty result fall back to `default`.
fn sanitize_message(m: &str, default: &str) -> String {
    let mut out = String::with_capacity(m.len().min(MAX_MESSAGE_LEN));
    for c in m.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_MESSAGE_LEN {
            break;
        }
        out.push(c);
    }
    let t = out.trim_matches(' ');
    if t.is_empty() || t == "OK" || t == "WAIT" {
        default.to_string()
    } else {
        t.to_string()
    }
}

fn sanitize_code(c: &str) -> Option<String> {
    let s = sanitize_message(c, "");
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

impl AuthResponse {
    /// Checks that an `Ok` answer can be sent as it is: `server` an IP literal, `port` non-zero,
    /// `user`/`pass` representable (see [`AuthResponse::headers`]). Other variants are always
    /// sendable (their texts are sanitized).
    pub fn validate(&self) -> Result<(), ResponseError> {
        if let AuthResponse::Ok { server, port, user, pass } = self {
            if parse_server(server).is_none() {
                return Err(ResponseError(format!(
                    "backend server \"{}\" is not an IP address",
                    printable(server.as_bytes(), 64)
                )));
            }
            if *port == 0 {
                return Err(ResponseError("backend port 0".to_string()));
            }
            if let Some(u) = user {
                check_raw_credential("backend user", u.as_bytes())?;
            }
            if let Some(p) = pass {
                check_raw_credential("backend password", p)?;
            }
        }
        Ok(())
    }

    /// The header lines of the answer, exactly as they go on the wire, in order.
    ///
    /// Every value is free of CR, LF and NUL. An `Ok` that fails [`AuthResponse::validate`] is
    /// never sent: the answer becomes a temporary failure (callers should validate first to
    /// log why). Messages and error codes are sanitized (see `sanitize_message`).
    pub fn headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        match self {
            AuthResponse::Ok { server, port, user, pass } => {
                let addr = match (self.validate(), parse_server(server)) {
                    (Ok(()), Some(addr)) => addr,
                    _ => {
                        return vec![("Auth-Status", MSG_TEMP.as_bytes().to_vec())];
                    }
                };
                let mut h = vec![
                    ("Auth-Status", b"OK".to_vec()),
                    ("Auth-Server", addr.to_string().into_bytes()),
                    ("Auth-Port", port.to_string().into_bytes()),
                ];
                if let Some(u) = user {
                    h.push(("Auth-User", u.as_bytes().to_vec()));
                }
                if let Some(p) = pass {
                    h.push(("Auth-Pass", p.clone()));
                }
                h
            }
            AuthResponse::Fail { message, wait, error_code, error_sasl } => {
                let mut h = Self::failure(message, MSG_INVALID, *wait, error_code.as_deref());
                // base64 only: anything else is not sent
                if let Some(s) = error_sasl
                    .as_deref()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
                {
                    h.push(("Auth-Error-SASL", s.as_bytes().to_vec()));
                }
                h
            }
            AuthResponse::TempFail { message, wait, error_code } => {
                Self::failure(message, MSG_TEMP, *wait, error_code.as_deref())
            }
        }
    }

    fn failure(message: &str, default: &str, wait: Option<u32>, code: Option<&str>) -> Vec<(&'static str, Vec<u8>)> {
        let mut h = vec![("Auth-Status", sanitize_message(message, default).into_bytes())];
        if let Some(w) = wait {
            h.push(("Auth-Wait", w.to_string().into_bytes()));
        }
        if let Some(c) = code.and_then(sanitize_code) {
            h.push(("Auth-Error-Code", c.into_bytes()));
        }
        h
    }

    /// `true` only for `Ok`.
    pub fn is_ok(&self) -> bool {
        matches!(self, AuthResponse::Ok { .. })
    }
}
