# How a shell test says it cannot run (sourced). Exit code 77 is ctest's SKIP_RETURN_CODE for
# every test (tests/CMakeLists.txt), so a skip is counted as skipped, never as passed.
#   skip WHY      this machine cannot run the test (no CAP_SYS_ADMIN, not a git checkout ...)
#   missing WHY   something `scripts/deps.sh test` installs is absent: a skip for a developer,
#                 a failure under CI=true, where its absence is a broken install step
SKIP_CODE=77
skip() {
    echo "*** SKIPPED: $*"
    exit $SKIP_CODE
}
missing() {
    if [ "${CI:-}" = true ]; then
        echo "FAIL: missing under CI=true: $*" >&2
        exit 1
    fi
    skip "$*"
}
