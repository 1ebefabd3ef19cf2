//! Argon2i and Argon2id PHC strings (`$argon2id$v=19$m=65536,t=3,p=1$salt$hash`), bare or
//! behind Dovecot's `{ARGON2I}` / `{ARGON2ID}`, on the RustCrypto `argon2` crate (its verifier
//! compares outputs in constant time).
//!
//! The stored parameters decide the work, so they are bounded before anything is allocated:
//! memory at most 1 GiB (libsodium's "sensitive" level, above anything Dovecot writes), at most
//! 1024 passes and 64 lanes. Beyond that the hash is refused as malformed rather than letting a
//! corrupt line make a worker allocate without bound. Argon2d is not a password scheme here.

#![forbid(unsafe_code)]

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2 as Hasher, Params, Version};

use super::{malformed, SchemeError};

const MAX_M_KIB: u32 = 1024 * 1024;
const MAX_T: u32 = 1024;
const MAX_P: u32 = 64;

pub(super) struct Argon2<'a> {
    hash: PasswordHash<'a>,
    alg: Algorithm,
    version: Version,
    params: Params,
}

pub(super) fn parse(s: &str) -> Result<Argon2<'_>, SchemeError> {
    let alg = if s.starts_with("$argon2id$") {
        Algorithm::Argon2id
    } else if s.starts_with("$argon2i$") {
        Algorithm::Argon2i
    } else {
        return Err(SchemeError::Unknown(format!("${}$", s[1..].split('$').next().unwrap_or(""))));
    };
    let bad = |why: &str| malformed(format!("{} ({why})", alg.as_str().to_ascii_uppercase()));
    let hash = PasswordHash::new(s).map_err(|e| bad(&e.to_string()))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(bad("no salt or hash"));
    }
    let version = match hash.version {
        None | Some(0x10) => Version::V0x10,
        Some(0x13) => Version::V0x13,
        Some(_) => return Err(bad("version")),
    };
    let params = Params::try_from(&hash).map_err(|e| bad(&e.to_string()))?;
    if params.m_cost() > MAX_M_KIB || params.t_cost() > MAX_T || params.p_cost() > MAX_P {
        return Err(bad("parameters beyond the limits"));
    }
    Ok(Argon2 { hash, alg, version, params })
}

impl Argon2<'_> {
    pub(super) fn is_id(&self) -> bool {
        self.alg == Algorithm::Argon2id
    }

    pub(super) fn name(&self) -> &'static str {
        if self.is_id() {
            "ARGON2ID"
        } else {
            "ARGON2I"
        }
    }

    pub(super) fn verify(&self, password: &[u8]) -> Result<bool, SchemeError> {
        let hasher = Hasher::new(self.alg, self.version, self.params.clone());
        match hasher.verify_password(password, &self.hash) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(malformed(format!("{} ({e})", self.name()))),
        }
    }

    /// Memory (KiB) times passes: the blocks one verification fills (the lanes share the
    /// memory, and this crate fills them one after the other).
    pub(super) fn work_kib(&self) -> u64 {
        u64::from(self.params.m_cost()) * u64::from(self.params.t_cost())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // doveadm pw -s ARGON2ID -p secret, {ARGON2ID} prefix removed
    const H: &str = "$argon2id$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo";

    #[test]
    fn parameters_are_bounded_before_any_work() {
        let p = parse(H).unwrap();
        assert_eq!((p.params.m_cost(), p.params.t_cost(), p.params.p_cost(), p.name()), (65536, 3, 1, "ARGON2ID"));
        let tail = "$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo";
        for params in [
            "m=4294967295,t=3,p=1",
            "m=65536,t=100000,p=1",
            "m=65536,t=3,p=1000",
            "m=1,t=3,p=1",
            "m=65536,t=0,p=1",
            "m=65536,t=3,p=1,x=2",
        ] {
            let s = format!("$argon2id$v=19${params}{tail}");
            assert!(parse(&s).is_err(), "{s}");
            // and through the public API: an error, quickly, never an allocation of 4 TiB
            assert!(super::super::verify(&s, b"secret").is_err(), "{s}");
        }
    }

    #[test]
    fn malformed_and_other_variants_are_refused() {
        for bad in [
            "$argon2id$",
            "$argon2id$v=19$m=65536,t=3,p=1",
            "$argon2id$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ",
            "$argon2id$v=18$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo",
            "$argon2id$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$!!!",
            "$argon2id$v=19$m=65536,t=3,p=1$$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo",
            "$argon2d$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo",
            "$argon2$v=19$m=65536,t=3,p=1$yJQztq/g5Y+MH/GtEQZrlQ$vRFEDsbtH7x0JUX6ud/5PklNbGAIxrMvGZLHGipvfIo",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn small_hashes_verify_and_keep_parameters() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(&super::super::random_bytes::<16>()).unwrap();
        let small = Params::new(64, 1, 1, None).unwrap();
        let d = Hasher::new(Algorithm::Argon2id, Version::V0x13, small.clone())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(d.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{d}");
        let q = parse(&d).unwrap();
        assert_eq!((q.verify(b"pw"), q.verify(b"pW")), (Ok(true), Ok(false)));
        assert_eq!(
            (q.params.m_cost(), q.params.t_cost(), q.params.p_cost(), q.work_kib()),
            (small.m_cost(), small.t_cost(), small.p_cost(), 64)
        );
    }
}
