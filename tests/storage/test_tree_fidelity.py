"""Full file-tree fidelity of directory backups (docs/STORAGE.md "Local-path backups"), through
the cairn CLI, on file storage and on a real s3rver: a tree with every kind of entry (regular,
empty and sparse files, a 1 GiB sparse file by default, directories with setgid and sticky
bits, a setuid file, hard links, symlinks relative, absolute, dangling and to a directory,
names with spaces, a newline, a tab and invalid UTF-8, user.* xattrs on files and
directories, a FIFO; as root also a device node, owners by name and by bare number, and a
POSIX ACL) is backed up, restored elsewhere (--acls) and both trees are compared by a listing
of type, mode, owner, size, mtime (ns), link target, link count, xattrs, device numbers and
SHA-256: identical. The sparse file must cost little to store and to restore (its restored
blocks are counted). CAIRN_TEST_SPARSE_MB sets the sparse file's size (default 1024)."""
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import check, cairn, tmpdir, run_parts, with_s3rver  # noqa: E402
import skips  # noqa: E402

T = tmpdir("cairn-fidelity-")
SRC = os.path.join(T, "src").encode()
SPARSE = int(os.environ.get("CAIRN_TEST_SPARSE_MB", "1024")) << 20
ROOT = os.geteuid() == 0
figures = []


def j(*parts):
    return os.path.join(SRC, *[p if isinstance(p, bytes) else p.encode() for p in parts])


def write(path, data, mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def build():
    os.makedirs(j("d/sub"))
    os.makedirs(j("sticky"))
    os.makedirs(j("setgid"))
    os.makedirs(j("empty"))
    os.chmod(j("sticky"), 0o1777)
    os.chmod(j("setgid"), 0o2750)
    write(j("plain.txt"), b"hello\n" * 1000)
    write(j("empty.bin"), b"", 0o600)
    write(j("setuid"), b"#!/bin/sh\n", 0o4755)
    write(j("d/sub/rand.bin"), os.urandom(300000), 0o640)
    write(j("with space.txt"), b"space")
    write(j("new\nline"), b"newline")
    write(j("tab\there"), b"tab")
    write(j(b"bad\xff\xfename"), b"not utf-8")
    os.makedirs(j(b"dir \xc3(bad)"))
    write(j(b"dir \xc3(bad)", "inner"), b"inner")
    # hard links: three names of one file, across directories
    write(j("d/hl1"), b"linked content", 0o600)
    os.link(j("d/hl1"), j("hl2"))
    os.link(j("d/hl1"), j("d/sub/hl3"))
    os.symlink(b"../plain.txt", j("d/rel-link"))
    os.symlink(b"/etc/hostname", j("abs-link"))
    os.symlink(b"does/not/exist", j("dangling"))
    os.symlink(b"d/sub", j("dir-link"))
    os.symlink(b"\xff\xfe odd target", j("odd-link"))
    os.mkfifo(j("fifo"), 0o640)
    # sparse: data at the start, in the middle and at the end, holes between
    with open(j("sparse.img"), "wb") as f:
        f.truncate(SPARSE)
        for off in (0, SPARSE // 2 + 12345, SPARSE - 4096):
            f.seek(off)
            f.write(os.urandom(4096))
    # a small sparse file ending in a hole
    with open(j("tail-hole"), "wb") as f:
        f.write(b"x" * 5000)
        f.truncate(10 << 20)
    try:
        os.setxattr(j("plain.txt"), b"user.comment", b"a value\x00with nul")
        os.setxattr(j("d"), b"user.dir", b"on a directory")
        os.setxattr(j("d/hl1"), b"user.empty", b"")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            skips.skip_part("user xattrs not supported on " + T)
        else:
            raise
    if ROOT:
        os.mknod(j("null-dev"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(j("blk-dev"), 0o640 | stat.S_IFBLK, os.makedev(7, 200))
        os.chown(j("plain.txt"), 65534, 65534)  # nobody/nogroup: by name
        os.chown(j("d/sub/rand.bin"), 12345, 23456)  # no names: by number
        os.lchown(j("abs-link"), 65534, 65534)
        if shutil.which("setfacl"):
            subprocess.check_call(["setfacl", "-m", "u:65534:r", j("with space.txt")])
            subprocess.check_call(["setfacl", "-d", "-m", "g:65534:rx", j("d")])
        else:
            skips.missing_part("setfacl not installed (scripts/deps.sh test: acl)")
    else:
        skips.skip_part("not root: device nodes, owners and ACLs are not tested")
    # mtimes in ns, directories last (children first), symlinks themselves
    ns = 1600000000123456789
    for dirpath, dirnames, filenames in os.walk(SRC, topdown=False):
        for n in filenames + dirnames:
            ns += 1000000007
            os.utime(os.path.join(dirpath, n), ns=(ns - 5, ns), follow_symlinks=False)
    os.utime(SRC, ns=(ns, ns + 3))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def listing(root):
    """rel path -> what must survive (atime and ctime excepted)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [b"."] + dirnames + filenames if dirpath == root else dirnames + filenames:
            p = os.path.normpath(os.path.join(dirpath, n))
            st = os.lstat(p)
            e = {"type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
                 "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns,
                 "nlink": st.st_nlink if not stat.S_ISDIR(st.st_mode) else None}
            if stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            else:
                e["xattrs"] = sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                     for k in os.listxattr(p, follow_symlinks=False))
            if stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                e["sha256"] = sha256(p)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[os.path.relpath(p, root)] = e
    return out


def compare(name, want, got):
    same = want == got
    if not same:
        for k in sorted(set(want) | set(got)):
            if want.get(k) != got.get(k):
                print("  %r:\n    source   %r\n    restored %r" % (k, want.get(k), got.get(k)))
    check(same, "%s: the restored tree is identical to the source (%d entries)" %
          (name, len(want)))


def round_trip(name, url, stored_bytes):
    rc, _, err, _ = cairn("init", url, "--no-encryption")
    check(rc == 0, "%s: cairn init (%s)" % (name, err.strip()))
    rc, out, err, secs = cairn("backup", "--to", url, "--from", SRC.decode(), "--name", "fid")
    check(rc == 0, "%s: backup exits 0 (%s)" % (name, err.strip()[-300:]))
    stored = stored_bytes()
    figures.append("%s: backup %.1f s, %.1f MiB stored for a %d MiB sparse file" %
                   (name, secs, stored / 2**20, SPARSE >> 20))
    check(stored < 16 << 20, "%s: the sparse file costs little to store (%d bytes stored)" %
          (name, stored))
    dst = os.path.join(T, "out-" + name)
    rc, out, err, secs = cairn("restore", url, "fid", "--into", dst, "--acls")
    check(rc == 0, "%s: restore exits 0 (%s)" % (name, err.strip()[-300:]))
    if rc != 0:
        return
    blocks = os.lstat(os.path.join(dst, "sparse.img")).st_blocks * 512
    figures.append("%s: restore %.1f s, sparse file restored in %.1f MiB of blocks" %
                   (name, secs, blocks / 2**20))
    check(blocks < 8 << 20, "%s: the sparse file is restored sparse (%d bytes allocated)" %
          (name, blocks))
    compare(name, listing(SRC), listing(dst.encode()))
    if ROOT:
        st = os.lstat(os.path.join(dst, "null-dev"))
        check(stat.S_ISCHR(st.st_mode), "%s: a device node is created as root" % name)
    # ls names every entry, the odd ones escaped
    rc, out, err, _ = cairn("ls", url, "fid")
    check(rc == 0 and "new\\nline" in out and "bad\\xff\\xfename" in out and
          "d/rel-link -> ../plain.txt" in out, "%s: cairn ls lists the escaped names" % name)
    shutil.rmtree(dst)


def du(path):
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for n in filenames:
            total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


def part_file():
    repo = os.path.join(T, "repo")
    round_trip("file", "file://" + repo, lambda: du(repo))


def part_s3():
    with_s3rver(T, lambda s3: round_trip("s3", s3.url("fid"), lambda: du(
        os.path.join(s3.data, s3.bucket, "fid"))))


def part_build():
    build()


run_parts(T, figures, part_build, part_file, part_s3)
