//! SMTP without AUTH (`Auth-Method: none`): the relay policy. The recipient (`Auth-SMTP-To`,
//! parsed as RFC 5321 says, see `smtp`) must be `<postmaster>` or in a domain of
//! `relay_domains` (`.example.org` matches example.org and its subdomains); then the answer is
//! the `mx` backend. Anything else — another domain, an address literal, a recipient that does
//! not parse — gets `Auth-Error-Code: 550 5.7.1` (result `relay-denied`, not counted by the
//! limiter).

#![forbid(unsafe_code)]

use super::decide::shown;
use super::outcome::{relay_denied, temp_fail, AuthResult, Outcome};
use crate::config::AuthConfig;
use crate::protocol::{AuthRequest, AuthResponse, Protocol};
use crate::smtp::{self, Recipient};

/// SMTP without AUTH: relay to the MX backend for accepted recipient domains only.
pub fn relay(cfg: &AuthConfig, req: &AuthRequest) -> Outcome {
    if req.protocol != Protocol::Smtp {
        return relay_denied(cfg, format!("Auth-Method none for {}", req.protocol));
    }
    let to = req.smtp_to.as_deref().unwrap_or("");
    let rcpt = match smtp::rcpt_target(to) {
        Ok(r) => r,
        Err(e) => return relay_denied(cfg, format!("recipient \"{}\" refused: {e}", shown(to))),
    };
    let sender = match req.smtp_from.as_deref().map(smtp::mail_from) {
        Some(Ok(Some(s))) => s.to_string(),
        _ => "<>".to_string(),
    };
    let seen = format!("{rcpt} from {sender}");
    // `u%elsewhere@domain`, `elsewhere!u@domain` and `"u@elsewhere"@domain`: an MX applies
    // these routing forms to a domain of its own (Postfix's allow_percent_hack, swap_bangpath
    // and resolve_dequoted_address, on by default, sendmail's), and sends the mail on to
    // `elsewhere`
    let routed = matches!(&rcpt, Recipient::Mailbox { local, .. } if local.contains(['%', '!', '@']));
    let accepted = match &rcpt {
        Recipient::Postmaster => true,
        Recipient::Mailbox { .. } if routed => false,
        Recipient::Mailbox { domain, .. } => smtp::domain_accepted(&cfg.relay_domains, domain),
        Recipient::AddressLiteral { .. } => false,
    };
    if !accepted {
        let why = match &rcpt {
            Recipient::AddressLiteral { .. } => "address literals are never relayed",
            _ if routed => {
                "a local part with %, ! or @ is routed on by the MX (percent hack, bang path, a quoted address)"
            }
            _ if cfg.relay_domains.is_empty() => "no mail_auth_relay_domains",
            _ => "domain not in mail_auth_relay_domains",
        };
        return relay_denied(cfg, format!("relay to {seen} refused: {why}"));
    }
    let Some(mx) = &cfg.mx_backend else {
        return temp_fail(
            cfg,
            req,
            AuthResult::BackendError,
            "no \"mail_auth_backend mx\" for accepted mail".to_string(),
        );
    };
    Outcome {
        response: AuthResponse::Ok { server: mx.server.clone(), port: mx.port, user: None, pass: None },
        result: AuthResult::Ok,
        reason: format!("mail for {seen} to mx {}:{}", mx.server, mx.port),
        backend_reason: false,
        user: Some(String::new()),
    }
}
