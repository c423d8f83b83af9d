"""Helpers for the Redis source tests: a real redis-server (Debian's) on a free loopback port
in its own directory, a minimal RESP client (no Redis client library needed), the data that
fills a server with keys of every type, the comparison of two servers key by key, and runs of
the redis_snap test driver (tests/source/redis_snap.c)."""
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import skips  # noqa: E402
from ports import free_port  # noqa: E402

BIN = os.environ.get("CAIRN_BIN", "build")
SNAP = os.path.join(BIN, "redis_snap")
REDIS_SERVER = "/usr/bin/redis-server"
CHECK_RDB = "/usr/bin/redis-check-rdb"
# Deadlines bound a hang on a loaded machine; nothing here measures speed by them.
WAIT = 120


def require_redis():
    for p in (REDIS_SERVER, CHECK_RDB):
        if not os.access(p, os.X_OK):
            skips.missing("%s (Debian redis-server, redis-tools)" % p)
    if not os.access(SNAP, os.X_OK):
        skips.skip("%s not built" % SNAP)


class RespError(Exception):
    pass


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a)
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Resp:
    """One connection; call() for a command, pipeline() for many (replies in order, errors
    returned as RespError values, not raised)."""

    def __init__(self, port, password=None, user=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.f = self.sock.makefile("rb", buffering=1 << 16)
        if password is not None:
            self.call("AUTH", *([user] if user else []), password)

    def close(self):
        self.f.close()
        self.sock.close()

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError("unexpected RESP %r" % line[:40])

    def call(self, *args):
        self.sock.sendall(_encode(args))
        r = self._read()
        if isinstance(r, RespError):
            raise r
        return r

    def pipeline(self, cmds, batch=2000):
        out = []
        for i in range(0, len(cmds), batch):
            part = cmds[i:i + batch]
            self.sock.sendall(b"".join(_encode(c) for c in part))
            out.extend(self._read() for _ in part)
        return out


class RedisServer:
    """redis-server on 127.0.0.1:PORT in DIR, loading DIR/dump.rdb if it is there. With tls
    (pki.make_pki's paths, plus "auth_clients": "yes" or "no") it also listens with TLS on
    tls_port; the plain port stays for the test's own client."""

    def __init__(self, dir, *extra, password=None, tls=None):
        self.dir = dir
        self.password = password
        self.tls = tls
        os.makedirs(dir, exist_ok=True)
        # A free port can be taken by another test between free_port() and the server's bind:
        # then it exits saying so, and another port is picked.
        for attempt in range(5):
            try:
                return self._start(extra)
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 4:
                    raise

    def _start(self, extra):
        self.port = free_port()
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--dbfilename", "dump.rdb", "--appendonly", "no", "--save", "",
                "--logfile", os.path.join(self.dir, "redis.log"), "--daemonize", "no",
                "--enable-debug-command", "local", "--repl-diskless-sync-delay", "0"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.tls is not None:
            self.tls_port = free_port()
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", self.tls["cert"],
                     "--tls-key-file", self.tls["key"], "--tls-ca-cert-file", self.tls["ca"],
                     "--tls-auth-clients", self.tls.get("auth_clients", "no")]
        self.proc = subprocess.Popen(args + list(extra), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self):
        # The condition: PING answers PONG (and the dataset is loaded: no -LOADING).
        end = time.monotonic() + WAIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited %d: %s" % (self.proc.returncode,
                                                                   self.log_tail()))
            try:
                c = self.client()
                try:
                    # PONG from our own process, not another test's server on the port.
                    if (c.call("PING") == b"PONG" and
                            b"process_id:%d\r\n" % self.proc.pid in c.call("INFO", "server")):
                        return
                finally:
                    c.close()
            except (OSError, RespError, ConnectionError):
                pass
            if time.monotonic() > end:
                raise RuntimeError("redis-server on %d not ready: %s" % (self.port,
                                                                         self.log_tail()))
            time.sleep(0.05)

    def log_tail(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return "".join(f.readlines()[-5:])
        except OSError:
            return ""

    def client(self):
        return Resp(self.port, password=self.password)

    def stop(self):
        if self.proc.poll() is None:
            try:
                c = self.client()
                c.sock.sendall(_encode(["SHUTDOWN", "NOSAVE"]))
                c.close()
            except (OSError, RespError, ConnectionError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(timeout=30)


def fill(c, n, seed=1):
    """n keys, every type in turn: strings (ints, short, long), lists, hashes, sets (ints and
    strings), sorted sets, streams (some with a consumer group); every 7th key expires in a
    day. Sizes vary so that each type appears in its small (listpack, intset) and large
    encodings."""
    cmds = []
    for i in range(n):
        t = i % 6
        big = i % 97 == 0  # past every listpack/intset limit
        m = 300 if big else 1 + (i * seed) % 9
        if t == 0:
            v = str(i * 7919) if i % 3 == 0 else ("v%d-" % i) * (200 if big else 1 + i % 5)
            cmds.append(["SET", "s:%d" % i, v])
        elif t == 1:
            cmds.append(["RPUSH", "l:%d" % i] + ["e%d" % (i + j) for j in range(m)])
        elif t == 2:
            kv = []
            for j in range(m):
                kv += ["f%d" % j, "%d" % (i * j)]
            cmds.append(["HSET", "h:%d" % i] + kv)
        elif t == 3:
            members = [str(i + j) if i % 2 else "m%d" % (i + j) for j in range(m)]
            cmds.append(["SADD", "t:%d" % i] + members)
        elif t == 4:
            sm = []
            for j in range(m):
                sm += ["%d.5" % (i - j), "z%d" % j]
            cmds.append(["ZADD", "z:%d" % i] + sm)
        else:
            key = "x:%d" % i
            for j in range(1 + m // 3):
                cmds.append(["XADD", key, "*", "f", str(j), "g", "v%d" % i])
            if i % 100 == 5:
                cmds.append(["XGROUP", "CREATE", key, "grp", "0"])
                cmds.append(["XREADGROUP", "GROUP", "grp", "c1", "COUNT", "1", "STREAMS", key,
                             ">"])
        if i % 7 == 0:
            cmds.append(["EXPIRE", ["s", "l", "h", "t", "z", "x"][t] + ":%d" % i, 86400])
    for r in c.pipeline(cmds):
        if isinstance(r, RespError):
            raise r


def all_keys(c):
    keys, cursor = [], b"0"
    while True:
        cursor, part = c.call("SCAN", cursor, "COUNT", 5000)
        keys.extend(part)
        if cursor == b"0":
            return keys


def keyspace(c):
    """"keys=N,expires=M" of db0 (avg_ttl differs between servers)."""
    for line in c.call("INFO", "keyspace").decode().splitlines():
        if line.startswith("db0:"):
            return ",".join(p for p in line[4:].split(",") if not p.startswith("avg_ttl"))
    return "keys=0,expires=0"


def compare(a, b, keys=None):
    """Differences between servers a and b (clients): DBSIZE, keyspace counts, DEBUG DIGEST,
    then every key's DUMP (keys: the ones to compare, default all of a's). Returns a list of
    problems, empty when they hold the same data."""
    problems = []
    if keys is None:
        if a.call("DBSIZE") != b.call("DBSIZE"):
            problems.append("DBSIZE %s != %s" % (a.call("DBSIZE"), b.call("DBSIZE")))
        if keyspace(a) != keyspace(b):
            problems.append("keyspace %s != %s" % (keyspace(a), keyspace(b)))
        if a.call("DEBUG", "DIGEST") != b.call("DEBUG", "DIGEST"):
            problems.append("DEBUG DIGEST differs")
        keys = all_keys(a)
    da = a.pipeline([["DUMP", k] for k in keys])
    db = b.pipeline([["DUMP", k] for k in keys])
    bad = [k for k, x, y in zip(keys, da, db) if x is None or x != y]
    if bad:
        problems.append("%d of %d keys differ in DUMP, e.g. %r" % (len(bad), len(keys), bad[:3]))
    return problems


class Writer(threading.Thread):
    """Writes while a snapshot is taken: INCR w:seq, then SET w:<that number>, one after the
    other. A point-in-time copy with w:seq = S holds w:1 .. w:S-1 (maybe w:S), nothing
    beyond."""

    def __init__(self, port, password=None):
        super().__init__(daemon=True)
        self.c = Resp(port, password=password)
        self.stop_ev = threading.Event()
        self.count = 0

    def run(self):
        while not self.stop_ev.is_set():
            k = self.c.call("INCR", "w:seq")
            self.c.call("SET", "w:%d" % k, "x" * 50)
            self.count = k

    def stop(self):
        self.stop_ev.set()
        self.join(WAIT)
        self.c.close()


def writes_consistent(c):
    """The check Writer's comment describes, on the restored server c."""
    seq = c.call("GET", "w:seq")
    if seq is None:
        return ["w:seq missing"]
    s = int(seq)
    have = c.pipeline([["EXISTS", "w:%d" % k] for k in range(1, s + 2)])
    missing = [k for k, e in zip(range(1, s), have) if e != 1]
    if missing or have[s] != 0:
        return ["writes not point-in-time at w:seq=%d: missing %r, w:%d exists=%s" %
                (s, missing[:3], s + 1, have[s])]
    return []


def snap(host, port, out, password=None, user=None, extra=(), timeout=WAIT * 5):
    """Run redis_snap (the password through its environment); (exit code, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("REDIS_SNAP_PASSWORD", None)
    if password is not None:
        env["REDIS_SNAP_PASSWORD"] = password
    args = [SNAP] + list(extra) + (["--user", user] if user else []) + [host, str(port), out]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        o, e = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        o, e = p.communicate()
    return p.returncode, o.decode(errors="replace"), e.decode(errors="replace")


def measure_snap(host, port, out, extra=()):
    """redis_snap with its own peak RSS (os.wait4): (code, stdout, stderr, KiB, seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen([SNAP] + list(extra) + [host, str(port), out], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    o = p.stdout.read()
    e = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return (p.returncode, o.decode(errors="replace"), e.decode(errors="replace"), ru.ru_maxrss,
            time.monotonic() - t0)
