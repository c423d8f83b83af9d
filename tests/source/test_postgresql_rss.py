#!/usr/bin/env python3
"""Peak RSS of `cairn backup --from postgresql://` and of its restore stays bounded
(bounded-memory requirement: at most 32 MiB). A real PostgreSQL 15 filled by
`pgbench -i -s 10` (~160 MB) is backed up and restored by cairn as a direct child; os.wait4's
ru_maxrss is the figure asserted (an upper bound: it also counts this Python process as the
fork copied it before the exec). `pg_basebackup -Ft -X stream` takes the same server once for
comparison (printed for docs/PERFORMANCE.md, not asserted: this is not a timed test). Set
CAIRN_PG_SCALE to change the size. SKIP (77) without PostgreSQL, a failure under CI=true.
"""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pg_server as pg  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

CAIRN = os.path.join(os.environ.get("CAIRN_BIN", "build"), "cairn")
LIMIT_KIB = 32 * 1024
SCALE = int(os.environ.get("CAIRN_PG_SCALE", "10"))


def run(args):
    """(exit code, ru_maxrss KiB, seconds, output) of args as a direct child."""
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss, time.monotonic() - t0, \
        err.decode(errors="replace")


def main():
    pg.require_pg()
    tmp = tempfile.mkdtemp(prefix="cairn-pg-rss-")
    os.chmod(tmp, 0o755)
    fails = 0
    a = pg.PgServer(os.path.join(tmp, "a"))
    try:
        a.start()
        subprocess.run(a.pgbench("-i", "-q", "-s", str(SCALE)), check=True, capture_output=True)
        size = int(a.psql("SELECT sum(pg_database_size(datname)) FROM pg_database"))
        print("cluster: %.1f MB (pgbench scale %d)" % (size / 1e6, SCALE), flush=True)
        store = os.path.join(tmp, "store")
        init_location(store)
        url = "postgresql://postgres@127.0.0.1:%d" % a.port
        rc, rss, secs, err = run([CAIRN, "backup", "--from", url, "--to", store, "--name", "b"])
        print("cairn backup: rc=%d peak RSS %.1f MiB (wait4), %.1f s (%.0f MB/s)" % (
            rc, rss / 1024, secs, size / 1e6 / secs), flush=True)
        if rc != 0 or rss > LIMIT_KIB:
            print("FAIL: backup: " + err)
            fails += 1
        into = os.path.join(tmp, "restored")
        rc, rss, secs, err = run([CAIRN, "restore", store, "b", "--into", into])
        print("cairn restore --into: rc=%d peak RSS %.1f MiB (wait4), %.1f s" % (
            rc, rss / 1024, secs), flush=True)
        if rc != 0 or rss > LIMIT_KIB:
            print("FAIL: restore: " + err)
            fails += 1
        # The native tool on the same server, for the record.
        ref = os.path.join(tmp, "ref")
        rc, rss, secs, err = run([os.path.join(pg.PG_BIN, "pg_basebackup"), "-d", url, "-D",
                                  ref, "-Ft", "-X", "stream", "-c", "fast",
                                  "--manifest-checksums=SHA256"])
        print("pg_basebackup -Ft -X stream: rc=%d peak RSS %.1f MiB (wait4), %.1f s" % (
            rc, rss / 1024, secs), flush=True)
    finally:
        a.stop()
    pg.rmtree(tmp)
    print("postgresql rss: ok" if fails == 0 else "postgresql rss: %d failures" % fails)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
