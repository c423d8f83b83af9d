"""Shared by the restore-drill tests (tests/sched/test_drill_*.py): a real cairnd run with a
fake clock and one schedule backing up SOURCE into file:// storage with `drill = every 1h`,
its /metrics read over HTTP, and the drill's course: a drill on a good backup passes; the
stored object XOR-damaged, the next drill fails (cairn_drill_last_success 0, counted,
logged); the damage undone, the next one passes again; the scratch directory is gone each
time. Deadlines bound a hang on a loaded machine; nothing waits a fixed time."""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import skips  # noqa: E402,F401
# The cairnd process, the checks and the drill schedule's configuration: tests/harness.
from cairnd_run import (BIN, Cairnd, check, drill_config, epoch, failures,  # noqa: E402,F401
                        finish, wait_until)


def xor_largest(location, name):
    """XOR one byte in the middle of the largest stored data object of backup NAME (not the
    MANIFEST): a per-file object in the backup's directory or, in a deduplicating repository
    (docs/FORMAT.md "Chunk store"), a pack in `.data/` (the only backup's), where the byte is
    in the middle of the blobs, before the header. Calling it again undoes it."""
    files = []
    for root, _, names in os.walk(os.path.join(location, name)):
        for n in names:
            if not n.startswith("MANIFEST"):
                p = os.path.join(root, n)
                files.append((os.path.getsize(p), p, False))
    data = os.path.join(location, ".data")
    for n in os.listdir(data) if os.path.isdir(data) else []:
        p = os.path.join(data, n)
        files.append((os.path.getsize(p), p, True))
    size, path, pack = max(files)
    at = size // 2
    if pack:
        with open(path, "rb") as f:
            f.seek(size - 12)
            trailer = f.read(12)
        assert trailer[4:] == b"CRNPACK1", "%s is no pack" % path
        at = (size - 12 - int.from_bytes(trailer[:4], "little")) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x5A]))
    return path


def run_drill_course(tmp, source, extra="", probe_says=None, schedule="db", key_file=None):
    """The course in the module docstring, for one source; probe_says: text the source's
    probe logs on a good drill; key_file: the location is an encrypted repository."""
    c, backups = drill_config(tmp, schedule, source, extra="catch-up = latest\n" + extra,
                              keep_last=5, key_file=key_file)
    drill_dir = os.path.join(tmp, "drill")
    name = "20260102T000000Z-" + schedule
    c.set_clock("2026-01-01T10:30:00Z")
    c.start()
    try:
        m = lambda n: c.metric(n, schedule)  # noqa: E731
        c.set_clock("2026-01-02T00:00:00Z")
        c.wait("the backup", lambda: m("cairn_backups_succeeded_total") == 1)
        c.wait("the first drill", lambda: m("cairn_drill_last_success") is not None)
        check(m("cairn_drill_last_success") == 1, "a drill of the good backup %s passes" % name)
        check(m("cairn_drill_last_timestamp_seconds") == epoch("2026-01-02T00:00:00Z"),
              "cairn_drill_last_timestamp_seconds is the drill's time")
        check(m("cairn_drill_duration_seconds") > 0, "cairn_drill_duration_seconds is set")
        check("restore drill of %s passed" % name in c.text(), "the passed drill is logged")
        if probe_says:
            check(probe_says in c.text(), "the probe says: %s" % probe_says)
        check(not os.path.exists(os.path.join(drill_dir, schedule)), "scratch removed after a pass")

        damaged = xor_largest(backups, name)
        c.set_clock("2026-01-02T01:00:00Z")
        c.wait("the drill of the damaged backup", lambda: m("cairn_drill_failures_total") == 1)
        check(m("cairn_drill_last_success") == 0,
              "the drill of a damaged backup (%s XOR 0x5a) fails: last_success 0" %
              os.path.basename(damaged))
        check(m("cairn_drill_last_timestamp_seconds") == epoch("2026-01-02T01:00:00Z"),
              "the failed drill's time is recorded")
        check(re.search(r"restore drill of %s FAILED after [0-9.]+s: restore of %s: .*"
                        r"(mismatch|corrupt|checksum|authentic)" % (name, name), c.text())
              is not None,
              "the failure is logged with its reason")
        check(not os.path.exists(os.path.join(drill_dir, schedule)), "scratch removed after a failure")

        xor_largest(backups, name)  # undone
        c.set_clock("2026-01-02T02:00:00Z")
        c.wait("the drill after repair", lambda: m("cairn_drill_last_timestamp_seconds") ==
               epoch("2026-01-02T02:00:00Z"))
        check(m("cairn_drill_last_success") == 1 and m("cairn_drill_failures_total") == 1,
              "the repaired backup's drill passes again")
        check(m("cairn_backups_started_total") == 1, "drills took no backup")
    finally:
        rc = c.stop()
    check(rc == 0, "cairnd stops cleanly on SIGTERM (exit %s)" % rc)
    return c
