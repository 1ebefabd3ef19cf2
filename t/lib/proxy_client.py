#!/usr/bin/env python3
"""A mail client behind a PROXY-protocol load balancer, for the tests: Python's imaplib, poplib
and smtplib over a socket that first sends a PROXY protocol v1 header, as HAProxy's
`send-proxy` does.

usage: proxy_client.py PROTO PORT CLAIMED USER PASSWORD [SOURCE]
  PROTO:   imap (LOGIN) | pop3 (USER/PASS) | smtp (AUTH PLAIN)
  PORT:    nginx's mail listener on 127.0.0.1 (with `proxy_protocol`)
  CLAIMED: the client address the header names (sent as given: "TCP6" when it has a ':')
  SOURCE:  the local address to connect from (default 127.0.0.1: the balancer)
Prints one line: "OK <server reply>" or "FAIL <server reply>"; exit 0 on OK, 1 on a refused
login, 2 on any other error. Loopback only: connects to 127.0.0.1 from a 127.0.0.0/8 address.
"""
import imaplib
import poplib
import smtplib
import socket
import sys

HOST = "127.0.0.1"


def proxied_socket(port, claimed, source, timeout):
    s = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
    family = "TCP6" if ":" in claimed else "TCP4"
    sport = s.getsockname()[1]
    s.sendall(f"PROXY {family} {claimed} {HOST} {sport} {port}\r\n".encode())
    return s


def main():
    proto, port, claimed, user, password = sys.argv[1:6]
    source = sys.argv[6] if len(sys.argv) > 6 else "127.0.0.1"
    if not source.startswith("127."):
        print("FAIL refusing a non-loopback source")
        return 2
    port = int(port)

    def sock(timeout):
        return proxied_socket(port, claimed, source, timeout)

    try:
        if proto == "imap":
            class Imap(imaplib.IMAP4):
                def _create_socket(self, timeout):
                    return sock(timeout)

            c = Imap(HOST, port, timeout=15)
            try:
                typ, data = c.login(user, password)
                c.logout()
            except imaplib.IMAP4.error as e:
                print("FAIL", e)
                return 1
            print("OK", typ, data)
            return 0
        if proto == "pop3":
            class Pop3(poplib.POP3):
                def _create_socket(self, timeout):
                    return sock(timeout)

            c = Pop3(HOST, port, timeout=15)
            try:
                c.user(user)
                r = c.pass_(password)
                c.quit()
            except poplib.error_proto as e:
                print("FAIL", e)
                return 1
            print("OK", r)
            return 0
        if proto == "smtp":
            class Smtp(smtplib.SMTP):
                def _get_socket(self, host, port_, timeout):
                    return sock(timeout)

            c = Smtp(HOST, port, timeout=15)
            try:
                c.ehlo("client.test")
                c.user, c.password = user, password
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
