#!/usr/bin/env python3
"""The usual alternative to ngx-mail-auth, for scripts/bench: an external auth_http server in
Python (threaded http.server) that answers nginx mail from the same htpasswd file.
Supports {SSHA} and {PLAIN} entries (what the benchmark uses). Loopback only. Answers HTTP/1.0
requests (nginx mail's) on a connection each, keeps HTTP/1.1 connections alive.

usage: bench-auth-server.py PORT[,unix:/path] HTPASSWD BACKEND_PORT
"""
import base64
import hashlib
import hmac
import os
import socketserver
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load(path):
    users = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#") and ":" in line:
                u, h = line.split(":", 1)
                users[u] = h.split(":", 1)[0]
    return users


def verify(stored, password):
    if stored.startswith("{SSHA}"):
        raw = base64.b64decode(stored[6:])
        digest, salt = raw[:20], raw[20:]
        return hmac.compare_digest(hashlib.sha1(password + salt).digest(), digest)
    if stored.startswith("{PLAIN}"):
        return hmac.compare_digest(stored[7:].encode(), password)
    return False


def main():
    listens, path, backend_port = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
    users = load(path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            user = urllib.parse.unquote(self.headers.get("Auth-User", ""))
            password = urllib.parse.unquote_to_bytes(self.headers.get("Auth-Pass", ""))
            stored = users.get(user)
            self.send_response(200)
            if stored is not None and verify(stored, password):
                self.send_header("Auth-Status", "OK")
                self.send_header("Auth-Server", "127.0.0.1")
                self.send_header("Auth-Port", backend_port)
            else:
                self.send_header("Auth-Status", "Invalid login or password")
                self.send_header("Auth-Wait", "3")
            self.send_header("Content-Length", "0")
            self.end_headers()

    for cls in (ThreadingHTTPServer, socketserver.ThreadingUnixStreamServer):
        cls.daemon_threads = True
        cls.request_queue_size = 1024  # not 5: a burst of connections must not wait for SYN retries
    servers = []
    for listen in listens:
        if listen.startswith("unix:"):
            if os.path.exists(listen[5:]):
                os.remove(listen[5:])
            servers.append(socketserver.ThreadingUnixStreamServer(listen[5:], Handler))
        else:
            servers.append(ThreadingHTTPServer(("127.0.0.1", int(listen)), Handler))
    threads = [threading.Thread(target=srv.serve_forever, daemon=True) for srv in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
