//! MD5-crypt (`$1$`, Poul-Henning Kamp's FreeBSD scheme, in glibc/libxcrypt and Dovecot's
//! MD5-CRYPT) and Apache's variant (`$apr1$`, `htpasswd -m`): the same algorithm with a
//! different magic string. Written here on the `md-5` primitive (no well-kept crate has it);
//! the encoded result is compared in constant time.
//!
//! Form: `$1$salt$hash` with a salt of at most 8 printable characters (not `$`) and a
//! 22-character hash.

#![forbid(unsafe_code)]

use md5::{Digest, Md5};

use super::{ct_eq, malformed, SchemeError, CRYPT_ALPHABET as ITOA64};

pub(super) struct Md5Crypt<'a> {
    magic: &'static str,
    salt: &'a str,
    hash: &'a str,
}

impl Md5Crypt<'_> {
    /// The salt's length as the hash uses it (at most 8).
    pub(super) fn salt_len(&self) -> usize {
        self.salt.len().min(8)
    }

    pub(super) fn is_apr1(&self) -> bool {
        self.magic == "$apr1$"
    }

    pub(super) fn name(&self) -> &'static str {
        if self.is_apr1() {
            "APR1"
        } else {
            "MD5-CRYPT"
        }
    }

    pub(super) fn verify(&self, password: &[u8]) -> bool {
        // as libxcrypt (for `$1$`; Apache's `$apr1$` has no bound, but 1000 rounds over a
        // password of 8 KiB are ~10 ms): a password this long never matches, unhashed
        if password.len() >= super::CRYPT_MAX_PASSWORD {
            return false;
        }
        let computed = hash_part(password, self.salt.as_bytes(), self.magic.as_bytes());
        ct_eq(computed.as_bytes(), self.hash.as_bytes())
    }
}

/// Computes the 22-character hash part for `password`, `salt` (at most 8 bytes are used) and
/// `magic` (`$1$` or `$apr1$`).
fn hash_part(password: &[u8], salt: &[u8], magic: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];

    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    let mut n = password.len();
    while n > 0 {
        let take = n.min(16);
        ctx.update(&alt[..take]);
        n -= take;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();

    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }

    let mut out = String::with_capacity(22);
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| fin[i] as u32;
    put((f(0) << 16) | (f(6) << 8) | f(12), 4);
    put((f(1) << 16) | (f(7) << 8) | f(13), 4);
    put((f(2) << 16) | (f(8) << 8) | f(14), 4);
    put((f(3) << 16) | (f(9) << 8) | f(15), 4);
    put((f(4) << 16) | (f(10) << 8) | f(5), 4);
    put(f(11), 2);
    out
}

/// Parses `$1$salt$hash` / `$apr1$salt$hash`.
pub(super) fn parse(stored: &str) -> Result<Md5Crypt<'_>, SchemeError> {
    let (magic, rest) = if let Some(r) = stored.strip_prefix("$1$") {
        ("$1$", r)
    } else if let Some(r) = stored.strip_prefix("$apr1$") {
        ("$apr1$", r)
    } else {
        return Err(SchemeError::Unknown("not MD5-crypt".into()));
    };
    let what = if magic == "$1$" { "MD5-CRYPT" } else { "APR1" };
    let (salt, hash) = rest.split_once('$').ok_or_else(|| malformed(what))?;
    if salt.len() > 8 || !salt.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(malformed(format!("{what} (salt)")));
    }
    if hash.len() != 22 || !hash.bytes().all(|b| ITOA64.contains(&b)) {
        return Err(malformed(format!("{what} (hash length or characters)")));
    }
    Ok(Md5Crypt { magic, salt, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tool_outputs() {
        for (h, pw) in [
            // openssl passwd -1 -salt abc secret
            ("$1$abc$iCQ2D3nhptRYi27fDYv2s1", "secret"),
            // openssl passwd -apr1 -salt abc x
            ("$apr1$abc$51YrpNiEtKAQp4coykJmu.", "x"),
            // perl -e 'print crypt("secret", q($1$$))'  (empty salt)
            ("$1$$ysVNzQc4CTMkp5daOdZ.3/", "secret"),
            // openssl passwd -apr1 -salt '' secret
            ("$apr1$$g/UEjvgvl9nWOQl6rNKvZ.", "secret"),
            // openssl passwd -1 -salt abcdefghij secret  (the salt is cut to 8)
            ("$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1", "secret"),
            // openssl passwd -1 -salt 'a:c' secret
            ("$1$a:c$H9xRFbiHkWAT761ykanvE0", "secret"),
            // openssl passwd -1 -salt abc ''  (empty password)
            ("$1$abc$Or2rbeUYTvt12aiVzMuS/.", ""),
        ] {
            let p = parse(h).unwrap();
            assert!(p.verify(pw.as_bytes()), "{h}");
            assert!(!p.verify(b"wrong"), "{h}");
        }
    }

    #[test]
    fn malformed_forms_are_refused() {
        for bad in [
            "$1$",
            "$1$abc",
            "$1$abc$",
            "$1$abcdefghi$cHJi5PXp/ki/ktXzqlk6I1",
            "$1$a c$H9xRFbiHkWAT761ykanvE0",
            "$1$abc$iCQ2D3nhptRYi27fDYv2s",
            "$1$abc$iCQ2D3nhptRYi27fDYv2s1x",
            "$1$abc$iCQ2D3nhptRYi27fDYv2s!",
            "$apr1$abc$51YrpNiEtKAQp4coykJmu",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
