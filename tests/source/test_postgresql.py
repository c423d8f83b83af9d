#!/usr/bin/env python3
"""The postgresql:// source against a real PostgreSQL 15 (Debian's) on loopback.

A server filled by `pgbench -i -s 10` (~160 MB), a table of every common type (int, bigint,
numeric, text, bytea, bool, timestamptz, date, jsonb, uuid, arrays, inet, interval, float8,
NULLs) in its own tablespace, and a table a writer fills with sequential ids, is backed up
with `cairn backup --from postgresql://backup:PASSWORD@...` (a REPLICATION role) while pgbench
writes and the writer inserts. The backup holds base.tar, <oid>.tar, pg_wal.tar and
backup_manifest; the password shows nowhere; no replication slot is left. Restored with
`cairn restore --into DIR`, pg_verifybackup accepts DIR, and a second postgres started on it
holds the backup's consistent point: pgbench's invariant (sum(abalance) = sum(bbalance) =
sum(tbalance) = sum(delta)), the every-type table exactly (md5 of its ordered rows), and the
writer's ids a contiguous 1..N with N at least what was committed before the backup began.
The same through a cairnd schedule (source = postgres://..., password from PGPASSWORD), and
from a server on timeline 2 (the restored copy promoted by archive recovery).
Bad input: refused, wrong password, a role without REPLICATION, the main stream cut, the WAL
stream cut, a flipped byte (fault proxy), SIGINT: the documented exit code, a message naming
the source, no complete backup, the earlier one intact, no slot left. A restore of a stored
base.tar with a flipped byte, or of hostile ones ("..", an absolute name, a symlink, a hard
link) vouched for by their MANIFEST, is refused (exit 3) and leaves nothing behind. Restoring to a live server
says to use --into; into an existing directory is exit 6.
SKIP (77) without PostgreSQL, a failure under CI=true.
"""
import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import pg_server as pg  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

CAIRN = os.path.join(os.environ.get("CAIRN_BIN", "build"), "cairn")
CAIRND = os.path.join(os.environ.get("CAIRN_BIN", "build"), "cairnd")
SCALE = int(os.environ.get("CAIRN_PG_SCALE", "10"))
PASSWORD = "bk-Pw-9c1e-secret"
PLAIN_PASSWORD = "pl-Pw-77aa"
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg, flush=True)
    return cond


def cairn(*args, env=None):
    p = subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=900,
                       env=env)
    return p.returncode, p.stdout, p.stderr


def listing(store):
    rc, out, err = cairn("list", store, "--json")
    check(rc == 0, "list %s: %s" % (store, err))
    return {b["name"]: b for b in json.loads(out)["backups"]} if rc == 0 else {}


TYPES_SQL = """
CREATE TABLE types (id int PRIMARY KEY, i int, b bigint, n numeric(20,6), t text, by bytea,
  bo bool, tz timestamptz, d date, j jsonb, u uuid, ai int[], at text[], ip inet,
  iv interval, f float8) TABLESPACE ts1;
INSERT INTO types SELECT g, g * 7, g::bigint * 1000000007, g / 7.0,
  'row ' || g || repeat('x', g % 50), decode(md5(g::text), 'hex'), g % 2 = 0,
  '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', '2024-01-01'::date + g,
  jsonb_build_object('g', g, 'a', jsonb_build_array(g, 'x', null)), md5(g::text)::uuid,
  ARRAY[g, g + 1, NULL], ARRAY['a' || g, NULL], ('10.0.' || (g % 256) || '.' ||
  (g / 256 % 256))::inet, g * interval '1 second' + interval '1 day', g * 0.1::float8
  FROM generate_series(1, 20000) g;
INSERT INTO types (id) VALUES (0);
CREATE TABLE seqw (id int PRIMARY KEY);
"""
TYPES_MD5 = "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM types t"
INVARIANT = ("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
             "(SELECT sum(bbalance) FROM pgbench_branches), "
             "(SELECT sum(tbalance) FROM pgbench_tellers), "
             "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)")


class SeqWriter(threading.Thread):
    """Inserts 1, 2, 3... into seqw, one autocommitted statement at a time; count is the
    number the server has confirmed."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.p = subprocess.Popen(pg.as_pg([os.path.join(pg.PG_BIN, "psql"), "-h", srv.dir,
                                            "-p", str(srv.port), "-X", "-Atq", "postgres"]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)
        self.count = 0
        self.stopping = threading.Event()

    def run(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            self.p.stdin.write("INSERT INTO seqw VALUES (%d) RETURNING id;\n" % n)
            self.p.stdin.flush()
            if self.p.stdout.readline().strip() != str(n):
                break
            self.count = n

    def stop(self):
        self.stopping.set()
        self.join(timeout=60)
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=60)


def wait_for(what, cond, timeout=pg.WAIT):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return check(False, "timed out waiting for " + what)
        time.sleep(0.05)
    return True


def fill(a, tmp):
    t0 = time.monotonic()
    subprocess.run(a.pgbench("-i", "-q", "-s", str(SCALE)), check=True, capture_output=True)
    ts = os.path.join(tmp, "ts1")
    os.makedirs(ts)
    pg.chown_pg(ts)
    a.psql_file("CREATE TABLESPACE ts1 LOCATION '%s';\n%s\n"
                "CREATE ROLE backup LOGIN REPLICATION PASSWORD '%s';\n"
                "CREATE ROLE plain LOGIN PASSWORD '%s';\n" % (ts, TYPES_SQL, PASSWORD,
                                                              PLAIN_PASSWORD))
    print("filled: pgbench scale %d, %s in %.1f s" % (
        SCALE, a.psql("SELECT pg_size_pretty(pg_database_size('postgres'))"),
        time.monotonic() - t0), flush=True)


def stored_manifest(store_dir, name):
    with open(os.path.join(store_dir, name, "MANIFEST")) as f:
        return json.load(f)


def restored_server(tmp, name, into, want_md5, before):
    """Verify the restored directory, start a postgres on it and check its data."""
    rc, out = pg.verifybackup(into)
    check(rc == 0 and "backup successfully verified" in out,
          "%s: pg_verifybackup: %s" % (name, out[-2000:]))
    pg.chown_pg(into)
    if os.path.exists(into + ".tablespaces"):
        pg.chown_pg(into + ".tablespaces")
    b = pg.PgServer(os.path.join(tmp, name + "-run"), data_dir=into)
    try:
        b.start()
        inv = b.psql(INVARIANT).split("|")
        check(len(set(inv)) == 1, "%s: pgbench invariant broken: %s" % (name, inv))
        counts = b.psql("SELECT (SELECT count(*) FROM pgbench_accounts), "
                        "(SELECT count(*) FROM pgbench_branches), "
                        "(SELECT count(*) FROM pgbench_tellers)")
        check(counts == "%d|%d|%d" % (SCALE * 100000, SCALE, SCALE * 10),
              "%s: pgbench row counts %s" % (name, counts))
        check(b.psql(TYPES_MD5) == want_md5, "%s: the every-type table differs" % name)
        n, lo, hi = [int(x or 0) for x in
                     b.psql("SELECT count(*), min(id), max(id) FROM seqw").split("|")]
        check(n == hi and (n == 0 or lo == 1), "%s: seqw ids not a prefix 1..N: count %d, "
              "%d..%d" % (name, n, lo, hi))
        check(n >= before, "%s: seqw holds %d ids, %d were committed before the backup" %
              (name, n, before))
        print("%s: restored and started: invariant %s, seqw 1..%d (>= %d committed before)" %
              (name, inv[0], n, before), flush=True)
    finally:
        b.stop()


def part_backup(tmp, a, store, want_md5):
    w = SeqWriter(a)
    w.start()
    bench = subprocess.Popen(a.pgbench("-n", "-c", "2", "-j", "1", "-T", "600"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for("the writer", lambda: w.count >= 50)
        before = w.count
        url = "postgresql://backup:%s@127.0.0.1:%d" % (PASSWORD, a.port)
        t0 = time.monotonic()
        rc, out, err = cairn("backup", "--from", url, "--to", store, "--name", "p1", "--json")
        secs = time.monotonic() - t0
        after = w.count
    finally:
        os.killpg(bench.pid, signal.SIGKILL)  # runuser passes no SIGINT on
        bench.wait(timeout=120)
        w.stop()
    if not check(rc == 0, "backup: rc %d %s" % (rc, err)):
        return None
    print("backup p1 in %.1f s while writing (seqw %d before, %d after)" % (secs, before, after),
          flush=True)
    check(PASSWORD not in out + err, "the password shows in backup's output")
    check(json.loads(out)["source"] == "postgresql://backup:***@127.0.0.1:%d" % a.port,
          "--json source is redacted: %s" % out)
    store_dir = store[len("file://"):]
    for d, _, files in os.walk(store_dir):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                check(PASSWORD.encode() not in fh.read(), "the password is stored in %s" % f)
    b = listing(store).get("p1", {})
    check(b.get("status") == "complete" and b.get("kind") == "postgresql", "p1: %s" % b)
    m = stored_manifest(store_dir, "p1")
    names = sorted(f["name"] for f in m["files"])
    oid = a.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
    check(names == sorted(["backup_manifest", "base.tar", "pg_wal.tar", oid + ".tar"]),
          "p1 files: %s" % names)
    check(m["meta"].get("tablespaces") and m["meta"]["tablespaces"][0]["oid"] == int(oid),
          "p1 meta: %s" % m["meta"])
    check(a.wait_no_slot(), "a replication slot was left: %s" % a.psql(
        "SELECT slot_name FROM pg_replication_slots"))
    return before


def part_restore(tmp, store, want_md5, before):
    into = os.path.join(tmp, "r1")
    rc, out, err = cairn("restore", store, "p1", "--into", into)
    if not check(rc == 0, "restore: rc %d %s" % (rc, err)):
        return
    check(not [f for f in os.listdir(tmp) if ".cairn-" in f], "restore left temporaries")
    spaces = os.listdir(into + ".tablespaces")
    check(len(spaces) == 1 and os.path.islink(os.path.join(into, "pg_tblspc", spaces[0])),
          "tablespace not restored beside the data directory: %s" % spaces)
    restored_server(tmp, "p1", into, want_md5, before)
    part_timeline(tmp, store, want_md5)
    part_restore_faults(tmp, store)
    rc, out, err = cairn("restore", store, "p1", "--into", into)
    check(rc == 6, "restore into an existing directory: exit %d (want 6): %s" % (rc, err))
    rc, out, err = cairn("restore", store, "p1", "--to", "postgresql://127.0.0.1:1")
    check(rc == 2 and "--into" in err, "restore to a running server explains: %d %s" % (rc, err))


def part_timeline(tmp, store, want_md5):
    """A server on timeline 2 (p1 restored and promoted by archive recovery) backs up and
    restores too: its pg_wal.tar carries 00000002.history, as pg_basebackup fetches it."""
    into = os.path.join(tmp, "tl1")
    rc, out, err = cairn("restore", store, "p1", "--into", into)
    if not check(rc == 0, "timeline: restore: %s" % err):
        return
    open(os.path.join(into, "recovery.signal"), "w").close()
    with open(os.path.join(into, "postgresql.auto.conf"), "a") as f:
        f.write("restore_command = 'false'\n")
    pg.chown_pg(into)
    pg.chown_pg(into + ".tablespaces")
    b = pg.PgServer(os.path.join(tmp, "tl1-run"), data_dir=into)
    try:
        b.start()
        wait_for("the promotion", lambda: b.psql("SELECT pg_is_in_recovery()") == "f")
        b.psql("CHECKPOINT")
        tli = b.psql("SELECT timeline_id FROM pg_control_checkpoint()")
        check(tli == "2", "timeline: the promoted server is on timeline %s" % tli)
        tstore = "file://" + os.path.join(tmp, "tstore")
        init_location(tstore)
        rc, out, err = cairn("backup", "--from", "postgresql://postgres@127.0.0.1:%d" % b.port,
                             "--to", tstore, "--name", "t2")
        if not check(rc == 0, "timeline: backup: %s" % err):
            return
        got = os.path.join(tmp, "tl2")
        rc, out, err = cairn("restore", tstore, "t2", "--into", got)
        if check(rc == 0, "timeline: restore of t2: %s" % err):
            check(os.path.exists(os.path.join(got, "pg_wal", "00000002.history")),
                  "timeline: no 00000002.history in pg_wal")
            restored_server(tmp, "timeline-2", got, want_md5, 0)
    finally:
        b.stop()


def restore_fails(tmp, store, name, want_rc, texts):
    into = os.path.join(tmp, "bad-" + name)
    rc, out, err = cairn("restore", store, name, "--into", into)
    print("restore %s: exit %d: %s" % (name, rc, err.strip()[-300:]), flush=True)
    check(rc == want_rc, "restore %s: exit %d (want %d): %s" % (name, rc, want_rc, err))
    for t in texts:
        check(t in err, "restore %s: the error lacks %r: %s" % (name, t, err))
    left = [f for f in os.listdir(tmp) if f.startswith(("bad-", ".bad-")) or f == "escaped"]
    check(not left, "restore %s left %s" % (name, left))


def hostile_tar(members):
    """A ustar archive of (name, type, data-or-link) members, as a hostile server might send."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, kind, data in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                ti.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                ti.linkname = data
                t.addfile(ti)
    return buf.getvalue()


def part_restore_faults(tmp, store):
    """A damaged or hostile stored backup: refused, and nothing is left behind."""
    store_dir = store[len("file://"):]
    # A flipped byte (XOR) in the stored base.tar: the storage's SHA-256 catches it.
    path = os.path.join(store_dir, "p1", "base.tar")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    restore_fails(tmp, store, "p1", 3, ["base.tar"])
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b)
    # Hostile base.tar files, stored with a MANIFEST that vouches for them.
    hostile = {
        "h-dotdot": [("base/1", "file", b"x"), ("../escaped", "file", b"evil")],
        "h-absolute": [("/tmp/escaped-abs", "file", b"evil")],
        "h-symlink": [("base", "symlink", "/tmp")],
        "h-hardlink": [("base/1", "file", b"x"), ("base/2", "hardlink", "/etc/passwd")],
    }
    for name, members in hostile.items():
        shutil.copytree(os.path.join(store_dir, "p1"), os.path.join(store_dir, name))
        data = hostile_tar(members)
        with open(os.path.join(store_dir, name, "base.tar"), "wb") as f:
            f.write(data)
        mpath = os.path.join(store_dir, name, "MANIFEST")
        with open(mpath) as f:
            m = json.load(f)
        m["name"] = name
        digest = hashlib.sha256(data).hexdigest()
        for e in m["files"]:
            if e["name"] == "base.tar":
                e.update(size=len(data), sha256=digest, compression="none",
                         logical_size=len(data), logical_sha256=digest)
        with open(mpath, "w") as f:
            json.dump(m, f)
        restore_fails(tmp, store, name, 3, ["refused"])
        check(not os.path.exists("/tmp/escaped-abs"), "%s: wrote outside" % name)


def fails(name, store, url, want_rc, texts, env=None, extra=()):
    rc, out, err = cairn("backup", "--from", url, "--to", store, "--name", name, *extra, env=env)
    print("%s: exit %d: %s" % (name, rc, err.strip().splitlines()[-1] if err.strip() else ""),
          flush=True)
    check(rc == want_rc, "%s: exit %d (want %d): %s" % (name, rc, want_rc, err))
    for t in texts:
        check(t in err, "%s: the error lacks %r: %s" % (name, t, err))
    check(PASSWORD not in out + err and PLAIN_PASSWORD not in out + err,
          "%s: a password shows: %s" % (name, err))
    b = listing(store).get(name)
    check(b is None or b.get("status") != "complete", "%s: a complete backup: %s" % (name, b))


def part_faults(tmp, a, store):
    port = pg.free_port()
    fails("refused", store, "postgresql://backup@127.0.0.1:%d" % port, 8,
          ["postgresql 127.0.0.1:%d" % port])
    fails("wrong-password", store, "postgresql://backup:wrong-Pw-1@127.0.0.1:%d" % a.port, 9,
          ["password authentication failed"])
    fails("not-replication", store,
          "postgresql://plain:%s@127.0.0.1:%d" % (PLAIN_PASSWORD, a.port), 9, ["replication"])
    pwfile = os.path.join(tmp, "pg.pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    os.chmod(pwfile, 0o600)
    cases = [
        # (name, plan per connection: main first, then WAL; cut offset, exit, texts)
        ("cut-main", ["short", "pass"], 3000000, 8, ["base backup stream"]),
        ("cut-wal", ["pass", "short"], 1200, 8, ["WAL"]),
        ("flip", ["flip", "pass"], 5000000, 3, ["checksum mismatch"]),
    ]
    for name, plan, at, want, texts in cases:
        p = FaultProxy(("127.0.0.1", a.port), plan=plan, short_range=(at, at)).start()
        try:
            fails(name, store, "postgresql://backup@127.0.0.1:%d" % p.port, want,
                  ["postgresql 127.0.0.1:%d" % p.port] + texts, extra=["--password-file",
                                                                          pwfile])
            act = plan[0] if plan[0] != "pass" else plan[1]
            check(p.stats[act] == 1, "%s: the proxy did not act: %s" % (name, p.stats))
        finally:
            p.stop()
        check(a.wait_no_slot(), "%s: a replication slot was left" % name)
    part_cancel(a, store)
    rc, out, err = cairn("verify", store, "p1")
    check(rc == 0, "p1 after the failures: %s" % err)


def part_cancel(a, store):
    """SIGINT while the base backup streams: exit 130, nothing complete, no slot left."""
    d = os.path.join(store[len("file://"):], "cancelled")
    p = subprocess.Popen([CAIRN, "backup", "--from", "postgresql://postgres@127.0.0.1:%d" %
                          a.port, "--to", store, "--name", "cancelled"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for("the backup to start", lambda: p.poll() is not None or (
        os.path.isdir(d) and any("base.tar" in f for f in os.listdir(d))), timeout=pg.WAIT)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=pg.WAIT)
    print("cancel: exit %d: %s" % (p.returncode, err.strip()[-300:]), flush=True)
    check(p.returncode == 130, "cancel: exit %d (want 130): %s" % (p.returncode, err))
    b = listing(store).get("cancelled")
    check(b is None or b.get("status") != "complete", "cancel: a complete backup: %s" % b)
    check(a.wait_no_slot(), "cancel: a replication slot was left")


def part_cairnd(tmp, a, want_md5):
    store = os.path.join(tmp, "dstore")
    init_location(store)
    conf = os.path.join(tmp, "cairnd.conf")
    with open(conf, "w") as f:
        f.write("[cairnd]\nstate-dir = %s\nmetrics-listen = off\n\n"
                "[schedule pg]\nsource = postgres://backup@127.0.0.1:%d\nto = file://%s\n"
                "every = 1s\nkeep-last = 2\n" % (os.path.join(tmp, "dstate"), a.port, store))
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    log = open(os.path.join(tmp, "cairnd.log"), "w+")
    proc = subprocess.Popen([CAIRND, "run", "--config", conf, "--log-level", "debug"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    done = []
    try:
        end = time.monotonic() + 600
        while not done and time.monotonic() < end and proc.poll() is None:
            rc, out, _ = cairn("list", "file://" + store, "--json")
            if rc == 0:
                done = [b for b in json.loads(out)["backups"] if b["status"] == "complete"]
            if not done:
                time.sleep(0.2)
        check(done and done[0]["kind"] == "postgresql", "cairnd took no backup: %s" % done)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    text = log.read()
    check(PASSWORD not in text, "the password shows in cairnd's log")
    if not done:
        print(text[-3000:])
        return
    into = os.path.join(tmp, "r2")
    rc, out, err = cairn("restore", "file://" + store, done[0]["name"], "--into", into)
    if check(rc == 0, "restore of cairnd's backup: %s" % err):
        restored_server(tmp, "cairnd", into, want_md5, 0)
    # A flipped byte (XOR) in the middle of the largest pack of the deduplicating repository:
    # the restore is refused (exit 3) naming the pack, and nothing is left behind.
    data = os.path.join(store, ".data")
    packs = [n for n in os.listdir(data) if not n.startswith(".")]
    big = max(packs, key=lambda n: os.path.getsize(os.path.join(data, n)))
    path = os.path.join(data, big)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    restore_fails(tmp, "file://" + store, done[0]["name"], 3, [big])


def main():
    pg.require_pg()
    tmp = tempfile.mkdtemp(prefix="cairn-pg-")
    os.chmod(tmp, 0o755)
    a = None
    try:
        a = pg.PgServer(os.path.join(tmp, "a")).start()
        fill(a, tmp)
        want_md5 = a.psql(TYPES_MD5)
        store = "file://" + os.path.join(tmp, "store")
        # per-file format: the fault parts damage and forge the stored base.tar; cairnd's
        # schedule (part_cairnd) backs up into a deduplicating repository
        init_location(store, "--no-encryption", "--no-dedup")
        before = part_backup(tmp, a, store, want_md5)
        if before is not None:
            part_restore(tmp, store, want_md5, before)
            part_faults(tmp, a, store)
        part_cairnd(tmp, a, want_md5)
    finally:
        if a is not None:
            a.stop()
    if failures:
        print("postgresql: %d failure(s) (files kept in %s)" % (len(failures), tmp))
        return 1
    pg.rmtree(tmp)
    print("postgresql: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
