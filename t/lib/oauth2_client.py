#!/usr/bin/env python3
"""OAuth 2.0 SASL logins with Python's imaplib and smtplib (written for this project).

usage: oauth2_client.py ACTION HOST PORT USER TOKEN
  imap-xoauth2      AUTHENTICATE XOAUTH2 (imaplib), then SELECT INBOX
  imap-oauthbearer  AUTHENTICATE OAUTHBEARER (RFC 7628 gs2 header with a=USER)
  smtp-xoauth2      AUTH XOAUTH2 (smtplib, initial response)
  smtp-oauthbearer  AUTH OAUTHBEARER (smtplib, initial response)
  pop3-xoauth2, pop3-oauthbearer
                    AUTH MECH with the initial response (poplib has no AUTH: by hand), STAT
                    (freenginx 1.27.1's POP3 command buffer is 128 bytes: too small for a JWT)
A server challenge after the token is the RFC 7628 error: it is printed (base64-decoded) as
"challenge=<json>" and answered as the RFC says (XOAUTH2: an empty line; OAUTHBEARER: ^A).
Prints one line: "OK <reply>" or "FAIL [challenge=<json>] <reply>"; exit 0 on OK, 1 on a
refusal, 2 on any other error. Loopback only.
"""
import base64
import imaplib
import poplib
import smtplib
import sys


def initial(mech, user, token):
    if mech == "XOAUTH2":
        return "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)
    u = user.replace("=", "=3D").replace(",", "=2C")
    return "n,a=%s,\x01host=127.0.0.1\x01auth=Bearer %s\x01\x01" % (u, token)


class Mech:
    """The SASL exchange: the initial response, then the answer to an error challenge."""

    def __init__(self, mech, user, token):
        self.mech, self.user, self.token = mech, user, token
        self.calls = 0
        self.challenge = None

    def __call__(self, challenge):
        self.calls += 1
        if self.calls == 1:
            return initial(self.mech, self.user, self.token)
        self.challenge = challenge.decode() if isinstance(challenge, bytes) else challenge
        return "" if self.mech == "XOAUTH2" else "\x01"


def main():
    action, host, port, user, token = sys.argv[1:6]
    if host not in ("127.0.0.1", "::1"):
        print("FAIL refusing non-loopback host")
        return 2
    proto, mech = action.split("-")
    mech = mech.upper()
    m = Mech(mech, user, token)
    fail = lambda r: print("FAIL " + ("challenge=%s " % m.challenge if m.challenge is not None else "") + r)
    try:
        if proto == "imap":
            c = imaplib.IMAP4(host, int(port), timeout=15)
            try:
                typ, data = c.authenticate(mech, lambda ch: m(ch).encode())
            except imaplib.IMAP4.error as e:
                fail(str(e))
                return 1
            typ, data = c.select("INBOX")
            print("OK %s %s" % (typ, data))
            c.logout()
            return 0
        if proto == "pop3":
            c = poplib.POP3(host, int(port), timeout=15)
            b64 = lambda v: base64.b64encode(v.encode()).decode()
            try:
                r = c._shortcmd("AUTH %s %s" % (mech, b64(m(None))))
                if r.startswith(b"+ "):
                    r = c._shortcmd(b64(m(base64.b64decode(r[2:]))))
            except poplib.error_proto as e:
                fail(e.args[0].decode(errors="replace") if isinstance(e.args[0], bytes) else str(e))
                return 1
            print("OK %s %s" % (r.decode(errors="replace"), c.stat()))
            c.quit()
            return 0
        c = smtplib.SMTP(host, int(port), timeout=15)
        c.ehlo("client.example")
        try:
            # smtplib calls the object with None for the initial response, then with each
            # decoded challenge
            code, resp = c.auth(mech, lambda ch=None: m(ch), initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as e:
            fail("%d %s" % (e.smtp_code, e.smtp_error.decode(errors="replace")))
            return 1
        print("OK %d %s" % (code, resp.decode(errors="replace")))
        c.quit()
        return 0
    except Exception as e:  # noqa: BLE001 - any other error is exit 2
        print("FAIL error %s: %s" % (type(e).__name__, e))
        return 2


sys.exit(main())
