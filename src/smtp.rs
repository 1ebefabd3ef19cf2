//! SMTP envelope addresses for the relay policy (SMTP without AUTH), parsed as RFC 5321
//! §4.1.2 says.
//!
//! nginx mail (src/mail/ngx_mail_smtp_handler.c) passes `Auth-SMTP-From` / `Auth-SMTP-To` as
//! the raw command text from its verb to the end of its last argument, e.g.
//! `RCPT TO:<a@b.org> NOTIFY=NEVER` (arguments are split at spaces only, the text between is
//! copied as sent; CR/LF never occur). After an OK it replays that same text to the MX. So the
//! recipient domain must be the one an RFC 5321 server reads: the mailbox's domain after a
//! quoted local part (which may hold `@`, `>` and spaces) and after a source route, never
//! whatever follows the first `@` or precedes the first `>`.
//!
//! Accepted: `RCPT TO:` (any case, spaces allowed after the colon as many servers do) or just
//! the path; `<postmaster>` (any case); `<[@route,@route:]local@domain>` with a dot-string or
//! quoted-string local part (UTF-8 allowed there, RFC 6531) and an ASCII domain (letters,
//! digits, hyphens; one trailing dot tolerated) or an address literal; then nothing or
//! space-separated ESMTP parameters. Anything else is refused with a reason quoting the command
//! as it came (escaped once, when logged), as is a
//! command over `MAX_COMMAND` bytes or a non-ASCII domain (an IDN must come as its A-label).
//! Domains are limited to 255 bytes and labels to 63; local parts are not limited (servers
//! differ). A local part may hold any non-ASCII character: show it with `Display`, which
//! escapes them.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::Ipv6Addr;

/// Longest command parsed (an RFC 5321 command line is at most 512 octets).
pub const MAX_COMMAND: usize = 1024;
/// RFC 5321 §4.5.3.1.2.
const MAX_DOMAIN: usize = 255;
const MAX_LABEL: usize = 63;

/// The target of a `RCPT TO` (or the sender of a `MAIL FROM`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// `<postmaster>` (any case, no domain): always to be accepted (RFC 5321 §4.5.1).
    Postmaster,
    /// `local@domain`. `local` as written (a quoted string keeps its quotes and escapes);
    /// `domain` lower-case, without a trailing dot.
    Mailbox { local: String, domain: String },
    /// `local@[literal]`: `literal` as written between the brackets (`192.0.2.1`,
    /// `IPv6:2001:db8::1`, `tag:content`).
    AddressLiteral { local: String, literal: String },
}

impl Recipient {
    /// The domain of a mailbox (`None` for postmaster and address literals).
    pub fn domain(&self) -> Option<&str> {
        match self {
            Recipient::Mailbox { domain, .. } => Some(domain),
            _ => None,
        }
    }
}

/// `<local@domain>` as parsed, unescaped: whoever logs it escapes it, once.
impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Postmaster => f.write_str("<postmaster>"),
            Recipient::Mailbox { local, domain } => write!(f, "<{local}@{domain}>"),
            Recipient::AddressLiteral { local, literal } => write!(f, "<{local}@[{literal}]>"),
        }
    }
}

/// The recipient of an `Auth-SMTP-To` value (`RCPT TO:<a@b.org> NOTIFY=NEVER`, or just
/// `<a@b.org>`).
pub fn rcpt_target(cmd: &str) -> Result<Recipient, String> {
    let mut p = Parser::new(cmd, "RCPT", "TO")?;
    let rcpt = if p.take_postmaster() {
        Recipient::Postmaster
    } else {
        p.path()?.ok_or_else(|| p.fail("empty recipient <>", p.pos - 1))?
    };
    p.parameters()?;
    Ok(rcpt)
}

/// The sender of an `Auth-SMTP-From` value (`MAIL FROM:<a@b.org> SIZE=100`, or just the path):
/// `None` for the null reverse-path `<>`. Never `Recipient::Postmaster` (`<postmaster>` is not
/// a reverse-path).
pub fn mail_from(cmd: &str) -> Result<Option<Recipient>, String> {
    let mut p = Parser::new(cmd, "MAIL", "FROM")?;
    let sender = p.path()?;
    p.parameters()?;
    Ok(sender)
}

/// Is `domain` (a `Recipient::Mailbox` domain) accepted by `domains` (`mail_auth_relay_domains`
/// entries)? `example.org` matches that domain only; `.example.org` matches `example.org` and
/// all its subdomains (nginx's convention, as in `server_name`). Case and a trailing dot are
/// ignored on both sides; an empty domain or entry matches nothing.
pub fn domain_accepted(domains: &[String], domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain).as_bytes();
    if domain.is_empty() {
        return false;
    }
    domains.iter().any(|entry| {
        let entry = entry.strip_suffix('.').unwrap_or(entry);
        let (name, subdomains) = match entry.strip_prefix('.') {
            Some(parent) => (parent.as_bytes(), true),
            None => (entry.as_bytes(), false),
        };
        if name.is_empty() {
            return false;
        }
        if domain.eq_ignore_ascii_case(name) {
            return true;
        }
        subdomains
            && domain.len() > name.len() + 1
            && domain[domain.len() - name.len() - 1] == b'.'
            && domain[domain.len() - name.len()..].eq_ignore_ascii_case(name)
    })
}

/// RFC 5321 atext (RFC 5322 §3.2.3): letters, digits and ``!#$%&'*+-/=?^_`{|}~``; non-ASCII
/// bytes of UTF-8 too (RFC 6531).
fn atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// qtextSMTP: printable ASCII but `"` and `\`, space included; non-ASCII (RFC 6531).
fn qtext(b: u8) -> bool {
    ((b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\') || b >= 0x80
}

/// dcontent of an address literal: printable ASCII but `[`, `\`, `]`.
fn dcontent(b: u8) -> bool {
    b.is_ascii_graphic() && !b"[\\]".contains(&b)
}

/// Ldh-str ending in a letter or digit (a standardized tag of a general address literal).
fn ldh_str(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Snum "." Snum "." Snum "." Snum, Snum = 1*3DIGIT up to 255.
fn ipv4_literal(s: &str) -> bool {
    let snum = |n: &str| {
        (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<u16>().is_ok_and(|v| v <= 255)
    };
    s.split('.').count() == 4 && s.split('.').all(snum)
}

struct Parser<'a> {
    cmd: &'a str,
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    /// Past `VERB SP NOUN ":" *SP` (any case), or at a command that starts with its path.
    fn new(cmd: &'a str, verb: &str, noun: &str) -> Result<Parser<'a>, String> {
        if cmd.len() > MAX_COMMAND {
            let mut end = 64;
            while !cmd.is_char_boundary(end) {
                end -= 1;
            }
            return Err(format!("command longer than {MAX_COMMAND} bytes: \"{}...\"", &cmd[..end]));
        }
        let mut p = Parser { cmd, s: cmd.as_bytes(), pos: 0 };
        p.spaces();
        if p.peek() == Some(b'<') {
            return Ok(p);
        }
        if !p.take_keyword(verb) || p.spaces() == 0 || !p.take_keyword(noun) || !p.take(b':') {
            let what = format!("not a \"{verb} {noun}:<address>\" command");
            return Err(p.fail(&what, 0));
        }
        p.spaces();
        if p.peek() != Some(b'<') {
            let what = "expected '<' (an address in angle brackets)";
            return Err(p.fail(what, p.pos));
        }
        Ok(p)
    }

    /// The reason for refusing the command at byte `at`, with the command shown printable.
    /// The reason quotes the command as it came (cut at 200 bytes, on a character boundary):
    /// whoever logs it escapes it, once (the decision line does).
    fn fail(&self, what: &str, at: usize) -> String {
        let mut end = self.cmd.len().min(200);
        while !self.cmd.is_char_boundary(end) {
            end -= 1;
        }
        let more = if end < self.cmd.len() { "..." } else { "" };
        format!("{what} at byte {at} of \"{}{more}\"", &self.cmd[..end])
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn take(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    fn take_keyword(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        let hit = self.s.get(self.pos..end).is_some_and(|w| w.eq_ignore_ascii_case(word.as_bytes()));
        if hit {
            self.pos = end;
        }
        hit
    }

    /// Skips spaces (SP only); how many.
    fn spaces(&mut self) -> usize {
        let start = self.pos;
        while self.take(b' ') {}
        self.pos - start
    }

    /// Bytes while `f` holds, as text.
    fn span(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // stops at ASCII bytes or the end only: a UTF-8 boundary
        self.cmd.get(start..self.pos).unwrap_or("")
    }

    /// `<postmaster>`, any case.
    fn take_postmaster(&mut self) -> bool {
        let start = self.pos;
        if self.take(b'<') && self.take_keyword("postmaster") && self.take(b'>') {
            return true;
        }
        self.pos = start;
        false
    }

    /// Path = "<" [ A-d-l ":" ] Mailbox ">", or "<>" (`None`).
    fn path(&mut self) -> Result<Option<Recipient>, String> {
        if !self.take(b'<') {
            return Err(self.fail("expected '<'", self.pos));
        }
        if self.take(b'>') {
            return Ok(None);
        }
        if self.peek() == Some(b'@') {
            // source route, obsolete: skipped, the mailbox's domain is what counts
            loop {
                let at = self.pos;
                if !self.take(b'@') {
                    return Err(self.fail("expected '@' in the source route", at));
                }
                self.domain()?;
                if self.take(b':') {
                    break;
                }
                if !self.take(b',') {
                    let at = self.pos;
                    return Err(self.fail("expected ',' or ':' after a source route domain", at));
                }
            }
        }
        let local = self.local_part()?;
        let at = self.pos;
        if !self.take(b'@') {
            let what = match self.peek() {
                Some(b'>') => "no domain in the address",
                _ => "unexpected character in the local part",
            };
            return Err(self.fail(what, at));
        }
        let rcpt = if self.peek() == Some(b'[') {
            let literal = self.address_literal()?;
            Recipient::AddressLiteral { local, literal }
        } else {
            let domain = self.domain()?;
            // one trailing dot (a fully qualified name), as mail servers tolerate
            if self.peek() == Some(b'.') && self.s.get(self.pos + 1) == Some(&b'>') {
                self.pos += 1;
            }
            Recipient::Mailbox { local, domain }
        };
        if !self.take(b'>') {
            return Err(self.fail("expected '>' after the address", self.pos));
        }
        Ok(Some(rcpt))
    }

    /// Local-part = Dot-string / Quoted-string, as written.
    fn local_part(&mut self) -> Result<String, String> {
        let start = self.pos;
        if self.take(b'"') {
            loop {
                match self.peek() {
                    None => return Err(self.fail("unterminated quoted local part", start)),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        // quoted-pairSMTP = "\" followed by printable ASCII or space
                        let quoted = self.s.get(self.pos + 1).copied();
                        if !quoted.is_some_and(|b| b == b' ' || b.is_ascii_graphic()) {
                            return Err(self.fail("invalid escape in quoted local part", self.pos));
                        }
                        self.pos += 2;
                    }
                    Some(b) if qtext(b) => self.pos += 1,
                    Some(_) => {
                        let at = self.pos;
                        return Err(self.fail("invalid character in quoted local part", at));
                    }
                }
            }
            self.pos += 1;
        } else {
            loop {
                if self.span(atext).is_empty() {
                    let what = match self.peek() {
                        Some(b'@') | Some(b'.') | Some(b'>') | None => "empty local part or atom",
                        _ => "invalid character in the local part",
                    };
                    return Err(self.fail(what, self.pos));
                }
                if !self.take(b'.') {
                    break;
                }
            }
        }
        Ok(self.cmd.get(start..self.pos).unwrap_or("").to_string())
    }

    /// Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]; lower-cased.
    fn domain(&mut self) -> Result<String, String> {
        let start = self.pos;
        let mut labels = 0;
        loop {
            let at = self.pos;
            let label = self.span(|b| b.is_ascii_alphanumeric() || b == b'-');
            if label.is_empty() {
                let what = match self.peek() {
                    Some(b) if b >= 0x80 => "non-ASCII domain (send its xn-- A-label)",
                    Some(b'[') if labels == 0 => "address literal not allowed here",
                    _ => "empty or invalid domain label",
                };
                return Err(self.fail(what, at));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(self.fail("domain label starts or ends with '-'", at));
            }
            if label.len() > MAX_LABEL {
                return Err(self.fail("domain label longer than 63 bytes", at));
            }
            labels += 1;
            // a dot not followed by a label ends the domain (a trailing dot, or an error)
            let more = self.peek() == Some(b'.')
                && self.s.get(self.pos + 1).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b >= 0x80);
            if !more {
                break;
            }
            self.pos += 1;
        }
        if self.pos - start > MAX_DOMAIN {
            return Err(self.fail("domain longer than 255 bytes", start));
        }
        if self.peek().is_some_and(|b| b >= 0x80) {
            return Err(self.fail("non-ASCII domain (send its xn-- A-label)", self.pos));
        }
        let domain = self.cmd.get(start..self.pos).unwrap_or("");
        Ok(domain.to_ascii_lowercase())
    }

    /// address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" 1*dcontent ) "]"; the inside.
    fn address_literal(&mut self) -> Result<String, String> {
        let start = self.pos;
        self.take(b'[');
        let inside = self.span(dcontent);
        if !self.take(b']') {
            return Err(self.fail("unterminated or invalid address literal", start));
        }
        let ok = match inside.split_once(':') {
            _ if ipv4_literal(inside) => true,
            Some((tag, addr)) if tag.eq_ignore_ascii_case("IPv6") => addr.parse::<Ipv6Addr>().is_ok(),
            Some((tag, content)) => ldh_str(tag) && !content.is_empty(),
            None => false,
        };
        if !ok {
            return Err(self.fail("invalid address literal", start));
        }
        Ok(inside.to_string())
    }

    /// Nothing more, or SP-separated esmtp-param = esmtp-keyword ["=" esmtp-value].
    fn parameters(&mut self) -> Result<(), String> {
        loop {
            let gap = self.spaces();
            if self.peek().is_none() {
                return Ok(());
            }
            let at = self.pos;
            if gap == 0 {
                return Err(self.fail("unexpected text after the address", at));
            }
            let keyword = self.span(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !keyword.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) {
                return Err(self.fail("invalid ESMTP parameter", at));
            }
            if self.take(b'=') {
                // esmtp-value: printable ASCII but '=' (RFC 6531: UTF-8 too)
                let value = self.span(|b| (b.is_ascii_graphic() && b != b'=') || b >= 0x80);
                if value.is_empty() {
                    return Err(self.fail("empty ESMTP parameter value", at));
                }
            }
            if self.peek().is_some_and(|b| b != b' ') {
                return Err(self.fail("invalid ESMTP parameter", at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(local: &str, domain: &str) -> Result<Recipient, String> {
        Ok(Recipient::Mailbox { local: local.into(), domain: domain.into() })
    }

    fn literal(local: &str, literal: &str) -> Result<Recipient, String> {
        Ok(Recipient::AddressLiteral { local: local.into(), literal: literal.into() })
    }

    /// The reason, which quotes the command as it came (escaped once, by whoever logs it).
    fn refused(cmd: &str) -> String {
        match rcpt_target(cmd) {
            Err(e) => {
                let head: String = cmd.chars().take(20).collect();
                assert!(e.contains(&head), "{e:?} does not quote {cmd:?}");
                e
            }
            Ok(r) => panic!("{cmd:?} accepted as {r:?}"),
        }
    }

    #[test]
    fn plain_recipients() {
        assert_eq!(rcpt_target("RCPT TO:<bob@example.org>"), mailbox("bob", "example.org"));
        assert_eq!(rcpt_target("rcpt to:<Bob@EXAMPLE.Org>"), mailbox("Bob", "example.org"));
        assert_eq!(rcpt_target("RCPT TO: <bob@example.org.>"), mailbox("bob", "example.org"));
        assert_eq!(rcpt_target("RcPt   To:  <a@b>"), mailbox("a", "b"));
        assert_eq!(rcpt_target("<a.b.c@x-y.example>"), mailbox("a.b.c", "x-y.example"));
        assert_eq!(rcpt_target("<a+tag@3com.example>"), mailbox("a+tag", "3com.example"));
        let atext = "!#$%&'*+-/=?^_`{|}~09AZaz";
        assert_eq!(rcpt_target(&format!("<{atext}@b>")), mailbox(atext, "b"));
        // UTF-8 local part (RFC 6531); the domain stays ASCII
        assert_eq!(rcpt_target("<jösé@example.org>"), mailbox("jösé", "example.org"));
    }

    #[test]
    fn a_quoted_local_part_does_not_end_the_address() {
        // the address is cut at the first '>' by a naive parser: example.org; it is evil.com
        let evil = r#"RCPT TO:<"x@example.org>"@evil.com>"#;
        assert_eq!(rcpt_target(evil), mailbox(r#""x@example.org>""#, "evil.com"));
        let relay = ["example.org".to_string()];
        let r = rcpt_target(evil).unwrap();
        assert!(!domain_accepted(&relay, r.domain().unwrap()));
        assert_eq!(rcpt_target(r#"<"a b@c>d"@example.org> NOTIFY=NEVER"#), mailbox(r#""a b@c>d""#, "example.org"));
        assert_eq!(rcpt_target(r#"<""@example.org>"#), mailbox(r#""""#, "example.org"));
        // escapes: \" and \\ stay inside the quotes
        assert_eq!(rcpt_target(r#"<"a\"@x.org>\\"@evil.com>"#), mailbox(r#""a\"@x.org>\\""#, "evil.com"));
        for bad in [
            r#"<"\"@example.org>"#,
            r#"<"x@example.org>"#,
            r#"<"x"y@example.org>"#,
            r#"<"x""@example.org>"#,
            "<\"a\tb\"@example.org>",
            "<\"a\\\u{1}\"@example.org>",
            "<\"a\u{7f}\"@example.org>",
        ] {
            refused(bad);
        }
    }

    #[test]
    fn source_routes_are_skipped() {
        assert_eq!(rcpt_target("RCPT TO:<@relay.example,@Hop.Example:bob@Example.org>"), mailbox("bob", "example.org"));
        assert_eq!(rcpt_target("<@example.org:bob@evil.com>"), mailbox("bob", "evil.com"));
        for bad in [
            "<@example.org>",
            "<@example.org,bob@x.org>",
            "<@:bob@x.org>",
            "<@a,:bob@x.org>",
            "<@a,b:bob@x.org>",
            "<@[192.0.2.1]:bob@x.org>",
            "<@a:>",
        ] {
            refused(bad);
        }
    }

    #[test]
    fn address_literals() {
        assert_eq!(rcpt_target("<a@[192.0.2.1]>"), literal("a", "192.0.2.1"));
        assert_eq!(rcpt_target("<a@[IPv6:2001:db8::1]>"), literal("a", "IPv6:2001:db8::1"));
        assert_eq!(rcpt_target("<a@[ipv6:::ffff:192.0.2.1]>"), literal("a", "ipv6:::ffff:192.0.2.1"));
        assert_eq!(rcpt_target("<a@[x-tag:any~thing]>"), literal("a", "x-tag:any~thing"));
        assert_eq!(rcpt_target("<a@[192.0.2.1]>").unwrap().domain(), None);
        for bad in [
            "<a@[192.0.2.256]>",
            "<a@[192.0.2]>",
            "<a@[1922.0.2.1]>",
            "<a@[IPv6:2001:db8::g]>",
            "<a@[IPv6:192.0.2.1]>",
            "<a@[example.org]>",
            "<a@[tag-:x]>",
            "<a@[tag:]>",
            "<a@[192.0.2.1>",
            "<a@[192.0.2.1]x>",
            "<a@[a[b]>",
            "<a@[]>",
        ] {
            refused(bad);
        }
    }

    #[test]
    fn postmaster() {
        for pm in ["RCPT TO:<postmaster>", "rcpt to:<PostMaster>", "<POSTMASTER> NOTIFY=NEVER"] {
            assert_eq!(rcpt_target(pm), Ok(Recipient::Postmaster), "{pm}");
        }
        assert_eq!(rcpt_target("<postmaster@example.org>"), mailbox("postmaster", "example.org"));
        assert_eq!(Recipient::Postmaster.domain(), None);
        for bad in ["<postmasters>", "<\"postmaster\">", "<@a:postmaster>", "<postmaster>x"] {
            refused(bad);
        }
    }

    #[test]
    fn esmtp_parameters() {
        for ok in [
            "RCPT TO:<a@b.org> NOTIFY=SUCCESS,FAILURE",
            "RCPT TO:<a@b.org> NOTIFY=NEVER ORCPT=rfc822;a+40b.org",
            "RCPT TO:<a@b.org>  X-FLAG",
            "RCPT TO:<a@b.org> 8BIT",
            "RCPT TO:<a@b.org> X=<>",
        ] {
            assert_eq!(rcpt_target(ok), mailbox("a", "b.org"), "{ok}");
        }
        for bad in [
            "RCPT TO:<a@b.org>NOTIFY=NEVER",
            "RCPT TO:<a@b.org> =x",
            "RCPT TO:<a@b.org> -X",
            "RCPT TO:<a@b.org> X=",
            "RCPT TO:<a@b.org> X=a=b",
            "RCPT TO:<a@b.org> X!",
            "RCPT TO:<a@b.org> X\tY",
            "RCPT TO:<a@b.org> <c@evil.com>",
            "RCPT TO:<a@b.org>>",
        ] {
            refused(bad);
        }
    }

    #[test]
    fn junk_is_refused_with_a_printable_reason() {
        for bad in [
            "",
            "RCPT TO:",
            "RCPT TO:a@b.org",
            "RCPT TO:<a@b.org",
            "RCPT TO:<>",
            "RCPT TO <a@b.org>",
            "RCPTTO:<a@b.org>",
            "RCPT FROM:<a@b.org>",
            "MAIL FROM:<a@b.org>",
            "RCPT\tTO:<a@b.org>",
            "RCPT TO:\t<a@b.org>",
            "TO:<a@b.org>",
            "<a@b.org",
            "<a>",
            "<@>",
            "<a@>",
            "<@b.org>",
            "<a@b..org>",
            "<a@.b.org>",
            "<a@b.org..>",
            "<a@-b.org>",
            "<a@b-.org>",
            "<a@b_c.org>",
            "<a..b@c.org>",
            "<.a@c.org>",
            "<a.@c.org>",
            "<a b@c.org>",
            "<a@b@c.org>",
            "<bob@example.org@evil.com>",
            "<a(comment)@c.org>",
            "<a@exämple.org>",
            "<a@b.org\u{0}>",
            "<a\r\n@b.org>",
            "<a\u{1b}[31m@b.org>",
            "\u{7f}",
        ] {
            let e = refused(bad);
            assert!(e.contains(" at byte "), "{bad:?}: {e}");
        }
        // the input is quoted as it came: the log line escapes it, once
        assert!(refused("<a@b.org\u{0}>").contains("b.org\u{0}>"));
        assert!(refused("<a@exämple.org>").contains("non-ASCII domain"));
        assert!(refused("RCPT TO:<>").contains("empty recipient"));
    }

    #[test]
    fn lengths_are_capped() {
        let label = "a".repeat(63);
        let long = format!("<x@{label}.{label}.{label}.{}.b>", "c".repeat(61));
        assert_eq!(long.len(), 4 + 255);
        assert!(rcpt_target(&long).is_ok());
        refused(&format!("<x@{label}.{label}.{label}.{}.b>", "c".repeat(62)));
        refused(&format!("<x@{label}a.org>"));
        let many = format!("RCPT TO:<a@b.org>{}", " X".repeat(600));
        assert!(many.len() > MAX_COMMAND);
        assert!(refused(&many).contains("longer than 1024"));
        let fits = format!("RCPT TO:<a@b.org>{}", " X".repeat(400));
        assert!(rcpt_target(&fits).is_ok());
        let quoted = format!("<\"{}\"@b.org>", "x\\\"".repeat(400));
        refused(&quoted);
        // a long multi-byte command is cut for the message without splitting a character
        let e = refused(&"é".repeat(600));
        assert!(e.contains("éé...") && !e.contains('\u{fffd}'), "{e}");
    }

    #[test]
    fn mail_from_paths() {
        assert_eq!(mail_from("MAIL FROM:<>"), Ok(None));
        assert_eq!(mail_from("mail from: <> BODY=8BITMIME"), Ok(None));
        assert_eq!(
            mail_from("MAIL FROM:<A@Example.ORG> SIZE=1000"),
            Ok(Some(Recipient::Mailbox { local: "A".into(), domain: "example.org".into() }))
        );
        assert_eq!(
            mail_from(r#"<"x>y"@[192.0.2.1]>"#),
            Ok(Some(Recipient::AddressLiteral { local: r#""x>y""#.into(), literal: "192.0.2.1".into() }))
        );
        for bad in [
            "MAIL FROM:<postmaster>",
            "RCPT TO:<a@b.org>",
            "MAIL FROM:",
            "MAIL FROM:a@b.org",
            "MAIL FROM:<<>>",
            "MAIL FROM:<> junk=",
        ] {
            let e = mail_from(bad).unwrap_err();
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    #[test]
    fn display_shows_the_address_as_parsed() {
        let shown = |cmd: &str| rcpt_target(cmd).unwrap().to_string();
        assert_eq!(shown("<Bob@EXAMPLE.org.>"), "<Bob@example.org>");
        assert_eq!(shown(r#"<"a b>@c"@x.org>"#), r#"<"a b>@c"@x.org>"#);
        assert_eq!(shown("<postmaster>"), "<postmaster>");
        assert_eq!(shown("<a@[IPv6:2001:db8::1]>"), "<a@[IPv6:2001:db8::1]>");
        // unescaped: the log line escapes it, once
        assert_eq!(shown("<j\u{202e}x@x.org>"), "<j\u{202e}x@x.org>");
        let logged = crate::protocol::printable(shown("<\"\u{85}\"@x.org>").as_bytes(), 64);
        assert_eq!(logged, "<\\x22\\xc2\\x85\\x22@x.org>");
    }

    #[test]
    fn relay_domains_match_like_nginx() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let exact = d(&["example.org"]);
        assert!(domain_accepted(&exact, "example.org"));
        assert!(domain_accepted(&exact, "EXAMPLE.org."));
        assert!(!domain_accepted(&exact, "sub.example.org"));
        assert!(!domain_accepted(&exact, "evilexample.org"));
        assert!(!domain_accepted(&exact, "example.org.evil.com"));
        let tree = d(&[".example.net"]);
        assert!(domain_accepted(&tree, "example.net"), "the domain itself too");
        assert!(domain_accepted(&tree, "a.example.net"));
        assert!(domain_accepted(&tree, "a.b.Example.NET"));
        assert!(!domain_accepted(&tree, "evilexample.net"));
        assert!(!domain_accepted(&tree, "xexample.net"));
        assert!(!domain_accepted(&tree, ".example.net.evil"));
        assert!(!domain_accepted(&tree, "example.network"));
        for nothing in [d(&[]), d(&[""]), d(&["."]), d(&[".."])] {
            assert!(!domain_accepted(&nothing, "example.org"), "{nothing:?}");
            assert!(!domain_accepted(&nothing, ""), "{nothing:?}");
        }
        assert!(!domain_accepted(&d(&["example.org", ".example.net"]), ""));
        assert!(!domain_accepted(&d(&["example.org", ".example.net"]), "."));
        assert!(domain_accepted(&d(&["example.org", ".example.net"]), "x.example.net"));
        assert!(domain_accepted(&d(&["Example.ORG."]), "example.org"));
    }
}
