"""Slowloris against a real cairnd's /metrics listener: while 1,000 idle connections (topped
up as the server closes them) and 40 tricklers sending one header byte every 4 s come from
127.0.0.1, a scraper on 127.0.0.2 (all of 127/8 is loopback on Linux) fetches /metrics and
/healthz once a second, and every scrape succeeds within a generous per-scrape timeout. The
per-address limit (default 8) keeps the attackers to a few slots, far below the connection
limit (default 128); with the old settings (32 connections, no per-address limit) the
attackers held every slot and each scrape timed out.

Bounded: at most 1,000 + 40 attacker sockets, 24 scrapes (six trickle periods), attacker
reconnects rate-limited."""
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import skips  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

BIN = os.environ.get("CAIRN_BIN", os.path.join(os.path.dirname(__file__), "../../build"))
IDLE, TRICKLERS, TRICKLE_EVERY, SCRAPES = 1000, 40, 4.0, 24
SCRAPE_TIMEOUT = 60.0  # a hang detector per scrape, not a latency claim
ATTACKER, SCRAPER = "127.0.0.1", "127.0.0.2"


def scrape(port, path):
    """One GET from SCRAPER; the body on HTTP 200, else None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=SCRAPE_TIMEOUT,
                                      source_address=(SCRAPER, 0)) as s:
            s.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        print("scrape %s: %s" % (path, e), flush=True)
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        print("scrape %s: %r" % (path, head[:80]), flush=True)
        return None
    return body


def alive(s):
    """The server has not closed s (still connecting counts as alive)."""
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def open_attacker(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.bind((ATTACKER, 0))
    s.connect_ex(("127.0.0.1", port))
    return s


class Attack(threading.Thread):
    """Keeps IDLE idle sockets and TRICKLERS tricklers open, reopening what the server
    closes (at most 100 idle reopens a second), until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop = port, threading.Event()
        self.idle, self.trick = [], []  # [socket, born]; [socket, born, next send time]
        self.closed_by_server, self.bytes_sent, self.held_max = 0, 0, 0
        self.rounds = 0

    def run(self):
        while not self.stop.is_set():
            now = time.monotonic()
            self.idle = [i for i in self.idle if alive(i[0]) or self.drop(i[0])]
            for _ in range(min(100, IDLE - len(self.idle))):
                self.idle.append([open_attacker(self.port), now])
            for t in self.trick:
                if t[2] <= now:
                    try:
                        t[0].send(b"X")  # a header line that never ends
                        self.bytes_sent += 1
                    except (BlockingIOError, OSError):
                        pass
                    t[2] = now + TRICKLE_EVERY
            self.trick = [t for t in self.trick if alive(t[0]) or self.drop(t[0])]
            while len(self.trick) < TRICKLERS:
                self.trick.append([open_attacker(self.port), now, now])
            # Held by the server: open for 3 s or more (a refused one is closed at once).
            held = sum(1 for i in self.idle + self.trick if now - i[1] >= 3 and alive(i[0]))
            self.held_max = max(self.held_max, held)
            self.rounds += 1
            self.stop.wait(1.0)
        for i in self.idle + self.trick:
            i[0].close()

    def drop(self, s):
        self.closed_by_server += 1
        s.close()
        return False


def main():
    if not os.path.exists(os.path.join(BIN, "cairnd")):
        skips.skip("no cairnd in " + BIN)
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1, source_address=(SCRAPER, 0))
    except ConnectionRefusedError:
        pass
    except OSError as e:
        skips.skip("cannot bind %s here: %s" % (SCRAPER, e))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE + TRICKLERS + 200
    if hard != resource.RLIM_INFINITY and hard < want:
        skips.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    tmp = tempfile.mkdtemp(prefix="cairn-slowloris-")
    proc = None
    failures = []
    try:
        os.makedirs(os.path.join(tmp, "src"))
        with open(os.path.join(tmp, "src", "a.txt"), "w") as f:
            f.write("hello\n")
        init_location("file://%s/backups" % tmp)
        conf = os.path.join(tmp, "cairnd.conf")
        with open(conf, "w") as f:
            f.write("[cairnd]\nstate-dir = %s/state\nmetrics-listen = 127.0.0.1:0\n\n"
                    "[schedule files]\nsource = %s/src\nto = file://%s/backups\nevery = 24h\n"
                    "keep-last = 1\n" % (tmp, tmp, tmp))
        os.makedirs(os.path.join(tmp, "state"))
        log = open(os.path.join(tmp, "run.log"), "w+")
        proc = subprocess.Popen([os.path.join(BIN, "cairnd"), "run", "--config", conf],
                                stdout=log, stderr=subprocess.STDOUT)
        port, deadline = None, time.monotonic() + 120
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics",
                          open(log.name).read())
            port = int(m.group(1)) if m else None
            time.sleep(0.1)
        if port is None:
            raise SystemExit("FAIL: cairnd did not start: " + open(log.name).read())
        if scrape(port, "/metrics") is None:
            raise SystemExit("FAIL: no scrape before the attack")

        attack = Attack(port)
        attack.start()
        # The attack is in place once it has filled both pools and trickled to every trickler.
        deadline = time.monotonic() + 300
        while (attack.rounds < IDLE // 100 + 2 or attack.bytes_sent < TRICKLERS) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        print("attack in place: %d rounds, %d bytes trickled, %d sockets closed by the server"
              % (attack.rounds, attack.bytes_sent, attack.closed_by_server), flush=True)

        worst, ok = 0.0, 0
        for i in range(SCRAPES):
            t0 = time.monotonic()
            path = "/metrics" if i % 2 == 0 else "/healthz"
            body = scrape(port, path)
            worst = max(worst, time.monotonic() - t0)
            want = b"cairn_" if path == "/metrics" else b"ok"
            if body is None or want not in body:
                failures.append("scrape %d (%s) failed during the attack" % (i, path))
            else:
                ok += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        attack.stop.set()
        attack.join(120)
        if proc.poll() is not None:
            failures.append("cairnd exited during the attack: %s" % proc.returncode)
        if attack.held_max < 1:
            failures.append("no attacker connection was held (the attack was refused outright?)")
        print("figures: %d/%d scrapes succeeded during the attack (slowest %.2fs); at most %d "
              "attacker connections held open at once, %d attacker sockets closed by the server, "
              "%d bytes trickled" % (ok, SCRAPES, worst, attack.held_max,
                                     attack.closed_by_server, attack.bytes_sent), flush=True)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
