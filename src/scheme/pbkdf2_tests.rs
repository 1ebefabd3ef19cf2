//! PBKDF2 vectors made by the real tools: `testdata/schemes/make-pbkdf2-vectors.sh` printed
//! them (doveadm pw from dovecot-core 2.3.19, Debian's python3-passlib 1.7.4); the third field
//! of each is the exact command (PW stands for the password).

#![forbid(unsafe_code)]

use super::*;
use crate::scheme::{cost_estimate, is_costly, scheme_name, verify};

/// (password, stored value, command that made it).
const VECTORS: &[(&str, &str, &str)] = &[
    ("secret", "{PBKDF2}$1$cxeMEiBErOZ1yUp8$5000$f9c22c23e97709fd231b121708101f399c9d811e", "doveadm pw -s PBKDF2 -p PW"),
    ("secret", "{PBKDF2}$1$0cg2ffvlGoZTq06w$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3", "doveadm pw -s PBKDF2 -r 1000 -p PW"),
    ("secret", "$pbkdf2$1000$tpYSAoBwTolRKqX0HoPQOg$FYno9OAM9nfJBbrfXWLcw3nSFow", "python3 -c 'from passlib.hash import pbkdf2_sha1 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("secret", "$pbkdf2-sha256$1000$tLY25jwHIASAECLk3Lu31g$Aj/xarc.FWbPe10PyHaY1mE8cts3.snYY/a5nfomWOc", "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("secret", "$pbkdf2-sha512$1000$EeIc49w7R6j1Pick5NybEw$2KHtKO3mx2ApeUr9DGaSpis39vxnJrKLzm3TLLOVUWki.G0UyCuVwN2InVwr9cW2bNu6mSDGTTsF9YqT/ETAQQ", "python3 -c 'from passlib.hash import pbkdf2_sha512 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("secret", "pbkdf2_sha1$1000$0Q1YZlA9UAia$AL7/I1uvlCdkKLZU6htnE9zzo0s=", "python3 -c 'from passlib.hash import django_pbkdf2_sha1 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("secret", "pbkdf2_sha256$1000$NYLgXKjUznAW$vmOQ5A6mrO1Z3R1vMDBYDrBOAPWyG4lh9/lkqINLfZU=", "python3 -c 'from passlib.hash import django_pbkdf2_sha256 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("p w%d:é", "{PBKDF2}$1$9TyBsl4dGA6UlFFB$5000$253ea817c2daaf8db5f8cd647bbde007445111e7", "doveadm pw -s PBKDF2 -p PW"),
    ("p w%d:é", "{PBKDF2}$1$WM.3ctUkdlMaZZF0$1000$d5f76f74f4f7848b658ef7ee2b0e72e7c89315e8", "doveadm pw -s PBKDF2 -r 1000 -p PW"),
    ("p w%d:é", "$pbkdf2$1000$RMi5N0YIgZASImSM0fr/nw$r6WlseTcn.ZKFkzwt/u.T8K/A6Y", "python3 -c 'from passlib.hash import pbkdf2_sha1 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("p w%d:é", "$pbkdf2-sha256$1000$GkMIQYhRirE2BgAAICQEIA$29N1M437U9q/uPO.zSTP4P0MRDTPrX/kuSYSoOSf3Eg", "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("p w%d:é", "$pbkdf2-sha512$1000$ntP6H8MYg3BuDWEsxRgDYA$H8gIhlS3YdiiDyIDVBVInZmMww0IW0IVlw65hV9gTdpyWtU2WJJJ6j8nseGxHODnl9e0YevngIDo8Y59d6VS2w", "python3 -c 'from passlib.hash import pbkdf2_sha512 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("p w%d:é", "pbkdf2_sha1$1000$RayoesuZcTbY$5k5jBu1w4tJpcZPg9hnPJPwsQ6A=", "python3 -c 'from passlib.hash import django_pbkdf2_sha1 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("p w%d:é", "pbkdf2_sha256$1000$Kg66rYEHP7O4$7I8FjlH5xPk4PwsKTLDVXWd61tBmEsRUCz5vX0fccZs=", "python3 -c 'from passlib.hash import django_pbkdf2_sha256 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("q'\"\\ Ünï €🔑", "{PBKDF2}$1$INwTgDVP8jjDkr1z$5000$4b9792f4301a4287a2c259343df6958ff170e2b3", "doveadm pw -s PBKDF2 -p PW"),
    ("q'\"\\ Ünï €🔑", "{PBKDF2}$1$PuU8YtAUrUOe7DAg$1000$f81efa767e2311c169bff5aedc908bf8737ee28d", "doveadm pw -s PBKDF2 -r 1000 -p PW"),
    ("q'\"\\ Ünï €🔑", "$pbkdf2$1000$NAagNCakVOpdS2nNGSOEcA$rG9wq04oPucc262meDsE8Rp6120", "python3 -c 'from passlib.hash import pbkdf2_sha1 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("q'\"\\ Ünï €🔑", "$pbkdf2-sha256$1000$ZWzt3Tun1No7h1AqJcT4fw$nefuEXEYpdzfo30sjd0A0BfBnMBB1G1qEaExoW75TYI", "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("q'\"\\ Ünï €🔑", "$pbkdf2-sha512$1000$F4IwBmAsBSDEWEtJqdUaQw$T.A.RwdWXgnZSYXLrc7QbUJgIZ.hleTzvzsdIhATx5dl0kxDn9wTdM1wJ6p69mRRUHahIjOtlRYQmat8ee6R4Q", "python3 -c 'from passlib.hash import pbkdf2_sha512 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("q'\"\\ Ünï €🔑", "pbkdf2_sha1$1000$ymJGXKQMc57W$cCG+ElqC4uRq5sXwyn2YgMDdb3A=", "python3 -c 'from passlib.hash import django_pbkdf2_sha1 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("q'\"\\ Ünï €🔑", "pbkdf2_sha256$1000$Bmz6TtZ2KtTA$uGimyDNPrx/UN3/PPug5+mnCrts0VlTCryqU+cfQh/4=", "python3 -c 'from passlib.hash import django_pbkdf2_sha256 as h; print(h.using(rounds=1000).hash(PW))'"),
    ("secret", "$pbkdf2$131000$pXQOwRjjHENIyZnz/p/T2g$93ucfdsLeR/qeCJboxAcdQdpNdA", "python3 -c 'from passlib.hash import pbkdf2_sha1 as h; print(h.hash(PW))'"),
    ("secret", "$pbkdf2-sha256$29000$Sen9vxfCeI9xDuE8B8A4Zw$pUROI8O30oSDwx.xgaMa4pHQO2rL3w7HkL/OaA0MsAk", "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.hash(PW))'"),
    ("secret", "$pbkdf2-sha512$25000$wvhfy1kLASDEmDPGGCPkfA$RXKkAO3l9kkQMWetCBr9dRyxG3pUr8mZ.XqizMxxEwF3mSzbs8hx9tSciyRGYF/sPGKtwRgkohpPTWQj3mex7g", "python3 -c 'from passlib.hash import pbkdf2_sha512 as h; print(h.hash(PW))'"),
    ("secret", "pbkdf2_sha1$131000$H7gkpMlWqW4T$jedfcfCNrzQfeWJXI41CCNmNZk0=", "python3 -c 'from passlib.hash import django_pbkdf2_sha1 as h; print(h.hash(PW))'"),
    ("secret", "pbkdf2_sha256$29000$2duAha78G9FR$BkpA3RRiMs2Yu0rQ8FGVgQHx+lE056tuAdxz+N1iXLs=", "python3 -c 'from passlib.hash import django_pbkdf2_sha256 as h; print(h.hash(PW))'"),
    ("secret", "{PBKDF2}$pbkdf2-sha512$1000$O.e815ozxhgjhHDunRNiLA$K4piHloeyPeCgrTstIDY6m2hFoWfDnCFvjkeOMyOvS7XOXSTGLAYuiJn70zD7xV9zuj5.57DAvAA0bSliVohqg", "python3 -c 'from passlib.hash import pbkdf2_sha512 as h; print(\"{PBKDF2}\" + h.using(rounds=1000).hash(PW))'"),
    ("secret", "$pbkdf2-sha256$1000$$p6kS.jPkrCLgm.JMAAwOXmRYf18G94OuMOAM.cnoiXM", "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=1000, salt_size=0).hash(PW))'"),
    ("secret", "$pbkdf2-sha256$1000$Cg$BpcOIa.eX6sefxfXrTU1Tf8d3S4GxDhGCeEoMfPDZHk", "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=1000, salt_size=1).hash(PW))'"),
    ("secret", "$pbkdf2-sha256$1000$8J7zHgMAQCiF8P7fmzPGWMt5D2EsZcw55xwDAGAMYQxBiLF2jjHmXEtJiRFijDFmLKV0zpmTkrLW2jvn3BvDGAMgpDQmZGwtpXSOMWYsZawVgjBGSEmJcc5Z611rrXVOyVmr9f6fs3auVYpxbk0pZey9l7J2jtHaG0MIQWjt3XsvZQzhXKsVAgBAKIXQei8FoDQmxFgLYYzxvpfSGoOQEsJ4b81ZS6nVWqu1FiJEaA2BsPZeqxVirHVuLUUoxbgXgtAag1CqdS7l/D/n/F9L6X2vNaZ0rnVu7T2nVGqNsbZWKsX435vzntN6j9E6RwhB6N3be.9dC4EwhrB2rrVWqnWuNWbs/f.fU2pNqVVKyRnjvDfm3FsrJaT0fi9FCIGQ8t671zonpBRCCGGslbKWsvZea42xtrbWunduTckZY2zNOWdszRmjtLY2pjSG8H7vXYvxPkdojdGa03pPCUFo7R1D6B0DgHAOQShlrJUSAiCEkNK6FwLgnBPiXAtBSKlVKmXMGaN0jlGq1brXmvO.l7IWAiDEmPOeM8ZYKwXgfC.FUEqp9b73/v8fwziHsHaOEWJsjZHyfm.NMQYAoFSK8f7/XyvFOIeQUqqVUuo9hxBCSElpbW3NGYNwbm0t5fz/H.O8N8aYs5aScs6ZE6K01rp3TmltDaFUyhlDiBFCSEkJYWwtxdhbq/XemzOmtHZuTSmF8F5LSclZay0lZKz1XivF.J9zTokxhlAKobSWkpJyzplTCoFwbg2hNCYkBAAgZCyFEOKck9LaO2dsbU1pLYXw3rt3rvU.B.CcU0qp9V7rnRNiLIUQgrBW6r1X6h2jVIpxbq1VipGSEiLEGKM0RkjpPYcQAgAAgDCm1JrzHgPAuPe.N6ZUaq01JuSck5KS8h7jvHfu3du7NybkHOOc09pbSyllrHVuzRnDuBci5JzzXovxnlPqPWdsTSll7B3jXIuxtraWci5lbG0NQchZaw2hdI6R8v7/XyuFsHauFcJYa03pPWcM4dw7x7gXYkxp7b1XSuk9J.Rci7F2zpnTeu/dmzMmRIixlvL.PyeklFKqNQaAUIqxVgrB2Dvn/N.b0zqHkPJ.7/1/rzWGMEYIgdAag3AuZUwpZQyh9H5PiRGidC7F.B8jhPBeay1FKOU851xLSek9h7DW.j9HiBHiHOP8X4sRgrCWEsIYg7CW8p6TEoKw9t4bIwQgJIRw7j1nTClFSEmJcQ4hxHhPqfU.h5BSam0N4TyndA6B0BpjTMk5Z2yNsdZaC0FoTel9z9m711qrVQohxLg35hwDgDBGqBWiFOI8R6gVQuh9TwnhPIew9v4/x1ir1RqjlHLOee89B8C4t5ZSau3933tPifG.Nw$rftLQWkZmQgGvowSekQV07i2g8nDGAn0pNMxOAVtJ58", "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=1000, salt_size=1024).hash(PW))'"),
];

fn expected_name(stored: &str) -> &'static str {
    let s = stored.strip_prefix("{PBKDF2}").unwrap_or(stored);
    match s.split('$').take(2).collect::<Vec<_>>()[..] {
        ["", "1"] => "PBKDF2",
        ["", "pbkdf2"] => "PBKDF2-SHA1",
        ["", "pbkdf2-sha256"] => "PBKDF2-SHA256",
        ["", "pbkdf2-sha512"] => "PBKDF2-SHA512",
        ["pbkdf2_sha1", _] => "DJANGO-PBKDF2-SHA1",
        ["pbkdf2_sha256", _] => "DJANGO-PBKDF2-SHA256",
        _ => panic!("{stored}"),
    }
}

#[test]
fn every_real_tool_vector_verifies_and_rejects_wrong_passwords() {
    for &(password, stored, command) in VECTORS {
        let what = format!("`{command}`: {stored}");
        assert_eq!(verify(stored, password.as_bytes()), Ok(true), "{what}");
        let mut wrong = password.as_bytes().to_vec();
        wrong.push(b'x');
        assert_eq!(verify(stored, &wrong), Ok(false), "appended byte must fail: {what}");
        assert_eq!(verify(stored, b""), Ok(false), "empty password must fail: {what}");
        let mut flipped = password.as_bytes().to_vec();
        flipped[0] ^= 0x20;
        assert_eq!(verify(stored, &flipped), Ok(false), "changed case must fail: {what}");
        assert_eq!(verify(stored, &password.as_bytes()[1..]), Ok(false), "first byte gone must fail: {what}");
        assert_eq!(scheme_name(stored), expected_name(stored), "{what}");
    }
    // Every tool and form is there, with all three passwords.
    for prefix in ["{PBKDF2}$1$", "$pbkdf2$", "$pbkdf2-sha256$", "$pbkdf2-sha512$", "pbkdf2_sha1$", "pbkdf2_sha256$"] {
        for pw in ["secret", "p w%d:é", "q'\"\\ Ünï €🔑"] {
            assert!(VECTORS.iter().any(|v| v.0 == pw && v.1.starts_with(prefix)), "{prefix} {pw}");
        }
    }
    assert!(VECTORS.iter().any(|v| v.1.starts_with("{PBKDF2}$pbkdf2-sha512$")), "Mailu's form");
}

fn vector(prefix: &str, rounds: &str) -> (&'static str, &'static str) {
    let marker = if prefix.starts_with("{PBKDF2}$1$") { format!("${rounds}$") } else { format!("{prefix}{rounds}$") };
    VECTORS
        .iter()
        .find(|v| v.0 == "secret" && v.1.starts_with(prefix) && v.1.contains(&marker))
        .map(|v| (v.0, v.1))
        .unwrap_or_else(|| panic!("no {prefix} {rounds} vector"))
}

#[test]
fn equivalent_spellings_verify() {
    // Dovecot reads the hex digits in either case and the rounds with leading zeros.
    let (pw, dove) = vector("{PBKDF2}$1$", "1000");
    let (head, hex) = dove.rsplit_once('$').unwrap();
    assert_eq!(verify(&format!("{head}${}", hex.to_ascii_uppercase()), pw.as_bytes()), Ok(true));
    assert_eq!(verify(&dove.replace("$1000$", "$0001000$"), pw.as_bytes()), Ok(true));
    // The braced name is case-insensitive, as every braced scheme here.
    assert_eq!(verify(&dove.replacen("{PBKDF2}", "{pbkdf2}", 1), pw.as_bytes()), Ok(true));
    // passlib reads `+` where it writes `.`.
    let with_dot = VECTORS.iter().map(|v| v.1).find(|s| s.starts_with("$pbkdf2") && s.contains('.')).unwrap();
    assert_eq!(verify(&with_dot.replace('.', "+"), b"secret"), Ok(true), "{with_dot}");
    // Mailu's {PBKDF2} prefix works in front of every passlib form.
    for prefix in ["$pbkdf2$", "$pbkdf2-sha256$", "$pbkdf2-sha512$"] {
        let (pw, s) = vector(prefix, "1000");
        assert_eq!(verify(&format!("{{PBKDF2}}{s}"), pw.as_bytes()), Ok(true), "{s}");
    }
}

#[test]
fn malformed_values_are_errors_and_never_panic() {
    let (_, dove) = vector("{PBKDF2}$1$", "1000");
    let (_, p256) = vector("$pbkdf2-sha256$", "1000");
    let (_, dj) = vector("pbkdf2_sha256$", "1000");
    let huge = "A".repeat(1 << 20);
    let cases = [
        "{PBKDF2}".to_string(),
        "{PBKDF2}xyz".to_string(),
        "{PBKDF2}$1$".to_string(),
        "{PBKDF2}$2$salt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2}$1$salt$1000".to_string(),
        "{PBKDF2}$1$salt$$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2}$1$salt$-1$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2}$1$salt$+1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2}$1$salt$1e3$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2}$1$salt$0$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2}$1$salt$99999999999999999999$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2}$1$salt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f".to_string(),
        "{PBKDF2}$1$salt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3ab".to_string(),
        "{PBKDF2}$1$salt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667zz".to_string(),
        "{PBKDF2}$1$salt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3$".to_string(),
        "{PBKDF2}$1$s$a$lt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2.HEX}$1$salt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{PBKDF2.B64}$1$salt$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3".to_string(),
        "{CRYPT}$pbkdf2-sha256$1000$abc$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
        "{PBKDF2}pbkdf2_sha256$1000$abc$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string(),
        "{PBKDF2}$pbkdf2-sha384$1000$abc$AAAA".to_string(),
        "$pbkdf2-sha384$1000$abc$AAAA".to_string(),
        "$pbkdf2-$1000$abc$AAAA".to_string(),
        "$pbkdf2$".to_string(),
        "$pbkdf2$$$".to_string(),
        "pbkdf2_".to_string(),
        "pbkdf2_sha512$1000$abc$AAAA".to_string(),
        "pbkdf2_sha256$".to_string(),
        p256.replace("$1000$", "$01000$"),
        p256.replace("$1000$", "$0$"),
        p256.replace("$1000$", "$$"),
        p256.replace('$', "$$"),
        format!("{p256}$"),
        format!("{p256}A"),
        format!("{p256}AAAA"),
        format!("{p256}="),
        p256[..p256.len() - 1].to_string(),
        p256.replacen("$pbkdf2-sha256$", "$pbkdf2-sha512$", 1),
        p256.replacen("$pbkdf2-sha256$", "$pbkdf2$", 1),
        p256.replacen("$pbkdf2-sha256$", "$PBKDF2-SHA256$", 1),
        dj.replace("$1000$", "$01000$"),
        dj.trim_end_matches('=').to_string(),
        dj.replacen("pbkdf2_sha256$", "pbkdf2_sha1$", 1),
        dj.replacen("pbkdf2_sha256$", "PBKDF2_SHA256$", 1),
        format!("{dj}$"),
        "pbkdf2_sha256$1000$$vmOQ5A6mrO1Z3R1vMDBYDrBOAPWyG4lh9/lkqINLfZU=".to_string(),
        dove.replace("$1000$", "$ 1000$"),
        format!("{dove} "),
        format!("{{PBKDF2}}$1${huge}$1000$2b50b7e8b946f17b8897f97b4973eae8a39667f3"),
        format!("$pbkdf2-sha256$1000${huge}$Aj/xarc.FWbPe10PyHaY1mE8cts3.snYY/a5nfomWOc"),
        format!("$pbkdf2-sha256$1000$abc${huge}"),
        format!("pbkdf2_sha256$1000${huge}$vmOQ5A6mrO1Z3R1vMDBYDrBOAPWyG4lh9/lkqINLfZU="),
        format!("pbkdf2_sha256$1000$abc${huge}="),
        format!("{{PBKDF2}}$1$salt${huge}$2b50b7e8b946f17b8897f97b4973eae8a39667f3"),
        format!("$pbkdf2${}", "$".repeat(1 << 16)),
        "$pbkdf2-sha256$1000$é$Aj/xarc.FWbPe10PyHaY1mE8cts3.snYY/a5nfomWOc".to_string(),
    ];
    for c in &cases {
        let t = std::time::Instant::now();
        let r = verify(c, b"secret");
        assert!(r.is_err(), "{:?} must be an error: {r:?}", &c[..c.len().min(120)]);
        assert!(t.elapsed() < std::time::Duration::from_millis(100), "{:?} took long", &c[..c.len().min(120)]);
        assert!(!is_costly(c), "{:?}", &c[..c.len().min(120)]);
        assert_eq!(cost_estimate(c), 0, "{:?}", &c[..c.len().min(120)]);
        assert_eq!(scheme_name(c), "unknown", "{:?}", &c[..c.len().min(120)]);
        let e = r.unwrap_err().to_string();
        assert!(!e.is_empty() && e.len() < 200, "{e}");
    }
}

#[test]
fn bounds_on_rounds_and_salt() {
    let key40 = "2b50b7e8b946f17b8897f97b4973eae8a39667f3";
    let key43 = "Aj/xarc.FWbPe10PyHaY1mE8cts3.snYY/a5nfomWOc";
    let key44 = "vmOQ5A6mrO1Z3R1vMDBYDrBOAPWyG4lh9/lkqINLfZU=";
    for (rounds, ok) in [(1, true), (ROUNDS_MAX, true), (ROUNDS_MAX + 1, false), (u32::MAX, false)] {
        for s in [
            format!("{{PBKDF2}}$1$salt${rounds}${key40}"),
            format!("$pbkdf2-sha256${rounds}$abcd${key43}"),
            format!("pbkdf2_sha256${rounds}$abcd${key44}"),
        ] {
            // Parsed only: ROUNDS_MAX rounds would take seconds.
            assert_eq!(cost_estimate(&s) > 0, ok, "{s}");
            assert_eq!(scheme_name(&s) != "unknown", ok, "{s}");
            if !ok {
                assert!(matches!(verify(&s, b"secret"), Err(SchemeError::Malformed(_))), "{s}");
            }
        }
    }
    // Salts of up to SALT_MAX bytes (passlib's ab64 of 1024 bytes is 1366 characters).
    let b = |n: usize| "b".repeat(n);
    for (salt, ok) in [
        (format!("{{PBKDF2}}$1${}$1$", b(SALT_MAX)), true),
        (format!("{{PBKDF2}}$1${}$1$", b(SALT_MAX + 1)), false),
        (format!("pbkdf2_sha256$1${}$", b(SALT_MAX)), true),
        (format!("pbkdf2_sha256$1${}$", b(SALT_MAX + 1)), false),
        (format!("$pbkdf2-sha256$1${}$", b(1366)), true),
        (format!("$pbkdf2-sha256$1${}$", b(1367)), false),
        (format!("$pbkdf2-sha256$1${}$", b(1368)), false),
    ] {
        let key = match salt.as_bytes()[0] {
            b'{' => key40,
            b'p' => key44,
            _ => key43,
        };
        let s = format!("{salt}{key}");
        assert_eq!(verify(&s, b"secret").is_ok(), ok, "{}", &s[..40]);
    }
    // The 1024-byte passlib salt made by passlib itself verifies.
    let long = VECTORS.iter().find(|v| v.2.contains("salt_size=1024")).unwrap();
    assert_eq!(verify(long.1, b"secret"), Ok(true));
}

#[test]
fn cost_grows_with_rounds_and_ranks_against_other_schemes() {
    let (_, dove_5000) = vector("{PBKDF2}$1$", "5000");
    let (_, dove_1000) = vector("{PBKDF2}$1$", "1000");
    let (_, sha1_131k) = vector("$pbkdf2$", "131000");
    let (_, sha256_29k) = vector("$pbkdf2-sha256$", "29000");
    let (_, sha256_1k) = vector("$pbkdf2-sha256$", "1000");
    let (_, sha512_25k) = vector("$pbkdf2-sha512$", "25000");
    let (_, sha512_1k) = vector("$pbkdf2-sha512$", "1000");
    let (_, dj_29k) = vector("pbkdf2_sha256$", "29000");
    let c = cost_estimate;
    assert!(c(dove_5000) > c(dove_1000));
    assert!(c(sha512_1k) > c(sha256_1k), "a SHA-512 round costs more");
    assert!(c(sha256_29k) > c(sha256_1k));
    assert_eq!(c(sha256_29k), c(dj_29k), "Django's PBKDF2 is the same work");
    // Dovecot's default (5000 rounds) is cheap enough inline, as SHA512-CRYPT's 5000; passlib's
    // and Django's defaults (25000-1000000 rounds) go to the thread pool.
    assert!(!is_costly(dove_5000));
    assert!(
        c(dove_5000)
            <= c("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1")
                + 1
    );
    for s in [sha1_131k, sha256_29k, sha512_25k, dj_29k] {
        assert!(is_costly(s), "{s}");
    }
    let bcrypt = |cost: u32| format!("$2y${cost:02}$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu");
    assert!(c(sha256_29k) < c(&bcrypt(10)), "passlib's default < bcrypt 10");
    let django_5 = "pbkdf2_sha256$1000000$abcd$vmOQ5A6mrO1Z3R1vMDBYDrBOAPWyG4lh9/lkqINLfZU=";
    assert!(c(django_5) > c(&bcrypt(10)), "Django 5's million rounds > bcrypt 10");
    for &(_, s, _) in VECTORS {
        assert_eq!(is_costly(s), c(s) > 1000, "{s}");
    }
}

/// Each truncation of a vector is an error or a mismatch, never a match.
#[test]
fn truncated_vectors_never_match() {
    for &(password, stored, _) in VECTORS.iter().filter(|v| v.1.contains("$1000$")) {
        for end in (0..stored.len()).filter(|&i| stored.is_char_boundary(i)) {
            assert_ne!(verify(&stored[..end], password.as_bytes()), Ok(true), "{:?}", &stored[..end]);
        }
    }
}

/// Prints measured verification times next to `cost_estimate` (by hand, see `cost_estimate_calibration`
/// in tests.rs: `cargo test --release --lib pbkdf2_cost_calibration -- --ignored --nocapture`).
#[test]
#[ignore]
fn pbkdf2_cost_calibration() {
    let cases = [
        vector("{PBKDF2}$1$", "1000").1.replace("$1000$", "$100000$"),
        vector("$pbkdf2$", "1000").1.replace("$1000$", "$100000$"),
        vector("$pbkdf2-sha256$", "1000").1.replace("$1000$", "$100000$"),
        vector("$pbkdf2-sha512$", "1000").1.replace("$1000$", "$100000$"),
        "$2y$10$DKiSe52AlfGs4vE7ewH0m.mO8uCKPKtoOXvwISKBWxBnEyMMTOwxu".to_string(),
        "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"
            .to_string(),
    ];
    for stored in &cases {
        let n = 5;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let _ = verify(stored, b"wrong");
        }
        let us = t.elapsed().as_micros() / n;
        eprintln!("{:>8} µs measured {:>8} estimated  {}", us, cost_estimate(stored), &stored[..stored.len().min(40)]);
    }
}
