"""Helpers for the PostgreSQL source tests: a real PostgreSQL 15 (Debian's) initialised in a
temp dir and started as the postgres user on a free loopback port, ready for replication
(wal_level=replica, max_wal_senders, pg_hba entries for the replication pseudo-database), and
a psql runner. Nothing here needs a Python PostgreSQL driver."""
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import skips  # noqa: E402
from ports import free_port  # noqa: E402

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
WAIT = 120  # bounds a hang on a loaded machine; nothing measures speed by it

HBA = """local all all trust
host replication postgres 127.0.0.1/32 trust
host all postgres 127.0.0.1/32 trust
host replication all 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
"""


def require_pg():
    for t in ("initdb", "pg_ctl", "postgres", "psql", "pgbench", "pg_verifybackup"):
        if not os.access(os.path.join(PG_BIN, t), os.X_OK):
            skips.missing("%s/%s (Debian postgresql-15)" % (PG_BIN, t))
    if os.geteuid() == 0:
        try:
            subprocess.run(["id", "postgres"], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            skips.missing("a postgres user (Debian postgresql-15)")


def as_pg(args):
    """args run as the postgres user when we are root (postgres refuses to run as root)."""
    return (["runuser", "-u", "postgres", "--"] + args) if os.geteuid() == 0 else args


def chown_pg(path):
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", path], check=True)


class PgServer:
    """postgres on 127.0.0.1:PORT with its socket in DIR; data in DIR/data unless data_dir
    names an existing one (a restored backup)."""

    def __init__(self, dir, data_dir=None, init=True, hba=HBA):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        chown_pg(dir)
        self.data = data_dir or os.path.join(dir, "data")
        self.log = os.path.join(dir, "postgres.log")
        self.port = None
        if data_dir is None and init:
            p = subprocess.run(as_pg([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-A",
                                      "trust", "-U", "postgres", "--no-sync"]),
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError("initdb: " + p.stdout + p.stderr)
            with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
                f.write(hba)

    def start(self, extra=""):
        for _ in range(5):
            self.port = free_port()
            p = subprocess.run(as_pg([
                os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t",
                str(WAIT), "-o",
                "-k %s -p %d -c listen_addresses=127.0.0.1 -c wal_level=replica "
                "-c max_wal_senders=10 -c fsync=off -c max_connections=40 %s" % (
                    self.dir, self.port, extra),
                "start"]), capture_output=True, text=True)
            if p.returncode == 0:
                return self
            with open(self.log) as f:
                text = f.read()
            if "already in use" not in text:
                break
        self.port = None
        raise RuntimeError("postgres would not start: " + p.stdout + p.stderr + text[-2000:])

    def stop(self):
        if self.port is not None and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m",
                                  "immediate", "-w", "stop"]), capture_output=True)
        self.port = None

    def psql(self, sql, db="postgres"):
        """Rows of the last statement, unaligned, '|'-separated."""
        p = subprocess.run(as_pg([os.path.join(PG_BIN, "psql"), "-h", self.dir, "-p",
                                  str(self.port), "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-c",
                                  sql, db]), capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError("psql %r: %s" % (sql[:80], p.stderr))
        return p.stdout.strip()

    def psql_file(self, script, db="postgres"):
        p = subprocess.run(as_pg([os.path.join(PG_BIN, "psql"), "-h", self.dir, "-p",
                                  str(self.port), "-X", "-q", "-v", "ON_ERROR_STOP=1", db]),
                           input=script, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError("psql script: %s" % p.stderr)

    def pgbench(self, *args):
        return as_pg([os.path.join(PG_BIN, "pgbench"), "-h", self.dir, "-p", str(self.port)] +
                     list(args) + ["postgres"])

    def slots(self):
        return self.psql("SELECT count(*) FROM pg_replication_slots")

    def wait_no_slot(self):
        end = time.monotonic() + WAIT
        while self.slots() != "0":
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True


def verifybackup(d):
    p = subprocess.run([os.path.join(PG_BIN, "pg_verifybackup"), d], capture_output=True,
                       text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)
