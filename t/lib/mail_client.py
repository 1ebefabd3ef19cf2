#!/usr/bin/env python3
"""Real mail clients for the tests: Python's imaplib, poplib and smtplib.

usage: mail_client.py PROTO HOST PORT USER PASSWORD [MECH]
  PROTO: imap | pop3 | smtp
  MECH:  imap: login (LOGIN command, default) | plain (AUTHENTICATE PLAIN)
         pop3: user (USER/PASS, default) | plain (AUTH PLAIN)
         smtp: plain (default) | login
Prints one line: "OK <server reply>" or "FAIL <server reply>"; exit 0 on OK, 1 on a refused
login, 2 on any other error. Loopback only. MAIL_CLIENT_SOURCE=127.0.0.2 (a loopback address)
makes the client connect from that address.
"""
import base64
import imaplib
import os
import poplib
import smtplib
import socket
import sys

SOURCE = os.environ.get("MAIL_CLIENT_SOURCE")
if SOURCE and not SOURCE.startswith("127."):
    SOURCE = None


def connect(host, port, timeout):
    return socket.create_connection((host, port), timeout, (SOURCE, 0) if SOURCE else None)


class IMAP4(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return connect(self.host, self.port, timeout)


class POP3(poplib.POP3):
    def _create_socket(self, timeout):
        return connect(self.host, self.port, timeout)


def main():
    proto, host, port, user, password = sys.argv[1:6]
    mech = sys.argv[6] if len(sys.argv) > 6 else None
    if host not in ("127.0.0.1", "::1", "localhost"):
        print("FAIL refusing non-loopback host")
        return 2
    port = int(port)
    try:
        if proto == "imap":
            c = IMAP4(host, port, timeout=15)
            try:
                if mech == "plain":
                    typ, data = c.authenticate(
                        "PLAIN", lambda _: ("\0" + user + "\0" + password).encode())
                else:
                    typ, data = c.login(user, password)
                c.select("INBOX")
                c.logout()
            except imaplib.IMAP4.error as e:
                print("FAIL", e)
                return 1
            print("OK", typ, data)
            return 0
        if proto == "pop3":
            c = POP3(host, port, timeout=15)
            try:
                if mech == "plain":
                    raw = base64.b64encode(("\0" + user + "\0" + password).encode()).decode()
                    r = c._shortcmd("AUTH PLAIN " + raw)
                else:
                    c.user(user)
                    r = c.pass_(password)
                c.stat()
                c.quit()
            except poplib.error_proto as e:
                print("FAIL", e)
                return 1
            print("OK", r)
            return 0
        if proto == "smtp":
            c = smtplib.SMTP(host, port, timeout=15, source_address=(SOURCE, 0) if SOURCE else None)
            try:
                c.ehlo("client.test")
                c.user, c.password = user, password
                if mech == "login":
                    code, resp = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
                else:
                    code, resp = c.auth("PLAIN", c.auth_plain)
                c.quit()
            except smtplib.SMTPAuthenticationError as e:
                print("FAIL", e.smtp_code, e.smtp_error)
                return 1
            print("OK", code, resp)
            return 0
    except Exception as e:  # connection closed, protocol error ...
        print("FAIL", type(e).__name__, e)
        return 2
    print("FAIL unknown protocol")
    return 2


if __name__ == "__main__":
    sys.exit(main())
