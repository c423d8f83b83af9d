"""docs/CLI.md is what scripts/cli-doc.py makes of the programs' own option tables: a command,
option or JSON key added to the code without regenerating the doc fails here
(run `scripts/cli-doc.py build > docs/CLI.md`)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "..")
BIN = os.environ.get("CAIRN_BIN", os.path.join(SRC, "build"))

want = subprocess.run([sys.executable, os.path.join(SRC, "scripts", "cli-doc.py"), BIN],
                      capture_output=True, text=True, check=True).stdout
with open(os.path.join(SRC, "docs", "CLI.md")) as f:
    have = f.read()
if have != want:
    import difflib
    sys.stdout.writelines(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                               "docs/CLI.md", "scripts/cli-doc.py"))
    print("FAIL: docs/CLI.md is out of date: run scripts/cli-doc.py BUILD > docs/CLI.md")
    sys.exit(1)
print("ok: docs/CLI.md matches the option tables")
