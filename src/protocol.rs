//! The auth_http protocol as nginx's mail proxy speaks it (src/mail/ngx_mail_auth_http_module.c
//! of the nginx this module is built against is the spec): the request model, the unescaping of
//! Auth-User/Auth-Pass, and the answer nginx expects.
//!
//! Plain Rust, no nginx types.
//!
//! What nginx 1.28 does, and what this file relies on:
//!
//! * The request always carries `Auth-Method`, `Auth-User`, `Auth-Pass`, `Auth-Protocol`,
//!   `Auth-Login-Attempt` and `Client-IP`; `Client-Host` when the client's name is known;
//!   `Auth-Salt` for APOP/CRAM-MD5; `Auth-SMTP-Helo/From/To` for method `none`; `Auth-SSL*` on
//!   TLS connections. `Auth-User` and `Auth-Pass` are sent (empty) even for `none`/`external`.
//! * nginx sends `Auth-Method: plain` for both SASL PLAIN and LOGIN (and IMAP LOGIN, POP3
//!   USER/PASS); `login` is accepted here too but never produced by nginx.
//! * `Auth-User`, `Auth-Pass` and `Auth-SSL-Cert` are escaped with
//!   `ngx_escape_uri(NGX_ESCAPE_MAIL_AUTH)`: bytes 0x00-0x1F, space and `%` become `%XX`
//!   (uppercase hex); every other byte, UTF-8 included, is sent raw. [`unescape`] is the inverse.
//! * In the answer nginx copies `Auth-User` and `Auth-Pass` **raw** (no unescaping) and hands
//!   them to the backend as they are; its header parser drops leading and trailing spaces.
//!   So [`AuthResponse::headers`] sends them unescaped and refuses values that cannot survive
//!   that trip (CR, LF, NUL, leading/trailing space, empty).
//! * `Auth-Status: OK` and `Auth-Status: WAIT` are compared exactly; any other text is the
//!   error message shown to the client (for SMTP prefixed by `Auth-Error-Code`, default
//!   `535 5.7.0`). `Auth-Server` must be an IP literal (`ngx_parse_addr`), `Auth-Port` an
//!   integer 1..65535, `Auth-Wait` an integer number of seconds (`ngx_atoi`).
//!
//! Decisions:
//! * User names must be valid UTF-8 without control characters (C0, DEL, C1) after unescaping.
//! * Passwords may hold any byte except NUL (no mail protocol can carry a NUL inside a password
//!   and C-string based hash implementations would silently truncate at it).
//! * Size caps after unescaping: user 4096 bytes, password 8192, `Auth-SSL-Cert` 65536,
//!   `Auth-Salt` 1024, other headers 8192.
//! * Every header this module interprets may appear once; a repeated one is an error.
//! * Unescaping is strict: `%` must be followed by two hex digits.

use std::fmt;
use std::net::IpAddr;

/// `Auth-Protocol`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Imap,
    Pop3,
    Smtp,
}

impl Protocol {
    /// The name nginx sends (`imap`, `pop3`, `smtp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Smtp => "smtp",
        }
    }

    /// Parses a protocol name, ASCII case-insensitively.
    pub fn parse(v: &[u8]) -> Option<Protocol> {
        if v.eq_ignore_ascii_case(b"imap") {
            Some(Protocol::Imap)
        } else if v.eq_ignore_ascii_case(b"pop3") {
            Some(Protocol::Pop3)
        } else if v.eq_ignore_ascii_case(b"smtp") {
            Some(Protocol::Smtp)
        } else {
            None
        }
    }

    /// The usual backend port: 143, 110, 25.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Imap => 143,
            Protocol::Pop3 => 110,
            Protocol::Smtp => 25,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Auth-Method`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Plain,
    Login,
    Apop,
    CramMd5,
    External,
    None,
}

impl Method {
    /// The name on the wire (`plain`, `login`, `apop`, `cram-md5`, `external`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Plain => "plain",
            Method::Login => "login",
            Method::Apop => "apop",
            Method::CramMd5 => "cram-md5",
            Method::External => "external",
            Method::None => "none",
        }
    }

    /// Parses a method name, ASCII case-insensitively.
    pub fn parse(v: &[u8]) -> Option<Method> {
        const ALL: [Method; 6] = [
            Method::Plain,
            Method::Login,
            Method::Apop,
            Method::CramMd5,
            Method::External,
            Method::None,
        ];
        ALL.iter()
            .copied()
            .find(|m| v.eq_ignore_ascii_case(m.as_str().as_bytes()))
    }

    /// Whether nginx sends a user name and a password (or digest) for this method.
    pub fn has_credentials(self) -> bool {
        !matches!(self, Method::External | Method::None)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS details nginx sends for a TLS client connection (`Auth-SSL: on` and `Auth-SSL-*`).
/// Certificate fields are only present when `ssl_verify_client` is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslInfo {
    /// `Auth-SSL-Protocol`, e.g. `TLSv1.3`.
    pub protocol: Option<String>,
    /// `Auth-SSL-Cipher`.
    pub cipher: Option<String>,
    /// `Auth-SSL-Verify`: `SUCCESS`, `FAILED:reason` or `NONE`.
    pub verify: Option<String>,
    /// `Auth-SSL-Subject` (RFC 2253 DN).
    pub subject: Option<String>,
    /// `Auth-SSL-Issuer` (RFC 2253 DN).
    pub issuer: Option<String>,
    /// `Auth-SSL-Serial`.
    pub serial: Option<String>,
    /// `Auth-SSL-Fingerprint` (SHA-1, hex).
    pub fingerprint: Option<String>,
    /// `Auth-SSL-Cert`, unescaped (PEM), when `auth_http_pass_client_cert on`.
    pub cert: Option<Vec<u8>>,
}

/// One auth_http request, values unescaped and validated. `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub method: Method,
    /// UTF-8, no control characters; empty for `none`/`external` when nginx sent nothing.
    pub user: String,
    /// Any bytes except NUL (the digest for APOP/CRAM-MD5).
    pub pass: Vec<u8>,
    pub protocol: Protocol,
    /// `Auth-Login-Attempt` (1 when absent).
    pub login_attempt: u32,
    /// `Client-IP`; `None` when absent or a unix-socket peer (`unix:`).
    pub client_ip: Option<IpAddr>,
    pub client_host: Option<String>,
    /// `Auth-Salt` (APOP/CRAM-MD5 challenge), without its line end.
    pub salt: Option<Vec<u8>>,
    pub smtp_helo: Option<String>,
    pub smtp_from: Option<String>,
    pub smtp_to: Option<String>,
    pub ssl: Option<SslInfo>,
    /// Not sent by nginx; `None` unless a header for it is added later.
    pub local_ip: Option<IpAddr>,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("method", &self.method)
            .field("user", &self.user)
            .field("pass", &format_args!("<{} bytes>", self.pass.len()))
            .field("protocol", &self.protocol)
            .field("login_attempt", &self.login_attempt)
            .field("client_ip", &self.client_ip)
            .field("client_host", &self.client_host)
            .field("salt", &self.salt)
            .field("smtp_helo", &self.smtp_helo)
            .field("smtp_from", &self.smtp_from)
            .field("smtp_to", &self.smtp_to)
            .field("ssl", &self.ssl)
            .field("local_ip", &self.local_ip)
            .finish()
    }
}

pub const MAX_USER_LEN: usize = 4096;
pub const MAX_PASS_LEN: usize = 8192;
pub const MAX_CERT_LEN: usize = 65536;
pub const MAX_SALT_LEN: usize = 1024;
pub const MAX_OTHER_LEN: usize = 8192;

/// Why a request was refused. `Display` never contains raw client bytes: anything quoted is
/// shortened and non-printable bytes are shown as `\xNN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A required header is absent.
    MissingHeader(&'static str),
    /// A header this module interprets appears more than once.
    DuplicateHeader(&'static str),
    /// `Auth-Method` names no method nginx knows (printable excerpt).
    UnknownMethod(String),
    /// `Auth-Protocol` is not imap/pop3/smtp (printable excerpt).
    UnknownProtocol(String),
    /// `%` not followed by two hex digits; `offset` is the position of the `%`.
    BadEscape { header: &'static str, offset: usize },
    /// A NUL byte after unescaping.
    NulByte(&'static str),
    /// The (unescaped) value is longer than allowed.
    TooLong {
        header: &'static str,
        len: usize,
        max: usize,
    },
    /// `Auth-User` is not valid UTF-8 after unescaping.
    UserNotUtf8,
    /// `Auth-User` contains a control character.
    ControlChar(&'static str),
    /// A value that must have a given form does not (printable excerpt).
    BadValue { header: &'static str, value: String },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::MissingHeader(h) => write!(f, "missing header \"{h}\""),
            ProtocolError::DuplicateHeader(h) => write!(f, "duplicate header \"{h}\""),
            ProtocolError::UnknownMethod(m) => write!(f, "unknown Auth-Method \"{m}\""),
            ProtocolError::UnknownProtocol(p) => write!(f, "unknown Auth-Protocol \"{p}\""),
            ProtocolError::BadEscape { header, offset } => {
                write!(f, "bad %-escape in \"{header}\" at offset {offset}")
            }
            ProtocolError::NulByte(h) => write!(f, "NUL byte in \"{h}\""),
            ProtocolError::TooLong { header, len, max } => {
                write!(f, "\"{header}\" too long ({len} bytes, at most {max})")
            }
            ProtocolError::UserNotUtf8 => write!(f, "\"Auth-User\" is not valid UTF-8"),
            ProtocolError::ControlChar(h) => write!(f, "control character in \"{h}\""),
            ProtocolError::BadValue { header, value } => {
                write!(f, "invalid \"{header}\" value \"{value}\"")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

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

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX`; `Err(offset of the bad '%')`.
fn unescape_raw(v: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        if b == b'%' {
            let hi = v.get(i + 1).copied().and_then(hex_val).ok_or(i)?;
            let lo = v.get(i + 2).copied().and_then(hex_val).ok_or(i)?;
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
    unescape_raw(v).map_err(|offset| ProtocolError::BadEscape {
        header: "value",
        offset,
    })
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

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

// Header indexes into the "seen" table.
const H_METHOD: usize = 0;
const H_USER: usize = 1;
const H_PASS: usize = 2;
const H_PROTOCOL: usize = 3;
const H_ATTEMPT: usize = 4;
const H_CLIENT_IP: usize = 5;
const H_CLIENT_HOST: usize = 6;
const H_SALT: usize = 7;
const H_HELO: usize = 8;
const H_FROM: usize = 9;
const H_TO: usize = 10;
const H_SSL: usize = 11;
const H_SSL_PROTOCOL: usize = 12;
const H_SSL_CIPHER: usize = 13;
const H_SSL_VERIFY: usize = 14;
const H_SSL_SUBJECT: usize = 15;
const H_SSL_ISSUER: usize = 16;
const H_SSL_SERIAL: usize = 17;
const H_SSL_FINGERPRINT: usize = 18;
const H_SSL_CERT: usize = 19;

const HEADERS: [&str; 20] = [
    "Auth-Method",
    "Auth-User",
    "Auth-Pass",
    "Auth-Protocol",
    "Auth-Login-Attempt",
    "Client-IP",
    "Client-Host",
    "Auth-Salt",
    "Auth-SMTP-Helo",
    "Auth-SMTP-From",
    "Auth-SMTP-To",
    "Auth-SSL",
    "Auth-SSL-Protocol",
    "Auth-SSL-Cipher",
    "Auth-SSL-Verify",
    "Auth-SSL-Subject",
    "Auth-SSL-Issuer",
    "Auth-SSL-Serial",
    "Auth-SSL-Fingerprint",
    "Auth-SSL-Cert",
];

fn max_len(idx: usize) -> usize {
    match idx {
        H_USER => MAX_USER_LEN,
        H_PASS => MAX_PASS_LEN,
        H_SSL_CERT => MAX_CERT_LEN,
        H_SALT => MAX_SALT_LEN,
        _ => MAX_OTHER_LEN,
    }
}

/// Parses the headers of an auth_http request (names ASCII case-insensitive, values with
/// surrounding spaces/tabs ignored, unknown headers ignored).
pub fn parse_request<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<AuthRequest, ProtocolError> {
    let mut vals: [Option<&'a [u8]>; HEADERS.len()] = [None; HEADERS.len()];

    for (name, value) in headers {
        let name = trim_ows(name);
        let Some(idx) = HEADERS
            .iter()
            .position(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        else {
            continue;
        };
        let header = HEADERS[idx];
        if vals[idx].is_some() {
            return Err(ProtocolError::DuplicateHeader(header));
        }
        let value = trim_ows(value);
        // Escaped values take at most 3 bytes per byte; refuse absurd sizes before decoding.
        let limit = max_len(idx);
        let raw_limit = if matches!(idx, H_USER | H_PASS | H_SSL_CERT) {
            limit.saturating_mul(3)
        } else {
            limit
        };
        if value.len() > raw_limit {
            return Err(ProtocolError::TooLong {
                header,
                len: value.len(),
                max: limit,
            });
        }
        vals[idx] = Some(value);
    }

    let method_raw = vals[H_METHOD].ok_or(ProtocolError::MissingHeader(HEADERS[H_METHOD]))?;
    let method = Method::parse(method_raw)
        .ok_or_else(|| ProtocolError::UnknownMethod(printable(method_raw, 64)))?;

    let protocol_raw = vals[H_PROTOCOL].ok_or(ProtocolError::MissingHeader(HEADERS[H_PROTOCOL]))?;
    let protocol = Protocol::parse(protocol_raw)
        .ok_or_else(|| ProtocolError::UnknownProtocol(printable(protocol_raw, 64)))?;

    if method.has_credentials() {
        if vals[H_USER].is_none() {
            return Err(ProtocolError::MissingHeader(HEADERS[H_USER]));
        }
        if vals[H_PASS].is_none() {
            return Err(ProtocolError::MissingHeader(HEADERS[H_PASS]));
        }
    }

    let user = match vals[H_USER] {
        Some(v) => parse_user(v)?,
        None => String::new(),
    };
    let pass = match vals[H_PASS] {
        Some(v) => {
            let p = unescaped(H_PASS, v)?;
            if p.contains(&0) {
                return Err(ProtocolError::NulByte(HEADERS[H_PASS]));
            }
            p
        }
        None => Vec::new(),
    };

    let login_attempt = match vals[H_ATTEMPT] {
        Some(v) => parse_u32(v).ok_or_else(|| bad_value(H_ATTEMPT, v))?,
        None => 1,
    };

    let client_ip = match vals[H_CLIENT_IP] {
        Some(v) if v.starts_with(b"unix:") => None,
        Some(v) => Some(parse_ip(v).ok_or_else(|| bad_value(H_CLIENT_IP, v))?),
        None => None,
    };

    let salt = vals[H_SALT].map(<[u8]>::to_vec);

    let ssl_on = match vals[H_SSL] {
        Some(v) => v.eq_ignore_ascii_case(b"on"),
        None => false,
    };
    let any_ssl = (H_SSL_PROTOCOL..=H_SSL_CERT).any(|i| vals[i].is_some());
    let ssl = if ssl_on || any_ssl {
        Some(SslInfo {
            protocol: text(vals[H_SSL_PROTOCOL]),
            cipher: text(vals[H_SSL_CIPHER]),
            verify: text(vals[H_SSL_VERIFY]),
            subject: text(vals[H_SSL_SUBJECT]),
            issuer: text(vals[H_SSL_ISSUER]),
            serial: text(vals[H_SSL_SERIAL]),
            fingerprint: text(vals[H_SSL_FINGERPRINT]),
            cert: match vals[H_SSL_CERT] {
                Some(v) => Some(unescaped(H_SSL_CERT, v)?),
                None => None,
            },
        })
    } else {
        None
    };

    Ok(AuthRequest {
        method,
        user,
        pass,
        protocol,
        login_attempt,
        client_ip,
        client_host: text(vals[H_CLIENT_HOST]),
        salt,
        smtp_helo: text(vals[H_HELO]),
        smtp_from: text(vals[H_FROM]),
        smtp_to: text(vals[H_TO]),
        ssl,
        local_ip: None,
    })
}

fn unescaped(idx: usize, v: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let header = HEADERS[idx];
    let out = unescape_raw(v).map_err(|offset| ProtocolError::BadEscape { header, offset })?;
    let max = max_len(idx);
    if out.len() > max {
        return Err(ProtocolError::TooLong {
            header,
            len: out.len(),
            max,
        });
    }
    Ok(out)
}

fn parse_user(v: &[u8]) -> Result<String, ProtocolError> {
    let header = HEADERS[H_USER];
    let raw = unescaped(H_USER, v)?;
    if raw.contains(&0) {
        return Err(ProtocolError::NulByte(header));
    }
    let user = String::from_utf8(raw).map_err(|_| ProtocolError::UserNotUtf8)?;
    if user.chars().any(char::is_control) {
        return Err(ProtocolError::ControlChar(header));
    }
    Ok(user)
}

/// Informational text values (not escaped by nginx): lossy UTF-8, empty = absent.
fn text(v: Option<&[u8]>) -> Option<String> {
    match v {
        Some(v) if !v.is_empty() => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    }
}

fn bad_value(idx: usize, v: &[u8]) -> ProtocolError {
    ProtocolError::BadValue {
        header: HEADERS[idx],
        value: printable(v, 64),
    }
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn parse_ip(v: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// The answer to nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResponse {
    /// Login accepted: proxy to `server:port`; `user`/`pass` replace the login and password
    /// nginx presents to the backend (None: nginx keeps the client's own).
    Ok {
        server: String,
        port: u16,
        user: Option<String>,
        pass: Option<Vec<u8>>,
    },
    /// Login refused; `message` is shown to the client.
    Fail {
        message: String,
        wait: Option<u32>,
        error_code: Option<String>,
    },
    /// Temporary failure (store broken ...); `message` is shown to the client.
    TempFail {
        message: String,
        wait: Option<u32>,
        error_code: Option<String>,
    },
    /// `Auth-Status: WAIT`: nginx asks again after `wait` seconds.
    Wait { wait: u32 },
}

pub const MSG_INVALID: &str = "Invalid login or password";
pub const MSG_TEMP: &str = "Temporary server problem, try again later";
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
        return Err(ResponseError(format!(
            "{what} contains byte 0x{b:02x} that cannot be passed to nginx"
        )));
    }
    if v.first() == Some(&b' ') || v.last() == Some(&b' ') {
        return Err(ResponseError(format!(
            "{what} starts or ends with a space, which nginx would drop"
        )));
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
        if let AuthResponse::Ok {
            server,
            port,
            user,
            pass,
        } = self
        {
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
            AuthResponse::Ok {
                server,
                port,
                user,
                pass,
            } => {
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
            AuthResponse::Fail {
                message,
                wait,
                error_code,
            } => Self::failure(message, MSG_INVALID, *wait, error_code.as_deref()),
            AuthResponse::TempFail {
                message,
                wait,
                error_code,
            } => Self::failure(message, MSG_TEMP, *wait, error_code.as_deref()),
            AuthResponse::Wait { wait } => vec![
                ("Auth-Status", b"WAIT".to_vec()),
                ("Auth-Wait", wait.to_string().into_bytes()),
            ],
        }
    }

    fn failure(
        message: &str,
        default: &str,
        wait: Option<u32>,
        code: Option<&str>,
    ) -> Vec<(&'static str, Vec<u8>)> {
        let mut h = vec![(
            "Auth-Status",
            sanitize_message(message, default).into_bytes(),
        )];
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(h: &[(&str, &[u8])]) -> Result<AuthRequest, ProtocolError> {
        parse_request(h.iter().map(|(n, v)| (n.as_bytes(), *v)))
    }

    /// A request exactly as nginx 1.28 builds it for a PLAIN/LOGIN login.
    fn nginx_plain(user: &[u8], pass: &[u8]) -> Vec<(String, Vec<u8>)> {
        vec![
            ("Host".into(), b"localhost".to_vec()),
            ("Auth-Method".into(), b"plain".to_vec()),
            ("Auth-User".into(), escape(user)),
            ("Auth-Pass".into(), escape(pass)),
            ("Auth-Protocol".into(), b"imap".to_vec()),
            ("Auth-Login-Attempt".into(), b"1".to_vec()),
            ("Client-IP".into(), b"127.0.0.1".to_vec()),
        ]
    }

    fn parse_owned(h: &[(String, Vec<u8>)]) -> Result<AuthRequest, ProtocolError> {
        parse_request(h.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())))
    }

    fn base() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("Auth-Method", b"plain"),
            ("Auth-User", b"alice"),
            ("Auth-Pass", b"secret"),
            ("Auth-Protocol", b"imap"),
        ]
    }

    fn with(name: &'static str, value: &'static [u8]) -> Vec<(&'static str, &'static [u8])> {
        let mut h: Vec<_> = base().into_iter().filter(|(n, _)| *n != name).collect();
        h.push((name, value));
        h
    }

    fn without(name: &str) -> Vec<(&'static str, &'static [u8])> {
        base().into_iter().filter(|(n, _)| *n != name).collect()
    }

    #[test]
    fn escape_mirrors_nginx_table() {
        // NGX_ESCAPE_MAIL_AUTH ("memcached" table): 0x00-0x1F, ' ', '%'; nothing else.
        for b in 0u8..=255 {
            let e = escape(&[b]);
            let expect_escaped = b <= 0x1f || b == 0x20 || b == 0x25;
            assert_eq!(e.len() == 3, expect_escaped, "byte {b:#04x}");
            if expect_escaped {
                assert_eq!(e, format!("%{b:02X}").into_bytes());
            } else {
                assert_eq!(e, vec![b]);
            }
        }
        assert_eq!(escape(b"a b%c\r\n"), b"a%20b%25c%0D%0A".to_vec());
        assert_eq!(escape(b"\x7f"), b"\x7f".to_vec());
    }

    #[test]
    fn unescape_cases() {
        assert_eq!(unescape(b"john%20doe").unwrap(), b"john doe");
        assert_eq!(unescape(b"100%25").unwrap(), b"100%");
        assert_eq!(unescape(b"a%0D%0Ab").unwrap(), b"a\r\nb");
        assert_eq!(unescape(b"%0d%0a").unwrap(), b"\r\n", "lowercase hex");
        assert_eq!(unescape(b"%00").unwrap(), vec![0u8]);
        assert_eq!(
            unescape(b"%41").unwrap(),
            b"A",
            "needlessly escaped is fine"
        );
        assert_eq!(
            unescape("j\u{fc}rgen".as_bytes()).unwrap(),
            "j\u{fc}rgen".as_bytes()
        );
        assert_eq!(unescape(b"+").unwrap(), b"+", "'+' is not a space here");
        assert_eq!(unescape(b"").unwrap(), b"");
        assert_eq!(
            unescape(b"ab%zz"),
            Err(ProtocolError::BadEscape {
                header: "value",
                offset: 2
            })
        );
        assert_eq!(
            unescape(b"%4"),
            Err(ProtocolError::BadEscape {
                header: "value",
                offset: 0
            })
        );
        assert_eq!(
            unescape(b"x%"),
            Err(ProtocolError::BadEscape {
                header: "value",
                offset: 1
            })
        );
        assert_eq!(
            unescape(b"%g1"),
            Err(ProtocolError::BadEscape {
                header: "value",
                offset: 0
            })
        );
    }

    #[test]
    fn round_trip_all_bytes() {
        let all: Vec<u8> = (0u8..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        for s in [
            "p@ss w%rd",
            "\u{444}\u{44b}\u{432}",
            "tab\there",
            "%%%",
            " lead",
            "trail ",
        ] {
            assert_eq!(unescape(&escape(s.as_bytes())).unwrap(), s.as_bytes());
        }
    }

    #[test]
    fn parses_nginx_plain_request() {
        let h = nginx_plain("j\u{fc}rgen doe".as_bytes(), b"p%ss w\r\nord \xff");
        let r = parse_owned(&h).unwrap();
        assert_eq!(r.method, Method::Plain);
        assert_eq!(r.user, "j\u{fc}rgen doe");
        assert_eq!(r.pass, b"p%ss w\r\nord \xff");
        assert_eq!(r.protocol, Protocol::Imap);
        assert_eq!(r.login_attempt, 1);
        assert_eq!(r.client_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(r.client_host, None);
        assert_eq!(r.ssl, None);
        assert_eq!(r.local_ip, None);
    }

    #[test]
    fn spaces_and_leading_trailing_space_survive_escaping() {
        // nginx escapes spaces, so leading/trailing spaces are not lost by header trimming.
        let h = nginx_plain(b" bob ", b"  two spaces  ");
        let r = parse_owned(&h).unwrap();
        assert_eq!(r.user, " bob ");
        assert_eq!(r.pass, b"  two spaces  ");
    }

    #[test]
    fn header_names_case_insensitive_and_values_trimmed() {
        let r = req(&[
            ("auth-method", b"PLAIN"),
            ("AUTH-USER", b"alice"),
            ("aUtH-pAsS", b" secret\t"),
            ("Auth-protocol", b"Smtp"),
            ("client-ip", b"::1"),
            ("CLIENT-HOST", b"localhost"),
            ("auth-login-attempt", b"3"),
        ])
        .unwrap();
        assert_eq!(r.method, Method::Plain);
        assert_eq!(r.protocol, Protocol::Smtp);
        assert_eq!(r.pass, b"secret");
        assert_eq!(r.client_ip, Some("::1".parse().unwrap()));
        assert_eq!(r.client_host.as_deref(), Some("localhost"));
        assert_eq!(r.login_attempt, 3);
    }

    #[test]
    fn all_methods_and_protocols() {
        for m in ["plain", "login", "apop", "cram-md5", "external", "none"] {
            let mut h = with("Auth-Method", b"x");
            h.retain(|(n, _)| *n != "Auth-Method");
            h.push(("Auth-Method", m.as_bytes()));
            assert_eq!(req(&h).unwrap().method.as_str(), m);
        }
        for p in [Protocol::Imap, Protocol::Pop3, Protocol::Smtp] {
            let mut h = without("Auth-Protocol");
            h.push(("Auth-Protocol", p.as_str().as_bytes()));
            assert_eq!(req(&h).unwrap().protocol, p);
        }
    }

    #[test]
    fn missing_headers() {
        assert_eq!(
            req(&without("Auth-Method")),
            Err(ProtocolError::MissingHeader("Auth-Method"))
        );
        assert_eq!(
            req(&without("Auth-Protocol")),
            Err(ProtocolError::MissingHeader("Auth-Protocol"))
        );
        assert_eq!(
            req(&without("Auth-User")),
            Err(ProtocolError::MissingHeader("Auth-User"))
        );
        assert_eq!(
            req(&without("Auth-Pass")),
            Err(ProtocolError::MissingHeader("Auth-Pass"))
        );
        assert_eq!(req(&[]), Err(ProtocolError::MissingHeader("Auth-Method")));
        // A plain HTTP request, nothing auth_http about it.
        assert_eq!(
            req(&[("Host", b"x"), ("User-Agent", b"curl")]),
            Err(ProtocolError::MissingHeader("Auth-Method"))
        );
    }

    #[test]
    fn none_and_external_need_no_credentials() {
        // What nginx sends for an SMTP transaction with "smtp_auth none".
        let r = req(&[
            ("Auth-Method", b"none"),
            ("Auth-User", b""),
            ("Auth-Pass", b""),
            ("Auth-Protocol", b"smtp"),
            ("Auth-Login-Attempt", b"1"),
            ("Client-IP", b"127.0.0.1"),
            ("Client-Host", b"[UNAVAILABLE]"),
            ("Auth-SMTP-Helo", b"client.example"),
            ("Auth-SMTP-From", b"MAIL FROM:<a@example.com>"),
            ("Auth-SMTP-To", b"RCPT TO:<b@example.com>"),
        ])
        .unwrap();
        assert_eq!(r.method, Method::None);
        assert_eq!(r.user, "");
        assert!(r.pass.is_empty());
        assert_eq!(r.smtp_helo.as_deref(), Some("client.example"));
        assert_eq!(r.smtp_from.as_deref(), Some("MAIL FROM:<a@example.com>"));
        assert_eq!(r.smtp_to.as_deref(), Some("RCPT TO:<b@example.com>"));

        let r = req(&[("Auth-Method", b"external"), ("Auth-Protocol", b"imap")]).unwrap();
        assert_eq!(r.method, Method::External);
        assert_eq!(r.user, "");
    }

    #[test]
    fn unknown_method_and_protocol() {
        assert_eq!(
            req(&with("Auth-Method", b"digest-md5")),
            Err(ProtocolError::UnknownMethod("digest-md5".into()))
        );
        assert_eq!(
            req(&with("Auth-Protocol", b"http")),
            Err(ProtocolError::UnknownProtocol("http".into()))
        );
        let e = req(&with("Auth-Method", b"x\r\ny\xff")).unwrap_err();
        assert_eq!(e.to_string(), "unknown Auth-Method \"x\\x0d\\x0ay\\xff\"");
    }

    #[test]
    fn duplicates_refused() {
        let mut h = base();
        h.push(("auth-user", b"mallory"));
        assert_eq!(req(&h), Err(ProtocolError::DuplicateHeader("Auth-User")));
        let mut h = base();
        h.push(("Auth-Pass", b"other"));
        assert_eq!(req(&h), Err(ProtocolError::DuplicateHeader("Auth-Pass")));
        let mut h = base();
        h.push(("Auth-Protocol", b"smtp"));
        assert_eq!(
            req(&h),
            Err(ProtocolError::DuplicateHeader("Auth-Protocol"))
        );
    }

    #[test]
    fn bad_escapes_name_the_header() {
        assert_eq!(
            req(&with("Auth-User", b"al%zzice")),
            Err(ProtocolError::BadEscape {
                header: "Auth-User",
                offset: 2
            })
        );
        assert_eq!(
            req(&with("Auth-Pass", b"secret%4")),
            Err(ProtocolError::BadEscape {
                header: "Auth-Pass",
                offset: 6
            })
        );
    }

    #[test]
    fn nul_bytes_refused() {
        assert_eq!(
            req(&with("Auth-User", b"alice%00admin")),
            Err(ProtocolError::NulByte("Auth-User"))
        );
        assert_eq!(
            req(&with("Auth-Pass", b"secret%00garbage")),
            Err(ProtocolError::NulByte("Auth-Pass"))
        );
    }

    #[test]
    fn user_rules() {
        assert_eq!(
            req(&with("Auth-User", b"bob%0D%0A")),
            Err(ProtocolError::ControlChar("Auth-User"))
        );
        assert_eq!(
            req(&with("Auth-User", b"bob%09")),
            Err(ProtocolError::ControlChar("Auth-User"))
        );
        assert_eq!(
            req(&with("Auth-User", b"bob\x7f")),
            Err(ProtocolError::ControlChar("Auth-User"))
        );
        // U+0085 (C1 control) in UTF-8.
        assert_eq!(
            req(&with("Auth-User", b"bob\xc2\x85")),
            Err(ProtocolError::ControlChar("Auth-User"))
        );
        assert_eq!(
            req(&with("Auth-User", b"bob\xff")),
            Err(ProtocolError::UserNotUtf8)
        );
        assert_eq!(
            req(&with("Auth-User", b"%C3%28")),
            Err(ProtocolError::UserNotUtf8)
        );
        // UTF-8 escaped byte by byte is still UTF-8.
        assert_eq!(
            req(&with("Auth-User", b"j%C3%BCrgen")).unwrap().user,
            "j\u{fc}rgen"
        );
        // An empty user is a request, not a protocol error (answered as an unknown user).
        assert_eq!(req(&with("Auth-User", b"")).unwrap().user, "");
    }

    #[test]
    fn password_may_hold_control_bytes_and_non_utf8() {
        let r = req(&with("Auth-Pass", b"a%0D%0Ab%09%1F\xfe\x7f")).unwrap();
        assert_eq!(r.pass, b"a\r\nb\t\x1f\xfe\x7f");
    }

    #[test]
    fn too_long_values() {
        let long_user = vec![b'a'; MAX_USER_LEN + 1];
        let h = [
            ("Auth-Method", b"plain".as_slice()),
            ("Auth-User", long_user.as_slice()),
            ("Auth-Pass", b"x".as_slice()),
            ("Auth-Protocol", b"imap".as_slice()),
        ];
        assert_eq!(
            req(&h),
            Err(ProtocolError::TooLong {
                header: "Auth-User",
                len: MAX_USER_LEN + 1,
                max: MAX_USER_LEN
            })
        );
        // Exactly at the cap is fine, and the cap applies after unescaping.
        let ok_user = vec![b'a'; MAX_USER_LEN];
        let h2 = [
            ("Auth-Method", b"plain".as_slice()),
            ("Auth-User", ok_user.as_slice()),
            ("Auth-Pass", b"x".as_slice()),
            ("Auth-Protocol", b"imap".as_slice()),
        ];
        assert_eq!(req(&h2).unwrap().user.len(), MAX_USER_LEN);
        let escaped_pass = b"%20".repeat(MAX_PASS_LEN);
        let h3 = [
            ("Auth-Method", b"plain".as_slice()),
            ("Auth-User", b"u".as_slice()),
            ("Auth-Pass", escaped_pass.as_slice()),
            ("Auth-Protocol", b"imap".as_slice()),
        ];
        assert_eq!(req(&h3).unwrap().pass.len(), MAX_PASS_LEN);
        let too_long_pass = b"%20".repeat(MAX_PASS_LEN + 1);
        let h4 = [
            ("Auth-Method", b"plain".as_slice()),
            ("Auth-User", b"u".as_slice()),
            ("Auth-Pass", too_long_pass.as_slice()),
            ("Auth-Protocol", b"imap".as_slice()),
        ];
        assert!(matches!(
            req(&h4),
            Err(ProtocolError::TooLong {
                header: "Auth-Pass",
                ..
            })
        ));
        let big_host = vec![b'h'; MAX_OTHER_LEN + 1];
        let mut h5 = base();
        h5.push(("Client-Host", big_host.as_slice()));
        assert!(matches!(
            req(&h5),
            Err(ProtocolError::TooLong {
                header: "Client-Host",
                ..
            })
        ));
    }

    #[test]
    fn bad_values() {
        assert!(matches!(
            req(&with("Auth-Login-Attempt", b"x1")),
            Err(ProtocolError::BadValue {
                header: "Auth-Login-Attempt",
                ..
            })
        ));
        assert!(matches!(
            req(&with("Auth-Login-Attempt", b"99999999999")),
            Err(ProtocolError::BadValue {
                header: "Auth-Login-Attempt",
                ..
            })
        ));
        assert!(matches!(
            req(&with("Auth-Login-Attempt", b"-1")),
            Err(ProtocolError::BadValue {
                header: "Auth-Login-Attempt",
                ..
            })
        ));
        assert!(matches!(
            req(&with("Client-IP", b"localhost")),
            Err(ProtocolError::BadValue {
                header: "Client-IP",
                ..
            })
        ));
        assert_eq!(req(&with("Client-IP", b"unix:")).unwrap().client_ip, None);
        assert_eq!(
            req(&with("Client-IP", b"[::1]")).unwrap().client_ip,
            Some("::1".parse().unwrap())
        );
    }

    #[test]
    fn error_messages_are_clear() {
        assert_eq!(
            ProtocolError::MissingHeader("Auth-Pass").to_string(),
            "missing header \"Auth-Pass\""
        );
        assert_eq!(
            ProtocolError::TooLong {
                header: "Auth-User",
                len: 5000,
                max: 4096
            }
            .to_string(),
            "\"Auth-User\" too long (5000 bytes, at most 4096)"
        );
        assert_eq!(
            ProtocolError::BadEscape {
                header: "Auth-User",
                offset: 3
            }
            .to_string(),
            "bad %-escape in \"Auth-User\" at offset 3"
        );
        assert_eq!(
            ProtocolError::UserNotUtf8.to_string(),
            "\"Auth-User\" is not valid UTF-8"
        );
        assert_eq!(
            ProtocolError::NulByte("Auth-Pass").to_string(),
            "NUL byte in \"Auth-Pass\""
        );
    }

    #[test]
    fn ssl_and_salt() {
        let cert = escape(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
        let h: Vec<(&str, &[u8])> = vec![
            ("Auth-Method", b"apop"),
            ("Auth-User", b"bob"),
            ("Auth-Pass", b"c4c9334bac560ecc979e58001b3e22fb"),
            ("Auth-Salt", b"<1896.697170952@dbc.mtview.ca.us>"),
            ("Auth-Protocol", b"pop3"),
            ("Auth-SSL", b"on"),
            ("Auth-SSL-Protocol", b"TLSv1.3"),
            ("Auth-SSL-Cipher", b"TLS_AES_256_GCM_SHA384"),
            ("Auth-SSL-Verify", b"SUCCESS"),
            ("Auth-SSL-Subject", b"CN=bob"),
            ("Auth-SSL-Issuer", b"CN=ca"),
            ("Auth-SSL-Serial", b"01"),
            ("Auth-SSL-Fingerprint", b"abcdef"),
            ("Auth-SSL-Cert", &cert),
        ];
        let r = req(&h).unwrap();
        assert_eq!(
            r.salt.as_deref(),
            Some(&b"<1896.697170952@dbc.mtview.ca.us>"[..])
        );
        let ssl = r.ssl.unwrap();
        assert_eq!(ssl.protocol.as_deref(), Some("TLSv1.3"));
        assert_eq!(ssl.verify.as_deref(), Some("SUCCESS"));
        assert_eq!(ssl.subject.as_deref(), Some("CN=bob"));
        assert_eq!(
            ssl.cert.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"[..])
        );
        assert_eq!(
            req(&with("Auth-SSL-Cert", b"%zz")),
            Err(ProtocolError::BadEscape {
                header: "Auth-SSL-Cert",
                offset: 0
            })
        );
        // Auth-SSL: on alone.
        assert_eq!(
            req(&with("Auth-SSL", b"on")).unwrap().ssl,
            Some(SslInfo::default())
        );
    }

    fn hdr(resp: &AuthResponse) -> Vec<(&'static str, String)> {
        resp.headers()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn ok_response() {
        let r = AuthResponse::Ok {
            server: "127.0.0.1".into(),
            port: 8143,
            user: None,
            pass: None,
        };
        assert_eq!(
            hdr(&r),
            vec![
                ("Auth-Status", "OK".into()),
                ("Auth-Server", "127.0.0.1".into()),
                ("Auth-Port", "8143".into())
            ]
        );
        let r = AuthResponse::Ok {
            server: "[::1]".into(),
            port: 143,
            user: Some("j\u{fc}rgen doe".into()),
            pass: Some(b"pa%ss word".to_vec()),
        };
        // Auth-User/Auth-Pass are sent raw: nginx 1.28 copies them without unescaping.
        assert_eq!(
            hdr(&r),
            vec![
                ("Auth-Status", "OK".into()),
                ("Auth-Server", "::1".into()),
                ("Auth-Port", "143".into()),
                ("Auth-User", "j\u{fc}rgen doe".into()),
                ("Auth-Pass", "pa%ss word".into()),
            ]
        );
        assert!(r.is_ok());
    }

    #[test]
    fn unsendable_ok_becomes_tempfail() {
        let bad = [
            AuthResponse::Ok {
                server: "mail.example.com".into(),
                port: 143,
                user: None,
                pass: None,
            },
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 0,
                user: None,
                pass: None,
            },
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 143,
                user: Some("a\r\nAuth-Server: 10.0.0.1".into()),
                pass: None,
            },
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 143,
                user: Some(" bob".into()),
                pass: None,
            },
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 143,
                user: Some(String::new()),
                pass: None,
            },
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 143,
                user: None,
                pass: Some(b"x\0y".to_vec()),
            },
            AuthResponse::Ok {
                server: "127.0.0.1".into(),
                port: 143,
                user: None,
                pass: Some(b"trailing ".to_vec()),
            },
            AuthResponse::Ok {
                server: "127.0.0.1\r\nX: y".into(),
                port: 143,
                user: None,
                pass: None,
            },
        ];
        for r in bad {
            assert!(r.validate().is_err(), "{r:?}");
            assert_eq!(
                hdr(&r),
                vec![("Auth-Status", MSG_TEMP.to_string())],
                "{r:?}"
            );
        }
    }

    #[test]
    fn fail_response_sanitized() {
        let r = AuthResponse::Fail {
            message: "Invalid login or password".into(),
            wait: Some(3),
            error_code: Some("535 5.7.8".into()),
        };
        assert_eq!(
            hdr(&r),
            vec![
                ("Auth-Status", "Invalid login or password".into()),
                ("Auth-Wait", "3".into()),
                ("Auth-Error-Code", "535 5.7.8".into()),
            ]
        );
        let r = AuthResponse::Fail {
            message: "bad\r\nAuth-Status: OK\0".into(),
            wait: None,
            error_code: Some("\r\n".into()),
        };
        assert_eq!(
            hdr(&r),
            vec![("Auth-Status", "bad  Auth-Status: OK".into())]
        );
        // Texts nginx would read as success or WAIT, or nothing at all, fall back.
        for m in ["OK", " OK ", "WAIT", "", "\r\n"] {
            let r = AuthResponse::Fail {
                message: m.into(),
                wait: None,
                error_code: None,
            };
            assert_eq!(
                hdr(&r),
                vec![("Auth-Status", MSG_INVALID.to_string())],
                "{m:?}"
            );
            let r = AuthResponse::TempFail {
                message: m.into(),
                wait: Some(1),
                error_code: None,
            };
            assert_eq!(hdr(&r)[0], ("Auth-Status", MSG_TEMP.to_string()), "{m:?}");
        }
        // "ok" in another case is just a message to nginx (it compares "OK" exactly).
        let r = AuthResponse::Fail {
            message: "ok".into(),
            wait: None,
            error_code: None,
        };
        assert_eq!(hdr(&r), vec![("Auth-Status", "ok".to_string())]);
        // Length cap at a character boundary.
        let r = AuthResponse::Fail {
            message: "\u{fc}".repeat(400),
            wait: None,
            error_code: None,
        };
        let m = &hdr(&r)[0].1;
        assert!(m.len() <= MAX_MESSAGE_LEN && m.len() >= MAX_MESSAGE_LEN - 1);
        assert!(m.chars().all(|c| c == '\u{fc}'));
    }

    #[test]
    fn temp_and_wait_responses() {
        let r = AuthResponse::TempFail {
            message: MSG_TEMP.into(),
            wait: Some(5),
            error_code: Some("451 4.3.0".into()),
        };
        assert_eq!(
            hdr(&r),
            vec![
                ("Auth-Status", MSG_TEMP.into()),
                ("Auth-Wait", "5".into()),
                ("Auth-Error-Code", "451 4.3.0".into())
            ]
        );
        assert_eq!(
            hdr(&AuthResponse::Wait { wait: 2 }),
            vec![("Auth-Status", "WAIT".into()), ("Auth-Wait", "2".into())]
        );
    }

    #[test]
    fn no_header_value_ever_contains_cr_lf_nul() {
        let nasty = "a\r\nb\0c\n\rd\u{85}\u{2028}";
        let rs = [
            AuthResponse::Fail {
                message: nasty.into(),
                wait: Some(1),
                error_code: Some(nasty.into()),
            },
            AuthResponse::TempFail {
                message: nasty.into(),
                wait: None,
                error_code: Some(nasty.into()),
            },
            AuthResponse::Ok {
                server: nasty.into(),
                port: 1,
                user: Some(nasty.into()),
                pass: Some(nasty.as_bytes().to_vec()),
            },
            AuthResponse::Ok {
                server: "10.0.0.1".into(),
                port: 1,
                user: Some("ok".into()),
                pass: Some(nasty.as_bytes().to_vec()),
            },
        ];
        for r in rs {
            for (_, v) in r.headers() {
                assert!(
                    !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
                    "{r:?}"
                );
            }
        }
    }

    #[test]
    fn debug_hides_password() {
        let r = req(&with("Auth-Pass", b"hunter2")).unwrap();
        let d = format!("{r:?}");
        assert!(!d.contains("hunter2") && d.contains("<7 bytes>"), "{d}");
    }

    #[test]
    fn protocol_helpers() {
        assert_eq!(Protocol::Pop3.as_str(), "pop3");
        assert_eq!(Protocol::parse(b"POP3"), Some(Protocol::Pop3));
        assert_eq!(Protocol::parse(b"pop"), None);
        assert_eq!(Protocol::Imap.default_port(), 143);
        assert_eq!(Method::parse(b"CRAM-MD5"), Some(Method::CramMd5));
        assert!(Method::Plain.has_credentials());
        assert!(!Method::None.has_credentials());
        assert_eq!(printable(b"ab\"\\\x00", 10), "ab\\x22\\x5c\\x00");
        assert_eq!(printable(b"abcdef", 3), "abc...");
    }
}
