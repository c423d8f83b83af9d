#!/usr/bin/env python3
"""Restore drill of a Redis schedule against a real redis-server (Debian's): the drill
restores dump.rdb, runs redis-check-rdb and loads it into a throw-away redis-server on a unix
socket; a damaged stored RDB fails the drill, a good one passes (drill_lib.py).

Then what only the probe can find: a server running with `rdbchecksum no` (CRC-64 trailer
zero, so the source checks only the framing) hands out an RDB that this host's Redis cannot
load (format version 99, as from a newer Redis). The backup completes and verifies (every
stored byte is what the server sent), and the drill fails in its probe, naming the version.
The RDB comes from a real redis-server's SAVE with the version digits changed, served by a
small replica-protocol stand-in. SKIP (77) without redis-server, a failure under CI=true."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "source"))
import drill_lib  # noqa: E402
import redis_server as rs  # noqa: E402
import skips  # noqa: E402

for p in (rs.REDIS_SERVER, rs.CHECK_RDB, shutil.which("redis-cli") or "/nonexistent"):
    if not os.access(p, os.X_OK):
        skips.missing("%s (Debian redis-server, redis-tools)" % p)



class FakeMaster:
    """Answers a replica's handshake (REPLCONF: +OK; PSYNC: +FULLRESYNC and the RDB as a bulk
    payload) with the RDB given, on a free loopback port."""

    def __init__(self, rdb):
        self.rdb = rdb
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn):
        f = conn.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                args = []
                for _ in range(int(line[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2].upper())
                if args[0] == b"PSYNC":
                    conn.sendall(b"+FULLRESYNC " + b"a" * 40 + b" 0\r\n$%d\r\n" %
                                 len(self.rdb) + self.rdb)
                else:
                    conn.sendall(b"+OK\r\n")
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


tmp = tempfile.mkdtemp(prefix="cairn-drill-redis-")
srv = rs.RedisServer(os.path.join(tmp, "redis"))
try:
    c = srv.client()
    c.pipeline([("SET", "k%d" % i, "v" * (i % 50)) for i in range(5000)])
    drill_lib.run_drill_course(tmp, "redis://127.0.0.1:%d" % srv.port,
                               probe_says="redis-server loaded the RDB: 5000 keys")
    # An RDB this host's Redis cannot load, from a server without checksums.
    nock = rs.RedisServer(os.path.join(tmp, "redis-nocrc"), "--rdbchecksum", "no")
    try:
        nc = nock.client()
        nc.pipeline([("SET", "k%d" % i, "v%d" % i) for i in range(100)])
        nc.call("SAVE")
        rdb = bytearray(open(os.path.join(nock.dir, "dump.rdb"), "rb").read())
    finally:
        nock.stop()
    drill_lib.check(rdb[:5] == b"REDIS" and rdb[-8:] == bytes(8), "an RDB without checksum")
    rdb[5:9] = b"0099"
    fake = FakeMaster(bytes(rdb))
    t2 = os.path.join(tmp, "v99")
    os.makedirs(t2)
    d, backups = drill_lib.drill_config(t2, "v99", "redis://127.0.0.1:%d" % fake.port)
    d.set_clock("2026-01-01T10:30:00Z")
    d.start()
    try:
        d.set_clock("2026-01-02T00:00:00Z")
        d.wait("the backup", lambda: d.metric("cairn_backups_succeeded_total", "v99") == 1)
        d.wait("the drill", lambda: d.metric("cairn_drill_last_success", "v99") is not None)
        drill_lib.check(d.metric("cairn_drill_last_success", "v99") == 0,
                        "the probe fails the drill of an RDB this Redis cannot load")
        drill_lib.check("drill probe of schedule v99 exited with status 1" in d.text() and
                        "Can't handle RDB format version 99" in d.text(),
                        "redis-check-rdb's reason is logged")
    finally:
        drill_lib.check(d.stop() == 0, "clean stop")
    v = subprocess.run([os.path.join(drill_lib.BIN, "cairn"), "verify", "file://" + backups,
                        "20260102T000000Z-v99"], capture_output=True, text=True)
    drill_lib.check(v.returncode == 0, "the stored backup verifies: only the probe saw it "
                    "(%s%s)" % (v.stdout, v.stderr))
    fake.stop()
finally:
    srv.stop()
drill_lib.finish(tmp)
