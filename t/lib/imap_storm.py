#!/usr/bin/env python3
"""Concurrent IMAP logins through nginx's mail proxy, for t/mail_auth_faults.t (written here).

usage: imap_storm.py HOST PORT SECONDS CONCURRENCY USER GOOD_PASSWORD BAD_PASSWORD

CONCURRENCY threads each log in again and again (imaplib: connect, LOGIN, LOGOUT) until SECONDS
have passed, alternating the good and the bad password, so half of all attempts use each.
Prints "started" at once, then at the end one JSON object:
  good_ok        good password, logged in
  good_refused   good password, NO "Invalid login or password" (must never happen)
  bad_ok         bad password, logged in (must never happen)
  bad_refused    bad password, NO "Invalid login or password"
  temporary      NO "Temporary server problem" (either password)
  other_no       any other NO/BAD answer to LOGIN
  conn_errors    connection refused/reset/closed or timed out, before or during the login
  samples        up to 20 of the unexpected outcomes, each "<seconds since start> <kind>: <error>"
  slowest        the longest attempt (connect to answer), seconds, and when it started
Loopback only.
"""
import imaplib
import json
import socket
import sys
import threading
import time


def main():
    host, port, seconds, conc, user, good, bad = sys.argv[1:8]
    if host not in ("127.0.0.1", "::1"):
        print(json.dumps({"error": "refusing a non-loopback host"}))
        return 2
    port, seconds, conc = int(port), float(seconds), int(conc)
    start = time.monotonic()
    deadline = start + seconds
    lock = threading.Lock()
    counts = dict(good_ok=0, good_refused=0, bad_ok=0, bad_refused=0, temporary=0,
                  other_no=0, conn_errors=0)
    samples = []
    slowest = [0.0, 0.0]

    def count(key, kind=None, err=None):
        with lock:
            counts[key] += 1
            if err is not None and len(samples) < 20:
                samples.append("%.2f %s: %s" % (time.monotonic() - start, kind, err))

    def worker(n):
        i = n
        while time.monotonic() < deadline:
            i += 1
            kind = "good" if i % 2 else "bad"
            began = time.monotonic()
            try:
                c = imaplib.IMAP4(host, port, timeout=15)
            except (OSError, EOFError, imaplib.IMAP4.abort) as e:
                count("conn_errors", kind, "connect: %s: %s" % (type(e).__name__, e))
                continue
            try:
                c.login(user, good if kind == "good" else bad)
            except imaplib.IMAP4.abort as e:
                # closed or reset during the login
                count("conn_errors", kind, "login: abort: %s" % e)
            except imaplib.IMAP4.error as e:
                msg = str(e)
                if "Invalid login or password" in msg:
                    count(kind + "_refused", kind, msg if kind == "good" else None)
                elif "Temporary" in msg:
                    count("temporary", kind, msg)
                else:
                    count("other_no", kind, msg)
            except (OSError, EOFError) as e:
                count("conn_errors", kind, "login: %s: %s" % (type(e).__name__, e))
            else:
                count(kind + "_ok", kind, None if kind == "good" else "logged in with a bad password")
                try:
                    c.logout()
                except (OSError, EOFError, imaplib.IMAP4.error):
                    pass
            finally:
                try:
                    c.shutdown()
                except (OSError, EOFError):
                    pass
                took = time.monotonic() - began
                with lock:
                    if took > slowest[0]:
                        slowest[:] = [took, began - start]

    print("started", flush=True)
    socket.setdefaulttimeout(15)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts["samples"] = samples
    counts["slowest"] = "%.2f s at %.2f s" % tuple(slowest)
    counts["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
