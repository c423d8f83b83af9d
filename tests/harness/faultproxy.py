"""A fault-injecting TCP proxy for the tests (python3 stdlib only).

Every accepted connection gets the next action of a plan (a list, cycled) or a seeded random
choice from weighted actions:

  pass       relay both ways untouched
  reset      read the start of the request, then RST (SO_LINGER 0) without answering
  reset_mid  relay the request, relay part of the answer, then RST
  short      relay the request, relay part of the answer, then a clean close (short read)
  stall      read the request and never answer; the connection is held until the proxy stops
             or `stall_s` passes (longer than any client deadline under test)
  http500    answer an HTTP request with 500 InternalError (S3 XML body), then close
  http503    answer with 503 SlowDown, then close
  slow       relay, with a delay before every chunk of the answer
  flip       relay both ways, but XOR one byte of the answer with 0x01, at an offset drawn as
             short's cut is (short_range=(N, N) flips byte N)

With http=True each connection carries exactly one request: "Connection: close" is added to
the request head, so a client with keep-alive (libcurl) opens a new connection for every
request and the plan applies per request. With alternate=True as well, the plan applies per
request line instead: each request's attempts alternate fault and pass, the faults taken in
turn from the plan, so a retrying client always gets through however its concurrent requests
interleave.

Use from Python:
    p = FaultProxy(("127.0.0.1", 9000), plan=["reset", "pass"], http=True).start()
    ... p.port ... p.stats ... p.set_plan([...]) ... p.stop()
or from a shell:
    python3 faultproxy.py --upstream 127.0.0.1:9000 --plan reset,pass [--http] \
        [--random pass=8,reset=1,http503=1 --seed 1] [--port-file F] [--stats-file F]
(prints "listening on 127.0.0.1:PORT", writes stats JSON on SIGTERM).
"""
import argparse
import json
import random
import signal
import socket
import struct
import sys
import threading
import time

ACTIONS = ("pass", "reset", "reset_mid", "short", "stall", "http500", "http503", "slow", "flip")


class FaultProxy:
    def __init__(self, upstream, plan=None, weights=None, seed=0, http=False, stall_s=120.0,
                 short_range=(1, 600), alternate=False):
        self.upstream = upstream
        self.http = http
        self.stall_s = stall_s
        self.short_range = short_range
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stats = {a: 0 for a in ACTIONS}
        self.stats["connections"] = 0
        self.stats["cut"] = 0  # reset_mid/short that did cut an answer (not all of it passed)
        self.set_plan(plan, weights, alternate)
        self.stopping = threading.Event()
        self.conns = set()
        self.sock = None
        self.port = None

    def set_plan(self, plan=None, weights=None, alternate=False):
        """alternate (HTTP only): each request, told apart by its request line, alternates
        fault and pass from its own first attempt on, the faults taken in turn from the plan's
        non-pass actions. Unlike a plan cycled over connections, this cannot hand one request
        a fault at every attempt when concurrent requests interleave in step with the plan."""
        with getattr(self, "lock", threading.Lock()):
            for a in (plan or []) + list((weights or {}).keys()):
                if a not in ACTIONS:
                    raise ValueError("unknown fault action %r" % a)
            self.plan = list(plan or [])
            self.weights = dict(weights or {})
            self.index = 0
            self.alternate = alternate
            self.attempts = {}

    def _next_action(self, request=None):
        with self.lock:
            self.stats["connections"] += 1
            faults = [x for x in self.plan if x != "pass"]
            if request is not None and faults:
                n = self.attempts.get(request, 0)
                self.attempts[request] = n + 1
                if n % 2 == 0:
                    a = faults[self.index % len(faults)]
                    self.index += 1
                else:
                    a = "pass"
            elif self.plan:
                a = self.plan[self.index % len(self.plan)]
                self.index += 1
            elif self.weights:
                names = sorted(self.weights)
                a = self.rng.choices(names, [self.weights[n] for n in names])[0]
            else:
                a = "pass"
            self.stats[a] += 1
            return a

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            _close(c)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    # ---- one connection ----

    def _serve(self, c):
        up = None
        try:
            c.settimeout(30)
            head = None
            if self.http and self.alternate:
                head = self._read_head(c)
                if head is None:
                    return
                a = self._next_action(head.split(b"\r\n", 1)[0])
            else:
                a = self._next_action()
            if a == "reset":
                if head is None:
                    c.recv(4096)
                _rst(c)
                return
            if a == "stall":
                c.settimeout(1.0)
                end = time.time() + self.stall_s
                while time.time() < end and not self.stopping.is_set():
                    try:
                        if not c.recv(65536):
                            break
                    except socket.timeout:
                        continue
                return
            if a in ("http500", "http503"):
                self._http_error(c, 500 if a == "http500" else 503, head)
                return
            up = socket.create_connection(self.upstream, timeout=30)
            with self.lock:
                self.conns.add(up)
            if self.http:
                if head is None:
                    head = self._read_head(c)
                if head is None:
                    return
                head = _add_close(head)
            else:
                head = b""
            limit = None
            if a in ("reset_mid", "short", "flip"):
                with self.lock:
                    limit = self.rng.randint(*self.short_range)
            t = threading.Thread(target=_pump, args=(c, up, head), daemon=True)
            t.start()
            sent = 0
            up.settimeout(60)
            while True:
                try:
                    data = up.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                if a == "slow":
                    time.sleep(0.05)
                if a == "flip" and sent <= limit < sent + len(data):
                    i = limit - sent
                    data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
                elif limit is not None and a != "flip" and sent + len(data) > limit:
                    c.sendall(data[:limit - sent])
                    with self.lock:
                        self.stats["cut"] += 1
                    # Wake the request pump (a close() would wait for its recv), then end the
                    # connection: RST (linger 0) or a clean FIN.
                    if a == "reset_mid":
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        c.shutdown(socket.SHUT_RD)
                    else:
                        c.shutdown(socket.SHUT_RDWR)
                    t.join(timeout=5)
                    return
                c.sendall(data)
                sent += len(data)
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            t.join(timeout=60)
        except OSError:
            pass
        finally:
            for s in (c, up):
                if s is not None:
                    _close(s)
                    with self.lock:
                        self.conns.discard(s)

    def _read_head(self, c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return None
            buf += d
            if len(buf) > 1 << 20:
                return None
        return buf

    def _http_error(self, c, status, head=None):
        if head is None:
            head = self._read_head(c)
        if head is None:
            return
        code = "InternalError" if status == 500 else "SlowDown"
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
                "<Message>injected by faultproxy</Message></Error>" % code).encode()
        reason = "Internal Server Error" if status == 500 else "Service Unavailable"
        c.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % (status, reason.encode(), len(body)) + body)
        try:
            c.shutdown(socket.SHUT_WR)
            c.settimeout(2)
            while c.recv(65536):  # drain a body the client may still send
                pass
        except OSError:
            pass


def _add_close(head):
    i = head.index(b"\r\n\r\n")
    lines = head[:i].split(b"\r\n")
    lines = [l for l in lines if not l.lower().startswith(b"connection:")]
    return b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + head[i + 4:]


def _pump(src, dst, first):
    try:
        if first:
            dst.sendall(first)
        while True:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _rst(s):
    try:
        s.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(s)


def _close(s):
    try:
        s.close()
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--plan", default="")
    ap.add_argument("--random", default="", help="weights, e.g. pass=8,reset=1,http503=1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--http", action="store_true")
    ap.add_argument("--stall-s", type=float, default=120.0)
    ap.add_argument("--port-file")
    ap.add_argument("--stats-file")
    a = ap.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    plan = [x for x in a.plan.split(",") if x]
    weights = {k: float(v) for k, v in (x.split("=") for x in a.random.split(",") if x)}
    p = FaultProxy((host, int(port)), plan=plan, weights=weights, seed=a.seed, http=a.http,
                   stall_s=a.stall_s).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if a.port_file:
        with open(a.port_file, "w") as f:
            f.write("%d\n" % p.port)
    print("listening on %s" % p.addr, flush=True)
    done.wait()
    p.stop()
    if a.stats_file:
        with open(a.stats_file, "w") as f:
            json.dump(p.stats, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
