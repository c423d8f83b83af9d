#!/usr/bin/env python3
"""cairn's PostgreSQL source against pg_basebackup on the same server, in one run.

  bench/postgresql.py [--scale N] [--runs N] [--cairn PATH]

Starts a PostgreSQL 15 (Debian's) on loopback in a temp dir (tests/source/pg_server.py),
fills it with `pgbench -i -s N` (default 10: ~160 MB), then times with farm-bench, A and B in
turn, each run starting from an empty target:
  A  cairn backup --from postgresql://... --to file://DIR   (hashes every file, checks the
     manifest, compresses with zstd where it pays, fsyncs, writes the MANIFEST)
  B  pg_basebackup -Ft -X stream -c fast --manifest-checksums=SHA256 -D DIR  (plain tars,
     fsynced)
and prints farm-bench's report (medians, the A/B ratio pair by pair, peak RSS). The server is
stopped at the end. Not a test: figures go to docs/PERFORMANCE.md by hand.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "source"))
import pg_server as pg  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cairn", default=os.path.join(HERE, "..", "build", "cairn"))
    a = ap.parse_args()
    cairn = os.path.abspath(a.cairn)
    tmp = tempfile.mkdtemp(prefix="cairn-bench-pg-", dir=os.environ.get("CAIRN_BENCH_DIR"))
    os.chmod(tmp, 0o755)
    srv = pg.PgServer(os.path.join(tmp, "server"))
    try:
        srv.start()
        subprocess.run(srv.pgbench("-i", "-q", "-s", str(a.scale)), check=True,
                       capture_output=True)
        srv.psql("CHECKPOINT")
        size = int(srv.psql("SELECT sum(pg_database_size(datname)) FROM pg_database"))
        print("cluster: %.1f MB (pgbench -i -s %d), PostgreSQL %s" % (
            size / 1e6, a.scale, srv.psql("SHOW server_version")), flush=True)
        url = "postgresql://postgres@127.0.0.1:%d" % srv.port
        store = os.path.join(tmp, "store")
        ref = os.path.join(tmp, "ref")
        # a new location is a repository first (cairn init: a few ms inside the timed run)
        cmd_a = ("rm -rf %s && %s init --no-encryption file://%s >/dev/null && exec %s backup "
                 "--from %s --to file://%s" % (store, cairn, store, cairn, url, store))
        cmd_b = ("rm -rf %s && exec %s/pg_basebackup -d %s -D %s -Ft -X stream -c fast "
                 "--manifest-checksums=SHA256" % (ref, pg.PG_BIN, url, ref))
        subprocess.run(["farm-bench", "-n", str(a.runs), "--timeout", "900", "--vs",
                        "sh -c '%s'" % cmd_b, "--", "sh", "-c", cmd_a], check=False)
    finally:
        srv.stop()
        pg.rmtree(tmp)


if __name__ == "__main__":
    main()
