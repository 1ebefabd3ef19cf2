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
//!   error message shown to the client: IMAP `<tag> NO <text>`, POP3 `-ERR <text>`, SMTP
//!   `<Auth-Error-Code> <text>` (default code `535 5.7.0`); see [`failure_text`]. Without
//!   `Auth-Wait` (or with `0`) nginx closes the session after the message; with `N > 0` it
//!   waits N seconds and lets the client try again. `Auth-Server` must be an IP literal (`ngx_parse_addr`), `Auth-Port` an
//!   integer 1..65535, `Auth-Wait` an integer number of seconds (`ngx_atoi`).
//!
//! Decisions:
//! * User names must be valid UTF-8 without control characters (C0, DEL, C1) after unescaping.
//! * Passwords may hold any byte except NUL (no mail protocol can carry a NUL inside a password
//!   and C-string based hash implementations would silently truncate at it).
//! * Size caps after unescaping: user 4096 bytes, password 8192, `Auth-Salt` 1024, other
//!   headers this module reads 8192 (`Auth-SSL-Cert` is not read).
//! * Every header this module interprets may appear once; a repeated one is an error.
//! * The headers are looked at once per request ([`HeaderView`]); the decision, the log line,
//!   the bad-request path and the Basic bridge all read that view.
//! * Unescaping is strict: `%` must be followed by two hex digits.

#![forbid(unsafe_code)]

use std::fmt;

mod escape;
pub mod json;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use escape::{escape, mail_auth_escapes, printable, unescape};
pub use request::{
    parse_ip, parse_request, AuthRequest, HeaderView, LogFields, Password, ProtocolError, SslInfo, LISTENER_HEADER,
    MAX_OTHER_LEN, MAX_PASS_LEN, MAX_SALT_LEN, MAX_USER_LEN,
};
pub(crate) use response::decimal;
pub use response::{bad_server, parse_server, AuthResponse, ResponseError, ServerAddr, MAX_MESSAGE_LEN};

/// The failed-login text without a response code (SMTP, where nginx puts `Auth-Error-Code`
/// before it, and the JSON API).
pub const MSG_INVALID: &str = "Invalid login or password";
/// The temporary-failure text without a response code.
pub const MSG_TEMP: &str = "Temporary server problem, try again later";
/// IMAP, wrong credentials (RFC 5530).
pub const MSG_INVALID_IMAP: &str = "[AUTHENTICATIONFAILED] Invalid login or password";
/// IMAP, the right credentials of an account that may not log in (disabled, or not for
/// IMAP): the user should ask the administrator, not type the password again (RFC 5530).
pub const MSG_DENIED_IMAP: &str = "[CONTACTADMIN] Login not permitted for this account, contact your administrator";
/// IMAP, temporary failure (RFC 5530): the client should retry, not ask for a new password.
pub const MSG_TEMP_IMAP: &str = "[UNAVAILABLE] Temporary server problem, try again later";
/// POP3, wrong credentials or an account policy (RFC 3206 `AUTH`).
pub const MSG_INVALID_POP3: &str = "[AUTH] Invalid login or password";
/// POP3, temporary failure (RFC 3206 `SYS/TEMP`).
pub const MSG_TEMP_POP3: &str = "[SYS/TEMP] Temporary server problem, try again later";
/// `Auth-Status` text for a refused relay recipient.
pub const MSG_RELAY: &str = "Relay access denied";
/// `Auth-Status` text of a cleartext login refused for want of TLS (`mail_auth_require_tls`):
/// RFC 4954's text, after IMAP's `[PRIVACYREQUIRED]` (RFC 5530) / POP3's `[AUTH]` (RFC 3206)
/// response code; SMTP gets `538 5.7.11` in `Auth-Error-Code`.
pub const MSG_TLS_REQUIRED: &str = "Encryption required for requested authentication mechanism";
/// `Auth-Status` text of a login on a listener that takes none (`mail_auth_listener NAME
/// auth=off`); SMTP gets `503 5.5.1` in `Auth-Error-Code`.
pub const MSG_NO_AUTH: &str = "Authentication not enabled on this port";

/// What kind of refusal an `Auth-Status` text says (see [`failure_text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Wrong credentials (or anything a guesser must not tell from them).
    Invalid,
    /// The right credentials of an account that may not log in here (disabled, protocol not
    /// allowed). Only ever chosen after the credentials were verified.
    Denied,
    /// Server trouble: store, backend, overload. The client should retry later.
    Temporary,
}

/// The `Auth-Status` text of a refusal, with the protocol's standard response code: nginx
/// writes it after `<tag> NO ` (IMAP) or `-ERR ` (POP3), so the code comes first, as RFC 5530
/// and RFC 3206 want it. SMTP (and an unknown protocol) gets the plain text: its codes are
/// `Auth-Error-Code`'s. POP3 has no code for [`Failure::Denied`]: RFC 3206 files account
/// policy under `AUTH`, the answer of a wrong password.
pub fn failure_text(kind: Failure, protocol: Option<Protocol>) -> &'static str {
    match (protocol, kind) {
        (Some(Protocol::Imap), Failure::Invalid) => MSG_INVALID_IMAP,
        (Some(Protocol::Imap), Failure::Denied) => MSG_DENIED_IMAP,
        (Some(Protocol::Imap), Failure::Temporary) => MSG_TEMP_IMAP,
        (Some(Protocol::Pop3), Failure::Invalid | Failure::Denied) => MSG_INVALID_POP3,
        (Some(Protocol::Pop3), Failure::Temporary) => MSG_TEMP_POP3,
        (_, Failure::Invalid | Failure::Denied) => MSG_INVALID,
        (_, Failure::Temporary) => MSG_TEMP,
    }
}

/// `Auth-Protocol`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Imap,
    Pop3,
    Smtp,
}

impl Protocol {
    /// Every protocol (in this order: the limiter's counter tags depend on it).
    pub const ALL: [Protocol; 3] = [Protocol::Imap, Protocol::Pop3, Protocol::Smtp];

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
    /// SASL XOAUTH2 (freenginx 1.27.1+): `Auth-User` the `user=`, `Auth-Pass` the bearer token.
    Xoauth2,
    /// SASL OAUTHBEARER (RFC 7628, freenginx 1.27.1+): `Auth-User` the gs2 `a=`, `Auth-Pass` the token.
    Oauthbearer,
    None,
}

impl Method {
    /// The name on the wire (`plain`, `login`, `apop`, `cram-md5`, `external`, `xoauth2`,
    /// `oauthbearer`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Plain => "plain",
            Method::Login => "login",
            Method::Apop => "apop",
            Method::CramMd5 => "cram-md5",
            Method::External => "external",
            Method::Xoauth2 => "xoauth2",
            Method::Oauthbearer => "oauthbearer",
            Method::None => "none",
        }
    }

    /// Every method.
    pub const ALL: [Method; 8] = [
        Method::Plain,
        Method::Login,
        Method::Apop,
        Method::CramMd5,
        Method::External,
        Method::Xoauth2,
        Method::Oauthbearer,
        Method::None,
    ];

    /// Parses a method name, ASCII case-insensitively.
    pub fn parse(v: &[u8]) -> Option<Method> {
        Method::ALL.iter().copied().find(|m| v.eq_ignore_ascii_case(m.as_str().as_bytes()))
    }

    /// Whether nginx sends a user name and a password (or digest) for this method.
    pub fn has_credentials(self) -> bool {
        !matches!(self, Method::External | Method::None)
    }

    /// An OAuth 2.0 bearer token method (the password is the token).
    pub fn is_oauth(self) -> bool {
        matches!(self, Method::Xoauth2 | Method::Oauthbearer)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
