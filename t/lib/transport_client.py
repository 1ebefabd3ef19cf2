#!/usr/bin/env python3
"""Real clients for t/mail_auth_transport.t (Python's imaplib, poplib, smtplib; written here).

usage: transport_client.py PROTO PORT USER PASSWORD [OPTIONS]
  PROTO: imap | pop3 | smtp
  --tls plain|starttls|implicit   the connection (default plain); the server certificate is
                                  checked against --ca
  --ca FILE                       the test CA
  --cert FILE --key FILE          a client certificate
  --mech MECH                     imap: login (LOGIN, default) | plain (AUTHENTICATE PLAIN)
                                  pop3: user (USER/PASS, default) | plain (AUTH PLAIN)
                                  smtp: plain (AUTH PLAIN, default) | login (AUTH LOGIN)
  --starttls-retry                log in without TLS first, then STARTTLS/STLS on the same
                                  connection and log in again
Each login attempt prints one line: "OK <reply>" or "FAIL <reply>" (the server's own text; SMTP
"CODE text"). Exit 0 if the last attempt logged in, 1 if it was refused, 2 on any other error.
SMTP commands are sent with smtplib's docmd: smtplib's auth() takes a 503 answer for success.
Loopback only.
"""
import argparse
import base64
import imaplib
import poplib
import smtplib
import ssl
import sys

HOST = "127.0.0.1"


def text(v):
    if isinstance(v, list):
        v = v[-1] if v else b""
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    return str(v)


def plain_b64(user, password):
    return base64.b64encode(("\0" + user + "\0" + password).encode()).decode()


def context(a):
    ctx = ssl.create_default_context(cafile=a.ca)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    return ctx


class Imap:
    def __init__(self, a):
        self.a = a
        if a.tls == "implicit":
            self.c = imaplib.IMAP4_SSL(HOST, a.port, ssl_context=context(a), timeout=15)
        else:
            self.c = imaplib.IMAP4(HOST, a.port, timeout=15)

    def starttls(self):
        self.c.starttls(ssl_context=context(self.a))

    def login(self):
        a = self.a
        try:
            if a.mech == "plain":
                typ, data = self.c.authenticate("PLAIN", lambda _: ("\0" + a.user + "\0" + a.password).encode())
            else:
                typ, data = self.c.login(a.user, a.password)
        except imaplib.IMAP4.error as e:
            return False, text(e.args[0] if e.args else "")
        self.c.select("INBOX")
        return True, typ + " " + text(data)

    def close(self):
        try:
            self.c.logout()
        except Exception:
            pass


class Pop3:
    def __init__(self, a):
        self.a = a
        if a.tls == "implicit":
            self.c = poplib.POP3_SSL(HOST, a.port, context=context(a), timeout=15)
        else:
            self.c = poplib.POP3(HOST, a.port, timeout=15)

    def starttls(self):
        self.c.stls(context=context(self.a))

    def login(self):
        a = self.a
        try:
            if a.mech == "plain":
                r = self.c._shortcmd("AUTH PLAIN " + plain_b64(a.user, a.password))
            else:
                self.c.user(a.user)
                r = self.c.pass_(a.password)
        except poplib.error_proto as e:
            return False, text(e.args[0] if e.args else "")
        self.c.stat()
        return True, text(r)

    def close(self):
        try:
            self.c.quit()
        except Exception:
            pass


class Smtp:
    def __init__(self, a):
        self.a = a
        if a.tls == "implicit":
            self.c = smtplib.SMTP_SSL(HOST, a.port, context=context(a), timeout=15)
        else:
            self.c = smtplib.SMTP(HOST, a.port, timeout=15)
        self.c.ehlo("client.test")

    def starttls(self):
        code, resp = self.c.starttls(context=context(self.a))
        if code != 220:
            raise RuntimeError("STARTTLS refused: %d %s" % (code, text(resp)))
        self.c.ehlo("client.test")

    def login(self):
        a = self.a
        if a.mech == "login":
            code, resp = self.c.docmd("AUTH", "LOGIN")
            if code == 334:
                code, resp = self.c.docmd(base64.b64encode(a.user.encode()).decode())
            if code == 334:
                code, resp = self.c.docmd(base64.b64encode(a.password.encode()).decode())
        else:
            code, resp = self.c.docmd("AUTH", "PLAIN " + plain_b64(a.user, a.password))
        return code == 235, "%d %s" % (code, text(resp))

    def close(self):
        try:
            self.c.quit()
        except Exception:
            pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("proto", choices=["imap", "pop3", "smtp"])
    p.add_argument("port", type=int)
    p.add_argument("user")
    p.add_argument("password")
    p.add_argument("--tls", choices=["plain", "starttls", "implicit"], default="plain")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--mech")
    p.add_argument("--starttls-retry", action="store_true")
    a = p.parse_args()
    try:
        c = {"imap": Imap, "pop3": Pop3, "smtp": Smtp}[a.proto](a)
        if a.tls == "starttls" and not a.starttls_retry:
            c.starttls()
        ok, reply = c.login()
        print("OK" if ok else "FAIL", reply, flush=True)
        if a.starttls_retry:
            c.starttls()
            ok, reply = c.login()
            print("OK" if ok else "FAIL", reply, flush=True)
        c.close()
    except Exception as e:  # connection closed, TLS refused, protocol error ...
        print("FAIL", type(e).__name__, e)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
