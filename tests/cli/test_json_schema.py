"""Every --json output of cairn and cairnd validates against its JSON Schema
(tests/cli/schema/*.json, docs/JSON.md): results and errors, against a file location and an
S3 one (s3rver). Each output must be exactly one JSON object on one stdout line. Needs
python3-jsonschema (scripts/deps.sh)."""
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import skips  # noqa: E402

try:
    import jsonschema
except ImportError:
    skips.missing("python3-jsonschema")
import rel  # noqa: E402

CAIRN, CAIRND = rel.CAIRN, rel.CAIRND
failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    if not cond:
        failures.append(msg)
    return cond


SCHEMAS = {}
for path in glob.glob(os.path.join(HERE, "schema", "*.json")):
    with open(path) as f:
        SCHEMAS[os.path.basename(path)[:-5]] = json.load(f)
SEEN = set()


def validator(schema):
    """A 2020-12 validator resolving "common.json#/..." (Debian's jsonschema 4.10 has
    RefResolver; newer ones the referencing library)."""
    try:
        from referencing import Registry, Resource
        reg = Registry().with_resources(
            (k + ".json", Resource.from_contents(v)) for k, v in SCHEMAS.items())
        return jsonschema.Draft202012Validator(schema, registry=reg)
    except ImportError:
        store = {k + ".json": v for k, v in SCHEMAS.items()}
        res = jsonschema.RefResolver(base_uri="", referrer=schema, store=store)
        return jsonschema.Draft202012Validator(schema, resolver=res)


def validate(schema, what, out):
    SEEN.add(schema)
    lines = out.splitlines()
    if not check(len(lines) == 1, "%s: one line on stdout (%d)" % (what, len(lines))):
        return None
    try:
        doc = json.loads(lines[0])
        validator(SCHEMAS[schema]).validate(doc)
    except (ValueError, jsonschema.ValidationError) as e:
        check(False, "%s: against %s.json: %s" % (what, schema, str(e).splitlines()[0]))
        return None
    check(list(doc)[0] == "format_version", "%s: valid %s.json" % (what, schema))
    return doc


def cairn(schema, *args, prog=None, want=0, stdin=None):
    p = subprocess.run([prog or CAIRN, *args, "--json"], capture_output=True, text=True,
                       timeout=120, stdin=stdin if stdin is not None else subprocess.DEVNULL)
    what = "%s %s" % (os.path.basename(prog or CAIRN), " ".join(a if len(a) < 40 else "..."
                                                               for a in args))
    check(p.returncode == want, "%s: exit %d, want %d (%s)" % (what, p.returncode, want,
                                                              p.stderr.strip()[-200:]))
    return validate(schema if p.returncode == 0 else "error", what, p.stdout)


def location_round(tmp, loc, tag):
    """init, backup, list, verify, put, get, rm, prune, unlock, restore on one location."""
    src = os.path.join(tmp, "src-" + tag)
    os.makedirs(os.path.join(src, "d"))
    for i in range(3):
        with open(os.path.join(src, "d", "f%d" % i), "wb") as f:
            f.write(os.urandom(1000) * (i + 1))
    cairn("init", "init", loc, "--no-encryption")
    b = cairn("backup", "backup", "--from", src, "--to", loc, "--name", "b1")
    check(b is not None and b["name"] == "b1" and b["location"] == loc, tag + ": backup keys")
    cairn("put", "put", loc, "p1", src, "--zstd")
    ls = cairn("list", "list", loc)
    check(ls is not None and [x["name"] for x in ls["backups"]] == ["b1", "p1"],
          tag + ": list names")
    cairn("verify", "verify", loc, "b1")
    cairn("ls", "ls", loc, "b1")
    cairn("diff", "diff", loc, "b1", "b1")
    cairn("check", "check", loc, "--read-data")
    cairn("get", "get", loc, "p1", os.path.join(tmp, "got-" + tag))
    cairn("restore", "restore", loc, "b1", "--into", os.path.join(tmp, "restored-" + tag))
    cairn("prune", "prune", loc, "--keep-last", "1", "--dry-run")
    cairn("unlock", "unlock", loc)
    cairn("rm", "rm", loc, "p1")
    cairn("error", "verify", loc, "nosuch", want=5)


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-schema-")
    s3 = rel.S3rver(tmp, bucket="schema")
    try:
        cairn("version", "version")
        cairn("version", "version", prog=CAIRND)
        cairn("help", "help", "--all")
        cairn("help", "help", "--all", prog=CAIRND)
        cairn("error", "list", "--bogus", want=2)
        cairn("error", "bakup", want=2)
        cairn("error", "list", "http://x/y", want=2)
        cairn("error", "list", os.path.join(tmp, "missing"), want=5)
        location_round(tmp, os.path.join(tmp, "loc"), "file")
        # Keys of an encrypted location.
        key = os.path.join(tmp, "k.key")
        cairn("key", "key", "generate", key)
        eloc = os.path.join(tmp, "enc")
        cairn("init", "init", eloc, "--key-file", key)
        cairn("key", "key", "list", eloc, "--key-file", key)
        # Snapshots, file and stdin.
        state = os.path.join(tmp, "state.bin")
        with open(state, "wb") as f:
            f.write(os.urandom(5000))
        snap = os.path.join(tmp, "s.snap")
        cairn("snapshot-save", "snapshot", "save", state, snap, "--index", "18446744073709551615",
              "--term", "3")
        cairn("snapshot-read", "snapshot", "inspect", snap)
        cairn("snapshot-read", "snapshot", "verify", snap)
        with open(snap, "rb") as f:
            cairn("snapshot-read", "snapshot", "verify", "-", stdin=f)
        cairn("snapshot-read", "snapshot", "extract", snap, os.path.join(tmp, "out.bin"))
        cairn("error", "snapshot", "verify", os.path.join(tmp, "nosuch.snap"), want=5)
        # cairnd run --dry-run --json (a config with one schedule).
        conf = os.path.join(tmp, "cairnd.conf")
        with open(conf, "w") as f:
            f.write("[cairnd]\nstate-dir = %s/state\nmetrics-listen = off\n\n[schedule s]\n"
                    "source = %s\nto = %s\nevery = 1h\nkeep-last = 2\n"
                    % (tmp, os.path.join(tmp, "src-file"), os.path.join(tmp, "loc")))
        cairn("cairnd-run", "run", "--config", conf, "--dry-run", prog=CAIRND)
        cairn("error", "run", "--config", os.path.join(tmp, "nosuch.conf"), "--dry-run",
              prog=CAIRND, want=2)  # a missing config is a usage error (README)
        # The same round on S3.
        if not s3.available():
            skips.missing_part("s3rver (CAIRN_S3RVER)")
        else:
            s3.start()
            location_round(tmp, s3.url("p"), "s3")
    finally:
        s3.stop()
        subprocess.run(["rm", "-rf", tmp])
    # The keys `help --all --json` announces are the keys the schemas allow (docs/CLI.md).
    table = json.loads(subprocess.run([CAIRN, "help", "--all", "--json"], capture_output=True,
                                      text=True).stdout)["commands"]
    for c in table:
        names = {"snapshot": ["snapshot-save", "snapshot-read"]}.get(c["name"], [c["name"]])
        allowed = set()
        for n in names:
            allowed |= set(SCHEMAS[n]["properties"])
        extra = set(c["json_keys"]) - allowed
        check(not extra, "cairn %s: json_keys %s in its schema (not: %s)"
              % (c["name"], c["json_keys"], sorted(extra)))
    unused = set(SCHEMAS) - SEEN - {"common"}
    check(not unused, "every schema used (unused: %s)" % sorted(unused))
    if failures:
        print("%d check(s) failed" % len(failures))
    return skips.exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
