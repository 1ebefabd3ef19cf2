//! MD5-crypt (`$1$`, FreeBSD/glibc) and Apache's variant (`$apr1$`): the same algorithm with a
//! different magic string. Written on the `md-5` primitive.

use md5::{Digest, Md5};

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Computes the 22-character hash part for `password`, `salt` (at most 8 bytes are used) and
/// `magic` (`$1$` or `$apr1$`).
pub fn hash_part(password: &[u8], salt: &[u8], magic: &[u8]) -> String {
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

/// Splits `$1$salt$hash` / `$apr1$salt$hash` into (magic, salt, hash).
pub fn split(stored: &str) -> Option<(&'static str, &str, &str)> {
    let (magic, rest) = if let Some(r) = stored.strip_prefix("$1$") {
        ("$1$", r)
    } else if let Some(r) = stored.strip_prefix("$apr1$") {
        ("$apr1$", r)
    } else {
        return None;
    };
    let (salt, hash) = rest.split_once('$')?;
    if hash.len() != 22 || salt.len() > 8 || !hash.bytes().all(|b| ITOA64.contains(&b)) {
        return None;
    }
    Some((magic, salt, hash))
}
