//! The auth_http answer nginx reads.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use super::request::parse_ip;
use super::{printable, MSG_INVALID, MSG_TEMP};

/// The answer to nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResponse {
    /// Login accepted: proxy to `server:port`; `user`/`pass` replace the login and password
    /// nginx presents to the backend (None: nginx keeps the client's own).
    Ok { server: ServerAddr, port: u16, user: Option<String>, pass: Option<Vec<u8>> },
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

/// A backend address as the answer's `Auth-Server` carries it: an IP literal in the form nginx
/// parses (IPv4 dotted, IPv6 in RFC 5952 form without brackets), checked and printed once when
/// made (for a configured backend: at configuration), so an answer only points at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr(std::sync::Arc<str>);

impl ServerAddr {
    /// An IP literal (IPv6 may be bracketed); `None` for anything else (host names included).
    pub fn parse(server: &str) -> Option<ServerAddr> {
        let ip = parse_server(server)?;
        // an IPv4 literal std accepts is already in its printed form (no leading zeros, four
        // decimal octets): kept as it is
        Some(match ip {
            IpAddr::V4(_) if !server.starts_with('[') => ServerAddr(server.into()),
            ip => ServerAddr::from(ip),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<IpAddr> for ServerAddr {
    fn from(ip: IpAddr) -> ServerAddr {
        ServerAddr(ip.to_string().into())
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a backend server named by a store cannot be used (for the log).
pub fn bad_server(server: &str) -> ResponseError {
    ResponseError(format!("backend server \"{}\" is not an IP address", printable(server.as_bytes(), 64)))
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
fn sanitize_message<'a>(m: &'a str, default: &'static str) -> Cow<'a, str> {
    // the usual case: nothing to change, nothing to copy
    let clean = m.len() <= MAX_MESSAGE_LEN && !m.chars().any(char::is_control);
    let t = m.trim_matches(' ');
    if clean && !(t.is_empty() || t == "OK" || t == "WAIT") {
        return Cow::Borrowed(t);
    }
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
        Cow::Borrowed(default)
    } else {
        Cow::Owned(t.to_string())
    }
}

fn sanitize_code(c: &str) -> Option<Cow<'_, str>> {
    let s = sanitize_message(c, "");
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// The decimal digits of `n`, in `buf` (no allocation).
pub(crate) fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

impl AuthResponse {
    /// Checks that an `Ok` answer can be sent as it is: `port` non-zero, `user`/`pass`
    /// representable (see [`AuthResponse::headers`]; `server` was checked when it was made).
    /// Other variants are always sendable (their texts are sanitized).
    pub fn validate(&self) -> Result<(), ResponseError> {
        let AuthResponse::Ok { port, user, pass, .. } = self else { return Ok(()) };
        if *port == 0 {
            return Err(ResponseError("backend port 0".to_string()));
        }
        if let Some(u) = user {
            check_raw_credential("backend user", u.as_bytes())?;
        }
        if let Some(p) = pass {
            check_raw_credential("backend password", p)?;
        }
        Ok(())
    }

    /// The header lines of the answer, exactly as they go on the wire, in order.
    ///
    /// Every value is free of CR, LF and NUL. An `Ok` that fails [`AuthResponse::validate`] is
    /// never sent: the answer becomes a temporary failure (callers should validate first to
    /// log why). Messages and error codes are sanitized (see `sanitize_message`).
    pub fn headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut h = Vec::new();
        let _ = self.each_header(|k, v| {
            h.push((k, v.to_vec()));
            Some(())
        });
        h
    }

    /// [`AuthResponse::headers`] one by one, without making them: `put` gets each name and
    /// value (borrowed for the call) in order; the first `None` it returns stops and is
    /// returned. The `Ok` answer is validated here, once; `Auth-Server` is the backend's literal
    /// as it was printed when it was made.
    pub fn each_header(&self, mut put: impl FnMut(&'static str, &[u8]) -> Option<()>) -> Option<()> {
        let mut digits = [0u8; 10];
        match self {
            AuthResponse::Ok { server, port, user, pass } => {
                if self.validate().is_err() {
                    return put("Auth-Status", MSG_TEMP.as_bytes());
                }
                put("Auth-Status", b"OK")?;
                put("Auth-Server", server.as_str().as_bytes())?;
                put("Auth-Port", decimal(u32::from(*port), &mut digits))?;
                if let Some(u) = user {
                    put("Auth-User", u.as_bytes())?;
                }
                if let Some(p) = pass {
                    put("Auth-Pass", p)?;
                }
                Some(())
            }
            AuthResponse::Fail { message, wait, error_code, error_sasl } => {
                Self::failure(message, MSG_INVALID, *wait, error_code.as_deref(), &mut put)?;
                // base64 only: anything else is not sent
                if let Some(s) = error_sasl
                    .as_deref()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
                {
                    put("Auth-Error-SASL", s.as_bytes())?;
                }
                Some(())
            }
            AuthResponse::TempFail { message, wait, error_code } => {
                Self::failure(message, MSG_TEMP, *wait, error_code.as_deref(), &mut put)
            }
        }
    }

    fn failure(
        message: &str,
        default: &'static str,
        wait: Option<u32>,
        code: Option<&str>,
        put: &mut impl FnMut(&'static str, &[u8]) -> Option<()>,
    ) -> Option<()> {
        put("Auth-Status", sanitize_message(message, default).as_bytes())?;
        if let Some(w) = wait {
            let mut digits = [0u8; 10];
            put("Auth-Wait", decimal(w, &mut digits))?;
        }
        if let Some(c) = code.and_then(sanitize_code) {
            put("Auth-Error-Code", c.as_bytes())?;
        }
        Some(())
    }

    /// `true` only for `Ok`.
    pub fn is_ok(&self) -> bool {
        matches!(self, AuthResponse::Ok { .. })
    }
}
