"""cairn list shows meaningful sizes: SIZE (--json `bytes`) is the files' logical bytes, the
same as the backup's own `bytes`, for a deduplicating repository (one-document and split
MANIFESTs) and a --no-dedup one; STORED is the stored bytes of a per-file backup and `shared`
for a deduplicated one (`deduplicated` in --json). A split MANIFEST header of an older cairn
(no files.logical_size) still lists, verifies and restores, with `bytes` null; a header whose
logical_size disagrees with its file list is refused when the backup is opened."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import check, cairn, tmpdir, run_parts  # noqa: E402

T = tmpdir("cairn-listsizes-")
SMALL = os.path.join(T, "small")
MANY = os.path.join(T, "many")
NMANY = 4200  # above the streaming writer's batch (4096 files): a split MANIFEST


def make_trees():
    os.makedirs(os.path.join(SMALL, "d"))
    with open(os.path.join(SMALL, "a.bin"), "wb") as f:
        f.write(os.urandom(700000))
    with open(os.path.join(SMALL, "d", "b.txt"), "w") as f:
        f.write("hello\n" * 5000)
    os.makedirs(os.path.join(MANY, "d"))
    for i in range(NMANY):
        with open(os.path.join(MANY, "d", "f%05d" % i), "w") as f:
            f.write("%d\n" % i * (i % 50))


def backup(url, name, src):
    rc, out, err, _ = cairn("backup", "--from", src, "--to", url, "--name", name, "--json")
    check(rc == 0, "backup %s into %s (%s)" % (name, url, err.strip()[-300:]))
    return json.loads(out) if rc == 0 else {}


def listed(url):
    rc, out, err, _ = cairn("list", url, "--json")
    check(rc == 0, "list --json %s (%s)" % (url, err.strip()[-300:]))
    items = {b["name"]: b for b in json.loads(out)["backups"]} if rc == 0 else {}
    rc, out, err, _ = cairn("list", url)
    check(rc == 0, "list %s (%s)" % (url, err.strip()[-300:]))
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:] if ln.strip()}
    return items, lines


def part_dedup():
    make_trees()
    repo = os.path.join(T, "dedup")
    url = "file://" + repo
    check(cairn("init", url, "--no-encryption")[0] == 0, "init dedup")
    want = {"small": backup(url, "small", SMALL), "many": backup(url, "many", MANY),
            "again": backup(url, "again", SMALL)}
    with open(os.path.join(repo, "many", "MANIFEST")) as f:
        check("parts" in json.load(f), "the MANIFEST of %d files is split" % NMANY)
    items, lines = listed(url)
    for name, res in want.items():
        it = items.get(name, {})
        check(it.get("bytes") == res.get("bytes") and res.get("bytes", 0) > 0,
              "dedup %s: list bytes %s, the backup's %s" % (name, it.get("bytes"),
                                                            res.get("bytes")))
        check(it.get("deduplicated") is True, "dedup %s: deduplicated" % name)
        # NAME STATUS CREATED SIZE(2 words) STORED FILES KIND
        check(lines.get(name, [])[5:6] == ["shared"], "dedup %s: STORED is shared (%s)"
              % (name, lines.get(name)))
    check(items["small"]["bytes"] >= 700000 + 30000, "small: the logical bytes of its files")


def part_plain():
    repo = os.path.join(T, "plain")
    url = "file://" + repo
    check(cairn("init", url, "--no-encryption", "--no-dedup")[0] == 0, "init --no-dedup")
    want = {"small": backup(url, "small", SMALL), "many": backup(url, "many", MANY)}
    items, lines = listed(url)
    for name, res in want.items():
        it = items.get(name, {})
        check(it.get("bytes") == res.get("bytes"), "plain %s: list bytes %s, the backup's %s"
              % (name, it.get("bytes"), res.get("bytes")))
        check(it.get("deduplicated") is False, "plain %s: not deduplicated" % name)
        check(lines.get(name, [])[5:6] != ["shared"], "plain %s: a stored size (%s)"
              % (name, lines.get(name)))
    # The 700 KB of random bytes are stored as they are: stored_bytes counts them.
    check(items["small"]["stored_bytes"] >= 700000, "plain small: stored_bytes %s"
          % items["small"]["stored_bytes"])


def rewrite_header(path, fn):
    with open(path) as f:
        doc = json.load(f)
    fn(doc["files"])
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def part_old_header():
    repo = os.path.join(T, "dedup")
    url = "file://" + repo
    man = os.path.join(repo, "many", "MANIFEST")
    with open(man) as f:
        orig = f.read()
    rewrite_header(man, lambda files: files.pop("logical_size"))
    items, lines = listed(url)
    check(items["many"]["bytes"] is None, "an old split header: bytes null (%s)"
          % items["many"].get("bytes"))
    check(lines["many"][3] == "-", "an old split header: SIZE - (%s)" % lines["many"])
    rc, _, err, _ = cairn("verify", url, "many", "--quiet")
    check(rc == 0, "an old split header verifies (%s)" % err.strip()[-300:])
    rewrite_header(man, lambda files: files.update(logical_size=json.loads(orig)["files"]
                                                   ["logical_size"] + 1))
    rc, _, err, _ = cairn("verify", url, "many", "--quiet")
    check(rc != 0 and "do not add up" in err, "a wrong logical_size is refused (%d: %s)"
          % (rc, err.strip()[-300:]))
    with open(man, "w") as f:
        f.write(orig)


run_parts(T, [], part_dedup, part_plain, part_old_header)
