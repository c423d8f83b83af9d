"""The README's examples run as written: every block fenced `sh test` is run by bash -e in a
fresh temporary directory with cairn on PATH (blocks in order, one shell state each), the S3
ones against s3rver (its port put where the README says 127.0.0.1:9000). Every other `sh`
block must parse (bash -n) and quote its S3 URLs (an unquoted '&' sends the command to the
background and drops the rest of the URL)."""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import rel  # noqa: E402
import skips  # noqa: E402

SRC = os.path.join(HERE, "..", "..")
failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def blocks():
    """(info string, text, line number) of every fenced block of README.md."""
    out, cur = [], None
    with open(os.path.join(SRC, "README.md")) as f:
        for n, line in enumerate(f, 1):
            if cur is None and line.startswith("```"):
                cur = (line[3:].strip(), [], n)
            elif cur is not None and line.startswith("```"):
                out.append((cur[0], "".join(cur[1]), cur[2]))
                cur = None
            elif cur is not None:
                cur[1].append(line)
    return out


def main():
    bs = blocks()
    runnable = [b for b in bs if b[0] == "sh test"]
    check(len(runnable) >= 2, "README has runnable blocks (%d)" % len(runnable))
    for info, text, n in bs:
        if not info.startswith("sh"):
            continue
        p = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        check(p.returncode == 0, "README.md:%d parses: %s" % (n, p.stderr.strip()))
        for k, line in enumerate(text.splitlines()):
            for m in re.finditer(r"s3://[^\s'\"]*&", line):
                q = line[m.start() - 1] if m.start() > 0 else ""
                check(q in "'\"" and q, "README.md:%d: S3 URL quoted: %s" % (n + 1 + k, line))
    tmp = tempfile.mkdtemp(prefix="cairn-readme-")
    s3 = rel.S3rver(tmp, bucket="bucket")
    try:
        env = dict(os.environ, PATH=os.path.dirname(rel.CAIRN) + ":" + os.environ["PATH"])
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        for info, text, n in runnable:
            if "s3://" in text:
                if not s3.available():
                    skips.missing_part("s3rver (CAIRN_S3RVER)")
                    continue
                if s3.proc is None:
                    s3.start()
                text = text.replace("127.0.0.1:9000", "127.0.0.1:%d" % s3.port)
            p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=work, env=env,
                               capture_output=True, text=True, timeout=300)
            check(p.returncode == 0, "README.md:%d runs (exit %d): %s" % (
                n, p.returncode, (p.stdout + p.stderr).strip()[-600:]))
            print(p.stdout, end="")
    finally:
        s3.stop()
        subprocess.run(["rm", "-rf", tmp])
    return skips.exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
