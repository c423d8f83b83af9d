"""The real `influxd backup` (legacy and -portable) and `influxd restore` against cairnd serve.

A real influxd 1.6 is populated, stopped, and its meta.db and data directory become a cairnd
data directory. Then:
  * cairnd's answers to requests 1, 3, 4 are byte-identical to influxd's, and its shard tars
    are Go-style ustar (512-byte headers, 1024-byte trailer, no record padding) holding the
    same TSM bytes; a future Since gives exactly 1024 zero bytes; errors give 0 bytes;
  * `influxd backup` legacy and -portable succeed from cairnd, and `influxd restore` (offline)
    of the legacy backup gives a fresh influxd with exactly the original points;
  * `influxd restore -portable -newdb` online INTO cairnd (requests 6 and 7) works, and an
    influxd started on cairnd's directory then answers the renamed database's points.
"""
import io
import os
import shutil
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from influx import (Cairnd, Influxd, check, need_influxd, populate, probe, request, run)  # noqa: E402


def tar_members(data):
    tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    out = {}
    for m in tf.getmembers():
        out[m.name] = (m, tf.extractfile(m).read())
    return out


def check_go_tar(data, what):
    check(len(data) % 512 == 0 and data[-1024:] == bytes(1024), what + ": ends with 2 zero blocks")
    # No padding to a 10 KiB record: the stream is headers + padded data + 1024.
    members = tar_members(data)
    expect = 1024 + sum(512 + (len(b) + 511) // 512 * 512 for _, b in members.values())
    check(len(data) == expect, what + ": %d bytes, no record padding" % len(data))
    off = 0
    for name, (m, body) in members.items():
        hdr = data[off:off + 512]
        check(hdr[257:263] == b"ustar\0" and hdr[263:265] == b"00", what + ": ustar magic")
        check(m.mode == 0o644 and m.uid == 0 and m.gid == 0 and m.uname == "root"
              and m.type == tarfile.REGTYPE, what + ": header fields of " + name)
        off += 512 + (len(body) + 511) // 512 * 512
    return members


def main():
    need_influxd()
    tmp = tempfile.mkdtemp(prefix="cairn-compat-")
    procs = []
    try:
        a = Influxd(os.path.join(tmp, "a"))
        procs.append(a)
        a.start()
        populate(a)
        a.wait_tsm()
        want = {db: a.points(db) for db in ("mydb", "other")}
        check(len(want["mydb"]) == 6 and len(want["other"]) == 2, "populated influxd")
        ref = {}
        for key, payload in {
                "meta": request(1), "dbs": request(3), "mydb": request(3, BackupDatabase="mydb"),
                "rp": request(4, BackupDatabase="mydb", BackupRetentionPolicy="short"),
                "shard1": request(0, ShardID=1)}.items():
            ref[key] = probe(a.influx_addr, payload)
        a.stop()

        data = os.path.join(tmp, "cairnd")
        shutil.copytree(os.path.join(a.root, "data"), data)
        shutil.copy(os.path.join(a.root, "meta", "meta.db"), os.path.join(data, "meta.db"))
        c = Cairnd(data, extra=["--allow-restore"], log=os.path.join(tmp, "cairnd.log"))
        procs.append(c)
        c.start()

        got = probe(c.addr, request(1))
        check(got == ref["meta"], "metastore backup byte-identical (%d bytes)" % len(got))
        check(got[:8] == bytes.fromhex("0000000059590101") and got.endswith(
            (5).to_bytes(8, "big") + b"null\n"), "metastore envelope magic and null node")
        for key, payload in {"dbs": request(3), "mydb": request(3, BackupDatabase="mydb"),
                             "rp": request(4, BackupDatabase="mydb",
                                           BackupRetentionPolicy="short")}.items():
            got = probe(c.addr, payload)
            check(got == ref[key], "paths reply %s byte-identical: %r" % (key, got))
        mine = check_go_tar(probe(c.addr, request(0, ShardID=1)), "cairnd shard 1")
        theirs = tar_members(ref["shard1"])
        for name, (_, body) in theirs.items():
            check(name in mine and mine[name][1] == body, "same bytes for " + name)
        got = probe(c.addr, request(0, ShardID=1, Since="2999-01-01T00:00:00Z"))
        check(got == bytes(1024), "future Since gives a 1024-byte empty tar")
        check(probe(c.addr, request(0, ShardID=99)) == b"", "missing shard: no bytes")
        check(probe(c.addr, request(3, BackupDatabase="nope")) == b"", "missing db: no bytes")
        check(probe(c.addr, request(4, BackupDatabase="mydb", BackupRetentionPolicy="x")) == b"",
              "missing rp: no bytes")

        legacy = os.path.join(tmp, "bk-legacy")
        portable = os.path.join(tmp, "bk-portable")
        run(["influxd", "backup", "-database", "mydb", "-host", c.addr, legacy])
        names = sorted(os.listdir(legacy))
        check(names == ["meta.00", "mydb.autogen.00001.00", "mydb.autogen.00002.00",
                        "mydb.short.00003.00", "mydb.short.00004.00"],
              "legacy influxd backup from cairnd: %s" % names)
        run(["influxd", "backup", "-portable", "-host", c.addr, portable])
        check(sum(n.endswith(".tar.gz") for n in os.listdir(portable)) == 5,
              "portable influxd backup from cairnd: 5 shards")

        # Offline legacy restore into fresh dirs; a new influxd answers the same points.
        b = Influxd(os.path.join(tmp, "b"))
        procs.append(b)
        run(["influxd", "restore", "-metadir", os.path.join(b.root, "meta"), "-datadir",
             os.path.join(b.root, "data"), "-database", "mydb", legacy])
        b.start()
        check(b.points("mydb") == want["mydb"], "influxd restore of cairnd's legacy backup")
        # Online portable restore into the running influxd, renamed.
        run(["influxd", "restore", "-portable", "-db", "other", "-newdb", "other2", "-host",
             b.influx_addr, portable])
        check([p for p in b.points("other2")] == want["other"],
              "influxd restore -portable of cairnd's backup into influxd")
        b.stop()

        # Online restore INTO cairnd with the real influxd client (requests 6 and 7).
        run(["influxd", "restore", "-portable", "-db", "mydb", "-newdb", "mydb2", "-host",
             c.addr, portable])
        p = run(["influxd", "restore", "-portable", "-db", "mydb", "-newdb", "mydb2", "-host",
                 c.addr, portable], check=False)
        check(p.returncode != 0, "second restore to an existing db is refused")
        c.stop()
        d = Influxd(os.path.join(tmp, "d"))
        procs.append(d)
        shutil.copytree(data, os.path.join(d.root, "data"),
                        ignore=shutil.ignore_patterns("meta.db"))
        os.makedirs(os.path.join(d.root, "meta"))
        shutil.copy(os.path.join(data, "meta.db"), os.path.join(d.root, "meta", "meta.db"))
        d.start()
        check(d.points("mydb2") == want["mydb"], "influxd on cairnd's dir after online restore")
        check(d.points("mydb") == want["mydb"], "original db untouched")
        d.stop()
        log = open(os.path.join(tmp, "cairnd.log")).read()
        check("metastore upload done" in log and "restored shard" in log, "cairnd logged restore")
    finally:
        for p in procs:
            try:
                p.stop()
            except Exception as e:  # keep cleaning up
                print("cleanup: %s" % e)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
