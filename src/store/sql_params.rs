//! Named query parameters (`:user`, `:protocol`, `:client_ip`, `:method`) for SQL servers whose
//! drivers only know positional ones: the query is rewritten once, at configuration time, to
//! `$1, $2 ...` (PostgreSQL: one number per distinct name) or `?` (MySQL: one per occurrence).
//! String literals, quoted identifiers, comments and PostgreSQL `::type` casts are left alone.

#![forbid(unsafe_code)]

/// A named parameter of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    User,
    Protocol,
    ClientIp,
    Method,
}

/// The named parameters a query may use.
pub const PARAMETERS: &[&str] = &[":user", ":protocol", ":client_ip", ":method"];

impl Param {
    fn parse(name: &str) -> Option<Param> {
        Some(match name {
            "user" => Param::User,
            "protocol" => Param::Protocol,
            "client_ip" => Param::ClientIp,
            "method" => Param::Method,
            _ => return None,
        })
    }

    /// The parameter's text for a query (`None`: SQL NULL, the client address when unknown).
    pub fn value(self, q: &super::Query<'_>) -> Option<String> {
        match self {
            Param::User => Some(q.user.to_string()),
            Param::Protocol => Some(q.protocol.as_str().to_string()),
            Param::Method => Some(q.method.as_str().to_string()),
            Param::ClientIp => q.client_ip.map(|ip| ip.to_string()),
        }
    }
}

/// How the driver wants its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `$1`, `$2`: a name used twice is one parameter.
    Dollar,
    /// `?`: each occurrence is a parameter; backslash escapes in string literals.
    Question,
}

/// The query with positional parameters, and what to bind to each of them in order.
pub fn rewrite(sql: &str, style: Style) -> Result<(String, Vec<Param>), String> {
    if sql.trim().is_empty() {
        return Err("empty query".into());
    }
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut params: Vec<Param> = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                // a literal or quoted identifier; a doubled quote stays inside
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return Err("unterminated quote in the query".into()),
                        Some(&q) if q == c => {
                            if b.get(j + 1) == Some(&c) {
                                j += 2;
                                continue;
                            }
                            break;
                        }
                        Some(b'\\') if style == Style::Question && c != b'`' => j += 2,
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map(|p| i + 2 + p + 2).ok_or("unterminated comment in the query")?;
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b.get(i + 1).is_some_and(|x| x.is_ascii_alphabetic() || *x == b'_') => {
                let end = b[i + 1..]
                    .iter()
                    .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'))
                    .map_or(b.len(), |p| i + 1 + p);
                let name = &sql[i + 1..end];
                let p = Param::parse(name)
                    .ok_or_else(|| format!("unknown parameter \":{name}\" (known: {})", PARAMETERS.join(", ")))?;
                out.push_str(&sql[copied..i]);
                match style {
                    Style::Question => {
                        params.push(p);
                        out.push('?');
                    }
                    Style::Dollar => {
                        let n = match params.iter().position(|x| *x == p) {
                            Some(n) => n + 1,
                            None => {
                                params.push(p);
                                params.len()
                            }
                        };
                        out.push_str(&format!("${n}"));
                    }
                }
                copied = end;
                i = end;
            }
            b'?' if style == Style::Question => {
                return Err("positional parameters (?) are not supported; use :user, :protocol ...".into())
            }
            b'$' if style == Style::Dollar && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                return Err("positional parameters ($1) are not supported; use :user, :protocol ...".into())
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok((out, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_numbers_distinct_names() {
        let (s, p) =
            rewrite("SELECT x FROM t WHERE a = :user OR b = :user AND c = :client_ip::inet", Style::Dollar).unwrap();
        assert_eq!(s, "SELECT x FROM t WHERE a = $1 OR b = $1 AND c = $2::inet");
        assert_eq!(p, vec![Param::User, Param::ClientIp]);
    }

    #[test]
    fn question_marks_each_occurrence() {
        let (s, p) = rewrite("SELECT x FROM t WHERE a = :user OR b = :user AND m = :method", Style::Question).unwrap();
        assert_eq!(s, "SELECT x FROM t WHERE a = ? OR b = ? AND m = ?");
        assert_eq!(p, vec![Param::User, Param::User, Param::Method]);
    }

    #[test]
    fn literals_comments_and_identifiers_untouched() {
        let q = "SELECT ':user', \"a:b\", 'it''s :x' -- :nope\n, `c:d` /* :no */ FROM t WHERE n = :protocol";
        let (s, p) = rewrite(q, Style::Question).unwrap();
        assert!(s.ends_with("n = ?") && s.contains("':user'") && s.contains("-- :nope"), "{s}");
        assert_eq!(p, vec![Param::Protocol]);
        let (s, _) = rewrite("SELECT 'a\\' :user' FROM t", Style::Question).unwrap();
        assert_eq!(s, "SELECT 'a\\' :user' FROM t");
    }

    #[test]
    fn refusals() {
        assert!(rewrite("SELECT password FROM t WHERE n = :usr", Style::Dollar)
            .unwrap_err()
            .contains("unknown parameter"));
        assert!(rewrite("SELECT password FROM t WHERE n = $1", Style::Dollar).is_err());
        assert!(rewrite("SELECT password FROM t WHERE n = ?", Style::Question).is_err());
        assert!(rewrite("SELECT 'x FROM t", Style::Dollar).is_err());
        assert!(rewrite("  ", Style::Dollar).is_err());
    }
}
