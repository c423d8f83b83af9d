"""cairn backup / cairn restore against a real influxd 1.6.

  * full backup of two databases, three RPs, five shards into file:// storage (MANIFEST meta);
  * `cairn restore --into` + offline `influxd restore` -> a fresh influxd has exactly the points;
  * online `cairn restore --to` with --newdb into the running influxd, and into cairnd serve;
  * `--since` incremental: records its parent, carries only files modified since, and the
    chain restores (offline and online) to exactly the newer points;
  * a corrupted stored file (a per-file object; a pack in a deduplicating store) fails
    verification and nothing is written.
"""
import datetime
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "influx"))
from influx import CAIRN, Cairnd, check, Influxd, need_influxd, populate, run  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from repo import init_location  # noqa: E402


def cairn(*args, check_rc=True):
    p = run([CAIRN] + list(args), check=check_rc)
    return p


def cairn_json(*args):
    return json.loads(cairn(*args, "--json").stdout)


def tar_names(path):
    with tarfile.open(path, "r:") as tf:
        return sorted(m.name for m in tf.getmembers())


def offline_restore(ifx, legacy_dir, dbs):
    """influxd restore each db from a legacy-layout dir into ifx.root/{meta,data}; start ifx."""
    for db in dbs:
        run(["influxd", "restore", "-metadir", os.path.join(ifx.root, "meta"), "-datadir",
             os.path.join(ifx.root, "data"), "-database", db, legacy_dir])
    ifx.start()


def main():
    need_influxd()
    tmp = tempfile.mkdtemp(prefix="cairn-ifxbk-")
    store = "file://" + os.path.join(tmp, "store")
    # --no-dedup: the corruption case below damages the per-file object full1/s1.tar; the
    # deduplicating store2 gets the same case on a pack.
    init_location(store, "--no-encryption", "--no-dedup")
    procs = []
    try:
        a = Influxd(os.path.join(tmp, "a"))
        procs.append(a)
        a.start()
        populate(a)
        a.wait_tsm()
        want = {db: a.points(db) for db in ("mydb", "other")}

        res = cairn_json("backup", "--from", a.influx_addr, "--to", store, "--name", "full1")
        check(res["ok"] and res["shards"] == 5 and res["databases"] == 2 and res["files"] == 6
              and res.get("parent") is None, "full backup: %s" % res)
        man = json.load(open(os.path.join(tmp, "store", "full1", "MANIFEST")))
        meta = man["meta"]
        check(man["kind"] == "influxdb" and meta["databases"] == {
            "mydb": {"autogen": [1, 2], "short": [3, 4]}, "other": {"autogen": [5]}},
            "MANIFEST kind and meta databases/rps/shard ids")
        p = cairn("backup", "--from", a.influx_addr, "--to", store, "--name", "full1",
                  check_rc=False)
        check(p.returncode == 6, "same name again: exit 6 (exists)")

        # Offline: legacy layout, influxd restore, fresh influxd.
        into = os.path.join(tmp, "legacy")
        res = cairn_json("restore", store, "full1", "--into", into)
        check(res["shards"] == 5, "restore --into: %s" % res)
        check(sorted(os.listdir(into)) == [
            "meta.00", "mydb.autogen.00001.00", "mydb.autogen.00002.00", "mydb.short.00003.00",
            "mydb.short.00004.00", "other.autogen.00005.00"], "legacy file names")
        b = Influxd(os.path.join(tmp, "b"))
        procs.append(b)
        offline_restore(b, into, ["mydb", "other"])
        check(b.points("mydb") == want["mydb"] and b.points("other") == want["other"],
              "influxd restore of cairn's --into output: exactly the original points")
        b.stop()

        # Online, renamed, into the running influxd.
        cairn("restore", store, "full1", "--to", a.influx_addr, "--db", "mydb", "--newdb",
              "mydb_copy")
        check(a.points("mydb_copy") == want["mydb"], "online restore --newdb into influxd")
        p = cairn("restore", store, "full1", "--to", a.influx_addr, "--db", "mydb", "--newdb",
                  "mydb_copy", check_rc=False)
        check(p.returncode == 6, "online restore onto an existing db: exit 6")
        cairn("restore", store, "full1", "--to", a.influx_addr, "--db", "mydb", "--rp", "short",
              "--newdb", "mydb_short", "--newrp", "s2")
        got = a.points("mydb_short")
        check(got == [("s2",) + x[1:] for x in want["mydb"] if x[0] == "short"],
              "online restore of one RP, renamed")

        # Online into cairnd serve, then back up cairnd and compare the shards' files.
        cdir = os.path.join(tmp, "cairnd-data")
        os.makedirs(cdir)
        c = Cairnd(cdir, extra=["--allow-restore"], log=os.path.join(tmp, "cairnd.log"))
        procs.append(c)
        c.start()
        cairn("restore", store, "full1", "--to", c.addr)
        store2 = "file://" + os.path.join(tmp, "store2")
        init_location(store2)
        res = cairn_json("backup", "--from", c.addr, "--to", store2, "--name", "fromcairnd")
        check(res["shards"] == 5 and res["databases"] == 2, "cairnd re-serves the restore")
        into2 = os.path.join(tmp, "legacy2")
        cairn("restore", store2, "fromcairnd", "--into", into2)
        for f in sorted(os.listdir(into)):
            if f != "meta.00":
                check(tar_names(os.path.join(into2, f)) == tar_names(os.path.join(into, f)),
                      "same files after a round trip through cairnd: " + f)
        c.stop()

        # Incremental.
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        time.sleep(1.1)
        a.write("mydb", "cpu,host=c value=9 1601000100\ncpu,host=d value=10 1601000200")
        a.wait_tsm()
        want_new = a.points("mydb")
        check(len(want_new) == len(want["mydb"]) + 2, "two new points written")
        res = cairn_json("backup", "--from", a.influx_addr, "--to", store, "--since", since,
                         "--name", "incr1", "--db", "mydb")
        check(res["parent"] == "full1", "incremental records the newest complete backup "
              "as parent: %s" % res.get("parent"))
        res = cairn_json("backup", "--from", a.influx_addr, "--to", store, "--since", since,
                         "--name", "incr2", "--db", "mydb")
        check(res["parent"] == "incr1", "second incremental's parent is the first")
        into3 = os.path.join(tmp, "legacy3")
        res = cairn_json("restore", store, "incr2", "--into", into3, "--db", "mydb")
        check(res["backups"] == 3, "chain incr2 -> incr1 -> full1 restored (%s)" % res)
        names = sorted(os.listdir(into3))
        check("meta.02" in names and "mydb.autogen.00002.02" in names, "chain numbered .00-.02")
        full_files = tar_names(os.path.join(into3, "mydb.autogen.00002.00"))
        inc_files = tar_names(os.path.join(into3, "mydb.autogen.00002.01"))
        check(len(inc_files) >= 1 and not set(inc_files) & set(full_files),
              "incremental shard 2 holds only new files: %s" % inc_files)
        check(open(os.path.join(into3, "mydb.autogen.00001.01"), "rb").read() == bytes(1024),
              "unchanged shard 1: empty tar in the incremental")
        d = Influxd(os.path.join(tmp, "d"))
        procs.append(d)
        offline_restore(d, into3, ["mydb"])
        check(d.points("mydb") == want_new, "offline chain restore: exactly the newer points")
        d.stop()
        cairn("restore", store, "incr2", "--to", a.influx_addr, "--db", "mydb", "--newdb",
              "mydb_inc")
        check(a.points("mydb_inc") == want_new, "online chain restore: exactly the newer points")

        # A corrupted stored file: verification fails, nothing is applied.
        victim = os.path.join(tmp, "store", "full1", "s1.tar")
        blob = bytearray(open(victim, "rb").read())
        blob[len(blob) // 2] ^= 0xFF
        open(victim, "wb").write(bytes(blob))
        into4 = os.path.join(tmp, "legacy4")
        p = cairn("restore", store, "incr2", "--into", into4, check_rc=False)
        check(p.returncode == 3 and b"verification failed" in p.stderr,
              "corrupt file: exit 3, %r" % p.stderr[-200:])
        check(not os.path.exists(into4) or os.listdir(into4) == [], "nothing written")
        p = cairn("restore", store, "incr2", "--to", a.influx_addr, "--db", "mydb", "--newdb",
                  "never", check_rc=False)
        check(p.returncode == 3 and not a.series_values("SHOW DATABASES") .count(["never"]),
              "corrupt chain: online restore refused before creating anything")

        # The same in the deduplicating store2: a byte of its pack's blobs damaged.
        data = os.path.join(tmp, "store2", ".data")
        pack = max(os.listdir(data), key=lambda n: os.path.getsize(os.path.join(data, n)))
        blob = bytearray(open(os.path.join(data, pack), "rb").read())
        check(blob[-8:] == b"CRNPACK1", "store2 holds a pack: " + pack)
        blob[(len(blob) - 12 - int.from_bytes(blob[-12:-8], "little")) // 2] ^= 0xFF
        open(os.path.join(data, pack), "wb").write(bytes(blob))
        into5 = os.path.join(tmp, "legacy5")
        p = cairn("restore", store2, "fromcairnd", "--into", into5, check_rc=False)
        check(p.returncode == 3 and b"verification failed" in p.stderr
              and b"damaged" in p.stderr,
              "corrupt pack: exit 3, %r" % p.stderr[-200:])
        check(not os.path.exists(into5) or os.listdir(into5) == [], "nothing written")
        p = cairn("restore", store2, "fromcairnd", "--to", a.influx_addr, "--db", "mydb",
                  "--newdb", "never2", check_rc=False)
        check(p.returncode == 3 and not a.series_values("SHOW DATABASES").count(["never2"]),
              "corrupt pack: online restore refused before creating anything")
    finally:
        for p in procs:
            try:
                p.stop()
            except Exception as e:
                print("cleanup: %s" % e)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
