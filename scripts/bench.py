#!/usr/bin/env python3
"""ngx-mail-auth benchmarks, side by side, in one run on one machine (loopback only, bounded).

The load comes from scripts/loadgen (Rust, built by scripts/bench): auth_http requests exactly as
nginx mail sends them (ngx_mail_auth_http_create_request: HTTP/1.0, a fresh connection per
request, the same headers in the same order), IMAP logins through nginx mail, and a fast IMAP
backend for nginx mail to proxy to.

The honest figure is the nginx worker's CPU time per request: nginx runs worker_processes 1, the
worker pinned to CPU 0 (worker_cpu_affinity) and the load client to CPU 1 (taskset); the CPU time
of every thread of the worker (thread-pool threads included) is read from
/proc/<worker>/task/*/schedstat before and after each measurement.

Rows (every row in every round, rounds interleaved round-robin), in three modes: a new connection
per request over TCP (what nginx mail does; the primary figure), the same over a unix socket
(`auth_http unix:/path:/uri`), and keep-alive over TCP (HTTP/1.1, an upper bound):
  ceiling        `return 204` with static Auth-Status/Auth-Server/Auth-Port headers, no check
  floor          (--floor) a static answer of the same kind from a content handler on ngx-rust
                 that checks nothing (scripts/floor): what being a content handler costs
  {SSHA} file    mail_auth, passwd-file with 100,000 {SSHA} users, requests round-robin over them
  {SSHA} SQLite  mail_auth, SQLite database with the same 100,000 users
  bcrypt warm    mail_auth, bcrypt(10), mail_auth_cache, the same user/password (cache warmed)
  bcrypt cold    mail_auth, bcrypt(10), mail_auth_cache, a distinct wrong password each request
  recipe         auth_basic behind a proxy_pass hop, Authorization from $mail_auth_basic
  set_misc       the original recipe (set_misc + NDK) on Debian's packaged nginx, when installed
  python         an external auth_http server in Python (threaded http.server), same 100,000 users
Then: mixed load (p99 of cheap requests while bcrypt hammers the worker, the module's default
thread pool and a 1-thread pool), IMAP logins end to end through nginx mail, worker RSS per user,
and the directory stores (PostgreSQL, MariaDB, OpenLDAP started here on loopback, 10,000 users;
a new connection per request over TCP) beside the ceiling and the SQLite store.

usage: bench.py NGINX MODULE_SO LOADGEN [--quick] [--rounds N] [--secs S] [--spin] [--floor FLOOR_SO]
                [--only rows,mixed,imap,rss,stores,redis]

--spin: the auth_http load comes from one client thread that keeps its connections' requests in
flight on non-blocking sockets and polls them without ever sleeping. With the usual client (a
blocking thread per connection) every answer has to wake a sleeping client thread, and that
wake-up (an inter-processor interrupt when the client's CPU idles) is paid by the worker; the
slower the server, the more the client idles. With --spin the worker's CPU per request is its
own work only: the ceiling gets cheaper, and a row's µs/req minus the ceiling's is what the
module adds.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The work directory: BENCH_DIR (scripts/bench checks it is the caller's own, or makes one with
# mktemp), else a new private one. Never a fixed name in /tmp: the benchmark runs as root and
# kills the pids and loads the configurations it finds there.
WORK = os.environ.get("BENCH_DIR") or None
T0 = time.time()
PIN = (os.cpu_count() or 1) >= 2
# --spin: auth_http load from one client thread that polls non-blocking sockets without sleeping
SPIN = False
SERVER_CPU, CLIENT_CPU = "0", "1"

# ports (loopback only)
HTTP, PY, SETMISC, BACKEND, MIXED, RSS, LIMITED, REDIS = 19180, 19181, 19182, 19183, 19184, 19185, 19186, 19187
STORES, PG_PORT, MY_PORT, LDAP_PORT = 19188, 19432, 19306, 19389
N_STORE_USERS = 10_000
IMAP_PORTS = {"mod-tcp": 11943, "mod-unix": 11944, "ceil-tcp": 11945, "ceil-unix": 11946, "py": 11947}
N_USERS = 100_000
HTTP_CONNS = 8
IMAP_CONNS = 64


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- processes we start, stopped on exit

CLEANUP = []


def on_signal(signum, _frame):
    raise SystemExit(f"bench.py: stopped by signal {signum}")


def run_cleanup():
    while CLEANUP:
        fn = CLEANUP.pop()
        try:
            fn()
        except Exception as e:  # keep stopping the others
            print(f"bench.py: cleanup: {e}", file=sys.stderr)


def pids_alive(pids):
    return [p for p in pids if os.path.exists(f"/proc/{p}")]


def children(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


class Nginx:
    """One nginx master (daemonized) with its prefix in WORK; stopped by stop() or at exit."""

    def __init__(self, binary, name, conf_text):
        self.binary, self.name = binary, name
        self.conf = os.path.join(WORK, f"{name}.conf")
        with open(self.conf, "w") as f:
            f.write(conf_text)
        self.pidfile = os.path.join(WORK, "logs", f"{name}.pid")
        self.errlog = os.path.join(WORK, "logs", f"{name}-error.log")
        self.master = None

    def cmd(self, *extra):
        return [self.binary, "-p", WORK + "/", "-e", self.errlog, "-c", self.conf, *extra]

    def start(self, wait_ports=()):
        r = subprocess.run(self.cmd(), capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"nginx '{self.name}' did not start:\n{r.stderr.strip()}\n{self.tail()}")
        end = time.time() + 10
        while time.time() < end and self.master is None:
            try:
                self.master = int(open(self.pidfile).read())
            except (OSError, ValueError):
                time.sleep(0.05)
        if self.master is None:
            raise BenchError(f"nginx '{self.name}': no pid file\n{self.tail()}")
        CLEANUP.append(self.stop)
        for p in wait_ports:
            wait_port(p, self)
        self.worker()
        return self

    def worker(self):
        """The pid of the (single) worker process."""
        end = time.time() + 10
        while time.time() < end:
            for c in children(self.master):
                try:
                    if b"worker process" in open(f"/proc/{c}/cmdline", "rb").read():
                        return c
                except OSError:
                    pass
            time.sleep(0.05)
        raise BenchError(f"nginx '{self.name}': no worker process\n{self.tail()}")

    def tail(self):
        try:
            return "".join(open(self.errlog).readlines()[-15:])
        except OSError:
            return ""

    def stop(self):
        if self.master is None:
            return
        procs = [self.master, *children(self.master)]
        try:
            os.kill(self.master, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.time() + 5
        while pids_alive(procs) and time.time() < end:
            time.sleep(0.05)
        for p in pids_alive(procs):
            os.kill(p, signal.SIGKILL)
        self.master = None


def spawn(argv, cpu=None, **kw):
    """A helper process we own (stopped at exit)."""
    if cpu is not None and PIN:
        argv = ["taskset", "-c", cpu, *argv]
    p = subprocess.Popen(argv, **kw)

    def stop():
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    CLEANUP.append(stop)
    return p


def wait_port(port, owner=None, secs=10):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    extra = f"\n{owner.tail()}" if isinstance(owner, Nginx) else ""
    raise BenchError(f"nothing listens on 127.0.0.1:{port}{extra}")


# ---------------------------------------------------------------- CPU and memory of a process

def cpu_ns_schedstat(pid):
    """CPU time of all live threads of pid (ns): the first field of each task's schedstat."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        raise BenchError(f"process {pid} is gone")
    for t in tasks:
        try:
            total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ns_stat(pid):
    """utime + stime of the whole process, exited threads included (tick resolution): for a server
    that starts a thread per connection (the Python one)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        raise BenchError(f"process {pid} is gone")
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK_TCK


def status_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- data

def ssha(pw: bytes, salt: bytes) -> str:
    return "{SSHA}" + base64.b64encode(hashlib.sha1(pw + salt).digest() + salt).decode()


def user_lines(n):
    for i in range(n):
        yield f"u{i}", f"pw-{i}", ssha(f"pw-{i}".encode(), i.to_bytes(4, "little"))


def make_files(bcrypt_line):
    with open("users-100k", "w") as f, open("creds-100k", "w") as c:
        for u, p, h in user_lines(N_USERS):
            f.write(f"{u}:{h}\n")
            c.write(f"{u}:{p}\n")
    with open("users-100", "w") as f, open("creds-100", "w") as c:
        for u, p, h in user_lines(100):
            f.write(f"{u}:{h}\n")
            c.write(f"{u}:{p}\n")
    with open("users-bcrypt", "w") as f:
        f.write(bcrypt_line + "\n")
    if os.path.exists("users-100k.db"):
        os.remove("users-100k.db")
    db = sqlite3.connect("users-100k.db")
    with open(os.path.join(ROOT, "scripts", "schema.sql")) as f:
        db.executescript(f.read())
    db.executemany("INSERT INTO users(name, password) VALUES (?, ?)", ((u, h) for u, _, h in user_lines(N_USERS)))
    db.commit()
    db.close()


# ---------------------------------------------------------------- nginx configurations

def conf_head(modules, name, pin):
    """The top of a benchmark nginx.conf up to inside `http {`: the modules, its own log and pid,
    one worker (pinned to CPU 0 when there are 2 CPUs), no access log, temp paths in WORK."""
    loads = "".join(f"load_module {m};\n" for m in modules)
    affinity = "worker_cpu_affinity 01;" if pin else ""
    return f"""{loads}error_log logs/{name}-error.log warn;
pid logs/{name}.pid;
worker_processes 1;
{affinity}
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path tmp-body; proxy_temp_path tmp-proxy; fastcgi_temp_path tmp-fcgi;
    uwsgi_temp_path tmp-uwsgi; scgi_temp_path tmp-scgi;
"""


def main_conf(so, sock, pin, floor=None):
    b = BACKEND
    module = f"mail_auth_backend imap 127.0.0.1:{b};"
    static = f"add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port {b};"
    mail_servers = "\n".join(
        f"    server {{ listen 127.0.0.1:{IMAP_PORTS[k]}; protocol imap; auth_http {url}; }}"
        for k, url in (("mod-tcp", f"127.0.0.1:{HTTP}/ssha"), ("mod-unix", f"unix:{sock}:/ssha"),
                       ("ceil-tcp", f"127.0.0.1:{HTTP}/ceiling"), ("ceil-unix", f"unix:{sock}:/ceiling"),
                       ("py", f"127.0.0.1:{PY}/auth")))
    floor_loc = "location = /floor { mail_auth_floor; }" if floor else ""
    return conf_head([so] + ([floor] if floor else []), "main", pin) + f"""    server {{
        listen 127.0.0.1:{HTTP} backlog=4096;
        listen unix:{sock} backlog=4096;
        location = /ceiling {{ {static} return 204; }}
        {floor_loc}
        location = /ssha {{ mail_auth; mail_auth_passwd_file users-100k; {module} }}
        location = /sqlite {{ mail_auth; mail_auth_sqlite users-100k.db; {module} }}
        location = /sqlite-rows {{ mail_auth; mail_auth_sqlite users-100k.db; mail_auth_sqlite_cache_rows 0; {module} }}
        location = /bcrypt-warm {{ mail_auth; mail_auth_passwd_file users-bcrypt; {module}
                                   mail_auth_cache zone=bench_warm:4m ttl=1h; }}
        location = /bcrypt-cold {{ mail_auth; mail_auth_passwd_file users-bcrypt; {module}
                                   mail_auth_cache zone=bench_cold:4m ttl=1h; }}
        location = /recipe {{
            proxy_pass http://127.0.0.1:{HTTP}/recipe-check;
            proxy_pass_request_body off;
            proxy_set_header Authorization $mail_auth_basic;
            proxy_intercept_errors on;
            error_page 401 403 = @recipe-fail;
        }}
        location = /recipe-check {{ auth_basic mail; auth_basic_user_file users-100; {static} return 204; }}
        location @recipe-fail {{ add_header Auth-Status "Invalid login or password" always; return 204; }}
    }}
}}
mail {{
{mail_servers}
}}
"""


def mixed_conf(so):
    # not pinned: the module's defaults as deployed (thread pool "default", verification
    # concurrency CPUs - 1), and a 1-thread pool
    return f"""load_module {so};
error_log logs/mixed-error.log warn;
pid logs/mixed.pid;
worker_processes 1;
thread_pool one threads=1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{MIXED} backlog=4096;
        location = /ssha {{ mail_auth; mail_auth_passwd_file users-100k; mail_auth_backend imap 127.0.0.1:{BACKEND}; }}
        location = /bcrypt {{ mail_auth; mail_auth_passwd_file users-bcrypt;
                              mail_auth_backend imap 127.0.0.1:{BACKEND}; }}
        location = /bcrypt-pool1 {{ mail_auth; mail_auth_passwd_file users-bcrypt; mail_auth_thread_pool one;
                                    mail_auth_backend imap 127.0.0.1:{BACKEND}; }}
    }}
}}
"""


def limited_conf(so):
    # the cheap scheme with mail_auth_limit, on this worker's zone alone and with the fleet's
    # shared budget in a local redis-server; limits far above the load (every login counted,
    # none refused: the cost of counting is what is measured)
    return f"""load_module {so};
error_log logs/limited-error.log warn;
pid logs/limited.pid;
worker_processes 1;
{"worker_cpu_affinity 01;" if PIN else ""}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    mail_auth_redis fleet 127.0.0.1:{REDIS} key_file=fleet.key;
    mail_auth_passwd_file users-100k;
    mail_auth_backend imap 127.0.0.1:{BACKEND};
    server {{
        listen 127.0.0.1:{LIMITED} backlog=4096;
        location = /local {{ mail_auth; mail_auth_limit zone=bench_local:16m ip=100000000/m user=1000/m; }}
        location = /redis {{ mail_auth; mail_auth_limit zone=bench_redis:16m ip=100000000/m user=1000/m redis=fleet; }}
    }}
}}
"""


SETMISC_MODS = ["/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_set_misc_module.so"]


def setmisc_conf(sock, pin):
    return conf_head(SETMISC_MODS, "setmisc", pin) + f"""    server {{
        listen 127.0.0.1:{SETMISC} backlog=4096;
        listen unix:{sock} backlog=4096;
        location = /recipe {{
            set_unescape_uri $mail_user $http_auth_user;
            set_unescape_uri $mail_pass $http_auth_pass;
            set $mail_cred "$mail_user:$mail_pass";
            set_encode_base64 $mail_b64 $mail_cred;
            proxy_pass http://127.0.0.1:{SETMISC}/check;
            proxy_pass_request_body off;
            proxy_set_header Authorization "Basic $mail_b64";
            proxy_intercept_errors on;
            error_page 401 403 = @fail;
        }}
        location = /check {{
            auth_basic mail; auth_basic_user_file users-100;
            add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port {BACKEND};
            return 204;
        }}
        location @fail {{ add_header Auth-Status "Invalid login or password" always; return 204; }}
    }}
}}
"""


def rss_conf(so, location_conf):
    return f"""load_module {so};
error_log logs/rss-error.log warn; pid logs/rss.pid; worker_processes 1; events {{}}
http {{ access_log off; server {{ listen 127.0.0.1:{RSS};
  location = /a {{ mail_auth; {location_conf} mail_auth_backend imap 127.0.0.1:{BACKEND}; }} }} }}
"""


# ---------------------------------------------------------------- measuring

class Loadgen:
    def __init__(self, binary):
        self.binary = binary

    def argv(self, kind, target, secs, conns, users, pw=None, path=None, keepalive=False):
        a = [self.binary, kind, "--target", target, "--secs", str(secs), "--conns", str(conns), "--users", users]
        if pw is not None:
            a += ["--pass", pw]
        if path is not None:
            a += ["--path", path]
        if keepalive:
            a.append("--keepalive")
        if SPIN and kind == "http":
            a.append("--spin")
        if PIN:
            a = ["taskset", "-c", CLIENT_CPU, *a]
        return a

    def run(self, argv, secs, cpu_of=(), cpu_fn=cpu_ns_schedstat):
        """Runs one measurement; adds the CPU time the processes cpu_of used meanwhile."""
        before = [cpu_fn(p) for p in cpu_of]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
        after = [cpu_fn(p) for p in cpu_of]
        if r.returncode != 0:
            raise BenchError(f"loadgen failed ({r.returncode}): {' '.join(argv)}\n{r.stderr.strip()}")
        res = json.loads(r.stdout)
        res["server_cpu_us"] = [(a - b) / 1000 for a, b in zip(after, before)]
        # per answered request, for each process measured (the first is the server compared)
        res["cpu_us_per_req"] = [c / max(res["requests"], 1) for c in res["server_cpu_us"]]
        if res["cpu_us_per_req"]:
            res["us_per_req"] = res["cpu_us_per_req"][0]
        return res


def warm(port, path, user, pw):
    """One auth_http request (to fill the cache before a warm measurement)."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: {user}\r\n"
              f"Auth-Pass: {pw}\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n"
              .encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    if b"Auth-Status: OK" not in data:
        raise BenchError(f"warm-up request to {path} was not answered OK:\n{data.decode(errors='replace')}")


def med(values):
    return statistics.median(values) if values else float("nan")


def fmt(v):
    if v != v:  # nan
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def rng(values, f=fmt):
    if not values:
        return "–"
    return f"{f(med(values))} [{f(min(values))}–{f(max(values))}]"


def ratio(values):
    return rng(values, lambda v: f"{v:.2f}")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("nginx")
    ap.add_argument("module_so")
    ap.add_argument("loadgen")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 1 s measurements")
    ap.add_argument("--rounds", type=int, help="rounds (default 5, --quick 3)")
    ap.add_argument("--secs", type=float, help="seconds per measurement (default 3, --quick 1)")
    ap.add_argument("--only", default="rows,mixed,imap,rss,stores,redis", help="sections to run (default: all)")
    ap.add_argument("--floor", metavar="FLOOR_SO",
                    help="scripts/floor's module: adds the floor row (a content handler that checks nothing)")
    ap.add_argument("--spin", action="store_true",
                    help="auth_http load from one client thread that never sleeps (the worker no longer wakes it)")
    opt = ap.parse_args()
    global SPIN
    SPIN = opt.spin
    rounds = opt.rounds or (3 if opt.quick else 5)
    secs = opt.secs or (1.0 if opt.quick else 3.0)
    only = set(opt.only.split(","))
    if rounds < 1 or secs <= 0:
        ap.error("--rounds and --secs must be positive")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        out = bench(opt, rounds, secs, only)
    except BenchError as e:
        print(f"\nbench.py: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nbench.py: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        run_cleanup()
    path = os.path.join(WORK, "results.md")
    with open(path, "w") as f:
        f.write(out)
    print(out)
    print(f"(written to {path}; {time.time() - T0:.0f} s in all)")


def bench(opt, rounds, secs, only):
    nginx, so = os.path.abspath(opt.nginx), os.path.abspath(opt.module_so)
    floor = os.path.abspath(opt.floor) if opt.floor else None
    lg = Loadgen(os.path.abspath(opt.loadgen))
    for f in (nginx, so, lg.binary, *([floor] if floor else [])):
        if not os.path.exists(f):
            raise BenchError(f"{f} does not exist")
    global WORK
    if WORK is None:
        WORK = tempfile.mkdtemp(prefix="ngx-mail-auth-bench.")
        # nginx's workers (nobody) read the users files: the directory may be entered, not written
        os.chmod(WORK, 0o755)
    else:
        # emptied, not removed and made again (another user could take the name in between)
        os.makedirs(WORK, mode=0o755, exist_ok=True)
        for n in os.listdir(WORK):
            p = os.path.join(WORK, n)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    os.makedirs(os.path.join(WORK, "logs"))
    os.chdir(WORK)
    sock, setmisc_sock, py_sock = (os.path.join(WORK, n) for n in ("http.sock", "setmisc.sock", "py.sock"))

    log("users: 100,000 {SSHA} (passwd-file, SQLite), one bcrypt(10)")
    bcrypt_line = subprocess.run(["htpasswd", "-nbB", "-C", "10", "bench", "bench-pw"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    make_files(bcrypt_line)

    # the fast IMAP backend nginx mail proxies to, on the client's CPU
    backend = spawn([lg.binary, "imap-backend", "--listen", f"127.0.0.1:{BACKEND}", "--threads", "256"],
                    cpu=CLIENT_CPU, stderr=subprocess.DEVNULL)
    python = spawn([sys.executable, os.path.join(ROOT, "scripts", "bench-auth-server.py"),
                    f"{PY},unix:{py_sock}", "users-100k", str(BACKEND)], cpu=SERVER_CPU)
    main_ngx = Nginx(nginx, "main", main_conf(so, sock, PIN, floor)).start([HTTP, *IMAP_PORTS.values()])
    wait_port(BACKEND)
    wait_port(PY)
    worker = main_ngx.worker()
    allowed = set()
    for t in os.listdir(f"/proc/{worker}/task"):
        allowed.add(open(f"/proc/{worker}/task/{t}/status").read().split("Cpus_allowed_list:")[1].split()[0])
    allowed = ",".join(sorted(allowed)) + f" (all {len(os.listdir(f'/proc/{worker}/task'))} threads)"

    setmisc = None
    deb = "/usr/sbin/nginx"
    if "rows" in only:
        if os.path.exists(deb) and all(os.path.exists(m) for m in SETMISC_MODS):
            deb_version = nginx_version(deb)
            try:
                setmisc = Nginx(deb, "setmisc", setmisc_conf(setmisc_sock, PIN)).start([SETMISC])
            except BenchError as e:
                log(f"set_misc recipe: Debian nginx did not start, row skipped: {e}")
        else:
            log("set_misc recipe: Debian nginx with set_misc/NDK not installed, row skipped")

    out = []
    cpu = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    out.append(f"## ngx-mail-auth benchmark ({'quick: ' if opt.quick else ''}{rounds} rounds × {secs:g} s per "
               f"measurement, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    out.append(f"Machine: {os.cpu_count()} CPUs (nproc), {model.group(1).strip() if model else 'unknown CPU'}; "
               f"Linux {os.uname().release}. nginx {nginx_version(nginx)} with worker_processes 1, "
               + (f"the worker pinned to CPU {allowed} (worker_cpu_affinity), load client on CPU {CLIENT_CPU} "
                  "(taskset)." if PIN else "nothing pinned (fewer than 2 CPUs).")
               + (" auth_http load client: **--spin** (one thread polling non-blocking sockets, never "
                  "sleeping: the worker never has to wake it)." if SPIN else "") + "\n")
    notes = []

    if "rows" in only:
        out += rows_section(lg, main_ngx, setmisc, deb_version if setmisc else None, python, rounds, secs,
                            sock, setmisc_sock, py_sock, notes, floor is not None)
    if "mixed" in only:
        out += mixed_section(lg, nginx, so, rounds, secs, notes)
    if "imap" in only:
        out += imap_section(lg, main_ngx, backend, python, rounds, secs, notes)
    for n in (main_ngx, setmisc):
        if n is not None:
            n.stop()
    if "redis" in only:
        out += redis_section(lg, nginx, so, rounds, secs, notes)
    if "rss" in only:
        out += rss_section(nginx, so, bcrypt_line)
    if "stores" in only:
        out += stores_section(lg, nginx, so, bcrypt_line, rounds, secs, notes)
    if notes:
        out.append("\n**Anomalies** (a measurement with errors or answers of the wrong kind):\n")
        out += [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def nginx_version(nginx):
    return subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]


def check(notes, label, res, expect="ok"):
    bad = res["errors"] + res["other"] + (res["fail"] if expect == "ok" else res["ok"])
    if bad or res["requests"] == 0:
        notes.append(f"{label}: {res['requests']} answers (ok {res['ok']}, fail {res['fail']}, other "
                     f"{res['other']}), {res['errors']} errors, expected all {expect}"
                     + (f"; first error: {res['first_error']}" if res.get("first_error") else ""))


def rows_section(lg, main_ngx, setmisc, deb_version, python, rounds, secs, sock, setmisc_sock, py_sock, notes,
                 floor=False):
    worker = main_ngx.worker()
    sm_worker = setmisc.worker() if setmisc else None
    creds = os.path.join(WORK, "creds-100k")
    creds100 = os.path.join(WORK, "creds-100")
    # name, {mode: target}, path, users, pass, expected answer, cpu pid, cpu function
    rows = [
        ("ceiling: return 204 + static Auth-* headers", HTTP, sock, "/ceiling", creds, None, "ok", worker),
    ] + ([("floor: a content handler answering static Auth-* headers, no check (scripts/floor)", HTTP, sock,
           "/floor", creds, None, "ok", worker)] if floor else []) + [
        ("module {SSHA}, passwd-file, 100k users", HTTP, sock, "/ssha", creds, None, "ok", worker),
        ("module {SSHA}, SQLite, 100k users", HTTP, sock, "/sqlite", creds, None, "ok", worker),
        ("module {SSHA}, SQLite, 100k users, mail_auth_sqlite_cache_rows 0 (no rows kept)", HTTP, sock, "/sqlite-rows", creds,
         None, "ok", worker),
        ("module bcrypt(10), cache warm", HTTP, sock, "/bcrypt-warm", "bench", "bench-pw", "ok", worker),
        ("module bcrypt(10), cache cold (distinct wrong passwords)", HTTP, sock, "/bcrypt-cold", "bench",
         "cold-{n}", "fail", worker),
        ("recipe: auth_basic behind proxy_pass ($mail_auth_basic), 100 users", HTTP, sock, "/recipe", creds100,
         None, "ok", worker),
    ]
    if setmisc:
        rows.append((f"recipe: set_misc + NDK, Debian nginx {deb_version}, 100 users", SETMISC, setmisc_sock,
                     "/recipe", creds100, None, "ok", sm_worker))
    rows.append(("python auth_http server (threaded http.server), 100k users", PY, py_sock, "/auth", creds, None,
                 "ok", python.pid))
    modes = [("new connection per request, TCP (as nginx mail)", "tcp", False),
             ("new connection per request, unix socket", "unix", False),
             ("keep-alive, TCP (HTTP/1.1, upper bound)", "tcp", True)]
    results = {}  # (mode, row) -> list of results per round
    # the SQLite row's rows kept, as on a server that has seen its users log in: one request per
    # user first (each round then measures the steady state, not the first logins)
    log("rows: one login of each of the 100,000 users on /sqlite (its rows kept)")
    res = lg.run(lg.argv("http", f"tcp:127.0.0.1:{HTTP}", 120, HTTP_CONNS, creds, None, "/sqlite", True)
                 + ["--requests", "100000"], 120)
    if res["ok"] != 100000:
        notes.append(f"SQLite warm-up: {res['ok']} of 100000 logins answered OK")
    for r in range(rounds):
        log(f"rows: round {r + 1}/{rounds}")
        for mi, (_, kind, keep) in enumerate(modes):
            for ri, (name, port, usock, path, users, pw, expect, pid) in enumerate(rows):
                target = f"tcp:127.0.0.1:{port}" if kind == "tcp" else f"unix:{usock}"
                if path == "/bcrypt-warm":
                    warm(port, path, users, pw)
                cpu_fn = cpu_ns_stat if pid == python.pid else cpu_ns_schedstat
                res = lg.run(lg.argv("http", target, secs, HTTP_CONNS, users, pw, path, keep), secs, [pid], cpu_fn)
                res["busy"] = res["server_cpu_us"][0] / 1e6 / res["secs"]
                res["client_us"] = res["client_cpu_us"] / max(res["requests"], 1)
                check(notes, f"round {r + 1}, {modes[mi][0]}, {name}", res, expect)
                results.setdefault((mi, ri), []).append(res)
    out = ["\n### auth_http requests\n",
           f"{HTTP_CONNS} connections, requests round-robin over the row's users. **worker µs/req**: CPU time of the "
           "nginx worker (all its threads, thread pool included; for the Python row, the Python process) per "
           "answered request. **busy**: that CPU time ÷ wall time (1.00 = the pinned worker's core is saturated). "
           "**client µs/req**: the load client's own CPU. **req/s ÷ ceiling** and **efficiency** (ceiling µs/req ÷ "
           "row µs/req) compare with the ceiling row *of the same round and mode*. Median [min–max] over "
           f"{rounds} rounds. **fastest rounds**: the ceiling's lowest µs/req of all rounds ÷ the row's lowest "
           "(on a shared machine noise only adds CPU time, so the fastest rounds are the least disturbed).\n"]
    for mi, (mode_name, _, _) in enumerate(modes):
        out.append(f"\n#### {mode_name}\n")
        out.append("| contender | req/s | worker µs/req | busy | client µs/req | req/s ÷ ceiling | efficiency "
                   "| fastest rounds |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        ceil = results[(mi, 0)]
        for ri, row in enumerate(rows):
            rs = results[(mi, ri)]
            rps = [x["rps"] for x in rs]
            us = [x["us_per_req"] for x in rs]
            # bcrypt cold is bcrypt-bound: ratios to the ceiling say nothing there
            bound = row[3] == "/bcrypt-cold"
            rratio = [] if bound else [x["rps"] / c["rps"] for x, c in zip(rs, ceil) if c["rps"]]
            eff = [] if bound else [c["us_per_req"] / x["us_per_req"] for x, c in zip(rs, ceil) if x["us_per_req"]]
            # the fastest round of each (noise on a shared machine only adds time: steal, a
            # neighbour's cache traffic), the ceiling's over the row's
            # (rounds with no request answered, or no CPU time measured, are left out)
            cu = [c["us_per_req"] for c in ceil if c["requests"] and c["us_per_req"] > 0]
            ru = [x["us_per_req"] for x in rs if x["requests"] and x["us_per_req"] > 0]
            fastest = "–" if bound or not cu or not ru else f"{min(cu) / min(ru):.2f}"
            out.append(f"| {row[0]} | {rng(rps)} | {rng(us)} | {fmt(med([x['busy'] for x in rs]))} | "
                       f"{fmt(med([x['client_us'] for x in rs]))} | {ratio(rratio)} | {ratio(eff)} | {fastest} |")
    out.append("\nRows: *ceiling* answers with static headers and no check at all (nginx's own cost of an "
               "auth_http request, answered in the rewrite phase); *floor* (with `--floor`) answers alike from "
               "a content handler written on ngx-rust that checks nothing, after nginx's other phases, as "
               "`mail_auth` answers: floor − ceiling is the price of being a content handler, a row − floor the "
               "module's own work; *{SSHA}* rows verify a salted SHA-1 of a user among 100,000; *bcrypt warm* "
               "repeats one user/password with `mail_auth_cache` (warmed before each measurement); *bcrypt cold* "
               "sends a distinct wrong password each time, so every request misses the cache and runs bcrypt "
               "(answers are failures; bcrypt-bound); *recipe* rows check with nginx's auth_basic (which reads "
               "the file on every request, hence 100 users) behind a second HTTP hop.\n\n"
               "Reading it: **worker µs/req and efficiency are the figures to compare.** A new connection per "
               "request costs the client about as much CPU as the worker (on loopback the kernel's TCP handshake "
               "runs in the client's connect()), so with one core each the client cannot saturate the worker "
               "(busy < 1) and req/s ÷ ceiling understates the differences between cheap rows; rows that cost "
               "the worker more than the client (busy → 1) are measured at full speed.")
    return out


def mixed_section(lg, nginx, so, rounds, secs, notes):
    mixed = Nginx(nginx, "mixed", mixed_conf(so)).start([MIXED])
    try:
        worker = mixed.worker()
        creds = os.path.join(WORK, "creds-100k")
        target = f"tcp:127.0.0.1:{MIXED}"
        cheap_conns = 2

        def cheap(cpu_of=()):
            a = [lg.binary, "http", "--target", target, "--path", "/ssha", "--users", creds,
                 "--conns", str(cheap_conns), "--secs", str(secs)]
            return lg.run(a, secs, cpu_of)

        res = {"default": [], "pool1": []}
        idle = []
        for r in range(rounds):
            log(f"mixed: round {r + 1}/{rounds}")
            i = cheap()
            check(notes, f"mixed round {r + 1}, idle", i)
            idle.append(i)
            for key, path in (("default", "/bcrypt"), ("pool1", "/bcrypt-pool1")):
                hammer = subprocess.Popen([lg.binary, "http", "--target", target, "--path", path, "--users", "bench",
                                           "--pass", "bench-pw", "--conns", "8", "--secs", str(secs + 1)],
                                          stdout=subprocess.PIPE, text=True)
                try:
                    time.sleep(0.5)
                    c = cheap()
                    h = json.loads(hammer.communicate(timeout=secs + 60)[0])
                finally:
                    if hammer.poll() is None:
                        hammer.kill()
                        hammer.wait()
                check(notes, f"mixed round {r + 1}, {key}, cheap", c)
                check(notes, f"mixed round {r + 1}, {key}, bcrypt", h)
                res[key].append((c, h, i))
        status = open(f"/proc/{worker}/status").read()
        threads = status.split("Threads:")[1].split()[0]
    finally:
        mixed.stop()
    out = ["\n### Mixed load: cheap requests while bcrypt hammers the same worker\n",
           f"{cheap_conns} connections of {{SSHA}} requests (new connection each, TCP), alone (*idle*) and while "
           "8 connections send bcrypt(10) logins with no cache (*loaded*). nginx with worker_processes 1 and the "
           f"module's defaults (nothing pinned here; the worker has {threads} threads), then with "
           "`mail_auth_thread_pool` on a 1-thread pool. Median [min–max] over rounds.\n",
           "| bcrypt runs on | cheap p99 idle ms | cheap p99 loaded ms | loaded ÷ idle p99 | cheap req/s kept "
           "(loaded ÷ idle) | bcrypt/s |",
           "|---|---:|---:|---:|---:|---:|"]
    for key, label in (("default", "default: thread pool `default` (32 threads), verify concurrency CPUs−1"),
                       ("pool1", "`thread_pool one threads=1`")):
        rs = res[key]
        p_idle = [i["p99_us"] / 1000 for _, _, i in rs]
        p_load = [c["p99_us"] / 1000 for c, _, _ in rs]
        out.append(f"| {label} | {rng(p_idle)} | {rng(p_load)} | "
                   f"{ratio([c['p99_us'] / i['p99_us'] for c, _, i in rs])} | "
                   f"{ratio([c['rps'] / i['rps'] for c, _, i in rs])} | {rng([h['rps'] for _, h, _ in rs])} |")
    return out


def imap_section(lg, main_ngx, backend, python, rounds, secs, notes):
    worker = main_ngx.worker()
    creds = os.path.join(WORK, "creds-100k")
    rows = [("module {SSHA} 100k users, auth_http over TCP", "mod-tcp"),
            ("module {SSHA} 100k users, auth_http over a unix socket", "mod-unix"),
            ("ceiling (static auth_http answer), TCP", "ceil-tcp"),
            ("ceiling (static auth_http answer), unix socket", "ceil-unix"),
            ("python auth_http server, TCP", "py")]
    res = {k: [] for _, k in rows}
    for r in range(rounds):
        log(f"imap: round {r + 1}/{rounds}")
        for name, key in rows:
            a = lg.argv("imap", f"127.0.0.1:{IMAP_PORTS[key]}", secs, IMAP_CONNS, creds)
            before = [cpu_ns_schedstat(worker), cpu_ns_schedstat(backend.pid)] + \
                ([cpu_ns_stat(python.pid)] if key == "py" else [])
            x = lg.run(a, secs)
            after = [cpu_ns_schedstat(worker), cpu_ns_schedstat(backend.pid)] + \
                ([cpu_ns_stat(python.pid)] if key == "py" else [])
            n = max(x["ok"], 1)
            x["worker_us"] = (after[0] - before[0]) / 1000 / n
            x["backend_us"] = (after[1] - before[1]) / 1000 / n
            x["py_us"] = (after[2] - before[2]) / 1000 / n if key == "py" else None
            x["busy"] = (after[0] - before[0]) / 1e9 / x["secs"]
            x["client_busy"] = (x["client_cpu_us"] + (after[1] - before[1]) / 1000) / 1e6 / x["secs"]
            x["client_us"] = x["client_cpu_us"] / n
            check(notes, f"imap round {r + 1}, {name}", x)
            res[key].append(x)
    out = ["\n### IMAP logins end to end (client → nginx mail → auth_http → fast backend)\n",
           f"{IMAP_CONNS} connections, each session: greeting, `a LOGIN`, `b LOGOUT`, close; the backend is "
           "`loadgen imap-backend` (Rust). **worker µs/login**: the nginx worker's CPU per login (mail session, "
           "both ends of the auth_http request, backend login, proxying). **busy**: worker CPU ÷ wall time; "
           "**client+backend busy**: the load client's and the backend's CPU ÷ wall time (both on CPU "
           f"{CLIENT_CPU}; well under 1.00 means they were not the bottleneck).\n",
           "| auth_http | logins/s | session p50/p99 ms | worker µs/login | busy | client µs/login | "
           "backend µs/login | client+backend busy | logins/s ÷ ceiling TCP | efficiency |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ceil = res["ceil-tcp"]
    for name, key in rows:
        rs = res[key]
        extra = ""
        if key == "py":
            extra = f" (+ Python {fmt(med([x['py_us'] for x in rs]))} µs/login)"
        lat = f"{fmt(med([x['p50_us'] / 1000 for x in rs]))}/{fmt(med([x['p99_us'] / 1000 for x in rs]))}"
        out.append(f"| {name} | {rng([x['rps'] for x in rs])} | {lat} | {rng([x['worker_us'] for x in rs])}{extra} | "
                   f"{fmt(med([x['busy'] for x in rs]))} | {fmt(med([x['client_us'] for x in rs]))} | "
                   f"{fmt(med([x['backend_us'] for x in rs]))} | {fmt(med([x['client_busy'] for x in rs]))} | "
                   f"{ratio([x['rps'] / c['rps'] for x, c in zip(rs, ceil) if c['rps']])} | "
                   f"{ratio([c['worker_us'] / (x['worker_us'] + (x['py_us'] or 0)) for x, c in zip(rs, ceil)])} |")
    extra = []
    for label, mod, cl in (("TCP", "mod-tcp", "ceil-tcp"), ("unix socket", "mod-unix", "ceil-unix")):
        d = [m["worker_us"] - c["worker_us"] for m, c in zip(res[mod], res[cl])]
        extra.append(f"{label} {med(d):+.0f} µs [{min(d):+.0f}–{max(d):+.0f}]")
    out.append("\n**efficiency**: ceiling-TCP worker µs/login ÷ the row's (for the Python row: worker + Python), "
               "same round. What the module adds to "
               "the worker's CPU per login over the static answer (median of per-round differences): "
               + ", ".join(extra) + ".")
    return out


def redis_section(lg, nginx, so, rounds, secs, notes):
    """{SSHA} logins with mail_auth_limit: the worker's zone alone vs the fleet's budget in
    Redis (mail_auth_limit redis=), interleaved round by round."""
    server = shutil.which("redis-server")
    if server is None:
        log("redis: redis-server not installed, section skipped")
        return ["\n### Fleet limiter (Redis)\n", "Skipped: redis-server is not installed (Debian package redis-server)."]
    with open("fleet.key", "w") as f:
        f.write("the bench's fleet secret, 32 bytes at least\n")
    os.makedirs("redis", exist_ok=True)
    redis = spawn([server, "--port", str(REDIS), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", os.path.join(WORK, "redis")], cpu=SERVER_CPU, stdout=subprocess.DEVNULL)
    wait_port(REDIS)
    ngx = Nginx(nginx, "limited", limited_conf(so)).start([LIMITED])
    try:
        worker = ngx.worker()
        creds = os.path.join(WORK, "creds-100k")
        target = f"tcp:127.0.0.1:{LIMITED}"
        rows = [("{SSHA}, mail_auth_limit (the worker's zone)", "/local"),
                ("{SSHA}, mail_auth_limit redis= (zone + Redis)", "/redis")]
        results = {}
        for r in range(rounds):
            log(f"redis: round {r + 1}/{rounds}")
            for ri, (name, path) in enumerate(rows):
                res = lg.run(lg.argv("http", target, secs, HTTP_CONNS, creds, None, path), secs,
                             [worker, redis.pid])
                res["redis_us"] = res["cpu_us_per_req"][1]
                check(notes, f"round {r + 1}, redis section, {name}", res)
                results.setdefault(ri, []).append(res)
    finally:
        ngx.stop()
    out = ["\n### Fleet limiter (Redis)\n",
           f"{HTTP_CONNS} connections, a new TCP connection per request, right passwords of 100,000 users "
           "({SSHA}); `mail_auth_limit` with limits no load reaches (every login admitted, counted and given "
           "back). The Redis row adds, per login, one admission script on the thread pool and one queued "
           "settlement (pipelined by the worker's settlement thread) to a redis-server on the same machine"
           + (f" (pinned with the worker, CPU {SERVER_CPU})" if PIN else "") + ". **worker µs/req**: the nginx "
           "worker, thread pool and settlement thread included; **redis µs/req**: redis-server's CPU. Ratios to the "
           f"zone row of the same round. Median [min–max] over {rounds} rounds.\n",
           "| limiter | req/s | worker µs/req | redis µs/req | req/s ÷ zone row | worker µs/req ÷ zone row |",
           "|---|---:|---:|---:|---:|---:|"]
    base = results[0]
    for ri, (name, _) in enumerate(rows):
        rs = results[ri]
        out.append(f"| {name} | {rng([x['rps'] for x in rs])} | {rng([x['us_per_req'] for x in rs])} | "
                   f"{rng([x['redis_us'] for x in rs]) if ri else '–'} | "
                   f"{ratio([x['rps'] / b['rps'] for x, b in zip(rs, base) if b['rps']])} | "
                   f"{ratio([x['us_per_req'] / b['us_per_req'] for x, b in zip(rs, base) if b['us_per_req']])} |")
    return out


def rss_one(nginx, so, location_conf, user, pw):
    n = Nginx(nginx, "rss", rss_conf(so, location_conf)).start([RSS])
    try:
        warm(RSS, "/a", user, pw)
        time.sleep(0.3)
        w = n.worker()
        return status_kb(w, "VmRSS"), status_kb(w, "VmHWM")
    finally:
        n.stop()


def rss_section(nginx, so, bcrypt_line):
    log("rss: baseline (100 users), 100k, 1M users")
    base = rss_one(nginx, so, "mail_auth_passwd_file users-100;", "u42", "pw-42")
    k100 = rss_one(nginx, so, "mail_auth_passwd_file users-100k;", "u42", "pw-42")
    sql = rss_one(nginx, so, "mail_auth_sqlite users-100k.db;", "u42", "pw-42")
    with open("users-1m", "w") as f:
        for u, _, h in user_lines(1_000_000):
            f.write(f"{u}:{h}\n")
    size_1m = os.path.getsize("users-1m")
    m1 = rss_one(nginx, so, "mail_auth_passwd_file users-1m;", "u999999", "pw-999999")
    os.remove("users-1m")
    size_100k = os.path.getsize("users-100k")

    def per_user(v, n, i):
        return f"{(v[i] - base[i]) * 1024 / (n - 100):.0f}"
    out = ["\n### Worker memory\n",
           "VmRSS (after one login) and VmHWM (peak) of the single worker, minus the same nginx with a 100-user "
           "passwd-file, per extra user.\n",
           "| store | file size | VmRSS MiB | VmHWM MiB | RSS bytes/user | peak bytes/user |",
           "|---|---:|---:|---:|---:|---:|",
           f"| passwd-file, 100 users (baseline) | – | {base[0] / 1024:.1f} | {base[1] / 1024:.1f} | – | – |",
           f"| passwd-file, 100k {{SSHA}} users | {size_100k / 1e6:.1f} MB | {k100[0] / 1024:.1f} | "
           f"{k100[1] / 1024:.1f} | {per_user(k100, 100_000, 0)} | {per_user(k100, 100_000, 1)} |",
           f"| passwd-file, 1M {{SSHA}} users | {size_1m / 1e6:.1f} MB | {m1[0] / 1024:.1f} | {m1[1] / 1024:.1f} | "
           f"{per_user(m1, 1_000_000, 0)} | {per_user(m1, 1_000_000, 1)} |",
           f"| SQLite, 100k users (one login read) | {os.path.getsize('users-100k.db') / 1e6:.1f} MB | "
           f"{sql[0] / 1024:.1f} | {sql[1] / 1024:.1f} | {per_user(sql, 100_000, 0)} | {per_user(sql, 100_000, 1)} |"]
    return out


# ---------------------------------------------------------------- directory stores

def run_as(user, argv, **kw):
    """A command as `user` when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def start_pg(bcrypt_hash):
    """A throwaway PostgreSQL cluster on loopback with a users table; its DSN, or None."""
    import glob
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        return None, "PostgreSQL not installed (postgresql package)"
    bin_dir = os.path.dirname(bins[-1])
    d = os.path.join(WORK, "pg")
    os.makedirs(d)
    if os.geteuid() == 0:
        shutil.chown(d, "postgres", "postgres")
    r = run_as("postgres", [f"{bin_dir}/initdb", "-D", f"{d}/data", "-U", "postgres", "--auth=trust", "--no-sync"])
    if r.returncode:
        return None, f"initdb failed: {r.stderr.strip()[-300:]}"
    r = run_as("postgres", [f"{bin_dir}/pg_ctl", "-D", f"{d}/data", "-l", f"{d}/pg.log", "-w", "-t", "30", "-o",
                            f"-k {d} -p {PG_PORT} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off", "start"])
    if r.returncode:
        return None, f"pg_ctl start failed: {r.stderr.strip()[-300:]}"
    CLEANUP.append(lambda: run_as("postgres", [f"{bin_dir}/pg_ctl", "-D", f"{d}/data", "-m", "immediate", "stop"]))
    rows = "".join(f"{u}\t{h}\n" for u, _, h in user_lines(N_STORE_USERS)) + f"bench\t{bcrypt_hash}\n"
    sql = ("CREATE TABLE users (name text PRIMARY KEY, password text NOT NULL);\n"
           "COPY users FROM STDIN;\n" + rows + "\\.\n")
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U",
                        "postgres", "-d", "postgres"], input=sql, capture_output=True, text=True)
    if r.returncode:
        return None, f"psql failed: {r.stderr.strip()[-300:]}"
    return f"host=127.0.0.1 port={PG_PORT} user=postgres dbname=postgres", None


def start_mariadb(bcrypt_hash):
    """A throwaway MariaDB datadir on loopback with a users table; (DSN, password file), or None."""
    server = next((p for p in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld") if os.path.exists(p)), None)
    if not server or not shutil.which("mariadb-install-db"):
        return None, "MariaDB not installed (mariadb-server package)"
    d = os.path.join(WORK, "my")
    os.makedirs(d)
    user = "mysql" if os.geteuid() == 0 else None
    if user:
        shutil.chown(d, user, user)
    r = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={d}/data", f"--user={user or os.getlogin()}",
                        "--skip-test-db", "--auth-root-authentication-method=socket"], capture_output=True, text=True)
    if r.returncode:
        return None, f"mariadb-install-db failed: {r.stderr.strip()[-300:]}"
    spawn([server, "--no-defaults", f"--datadir={d}/data", f"--socket={d}/sock", f"--port={MY_PORT}",
           "--bind-address=127.0.0.1", *([f"--user={user}"] if user else []), f"--pid-file={d}/pid",
           f"--log-error={d}/error.log", "--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--skip-log-bin",
           "--max-connections=200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 30
    while time.time() < end and not os.path.exists(f"{d}/sock"):
        time.sleep(0.1)
    wait_port(MY_PORT, secs=30)
    values = ",".join(f"('{u}','{h}')" for u, _, h in user_lines(N_STORE_USERS))
    sql = ("CREATE DATABASE mail; CREATE USER bench@'127.0.0.1' IDENTIFIED BY 'bench-db-pw';"
           "GRANT SELECT ON mail.* TO bench@'127.0.0.1';"
           "CREATE TABLE mail.users (name VARCHAR(64) PRIMARY KEY, password VARCHAR(255) NOT NULL);"
           f"INSERT INTO mail.users VALUES {values},('bench','{bcrypt_hash}');")
    r = subprocess.run(["mariadb", "--no-defaults", "-u", "root", f"--socket={d}/sock"], input=sql,
                       capture_output=True, text=True)
    if r.returncode:
        return None, f"mariadb failed: {r.stderr.strip()[-300:]}"
    with open("my.pw", "w") as f:
        f.write("bench-db-pw\n")
    return f"host=127.0.0.1 port={MY_PORT} user=bench dbname=mail", None


def start_slapd(bcrypt_hash):
    """A throwaway OpenLDAP slapd on loopback with the users as inetOrgPerson entries."""
    slapd = "/usr/sbin/slapd"
    if not os.path.exists(slapd) or not shutil.which("slapadd"):
        return None, "OpenLDAP not installed (slapd package)"
    d = os.path.join(WORK, "ldap")
    os.makedirs(f"{d}/db")
    base = "dc=example,dc=org"
    with open(f"{d}/slapd.conf", "w") as f:
        f.write("".join(f"include /etc/ldap/schema/{s}.schema\n" for s in ("core", "cosine", "inetorgperson"))
                + f"pidfile {d}/slapd.pid\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n"
                f"database mdb\nsuffix \"{base}\"\nrootdn \"cn=admin,{base}\"\nrootpw admin-pw\n"
                f"directory {d}/db\nmaxsize 1073741824\nindex objectClass,uid eq\naccess to * by * read\n")
    with open(f"{d}/tree.ldif", "w") as f:
        f.write(f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
                f"dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n\n")
        users = [*((u, h) for u, _, h in user_lines(N_STORE_USERS)), ("bench", "{CRYPT}" + bcrypt_hash)]
        for u, h in users:
            f.write(f"dn: uid={u},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\n"
                    f"userPassword: {h}\n\n")
    r = subprocess.run(["slapadd", "-q", "-f", f"{d}/slapd.conf", "-l", f"{d}/tree.ldif"], capture_output=True,
                       text=True)
    if r.returncode:
        return None, f"slapadd failed: {r.stderr.strip()[-300:]}"
    r = subprocess.run([slapd, "-f", f"{d}/slapd.conf", "-h", f"ldap://127.0.0.1:{LDAP_PORT}/"], capture_output=True,
                       text=True)
    if r.returncode:
        return None, f"slapd failed: {r.stderr.strip()[-300:]}"

    def stop():
        try:
            os.kill(int(open(f"{d}/slapd.pid").read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    CLEANUP.append(stop)
    wait_port(LDAP_PORT)
    return f"ldap://127.0.0.1:{LDAP_PORT} base=ou=people,{base}", None


def stores_conf(so, pg, my, ldap, pin):
    b = BACKEND
    module = f"mail_auth_backend imap 127.0.0.1:{b};"
    static = f"add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port {b};"
    cache = "mail_auth_cache zone=bench_{}:4m ttl=1h;"
    locs = [f"location = /ceiling {{ {static} return 204; }}",
            f"location = /sqlite {{ mail_auth; mail_auth_sqlite users-100k.db; {module} }}"]
    if pg:
        sql = f'mail_auth_sql postgresql "{pg}" pool=8; mail_auth_sql_query "SELECT password FROM users WHERE name = :user";'
        locs += [f"location = /pg {{ mail_auth; {sql} {module} }}",
                 f"location = /pg-bcrypt {{ mail_auth; {sql} {module} {cache.format('pg')} }}"]
    if my:
        sql = (f'mail_auth_sql mysql "{my}" password_file={WORK}/my.pw pool=8; '
               'mail_auth_sql_query "SELECT password FROM users WHERE name = :user";')
        locs += [f"location = /my {{ mail_auth; {sql} {module} }}",
                 f"location = /my-bcrypt {{ mail_auth; {sql} {module} {cache.format('my')} }}"]
    if ldap:
        locs += [f"location = /ldap-bind {{ mail_auth; mail_auth_ldap {ldap} pool=8; {module} }}",
                 f"location = /ldap-password {{ mail_auth; mail_auth_ldap {ldap} mode=password pool=8; {module} }}",
                 f"location = /ldap-bcrypt {{ mail_auth; mail_auth_ldap {ldap} mode=password pool=8; {module} "
                 f"{cache.format('ldap')} }}"]
    body = "\n        ".join(locs)
    return conf_head([so], "stores", pin) + f"""    server {{
        listen 127.0.0.1:{STORES} backlog=4096;
        {body}
    }}
}}
"""


def stores_section(lg, nginx, so, bcrypt_line, rounds, secs, notes):
    bcrypt_hash = bcrypt_line.split(":", 1)[1]
    with open("creds-10k", "w") as c:
        for u, p, _ in user_lines(N_STORE_USERS):
            c.write(f"{u}:{p}\n")
    creds = os.path.join(WORK, "creds-10k")
    log("stores: PostgreSQL, MariaDB, slapd on loopback with 10,000 users")
    servers = {}
    for name, start in (("pg", start_pg), ("my", start_mariadb), ("ldap", start_slapd)):
        try:
            servers[name], why = start(bcrypt_hash)
        except (OSError, BenchError, subprocess.SubprocessError) as e:
            servers[name], why = None, str(e)
        if why:
            notes.append(f"stores: {name} rows skipped: {why}")
    ngx = Nginx(nginx, "stores", stores_conf(so, servers["pg"], servers["my"], servers["ldap"], PIN)).start([STORES])
    try:
        worker = ngx.worker()
        rows = [("ceiling: return 204 + static Auth-* headers", "/ceiling", creds, None)]
        rows.append(("SQLite {SSHA}, 100k users (local reference)", "/sqlite", creds, None))
        if servers["pg"]:
            rows += [("PostgreSQL {SSHA}, 10k users: a query per login, no cache", "/pg", creds, None),
                     ("PostgreSQL bcrypt(10), verdict cache warm: a query per login", "/pg-bcrypt", "bench", "bench-pw")]
        if servers["my"]:
            rows += [("MariaDB {SSHA}, 10k users: a query per login, no cache", "/my", creds, None),
                     ("MariaDB bcrypt(10), verdict cache warm: a query per login", "/my-bcrypt", "bench", "bench-pw")]
        if servers["ldap"]:
            rows += [("LDAP mode=bind, 10k users: a search and a bind per login (no cache: the directory checks)",
                      "/ldap-bind", creds, None),
                     ("LDAP mode=password {SSHA}, 10k users: a search per login, no cache", "/ldap-password", creds,
                      None),
                     ("LDAP mode=password bcrypt(10), verdict cache warm: a search per login", "/ldap-bcrypt", "bench",
                      "bench-pw")]
        results = {}
        target = f"tcp:127.0.0.1:{STORES}"
        for r in range(rounds):
            log(f"stores: round {r + 1}/{rounds}")
            for ri, (name, path, users, pw) in enumerate(rows):
                if pw is not None:
                    warm(STORES, path, users, pw)
                res = lg.run(lg.argv("http", target, secs, HTTP_CONNS, users, pw, path), secs, [worker])
                check(notes, f"stores round {r + 1}, {name}", res, "ok")
                results.setdefault(ri, []).append(res)
    finally:
        ngx.stop()
    out = ["\n### Directory stores (PostgreSQL, MariaDB, OpenLDAP)\n",
           f"A new connection per auth_http request over TCP (as nginx mail), {HTTP_CONNS} connections, the servers "
           "started by the benchmark on loopback (not pinned; their own CPU is not in the worker's figure). "
           "**worker µs/req**: the nginx worker's CPU (its thread pool included: the store's client runs there). "
           "**req/s ÷ ceiling** and **÷ SQLite** compare with those rows of the same round. A `{SSHA}` row is "
           "the uncached case (a cheap hash: the verdict cache is not used for it, every login asks the server); "
           "a bcrypt row with the verdict cache warm is the cached case (the server is still asked for the "
           "account, policy and routing on every login; only the hash is skipped). Median [min–max] over "
           f"{rounds} rounds.\n",
           "| contender | req/s | worker µs/req | req/s ÷ ceiling | req/s ÷ SQLite |",
           "|---|---:|---:|---:|---:|"]
    ceil, lite = results[0], results[1]
    for ri, row in enumerate(rows):
        rs = results[ri]
        rps = [x["rps"] for x in rs]
        us = [x["us_per_req"] for x in rs]
        rc = [x["rps"] / c["rps"] for x, c in zip(rs, ceil) if c["rps"]]
        rl = [x["rps"] / c["rps"] for x, c in zip(rs, lite) if c["rps"]]
        out.append(f"| {row[0]} | {rng(rps)} | {rng(us)} | {ratio(rc)} | {ratio(rl)} |")
    return out


if __name__ == "__main__":
    main()
