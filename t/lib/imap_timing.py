#!/usr/bin/env python3
"""Timed IMAP logins through nginx's mail proxy, with Python's imaplib (written for the tests).

usage: imap_timing.py HOST PORT PARALLEL LABEL:USER:PASSWORD ...
Each argument is one login (connect, greeting, then LOGIN USER PASSWORD). PARALLEL clients run
at once, each taking the next login from the list (so the list's interleaving is kept). Prints
one line per login, in the list's order:
    LABEL SECONDS ok|no|error
SECONDS: from sending LOGIN to its tagged answer (the greeting and connect are not counted).
Exit 0 when every login got an answer (OK or NO), 2 otherwise. Loopback only.
"""
import imaplib
import queue
import sys
import threading
import time


def one(host, port, user, password):
    c = imaplib.IMAP4(host, port, timeout=30)
    try:
        t0 = time.monotonic()
        try:
            c.login(user, password)
            verdict = "ok"
        except imaplib.IMAP4.error:
            verdict = "no"
        dt = time.monotonic() - t0
    finally:
        try:
            c.shutdown()
        except Exception:
            pass
    return dt, verdict


def main():
    host, port, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if host not in ("127.0.0.1", "::1"):
        print("FAIL refusing non-loopback host")
        return 2
    jobs = [a.split(":", 2) for a in sys.argv[4:]]
    results = [None] * len(jobs)
    q = queue.Queue()
    for i, j in enumerate(jobs):
        q.put((i, j))

    def worker():
        while True:
            try:
                i, (label, user, password) = q.get_nowait()
            except queue.Empty:
                return
            try:
                dt, verdict = one(host, port, user, password)
            except Exception:  # connection closed, timeout ...
                dt, verdict = 0.0, "error"
            results[i] = (label, dt, verdict)

    threads = [threading.Thread(target=worker) for _ in range(max(1, parallel))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rc = 0
    for label, dt, verdict in results:
        print(label, "%.6f" % dt, verdict)
        if verdict == "error":
            rc = 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
