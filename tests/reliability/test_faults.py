"""Faults between cairn and its peers, through tests/harness/faultproxy.py:
- S3 (real s3rver): resets, resets mid-answer, short reads and 5xx on every other request are
  retried and the backup completes and verifies; persistent 5xx fail within the retry budget
  with the HTTP status in the message; a stalled server fails at the stall deadline; no failed
  backup is listed as complete and an earlier backup is untouched.
- The snapshot service (cairn backup <- cairnd serve): resets, short reads and stalls at every
  request position fail the backup with a clear error within its --timeout; nothing partial
  looks complete.
- ENOSPC on the file driver (a 2 MiB tmpfs): put and backup fail with "No space left on
  device" (exit 7), nothing partial is complete, the earlier backup still verifies.
Prints "figures:" lines for docs/RELIABILITY.md."""
import os
import subprocess
import threading
import time

from rel import (Cairnd, FaultProxy, S3rver, cairn, check, influx_data, run_parts, statuses,
                 tmpdir, tree_sums)
import skips  # noqa: E402  (tests/harness, on the path through rel)
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-faults-")
figures = []


def make_src(path, n=6, size=300000):
    os.makedirs(os.path.join(path, "d"), exist_ok=True)
    for i in range(n):
        with open(os.path.join(path, "d" if i % 2 else "", "f%d" % i), "wb") as f:
            f.write(os.urandom(size + i))


def s3_faults():
    s3 = S3rver(T)
    if not s3.available():
        skips.missing_part("S3 faults: s3rver not installed (scripts/deps.sh test)")
        return
    s3.start()
    try:
        src = os.path.join(T, "src")
        make_src(src)
        direct = s3.url("pfx", retries=6, retry_base_ms=20)
        init_location(direct)
        rc, _, err, _ = cairn("put", direct, "20260101T000000Z-base", src)
        check(rc == 0, "S3: earlier backup written directly: " + err.strip()[-200:])
        base_sums = s3.backup_sums("pfx", "20260101T000000Z-base")

        # Stall: runs in the background, with a 5 s stall deadline (default 60 s).
        stall = FaultProxy(("127.0.0.1", s3.port), plan=["stall"], http=True).start()
        stall_res = {}

        def stalled():
            stall_res["r"] = cairn("put", s3.url("pfx", port=stall.port, retries=1,
                                                 stall_timeout=5),
                                   "20260101T000003Z-stall", src, timeout=150)
        st = threading.Thread(target=stalled)
        st.start()

        # Every request's first attempt faulted (and every other one after), each kind in
        # turn: retries make it complete, however concurrent requests interleave.
        plan = ["reset", "http503", "reset_mid", "short", "http500"]
        p = FaultProxy(("127.0.0.1", s3.port), plan=plan, http=True, alternate=True).start()
        url = s3.url("pfx", port=p.port, retries=6, retry_base_ms=20)
        rc, out, err, secs = cairn("put", url, "20260101T000001Z-faulty", src, timeout=300)
        check(rc == 0, "S3: put through resets/5xx/short reads completes (%.1fs): %s" % (
            secs, err.strip()[-300:]))
        t1 = time.time()
        rc, _, err, _ = cairn("verify", url, "20260101T000001Z-faulty", timeout=300)
        check(rc == 0, "S3: verify through the same faults passes (%.1fs): %s" % (
            time.time() - t1, err.strip()[-300:]))
        rc, _, err, _ = cairn("get", url, "20260101T000001Z-faulty", os.path.join(T, "got"),
                              timeout=300)
        check(rc == 0 and tree_sums(os.path.join(T, "got")) == tree_sums(src),
              "S3: get through faults restores identical files: " + err.strip()[-300:])
        rc, _, err, secs = cairn("list", url, timeout=300)
        check(rc == 0, "S3: list through faults works (%.1fs): %s" % (secs, err.strip()[-300:]))
        skip = ("pass", "connections", "cut")
        faults = sum(v for k, v in p.stats.items() if k not in skip)
        figures.append("S3 put+verify+get+list with every request's first attempt faulted: "
                       "%d requests, "
                       "%d faults injected (%s; %d answers cut, some inside the headers), all "
                       "retried, backup complete, verified and restored identical" % (
                           p.stats["connections"], faults,
                           ", ".join("%s %d" % (k, v) for k, v in sorted(p.stats.items())
                                     if v and k not in skip), p.stats["cut"]))

        # Persistent 503: bounded retries, clear error, nothing complete.
        p.set_plan(["http503"])
        url = s3.url("pfx", port=p.port, retries=3, retry_base_ms=20)
        rc, out, err, secs = cairn("put", url, "20260101T000002Z-down", src, timeout=120)
        check(rc == 8 and "HTTP 503" in err,
              "S3: persistent 503 fails with exit 8 naming HTTP 503 (%.1fs): %s" % (
                  secs, err.strip()[-300:]))
        check(secs < 30, "S3: retries are bounded (%.1fs)" % secs)
        figures.append("S3 persistent 503: failed after %.1f s (retries=3), exit %d" % (secs, rc))
        p.set_plan(["reset"])
        rc, out, err, secs = cairn("put", url, "20260101T000004Z-reset", src, timeout=120)
        check(rc == 8 and secs < 30, "S3: persistent resets fail with exit 8 in %.1fs: %s" % (
            secs, err.strip()[-200:]))
        p.stop()

        st.join()
        rc, out, err, secs = stall_res["r"]
        check(rc == 8 and 5 <= secs < 40 and "stall_timeout" in err,
              "S3: a stalled server fails with exit 8 at the 5 s stall deadline, not never "
              "(after %.1fs): %s" % (secs, err.strip()[-200:]))
        figures.append("S3 stalled server: put failed after %.1f s (stall_timeout=5, "
                       "retries=1), exit %d" % (secs, rc))
        stall.stop()

        sts = statuses(direct)
        for n in ("20260101T000002Z-down", "20260101T000003Z-stall", "20260101T000004Z-reset"):
            check(sts.get(n, "absent") != "complete", "S3: failed backup %s is %s, not complete"
                  % (n, sts.get(n, "absent")))
        check(sts.get("20260101T000001Z-faulty") == "complete", "S3: faulty-path backup complete")
        check(s3.backup_sums("pfx", "20260101T000000Z-base") == base_sums,
              "S3: earlier backup's objects unchanged")
        rc, _, _, _ = cairn("verify", direct, "20260101T000000Z-base")
        check(rc == 0, "S3: earlier backup verifies")
    finally:
        s3.stop()


def service_faults():
    data = influx_data(os.path.join(T, "svc"), shards=4, size=100000)
    store = os.path.join(T, "svcstore")
    init_location(store)
    c = Cairnd(data, log=os.path.join(T, "cairnd.log")).start()
    try:
        host, port = c.addr.rsplit(":", 1)
        rc, _, err, _ = cairn("backup", "--from", c.addr, "--to", store, "--name",
                              "20260101T000000Z-base")
        check(rc == 0, "service: earlier backup directly: " + err.strip()[-200:])
        base = tree_sums(os.path.join(store, "20260101T000000Z-base"))
        p = FaultProxy(("127.0.0.1", int(port)), plan=["pass"], short_range=(1, 40)).start()
        rc, _, err, _ = cairn("backup", "--from", p.addr, "--to", store, "--name",
                              "20260101T000001Z-proxied")
        check(rc == 0, "service: backup through a clean proxy works")
        npass = p.stats["connections"]
        n = 0
        worst = 0.0
        for action in ("reset", "reset_mid", "short", "stall"):
            for pos in range(npass):
                n += 1
                p.set_plan(["pass"] * pos + [action] + ["pass"] * 50)
                cut0 = p.stats["cut"]
                name = "20260102T%06dZ-%s" % (n, action.replace("_", ""))
                rc, out, err, secs = cairn("backup", "--from", p.addr, "--to", store, "--name",
                                           name, "--timeout", "1500", "--parallel", "1",
                                           timeout=120)
                worst = max(worst, secs)
                if action in ("short", "reset_mid") and p.stats["cut"] == cut0:
                    n -= 1  # the whole answer fitted under the cut: no fault happened
                    continue
                # secs bounds the failure far above the 1.5 s --timeout (the tests run loaded
                # and under TSan) and below the 60 s default idle timeout it would take were
                # --timeout ignored.
                check(rc == 8 and secs < 40 and err.strip() != "",
                      "service: %s at request %d: exit %d in %.1fs: %s" % (
                          action, pos, rc, secs, err.strip().splitlines()[-1][-160:]
                          if err.strip() else ""))
                check(statuses(store).get(name, "absent") != "complete",
                      "service: %s is not complete" % name)
        p.stop()
        check(tree_sums(os.path.join(store, "20260101T000000Z-base")) == base,
              "service: earlier backup unchanged")
        rc, _, _, _ = cairn("verify", store, "20260101T000000Z-base")
        check(rc == 0, "service: earlier backup verifies")
        figures.append("snapshot service: %d faulted backups (reset, reset mid-answer, short "
                       "read, stall at each of %d request positions), all failed with exit 8 "
                       "within %.1f s (--timeout 1500), none complete" % (n, npass, worst))
    finally:
        c.stop()


def enospc():
    mnt = os.path.join(T, "small")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        skips.skip_part("ENOSPC: cannot mount a tmpfs (%s)" % r.stdout.decode().strip())
        return
    try:
        small = os.path.join(T, "smallsrc")
        os.makedirs(small)
        with open(os.path.join(small, "a"), "wb") as f:
            f.write(os.urandom(100000))
        init_location(mnt)
        rc, _, err, _ = cairn("put", mnt, "20260101T000000Z-base", small)
        check(rc == 0, "ENOSPC: earlier small backup fits: " + err.strip())
        base = tree_sums(os.path.join(mnt, "20260101T000000Z-base"))
        big = os.path.join(T, "bigsrc")
        make_src(big, n=4, size=1 << 20)
        rc, _, err, _ = cairn("put", mnt, "20260101T000001Z-full", big)
        check(rc == 7 and "No space left on device" in err,
              "ENOSPC: put fails with exit 7 and the OS reason: %d %s" % (rc, err.strip()[-200:]))
        data = influx_data(os.path.join(T, "svc2"), shards=4, size=1 << 20)
        c = Cairnd(data).start()
        try:
            rc, _, err, _ = cairn("backup", "--from", c.addr, "--to", mnt, "--name",
                                  "20260101T000002Z-full")
        finally:
            c.stop()
        check(rc == 7 and "No space left on device" in err,
              "ENOSPC: backup fails with exit 7 and the OS reason: %d %s" % (rc, err.strip()[-200:]))
        sts = statuses(mnt)
        for n in ("20260101T000001Z-full", "20260101T000002Z-full"):
            check(sts.get(n, "absent") != "complete", "ENOSPC: %s is %s" % (n, sts.get(n, "absent")))
        check(tree_sums(os.path.join(mnt, "20260101T000000Z-base")) == base and
              cairn("verify", mnt, "20260101T000000Z-base")[0] == 0,
              "ENOSPC: earlier backup unchanged and verifies")
        rc, _, err, _ = cairn("prune", mnt, "--keep-last", "1")
        check(rc == 0 and set(statuses(mnt)) == {"20260101T000000Z-base"},
              "ENOSPC: prune removes the debris: %s" % err.strip())
        figures.append("ENOSPC on a 2 MiB tmpfs: put and backup failed with exit 7, nothing "
                       "complete, prune cleaned up")
    finally:
        subprocess.run(["umount", "-l", mnt])


def main():
    run_parts(T, figures, s3_faults, service_faults, enospc)


if __name__ == "__main__":
    main()
