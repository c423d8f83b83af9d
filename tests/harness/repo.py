"""Repositories in Python tests: a location must be a repository before its first backup
(cairn backup, cairn put and cairnd refuse a fresh one: docs/FORMAT.md "Repository")."""
import os
import subprocess


def init_location(url, *opts, env=None, cairn=None):
    """cairn init URL: plain (--no-encryption) without opts, else with them (for example
    "--key-file", path). Raises with cairn's stderr when it fails."""
    cairn = cairn or os.path.join(os.environ["CAIRN_BIN"], "cairn")
    args = [cairn, "init"] + (list(opts) or ["--no-encryption"]) + [url]
    p = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr))
