//! The htpasswd / Dovecot passwd-file parser, whole files and single lines. Invariants: no
//! panic; a parsed user name is not empty and has no ':' or control character; the file parser
//! agrees with the line parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_mail_auth_module::store::passwd_file;

fuzz_target!(|data: &[u8]| {
    let (users, _notices) = passwd_file::parse("fuzz", data);
    for name in users.keys() {
        assert!(!name.is_empty() && !name.contains(':'), "bad user name {name:?}");
        assert!(!name.chars().any(char::is_control), "control character in {name:?}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            let mut warnings = Vec::new();
            if let Ok((name, _)) = passwd_file::parse_line(line, &mut warnings) {
                assert!(!name.contains(':'));
            }
        }
    }
});
