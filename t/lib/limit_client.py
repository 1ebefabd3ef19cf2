#!/usr/bin/env python3
"""One login through nginx mail from a chosen loopback source address (Python's imaplib or
poplib, the socket bound to SRC before connecting): the limiter sees SRC as Client-IP.

usage: limit_client.py SRC PROTO PORT USER PASSWORD
  SRC:   a 127.0.0.0/8 address (Linux answers every one of them on lo)
  PROTO: imap (LOGIN) | pop3 (USER/PASS)
Prints one line: "OK ..." or "FAIL ..."; exit 0 on OK, 1 on a refused login, 2 on any other
error. Connects to 127.0.0.1 only.
"""
import imaplib
import poplib
import socket
import sys


def connect(src, port):
    return socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(src, 0))


class IMAP(imaplib.IMAP4):
    def __init__(self, src, port):
        self.src = src
        super().__init__("127.0.0.1", port, timeout=20)

    def _create_socket(self, timeout=None):
        return connect(self.src, self.port)


class POP3(poplib.POP3):
    def __init__(self, src, port):
        self.src = src
        super().__init__("127.0.0.1", port, timeout=20)

    def _create_socket(self, timeout):
        return connect(self.src, self.port)


def main():
    src, proto, port, user, password = sys.argv[1:6]
    if not src.startswith("127."):
        print("FAIL refusing a non-loopback source")
        return 2
    port = int(port)
    try:
        if proto == "imap":
            c = IMAP(src, port)
            try:
                typ, data = c.login(user, password)
                c.logout()
            except imaplib.IMAP4.error as e:
                print("FAIL", e)
                return 1
            print("OK", typ, data)
            return 0
        if proto == "pop3":
            c = POP3(src, port)
            try:
                c.user(user)
                r = c.pass_(password)
                c.quit()
            except poplib.error_proto as e:
                print("FAIL", e)
                return 1
            print("OK", r)
            return 0
    except Exception as e:  # connection closed, protocol error ...
        print("FAIL", type(e).__name__, e)
        return 2
    print("FAIL unknown protocol")
    return 2


if __name__ == "__main__":
    sys.exit(main())
