#!/usr/bin/env python3
"""Concurrent IMAP logins through nginx's mail proxy, for the fault tests (written here).

usage: login_storm.py HOST PORT SECONDS CONCURRENCY USER GOOD_PASSWORD BAD_PASSWORD
Each of CONCURRENCY threads logs in again and again until SECONDS have passed, alternating the
good and the bad password (imaplib LOGIN, then LOGOUT). Prints one JSON object:
  good_ok, good_refused, bad_ok, bad_refused, temporary, errors, error_samples
"refused" is a NO with "Invalid login"; "temporary" a NO with "Temporary"; "errors" anything
else (connection refused or reset, timeouts). Loopback only.
"""
import imaplib
import json
import sys
import threading
import time


def main():
    host, port, seconds, conc, user, good, bad = sys.argv[1:8]
    if host not in ("127.0.0.1", "::1"):
        print(json.dumps({"error": "refusing non-loopback host"}))
        return 2
    port, seconds, conc = int(port), float(seconds), int(conc)
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    counts = dict(good_ok=0, good_refused=0, bad_ok=0, bad_refused=0, temporary=0, errors=0)
    samples = []

    def count(key, sample=None):
        with lock:
            counts[key] += 1
            if sample and len(samples) < 10:
                samples.append(sample)

    def worker(n):
        i = n
        while time.monotonic() < deadline:
            i += 1
            kind = "good" if i % 2 else "bad"
            try:
                c = imaplib.IMAP4(host, port, timeout=20)
                try:
                    c.login(user, good if kind == "good" else bad)
                    count(kind + "_ok")
                    c.logout()
                except imaplib.IMAP4.error as e:
                    msg = str(e)
                    if "Invalid login" in msg:
                        count(kind + "_refused", f"{kind}: {msg}" if kind == "good" else None)
                    elif "Temporary" in msg:
                        count("temporary", f"{kind}: {msg}")
                    else:
                        count("errors", f"{kind}: {msg}")
                    try:
                        c.shutdown()
                    except OSError:
                        pass
            except (OSError, EOFError, imaplib.IMAP4.abort) as e:
                count("errors", f"{kind}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts["error_samples"] = samples
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
