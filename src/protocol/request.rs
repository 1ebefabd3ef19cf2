//! The auth_http request: one lenient view of its headers (parsed once), and the validated
//! [`AuthRequest`] made from it.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

use super::escape::unescape_raw;
use super::{printable, Method, Protocol};
use crate::realip::{self, RealClient, TrustedProxies};

/// TLS details nginx sends for a TLS client connection (`Auth-SSL: on` and `Auth-SSL-*`): the
/// ones the decision reads (EXTERNAL). Certificate fields are only present when
/// `ssl_verify_client` is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslInfo {
    /// `Auth-SSL: on`: the client's connection is TLS (implicit, or after STARTTLS/STLS).
    pub on: bool,
    /// `Auth-SSL-Verify`: `SUCCESS`, `FAILED:reason` or `NONE`.
    pub verify: Option<String>,
    /// `Auth-SSL-Subject` (RFC 2253 DN).
    pub subject: Option<String>,
    /// `Auth-SSL-Fingerprint` (SHA-1, hex).
    pub fingerprint: Option<String>,
}

/// A client's password (or APOP/CRAM-MD5 digest): zeroed when dropped, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(v: Vec<u8>) -> Password {
        Password(v)
    }
}

impl From<&[u8]> for Password {
    fn from(v: &[u8]) -> Password {
        Password(v.to_vec())
    }
}

impl std::ops::Deref for Password {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

/// One auth_http request, values unescaped and validated. `Debug` leaves the password out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub method: Method,
    /// UTF-8, no control characters; empty for `none`/`external` when nginx sent nothing.
    pub user: String,
    /// Any bytes except NUL (the digest for APOP/CRAM-MD5).
    pub pass: Password,
    pub protocol: Protocol,
    /// `Auth-Login-Attempt` (1 when absent).
    pub login_attempt: u32,
    /// `Client-IP`; `None` when absent or a unix-socket peer (`unix:`). The client a trusted
    /// balancer names (`Proxy-Protocol-Addr`) replaces it.
    pub client_ip: Option<IpAddr>,
    /// `Client-IP` as nginx sent it: the address nginx's connection came from (a balancer's,
    /// behind the PROXY protocol), never replaced. Dovecot's `allow_real_nets` is checked
    /// against it.
    pub peer_ip: Option<IpAddr>,
    /// `Auth-Salt` (APOP/CRAM-MD5 challenge), without its line end.
    pub salt: Option<Vec<u8>>,
    /// `Auth-SMTP-From` / `Auth-SMTP-To` (SMTP without AUTH).
    pub smtp_from: Option<String>,
    pub smtp_to: Option<String>,
    pub ssl: Option<SslInfo>,
    /// [`LISTENER_HEADER`]: the name a mail `server {}` block gives itself with
    /// `auth_http_header` (static text of the configuration, never the client's).
    pub listener: Option<String>,
}

impl AuthRequest {
    /// The client's connection is TLS (`Auth-SSL: on`).
    pub fn tls(&self) -> bool {
        self.ssl.as_ref().is_some_and(|s| s.on)
    }
}

/// The header a mail `server {}` block sends with `auth_http_header` to name its listener
/// (`mail_auth_listener`).
pub const LISTENER_HEADER: &str = "X-Mail-Auth-Listener";

pub const MAX_USER_LEN: usize = 4096;
pub const MAX_PASS_LEN: usize = 8192;
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
    /// A header that says what nginx knows of the connection (TLS, the client certificate, the
    /// listener, a balancer's client), spelled otherwise than nginx spells it: nginx copies a
    /// client's reverse-DNS name into `Client-Host` unchecked, lower-cased, so a name with line
    /// ends in it adds headers of the client's choosing, all in lower case.
    MisspelledHeader(&'static str),
    /// `Auth-Method` names no method nginx knows (printable excerpt).
    UnknownMethod(String),
    /// `Auth-Protocol` is not imap/pop3/smtp (printable excerpt).
    UnknownProtocol(String),
    /// `%` not followed by two hex digits; `offset` is the position of the `%`.
    BadEscape { header: &'static str, offset: usize },
    /// A NUL byte after unescaping.
    NulByte(&'static str),
    /// The (unescaped) value is longer than allowed.
    TooLong { header: &'static str, len: usize, max: usize },
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
            ProtocolError::MisspelledHeader(h) => write!(
                f,
                "header \"{h}\" spelled otherwise than nginx spells it (injected through a reverse-DNS name in Client-Host? an auth_http_header must spell it so)"
            ),
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

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

// Header indexes into the view's table.
const H_METHOD: usize = 0;
const H_USER: usize = 1;
const H_PASS: usize = 2;
const H_PROTOCOL: usize = 3;
const H_ATTEMPT: usize = 4;
const H_CLIENT_IP: usize = 5;
const H_SALT: usize = 6;
const H_FROM: usize = 7;
const H_TO: usize = 8;
const H_SSL: usize = 9;
const H_SSL_VERIFY: usize = 10;
const H_SSL_SUBJECT: usize = 11;
const H_SSL_FINGERPRINT: usize = 12;
const H_PP_ADDR: usize = 13;
const H_LISTENER: usize = 14;

/// The headers this module reads (others, e.g. `Auth-SSL-Cert`, `Client-Host`, are ignored).
/// `Proxy-Protocol-Addr` is read only for `mail_auth_real_ip_from` ([`HeaderView::real_client`]):
/// it is not checked with the others (a repeated or oversized one matters only there).
const HEADERS: [&str; 15] = [
    "Auth-Method",
    "Auth-User",
    "Auth-Pass",
    "Auth-Protocol",
    "Auth-Login-Attempt",
    "Client-IP",
    "Auth-Salt",
    "Auth-SMTP-From",
    "Auth-SMTP-To",
    "Auth-SSL",
    "Auth-SSL-Verify",
    "Auth-SSL-Subject",
    "Auth-SSL-Fingerprint",
    "Proxy-Protocol-Addr",
    LISTENER_HEADER,
];

/// The index in [`HEADERS`] of a header name (ASCII case-insensitive): the one candidate its
/// length and one distinguishing byte leave (most request headers, e.g. `Host`, have none),
/// then one comparison.
fn header_index(name: &[u8]) -> Option<usize> {
    // as nginx mail spells them: whole comparisons of known length, no lower-casing
    match name {
        b"Auth-Method" => return Some(H_METHOD),
        b"Auth-User" => return Some(H_USER),
        b"Auth-Pass" => return Some(H_PASS),
        b"Auth-Protocol" => return Some(H_PROTOCOL),
        b"Auth-Login-Attempt" => return Some(H_ATTEMPT),
        b"Client-IP" => return Some(H_CLIENT_IP),
        b"Host" | b"Client-Host" => return None,
        _ => {}
    }
    let idx = match (name.len(), name.get(5).map(u8::to_ascii_lowercase)) {
        (8, _) => H_SSL,
        // Auth-User, Auth-Pass, Client-IP, Auth-Salt
        (9, Some(b'u')) => H_USER,
        (9, Some(b'p')) => H_PASS,
        (9, Some(b't')) => H_CLIENT_IP,
        (9, Some(b's')) => H_SALT,
        (11, _) => H_METHOD,
        (12, _) => H_TO,
        (13, _) => H_PROTOCOL,
        (14, _) => H_FROM,
        (15, _) => H_SSL_VERIFY,
        (16, _) => H_SSL_SUBJECT,
        (18, _) => H_ATTEMPT,
        (19, _) => H_PP_ADDR,
        // X-Mail-Auth-Listener, Auth-SSL-Fingerprint
        (20, _) if name[0].eq_ignore_ascii_case(&b'x') => H_LISTENER,
        (20, _) => H_SSL_FINGERPRINT,
        _ => return None,
    };
    // nginx mail spells them exactly so: a plain comparison first, then the case-insensitive one
    let want = HEADERS[idx].as_bytes();
    (name == want || name.eq_ignore_ascii_case(want)).then_some(idx)
}

fn max_len(idx: usize) -> usize {
    match idx {
        H_USER => MAX_USER_LEN,
        H_PASS => MAX_PASS_LEN,
        H_SALT => MAX_SALT_LEN,
        _ => MAX_OTHER_LEN,
    }
}

/// The request's headers as this module reads them, found in one pass: each known header's
/// first value (trimmed), and the first problem met on the way (a repeated header, an absurd
/// size). Everything else is derived from it: the validated [`AuthRequest`]
/// ([`HeaderView::request`]), the lenient fields of the log line ([`HeaderView::log_fields`]),
/// the Basic bridge's credentials.
#[derive(Debug, Clone, Default)]
pub struct HeaderView<'a> {
    vals: [Option<&'a [u8]>; HEADERS.len()],
    /// The first duplicate or oversize header, in request order.
    problem: Option<ProtocolError>,
    /// How many `Proxy-Protocol-Addr` headers came.
    pp_count: usize,
}

impl<'a> HeaderView<'a> {
    /// One pass over the headers (names ASCII case-insensitive and taken as they come, but
    /// those that say what nginx knows of the connection exactly as nginx spells them; values
    /// with surrounding spaces/tabs ignored, unknown headers ignored).
    pub fn new(headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> HeaderView<'a> {
        let mut v = HeaderView::default();
        for (name, value) in headers {
            // (a name is taken as it comes: nginx since 1.21.1 refuses a request with a space in a
            // header name, and nginx mail never sends one)
            let Some(idx) = header_index(name) else {
                continue;
            };
            if matches!(
                idx,
                H_SSL | H_SSL_VERIFY | H_SSL_SUBJECT | H_SSL_FINGERPRINT | H_PP_ADDR | H_LISTENER | H_FROM | H_TO
            ) && name != HEADERS[idx].as_bytes()
            {
                v.problem.get_or_insert(ProtocolError::MisspelledHeader(HEADERS[idx]));
                continue;
            }
            if idx == H_PP_ADDR {
                v.pp_count += 1;
                v.vals[idx].get_or_insert(trim_ows(value));
                continue;
            }
            let header = HEADERS[idx];
            if v.vals[idx].is_some() {
                v.problem.get_or_insert(ProtocolError::DuplicateHeader(header));
                continue;
            }
            let value = trim_ows(value);
            // Escaped values take at most 3 bytes per byte; refuse absurd sizes before decoding.
            let limit = max_len(idx);
            let raw_limit = if matches!(idx, H_USER | H_PASS) { limit.saturating_mul(3) } else { limit };
            if value.len() > raw_limit {
                v.problem.get_or_insert(ProtocolError::TooLong { header, len: value.len(), max: limit });
            }
            v.vals[idx] = Some(value);
        }
        v
    }

    /// Who the client is: `Client-IP`, or the `Proxy-Protocol-Addr` of a balancer `trusted`
    /// lists (see [`crate::realip`]).
    pub fn real_client(&self, trusted: &TrustedProxies) -> RealClient {
        realip::resolve(trusted, self.vals[H_CLIENT_IP], self.vals[H_PP_ADDR], self.pp_count)
    }

    /// `Auth-Method`, if it names one.
    pub fn method(&self) -> Option<Method> {
        self.vals[H_METHOD].and_then(Method::parse)
    }

    /// The request carries `Auth-Salt` (see [`crate::config`]'s `nginx_auth_wait_fixed`).
    pub fn salted(&self) -> bool {
        self.vals[H_SALT].is_some()
    }

    /// `Auth-Protocol`, if it names one.
    pub fn protocol(&self) -> Option<Protocol> {
        self.vals[H_PROTOCOL].and_then(Protocol::parse)
    }

    /// Names a method and a protocol nginx knows: an auth_http request (valid or not), as
    /// opposed to a browser, a health check, a misrouted request.
    pub fn is_auth_http(&self) -> bool {
        self.method().is_some() && self.protocol().is_some()
    }

    /// The escaped `Auth-User` and `Auth-Pass` values as nginx sent them.
    pub fn credentials(&self) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
        (self.vals[H_USER], self.vals[H_PASS])
    }

    /// What the log line says of this request, as far as the headers say it: the user as the
    /// bytes it unescapes to (raw when it does not), the other values only when valid.
    pub fn log_fields(&self) -> LogFields<'static> {
        let user = self.vals[H_USER].map(|raw| unescape_raw(raw).unwrap_or_else(|_| raw.to_vec()));
        LogFields {
            user: std::borrow::Cow::Owned(user.unwrap_or_default()),
            client: self.vals[H_CLIENT_IP].and_then(parse_ip).map(crate::cidr::canonical_ip),
            protocol: self.protocol(),
            method: self.method(),
            attempt: self.vals[H_ATTEMPT].and_then(parse_u32).unwrap_or(0),
        }
    }

    /// The validated request (see the rules at the top of `protocol`).
    pub fn request(&self) -> Result<AuthRequest, ProtocolError> {
        if let Some(p) = &self.problem {
            return Err(p.clone());
        }
        let vals = &self.vals;
        let method_raw = vals[H_METHOD].ok_or(ProtocolError::MissingHeader(HEADERS[H_METHOD]))?;
        let method =
            Method::parse(method_raw).ok_or_else(|| ProtocolError::UnknownMethod(printable(method_raw, 64)))?;

        let protocol_raw = vals[H_PROTOCOL].ok_or(ProtocolError::MissingHeader(HEADERS[H_PROTOCOL]))?;
        let protocol =
            Protocol::parse(protocol_raw).ok_or_else(|| ProtocolError::UnknownProtocol(printable(protocol_raw, 64)))?;

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
                let p = Password::new(unescaped(H_PASS, v)?);
                if p.contains(&0) {
                    return Err(ProtocolError::NulByte(HEADERS[H_PASS]));
                }
                p
            }
            None => Password::default(),
        };

        let login_attempt = match vals[H_ATTEMPT] {
            Some(v) => parse_u32(v).ok_or_else(|| bad_value(H_ATTEMPT, v))?,
            None => 1,
        };

        let client_ip = match vals[H_CLIENT_IP] {
            Some(v) if v.starts_with(b"unix:") => None,
            // an IPv4 client of a dual-stack listener (`listen [::]:143 ipv6only=off`) arrives
            // as ::ffff:a.b.c.d: one spelling for the log and the stores' `:client_ip`, as for a
            // client named by a trusted balancer (the rules and the limiter compare either)
            Some(v) => Some(crate::cidr::canonical_ip(parse_ip(v).ok_or_else(|| bad_value(H_CLIENT_IP, v))?)),
            None => None,
        };

        let ssl_on = vals[H_SSL].is_some_and(|v| v.eq_ignore_ascii_case(b"on"));
        let any_ssl = (H_SSL_VERIFY..=H_SSL_FINGERPRINT).any(|i| vals[i].is_some());
        let ssl = (ssl_on || any_ssl).then(|| SslInfo {
            on: ssl_on,
            verify: text(vals[H_SSL_VERIFY]),
            subject: text(vals[H_SSL_SUBJECT]),
            fingerprint: text(vals[H_SSL_FINGERPRINT]),
        });

        Ok(AuthRequest {
            method,
            user,
            pass,
            protocol,
            login_attempt,
            client_ip,
            peer_ip: client_ip,
            salt: vals[H_SALT].map(<[u8]>::to_vec),
            smtp_from: text(vals[H_FROM]),
            smtp_to: text(vals[H_TO]),
            ssl,
            listener: text(vals[H_LISTENER]),
        })
    }
}

/// Parses the headers of an auth_http request: [`HeaderView::new`] then
/// [`HeaderView::request`].
pub fn parse_request<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<AuthRequest, ProtocolError> {
    HeaderView::new(headers).request()
}

/// Who a decision was about, for its log line (from a valid request, or from whatever the
/// headers of an invalid one say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFields<'a> {
    /// The user as bytes (the certificate's CN for EXTERNAL).
    pub user: std::borrow::Cow<'a, [u8]>,
    pub client: Option<IpAddr>,
    /// `None` when the request did not name a valid one (logged as `-`).
    pub protocol: Option<Protocol>,
    pub method: Option<Method>,
    pub attempt: u32,
}

impl LogFields<'_> {
    pub fn of(req: &AuthRequest) -> LogFields<'_> {
        LogFields {
            user: std::borrow::Cow::Borrowed(req.user.as_bytes()),
            client: req.client_ip,
            protocol: Some(req.protocol),
            method: Some(req.method),
            attempt: req.login_attempt,
        }
    }
}

fn unescaped(idx: usize, v: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let header = HEADERS[idx];
    let out = unescape_raw(v).map_err(|offset| ProtocolError::BadEscape { header, offset })?;
    let max = max_len(idx);
    if out.len() > max {
        return Err(ProtocolError::TooLong { header, len: out.len(), max });
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
    ProtocolError::BadValue { header: HEADERS[idx], value: printable(v, 64) }
}

/// Decimal digits only (no sign, no spaces), at most `u32::MAX`.
fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u32, |n, &b| n.checked_mul(10)?.checked_add(digit(b)?))
}

/// An IPv4 literal in the form std prints (and accepts): four decimal octets of 1-3 digits,
/// none above 255, no leading zero. Anything else is `None` here and left to std's parser,
/// which accepts no other IPv4 form either; this one is a few dozen instructions instead of
/// ~200 (every request parses its Client-IP and the backend it answers with).
fn dotted_quad(v: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut rest = v;
    for (k, o) in octets.iter_mut().enumerate() {
        let end = if k == 3 { rest.len() } else { rest.iter().position(|&b| b == b'.')? };
        *o = octet(&rest[..end])?;
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    Some(std::net::Ipv4Addr::from(octets))
}

/// One decimal octet of a dotted quad: 1-3 digits, no leading zero (but "0" itself), at most
/// 255.
fn octet(p: &[u8]) -> Option<u8> {
    let n = match *p {
        [a] => digit(a)?,
        [a, b] if a != b'0' => digit(a)? * 10 + digit(b)?,
        [a, b, c] if a != b'0' => digit(a)? * 100 + digit(b)? * 10 + digit(c)?,
        _ => return None,
    };
    u8::try_from(n).ok()
}

/// The value of one decimal digit.
fn digit(b: u8) -> Option<u32> {
    let d = b.wrapping_sub(b'0');
    (d <= 9).then_some(u32::from(d))
}

pub fn parse_ip(v: &[u8]) -> Option<IpAddr> {
    if let Some(a) = dotted_quad(v) {
        return Some(IpAddr::V4(a));
    }
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s);
    s.parse().ok()
}

#[cfg(test)]
mod header_index_tests {
    use super::*;

    /// `fixed`, then `n` random strings shorter than `max_len` over `alphabet` (at most 8
    /// letters), from `seed`.
    fn generated(fixed: &[&str], alphabet: &[u8], seed: u64, n: usize, max_len: u64) -> Vec<Vec<u8>> {
        let mut cases: Vec<Vec<u8>> = fixed.iter().map(|s| s.as_bytes().to_vec()).collect();
        for x in crate::testutil::Xorshift(seed).take(n) {
            let len = (x % max_len) as usize;
            let letter = |i: usize| alphabet[((x >> (4 + 3 * i)) % alphabet.len() as u64) as usize];
            cases.push((0..len).map(letter).collect());
        }
        cases
    }

    /// The IPv4 fast path accepts exactly what std accepts, with the same value.
    #[test]
    fn dotted_quad_agrees_with_std() {
        let std_v4 = |s: &[u8]| std::str::from_utf8(s).ok().and_then(|s| s.parse::<std::net::Ipv4Addr>().ok());
        let cases = [
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.+4",
            "1.2.3.4a",
            "1234.1.1.1",
            "127.0.0.1",
            "10.0.0.00",
            "",
            "::1",
            "[127.0.0.1]",
            "1.2.3.999",
            "0.0.0.0.0",
            "1.2.3.-1",
        ];
        // and random strings of up to 15 characters from a small alphabet
        let cases = generated(&cases, b"0125.9", 0x9e37_79b9_7f4a_7c15, 200_000, 16);
        for c in &cases {
            assert_eq!(dotted_quad(c), std_v4(c), "{:?}", String::from_utf8_lossy(c));
            if !c.starts_with(b"[") {
                let ip = parse_ip(c).filter(IpAddr::is_ipv4);
                assert_eq!(ip, std_v4(c).map(IpAddr::V4), "{:?}", String::from_utf8_lossy(c));
            }
        }
    }

    /// The digit loop accepts exactly the plain decimal numbers std accepts as u32.
    #[test]
    fn parse_u32_agrees_with_std() {
        let std_u32 = |s: &[u8]| {
            let plain = !s.is_empty() && s.iter().all(u8::is_ascii_digit);
            plain.then(|| std::str::from_utf8(s).ok()?.parse::<u32>().ok()).flatten()
        };
        let fixed = ["", "0", "1", "007", "4294967295", "4294967296", "99999999999", "+1", "-1", " 1", "1a"];
        for c in &generated(&fixed, b"0194+ /:", 0x2545_f491_4f6c_dd1d, 100_000, 12) {
            assert_eq!(parse_u32(c), std_u32(c), "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn spelled_names_agree_with_the_table() {
        // the whole-name fast path gives what the table says
        for (name, i) in [
            ("Auth-Method", H_METHOD),
            ("Auth-User", H_USER),
            ("Auth-Pass", H_PASS),
            ("Auth-Protocol", H_PROTOCOL),
            ("Auth-Login-Attempt", H_ATTEMPT),
            ("Client-IP", H_CLIENT_IP),
        ] {
            assert_eq!(HEADERS[i], name);
            assert_eq!(header_index(name.as_bytes()), Some(i), "{name}");
        }
    }

    #[test]
    fn every_header_by_its_length() {
        for (i, h) in HEADERS.iter().enumerate() {
            assert_eq!(header_index(h.as_bytes()), Some(i), "{h}");
            assert_eq!(header_index(h.to_ascii_lowercase().as_bytes()), Some(i), "{h}");
            assert_eq!(header_index(h.to_ascii_uppercase().as_bytes()), Some(i), "{h}");
            let mut other = h.as_bytes().to_vec();
            other[0] = b'Q';
            assert_eq!(header_index(&other), None, "{h}");
        }
        for n in ["Host", "Client-Host", "Auth-SSL-Cert", "Auth-SMTP-Helo", "", "Auth-Users"] {
            assert_eq!(header_index(n.as_bytes()), None, "{n}");
        }
    }
}
