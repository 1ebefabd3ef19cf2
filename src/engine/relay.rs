//! SMTP without AUTH (`Auth-Method: none`): the relay policy. The recipient's domain
//! (`Auth-SMTP-To`) must be one of `relay_domains` (`.example.org` matches example.org and its
//! subdomains); then the answer is the `mx` backend; otherwise `Auth-Error-Code: 550 5.7.1`
//! (result `relay-denied`, not counted by the limiter).

use super::decide::shown;
use super::outcome::{relay_denied, temp_fail, AuthResult, Outcome};
use crate::config::AuthConfig;
use crate::protocol::{AuthRequest, AuthResponse, Protocol};

/// The address of an `Auth-SMTP-To` / `Auth-SMTP-From` value (`RCPT TO:<a@b> PARAMS`,
/// `MAIL FROM:<a@b>`, as nginx passes the command): what is between `<` and `>`, or the first
/// word after the colon.
pub fn smtp_address(cmd: &str) -> Option<&str> {
    let rest = match cmd.find(':') {
        Some(i) if ["RCPT TO", "MAIL FROM"].iter().any(|c| cmd[..i].trim().eq_ignore_ascii_case(c)) => &cmd[i + 1..],
        _ => cmd,
    };
    let rest = rest.trim_start();
    let addr = match rest.strip_prefix('<') {
        Some(r) => &r[..r.find('>')?],
        None => rest.split_whitespace().next()?,
    };
    (!addr.is_empty()).then_some(addr)
}

/// Is `domain` (lower case) accepted for relay by `domains`?
fn relay_domain_accepted(domains: &[String], domain: &str) -> bool {
    domains.iter().any(|d| match d.strip_prefix('.') {
        Some(parent) => domain == parent || domain.ends_with(d.as_str()),
        None => domain == d,
    })
}

/// SMTP without AUTH: relay to the MX backend for accepted recipient domains only.
pub fn relay(cfg: &AuthConfig, req: &AuthRequest) -> Outcome {
    let to = req.smtp_to.as_deref().unwrap_or("");
    let from = req.smtp_from.as_deref().unwrap_or("");
    if req.protocol != Protocol::Smtp {
        return relay_denied(cfg, format!("Auth-Method none for {}", req.protocol));
    }
    let Some(addr) = smtp_address(to) else {
        return relay_denied(cfg, format!("no recipient address in \"{}\"", shown(to)));
    };
    let domain = match addr.rsplit_once('@') {
        Some((_, d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        // RFC 5321 4.5.1: <postmaster> without a domain is always accepted
        None if addr.eq_ignore_ascii_case("postmaster") => String::new(),
        None => return relay_denied(cfg, format!("recipient <{}> has no domain", shown(addr))),
    };
    let sender = smtp_address(from).unwrap_or("");
    let seen = format!("<{}> from <{}>", shown(addr), shown(sender));
    if !domain.is_empty() && !relay_domain_accepted(&cfg.relay_domains, &domain) {
        let why =
            if cfg.relay_domains.is_empty() { "no mail_auth_relay_domains" } else { "domain not in mail_auth_relay_domains" };
        return relay_denied(cfg, format!("relay to {seen} refused: {why}"));
    }
    let Some(mx) = &cfg.mx_backend else {
        return temp_fail(cfg, req, AuthResult::BackendError, "no \"mail_auth_backend mx\" for accepted mail".to_string());
    };
    Outcome {
        response: AuthResponse::Ok { server: mx.server.clone(), port: mx.port, user: None, pass: None },
        result: AuthResult::Ok,
        reason: format!("mail for {seen} to mx {}:{}", mx.server, mx.port),
        user: String::new(),
    }
}
