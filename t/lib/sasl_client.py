#!/usr/bin/env python3
"""Real clients for the tests (Python's poplib, imaplib, smtplib; written here).

usage: sasl_client.py ACTION HOST PORT ARGS...
  pop3-apop USER PASS              APOP (poplib.apop, digest of the greeting's timestamp)
  pop3-cram USER PASS              AUTH CRAM-MD5 (RFC 2195, done by hand: poplib has none)
  imap-cram USER PASS              AUTHENTICATE CRAM-MD5 (imaplib.login_cram_md5)
  smtp-cram USER PASS              AUTH CRAM-MD5 (smtplib)
  imaps-external CA CERT KEY AUTHZ IMAPS with a client certificate, AUTHENTICATE EXTERNAL;
                                   CERT "-" = no certificate; AUTHZ "-" = empty identity
  smtp-send FROM TO [USER PASS]    one message (MAIL FROM/RCPT TO/DATA), after AUTH PLAIN
                                   when USER is given
  imap-fetch USER PASS [TLS CA]    LOGIN, SELECT INBOX, FETCH 1 (BODY[]), LOGOUT; prints the
                                   message; TLS: plain (default) | starttls | imaps, the
                                   server certificate checked against CA
  pop3-retr USER PASS [apop]       USER/PASS (or APOP), STAT, RETR 1, QUIT; prints the message
Then, for IMAP, SELECT INBOX; for POP3, STAT. Prints one line: "OK <reply>" or
"FAIL <reply>"; exit 0 on OK, 1 on a refusal, 2 on any other error. Loopback only.
"""
import base64
import hashlib
import hmac
import imaplib
import poplib
import smtplib
import ssl
import sys


def pop3_cram(c, user, password):
    chal = c._shortcmd("AUTH CRAM-MD5")
    if not chal.startswith(b"+ "):
        raise poplib.error_proto(chal)
    challenge = base64.b64decode(chal[2:])
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return c._shortcmd(base64.b64encode((user + " " + digest).encode()).decode())


def main():
    action, host, port = sys.argv[1:4]
    args = sys.argv[4:]
    if host not in ("127.0.0.1", "::1"):
        print("FAIL refusing non-loopback host")
        return 2
    port = int(port)
    try:
        if action in ("pop3-apop", "pop3-cram"):
            c = poplib.POP3(host, port, timeout=15)
            try:
                r = c.apop(*args) if action == "pop3-apop" else pop3_cram(c, *args)
                c.stat()
                c.quit()
            except poplib.error_proto as e:
                print("FAIL", e)
                return 1
            print("OK", r)
            return 0
        if action == "imap-fetch":
            user, password = args[:2]
            mode = args[2] if len(args) > 2 else "plain"
            ctx = ssl.create_default_context(cafile=args[3]) if mode != "plain" else None
            if mode == "imaps":
                c = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=15)
            else:
                c = imaplib.IMAP4(host, port, timeout=15)
                if mode == "starttls":
                    c.starttls(ssl_context=ctx)
            try:
                c.login(user, password)
                typ, count = c.select("INBOX")
                typ, data = c.fetch("1", "(BODY[])")
                c.logout()
            except imaplib.IMAP4.error as e:
                print("FAIL", e)
                return 1
            print("OK", count[0].decode(), "message(s)")
            print(data[0][1].decode(errors="replace"))
            return 0
        if action == "pop3-retr":
            user, password = args[:2]
            c = poplib.POP3(host, port, timeout=15)
            try:
                if len(args) > 2 and args[2] == "apop":
                    c.apop(user, password)
                else:
                    c.user(user)
                    c.pass_(password)
                count, _ = c.stat()
                _, lines, _ = c.retr(1)
                c.quit()
            except poplib.error_proto as e:
                print("FAIL", e)
                return 1
            print("OK", count, "message(s)")
            print(b"\n".join(lines).decode(errors="replace"))
            return 0
        if action in ("imap-cram", "imaps-external"):
            if action == "imap-cram":
                c = imaplib.IMAP4(host, port, timeout=15)
            else:
                ca, cert, key, authz = args
                ctx = ssl.create_default_context(cafile=ca)
                if cert != "-":
                    ctx.load_cert_chain(cert, key)
                c = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=15)
            try:
                if action == "imap-cram":
                    typ, data = c.login_cram_md5(*args)
                else:
                    ident = b"" if authz == "-" else authz.encode()
                    typ, data = c.authenticate("EXTERNAL", lambda _: ident)
                c.select("INBOX")
                c.logout()
            except imaplib.IMAP4.error as e:
                print("FAIL", e)
                return 1
            print("OK", typ, data)
            return 0
        if action in ("smtp-cram", "smtp-send"):
            c = smtplib.SMTP(host, port, timeout=15)
            try:
                c.ehlo("client.test")
                if action == "smtp-cram":
                    c.user, c.password = args[:2]
                    code, resp = c.auth("CRAM-MD5", c.auth_cram_md5, initial_response_ok=False)
                    c.quit()
                    print("OK", code, resp)
                    return 0
                frm, to = args[:2]
                if len(args) >= 4:
                    c.login(args[2], args[3])
                refused = c.sendmail(frm, [to], "Subject: test\r\n\r\nhello from the test\r\n")
                c.quit()
            except smtplib.SMTPRecipientsRefused as e:
                code, msg = list(e.recipients.values())[0]
                print("FAIL", code, msg.decode(errors="replace"))
                return 1
            except smtplib.SMTPResponseException as e:
                print("FAIL", e.smtp_code, e.smtp_error.decode(errors="replace"))
                return 1
            print("OK", refused)
            return 0
    except Exception as e:  # connection closed, TLS refused, protocol error ...
        print("FAIL", type(e).__name__, e)
        return 2
    print("FAIL unknown action")
    return 2


if __name__ == "__main__":
    sys.exit(main())
