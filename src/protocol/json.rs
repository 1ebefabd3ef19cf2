//! The Nauthilus-compatible JSON API (`mail_auth_json`) that Dovecot's Lua passdb/userdb/iterate
//! call: the request body, the mode in the query string, and the answers.
//!
//! Request: `POST` with a JSON object of strings: `username`, `password`, `client_ip`,
//! `client_port`, `client_id`, `local_ip`, `local_port`, `service`, `method`, optional `ssl`,
//! `ssl_protocol`, `ssl_client_verify`. `?mode=no-auth`: a userdb lookup (no password);
//! `?mode=list-accounts` (`GET`): every account name, as a JSON array.
//!
//! Answers: 200 `Auth-Status: OK`, `Auth-User: <account>` and
//! `{"ok":true,"account_field":"account","backend":...,"attributes":{"name":["value",...]}}`;
//! 403 with `Auth-Status: <message>` (a disabled account: the configured text, default
//! [`MSG_DISABLED`]); 5xx with `Auth-Status` and `{"error":"..."}`; every answer carries
//! `X-Nauthilus-Session`.
//!
//! Plain Rust, no nginx types.

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{AuthRequest, Method, Password, Protocol, SslInfo, MAX_PASS_LEN, MAX_USER_LEN};
use crate::store::Account;

/// Default `Auth-Status` text of a disabled account (what Nauthilus' Lua glue maps to
/// Dovecot's USER_DISABLED).
pub const MSG_DISABLED: &str = "Account not enabled";
/// `Auth-Status` of a user the store does not know (no-auth mode).
pub const MSG_UNKNOWN: &str = "Unknown user";
/// A request body bigger than this is refused (413) before it is read.
pub const MAX_BODY: usize = 16 * 1024;
/// The `backend` field of a success answer.
pub const BACKEND_NAME: &str = "ngx-mail-auth";
/// The `account_field` of a success answer.
pub const ACCOUNT_FIELD: &str = "account";

/// Extra fields that are this module's own policy or secrets, never handed out as attributes.
const NOT_ATTRIBUTES: &[&str] =
    &["nologin", "deny", "allow_nets", "pass", "nopassword", "protocols", "wait", "app_only"];

/// What the query string asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Password (or token) check: Dovecot's passdb.
    Auth,
    /// `mode=no-auth`: the account's data without a password check (userdb lookup).
    NoAuth,
    /// `mode=list-accounts`: every account name (userdb iterate).
    ListAccounts,
}

impl Mode {
    /// The mode from the request's query string (`a=b&mode=no-auth`); an unknown mode is an
    /// error (never a password-less lookup by accident).
    pub fn from_query(args: &[u8]) -> Result<Mode, String> {
        let mut mode = Mode::Auth;
        for pair in args.split(|&b| b == b'&') {
            let Some(v) = pair.strip_prefix(b"mode=") else { continue };
            mode = match v {
                b"no-auth" => Mode::NoAuth,
                b"list-accounts" => Mode::ListAccounts,
                b"" | b"auth" => Mode::Auth,
                other => return Err(format!("unknown mode \"{}\"", super::printable(other, 64))),
            };
        }
        Ok(mode)
    }
}

/// The body's fields (missing ones empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonRequest {
    pub username: String,
    pub password: Password,
    pub client_ip: String,
    pub client_port: String,
    pub client_id: String,
    pub local_ip: String,
    pub local_port: String,
    pub service: String,
    pub method: String,
    pub ssl: String,
    pub ssl_protocol: String,
    pub ssl_client_verify: String,
}

/// Parses a request body: a JSON object whose known fields are strings (unknown fields are
/// ignored). A malformed body is an error: never a login.
pub fn parse_body(body: &[u8]) -> Result<JsonRequest, String> {
    if body.len() > MAX_BODY {
        return Err(format!("body of {} bytes (at most {MAX_BODY})", body.len()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(obj) = v else { return Err("the body is not a JSON object".into()) };
    let field = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("field \"{name}\" is not a string")),
        }
    };
    Ok(JsonRequest {
        username: field("username")?,
        password: Password::new(field("password")?.into_bytes()),
        client_ip: field("client_ip")?,
        client_port: field("client_port")?,
        client_id: field("client_id")?,
        local_ip: field("local_ip")?,
        local_port: field("local_port")?,
        service: field("service")?,
        method: field("method")?,
        ssl: field("ssl")?,
        ssl_protocol: field("ssl_protocol")?,
        ssl_client_verify: field("ssl_client_verify")?,
    })
}

/// Dovecot's service as this module's protocol: `imap`, `pop3`, `smtp`/`submission`. The
/// other services (lmtp, sieve, doveadm ...) have none: `None`.
pub fn protocol_of(service: &str) -> Option<Protocol> {
    match service.to_ascii_lowercase().as_str() {
        "imap" => Some(Protocol::Imap),
        "pop3" => Some(Protocol::Pop3),
        "smtp" | "submission" => Some(Protocol::Smtp),
        _ => None,
    }
}

fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty username".into());
    }
    if user.len() > MAX_USER_LEN {
        return Err(format!("username longer than {MAX_USER_LEN} bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err("control character in username".into());
    }
    Ok(())
}

/// The client's address: empty is unknown, anything else must be an IP address.
fn client_ip(v: &str) -> Result<Option<IpAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    // (one spelling of an IPv4 client, as for auth_http's Client-IP)
    v.parse()
        .map(|ip| Some(crate::cidr::canonical_ip(ip)))
        .map_err(|_| format!("client_ip \"{}\" is not an IP address", super::printable(v.as_bytes(), 64)))
}

/// The password check Dovecot's passdb asks for, as the engine's request. Methods: `plain`,
/// `login` (password), `xoauth2`, `oauthbearer` (token); an empty method is `plain`. The
/// service is imap, pop3 or smtp/submission for the account's protocol rules; any other
/// (sieve, doveadm ...) is checked under imap's.
pub fn auth_request(j: &JsonRequest) -> Result<AuthRequest, String> {
    check_user(&j.username)?;
    let method = match j.method.to_ascii_lowercase().as_str() {
        "" | "plain" => Method::Plain,
        "login" => Method::Login,
        "xoauth2" => Method::Xoauth2,
        "oauthbearer" => Method::Oauthbearer,
        other => return Err(format!("method \"{}\" is not supported", super::printable(other.as_bytes(), 32))),
    };
    // sieve, doveadm, lmtp ... have no protocol of their own here: imap's rules apply
    let protocol = protocol_of(&j.service).unwrap_or(Protocol::Imap);
    if j.password.len() > MAX_PASS_LEN {
        return Err(format!("password longer than {MAX_PASS_LEN} bytes"));
    }
    if j.password.contains(&0) {
        return Err("NUL in password".into());
    }
    let ssl = (!j.ssl.is_empty() && j.ssl != "0").then(|| SslInfo {
        on: true,
        verify: (!j.ssl_client_verify.is_empty()).then(|| j.ssl_client_verify.clone()),
        ..SslInfo::default()
    });
    let client_ip = client_ip(&j.client_ip)?;
    Ok(AuthRequest {
        method,
        user: j.username.clone(),
        pass: j.password.clone(),
        protocol,
        login_attempt: 1,
        client_ip,
        // (Dovecot's own rip: what its allow_real_nets would see is its proxy's)
        peer_ip: client_ip,
        salt: None,
        smtp_from: None,
        smtp_to: None,
        ssl,
        listener: None,
    })
}

/// A userdb lookup (no-auth mode): the user name checked, the client address if any.
pub fn lookup_user(j: &JsonRequest) -> Result<(String, Option<IpAddr>), String> {
    check_user(&j.username)?;
    Ok((j.username.clone(), client_ip(&j.client_ip)?))
}

/// The account's attributes, in the order of the store: Dovecot-style `userdb_NAME=V` extra
/// fields (passwd-file) or columns (SQLite) as `NAME`, the other `key=value` ones as they are,
/// a repeated name collecting its values; this module's own policy fields and secrets
/// (`nologin`, `deny`, `allow_nets`, `pass`, `nopassword`, `protocols`, `wait`, `app_only`) are left out.
pub fn attributes(account: &Account) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in &account.extra {
        if NOT_ATTRIBUTES.contains(&k.as_str()) || k.is_empty() {
            continue;
        }
        let name = k.strip_prefix("userdb_").filter(|n| !n.is_empty()).unwrap_or(k);
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(v.clone()),
            None => out.push((name.to_string(), vec![v.clone()])),
        }
    }
    out
}

/// The canonical name of an account found for `asked`.
pub fn account_name<'a>(account: &'a Account, asked: &'a str) -> &'a str {
    if account.name.is_empty() {
        asked
    } else {
        &account.name
    }
}

/// The body of a success answer. The attribute named by `account_field` ([`ACCOUNT_FIELD`])
/// holds the canonical account name, as Nauthilus' answers do (a store attribute of that name
/// is replaced).
pub fn ok_body(account: &str, attributes: &[(String, Vec<String>)]) -> String {
    let mut attrs = Map::new();
    for (k, vs) in attributes {
        attrs.insert(k.clone(), Value::Array(vs.iter().map(|v| Value::String(v.clone())).collect()));
    }
    attrs.insert(ACCOUNT_FIELD.into(), Value::Array(vec![Value::String(account.into())]));
    let mut o = Map::new();
    o.insert("ok".into(), Value::Bool(true));
    o.insert("account_field".into(), Value::String(ACCOUNT_FIELD.into()));
    o.insert("backend".into(), Value::String(BACKEND_NAME.into()));
    o.insert("account".into(), Value::String(account.into()));
    o.insert("attributes".into(), Value::Object(attrs));
    Value::Object(o).to_string()
}

/// The body of a refusal (403).
pub fn fail_body(message: &str) -> String {
    let mut o = Map::new();
    o.insert("ok".into(), Value::Bool(false));
    o.insert("error".into(), Value::String(message.into()));
    Value::Object(o).to_string()
}

/// The body of a temporary failure or a bad request (`{"error": ...}`).
pub fn error_body(message: &str) -> String {
    let mut o = Map::new();
    o.insert("error".into(), Value::String(message.into()));
    Value::Object(o).to_string()
}

/// Writes the account list as a JSON array of strings, one name at a time (no buffer of the
/// whole list): `begin`, then `name` for each, then `end`.
pub struct ListWriter<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> ListWriter<W> {
    pub fn begin(mut out: W) -> io::Result<ListWriter<W>> {
        out.write_all(b"[")?;
        Ok(ListWriter { out, first: true })
    }

    pub fn name(&mut self, name: &str) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, name).map_err(io::Error::other)
    }

    pub fn end(mut self) -> io::Result<W> {
        self.out.write_all(b"]")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A session id for `X-Nauthilus-Session`: 24 hex digits, random (a counter if the system's
/// random source fails).
pub fn session_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 12];
    if getrandom::getrandom(&mut b).is_err() {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[8..].copy_from_slice(&std::process::id().to_be_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> JsonRequest {
        parse_body(s.as_bytes()).unwrap()
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::from_query(b""), Ok(Mode::Auth));
        assert_eq!(Mode::from_query(b"mode=no-auth"), Ok(Mode::NoAuth));
        assert_eq!(Mode::from_query(b"x=1&mode=list-accounts"), Ok(Mode::ListAccounts));
        assert!(Mode::from_query(b"mode=nope").is_err());
    }

    #[test]
    fn a_dovecot_body_is_a_login() {
        let j = body(
            r#"{"username":"alice","password":"p w","client_ip":"192.0.2.7","client_port":"5000",
                "client_id":"","local_ip":"127.0.0.1","local_port":"143","service":"imap",
                "method":"plain","ssl":"1","ssl_protocol":"TLSv1.3","extra":{"x":1}}"#,
        );
        let r = auth_request(&j).unwrap();
        assert_eq!(r.user, "alice");
        assert_eq!(&*r.pass, b"p w");
        assert_eq!(r.protocol, Protocol::Imap);
        assert_eq!(r.method, Method::Plain);
        assert_eq!(r.client_ip, Some("192.0.2.7".parse().unwrap()));
        assert!(r.ssl.is_some());
        let r = auth_request(&body(r#"{"username":"a","password":"t","service":"pop3","method":"XOAUTH2"}"#)).unwrap();
        assert_eq!((r.protocol, r.method, r.client_ip), (Protocol::Pop3, Method::Xoauth2, None));
        // an IPv4 client of Dovecot's dual-stack listener: its IPv4 form
        let r = auth_request(&body(r#"{"username":"a","password":"t","client_ip":"::ffff:192.0.2.7"}"#)).unwrap();
        assert_eq!(r.client_ip, Some("192.0.2.7".parse().unwrap()));
        let r = auth_request(&body(r#"{"username":"a","password":"t","service":"submission"}"#)).unwrap();
        assert_eq!((r.protocol, r.method), (Protocol::Smtp, Method::Plain));
        let r = auth_request(&body(r#"{"username":"a","password":"t","service":"sieve"}"#)).unwrap();
        assert_eq!(r.protocol, Protocol::Imap);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for b in [
            "",
            "{",
            "[]",
            "\"x\"",
            r#"{"username":1,"password":"x"}"#,
            r#"{"username":"a","password":["x"]}"#,
            "{\"username\":\"a\"}\u{0}",
        ] {
            assert!(parse_body(b.as_bytes()).is_err(), "{b:?}");
        }
        assert!(parse_body(&vec![b' '; MAX_BODY + 1]).is_err());
        for b in [
            r#"{"username":"","password":"x","service":"imap"}"#,
            r#"{"username":"a\nb","password":"x","service":"imap"}"#,
            r#"{"username":"a","password":"x","service":"imap","method":"cram-md5"}"#,
            r#"{"username":"a","password":"x\u0000","service":"imap"}"#,
            r#"{"username":"a","password":"x","service":"imap","client_ip":"nope"}"#,
        ] {
            assert!(auth_request(&body(b)).is_err(), "{b}");
        }
        assert!(lookup_user(&body(r#"{"username":"a","service":"lmtp"}"#)).is_ok());
        assert!(lookup_user(&body(r#"{"service":"lmtp"}"#)).is_err());
    }

    #[test]
    fn attributes_from_extra_fields() {
        let a = Account {
            name: "alice".into(),
            extra: vec![
                ("userdb_mail".into(), "maildir:/m/alice".into()),
                ("userdb_quota_rule".into(), "*:storage=1G".into()),
                ("userdb_quota_rule".into(), "Trash:storage=+10M".into()),
                ("pass".into(), "secret".into()),
                ("nologin".into(), "".into()),
                ("host".into(), "192.0.2.1".into()),
            ],
            ..Account::default()
        };
        let attrs = attributes(&a);
        assert_eq!(
            attrs,
            vec![
                ("mail".to_string(), vec!["maildir:/m/alice".to_string()]),
                ("quota_rule".to_string(), vec!["*:storage=1G".to_string(), "Trash:storage=+10M".to_string()]),
                ("host".to_string(), vec!["192.0.2.1".to_string()]),
            ]
        );
        let v: Value = serde_json::from_str(&ok_body("alice", &attrs)).unwrap();
        assert_eq!(v["ok"], Value::Bool(true));
        assert_eq!(v["attributes"]["quota_rule"][1], "Trash:storage=+10M");
        assert_eq!(v["attributes"][v["account_field"].as_str().unwrap()][0], "alice");
        assert_eq!(account_name(&a, "ALICE"), "alice");
        assert_eq!(account_name(&Account::default(), "bob"), "bob");
        let v: Value = serde_json::from_str(&error_body("x\"y")).unwrap();
        assert_eq!(v["error"], "x\"y");
    }

    #[test]
    fn the_list_is_a_json_array() {
        let w = ListWriter::begin(Vec::new()).unwrap();
        let out = w.end().unwrap();
        assert_eq!(out, b"[]");
        let mut w = ListWriter::begin(Vec::new()).unwrap();
        for n in ["a", "b\"c", "ü"] {
            w.name(n).unwrap();
        }
        let v: Value = serde_json::from_slice(&w.end().unwrap()).unwrap();
        assert_eq!(v, serde_json::json!(["a", "b\"c", "ü"]));
    }

    #[test]
    fn session_ids_differ() {
        let (a, b) = (session_id(), session_id());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }
}
