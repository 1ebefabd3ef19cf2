//! The row -> [`Account`] mapping shared by the SQL stores (SQLite, PostgreSQL, MySQL): one
//! result row, as (lower-cased column name, value as text) pairs, becomes an account, with the
//! same validation whatever the database.

#![forbid(unsafe_code)]

use super::Account;
use crate::cidr::Cidr;
use crate::protocol::{self, Protocol};

/// A stored password that never verifies (an unknown scheme: fails closed).
pub const NO_PASSWORD: &str = "!";

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "y" | "t" => Some(true),
        "0" | "no" | "false" | "off" | "n" | "f" => Some(false),
        _ => None,
    }
}

fn networks(column: &str, v: &str) -> Result<Vec<Cidr>, String> {
    let mut list = Vec::new();
    for n in split_list(v).filter(|n| !Cidr::is_local_keyword(n)) {
        list.push(Cidr::parse(n).map_err(|e| format!("{column}: \"{n}\": {e}"))?);
    }
    Ok(list)
}

pub(crate) fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split([',', ' ', '\t']).filter(|s| !s.is_empty())
}

/// Maps one result row (lower-cased column name, value as text; integers as decimal text) to an
/// account. `Err`: a value the module cannot use; the caller fails that login closed with a
/// temporary error (never OK) and logs the reason; other users are unaffected.
///
/// - `password` must be a column; NULL or '' is an account whose password never verifies
///   (stored as `!`, an unknown scheme), so it answers like a wrong password, not an error.
/// - `enabled`: 1/0, yes/no, true/false, on/off (any case); NULL = enabled; anything else: Err.
/// - `protocols`: imap, pop3, smtp separated by commas/blanks; NULL = all; '' = none; unknown: Err.
/// - `networks` (or Dovecot's `allow_nets`): CIDRs or addresses separated by commas/blanks;
///   NULL = anywhere; '' = nowhere; a bad one: Err. `allow_real_nets` likewise, against
///   `Client-IP` (the address nginx's connection came from).
/// - `nologin`, `fail`, `noauthenticate` (Dovecot's fields): any value but NULL disables the
///   account, as Dovecot refuses such a login whatever the value.
/// - `delay_until`: Unix time (`+N` after it ignored); refused while more than 5 minutes ahead;
///   NULL = none; otherwise Err.
/// - `server`: an IP literal (nginx needs one); NULL/'' = the configured backend; a name: Err.
/// - `port`: 1..65535; NULL = the backend's; otherwise Err.
/// - `name`: the account's canonical name ([`Account::name`]); NULL/'' = not set (the lookup
///   then uses the user asked for).
/// - `user` (Auth-User for the backend), `backend_pass`: NULL/'' = not set.
/// - `wait`: seconds (u32); NULL = the configured fail wait; otherwise Err.
/// - `client_cert`: `required` (yes, on, true, 1) or `optional` (no, off, false, 0, none);
///   NULL/'' = not required; otherwise Err ([`Account::require_client_cert`]).
/// - `app_only`: protocols on which the main password is refused (only app passwords), as
///   `protocols`, or `all`; NULL/'' = none.
/// - any other column: kept in `extra` (non-NULL values), otherwise ignored.
///
/// The reason quotes the offending value with its control characters escaped (`\n`, `\u{0}`):
/// it goes into nginx's error log, one line per message.
pub fn map_row(cols: &[(String, Option<String>)]) -> Result<Account, String> {
    map_fields(cols.iter().map(|(k, v)| (k.as_str(), v.as_deref()))).map_err(|e| escape_controls(&e))
}

/// A reason with its control characters escaped (`\n`, `\u{0}`): one log line.
pub(crate) fn escape_controls(e: &str) -> String {
    e.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Columns a row may give once (each group is one field under its names).
const ONCE: &[&[&str]] = &[
    &["password"],
    &["protocols"],
    &["networks", "allow_nets"],
    &["allow_real_nets"],
    &["app_only"],
    &["client_cert"],
    &["server"],
    &["port"],
    &["user"],
    &["name"],
    &["delay_until"],
];

/// A name among `names` that gives the same field as `name` under another name (`networks`
/// and `allow_nets`).
pub(crate) fn same_field<'a>(name: &str, mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let group = ONCE.iter().find(|g| g.contains(&name))?;
    names.find(|n| *n != name && group.contains(n))
}

/// The groups of a list like [`ONCE`] a row, a query's columns or a passwd-file line gave so
/// far.
pub(crate) struct SeenOnce {
    groups: &'static [&'static [&'static str]],
    seen: u64,
}

impl Default for SeenOnce {
    fn default() -> SeenOnce {
        SeenOnce::new(ONCE)
    }
}

impl SeenOnce {
    /// Over `groups` (at most 64).
    pub(crate) fn new(groups: &'static [&'static [&'static str]]) -> SeenOnce {
        debug_assert!(groups.len() <= 64);
        SeenOnce { groups, seen: 0 }
    }

    /// Notes field `name`; its group when that group was given before.
    pub(crate) fn again(&mut self, name: &str) -> Option<&'static [&'static str]> {
        let i = self.groups.iter().position(|g| g.contains(&name))?;
        let bit = 1u64 << i;
        let before = self.seen & bit != 0;
        self.seen |= bit;
        before.then_some(self.groups[i])
    }
}

/// The first column among `names` that a row may give once and that comes twice (`nginx -t`
/// and a server's prepare report it: every lookup would refuse the row).
pub(crate) fn repeated_column<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = SeenOnce::default();
    names.find(|n| seen.again(n).is_some())
}

/// [`map_row`] over (lower-cased column name, value) pairs, reasons not escaped yet.
pub(crate) fn map_fields<'a>(cols: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Result<Account, String> {
    let mut a = Account { enabled: true, ..Account::default() };
    let mut have_password = false;
    // the restricting columns and the password seen so far: a second one is refused rather
    // than taken over the first (`networks` then `'0.0.0.0/0' AS allow_nets` must not widen it)
    let mut seen = SeenOnce::default();
    for (name, value) in cols {
        if let Some(group) = seen.again(name) {
            return Err(format!("\"{name}\": the row gives {} twice", group.join(" / ")));
        }
        let Some(v) = value else {
            if name == "password" {
                have_password = true;
                a.password = NO_PASSWORD.into();
            }
            continue;
        };
        match name {
            "password" => {
                have_password = true;
                a.password = if v.is_empty() { NO_PASSWORD.into() } else { v.to_string() };
            }
            // only ever clears it: a refusal (`nologin`, another `enabled`) stays whatever follows
            "enabled" => a.enabled &= parse_bool(v).ok_or_else(|| format!("enabled: \"{v}\" is not a boolean"))?,
            "protocols" => {
                let mut list = Vec::new();
                for p in split_list(v) {
                    list.push(Protocol::parse(p.as_bytes()).ok_or_else(|| format!("protocols: unknown \"{p}\""))?);
                }
                a.protocols = Some(list);
            }
            // (`allow_nets`, `allow_real_nets`: Dovecot's names, as its password_query returns them)
            "networks" | "allow_nets" => a.networks = Some(networks(name, v)?),
            "allow_real_nets" => a.real_networks = Some(networks(name, v)?),
            // Dovecot refuses these when the query returns them with any value (NULL: not returned)
            "nologin" | "fail" | "noauthenticate" => a.enabled = false,
            "delay_until" => {
                a.delay_until = Some(
                    super::parse_delay_until(v).ok_or_else(|| format!("delay_until: \"{v}\" is not a Unix time"))?,
                )
            }
            "server" if !v.is_empty() => {
                let ip = protocol::parse_server(v).ok_or_else(|| format!("server: \"{v}\" is not an IP address"))?;
                a.server = Some(ip.to_string());
            }
            "port" => {
                a.port = Some(match v.trim().parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(format!("port: \"{v}\" is not 1..65535")),
                })
            }
            "app_only" => {
                a.app_only = match v.trim() {
                    "" => None,
                    t if t.eq_ignore_ascii_case("all") => Some(Protocol::ALL.to_vec()),
                    _ => {
                        let mut list = Vec::new();
                        for p in split_list(v) {
                            list.push(
                                Protocol::parse(p.as_bytes()).ok_or_else(|| format!("app_only: unknown \"{p}\""))?,
                            );
                        }
                        Some(list)
                    }
                }
            }
            "name" if !v.is_empty() => a.name = v.to_string(),
            "user" if !v.is_empty() => a.backend_user = Some(v.to_string()),
            "backend_pass" if !v.is_empty() => a.backend_pass = Some(v.to_string()),
            "name" | "server" | "user" | "backend_pass" => {} // '' = not set
            "wait" => {
                a.wait =
                    Some(
                        v.trim().parse::<u32>().ok().filter(|&w| w <= super::MAX_WAIT).ok_or_else(|| {
                            format!("wait: \"{v}\" is not a number of seconds up to {}", super::MAX_WAIT)
                        })?,
                    )
            }
            "client_cert" if v.trim().is_empty() => {}
            "client_cert" => {
                a.require_client_cert = crate::policy::parse_client_cert(v.trim())
                    .ok_or_else(|| format!("client_cert: \"{v}\" is not required or optional"))?
            }
            _ => a.extra.push((name.to_string(), v.to_string())),
        }
    }
    if !have_password {
        return Err("the row has no \"password\" column".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecots_local_keyword_in_networks_matches_no_address() {
        let a =
            map_row(&[("password".into(), Some("x".into())), ("allow_nets".into(), Some("local, 10.0.0.0/8".into()))])
                .unwrap();
        assert_eq!(a.networks, Some(vec![Cidr::parse("10.0.0.0/8").unwrap()]));
    }

    #[test]
    fn a_field_given_twice_is_found_under_either_name() {
        // what nginx -t (SQLite), a server's prepare (PostgreSQL, MySQL) and LDAP's mapping ask
        let cols = |v: &'static [&'static str]| v.iter().copied();
        assert_eq!(repeated_column(cols(&["name", "password", "networks", "allow_nets"])), Some("allow_nets"));
        assert_eq!(repeated_column(cols(&["password", "enabled", "nologin", "enabled", "x", "x"])), None);
        assert_eq!(repeated_column(cols(&["password", "delay_until", "password"])), Some("password"));
        assert_eq!(same_field("allow_nets", cols(&["name", "networks"])), Some("networks"));
        assert_eq!(same_field("networks", cols(&["networks"])), None, "the same name is the caller's check");
        assert_eq!(same_field("enabled", cols(&["enabled"])), None);
    }
}
