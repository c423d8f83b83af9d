"""cairnd serve is read-only unless asked: restore uploads (request types 6 and 7) are refused
with a log line and a "cairnd: refused: ..." reply, and cairn restore --to says why; with
--allow-restore a restore into a new database works, but a shard upload into a shard that
already holds files (a live TSM file) is refused unless --allow-overwrite is given too.
--allow-overwrite alone is a usage error (exit 2)."""
import io
import os
import shutil
import socket
import tarfile

from rel import CAIRND, Cairnd, cairn, check, finish, influx_data, run, tmpdir, tree_sums, WAIT
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-serve-restore-")
TSM = "db1/autogen/1/000000001-000000001.tsm"


def shard_tar(body):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        ti = tarfile.TarInfo(TSM)
        ti.size = len(body)
        ti.mode = 0o600
        t.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


def upload(addr, shard_id, tar):
    """Raw type-7 upload; returns what the server sent before closing."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=WAIT)
    out = b""
    try:
        s.sendall(bytes([3, 7]) + shard_id.to_bytes(8, "big") + tar)
        s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass
    s.close()
    return out


def log_has(path, needle):
    with open(path, errors="replace") as f:
        return needle in f.read()


def main():
    data = influx_data(os.path.join(T, "svc"), shards=2, size=5000)
    store = os.path.join(T, "store")
    init_location(store)
    evil = shard_tar(b"overwritten by an anonymous peer")

    # Read-only by default.
    log = os.path.join(T, "ro.log")
    c = Cairnd(data, log=log).start()
    try:
        rc, _, err, _ = cairn("backup", "--from", c.addr, "--to", store, "--name", "full")
        check(rc == 0, "backup from a read-only cairnd serve: " + err.strip())
        before = tree_sums(data)
        rc, _, err, _ = cairn("restore", store, "full", "--to", c.addr, "--db", "db1",
                              "--newdb", "copy")
        check(rc == 9 and "refused" in err and "--allow-restore" in err,
              "restore --to refused without --allow-restore: exit %d, %s" % (rc, err.strip()))
        out = upload(c.addr, 1, evil)
        check(out.startswith(b"cairnd: refused: ") and b"--allow-restore" in out,
              "raw shard upload answered with a refusal: %r" % out[:120])
        check(tree_sums(data) == before and not os.path.exists(os.path.join(data, "copy")),
              "nothing written into the served directory")
        check(log_has(log, "metastore upload refused: restore uploads are disabled") and
              log_has(log, "shard upload refused: restore uploads are disabled"),
              "both refusals logged")
    finally:
        c.stop()

    # --allow-restore: a new database is restored, a shard holding files is not replaced.
    log = os.path.join(T, "rw.log")
    c = Cairnd(data, extra=["--allow-restore"], log=log).start()
    try:
        rc, _, err, _ = cairn("restore", store, "full", "--to", c.addr, "--db", "db1",
                              "--newdb", "copy")
        check(rc == 0, "restore into a new database with --allow-restore: " + err.strip())
        got = [f for f in tree_sums(data) if f.startswith("copy/")]
        check(len(got) == 4, "the new database holds the 4 shard files (%d)" % len(got))
        before = tree_sums(data)
        out = upload(c.addr, 1, evil)
        check(out.startswith(b"cairnd: refused: ") and b"--allow-overwrite" in out,
              "upload into a shard that holds files refused: %r" % out[:120])
        check(tree_sums(data) == before, "the live TSM file is unchanged")
        check(log_has(log, "shard upload refused: shard 1 already holds files"), "logged")
    finally:
        c.stop()

    # --allow-restore --allow-overwrite: the operator asked for it.
    c = Cairnd(data, extra=["--allow-restore", "--allow-overwrite"],
               log=os.path.join(T, "ow.log")).start()
    try:
        upload(c.addr, 1, evil)
        with open(os.path.join(data, TSM), "rb") as f:
            check(f.read() == b"overwritten by an anonymous peer",
                  "with --allow-overwrite the shard's file is replaced")
    finally:
        c.stop()

    rc, _, err, _ = run([CAIRND, "serve", "--data", data, "--allow-overwrite"])
    check(rc == 2 and "--allow-restore" in err, "--allow-overwrite alone: usage error (%d)" % rc)


try:
    main()
finally:
    shutil.rmtree(T, ignore_errors=True)
finish()
