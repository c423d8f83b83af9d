"""Skip what did not change (restic's rule; docs/STORAGE.md "Unchanged files"), through the
CLI, on file storage (encrypted repository) and on a real s3rver (plain repository):
- a second backup of an unchanged tree reads no file content: unchanged_files is every file
  but a sparse one (always read: its extents are not kept), and strace(1) shows no other
  regular file of the tree opened (only directories);
- --force-read reads every file (unchanged_files 0), and so does a repository without a chunk
  store (--no-dedup);
- a touched file (mtime changed) and a same-size rewrite with its mtime put back (ctime
  changed) are read again; every other file is not;
- restores of each backup are byte-exact;
- the parent removed and its chunks garbage-collected (prune): the child still restores and
  `cairn check --read-data` passes."""
import json
import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import CAIRN, check, cairn, tmpdir, finish, new_key_file, with_s3rver  # noqa: E402
import skips  # noqa: E402

T = tmpdir("cairn-skip-")
os.environ["XDG_CACHE_HOME"] = os.path.join(T, "cache")


def make_data(d):
    rnd = random.Random(7)
    os.makedirs(os.path.join(d, "sub", "deeper"))
    with open(os.path.join(d, "big.bin"), "wb") as f:
        f.write(rnd.randbytes(3 << 20))
    for i in range(40):
        with open(os.path.join(d, "sub", "f%02d.txt" % i), "wb") as f:
            f.write(("line %d of file %d\n" % (i, i) * (50 + 37 * i)).encode())
    with open(os.path.join(d, "sub", "deeper", "same.bin"), "wb") as f:
        f.write(rnd.randbytes(200000))
    open(os.path.join(d, "empty"), "wb").close()
    os.link(os.path.join(d, "sub", "f00.txt"), os.path.join(d, "hard"))
    os.symlink("sub/f01.txt", os.path.join(d, "link"))
    with open(os.path.join(d, "sparse.bin"), "wb") as f:  # holes: always read again
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(rnd.randbytes(4096))


def sparse_files(d):
    """Files the walk stores sparse (their extents are not kept by the skip)."""
    return sum(1 for r, _, fs in os.walk(d) for x in fs
               if not os.path.islink(os.path.join(r, x)) and
               os.lstat(os.path.join(r, x)).st_blocks * 512 < os.lstat(os.path.join(r, x)).st_size)


def regular_files(d):
    """Files a backup stores (the first path of each inode), and their bytes."""
    seen, n, size = set(), 0, 0
    for r, _, files in os.walk(d):
        for x in files:
            st = os.lstat(os.path.join(r, x))
            if os.path.islink(os.path.join(r, x)) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            n, size = n + 1, size + st.st_size
    return n, size


def tree(d):
    out = {}
    for r, _, files in os.walk(d):
        for n in files:
            p = os.path.join(r, n)
            if os.path.islink(p):
                out[os.path.relpath(p, d)] = ("link", os.readlink(p))
            else:
                with open(p, "rb") as f:
                    out[os.path.relpath(p, d)] = f.read()
    return out


def backup(url, src, name, keyargs, *extra, put=False):
    args = (["put", url, name, src, "--json"] if put else
            ["backup", "--from", src, "--to", url, "--name", name, "--json"])
    rc, out, err, _ = cairn(*args, *keyargs, *extra)
    if not check(rc == 0, "backup %s: %s" % (name, err.strip()[-300:])):
        return {}
    return json.loads(out)


def opened_files(url, src, name, keyargs):
    """Back up under strace: the regular files of src that were opened."""
    log = os.path.join(T, "strace-" + name)
    cmd = ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", log, CAIRN, "backup",
           "--from", src, "--to", url, "--name", name, "--json"] + keyargs
    # LeakSanitizer cannot run under ptrace: its leak check stays on in every other run.
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600, env=env)
    check(p.returncode == 0, "backup %s under strace: %s" % (name, p.stderr.decode()[-300:]))
    opened = set()
    with open(log, errors="replace") as f:
        for line in f:
            if src not in line or "O_DIRECTORY" in line or "ENOENT" in line:
                continue
            path = line.split('"')[1]
            if os.path.isfile(path) and not os.path.islink(path):
                opened.add(os.path.relpath(path, src))
    return json.loads(p.stdout) if p.returncode == 0 else {}, opened


def restored(url, name, keyargs, where):
    out = os.path.join(T, "out-%s-%s" % (where, name))
    rc, _, err, _ = cairn("restore", url, name, "--into", out, *keyargs)
    check(rc == 0, "%s: restore %s: %s" % (where, name, err.strip()[-300:]))
    return tree(out) if rc == 0 else {}


def scenario(url, where, keyargs):
    src = os.path.join(T, "src-" + where)
    make_data(src)
    nfiles, nbytes = regular_files(src)
    nsparse = sparse_files(src)
    if nsparse:
        nfiles, nbytes = nfiles - nsparse, nbytes - (8 << 20)
    rc, _, err, _ = cairn("init", url, *(keyargs or ["--no-encryption"]), "--chunker",
                          "16K,64K,256K")
    check(rc == 0, "%s: init: %s" % (where, err))
    r1 = backup(url, src, "b1", keyargs)
    check(r1.get("unchanged_files") == 0, "%s: a first backup reads every file (%s)" %
          (where, r1.get("unchanged_files")))
    want1 = tree(src)
    r2, opened = opened_files(url, src, "b2", keyargs)
    check(r2.get("unchanged_files") == nfiles and r2.get("unchanged_bytes") == nbytes,
          "%s: an unchanged tree: %s of %d files, %s of %d bytes unchanged" %
          (where, r2.get("unchanged_files"), nfiles, r2.get("unchanged_bytes"), nbytes))
    check(opened == ({"sparse.bin"} if nsparse else set()),
          "%s: no file of the unchanged tree was opened (strace), a sparse one aside: %s" %
          (where, sorted(opened)[:5]))
    r3 = backup(url, src, "b3", keyargs, "--force-read", put=True)
    check(r3.get("unchanged_files") == 0, "%s: put --force-read reads every file (%s unchanged)" %
          (where, r3.get("unchanged_files")))
    # A touched file, and a same-size rewrite with its mtime put back (only ctime tells).
    os.utime(os.path.join(src, "sub", "f05.txt"))
    p = os.path.join(src, "sub", "deeper", "same.bin")
    st = os.stat(p)
    with open(p, "r+b") as f:
        f.write(b"X" * 1000)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    check(os.stat(p).st_mtime_ns == st.st_mtime_ns and os.stat(p).st_size == st.st_size,
          "%s: the rewrite kept size and mtime" % where)
    r4, opened = opened_files(url, src, "b4", keyargs)
    check(r4.get("unchanged_files") == nfiles - 2 and r4.get("unchanged_bytes") < nbytes,
          "%s: touched and rewritten files are read again: %s unchanged of %d" %
          (where, r4.get("unchanged_files"), nfiles))
    check(opened == {"sub/f05.txt", "sub/deeper/same.bin"} | ({"sparse.bin"} if nsparse else set()),
          "%s: exactly the two changed files were opened: %s" % (where, sorted(opened)))
    want4 = tree(src)
    check(restored(url, "b2", keyargs, where) == want1, "%s: b2 restores byte-exact" % where)
    check(restored(url, "b4", keyargs, where) == want4, "%s: b4 restores byte-exact" % where)
    # Only b2 stays: its files, all taken from b1, are kept alive by b2's MANIFEST alone
    # (every backup's lists have the same ids here, so the others go too).
    for n in ("b1", "b3", "b4"):
        rc, out, err, _ = cairn("rm", url, n, *keyargs)
        check(rc == 0, "%s: rm %s: %s" % (where, n, err))
    rc, out, err, _ = cairn("prune", url, "--keep-last", "3", "--json", *keyargs)
    check(rc == 0, "%s: prune (garbage collection): %s" % (where, (out + err).strip()[-300:]))
    check(restored(url, "b2", keyargs, where + "-pruned") == want1,
          "%s: b2 (files taken from b1) restores byte-exact after b1 is pruned" % where)
    rc, out, err, _ = cairn("check", url, "--read-data", *keyargs)
    check(rc == 0, "%s: check --read-data after prune: %s" % (where, (out + err).strip()[-300:]))
    shutil.rmtree(src, ignore_errors=True)


def no_dedup():
    """Per-file storage never reuses another backup's file."""
    url = "file://" + os.path.join(T, "nodedup")
    src = os.path.join(T, "src-nodedup")
    make_data(src)
    rc, _, err, _ = cairn("init", url, "--no-encryption", "--no-dedup")
    check(rc == 0, "no-dedup: init: %s" % err)
    backup(url, src, "a1", [])
    r = backup(url, src, "a2", [])
    check(r.get("unchanged_files") == 0,
          "no-dedup: every file is read (%s unchanged)" % r.get("unchanged_files"))


def main():
    if shutil.which("strace") is None:
        skips.missing("strace not installed (scripts/deps.sh test)")
    key = new_key_file(os.path.join(T, "repo.key"))
    scenario("file://" + os.path.join(T, "repo"), "file", ["--key-file", key])
    no_dedup()
    with_s3rver(T, lambda s3: scenario(s3.url("skip"), "s3", []))
    shutil.rmtree(T, ignore_errors=True)
    finish()


main()
