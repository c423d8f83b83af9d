#!/usr/bin/env python3
"""Independent reader for archives written by `cairn snapshot save` (python3 stdlib only).

It follows the spec (../shared/spec/consul-snapshot-format.md) rather than cairn's code:
gzip header bytes, the tar layout Go's archive/tar writes (rebuilt here field by field and
compared byte for byte), meta.json as Go's json.Encoder writes it, SHA256SUMS, the sealed
member, the exact end of the tar, and the Checksum() string. It also checks the CLI's exit
codes for damaged input and that a failed extract leaves no output file.
"""
import base64
import gzip
import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

CAIRN = os.path.join(os.environ.get("CAIRN_BIN", "build"), "cairn")
FAILS = 0


def check(cond, what):
    global FAILS
    if not cond:
        FAILS += 1
        print("FAIL:", what)


def run(args, stdin=None, expect=0):
    p = subprocess.run([CAIRN] + args, input=stdin, capture_output=True)
    check(p.returncode == expect,
          f"cairn {' '.join(args)} exited {p.returncode}, expected {expect}: {p.stderr!r}")
    return p


def octal(value, width):
    """Go's formatOctal: zero padded to width-1 digits, then NUL."""
    return b"%0*o" % (width - 1, value) + b"\0"


def go_header(name, size, mtime):
    """The 512-byte USTAR header Go's archive/tar writes for a snapshot member (spec s3)."""
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = octal(0o600, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = octal(size, 12)
    h[136:148] = octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[329:337] = octal(0, 8)
    h[337:345] = octal(0, 8)
    chk = sum(h)
    h[148:156] = b"%06o\0 " % chk
    return bytes(h)


def go_json(obj):
    """Go's json.Encoder: compact, HTML-escaped, trailing newline."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                 ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return (s + "\n").encode()


def expected_tar(members, mtime):
    out = b""
    for name, data in members:
        out += go_header(name, len(data), mtime) + data + b"\0" * ((512 - len(data) % 512) % 512)
    return out + b"\0" * 1024


def read_archive(path, state, key=None, expect_id=None):
    raw = open(path, "rb").read()
    # gzip: Go's header on every member (spec s2); Python reads concatenated members
    check(raw[:10] == bytes.fromhex("1f8b08000000000000ff"), f"{path}: gzip header {raw[:10].hex()}")
    tar = gzip.decompress(raw)
    # independent parse with tarfile
    tf = tarfile.open(fileobj=io.BytesIO(tar), mode="r:")
    infos = tf.getmembers()
    names = [i.name for i in infos]
    want_names = ["meta.json", "state.bin", "SHA256SUMS"] + (["SHA256SUMS.sealed"] if key else [])
    check(names == want_names, f"{path}: members {names}")
    for i in infos:
        check(i.mode == 0o600 and i.uid == 0 and i.gid == 0 and i.uname == "" and i.gname == "",
              f"{path}: {i.name} mode/owner")
        check(i.type == tarfile.REGTYPE, f"{path}: {i.name} type")
    mtime = infos[0].mtime
    check(all(i.mtime == mtime for i in infos), f"{path}: one mtime for every member")
    data = {i.name: tf.extractfile(i).read() for i in infos}
    meta_text = data["meta.json"]
    meta = json.loads(meta_text)
    check(list(meta) == ["Version", "ID", "Index", "Term", "Peers", "Configuration",
                         "ConfigurationIndex", "Size"], f"{path}: meta key order {list(meta)}")
    check(go_json(meta) == meta_text, f"{path}: meta.json is not Go's encoding: {meta_text!r}")
    check(meta["Size"] == len(state) and meta["Version"] == 1, f"{path}: meta Size/Version")
    if expect_id is not None:
        check(meta["ID"] == expect_id, f"{path}: ID {meta['ID']!r}")
    check(data["state.bin"] == state, f"{path}: state.bin differs from the input")
    # SHA256SUMS: "<hex>  <name>\n" for exactly meta.json and state.bin
    sums = {}
    for line in data["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ")
        sums[name] = digest
    check(sums == {"meta.json": hashlib.sha256(meta_text).hexdigest(),
                   "state.bin": hashlib.sha256(state).hexdigest()}, f"{path}: SHA256SUMS")
    check(data["SHA256SUMS"].endswith(b"\n") and len(data["SHA256SUMS"]) == 152, f"{path}: sums size")
    if key:
        sealed = data["SHA256SUMS.sealed"]
        check(sealed[:8] == b"CRNHMAC1", f"{path}: sealed magic")
        tag = hmac.new(key, b"CRNHMAC1" + sealed[40:], hashlib.sha256).digest()
        check(hmac.compare_digest(tag, sealed[8:40]), f"{path}: sealed HMAC")
        check(sealed[40:] == data["SHA256SUMS"], f"{path}: sealed sums text")
    # byte-identical to the layout the spec describes, ending in exactly two zero blocks
    members = [(n, data[n]) for n in want_names]
    check(tar == expected_tar(members, mtime), f"{path}: tar bytes differ from the spec layout")
    return raw


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-pyreader-")
    key = bytes(range(32))
    keyfile = os.path.join(tmp, "seal.key")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, key.hex().encode() + b"\n")
    os.close(fd)
    sizes = [0, 1, 511, 512, 513, 100000]
    for n in sizes:
        state = bytes((i * 7 + n) % 251 for i in range(n))
        src = os.path.join(tmp, f"state{n}.bin")
        open(src, "wb").write(state)
        out = os.path.join(tmp, f"s{n}.snap")
        p = run(["snapshot", "save", src, out, "--index", "38", "--term", "3", "--id",
                 "a<b>&c\u2028", "--json"])
        res = json.loads(p.stdout)
        raw = read_archive(out, state, expect_id="a<b>&c\u2028")
        want = "sha-256=" + base64.b64encode(hashlib.sha256(raw).digest()).decode()
        check(res["checksum"] == want, f"{out}: checksum {res['checksum']} != {want}")
        check(res["archive_bytes"] == len(raw), f"{out}: archive_bytes")
        # sealed, and from a pipe of unknown length (spooled) and of declared length
        sealed = os.path.join(tmp, f"sealed{n}.snap")
        run(["snapshot", "save", "-", sealed, "--index", "38", "--term", "3", "--seal-key",
             keyfile], stdin=state)
        read_archive(sealed, state, key=key)
        sized = os.path.join(tmp, f"sized{n}.snap")
        run(["snapshot", "save", "-", sized, "--index", "1", "--term", "1", "--size", str(n)],
            stdin=state)
        read_archive(sized, state)

    # the CLI's side of the contract: exit codes and no partial outputs
    good = os.path.join(tmp, "s100000.snap")
    raw = open(good, "rb").read()
    run(["snapshot", "verify", good])
    run(["snapshot", "verify", os.path.join(tmp, "sealed513.snap"), "--seal-key", keyfile])
    p = run(["snapshot", "inspect", good, "--json"])
    check(json.loads(p.stdout)["meta"]["Index"] == 38, "inspect --json meta.Index")
    bad = os.path.join(tmp, "bad.snap")
    open(bad, "wb").write(raw[:-20])
    run(["snapshot", "verify", bad], expect=3)
    p = run(["snapshot", "verify", bad, "--json"], expect=3)
    check(json.loads(p.stdout.splitlines()[-1])["ok"] is False, "verify --json failure object")
    out = os.path.join(tmp, "never.bin")
    run(["snapshot", "extract", bad, out], expect=3)
    check(not os.path.exists(out), "a failed extract left its output behind")
    other = os.path.join(tmp, "other.key")
    fd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"f" * 64)
    os.close(fd)
    run(["snapshot", "verify", os.path.join(tmp, "sealed513.snap"), "--seal-key", other], expect=4)
    run(["snapshot", "verify", good, "--seal-key", keyfile], expect=4)  # not sealed at all
    run(["snapshot", "save", os.path.join(tmp, "state1.bin"), good, "--index", "1", "--term",
         "1"], expect=6)
    run(["snapshot", "save", os.path.join(tmp, "state1.bin"), good], expect=2)
    run(["snapshot", "verify", os.path.join(tmp, "missing.snap")], expect=5)
    run(["snapshot", "extract", good, os.path.join(tmp, "state.out")])
    check(open(os.path.join(tmp, "state.out"), "rb").read() == open(os.path.join(tmp, "state100000.bin"), "rb").read(),
          "extract output")
    for verb in ("save", "inspect", "verify", "extract"):
        p = run(["snapshot", verb, "--help"])
        check(b"Exit codes" in p.stdout and b"usage: cairn snapshot " + verb.encode() in p.stdout,
              f"{verb} --help")
    subprocess.run(["rm", "-rf", tmp])
    print(f"pyreader: {'ok' if FAILS == 0 else str(FAILS) + ' failures'}")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
