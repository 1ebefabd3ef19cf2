#!/usr/bin/env python3
"""A burst of simultaneous IMAP LOGINs through nginx's mail proxy, for t/mail_auth_attacks.t
(written here).

usage: imap_burst.py HOST PORT COUNT USER PASSWORD_PREFIX ANSWER_TIMEOUT

COUNT threads each connect (imaplib: greeting read), wait until all are connected, then all send
"LOGIN USER PASSWORD_PREFIX<n>" at once (a distinct password per thread: the limiter counts a
repeated wrong password once; IMAP_BURST_SAME=1: every thread sends PASSWORD_PREFIX itself, a
device with one stale password opening several connections at once). Each waits at most ANSWER_TIMEOUT seconds for the answer (a
refusal may carry a long Auth-Wait, which nginx sleeps before answering), then hangs up.
Prints "connected N" once all are connected, then one JSON object:
  ok        logged in (must never happen with wrong passwords)
  no        NO "Invalid login or password"
  other_no  any other NO/BAD answer
  timeout   no answer within ANSWER_TIMEOUT
  errors    connection refused/reset/closed before an answer
  samples   up to 10 unexpected outcomes
IMAP_BURST_SOURCE=127.0.0.2 (a loopback address) makes the clients connect from that address.
Loopback only.
"""
import imaplib
import json
import os
import socket
import sys
import threading

SOURCE = os.environ.get("IMAP_BURST_SOURCE")
if SOURCE and not SOURCE.startswith("127."):
    SOURCE = None
SAME = os.environ.get("IMAP_BURST_SAME") == "1"


class IMAP4(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, (SOURCE, 0) if SOURCE else None)


def main():
    host, port, count, user, prefix, answer_timeout = sys.argv[1:7]
    if host not in ("127.0.0.1", "::1"):
        print(json.dumps({"error": "refusing a non-loopback host"}))
        return 2
    port, count, answer_timeout = int(port), int(count), float(answer_timeout)
    lock = threading.Lock()
    counts = dict(ok=0, no=0, other_no=0, timeout=0, errors=0)
    samples = []
    connected = [0]
    barrier = threading.Barrier(count + 1)

    def note(key, msg=None):
        with lock:
            counts[key] += 1
            if msg is not None and len(samples) < 10:
                samples.append("%s: %s" % (key, msg))

    def worker(n):
        c = None
        try:
            c = IMAP4(host, port, timeout=10)
            with lock:
                connected[0] += 1
        except (OSError, EOFError, imaplib.IMAP4.abort) as e:
            note("errors", "connect: %s" % e)
        try:
            barrier.wait(30)
        except threading.BrokenBarrierError:
            pass
        if c is None:
            return
        try:
            c.sock.settimeout(answer_timeout)
            c.login(user, prefix if SAME else "%s%d" % (prefix, n))
        except socket.timeout:
            note("timeout")
        except imaplib.IMAP4.abort as e:
            if "timed out" in str(e):
                note("timeout")
            else:
                note("errors", "login: abort: %s" % e)
        except imaplib.IMAP4.error as e:
            if "Invalid login or password" in str(e):
                note("no")
            else:
                note("other_no", str(e))
        except (OSError, EOFError) as e:
            note("errors", "login: %s: %s" % (type(e).__name__, e))
        else:
            note("ok", "logged in with a wrong password")
        finally:
            try:
                c.shutdown()
            except (OSError, EOFError):
                pass

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    try:
        barrier.wait(30)
    except threading.BrokenBarrierError:
        pass
    print("connected %d" % connected[0], flush=True)
    for t in threads:
        t.join()
    counts["samples"] = samples
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
