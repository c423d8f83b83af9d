#!/usr/bin/env python3
"""Restore drill of a PostgreSQL schedule against a real PostgreSQL 15 (Debian's): the drill
restores the base backup and its WAL into a new data directory, runs pg_verifybackup, and
starts a throw-away postgres on it (its own socket, no TCP; as the postgres user when cairnd
runs as root), which must recover to the backup's end and accept connections; a damaged stored
backup fails the drill, a good one passes (drill_lib.py). SKIP (77) without PostgreSQL 15, a
failure under CI=true."""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "source"))
import drill_lib  # noqa: E402
import pg_server as pg  # noqa: E402

pg.require_pg()
tmp = tempfile.mkdtemp(prefix="cairn-drill-pg-")
# The probe's postgres runs as the postgres user when we are root: it must reach drill-dir.
os.chmod(tmp, 0o711)
os.makedirs(os.path.join(tmp, "drill"), 0o711)
os.chmod(os.path.join(tmp, "drill"), 0o711)
a = pg.PgServer(os.path.join(tmp, "a")).start()
try:
    a.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    drill_lib.run_drill_course(
        tmp, "postgresql://postgres@127.0.0.1:%d" % a.port,
        probe_says="postgres recovered the restored data directory and accepted connections")
finally:
    a.stop()
drill_lib.finish(tmp, rmtree=pg.rmtree)
