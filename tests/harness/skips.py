"""How a Python test says it cannot run, whole or in part (twin of skips.sh).

Exit code 77 is ctest's SKIP_RETURN_CODE for every test, so a skipped test is counted as
skipped, never as passed. `missing` is for something `scripts/deps.sh test` installs: under
CI=true its absence is a failure (a broken install step), not a skip. A test that ran some
parts and skipped others ends with `exit_code(failed)`: 1 on any failure, else 77 if a part
was skipped, else 0."""
import os
import sys

SKIP_CODE = 77
CI = os.environ.get("CI") == "true"
_skipped_parts = []
_ci_failures = []


def skip(why):
    print("*** SKIPPED: " + why, flush=True)
    sys.exit(SKIP_CODE)


def missing(why):
    if CI:
        print("FAIL: missing under CI=true: " + why, flush=True)
        sys.exit(1)
    skip(why)


def skip_part(why):
    """This part cannot run here; the rest of the test goes on."""
    print("*** SKIPPED (part): " + why, flush=True)
    _skipped_parts.append(why)


def missing_part(why):
    """A part needs something deps.sh installs: a skipped part, or under CI=true a failure
    that exit_code() reports."""
    if CI:
        print("FAIL: missing under CI=true: " + why, flush=True)
        _ci_failures.append(why)
    else:
        skip_part(why)


def exit_code(failed):
    if failed or _ci_failures:
        return 1
    return SKIP_CODE if _skipped_parts else 0
