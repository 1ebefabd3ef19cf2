#!/bin/sh
# Regenerates the unit tests' JWKS and tokens (keys: openssl genrsa/ecparam/genpkey; see
# t/lib/oauth2_token.py). Times are fixed: the tests verify at now = 1700000000.
set -e
cd "$(dirname "$0")"
T=../../../t/lib/oauth2_token.py
PY=${PY:-/usr/bin/python3}
$PY $T jwks r1=rsa.pem e1=ec.pem d1=ed.pem:EdDSA h1=oct:hs.secret > jwks.json
$PY $T jwks r2=rsa2.pem > jwks2.json
C='{"iss":"https://idp.example","aud":"mail","exp":1700003600,"nbf":1699999000,"email":"Alice@Example.org","scope":"openid mail.access"}'
{
  echo "rs256 $($PY $T mint rsa.pem RS256 r1 "$C")"
  echo "ps256 $($PY $T mint rsa.pem PS256 r1 "$C")"
  echo "es256 $($PY $T mint ec.pem ES256 e1 "$C")"
  echo "eddsa $($PY $T mint ed.pem EdDSA d1 "$C")"
  echo "hs256 $($PY $T mint hs.secret HS256 h1 "$C")"
  echo "nokid $($PY $T mint ec.pem ES256 - "$C")"
  echo "rs256-r2 $($PY $T mint rsa2.pem RS256 r2 "$C")"
  echo "wrongkey $($PY $T mint rsa2.pem RS256 r1 "$C")"
  echo "none $($PY $T mint rsa.pem none r1 "$C")"
  echo "confusion $($PY $T mint rsa.pem HS256-CONFUSION r1 "$C")"
  echo "es-as-rs $($PY $T mint rsa.pem RS256 e1 "$C")"
  echo "unknownkid $($PY $T mint rsa.pem RS256 zz "$C")"
  echo "noscope $($PY $T mint rsa.pem RS256 r1 '{"iss":"https://idp.example","aud":["x","mail"],"exp":1700003600,"email":"alice@example.org"}')"
  echo "noexp $($PY $T mint rsa.pem RS256 r1 '{"iss":"https://idp.example","aud":"mail","email":"alice@example.org"}')"
  echo "sub $($PY $T mint rsa.pem RS256 r1 '{"iss":"https://idp.example","aud":"mail","exp":1700003600,"sub":"bob","scp":["mail.access"]}')"
} > tokens.txt
