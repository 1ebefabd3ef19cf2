#!/usr/bin/env bash
# Regenerates vectors.tsv with the real tools: htpasswd (apache2-utils), openssl, doveadm
# (dovecot-core). Each line: scheme <TAB> password <TAB> stored hash <TAB> the command that made it.
# Passwords cover spaces, '%', ':' and UTF-8. Run from this directory.
set -euo pipefail
out=vectors.tsv
: > "$out"
add() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$out"; }
doveadm() { command doveadm -o stats_writer_socket_path= "$@"; }

for pw in 'secret' 'p w%d:é'; do
  add bcrypt "$pw" "$(htpasswd -nbB -C 5 u "$pw" | cut -d: -f2-)" "htpasswd -nbB -C 5 u PW"
  add apr1 "$pw" "$(htpasswd -nbm u "$pw" | cut -d: -f2-)" "htpasswd -nbm u PW"
  add sha "$pw" "$(htpasswd -nbs u "$pw" | cut -d: -f2-)" "htpasswd -nbs u PW"
  add md5-crypt "$pw" "$(openssl passwd -1 "$pw")" "openssl passwd -1 PW"
  add apr1 "$pw" "$(openssl passwd -apr1 "$pw")" "openssl passwd -apr1 PW"
  add sha256-crypt "$pw" "$(openssl passwd -5 "$pw")" "openssl passwd -5 PW"
  add sha512-crypt "$pw" "$(openssl passwd -6 "$pw")" "openssl passwd -6 PW"
  for s in SSHA SSHA256 SSHA512 SHA SHA256 SHA512 SMD5 PLAIN-MD5 LDAP-MD5 PLAIN CLEARTEXT \
           SHA512-CRYPT SHA256-CRYPT MD5-CRYPT ARGON2I ARGON2ID SSHA512.HEX; do
    add "$s" "$pw" "$(doveadm pw -s "$s" -p "$pw")" "doveadm pw -s $s -p PW"
  done
  add PLAIN-B64 "$pw" "{PLAIN-B64}$(printf %s "$pw" | base64)" "printf %s PW | base64 (doveadm 2.3 cannot make PLAIN-B64)"
  add BLF-CRYPT "$pw" "$(doveadm pw -s BLF-CRYPT -r 5 -p "$pw")" "doveadm pw -s BLF-CRYPT -r 5 -p PW"
  add SHA512-CRYPT "$pw" "$(doveadm pw -s SHA512-CRYPT -r 6000 -p "$pw")" "doveadm pw -s SHA512-CRYPT -r 6000 -p PW"
done
add bcrypt 'secret' "$(htpasswd -nbB -C 10 u secret | cut -d: -f2-)" "htpasswd -nbB -C 10 u secret"
add sha512-crypt 'secret' "$(openssl passwd -6 -salt saltsalt secret)" "openssl passwd -6 -salt saltsalt secret"
# Recorded for a later issue (CRAM-MD5 login): not a password verification scheme here.
add unsupported:CRAM-MD5 'secret' "$(doveadm pw -s CRAM-MD5 -p secret)" "doveadm pw -s CRAM-MD5 -p secret"
add unsupported:DES 'secret' "$(htpasswd -nbd u secret | cut -d: -f2-)" "htpasswd -nbd u secret"
