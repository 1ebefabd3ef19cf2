#!/usr/bin/env python3
"""JWKS documents and JWT access tokens for the OAuth 2.0 tests, from keys made by openssl.

  oauth2_token.py jwks KID=PEM[:ALG] ...        a JWKS (public parts) on stdout; an `oct`
                                                key is given as KID=oct:SECRET_FILE
  oauth2_token.py mint PEM ALG KID CLAIMS_JSON  a signed token on stdout
        ALG RS256 PS256 ES256 EdDSA: signed with the private key PEM (python3-jwt)
        ALG HS256: PEM is a secret file (HMAC)
        ALG none: unsigned (`alg: none`, empty signature)
        ALG HS256-CONFUSION: HS256 keyed with the public key PEM of the private key PEM
            (the RS/HS confusion attack)
  CLAIMS_JSON may use "exp": "+3600" / "nbf": "-60" for times relative to now.
"""
import base64
import hashlib
import hmac
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n):
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def load(pem):
    with open(pem, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def jwk(kid, spec):
    if spec.startswith("oct:"):
        with open(spec[4:], "rb") as f:
            return {"kty": "oct", "kid": kid, "k": b64(f.read().strip()), "alg": "HS256"}
    pem, _, alg = spec.partition(":")
    k = load(pem).public_key()
    out = {"kid": kid, "use": "sig"}
    if isinstance(k, rsa.RSAPublicKey):
        n = k.public_numbers()
        out.update(kty="RSA", n=uint(n.n), e=uint(n.e))
    elif isinstance(k, ec.EllipticCurvePublicKey):
        n = k.public_numbers()
        out.update(kty="EC", crv="P-256", x=b64(n.x.to_bytes(32, "big")), y=b64(n.y.to_bytes(32, "big")))
    elif isinstance(k, ed25519.Ed25519PublicKey):
        raw = k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        out.update(kty="OKP", crv="Ed25519", x=b64(raw))
    if alg:
        out["alg"] = alg
    return out


def claims_of(text):
    c = json.loads(text)
    now = int(time.time())
    for name in ("exp", "nbf", "iat"):
        v = c.get(name)
        if isinstance(v, str) and v[:1] in "+-":
            c[name] = now + int(v)
    return c


def hs(header, claims, secret):
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


def mint(pem, alg, kid, claims):
    header = {"typ": "JWT", "alg": alg}
    if kid != "-":
        header["kid"] = kid
    if alg == "none":
        return b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode()) + "."
    if alg == "HS256":
        with open(pem, "rb") as f:
            return hs(header, claims, f.read().strip())
    if alg == "HS256-CONFUSION":
        header["alg"] = "HS256"
        pub = load(pem).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hs(header, claims, pub)
    return jwt.encode(claims, load(pem), algorithm=alg, headers={"kid": kid} if kid != "-" else None)


def main():
    if sys.argv[1] == "jwks":
        keys = [jwk(*a.split("=", 1)) for a in sys.argv[2:]]
        print(json.dumps({"keys": keys}))
    elif sys.argv[1] == "mint":
        print(mint(sys.argv[2], sys.argv[3], sys.argv[4], claims_of(sys.argv[5])))
    else:
        sys.exit(__doc__)


main()
