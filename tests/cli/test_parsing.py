"""The one option parser of cairn and cairnd (src/progs/opts.c), one check per case of issue
19's "Parsing" list and of docs/CLI.md's rules:

- an unknown option is named in one line in cairn's words, with a "did you mean";
- a boolean flag refuses a value (`--json=0` is an error, not JSON on);
- `--opt=value` works as `--opt value` everywhere (`cairnd run --config=FILE` too);
- `-h` and `--help` work for every command and subcommand, and every help has examples;
- `cairn list -j X` is an unknown option, not a URL; `--` ends options;
- `cairn help CMD` prints CMD's help; an unknown command gets a "did you mean";
- abbreviations are refused; a required value that is another option is refused;
- under --json a usage error is one JSON object on stdout."""
import json
import os
import subprocess
import sys
import tempfile

BIN = os.environ.get("CAIRN_BIN", os.path.join(os.path.dirname(__file__), "../../build"))
CAIRN, CAIRND = os.path.join(BIN, "cairn"), os.path.join(BIN, "cairnd")
failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def run(*args, prog=CAIRN, stdin=None, cwd=None, binary=False):
    p = subprocess.run([prog, *args], capture_output=True, text=not binary, timeout=60,
                       stdin=stdin if stdin is not None else subprocess.DEVNULL, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def usage_error(args, want, prog=CAIRN):
    """args fail with exit 2 and one stderr line equal to want (or containing it)."""
    rc, out, err = run(*args, prog=prog)
    lines = err.strip().splitlines()
    ok = rc == 2 and len(lines) == 1 and want in lines[0] and out == ""
    check(ok, "%s -> exit 2, one line with %r (exit %d, stderr %r, stdout %r)"
          % (" ".join(args), want, rc, err, out))


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-parse-")
    loc = os.path.join(tmp, "loc")
    rc, _, err = run("init", loc, "--no-encryption")
    check(rc == 0, "init a location: " + err)

    # The list, one by one.
    usage_error(["backup", "--form", "x"],
                "cairn backup: unknown option '--form' (did you mean '--from'?)")
    usage_error(["list", "--json=0", loc], "cairn list: option '--json' takes no value")
    usage_error(["list", "-j", loc], "cairn list: unknown option '-j' (did you mean '--json'?)")
    rc, out, err = run("help", "backup")
    check(rc == 0 and out.startswith("usage: cairn backup"), "help backup prints backup's help")
    conf = os.path.join(tmp, "cairnd.conf")
    with open(conf, "w") as f:
        f.write("[cairnd]\nstate-dir = %s/state\nmetrics-listen = off\n\n[schedule s]\n"
                "source = %s\nto = %s\nevery = 1h\nkeep-last = 2\n" % (tmp, tmp, loc))
    for form in (["--config=" + conf], ["--config", conf]):
        rc, out, err = run("run", *form, "--dry-run", "--json", prog=CAIRND)
        ok = rc == 0 and json.loads(out)["schedules"][0]["schedule"] == "s"
        check(ok, "cairnd run %s --dry-run: exit %d %s" % (form[0], rc, err.strip()))

    # -h and --help everywhere, with examples.
    rc, out, _ = run("help", "--all", "--json")
    table = json.loads(out)["commands"]
    rc2, out2, _ = run("help", "--all", "--json", prog=CAIRND)
    dtable = json.loads(out2)["commands"]
    cases = [(CAIRN, [c["name"]]) for c in table]
    cases += [(CAIRN, ["snapshot", v]) for v in ("save", "inspect", "verify", "extract")]
    cases += [(CAIRN, ["key", v]) for v in ("generate", "list", "add", "remove", "passwd")]
    cases += [(CAIRND, [c["name"]]) for c in dtable]
    for prog, cmd in cases:
        name = os.path.basename(prog) + " " + " ".join(cmd)
        for h in ("-h", "--help"):
            rc, out, err = run(*cmd, h, prog=prog)
            check(rc == 0 and out.startswith("usage: ") and err == "",
                  "%s %s: exit %d, usage on stdout (%r)" % (name, h, rc, (out + err)[:80]))
        rc, out2, _ = run("help", *cmd, prog=prog)
        check(rc == 0 and out2 == out, "%s help %s = %s --help" % (os.path.basename(prog),
                                                                 " ".join(cmd), name))
        check("Example" in out, "%s --help has examples" % name)

    # --opt=value and --opt value alike; -- ends options.
    key = os.path.join(tmp, "seal.key")
    with open(key, "w") as f:
        f.write("ab" * 32)
    os.chmod(key, 0o600)
    for form in (["--seal-key-file=" + key], ["--seal-key-file", key], ["--seal-key", key]):
        rc, out, err = run("list", loc, *form, "--json")
        check(rc == 0 and json.loads(out)["backups"] == [], "list %s: %s" % (form[0], err))
    rc, out, err = run("list", "--", "--json")
    check(rc == 5 and "unknown option" not in err and "/--json'" in err and out == "",
          "after --, '--json' is the URL: exit %d %s" % (rc, err.strip()))
    rc, out, err = run("list", loc, "--json")
    check(rc == 0 and json.loads(out)["ok"], "options after positionals")

    # Abbreviations, values that are options, positionals, unknown commands.
    usage_error(["list", "--js", loc], "unknown option '--js' (did you mean '--json'?)")
    usage_error(["backup", "--to", "--name", "x"], "option '--to' needs a value")
    usage_error(["backup", "--from"], "option '--from' needs a value")
    usage_error(["list", loc, "extra"], "unexpected argument 'extra'")
    usage_error(["list"], "cairn list: expected a storage URL")
    usage_error(["bakup"], "cairn: unknown command 'bakup' (did you mean 'backup'?)")
    usage_error(["snapshot", "verfy", "x"], "did you mean 'verify'?")
    usage_error(["key", "lst", loc], "did you mean 'list'?")
    usage_error(["serve", "--dta", "x"], "cairnd serve: unknown option '--dta' (did you mean "
                "'--data'?)", prog=CAIRND)
    usage_error(["run", "--json=1"], "cairnd run: option '--json' takes no value", prog=CAIRND)

    # Files and streams: '-' is stdin/stdout; a relative path is a location.
    state, snap = os.path.join(tmp, "state.bin"), os.path.join(tmp, "s.snap")
    data = os.urandom(70000)
    with open(state, "wb") as f:
        f.write(data)
    rc, _, err = run("snapshot", "save", "-", snap, "--index", "4", "--term", "2",
                     stdin=open(state, "rb"))
    check(rc == 0, "snapshot save - (stdin): " + err)
    rc, out, err = run("snapshot", "extract", snap, "-", binary=True)
    check(rc == 0 and out == data and not os.path.exists("-"),
          "snapshot extract FILE - writes the state to stdout")
    rc, out, err = run("snapshot", "verify", "-", stdin=open(snap, "rb"))
    check(rc == 0 and out.startswith("-: OK"), "snapshot verify - reads stdin: " + out + err)
    rc, out, err = run("snapshot", "inspect", "-", "--json", stdin=open(snap, "rb"))
    check(rc == 0 and json.loads(out)["meta"]["Index"] == 4, "snapshot inspect - --json")
    p = subprocess.run("%s snapshot save - - --index 9 --term 1 <%s | %s snapshot extract - -"
                       % (CAIRN, state, CAIRN), shell=True, capture_output=True, timeout=60)
    check(p.returncode == 0 and p.stdout == data,
          "snapshot save - - | snapshot extract - -: a pipeline round trip (%s)"
          % p.stderr.decode()[-200:])
    bad = bytearray(open(snap, "rb").read())
    bad[len(bad) // 2] ^= 0x55
    with open(snap + ".bad", "wb") as f:
        f.write(bad)
    rc, out, err = run("snapshot", "extract", snap + ".bad", "-", binary=True)
    check(rc == 3 and out == b"", "a corrupt archive extracts nothing to stdout (exit %d)" % rc)
    rc, out, err = run("snapshot", "extract", snap, "-", "--json")
    check(rc == 2 and "cannot be combined with --json" in err, "extract to stdout with --json")
    rc, out, err = run("init", "rel", "--no-encryption", "--json", cwd=tmp)
    check(rc == 0 and json.loads(out)["location"] == os.path.join(tmp, "rel"),
          "init of a relative path: the location shown absolute (%s)" % err.strip())
    os.makedirs(os.path.join(tmp, "src"))
    rc, out, err = run("backup", "--from", "src", "--to", "./rel", "--name", "r1", cwd=tmp)
    check(rc == 0 and "database(s)" not in out, "backup --to ./rel; no database count for a "
          "directory: " + out + err)
    rc, out, err = run("list", "rel", "--json", cwd=tmp)
    check(rc == 0 and [b["name"] for b in json.loads(out)["backups"]] == ["r1"], "list rel")

    # Under --json a usage error is one object on stdout (and one line on stderr).
    rc, out, err = run("list", loc, "--json", "--bogus")
    try:
        doc = json.loads(out)
        ok = rc == 2 and doc["error"]["exit"] == 2 and doc["error"]["code"] == "usage" \
            and "--bogus" in doc["error"]["message"] and doc["ok"] is False
    except ValueError:
        ok = False
    check(ok, "usage error under --json is a JSON object: %r" % out)
    rc, out, _ = run("version", "--json")
    check(rc == 0 and json.loads(out)["version"] and json.loads(out)["program"] == "cairn",
          "version --json")

    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
