//! RFC 7662 token introspection for opaque bearer tokens.
//!
//! * The call: `POST` to the configured endpoint, `application/x-www-form-urlencoded`
//!   `token=…&token_type_hint=access_token`, the client credentials as HTTP Basic (RFC 6749
//!   §2.3.1: id and secret form-urlencoded, then base64). No proxy from the environment, no
//!   redirects, one 3 s budget for connect + send + answer, an answer of at most 64 KiB.
//!   Plain `http://` only (no TLS in this build): point it at a loopback or internal endpoint.
//! * It is made by [`super::Verifier::introspect`], which the engine calls only on a
//!   thread-pool thread, never on nginx's event loop.
//! * An unreachable endpoint, a timeout, an answer other than 200, or a body that is not a
//!   JSON object is [`TokenError::Introspection`]: a temporary failure, never OK nor a refusal.
//! * The answer: `active` must be `true` (else [`TokenError::Inactive`]); then the claim rules
//!   of the JWT path (`exp` required, `nbf`, `iss`/`aud` when configured, the scope), and the
//!   mailbox claim (`username`, or the directive's `user_claim`) equal to `Auth-User`.

#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use super::TokenError;

/// The whole budget of one introspection call (connect, send, answer).
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Longest introspection answer read.
pub const MAX_ANSWER: u64 = 64 * 1024;
/// Default mailbox claim of an introspection answer (RFC 7662 §2.2).
pub const DEFAULT_USER_CLAIM: &str = "username";

/// `introspect=URL client_id=ID client_secret_file=PATH` of `mail_auth_oauth2`.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectConfig {
    pub url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    /// The mailbox claim in the answer.
    pub user_claim: String,
}

impl fmt::Debug for IntrospectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field("user_claim", &self.user_claim)
            .finish()
    }
}

/// Checks the endpoint URL at configuration time.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or(
        "\"introspect\" must be an http:// URL (this build has no TLS client: use a loopback or internal endpoint)",
    )?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("\"introspect\" URL has no host".into());
    }
    Ok(())
}

/// The client of one endpoint, with the secret read at configuration time.
pub struct Client {
    url: String,
    authorization: String,
    agent: ureq::Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("url", &self.url).finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` of one value (RFC 6749 appendix B).
pub fn form_encode(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len() + 8);
    for &b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            s.push(char::from(b));
        } else if b == b' ' {
            s.push('+');
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The `Authorization` header value for the client credentials (RFC 6749 §2.3.1).
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form_encode(client_id.as_bytes()), form_encode(secret.as_bytes()));
    format!("Basic {}", STANDARD.encode(pair))
}

impl Client {
    /// Reads the client secret file (first line, trimmed): `Err` is a configuration error.
    pub fn new(c: &IntrospectConfig) -> Result<Client, String> {
        check_url(&c.url)?;
        let text = std::fs::read_to_string(&c.client_secret_file)
            .map_err(|e| format!("client_secret_file \"{}\": {e}", c.client_secret_file.display()))?;
        let secret = text.lines().next().unwrap_or("").trim();
        if secret.is_empty() {
            return Err(format!("client_secret_file \"{}\" is empty", c.client_secret_file.display()));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .build()
            .into();
        Ok(Client { url: c.url.clone(), authorization: basic_auth(&c.client_id, secret), agent })
    }

    /// The introspection answer for `token` (blocking: call it on a pool thread).
    pub fn call(&self, token: &[u8]) -> Result<Value, TokenError> {
        let temp = |what: String| TokenError::Introspection(format!("{}: {what}", self.url));
        let started = std::time::Instant::now();
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let mut resp = self
            .agent
            .post(&self.url)
            .header("Authorization", &self.authorization)
            .header("Accept", "application/json")
            .content_type("application/x-www-form-urlencoded")
            .send(body.as_str())
            .map_err(|e| temp(e.to_string()))?;
        if resp.status() != 200 {
            return Err(temp(format!("answered HTTP {}", resp.status().as_u16())));
        }
        // ureq's global timeout did not always stop a body that trickles in (a byte every
        // 200 ms was read for minutes): the deadline is checked here between reads as well
        let deadline = started + TIMEOUT;
        let mut text = Vec::new();
        let mut reader = resp.body_mut().as_reader().take(MAX_ANSWER + 1);
        let mut buf = [0u8; 4096];
        loop {
            let n = reader.read(&mut buf).map_err(|e| temp(format!("reading the answer: {e}")))?;
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if std::time::Instant::now() > deadline {
                return Err(temp(format!("answer not complete within {} s", TIMEOUT.as_secs())));
            }
        }
        if text.len() as u64 > MAX_ANSWER {
            return Err(temp("answer longer than 64 KiB".into()));
        }
        parse_answer(&text).map_err(temp)
    }
}

/// The answer's body: a JSON object.
pub fn parse_answer(body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("answer is not a JSON object".into()),
        Err(e) => Err(format!("answer is not JSON: {e}")),
    }
}
