#!/usr/bin/env python3
"""A small RFC 7662 introspection endpoint for the tests (written for this project).

usage: oauth2_introspect.py PORT DB LOG CLIENT_ID CLIENT_SECRET
POST /introspect with HTTP Basic CLIENT_ID:CLIENT_SECRET (RFC 6749 2.3.1 form-encoded) and a
form body token=...: the answer is DB's entry for the token (DB, a JSON object token -> answer,
is read at each request), else {"active": false}. Wrong client credentials: 401
invalid_client. Each request is logged to LOG as one line: "<status> <token>". Loopback only.
"""
import base64
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, db, log, client_id, secret = sys.argv[1:6]
want = "Basic " + base64.b64encode(
    ("%s:%s" % (urllib.parse.quote_plus(client_id), urllib.parse.quote_plus(secret))).encode()
).decode()


class H(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        token = form.get("token", [""])[0]
        ok_form = (
            self.path == "/introspect"
            and form.get("token_type_hint") == ["access_token"]
            and self.headers.get("Content-Type") == "application/x-www-form-urlencoded"
        )
        if self.headers.get("Authorization") != want:
            status, body = 401, {"error": "invalid_client"}
        elif not ok_form:
            status, body = 400, {"error": "invalid_request"}
        else:
            with open(db) as f:
                status, body = 200, json.load(f).get(token, {"active": False})
        with open(log, "a") as f:
            f.write("%d %s\n" % (status, token))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()
