#!/usr/bin/env python3
"""Restore drill of a Redis schedule against a real redis-server (Debian's): the drill
restores dump.rdb, runs redis-check-rdb and loads it into a throw-away redis-server on a unix
socket; a damaged stored RDB fails the drill, a good one passes (drill_lib.py). SKIP (77)
without redis-server, a failure under CI=true."""
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "source"))
import drill_lib  # noqa: E402
import redis_server as rs  # noqa: E402
import skips  # noqa: E402

for p in (rs.REDIS_SERVER, rs.CHECK_RDB, shutil.which("redis-cli") or "/nonexistent"):
    if not os.access(p, os.X_OK):
        skips.missing("%s (Debian redis-server, redis-tools)" % p)

tmp = tempfile.mkdtemp(prefix="cairn-drill-redis-")
srv = rs.RedisServer(os.path.join(tmp, "redis"))
try:
    c = srv.client()
    c.pipeline([("SET", "k%d" % i, "v" * (i % 50)) for i in range(5000)])
    drill_lib.run_drill_course(tmp, "redis://127.0.0.1:%d" % srv.port,
                               probe_says="redis-server loaded the RDB: 5000 keys")
finally:
    srv.stop()
if drill_lib.failures:
    print("kept %s" % tmp)
    sys.exit(1)
shutil.rmtree(tmp, ignore_errors=True)
print("PASS")
