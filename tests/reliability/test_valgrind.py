"""valgrind memcheck on the CLI paths: snapshot save/inspect/verify/extract (and a refused
damaged archive), put/get/list/verify/prune/rm on file storage, backup and restore (--to and
--into) against cairnd serve, which runs under memcheck too and is stopped with SIGTERM.
Every run uses --error-exitcode and --leak-check=full (definite leaks are errors); any
memcheck error fails the test with valgrind's report."""
import os
import re
import shutil
import signal
import subprocess

from rel import CAIRN, CAIRND, check, finish, free_port, influx_data, tmpdir
import skips  # noqa: E402  (tests/harness, on the path through rel)
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

VG = shutil.which("valgrind")
VGARGS = ["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
          "--show-leak-kinds=definite", "--track-origins=no", "--quiet"]
T = tmpdir("cairn-valgrind-")
runs = 0


def vg(args, want=0, what=None):
    global runs
    runs += 1
    p = subprocess.run([VG] + VGARGS + [CAIRN] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=600)
    err = p.stderr.decode(errors="replace")
    ok = p.returncode == want and not re.search(r"^==\d+==", err, re.M)
    check(p.returncode != 99 and ok, "memcheck clean: cairn %s (exit %d)%s" % (
        what or " ".join(args[:2]), p.returncode, "" if ok else "\n" + err[-3000:]))
    return p


def main():
    if VG is None:
        skips.missing("valgrind not installed (scripts/deps.sh test)")
    try:
        st = os.path.join(T, "state.bin")
        with open(st, "wb") as f:
            f.write(os.urandom(300000) + b"raft state " * 20000)
        for flav in ([], ["--zstd"]):
            snap = os.path.join(T, "s%d.snap" % len(flav))
            vg(["snapshot", "save", st, snap, "--index", "5", "--term", "2"] + flav,
               what="snapshot save " + " ".join(flav))
            vg(["snapshot", "inspect", snap, "--json"], what="snapshot inspect")
            vg(["snapshot", "verify", snap], what="snapshot verify")
            out = os.path.join(T, "out%d.bin" % len(flav))
            vg(["snapshot", "extract", snap, out], what="snapshot extract")
            with open(snap, "r+b") as f:
                f.seek(os.path.getsize(snap) // 2)
                b = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([b[0] ^ 0x40]))
            vg(["snapshot", "verify", snap], want=3, what="snapshot verify (damaged)")
            vg(["snapshot", "extract", snap, out + ".bad"], want=3,
               what="snapshot extract (damaged)")

        src = os.path.join(T, "src")
        os.makedirs(os.path.join(src, "d"))
        for i in range(5):
            with open(os.path.join(src, "d" if i % 2 else "", "f%d" % i), "wb") as f:
                f.write(os.urandom(50000 * (i + 1)))
        store = os.path.join(T, "store")
        init_location(store)
        vg(["put", store, "20260101T000000Z-a", src, "--zstd"], what="put --zstd")
        vg(["put", store, "20260102T000000Z-b", src], what="put")
        vg(["list", store, "--json"], what="list")
        vg(["verify", store, "20260101T000000Z-a"], what="verify")
        vg(["get", store, "20260101T000000Z-a", os.path.join(T, "got")], what="get")
        vg(["prune", store, "--keep-last", "1"], what="prune")
        vg(["rm", store, "20260102T000000Z-b"], what="rm")

        data = influx_data(os.path.join(T, "svc"), shards=3, size=100000)
        addr = "127.0.0.1:%d" % free_port()
        dlog = os.path.join(T, "cairnd.vg")
        d = subprocess.Popen([VG] + VGARGS + ["--log-file=" + dlog, CAIRND, "serve", "--data",
                                              data, "--listen", addr, "--allow-restore"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            line = d.stdout.readline().decode()
            check(line.startswith("listening on"), "cairnd serve under memcheck started")
            bstore = os.path.join(T, "bstore")
            init_location(bstore)
            vg(["backup", "--from", addr, "--to", bstore, "--name", "20260101T000000Z-i"],
               what="backup")
            vg(["restore", bstore, "20260101T000000Z-i", "--to", addr, "--db", "db1",
                "--newdb", "db2"], what="restore --to")
            vg(["restore", bstore, "20260101T000000Z-i", "--into", os.path.join(T, "legacy")],
               what="restore --into")
        finally:
            d.send_signal(signal.SIGTERM)
            rc = d.wait(timeout=120)
        with open(dlog) as f:
            report = f.read()
        check(rc == 0 and report.strip() == "",
              "memcheck clean: cairnd serve (exit %d)%s" % (rc, "\n" + report[-3000:]
                                                              if report.strip() else ""))
        print("figures: valgrind memcheck: %d cairn runs and one cairnd serve session, 0 errors,"
              " 0 definite leaks" % runs)
    finally:
        shutil.rmtree(T, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
