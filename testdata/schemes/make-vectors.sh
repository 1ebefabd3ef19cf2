#!/usr/bin/env bash
# Regenerates vectors.tsv with the real tools:
#   htpasswd (apache2-utils 2.4), openssl passwd (OpenSSL 3), doveadm pw (dovecot-core 2.3),
#   perl's crypt() (libxcrypt, Debian's libcrypt1) for the bcrypt $2a$/$2b$ spellings and
#   crypt(3) itself.
# Each line: scheme <TAB> password <TAB> stored value <TAB> the exact command that made it
# (PW stands for the password column). Lines whose scheme starts with "unsupported:" are real
# tool output that we do not verify (yet): verify() must return Err for them, never Ok(true).
# Passwords cover spaces, '%', ':', quotes and UTF-8 (2- and 4-byte). bcrypt stays at cost 4-6
# so the tests are quick, plus one cost-10 `htpasswd -B`.
# Run from anywhere; writes next to this script.
set -euo pipefail
cd "$(dirname "$0")"
out=vectors.tsv
: > "$out"
add() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$out"; }
# -o stats_writer_socket_path= keeps doveadm from looking for a running dovecot's stats socket.
dove() { doveadm -o stats_writer_socket_path= pw "$@"; }
# htpasswd -n prints "user:hash"; keep the hash.
htp() { htpasswd "$@" | head -n1 | cut -d: -f2-; }
# 22 random characters of bcrypt's alphabet; crypt() canonicalises the last one.
bf_salt() { LC_ALL=C tr -dc './A-Za-z0-9' < /dev/urandom | head -c 22; }
# crypt(3) through perl: perl -e 'print crypt($ARGV[0], $ARGV[1])' PW SETTING
pcrypt() { perl -e 'print crypt($ARGV[0], $ARGV[1])' "$1" "$2"; }

for pw in 'secret' 'p w%d:é' "q'\"\\ Ünï €🔑"; do
  # --- Apache htpasswd
  add bcrypt "$pw" "$(htp -nbB -C 5 u "$pw")" "htpasswd -nbB -C 5 u PW"
  add apr1 "$pw" "$(htp -nbm u "$pw")" "htpasswd -nbm u PW"
  add SHA "$pw" "$(htp -nbs u "$pw")" "htpasswd -nbs u PW"
  add sha256-crypt "$pw" "$(htp -nb2 u "$pw")" "htpasswd -nb2 u PW"
  add sha512-crypt "$pw" "$(htp -nb5 u "$pw")" "htpasswd -nb5 u PW"
  add sha512-crypt "$pw" "$(htp -nb5 -r 7000 u "$pw")" "htpasswd -nb5 -r 7000 u PW"
  # --- openssl passwd
  add md5-crypt "$pw" "$(openssl passwd -1 "$pw")" "openssl passwd -1 PW"
  add apr1 "$pw" "$(openssl passwd -apr1 "$pw")" "openssl passwd -apr1 PW"
  add sha256-crypt "$pw" "$(openssl passwd -5 "$pw")" "openssl passwd -5 PW"
  add sha512-crypt "$pw" "$(openssl passwd -6 "$pw")" "openssl passwd -6 PW"
  # --- crypt(3) (libxcrypt) for the other bcrypt spellings and explicit rounds
  add bcrypt "$pw" "$(pcrypt "$pw" "\$2a\$04\$$(bf_salt)")" "perl crypt(PW, '\$2a\$04\$' + 22 random salt chars)"
  add bcrypt "$pw" "$(pcrypt "$pw" "\$2b\$06\$$(bf_salt)")" "perl crypt(PW, '\$2b\$06\$' + 22 random salt chars)"
  add sha256-crypt "$pw" "$(pcrypt "$pw" '$5$rounds=1000$sAlT5678')" "perl crypt(PW, '\$5\$rounds=1000\$sAlT5678')"
  add sha512-crypt "$pw" "$(pcrypt "$pw" '$6$rounds=5001$0123456789abcdef')" "perl crypt(PW, '\$6\$rounds=5001\$0123456789abcdef')"
  # --- doveadm pw (Dovecot's own {SCHEME} forms)
  for s in SSHA SSHA256 SSHA512 SHA SHA1 SHA256 SHA512 SMD5 PLAIN-MD5 LDAP-MD5 \
           PLAIN CLEARTEXT CLEAR SHA512-CRYPT SHA256-CRYPT MD5-CRYPT MD5 CRYPT ARGON2I ARGON2ID \
           SHA.HEX SHA256.HEX SHA512.HEX SSHA.HEX SSHA256.HEX SSHA512.HEX SMD5.HEX \
           PLAIN-MD5.B64 LDAP-MD5.HEX PLAIN.B64 PLAIN.HEX; do
    add "$s" "$pw" "$(dove -s "$s" -p "$pw")" "doveadm pw -s $s -p PW"
  done
  add BLF-CRYPT "$pw" "$(dove -s BLF-CRYPT -r 5 -p "$pw")" "doveadm pw -s BLF-CRYPT -r 5 -p PW"
  add SHA512-CRYPT "$pw" "$(dove -s SHA512-CRYPT -r 6000 -p "$pw")" "doveadm pw -s SHA512-CRYPT -r 6000 -p PW"
  add SHA256-CRYPT "$pw" "$(dove -s SHA256-CRYPT -r 6000 -p "$pw")" "doveadm pw -s SHA256-CRYPT -r 6000 -p PW"
  # Dovecot guesses hex for unsalted digests whose length is twice the digest size:
  # {SHA} and {MD5} (PLAIN-MD5 when not $1$) with a hex value.
  add SHA-hex-guessed "$pw" "{SHA}$(dove -s SHA.HEX -p "$pw" | cut -d} -f2-)" "doveadm pw -s SHA.HEX -p PW, prefix changed to {SHA}"
  add MD5-hex "$pw" "{MD5}$(dove -s PLAIN-MD5 -p "$pw" | cut -d} -f2-)" "doveadm pw -s PLAIN-MD5 -p PW, prefix changed to {MD5}"
  # The PHC string without Dovecot's prefix (as other argon2 tools write it).
  add argon2id "$pw" "$(dove -s ARGON2ID -p "$pw" | sed 's/^{ARGON2ID}//')" "doveadm pw -s ARGON2ID -p PW, {ARGON2ID} prefix removed"
  # doveadm 2.3 has no PLAIN-B64; this is the same base64 it would write.
  add PLAIN-B64 "$pw" "{PLAIN-B64}$(printf %s "$pw" | base64 -w0)" "printf %s PW | base64 -w0, prefixed {PLAIN-B64}"
done
add bcrypt 'secret' "$(htp -nbB -C 10 u secret)" "htpasswd -nbB -C 10 u secret"
add sha512-crypt 'secret' "$(openssl passwd -6 -salt saltsalt secret)" "openssl passwd -6 -salt saltsalt secret"
add md5-crypt 'secret' "$(openssl passwd -1 -salt abc secret)" "openssl passwd -1 -salt abc secret"
add apr1 'x' "$(openssl passwd -apr1 -salt abc x)" "openssl passwd -apr1 -salt abc x"
add PLAIN '' "$(dove -s PLAIN -p '')" "doveadm pw -s PLAIN -p ''"

long=$(printf 'k%.0s' $(seq 80))   # longer than an HMAC block: the key is hashed first
# Dovecot's HMAC-MD5 key states: a plain password checks against them, and so does a CRAM-MD5
# response (src/scheme/cram.rs).
add CRAM-MD5 'secret' "$(dove -s CRAM-MD5 -p secret)" "doveadm pw -s CRAM-MD5 -p secret"
add HMAC-MD5 'secret' "$(dove -s HMAC-MD5 -p secret)" "doveadm pw -s HMAC-MD5 -p secret"
add CRAM-MD5 'tanstaaftanstaaf' "$(dove -s CRAM-MD5 -p tanstaaftanstaaf)" "doveadm pw -s CRAM-MD5 -p tanstaaftanstaaf"
add CRAM-MD5 "$long" "$(dove -s CRAM-MD5 -p "$long")" "doveadm pw -s CRAM-MD5 -p <80-byte password>"

# Dovecot's PBKDF2 (the other tools' PBKDF2 forms: make-pbkdf2-vectors.sh).
add PBKDF2 'secret' "$(dove -s PBKDF2 -p secret)" "doveadm pw -s PBKDF2 -p secret"

# Real tool output we do not verify.
add unsupported:DIGEST-MD5 'secret' "$(dove -s DIGEST-MD5 -u u@example.org -p secret)" "doveadm pw -s DIGEST-MD5 -u u@example.org -p secret"
add unsupported:SCRAM-SHA-1 'secret' "$(dove -s SCRAM-SHA-1 -p secret)" "doveadm pw -s SCRAM-SHA-1 -p secret"
add unsupported:SCRAM-SHA-256 'secret' "$(dove -s SCRAM-SHA-256 -p secret)" "doveadm pw -s SCRAM-SHA-256 -p secret"
add unsupported:PLAIN-MD4 'secret' "$(dove -s PLAIN-MD4 -p secret)" "doveadm pw -s PLAIN-MD4 -p secret"
add unsupported:PLAIN-TRUNC 'secret' "$(dove -s PLAIN-TRUNC -p secret)" "doveadm pw -s PLAIN-TRUNC -p secret"
add unsupported:DES-CRYPT 'secret' "$(dove -s DES-CRYPT -p secret)" "doveadm pw -s DES-CRYPT -p secret"
add unsupported:OTP 'secret' "$(dove -s OTP -p secret)" "doveadm pw -s OTP -p secret"
add unsupported:DES 'secret' "$(htp -nbd u secret)" "htpasswd -nbd u secret"
add unsupported:htpasswd-plaintext 'secret' "$(htp -nbp u secret)" "htpasswd -nbp u secret"
add unsupported:yescrypt 'secret' "$(pcrypt secret '$y$j9T$abcdefghijklmnop')" "perl crypt('secret', '\$y\$j9T\$abcdefghijklmnop')"
add unsupported:bcrypt-2x 'secret' "$(pcrypt secret "\$2x\$04\$$(bf_salt)")" "perl crypt('secret', '\$2x\$04\$' + 22 random salt chars)"
echo "wrote $(wc -l < "$out") vectors to $PWD/$out"
