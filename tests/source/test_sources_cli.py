#!/usr/bin/env python3
"""`cairn backup --from URL` and `cairn restore ... --into DIR` through the source drivers,
against the real servers from Debian on loopback: Redis (with a password) and etcd.

Redis: 20,000 keys of every type, backed up with the password in the URL; the backup is
complete, its kind is "redis", the password appears nowhere (stdout, stderr, --json, the
stored files); restored into a directory, a fresh redis-server loads it and holds the same
data (DBSIZE, DEBUG DIGEST, every key's DUMP). A wrong password fails with exit 9, a refused
port with exit 8, and neither leaves a complete backup nor touches the earlier one.
etcd: 2,000 keys with revisions, backed up, restored into a new data directory with
`--into`, a second etcd started on it returns the same keys and revisions.
cairnd: a schedule with `source = redis://...` (password in a 0600 file) takes a complete
backup; its log never shows the password.
SKIP (77) without the servers, a failure under CI=true.
"""
import json
import os
import shutil
import subprocess
import sys
import signal
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import redis_server as rs  # noqa: E402
import etcdtest as et  # noqa: E402
import skips  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

CAIRN = os.path.join(os.environ["CAIRN_BIN"], "cairn")
PASSWORD = "pw-Zq81-secret"
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg, flush=True)
    return cond


def cairn(*args, env=None):
    p = subprocess.run([CAIRN] + list(args), capture_output=True, text=True, timeout=600,
                       env=env)
    return p.returncode, p.stdout, p.stderr


def listing(store):
    rc, out, err = cairn("list", store, "--json")
    check(rc == 0, "list %s: %s" % (store, err))
    return {b["name"]: b for b in json.loads(out)["backups"]} if rc == 0 else {}


def stored_bytes(root):
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                yield f, fh.read()


def redis_case(tmp):
    srv = rs.RedisServer(os.path.join(tmp, "r1"), password=PASSWORD)
    copy = None
    try:
        c = srv.client()
        rs.fill(c, 20000)
        store = "file://" + os.path.join(tmp, "store")
        init_location(store)
        url = "redis://:%s@127.0.0.1:%d" % (PASSWORD, srv.port)
        rc, out, err = cairn("backup", "--from", url, "--to", store, "--name", "r1", "--json")
        if not check(rc == 0, "redis backup: rc %d %s" % (rc, err)):
            return
        check(PASSWORD not in out + err, "the password shows in backup's output")
        check(json.loads(out)["source"] == "redis://:***@127.0.0.1:%d" % srv.port,
              "--json source is redacted: %s" % out)
        for name, data in stored_bytes(os.path.join(tmp, "store")):
            check(PASSWORD.encode() not in data, "the password is stored in %s" % name)
        b = listing(store).get("r1", {})
        check(b.get("status") == "complete" and b.get("kind") == "redis", "r1: %s" % b)

        # Failures: exit codes, nothing complete, r1 untouched.
        bad = "redis://:wrong@127.0.0.1:%d" % srv.port
        rc, out, err = cairn("backup", "--from", bad, "--to", store, "--name", "r2")
        check(rc == 9, "wrong password: exit %d (want 9): %s" % (rc, err))
        check("wrong" not in err, "the wrong password shows in the error: %s" % err)
        rc, out, err = cairn("backup", "--from", "redis://127.0.0.1:%d" % rs.free_port(), "--to",
                             store, "--name", "r3")
        check(rc == 8, "refused: exit %d (want 8): %s" % (rc, err))
        names = listing(store)
        check("r2" not in names and "r3" not in names, "failed backups left: %s" % names)
        rc, out, err = cairn("verify", store, "r1")
        check(rc == 0, "r1 after the failures: %s" % err)

        # Restore into a directory; a fresh server loads it.
        into = os.path.join(tmp, "r-restored")
        rc, out, err = cairn("restore", store, "r1", "--into", into)
        if not check(rc == 0, "redis restore: rc %d %s" % (rc, err)):
            return
        rc, out, err = cairn("restore", store, "r1", "--to", "redis://127.0.0.1:1")
        check(rc == 2 and "--into" in err, "restore to a running redis explains: %d %s" % (rc, err))
        copy = rs.RedisServer(into)
        problems = rs.compare(c, copy.client())
        check(not problems, "restored redis differs: %s" % problems)
    finally:
        srv.stop()
        if copy is not None:
            copy.stop()


def etcd_case(tmp):
    e = et.Etcd(os.path.join(tmp, "e")).start()
    e2 = None
    try:
        e.put_many([("k%05d" % i, "v%d" % i) for i in range(2000)])
        e.put_many([("k%05d" % i, "w%d" % i) for i in range(0, 2000, 3)])
        e.delete("k00001")
        want = e.dump()
        store = "file://" + os.path.join(tmp, "estore")
        init_location(store)
        rc, out, err = cairn("backup", "--from", "etcd://127.0.0.1:%d" % e.client, "--to", store,
                             "--name", "e1")
        if not check(rc == 0, "etcd backup: rc %d %s" % (rc, err)):
            return
        b = listing(store).get("e1", {})
        check(b.get("status") == "complete" and b.get("kind") == "etcd", "e1: %s" % b)
        into = os.path.join(tmp, "e-restored.etcd")
        rc, out, err = cairn("restore", store, "e1", "--into", into)
        if not check(rc == 0, "etcd restore: rc %d %s" % (rc, err)):
            return
        check(not os.path.exists(into + ".snapshot.db"), "the snapshot file was left behind")
        e2 = et.Etcd(os.path.join(tmp, "e2"), name="default", data_dir=into).start()
        got = e2.dump()
        check(got[1] == want[1], "restored etcd differs (%d vs %d keys)" % (len(got[1]),
                                                                           len(want[1])))
        rc, out, err = cairn("restore", store, "e1", "--into", into)
        check(rc == 6, "restore into an existing data dir: exit %d (want 6): %s" % (rc, err))
    finally:
        e.stop()
        if e2 is not None:
            e2.stop()


def cairnd_case(tmp):
    srv = rs.RedisServer(os.path.join(tmp, "r3"), password=PASSWORD)
    proc = None
    try:
        rs.fill(srv.client(), 2000)
        pwfile = os.path.join(tmp, "redis.pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pwfile, 0o600)
        store = os.path.join(tmp, "dstore")
        init_location(store)
        conf = os.path.join(tmp, "cairnd.conf")
        with open(conf, "w") as f:
            f.write("[cairnd]\nstate-dir = %s\nmetrics-listen = off\n\n"
                    "[schedule cache]\nsource = redis://127.0.0.1:%d\nto = file://%s\n"
                    "password-file = %s\nevery = 1s\nkeep-last = 2\n"
                    % (os.path.join(tmp, "dstate"), srv.port, store, pwfile))
        log = open(os.path.join(tmp, "cairnd.log"), "w+")
        proc = subprocess.Popen([os.path.join(os.environ["CAIRN_BIN"], "cairnd"), "run",
                                 "--config", conf, "--log-level", "debug"], stdout=log,
                                stderr=subprocess.STDOUT)
        # The condition: a complete backup listed (a new schedule runs at once).
        end = time.monotonic() + 300
        done = []
        while not done and time.monotonic() < end and proc.poll() is None:
            rc, out, _ = cairn("list", "file://" + store, "--json")
            if rc == 0:
                done = [b for b in json.loads(out)["backups"] if b["status"] == "complete"]
            if not done:
                time.sleep(0.2)
        check(done and done[0]["kind"] == "redis", "cairnd took no redis backup: %s" % done)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        log.seek(0)
        text = log.read()
        check(PASSWORD not in text, "the password shows in cairnd's log")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.stop()


def timeout_case(tmp):
    """--source-timeout cancels a source that runs too long, whatever the driver: exit 8,
    the message says so, nothing is listed (test_exec checks the command's group is killed)."""
    store = "file://" + os.path.join(tmp, "tstore")
    init_location(store)
    rc, out, err = cairn("backup", "--from", "exec:sleep 600", "--to", store,
                         "--source-timeout", "1s")
    check(rc == 8, "--source-timeout: exit %d (want 8): %s" % (rc, err))
    check("took longer than 1000 ms" in err, "--source-timeout: the message: %s" % err)
    left = listing(store)
    check(left == {}, "--source-timeout: something is listed: %s" % left)
    rc, _, err = cairn("backup", "--from", "exec:true", "--to", store, "--source-timeout", "soon")
    check(rc == 2 and "--source-timeout" in err, "a bad --source-timeout: exit %d: %s" % (rc, err))


def main():
    have_redis = os.access(rs.REDIS_SERVER, os.X_OK)
    have_etcd = et.ETCD is not None and et.ETCDCTL is not None
    if not have_redis or not have_etcd:
        skips.missing("redis-server and etcd (Debian redis-server, etcd-server, etcd-client)")
    tmp = tempfile.mkdtemp(prefix="cairn-sources-")
    try:
        timeout_case(tmp)
        redis_case(tmp)
        etcd_case(tmp)
        cairnd_case(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
