"""Hostile input: crafted snapshot archives, a tampered InfluxDB backup MANIFEST, and crafted
shard tars uploaded to cairnd serve. Each is refused with a clear error, and nothing is
written outside the target: every command runs in a sandbox directory whose parent holds a
canary tree that must be byte-identical afterwards.

Archives (`cairn snapshot verify` and `extract`): absolute and `..` member names, members
that are symlinks, hardlinks or devices, a huge declared size, a zstd decompression bomb
(refused by the ratio limit before anything is written), a gzip archive with 100 MiB of zeros
after the end marker, an oversized meta.json.
`cairn restore --into`: a MANIFEST whose shard db/rp names are paths ("../../x").
cairnd serve shard uploads: `..` and absolute entry names, symlinks, hardlinks, devices, and a
GNU sparse entry declaring 4 GiB (a sparse bomb), each refused or skipped, cairnd still
answering afterwards."""
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time

from rel import Cairnd, cairn, check, influx_data, run_parts, tmpdir, tree_sums
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402

T = tmpdir("cairn-hostile-")
SANDBOX = os.path.join(T, "sandbox")
CANARY = os.path.join(T, "canary")
figures = []


def sums_text(members):
    return "".join("%s  %s\n" % (hashlib.sha256(d).hexdigest(), n) for n, d in members
                   if n in ("meta.json", "state.bin")).encode()


def meta_json(size):
    return (json.dumps({"Version": 1, "ID": "1-1-1", "Index": 1, "Term": 1, "Peers": None,
                        "Configuration": {"Servers": None}, "ConfigurationIndex": 1,
                        "Size": size}, separators=(",", ":")) + "\n").encode()


def tar_bytes(entries):
    """entries: list of TarInfo-building dicts {name, data, type, linkname, size}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.type = e.get("type", tarfile.REGTYPE)
            ti.linkname = e.get("linkname", "")
            ti.mode = 0o600
            data = e.get("data", b"")
            ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
            if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                ti.devmajor, ti.devminor = 1, 3
            t.addfile(ti, io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


def gz(b):
    return gzip.compress(b, mtime=0)


def standard(state=b"state bytes", meta=None, override=None, extra=()):
    """A valid archive's members, with one member replaced by override (a dict) or extras."""
    meta = meta if meta is not None else meta_json(len(state))
    ms = [("meta.json", meta), ("state.bin", state)]
    entries = [{"name": n, "data": d} for n, d in ms]
    entries.append({"name": "SHA256SUMS", "data": sums_text(ms)})
    if override is not None:
        entries = [override if e["name"] == override.get("replaces") else e for e in entries]
    return entries + list(extra)


def in_sandbox(fn):
    before = tree_sums(CANARY)
    parent_before = sorted(os.listdir(T))
    res = fn()
    check(tree_sums(CANARY) == before and sorted(os.listdir(T)) == parent_before,
          "  nothing written outside the sandbox")
    return res


def archive_cases():
    os.makedirs(SANDBOX)
    st = b"state bytes"
    cases = [
        ("absolute member name", standard(extra=[{"name": "/tmp/../" + T + "/canary/pwned",
                                                   "data": b"x"}]), "unexpected file"),
        ("`..` member name", standard(extra=[{"name": "../canary/pwned", "data": b"x"}]),
         "unexpected file"),
        ("state.bin as a symlink out", standard(override={
            "replaces": "state.bin", "name": "state.bin", "type": tarfile.SYMTYPE,
            "linkname": "/etc/passwd"}), "hash check failed"),
        ("state.bin as a hardlink out", standard(override={
            "replaces": "state.bin", "name": "state.bin", "type": tarfile.LNKTYPE,
            "linkname": "../../../etc/passwd"}), "hash check failed"),
        ("state.bin as a device", standard(override={
            "replaces": "state.bin", "name": "state.bin", "type": tarfile.CHRTYPE}),
         "hash check failed"),
        ("extra symlink member", standard(extra=[{"name": "link", "type": tarfile.SYMTYPE,
                                                 "linkname": "/"}]), "unexpected file"),
        ("oversized meta.json (2 MiB)", standard(meta=meta_json(len(st))[:-2] +
                                                 b" " * (2 << 20) + b"}\n"),
         "over the 1048576-byte limit"),
    ]
    n = 0
    for what, entries, want in cases:
        n += 1
        data = gz(tar_bytes(entries))
        _run_archive(what, data, want)
    # huge declared size: a header claiming 8 GiB - 1 of state with 11 bytes present
    t = bytearray(tar_bytes(standard()))
    off = 512 + ((len(meta_json(len(st))) + 511) // 512) * 512  # state.bin header
    t[off + 124:off + 136] = b"77777777777\0"
    t[off + 148:off + 156] = b"        "
    t[off + 148:off + 155] = b"%06o\0" % sum(t[off:off + 512])
    n += 1
    _run_archive("huge declared state.bin size", gz(bytes(t)), "unexpected EOF")
    # 100 MiB of zeros after the end marker (gzip)
    z = zlib_stream(tar_bytes(standard()), 100 << 20)
    n += 1
    _run_archive("gzip bomb after the end marker", z, "unread uncompressed bytes remain")
    # zstd bomb: a *valid* archive of 200 MiB of zeros (31,000:1), written by cairn itself
    zb = os.path.join(T, "zeros.bin")
    with open(zb, "wb") as f:
        f.truncate(200 << 20)
    bomb = os.path.join(T, "bomb.snap")
    rc, _, err, _ = cairn("snapshot", "save", zb, bomb, "--index", "1", "--term", "1", "--zstd")
    os.unlink(zb)
    check(rc == 0, "zstd bomb archive written: " + err)
    with open(bomb, "rb") as f:
        data = f.read()
    os.unlink(bomb)
    n += 1
    _run_archive("zstd decompression bomb (%d bytes -> 200 MiB)" % len(data), data,
                 "over the 4096:1 limit (a decompression bomb?)")
    figures.append("%d hostile archives refused by verify and extract, nothing written" % n)


def zlib_stream(tar, zeros):
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(tar)]
    chunk = b"\0" * (1 << 20)
    for _ in range(zeros >> 20):
        out.append(c.compress(chunk))
    out.append(c.flush())
    return b"".join(out)


def _run_archive(what, data, want):
    path = os.path.join(SANDBOX, "in.snap")
    with open(path, "wb") as f:
        f.write(data)

    def go():
        rc, _, err, _ = cairn("snapshot", "verify", path)
        check(rc == 3 and want in err, "%s: verify refused (exit %d): %s" % (
            what, rc, err.strip()[-200:]))
        out = os.path.join(SANDBOX, "out.bin")
        rc, _, err, _ = cairn("snapshot", "extract", path, out)
        check(rc == 3 and want in err and not os.path.exists(out) and
              sorted(os.listdir(SANDBOX)) == ["in.snap"],
              "%s: extract refused, no output: exit %d" % (what, rc))
    in_sandbox(go)
    os.unlink(path)


def restore_into_case():
    data = influx_data(os.path.join(T, "svc"), shards=2, size=2000)
    store = os.path.join(T, "store")
    init_location(store)
    c = Cairnd(data).start()
    try:
        rc, _, err, _ = cairn("backup", "--from", c.addr, "--to", store, "--name", "b1")
    finally:
        c.stop()
    check(rc == 0, "influx-style backup made: " + err)
    mpath = os.path.join(store, "b1", "MANIFEST")
    with open(mpath) as f:
        m = json.load(f)
    into = os.path.join(SANDBOX, "into")
    for field, value in (("db", "../../canary"), ("rp", "x/../../../canary"), ("db", "/tmp")):
        mm = json.loads(json.dumps(m))
        mm["meta"]["shards"][0][field] = value
        with open(mpath, "w") as f:
            json.dump(mm, f)

        def go():
            rc, _, err, _ = cairn("restore", store, "b1", "--into", into)
            check(rc == 3 and "malformed shard entry" in err,
                  "restore --into with shard %s %r refused (exit %d): %s" % (
                      field, value, rc, err.strip()[-200:]))
        in_sandbox(go)
        shutil.rmtree(into, ignore_errors=True)
    with open(mpath, "w") as f:
        json.dump(m, f)
    rc, _, err, _ = cairn("restore", store, "b1", "--into", into)
    check(rc == 0 and len(os.listdir(into)) == 3, "the untampered backup restores --into")
    shutil.rmtree(into, ignore_errors=True)
    figures.append("restore --into with shard names that are paths: 3 refused")


def sparse_entry(name, realsize, data=b"tail"):
    """An old-GNU sparse ('S') header: one data region of len(data) at realsize-len(data)."""
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % 512
    h[136:148] = b"%011o\0" % 0
    h[156:157] = b"S"
    h[257:265] = b"ustar  \0"
    h[386:398] = b"%011o\0" % (realsize - len(data))
    h[398:410] = b"%011o\0" % len(data)
    h[482] = 0
    h[483:495] = b"%011o\0" % realsize
    h[148:156] = b"        "
    h[148:155] = b"%06o\0" % sum(h)
    assert len(h) == 512, "a numeric field overflowed its width"
    return bytes(h) + data.ljust(512, b"\0")


def upload(addr, shard_id, tar):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=120)
    s.sendall(bytes([3, 7]) + shard_id.to_bytes(8, "big") + tar)
    s.shutdown(socket.SHUT_WR)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()


def shard_upload_cases():
    data = influx_data(os.path.join(T, "svc3"), shards=2, size=2000)
    log = os.path.join(T, "cairnd-upload.log")
    # The uploads go into a shard that holds files: the tar reader is what is tested here.
    c = Cairnd(data, extra=["--allow-restore", "--allow-overwrite"], log=log).start()
    shard = os.path.join(data, "db1", "autogen", "1")
    pre = "db1/autogen/1/"
    try:
        before_data = tree_sums(data)
        tars = [
            ("`..` entry", tar_bytes([{"name": pre + "../../../../canary/pwned", "data": b"x"}])),
            ("absolute entry", tar_bytes([{"name": "/" + pre + "abs", "data": b"x"}])),
            ("symlink entry", tar_bytes([{"name": pre + "link", "type": tarfile.SYMTYPE,
                                          "linkname": "/etc/passwd"}])),
            ("hardlink entry", tar_bytes([{"name": pre + "hard", "type": tarfile.LNKTYPE,
                                           "linkname": "/etc/passwd"}])),
            ("device entry", tar_bytes([{"name": pre + "dev", "type": tarfile.CHRTYPE}])),
            ("entry in a subdirectory", tar_bytes([{"name": pre + "sub/x", "data": b"x"}])),
        ]
        for what, tb in tars:
            in_sandbox(lambda: upload(c.addr, 1, tb + b"\0" * 1024))
            names = sorted(os.listdir(shard))
            check(not any(n in ("pwned", "abs", "link", "dev", "sub") for n in names) and
                  not any(os.path.islink(os.path.join(shard, n)) for n in names),
                  "shard upload with %s: nothing outside or special installed (%s)" % (
                      what, ", ".join(names)))
        # the sparse bomb
        t0 = time.time()
        in_sandbox(lambda: upload(c.addr, 1, sparse_entry(pre + "bomb.tsm", 4 << 30) +
                                  b"\0" * 1024))
        with open(log, errors="replace") as f:
            logtxt = f.read()
        check(not os.path.exists(os.path.join(shard, "bomb.tsm")) and
              "sparse entry" in logtxt and time.time() - t0 < 20,
              "sparse 4 GiB entry refused: %s" % [l for l in logtxt.splitlines()
                                                   if "sparse" in l][-1:])
        # GNU tar's own sparse output, old-GNU and PAX 1.0 formats
        sp = os.path.join(T, "sparse")
        os.makedirs(os.path.join(sp, pre))
        with open(os.path.join(sp, pre, "gnubomb.tsm"), "wb") as f:
            f.truncate(4 << 30)
            f.seek(0, 2)
            f.write(b"tail")
        ntar = 0
        for fmt in ("gnu", "pax") if shutil.which("tar") else ():
            tb = subprocess.run(["tar", "--sparse", "--format=" + fmt, "-cf", "-", "-C", sp,
                                 pre + "gnubomb.tsm"], stdout=subprocess.PIPE).stdout
            in_sandbox(lambda: upload(c.addr, 1, tb))
            ntar += 1
            with open(log, errors="replace") as f:
                n = f.read().count("sparse entry '%sgnubomb.tsm' refused" % pre)
            check(n == ntar and not os.path.exists(os.path.join(shard, "gnubomb.tsm")),
                  "GNU tar --sparse --format=%s upload refused" % fmt)
        left = [n for n in os.listdir(shard) if n.startswith(".")]
        check(left == [], "no temporary files left in the shard (%s)" % left)
        for p in list(before_data):
            if p.startswith("db1/autogen/1/"):
                before_data.pop(p)
        after = {k: v for k, v in tree_sums(data).items() if not k.startswith("db1/autogen/1/")}
        check(after == before_data, "other shards untouched")
        init_location(os.path.join(T, "st2"))
        rc, _, err, _ = cairn("backup", "--from", c.addr, "--to", os.path.join(T, "st2"))
        check(rc == 0, "cairnd still serves backups after the hostile uploads")
        figures.append("%d hostile shard uploads (incl. sparse bombs: a crafted one and GNU "
                       "tar's gnu and pax output) refused or skipped, nothing outside the shard"
                       % (len(tars) + 1 + ntar))
    finally:
        c.stop()


def main():
    os.makedirs(CANARY)
    with open(os.path.join(CANARY, "file"), "wb") as f:
        f.write(b"canary")
    run_parts(T, figures, archive_cases, restore_into_case, shard_upload_cases)


if __name__ == "__main__":
    main()
