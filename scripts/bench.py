#!/usr/bin/env python3
"""ngx-mail-auth benchmarks, side by side, in one run on one machine (loopback only, bounded).

Contenders share one nginx binary (the one the module is built against):
  ceiling          a location that returns the Auth-* headers with no verification at all
  module           mail_auth with {SSHA} users (100 and 100,000, htpasswd and SQLite),
                   bcrypt cost 10 without and with the shared cache
  recipe           auth_basic behind a proxy_pass hop, Authorization made by $mail_auth_basic
                   (the seed recipe, with our variable in place of set_misc)
  python           an external auth_http server in Python on the same htpasswd (the usual choice)
  imap e2e         IMAP logins/s through nginx mail to a backend, module vs the Python server
  mixed            p99 of cheap requests while bcrypt logins hammer the same worker, with and
                   without the thread pool
  rss              peak RSS of an nginx worker with 100,000 users (htpasswd, SQLite) and with
                   1,000,000 users (htpasswd)

usage: bench.py NGINX MODULE_SO [--quick]
"""
import asyncio
import base64
import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.environ.get("BENCH_DIR", "/tmp/ngx-mail-auth-bench")
T0 = 0.0
HTTP, PY, IMAP_MOD, IMAP_PY = 19180, 19181, 11943, 11944
BACKEND = (11945, 11946, 11947)


def ssha(pw: bytes, salt: bytes) -> str:
    return "{SSHA}" + base64.b64encode(hashlib.sha1(pw + salt).digest() + salt).decode()


def make_users(n: int, path: str, bcrypt_line: str):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"u{i}:{ssha(f'pw-{i}'.encode(), i.to_bytes(4, 'little'))}\n")
        f.write(bcrypt_line + "\n")


def make_sqlite(n: int, path: str):
    if os.path.exists(path):
        os.remove(path)
    c = sqlite3.connect(path)
    with open(os.path.join(ROOT, "scripts", "schema.sql")) as f:
        c.executescript(f.read())
    c.executemany("INSERT INTO users(name, password) VALUES (?, ?)",
                  ((f"u{i}", ssha(f"pw-{i}".encode(), i.to_bytes(4, "little"))) for i in range(n)))
    c.commit()
    c.close()


CONF = """
load_module {so};
error_log logs/error.log warn;
pid logs/nginx.pid;
worker_processes 1;
thread_pool mailauth threads=1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{http} backlog=4096;
        location = /ceiling {{
            add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port {b};
            return 204;
        }}
        location = /ssha-100 {{ mail_auth; mail_auth_passwd_file users-100; mail_auth_backend imap 127.0.0.1:{b}; }}
        location = /ssha-100k {{ mail_auth; mail_auth_passwd_file users-100k; mail_auth_backend imap 127.0.0.1:{b}; }}
        location = /sqlite-100 {{ mail_auth; mail_auth_sqlite users-100.db; mail_auth_backend imap 127.0.0.1:{b}; }}
        location = /sqlite-100k {{ mail_auth; mail_auth_sqlite users-100k.db; mail_auth_backend imap 127.0.0.1:{b}; }}
        location = /bcrypt {{ mail_auth; mail_auth_passwd_file users-100; mail_auth_backend imap 127.0.0.1:{b}; }}
        location = /bcrypt-pool1 {{ mail_auth; mail_auth_passwd_file users-100; mail_auth_thread_pool mailauth; mail_auth_backend imap 127.0.0.1:{b}; }}
        location = /bcrypt-inline {{ mail_auth; mail_auth_passwd_file users-100; mail_auth_thread_pool off; mail_auth_backend imap 127.0.0.1:{b}; }}
        location = /cached {{ mail_auth; mail_auth_passwd_file users-100; mail_auth_backend imap 127.0.0.1:{b};
                              mail_auth_cache zone=bench_cache:4m ttl=60s negative_ttl=10s; }}
        location = /recipe {{
            proxy_pass http://127.0.0.1:{http}/recipe-check;
            proxy_pass_request_body off;
            proxy_set_header Authorization $mail_auth_basic;
            proxy_intercept_errors on;
            error_page 401 403 = @recipe-fail;
        }}
        location = /recipe-check {{
            auth_basic mail; auth_basic_user_file users-100;
            add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port {b};
            return 204;
        }}
        location @recipe-fail {{ add_header Auth-Status "Invalid login or password" always; return 204; }}
    }}
}}
mail {{
    server {{ listen 127.0.0.1:{imap_mod}; protocol imap; auth_http 127.0.0.1:{http}/ssha-100k; }}
    server {{ listen 127.0.0.1:{imap_py}; protocol imap; auth_http 127.0.0.1:{py}/auth; }}
}}
"""


def headers(user, pw):
    return ["-H", "Auth-Method: plain", "-H", f"Auth-User: {user}", "-H", f"Auth-Pass: {pw}",
            "-H", "Auth-Protocol: imap", "-H", "Auth-Login-Attempt: 1", "-H", "Client-IP: 127.0.0.1"]


def ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(url, user, pw, secs, conns=16):
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", *headers(user, pw), url],
                         capture_output=True, text=True, timeout=secs + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    return rps, p50, p99


def wait_port(port, secs=10):
    import socket
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


async def imap_logins(port, secs, conc, user, pw):
    done = 0
    end = time.time() + secs

    async def one():
        nonlocal done
        while time.time() < end:
            w = None
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                await asyncio.wait_for(r.readline(), 2)
                w.write(f"a LOGIN {user} {pw}\r\n".encode())
                while True:
                    line = await asyncio.wait_for(r.readline(), 2)
                    if not line or line.startswith(b"a "):
                        break
                if line.startswith(b"a OK") and time.time() < end:
                    done += 1
                w.write(b"b LOGOUT\r\n")
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.01)
            finally:
                if w is not None:
                    w.close()

    await asyncio.gather(*(one() for _ in range(conc)))
    return done / secs


SETMISC_CONF = """
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_set_misc_module.so;
error_log logs/setmisc-error.log warn;
pid logs/setmisc.pid;
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {w}/tmp-body; proxy_temp_path {w}/tmp-proxy;
    fastcgi_temp_path {w}/tmp-fcgi; uwsgi_temp_path {w}/tmp-uwsgi; scgi_temp_path {w}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /recipe {{
            set_unescape_uri $mail_user $http_auth_user;
            set_unescape_uri $mail_pass $http_auth_pass;
            set $mail_cred "$mail_user:$mail_pass";
            set_encode_base64 $mail_b64 $mail_cred;
            proxy_pass http://127.0.0.1:{port}/check;
            proxy_pass_request_body off;
            proxy_set_header Authorization "Basic $mail_b64";
            proxy_intercept_errors on;
            error_page 401 403 = @fail;
        }}
        location = /check {{
            auth_basic mail; auth_basic_user_file {w}/users-100;
            add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port 1143;
            return 204;
        }}
        location @fail {{ add_header Auth-Status "Invalid login or password" always; return 204; }}
    }}
}}
"""


def setmisc_row(run):
    """The original recipe (set_misc + NDK) on Debian's packaged nginx, when installed."""
    deb = "/usr/sbin/nginx"
    mods = ["/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_set_misc_module.so"]
    if not (os.path.exists(deb) and all(os.path.exists(m) for m in mods)):
        print("set_misc recipe: Debian nginx with set_misc/NDK not installed, row skipped", file=sys.stderr)
        return None
    port = HTTP + 20
    with open("setmisc.conf", "w") as f:
        f.write(SETMISC_CONF.format(w=WORK, port=port))
    subprocess.run([deb, "-p", WORK + "/", "-c", "setmisc.conf"], check=True)
    try:
        wait_port(port)
        version = subprocess.run([deb, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
        return run(f"recipe: set_misc + NDK, Debian nginx {version}", f"http://127.0.0.1:{port}/recipe")[0]
    finally:
        subprocess.run([deb, "-p", WORK + "/", "-c", "setmisc.conf", "-s", "stop"], check=False)


def rss_kb(nginx, so, prefix, location_conf, url_path, user, pw):
    """Peak RSS (VmHWM) of the worker of an nginx that has only this store configured."""
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    with open(os.path.join(prefix, "rss.conf"), "w") as f:
        f.write(f"""load_module {so};
error_log logs/error.log warn; pid logs/rss.pid; worker_processes 1; events {{}}
http {{ access_log off; server {{ listen 127.0.0.1:{HTTP + 10};
  location = /a {{ mail_auth; {location_conf} mail_auth_backend imap 127.0.0.1:1; }} }} }}
""")
    subprocess.run([nginx, "-p", prefix + "/", "-c", "rss.conf"], check=True)
    try:
        wait_port(HTTP + 10)
        subprocess.run(["curl", "-s", "-o", "/dev/null", *sum((["-H", h] for h in headers(user, pw)[1::2]), []),
                        f"http://127.0.0.1:{HTTP + 10}{url_path}"], check=False)
        master = open(os.path.join(prefix, "logs", "rss.pid")).read().strip()
        kids = subprocess.run(["pgrep", "-P", master], capture_output=True, text=True).stdout.split()
        best = 0
        for k in kids:
            for line in open(f"/proc/{k}/status"):
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        return best
    finally:
        subprocess.run([nginx, "-p", prefix + "/", "-c", "rss.conf", "-s", "stop"], check=False)
        time.sleep(0.3)


def main():
    global T0
    T0 = time.time()
    nginx, so = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv
    secs = 3 if quick else 10
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(os.path.join(WORK, "logs"))
    os.chdir(WORK)

    bcrypt_line = subprocess.run(["htpasswd", "-nbB", "-C", "10", "bench", "bench-pw"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    make_users(100, "users-100", bcrypt_line)
    make_users(100_000, "users-100k", bcrypt_line)
    make_sqlite(100_000, "users-100k.db")
    make_sqlite(100, "users-100.db")
    with open("nginx.conf", "w") as f:
        f.write(CONF.format(so=so, http=HTTP, py=PY, b=BACKEND[0], imap_mod=IMAP_MOD, imap_py=IMAP_PY))
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "demo-backend"), *map(str, BACKEND)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "bench-auth-server.py"),
                                       str(PY), "users-100", str(BACKEND[0])]))
        subprocess.run([nginx, "-p", WORK + "/", "-c", "nginx.conf"], check=True)
        for p in (HTTP, PY, IMAP_MOD, BACKEND[0]):
            wait_port(p)

        base = f"http://127.0.0.1:{HTTP}"
        rows = []

        def run(name, url, user="u42", pw="pw-42", conns=16):
            print(f"[{time.time() - T0:5.1f}s] {name}", file=sys.stderr, flush=True)
            rps, p50, p99 = wrk(url, user, pw, secs, conns)
            rows.append((name, rps, p50, p99))
            return rps, p50, p99

        ceiling = run("ceiling: static Auth-* headers", f"{base}/ceiling")[0]
        run("module {SSHA}, htpasswd, 100 users", f"{base}/ssha-100")
        run("module {SSHA}, htpasswd, 100,000 users", f"{base}/ssha-100k")
        run("module {SSHA}, SQLite, 100 users", f"{base}/sqlite-100")
        run("module {SSHA}, SQLite, 100,000 users", f"{base}/sqlite-100k")
        run("module bcrypt(10), no cache", f"{base}/bcrypt", "bench", "bench-pw")
        run("module bcrypt(10), cache on", f"{base}/cached", "bench", "bench-pw")
        recipe = run("recipe: auth_basic behind proxy_pass ($mail_auth_basic)", f"{base}/recipe")[0]
        python = run("python auth_http server, {SSHA}", f"http://127.0.0.1:{PY}/auth")[0]
        setmisc = setmisc_row(run)

        idle_p99 = next(r[3] for r in rows if r[0].startswith("module {SSHA}, htpasswd, 100 users"))
        cheap = next(r[1] for r in rows if r[0].startswith("module {SSHA}, htpasswd, 100 users"))
        cached = next(r[1] for r in rows if "cache on" in r[0])

        # mixed load: bcrypt logins hammer the worker while cheap requests are measured
        mixed = {}
        for label, path in (("thread pool", "/bcrypt"), ("1-thread pool", "/bcrypt-pool1"), ("inline (pool off)", "/bcrypt-inline")):
            hammer = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{secs + 2}s", *headers("bench", "bench-pw"), f"{base}{path}"],
                                      stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            mixed[label] = wrk(f"{base}/ssha-100", "u42", "pw-42", secs, 4)
            hammer.wait()

        print(f"[{time.time() - T0:5.1f}s] imap e2e", file=sys.stderr, flush=True)
        e2e_mod = asyncio.run(imap_logins(IMAP_MOD, secs, 32, "u42", "pw-42"))
        e2e_py = asyncio.run(imap_logins(IMAP_PY, secs, 32, "u42", "pw-42"))
    finally:
        subprocess.run([nginx, "-p", WORK + "/", "-c", "nginx.conf", "-s", "stop"], check=False)
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)

    print(f"[{time.time() - T0:5.1f}s] rss", file=sys.stderr, flush=True)
    rss_base = rss_kb(nginx, so, WORK, "mail_auth_passwd_file users-100;", "/a", "u42", "pw-42")
    rss_file = rss_kb(nginx, so, WORK, "mail_auth_passwd_file users-100k;", "/a", "u42", "pw-42")
    rss_sql = rss_kb(nginx, so, WORK, "mail_auth_sqlite users-100k.db; mail_auth_thread_pool off;", "/a", "u42", "pw-42")
    if not os.path.exists("users-1m"):
        make_users(1_000_000, "users-1m", bcrypt_line)
    rss_1m = rss_kb(nginx, so, WORK, "mail_auth_passwd_file users-1m;", "/a", "u42", "pw-42")

    print(f"[{time.time() - T0:5.1f}s] done", file=sys.stderr, flush=True)
    cpu = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    print(f"\nngx-mail-auth benchmark ({'quick, ' if quick else ''}{secs}s per row, wrk -t1 -c16, nginx worker_processes 1)")
    print(f"machine: {os.cpu_count()} cores, {model.group(1) if model else 'unknown CPU'}; {time.strftime('%Y-%m-%d')}\n")
    print(f"| {'contender':<58} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'x ceiling':>9} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 11}|")
    for name, rps, p50, p99 in rows:
        print(f"| {name:<58} | {rps:>9.0f} | {p50:>7.2f} | {p99:>7.2f} | {rps / ceiling:>9.2f} |")
    print()
    for label, (rps, p50, p99) in mixed.items():
        print(f"mixed load, cheap requests while 8 bcrypt(10) connections hammer, {label}: "
              f"p99 {p99:.2f} ms ({p99 / idle_p99:.1f}x idle p99 {idle_p99:.2f} ms), {rps:.0f} req/s")
    print(f"IMAP logins/s through nginx mail (32 clients, same backend): module {e2e_mod:.0f}, "
          f"python auth server {e2e_py:.0f} ({e2e_mod / max(e2e_py, 1e-9):.1f}x)")
    print(f"peak worker RSS: 100 users {rss_base / 1024:.1f} MiB, 100,000 users htpasswd {rss_file / 1024:.1f} MiB, "
          f"SQLite {rss_sql / 1024:.1f} MiB; 1,000,000 users htpasswd {rss_1m / 1024:.1f} MiB "
          f"({(rss_1m - rss_base) / 1024:.0f} MiB per million users)")
    print("\ntargets (goals, not tests):")
    print(f"  cheap scheme >= 0.8x ceiling: {cheap / ceiling:.2f}x;  cached bcrypt >= 0.8x ceiling: {cached / ceiling:.2f}x")
    vs_setmisc = f", {cheap / setmisc:.1f}x the original set_misc recipe" if setmisc else ""
    print(f"  >= 3x the auth_basic recipe: {cheap / recipe:.1f}x with our variable{vs_setmisc};  >= 10x the python server: {cheap / python:.1f}x")
    print(f"  cheap p99 under bcrypt load <= 2x idle: {mixed['thread pool'][2] / idle_p99:.1f}x with the default pool (32 threads), "
          f"{mixed['1-thread pool'][2] / idle_p99:.1f}x with a 1-thread pool, "
          f"{mixed['inline (pool off)'][2] / idle_p99:.1f}x inline")


if __name__ == "__main__":
    main()
