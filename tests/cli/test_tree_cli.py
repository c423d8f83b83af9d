"""cairn ls, cairn diff and cairn restore --include/--exclude on file storage: ls lists every
entry (text and --json with each file's SHA-256; PATH limits it, a missing PATH is exit 5);
diff names what was added, removed, modified and changed in metadata only (text and --json);
restore --include/--exclude restores part of a backup; --help of each has examples."""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import check, cairn, tmpdir, run_parts  # noqa: E402

T = tmpdir("cairn-treecli-")
SRC = os.path.join(T, "src")
URL = "file://" + os.path.join(T, "repo")


def write(rel, data):
    p = os.path.join(SRC, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)


def part_ls():
    write("etc/hosts", b"127.0.0.1 localhost\n")
    write("etc/ssh/sshd_config", b"Port 22\n")
    write("keep/a.txt", b"a")
    write("gone.txt", b"bye")
    write("meta.txt", b"same")
    os.symlink("etc/hosts", os.path.join(SRC, "hosts-link"))
    check(cairn("init", URL, "--no-encryption")[0] == 0, "init")
    rc, _, err, _ = cairn("backup", "--to", URL, "--from", SRC, "--name", "one")
    check(rc == 0, "backup one (%s)" % err.strip())
    rc, out, err, _ = cairn("ls", URL, "one")
    lines = out.splitlines()
    check(rc == 0 and len(lines) == 9, "ls lists 9 entries (%d)" % len(lines))
    check(any(ln.startswith("lrwxrwxrwx") and ln.endswith("hosts-link -> etc/hosts")
              for ln in lines), "ls shows the symlink -l style")
    rc, out, err, _ = cairn("ls", URL, "one", "etc", "--json")
    doc = json.loads(out) if rc == 0 else {}
    paths = sorted(e["path"] for e in doc.get("entries", []))
    check(paths == ["etc", "etc/hosts", "etc/ssh", "etc/ssh/sshd_config"],
          "ls PATH --json lists PATH and what is under it (%s)" % paths)
    hosts = [e for e in doc.get("entries", []) if e["path"] == "etc/hosts"]
    check(hosts and hosts[0]["sha256"] == hashlib.sha256(b"127.0.0.1 localhost\n").hexdigest()
          and hosts[0]["type"] == "file" and "stored" not in hosts[0],
          "ls --json gives a file's SHA-256 and no storage details")
    rc, _, err, _ = cairn("ls", URL, "one", "nothing/here")
    check(rc == 5, "ls of a missing PATH is exit 5 (%d: %s)" % (rc, err.strip()))


def part_diff():
    write("etc/hosts", b"127.0.0.1 localhost changed\n")
    os.remove(os.path.join(SRC, "gone.txt"))
    write("new/file", b"new")
    os.chmod(os.path.join(SRC, "meta.txt"), 0o600)
    os.utime(os.path.join(SRC, "keep"), ns=(1, 1))
    rc, _, err, _ = cairn("backup", "--to", URL, "--from", SRC, "--name", "two")
    check(rc == 0, "backup two (%s)" % err.strip())
    rc, out, err, _ = cairn("diff", URL, "one", "two")
    lines = set(out.splitlines())
    for want in ("M    etc/hosts", "-    gone.txt", "+    new", "+    new/file", "U    meta.txt",
                 "U    keep"):
        check(want in lines, "diff says %r" % want)
    check("keep/a.txt" not in out and "sshd_config" not in out, "diff leaves the same out")
    rc, out, err, _ = cairn("diff", URL, "one", "two", "--json")
    doc = json.loads(out) if rc == 0 else {}
    check(doc.get("added") == 2 and doc.get("removed") == 1 and doc.get("modified") == 1,
          "diff --json counts (%s)" % {k: doc.get(k) for k in ("added", "removed", "modified")})
    kinds = {c["path"]: c["change"] for c in doc.get("changes", [])}
    check(kinds.get("meta.txt") == "metadata" and kinds.get("gone.txt") == "removed",
          "diff --json names each change")


def part_include_exclude():
    out = os.path.join(T, "part")
    rc, _, err, _ = cairn("restore", URL, "two", "--into", out, "--include", "/etc",
                          "--exclude", "sshd_config")
    check(rc == 0, "restore --include --exclude (%s)" % err.strip())
    got = sorted(os.path.relpath(os.path.join(d, n), out)
                 for d, ds, fs in os.walk(out) for n in ds + fs)
    check(got == ["etc", "etc/hosts", "etc/ssh"], "only /etc without sshd_config (%s)" % got)
    rc, _, err, _ = cairn("restore", URL, "two", "--into", os.path.join(T, "x"), "--to", "h:1",
                          "--include", "a")
    check(rc == 2, "--include without --into alone is a usage error")


def part_help():
    for cmd in ("ls", "diff", "restore"):
        rc, out, _, _ = cairn(cmd, "--help")
        check(rc == 0 and "Examples:" in out, "cairn %s --help has examples" % cmd)


run_parts(T, [], part_ls, part_diff, part_include_exclude, part_help)
