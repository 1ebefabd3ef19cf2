#!/usr/bin/env bash
# Prints the PBKDF2 vectors of src/scheme/pbkdf2_tests.rs as Rust lines, made by the real tools:
#   doveadm pw -s PBKDF2 (dovecot-core 2.3) and Debian's python3-passlib (1.7.4).
# Each line: (password, stored value, the exact command that made it; PW stands for the password).
# Rounds stay low (1000-5000) so the tests are quick, plus one at each tool's default.
# Debian's python3 is named by path: a pyenv/venv python3 earlier in PATH lacks passlib.
set -euo pipefail
py=/usr/bin/python3
dove() { doveadm -o stats_writer_socket_path= pw "$@"; }
rs() { # password stored command -> a Rust tuple (JSON strings are valid Rust string literals here)
  "$py" -c 'import json,sys; print("    (%s, %s, %s)," % tuple(json.dumps(a, ensure_ascii=False) for a in sys.argv[1:]))' "$@"
}
pl() { # handler, using() arguments, password
  "$py" -c 'import sys; from passlib import hash as h; print(eval("h." + sys.argv[1] + ".using(" + sys.argv[2] + ")").hash(sys.argv[3]))' "$1" "$2" "$3"
}
for pw in 'secret' 'p w%d:é' "q'\"\\ Ünï €🔑"; do
  rs "$pw" "$(dove -s PBKDF2 -p "$pw")" "doveadm pw -s PBKDF2 -p PW"
  rs "$pw" "$(dove -s PBKDF2 -r 1000 -p "$pw")" "doveadm pw -s PBKDF2 -r 1000 -p PW"
  for handler in pbkdf2_sha1 pbkdf2_sha256 pbkdf2_sha512 django_pbkdf2_sha1 django_pbkdf2_sha256; do
    rs "$pw" "$(pl $handler 'rounds=1000' "$pw")" "python3 -c 'from passlib.hash import $handler as h; print(h.using(rounds=1000).hash(PW))'"
  done
done
for handler in pbkdf2_sha1 pbkdf2_sha256 pbkdf2_sha512 django_pbkdf2_sha1 django_pbkdf2_sha256; do
  rs secret "$(pl $handler '' secret)" "python3 -c 'from passlib.hash import $handler as h; print(h.hash(PW))'"
done
# Mailu (1.x) stores passlib's hash behind a Dovecot-style scheme name: '{PBKDF2}' + pbkdf2_sha512.
rs secret "{PBKDF2}$(pl pbkdf2_sha512 'rounds=1000' secret)" \
  "python3 -c 'from passlib.hash import pbkdf2_sha512 as h; print(\"{PBKDF2}\" + h.using(rounds=1000).hash(PW))'"
# passlib with other salt sizes (none, 1 byte, its 1024-byte maximum).
for n in 0 1 1024; do
  rs secret "$(pl pbkdf2_sha256 "rounds=1000, salt_size=$n" secret)" \
    "python3 -c 'from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=1000, salt_size=$n).hash(PW))'"
done
