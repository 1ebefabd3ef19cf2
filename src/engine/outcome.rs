//! What a decision ends in: a typed result (its name is the log's `result=` and the metrics'
//! `result` label), the answer for nginx, and the reason for the log.

#![forbid(unsafe_code)]

use std::fmt;

use crate::config::AuthConfig;
use crate::protocol::{failure_text, AuthRequest, AuthResponse, Failure, Protocol, MSG_RELAY};

/// SMTP `Auth-Error-Code` of a failed login (nginx sends "<code> <message>").
pub const SMTP_INVALID_CODE: &str = "535 5.7.8";
/// SMTP `Auth-Error-Code` of a temporary failure.
pub const SMTP_TEMP_CODE: &str = "451 4.3.0";
/// SMTP `Auth-Error-Code` of a refused relay recipient.
pub const SMTP_RELAY_CODE: &str = "550 5.7.1";
/// SMTP `Auth-Error-Code` of a cleartext login without TLS (RFC 4954 section 6).
pub const SMTP_TLS_REQUIRED_CODE: &str = "538 5.7.11";
/// SMTP `Auth-Error-Code` of AUTH on a listener that takes none (`mail_auth_listener NAME
/// auth=off`; Postfix answers AUTH there with the same code).
pub const SMTP_NO_AUTH_CODE: &str = "503 5.5.1";

macro_rules! results {
    ($($variant:ident = $name:literal),+ $(,)?) => {
        /// How a request ended.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuthResult {
            $($variant),+
        }

        impl AuthResult {
            /// Every result, in the metrics' output order.
            pub const ALL: &'static [AuthResult] = &[$(AuthResult::$variant),+];

            /// The name in the log line and the metrics label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuthResult::$variant => $name),+
                }
            }
        }
    };
}

results! {
    Ok = "ok",
    Invalid = "invalid",
    UnknownUser = "unknown-user",
    Disabled = "disabled",
    ProtocolDenied = "protocol-denied",
    NetworkDenied = "network-denied",
    MethodDenied = "method-denied",
    CertDenied = "cert-denied",
    TlsRequired = "tls-required",
    ListenerDenied = "listener-denied",
    InvalidToken = "invalid-token",
    RelayDenied = "relay-denied",
    RateLimited = "rate-limited",
    StoreError = "store-error",
    BackendError = "backend-error",
    BadRequest = "bad-request",
    ProxyError = "proxy-error",
    SchemeError = "scheme-error",
    Overloaded = "overloaded",
    InternalError = "internal-error",
    ListenerUnknown = "listener-unknown",
}

impl AuthResult {
    /// Position in [`AuthResult::ALL`] (the metrics table's index).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A problem of the store, the configuration, a trusted balancer or the module: always
    /// logged at `error`, whatever `mail_auth_log_level` says.
    pub fn is_operator_problem(self) -> bool {
        matches!(
            self,
            AuthResult::StoreError
                | AuthResult::BackendError
                | AuthResult::ProxyError
                | AuthResult::InternalError
                | AuthResult::ListenerUnknown
        )
    }
}

impl PartialEq<&str> for AuthResult {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision, with what the log needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub response: AuthResponse,
    pub result: AuthResult,
    /// Precise reason for the log (never sent to the client); plain text, escaped when logged.
    /// With `backend_reason`, what follows the backend part (see [`Outcome::full_reason`]).
    pub reason: String,
    /// The reason starts with the OK answer's backend ("backend ADDR:PORT as \"USER\""), made
    /// only when read: most decision lines are never written. (One reason can thus be held two
    /// ways: compare [`Outcome::full_reason`], not the fields.)
    pub backend_reason: bool,
    /// The login name the decision was about when it is not the request's `Auth-User` (the
    /// certificate's CN for EXTERNAL, the user of a request that could not be parsed); `None`:
    /// the request's (not copied: the decision line is most often not written).
    pub user: Option<String>,
}

impl Outcome {
    /// The whole reason, as the decision line shows it.
    pub fn full_reason(&self) -> std::borrow::Cow<'_, str> {
        match (&self.response, self.backend_reason) {
            (AuthResponse::Ok { server, port, user, .. }, true) => {
                let mut r = backend_reason(server.as_str(), *port, user.as_deref());
                r.push_str(&self.reason);
                std::borrow::Cow::Owned(r)
            }
            _ => std::borrow::Cow::Borrowed(&self.reason),
        }
    }
}

/// "backend ADDR:PORT" (`[ADDR]` for IPv6) and ` as "USER"` when the backend login differs:
/// put together by hand, in one allocation.
fn backend_reason(server: &str, port: u16, user: Option<&str>) -> String {
    let v6 = server.contains(':');
    let mut r = String::with_capacity(48 + server.len() + user.map_or(0, |u| u.len() + 6));
    r.push_str("backend ");
    if v6 {
        r.push('[');
    }
    r.push_str(server);
    if v6 {
        r.push(']');
    }
    r.push(':');
    r.extend(crate::protocol::decimal(u32::from(port), &mut [0; 10]).iter().map(|&d| char::from(d)));
    if let Some(u) = user {
        r.push_str(" as \"");
        r.push_str(u);
        r.push('"');
    }
    r
}

fn error_code(protocol: Option<Protocol>, code: &str) -> Option<String> {
    (protocol == Some(Protocol::Smtp)).then(|| code.to_string())
}

/// What the client is told about a refusal with this result. `Denied` only for a disabled
/// account, which the engine says only after the password was verified as right (a wrong
/// password on a disabled account is `invalid`): a guesser never sees it. A protocol the
/// account (or the credential) may not use is not told apart from a wrong password: the right
/// password refused on one protocol (or the main password of an `app_only` account) would
/// otherwise be confirmed to a guesser, who would use it on another.
fn failure_kind(result: AuthResult) -> Failure {
    match result {
        AuthResult::Disabled => Failure::Denied,
        _ => Failure::Invalid,
    }
}

/// The `Auth-Wait` of a right credential refused by the account's rules: the account's own
/// `wait` only where the answer tells that the password was right anyway (IMAP's
/// `[CONTACTADMIN]` for a disabled account); anywhere else the location's, as a wrong password
/// gets: a delay of its own would confirm the guess to a client refused by a network, protocol,
/// certificate or `app_only` rule, who would then try it where it is accepted.
pub fn policy_wait(req: &AuthRequest, own: Option<u32>, result: AuthResult) -> Option<u32> {
    own.filter(|_| result == AuthResult::Disabled && req.protocol == Protocol::Imap)
}

/// A failed login: "Invalid login or password" (IMAP `[AUTHENTICATIONFAILED]`, POP3 `[AUTH]`;
/// IMAP `[CONTACTADMIN]` for a disabled account after the right password), `wait`
/// (default `fail_wait`).
pub fn fail(cfg: &AuthConfig, req: &AuthRequest, wait: Option<u32>, result: AuthResult, reason: String) -> Outcome {
    Outcome {
        response: AuthResponse::Fail {
            message: failure_text(failure_kind(result), Some(req.protocol)).to_string(),
            wait: Some(wait.unwrap_or(cfg.fail_wait)),
            error_code: error_code(Some(req.protocol), SMTP_INVALID_CODE),
            error_sasl: None,
        },
        result,
        reason,
        backend_reason: false,
        user: None,
    }
}

/// A refusal with its own text (`message`, after `NO`/`-ERR`; SMTP: `smtp_code` first) and
/// the configured `fail_wait`.
pub fn refuse(
    cfg: &AuthConfig,
    req: &AuthRequest,
    result: AuthResult,
    message: String,
    smtp_code: &str,
    reason: String,
) -> Outcome {
    Outcome {
        response: AuthResponse::Fail {
            message,
            wait: Some(cfg.fail_wait),
            error_code: error_code(Some(req.protocol), smtp_code),
            error_sasl: None,
        },
        result,
        reason,
        backend_reason: false,
        user: None,
    }
}

/// A temporary failure ("try again later"; IMAP `[UNAVAILABLE]`, POP3 `[SYS/TEMP]`, SMTP
/// `451 4.3.0`): never OK, never "wrong password".
pub fn temp_fail(cfg: &AuthConfig, req: &AuthRequest, result: AuthResult, reason: String) -> Outcome {
    temp_fail_as(cfg, Some(req.protocol), None, result, reason)
}

pub fn temp_fail_for(
    cfg: &AuthConfig,
    protocol: Option<Protocol>,
    user: &str,
    result: AuthResult,
    reason: String,
) -> Outcome {
    temp_fail_as(cfg, protocol, Some(user.to_string()), result, reason)
}

fn temp_fail_as(
    cfg: &AuthConfig,
    protocol: Option<Protocol>,
    user: Option<String>,
    result: AuthResult,
    reason: String,
) -> Outcome {
    Outcome {
        response: AuthResponse::TempFail {
            message: failure_text(Failure::Temporary, protocol).to_string(),
            wait: Some(cfg.fail_wait),
            error_code: error_code(protocol, SMTP_TEMP_CODE),
        },
        result,
        reason,
        backend_reason: false,
        user,
    }
}

/// A failed login for a request that could not be parsed (`protocol` when the headers named a
/// valid one, for the SMTP error code).
pub fn failed_unparsed(
    cfg: &AuthConfig,
    protocol: Option<Protocol>,
    user: &str,
    result: AuthResult,
    reason: String,
) -> Outcome {
    Outcome {
        response: AuthResponse::Fail {
            message: failure_text(Failure::Invalid, protocol).to_string(),
            wait: Some(cfg.fail_wait),
            error_code: error_code(protocol, SMTP_INVALID_CODE),
            error_sasl: None,
        },
        result,
        reason,
        backend_reason: false,
        user: Some(user.to_string()),
    }
}

/// A refused relay recipient (SMTP without AUTH).
pub fn relay_denied(cfg: &AuthConfig, reason: String) -> Outcome {
    Outcome {
        response: AuthResponse::Fail {
            message: MSG_RELAY.to_string(),
            wait: Some(cfg.fail_wait),
            error_code: Some(SMTP_RELAY_CODE.to_string()),
            error_sasl: None,
        },
        result: AuthResult::RelayDenied,
        reason,
        backend_reason: false,
        user: Some(String::new()),
    }
}

#[cfg(test)]
mod reason_tests {
    use super::backend_reason;

    #[test]
    fn backend_reason_is_what_format_made() {
        for (server, port, user) in [
            ("127.0.0.1", 1143, None),
            ("::1", 10110, None),
            ("127.0.0.2", 1, Some("routed@backend")),
            ("2001:db8::1", 65535, Some("a\"b")),
            ("10.0.0.1", 0, Some("")),
        ] {
            let mut want = if server.contains(':') {
                format!("backend [{server}]:{port}")
            } else {
                format!("backend {server}:{port}")
            };
            if let Some(u) = user {
                want.push_str(&format!(" as \"{u}\""));
            }
            assert_eq!(backend_reason(server, port, user), want);
        }
    }
}
