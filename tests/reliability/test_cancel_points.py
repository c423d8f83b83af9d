"""SIGINT/SIGTERM at seeded random points of every long command (README: exit 130), file and
S3 storage (s3rver), N runs each (CAIRN_CANCEL_RUNS, default 20; CAIRN_SEED reproduces a run):
put, get, verify, prune, backup from a real influxd, restore --into, snapshot extract; and
RUNS/4 restores to that influxd (--to --newdb), which stop part-way by design.

Points are progress points, not times, so they do not depend on the machine's speed: once
the command has installed its signal handlers (SigCgt in /proc/PID/status), the signal goes
out when it has stored k of the files a complete run stores (objects in s3rver's directory
for S3), written k files into its temporary directory, read a fraction of the stored bytes
(/proc/PID/io; from S3: k ranged GETs in s3rver's log), or removed k backups (prune), k
random. A run may finish between the point and the signal: then it must exit 0 with a
complete result (counted and printed). After every run:
- exit 130 (or 0 when it finished first; anything else fails), the message says cancelled;
- no debris that looks complete: a cancelled backup is not listed at all (its MANIFEST and
  objects are removed), a restore or extract target is exactly as before, no temporary is
  left (beside or inside the target, in the store);
- prune: every backup is either gone entirely or still complete with every file it had
  (compared byte for byte with the store before), never half-deleted.
Plus a silent peer (accepts, never answers): backup from a snapshot server, verify from an S3
endpoint: exit 130 after the signal, well before their 60 s idle timeouts.
Every run has a 30 s deadline after its signal; the signal-to-exit times are printed."""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from rel import (CAIRN, S3rver, check, cairn, run_parts, skips, statuses, temporaries, tmpdir,
                 tree_state)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "influx"))
import influx  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-cancelpt-")
figures = []
SEED = int(os.environ.get("CAIRN_SEED", random.randrange(1 << 30)))
print("seed", SEED, flush=True)
rnd = random.Random(SEED)
RUNS = int(os.environ.get("CAIRN_CANCEL_RUNS", "20"))
START = 300  # bounds a command that never reaches its point (a hang, not a measurement)
AFTER = 30  # from the signal to the exit
NFILES = 16
s3 = None


def quiet_fail(cond, msg):
    """Record a failure (printed); successes are summed up per command instead."""
    if not cond:
        check(False, msg)
    return cond


def make_tree(src, n=NFILES, size=256 << 10):
    r = random.Random(SEED)
    for i in range(n):
        d = os.path.join(src, "d%d" % (i % 4))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%03d" % i), "wb") as f:
            f.write(r.randbytes(size))


def count_files(path, suffix=""):
    n = 0
    for _, _, files in os.walk(path):
        n += sum(1 for f in files if f.endswith(suffix))
    return n


def rchar(pid):
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def catches_signals(pid):
    """True once pid has its SIGINT and SIGTERM handlers installed (SigCgt in /proc): a signal
    before that kills a process by default, as for any program, before it has begun anything."""
    want = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16) & want == want
    except OSError:
        pass
    return False


def interrupt(args, ready):
    """Start cairn, wait for its signal handlers, poll ready(pid, seconds since start) until
    true, then signal it once. Returns (rc, stderr, seconds from signal to exit); rc -9 when it
    had to be killed."""
    sig = rnd.choice([signal.SIGINT, signal.SIGTERM])
    p = subprocess.Popen([CAIRN] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while p.poll() is None and not catches_signals(p.pid) and time.time() - t0 < START:
        time.sleep(0.001)
    while p.poll() is None and not ready(p.pid, time.time() - t0) and time.time() - t0 < START:
        time.sleep(0.002)
    ts = time.time()
    if p.poll() is None:
        p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=AFTER)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        return -9, err.decode(errors="replace"), AFTER
    return p.returncode, err.decode(errors="replace"), time.time() - ts


def campaign(label, run_one, runs=RUNS):
    """runs runs of one command; run_one(i) -> (args, ready, after(rc)). Counts outcomes."""
    t0 = time.time()
    cancelled, finished, lat, bad = 0, 0, [], 0
    for i in range(runs):
        args, ready, after = run_one(i)
        rc, err, secs = interrupt(args, ready)
        what = "%s run %d (%s)" % (label, i, " ".join(args[:1]))
        good = quiet_fail(rc in (0, 130), "%s: exit 130, or 0 when it finished first (got %d): %s"
                          % (what, rc, err.strip()[-300:]))
        if rc == 130:
            cancelled += 1
            lat.append(secs)
            good &= quiet_fail("cancelled" in err, "%s: the error says cancelled: %s"
                               % (what, err.strip()[-300:]))
        elif rc == 0:
            finished += 1
        good &= after(rc)
        bad += not good
    check(bad == 0, "%s: %d runs, every one exit 130 or 0 and without debris that looks complete"
          % (label, runs))
    check(cancelled >= max(runs // 4, 1), "%s: at least a quarter of the runs cancelled: %d of %d"
          % (label, cancelled, runs))
    figures.append("%-28s %2d cancelled (exit 130), %2d finished first; signal to exit max "
                   "%.2f s; %.0f s" % (label, cancelled, finished, max(lat) if lat else 0,
                                       time.time() - t0))


# ---- per-storage helpers: file store at a directory, S3 at a prefix of s3rver ----

class FileStore:
    kind = "file"

    def __init__(self, name):
        self.name = name
        self.root = os.path.join(T, name)
        self.url = self.root

    def progress(self, backup):
        return count_files(os.path.join(self.root, backup))

    def leftovers(self, backup):
        """Anything of a backup that must not exist (it was cancelled) plus temporaries."""
        d = os.path.join(self.root, backup)
        return ([d] if os.path.lexists(d) else []) + temporaries(self.root)

    def backup_state(self, backup):
        return tree_state(os.path.join(self.root, backup))

    def copy(self, name):
        dst = FileStore(name)
        shutil.copytree(self.root, dst.root)
        return dst

    def manifests(self):
        return sum(os.path.exists(os.path.join(self.root, b, "MANIFEST"))
                   for b in os.listdir(self.root))


class S3Store:
    kind = "s3"

    def __init__(self, name):
        self.name = name
        self.root = os.path.join(s3.data, s3.bucket, name)
        self.url = s3.url(name)

    def progress(self, backup):
        return count_files(os.path.join(self.root, backup), "._S3rver_object")

    def leftovers(self, backup):
        d = os.path.join(self.root, backup)
        return ["%s (%d objects)" % (d, count_files(d, "._S3rver_object"))] \
            if count_files(d, "._S3rver_object") else []

    def backup_state(self, backup):
        """The objects' bytes (s3rver's metadata files hold times, so they are left out)."""
        st = tree_state(os.path.join(self.root, backup))
        return st and [e for e in st if not e[0].endswith((".json", ".md5"))]

    def copy(self, name):
        dst = S3Store(name)
        shutil.copytree(self.root, dst.root)
        return dst

    def manifests(self):
        return sum(os.path.exists(os.path.join(self.root, b, "MANIFEST._S3rver_object"))
                   for b in os.listdir(self.root))


def stores(name):
    # --no-dedup: progress is observed as a backup's stored fNNNNNN objects, and a prune is
    # judged backup directory by backup directory (a deduplicating prune rewrites .index/.data).
    nd = ("--no-encryption", "--no-dedup")
    out = [FileStore(name)]
    init_location(out[0].url, *nd)
    if s3 is not None:
        out.append(S3Store(name))
        init_location(out[-1].url, *nd)
    return out


def backup_campaign(store, label, args_for, total):
    """Backups (put or backup --from) into store, signalled after k of total stored files."""
    before = statuses(store.url) if os.path.exists(store.root) else {}
    made = []

    def run_one(i):
        name = "%s%02d" % (label.split()[0][:3], i)
        k = rnd.randrange(0, total)

        def after(rc):
            sts = statuses(store.url)
            if rc == 0:
                made.append(name)
                return quiet_fail(sts.get(name) == "complete", "%s %s exit 0: listed complete: %s"
                                  % (label, name, sts.get(name)))
            return (quiet_fail(name not in sts, "%s %s cancelled after %d files: not listed "
                               "(%s)" % (label, name, k, sts.get(name)))
                    & quiet_fail(not store.leftovers(name), "%s %s: nothing left: %s"
                                 % (label, name, store.leftovers(name))))
        return args_for(name), lambda pid, t: store.progress(name) >= k, after
    campaign(label, run_one)
    sts = statuses(store.url)
    check(set(sts) == set(before) | set(made) and set(sts.values()) <= {"complete"},
          "%s: only the backups that exited 0 were added, all complete" % label)
    for n in made[:3]:
        rc, _, err, _ = cairn("verify", store.url, n)
        check(rc == 0, "%s: %s (exit 0) verifies: %s" % (label, n, err.strip()))


def restore_campaign(store, label, args_for, total):
    """Restores of a backup of store into fresh targets (absent, or an empty directory),
    signalled after k of total files are written into the restore's temporary directory."""
    def run_one(i):
        parent = os.path.join(T, "%s-%s-%02d" % (label.split()[0], store.kind, i))
        os.mkdir(parent)
        target = os.path.join(parent, "t")
        if i % 2:
            os.mkdir(target, 0o750)
        before = tree_state(target)
        k = rnd.randrange(0, total)

        def written():
            n = sum(count_files(d) for d in temporaries(parent))
            if os.path.isdir(target):
                n += sum(count_files(os.path.join(target, d)) for d in os.listdir(target)
                         if d.startswith(".cairn-restore."))
            return n

        def after(rc):
            left = temporaries(parent, target) + [
                d for d in (os.listdir(target) if os.path.isdir(target) else [])
                if d.startswith(".cairn-restore.")]
            ok = quiet_fail(not left, "%s %d: no temporaries: %s" % (label, i, left))
            if rc == 0:
                ok &= quiet_fail(count_files(target) == total, "%s %d exit 0: %d files restored"
                                 % (label, i, count_files(target)))
            else:
                ok &= quiet_fail(tree_state(target) == before, "%s %d cancelled after %d files: "
                                 "target exactly as before" % (label, i, k))
            shutil.rmtree(parent)
            return ok
        return args_for(target), lambda pid, t: written() >= k, after
    campaign(label, run_one)


def verify_campaign(store, name):
    label = "verify %s" % store.kind
    stored = sum(os.path.getsize(os.path.join(r, f))
                 for r, _, fs in os.walk(os.path.join(store.root, name)) for f in fs)
    before = statuses(store.url)
    rc, _, err, secs = cairn("verify", store.url, name)
    check(rc == 0, "%s: an uninterrupted verify passes (%.2f s): %s" % (label, secs, err.strip()))

    def run_one(i):
        frac = rnd.random()
        if store.kind == "file":
            ready = (lambda pid, t: rchar(pid) >= frac * stored)
        else:  # ranged GETs of the backup's files, as s3rver logs them (" 206 ")
            with open(s3.log_path, "rb") as f:
                off = f.seek(0, 2)
            k = int(frac * NFILES)
            key = ("/%s/f" % name).encode()

            def ready(pid, t):
                with open(s3.log_path, "rb") as f:
                    f.seek(off)
                    return sum(1 for ln in f if b" 206 " in ln and key in ln) >= k

        def after(rc):
            return quiet_fail(statuses(store.url) == before, "%s %d: the store is unchanged"
                              % (label, i))
        return ["verify", store.url, name, "--workers", "2"], ready, after
    campaign(label, run_one)


def prune_campaign(base, nbackups, keep):
    """Prunes of a copy of base (nbackups backups, --keep-last keep), signalled once k
    backups are gone (their MANIFEST, which goes first)."""
    label = "prune %s" % base.kind
    orig = {b: base.backup_state(b) for b in os.listdir(base.root)}

    def run_one(i):
        st = base.copy("%s-prune%02d" % (base.name, i))
        k = rnd.randrange(0, nbackups - keep)

        def after(rc):
            sts = statuses(st.url)
            ok = quiet_fail(set(sts.values()) <= {"complete"}, "%s %d: every listed backup is "
                            "complete: %s" % (label, i, sts))
            for b, state in orig.items():
                now = st.backup_state(b)
                ok &= quiet_fail(now is None or now == state, "%s %d: backup %s is complete with "
                                 "every file, or gone entirely" % (label, i, b))
            if rc == 0:
                ok &= quiet_fail(len(sts) == keep, "%s %d exit 0: %d kept" % (label, i, len(sts)))
            ok &= quiet_fail(not temporaries(st.root) if st.kind == "file" else True,
                             "%s %d: no temporaries" % (label, i))
            shutil.rmtree(st.root)
            return ok
        return (["prune", st.url, "--keep-last", str(keep)],
                lambda pid, t: st.manifests() <= nbackups - k, after)
    campaign(label, run_one)


# ---- the parts ----

def setup():
    global s3
    s3 = S3rver(T)
    if not s3.available():
        skips.missing_part("S3 variants: s3rver not installed (scripts/deps.sh test)")
        s3 = None
    else:
        s3.start()
    make_tree(os.path.join(T, "src"))


def puts_gets_verifies():
    src = os.path.join(T, "src")
    for st in stores("pg"):
        backup_campaign(st, "put %s" % st.kind,
                        lambda name: ["put", st.url, name, src, "--workers", "2"], NFILES)
        rc, _, err, _ = cairn("put", st.url, "full", src)
        check(rc == 0, "put %s full: %s" % (st.kind, err.strip()))
        restore_campaign(st, "get %s" % st.kind,
                         lambda target: ["get", st.url, "full", target, "--workers", "2"], NFILES)
        verify_campaign(st, "full")


def prunes():
    small = os.path.join(T, "small")
    os.makedirs(small)
    with open(os.path.join(small, "f"), "wb") as f:
        f.write(b"x" * 4096)
    for st in stores("prbase"):
        for i in range(8):
            rc, _, err, _ = cairn("put", st.url, "b%02d" % i, small)
            check(rc == 0, "put %s b%02d: %s" % (st.kind, i, err.strip()))
        prune_campaign(st, 8, 2)


def influx_parts():
    if influx.INFLUXD is None:
        skips.missing_part("backup from influxd, restore --into: influxd not installed "
                           "(scripts/deps.sh test)")
        return
    ifx = influx.Influxd(os.path.join(T, "influxd")).start()
    try:
        # 16-17 shards of one hour each: a backup is meta, one tar per shard and the MANIFEST.
        ifx.query("CREATE DATABASE big")
        ifx.query('CREATE RETENTION POLICY "h" ON "big" DURATION 1000w REPLICATION 1 '
                  'SHARD DURATION 1h DEFAULT')
        r = random.Random(SEED)
        for h in range(16):
            lines = "\n".join("m,host=h%d v=%f %d" % (j % 50, r.random(), 1600000000 + h * 3600
                                                         + j % 3600) for j in range(20000))
            ifx.write("big", lines)
        ifx.wait_tsm()
        for st in stores("ifx"):
            rc, _, err, _ = cairn("backup", "--from", ifx.influx_addr, "--to", st.url, "--name",
                                  "full", "--db", "big")
            check(rc == 0, "backup %s full: %s" % (st.kind, err.strip()))
            nfiles = st.progress("full") - 1  # meta and one tar per shard, less the MANIFEST
            check(nfiles >= 16, "the InfluxDB backup has %d files" % nfiles)
            backup_campaign(st, "backup-influxd %s" % st.kind,
                            lambda name: ["backup", "--from", ifx.influx_addr, "--to", st.url,
                                          "--name", name, "--db", "big", "--parallel", "2"],
                            nfiles + 1)
            restore_campaign(st, "restore-into %s" % st.kind,
                             lambda target: ["restore", st.url, "full", "--into", target],
                             nfiles)
        restore_to_server(ifx, FileStore("ifx"), nfiles - 1)
    finally:
        ifx.stop()


def restore_to_server(ifx, st, shards):
    """Online restores (--newdb) signalled once k shards exist on the server. A cancelled one
    stops part-way by design (the new database keeps what was sent, and the error says so);
    what is checked is the exit code, the message and a complete result on exit 0."""
    def shard_dirs(db):
        d = os.path.join(ifx.root, "data", db)
        return sum(len(os.listdir(os.path.join(d, rp))) for rp in
                   (os.listdir(d) if os.path.isdir(d) else []) if rp != "_series")

    def run_one(i):
        db = "nb%02d" % i
        k = rnd.randrange(0, shards)

        def after(rc):
            return rc != 0 or quiet_fail(shard_dirs(db) == shards, "restore --to %d exit 0: %d "
                                         "of %d shards" % (i, shard_dirs(db), shards))
        return (["restore", st.url, "full", "--to", ifx.influx_addr, "--db", "big", "--newdb", db],
                lambda pid, t: shard_dirs(db) >= k, after)
    campaign("restore-to-influxd file", run_one, runs=max(RUNS // 4, 2))


def extracts():
    state = os.path.join(T, "state.bin")
    with open(state, "wb") as f:
        f.write(random.Random(SEED).randbytes(24 << 20))
    snap = os.path.join(T, "s.snap")
    rc, _, err, _ = cairn("snapshot", "save", state, snap, "--index", "7", "--term", "2")
    check(rc == 0, "snapshot save: " + err.strip())
    size = os.path.getsize(state)

    def run_one(i):
        d = os.path.join(T, "x%02d" % i)
        os.mkdir(d)
        out = os.path.join(d, "state.bin")
        frac = rnd.random()

        def written():
            n = 0
            for t in temporaries(d):
                try:  # renamed into place (or removed) since it was listed: not counted
                    n += os.path.getsize(t) if os.path.isfile(t) else 0
                except FileNotFoundError:
                    pass
            return n

        def after(rc):
            ok = quiet_fail(not temporaries(d), "extract %d: no temporaries: %s"
                            % (i, temporaries(d)))
            if rc == 0:
                ok &= quiet_fail(os.path.getsize(out) == size, "extract %d exit 0: complete" % i)
            else:
                ok &= quiet_fail(os.listdir(d) == [], "extract %d cancelled at %.0f %%: nothing "
                                 "written: %s" % (i, 100 * frac, os.listdir(d)))
            shutil.rmtree(d)
            return ok
        return (["snapshot", "extract", snap, out], lambda pid, t: written() >= frac * size,
                after)
    campaign("snapshot extract", run_one)


class SilentPeer:
    """Accepts connections and never answers (a hung server)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def silent_peers():
    """The signal arrives while cairn waits for a peer that says nothing: it must stop at once,
    not after its 60 s idle timeout (a signal lands on any thread, so poll() is not woken)."""
    peer = SilentPeer()
    store = os.path.join(T, "silent")
    init_location(store)
    url = ("s3://b/p?endpoint=http://127.0.0.1:%d&region=us-east-1&path_style=1"
           % peer.port)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    cases = [("backup --from a silent snapshot server",
              ["backup", "--from", "127.0.0.1:%d" % peer.port, "--to", store, "--name", "s"]),
             ("verify from a silent S3 endpoint", ["verify", url, "s"])]
    try:
        for what, args in cases:
            conns = len(peer.conns)
            rc, err, secs = interrupt(args, lambda pid, t: len(peer.conns) > conns and t > 0.5)
            check(rc == 130, "%s: exit 130 after the signal, within %d s (got %d after %.2f s): %s"
                  % (what, AFTER, rc, secs, err.strip()[-200:]))
            figures.append("%s: signal to exit %.2f s" % (what, secs))
        check(not os.path.exists(os.path.join(store, "s")), "the cancelled backup is not left")
    finally:
        peer.close()


def main_parts():
    setup()
    try:
        run_parts(T, figures, silent_peers, puts_gets_verifies, prunes, influx_parts, extracts)
    finally:
        if s3 is not None:
            s3.stop()


main_parts()
