"""Memory of an etcd snapshot stays bounded: a real etcd holding about 200 MB of values is
snapshotted by tests/source/etcd_snap, whose peak RSS (its VmHWM at the end) must stay under
32 MiB; the result is etcd's own (etcdctl snapshot status reads it at etcd's revision).
`etcdctl snapshot save`'s peak RSS on the same server is printed beside it, for the record.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from etcdtest import (ETCD_SNAP, ETCDCTL, WAIT, Etcd, b64, etcdctl_status,  # noqa: E402
                      need_etcd)

VALUE = 256 * 1024
KEYS = 800  # 200 MiB of values
LIMIT = 32 << 20


def vm_hwm(pid):
    """The process's peak RSS so far in bytes (VmHWM starts afresh at exec, unlike wait4's
    ru_maxrss, which would count this Python process copied by the fork); 0 once gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def watch_rss(args, env=None):
    """Runs args to the end, reading VmHWM until it exits: (exit code, last VmHWM seen).
    For the native tool only, for the record: the last reading may miss the final moments."""
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    while p.poll() is None:
        peak = max(peak, vm_hwm(p.pid))
        time.sleep(0.05)
    return p.returncode, peak


def values(rng):
    for i in range(KEYS):
        yield "/big/%04d" % i, rng.randbytes(VALUE)


def main():
    need_etcd()
    seed = int(os.environ.get("CAIRN_SEED", "15"))
    print("seed %d" % seed, flush=True)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="cairn-etcd-rss-")
    e = Etcd(tmp)
    failed = False
    try:
        e.start()
        e.put_big(values(rng))
        rev = e.call("/v3/kv/range", {"key": b64("/big/0000")})["header"]["revision"]
        out = os.path.join(tmp, "big.snap")
        p = subprocess.run([ETCD_SNAP, "snapshot", e.url, out], capture_output=True, text=True,
                           timeout=WAIT * 5)
        rc, err = p.returncode, p.stderr
        rss = json.loads(p.stdout)["peak_rss"] if rc == 0 else 0
        size = os.path.getsize(out) if os.path.exists(out) else 0
        print("etcd_snap: exit %d, snapshot %d bytes, peak RSS %.1f MiB %s" %
              (rc, size, rss / 1048576, err.strip()), flush=True)
        failed |= rc != 0 or size < KEYS * VALUE
        if rss >= LIMIT:
            print("FAIL peak RSS %d >= %d" % (rss, LIMIT))
            failed = True
        if rc == 0:
            st = etcdctl_status(out)
            if st["revision"] != int(rev):
                print("FAIL etcdctl snapshot status: revision %s, etcd %d" % (st["revision"], rev))
                failed = True
        native = os.path.join(tmp, "native.snap")
        nrc, nrss = watch_rss([ETCDCTL, "--endpoints", e.url, "snapshot", "save", native],
                              env=dict(os.environ, ETCDCTL_API="3"))
        print("etcdctl snapshot save: exit %d, peak RSS %.1f MiB" % (nrc, nrss / 1048576))
    finally:
        e.stop()
    if failed:
        print("failed (kept %s)" % tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
