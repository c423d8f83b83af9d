#!/usr/bin/env bash
# Run every test: the suite in a normal build and again under ASan+UBSan, the concurrent tests
# under TSan, each libFuzzer target for a short fixed time, and the builds users make (gcc
# Release, clang). Installs its own dependencies. Prints each phase's wall time and the ten
# slowest tests; the last line is the total: "check: N passed, N failed, N skipped".
#
# A test that cannot run exits 77 and is counted as skipped, never as passed. With CI=true
# (as CI runs it) a missing server or tool is a failure: CI installs them, so their absence is
# a broken install step. Development and CI builds use -Werror (CAIRN_WERROR=ON).
set -uo pipefail
cd "$(dirname "$0")/.."
export CAIRN_SHARED=${CAIRN_SHARED:-$(cd .. && pwd)/shared}

jobs=$(nproc)
gen=""
total_pass=0
total_fail=0
total_skip=0
work=$(mktemp -d /tmp/cairn-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
: >"$work/phases"  # NAME<TAB>seconds
: >"$work/results" # phase<TAB>test<TAB>status<TAB>seconds
phase_name=""
phase_t0=0

# phase NAME: ends the running phase (recording its wall time) and starts NAME.
phase() {
    [ -z "$phase_name" ] || printf '%s\t%s\n' "$phase_name" $((SECONDS - phase_t0)) >>"$work/phases"
    phase_name=$1
    phase_t0=$SECONDS
    [ -z "$phase_name" ] || echo "=== $phase_name"
}

count() { # count pass|fail|skip
    case $1 in
    pass) total_pass=$((total_pass + 1)) ;;
    fail) total_fail=$((total_fail + 1)) ;;
    skip) total_skip=$((total_skip + 1)) ;;
    esac
}

phase deps
if ! scripts/deps.sh test; then
    echo "*** scripts/deps.sh test failed"
    echo "check: 0 passed, 1 failed, 0 skipped"
    exit 1
fi
command -v ninja >/dev/null 2>&1 && gen="-G Ninja"

# Everything the tests start or call. Without CI these tests say SKIP; under CI=true each
# missing one is a failure here, named, and again in every test that needs it.
preflight() {
    local missing=() t
    for t in influxd "${PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" /usr/bin/aws clang clang-format valgrind faketime openssl \
        node "${CAIRN_S3RVER:-$PWD/.cache/node/node_modules/.bin/s3rver}" \
        /usr/share/zoneinfo/Europe/Berlin; do
        case $t in
        /*) [ -e "$t" ] || missing+=("$t") ;;
        *) command -v "$t" >/dev/null 2>&1 || missing+=("$t") ;;
        esac
    done
    [ -d "$CAIRN_SHARED" ] || echo "note: $CAIRN_SHARED not found; tests of the peer fixtures will be skipped"
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "${CI:-}" = true ]; then
        for t in "${missing[@]}"; do
            echo "*** missing under CI=true: $t (scripts/deps.sh test installs it)"
            count fail
        done
    else
        echo "note: missing ${missing[*]}: the tests that need them will be skipped"
    fi
}
preflight

# run_ctest PHASE DIR [ctest args...]: runs ctest, adds its passed/failed/skipped counts to
# the totals and its per-test times to the results (from ctest's JUnit report).
run_ctest() {
    local ph=$1 dir=$2
    shift 2
    rm -f "$dir/junit.xml"
    ctest --test-dir "$dir" -j "$jobs" --output-on-failure --timeout 900 \
        --output-junit junit.xml "$@" 2>&1 | tee "$work/ctest.log"
    if [ ! -s "$dir/junit.xml" ]; then
        grep -q "No tests were found" "$work/ctest.log" && return 0
        echo "*** ctest in $dir wrote no report"
        count fail
        return 1
    fi
    python3 - "$ph" "$dir/junit.xml" >>"$work/results" <<'EOF'
import sys
import xml.etree.ElementTree as ET
phase, path = sys.argv[1:3]
for tc in ET.parse(path).getroot().iter("testcase"):
    st = {"run": "pass", "fail": "fail", "notrun": "skip"}.get(tc.get("status"), "fail")
    if st == "skip" and tc.find("skipped") is None:
        st = "fail"  # "notrun" without a skip code: not found or not runnable
    print("%s\t%s\t%s\t%s" % (phase, tc.get("name"), st, tc.get("time", "0")))
    if st == "fail":
        # The lines that say why, for the summary at the end (CI keeps a log's head and tail).
        out = (tc.findtext("system-out") or "").splitlines()
        why = [ln.strip() for ln in out
               if ln.lstrip().startswith(("FAIL", "Traceback", "AssertionError", "***"))
               or "Error:" in ln][:12]
        with open(path + ".why", "a") as f:
            for ln in why or out[-6:]:
                f.write("  %s %s: %s\n" % (phase, tc.get("name"), ln[:300]))
EOF
    [ ! -f "$dir/junit.xml.why" ] || cat "$dir/junit.xml.why" >>"$work/why"
    rm -f "$dir/junit.xml.why"
}

# build DIR cmake-args...: configure and build; a build failure counts as one failed test.
build() {
    local dir=$1
    shift
    echo "--- build $dir"
    if ! { cmake -S . -B "$dir" $gen -DCAIRN_WERROR=ON "$@" >/dev/null && cmake --build "$dir" -j "$jobs"; }; then
        echo "*** build of $dir failed"
        printf '%s\tbuild/%s\tfail\t0\n' "${phase_name%% *}" "$dir" >>"$work/results"
        return 1
    fi
}

phase "tests (RelWithDebInfo)"
build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_TEST_HOOKS=ON && run_ctest tests build

phase "tests under ASan+UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build build-asan -DCMAKE_BUILD_TYPE=Debug -DCAIRN_SANITIZE=ON -DCAIRN_TEST_HOOKS=ON && run_ctest asan build-asan -LE "nosan|slow"
unset ASAN_OPTIONS UBSAN_OPTIONS

phase "concurrent tests under TSan"
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
build build-tsan -DCMAKE_BUILD_TYPE=Debug -DCAIRN_TSAN=ON -DCAIRN_TEST_HOOKS=ON && run_ctest tsan build-tsan -L concurrent
unset TSAN_OPTIONS

phase "fuzz smoke (libFuzzer)"
if command -v clang >/dev/null 2>&1; then
    if build build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DCAIRN_FUZZ=ON -DCAIRN_TESTS=OFF; then
        # One target per core at a time; each writes its verdict to the results.
        fuzz_one() {
            local f=$1 name corpus fwork t0 st
            name=$(basename "$f")
            corpus=tests/fuzz/corpus/${name#fuzz_}
            fwork=$(mktemp -d)
            t0=$SECONDS
            if "$f" -max_total_time="${CAIRN_FUZZ_SECONDS:-20}" -print_final_stats=0 "$fwork" \
                $([ -d "$corpus" ] && echo "$corpus") >"$work/$name.log" 2>&1; then
                st=pass
            else
                tail -n 40 "$work/$name.log"
                echo "*** $name found a crash"
                st=fail
            fi
            echo "--- $name: $st ($((SECONDS - t0)) s)"
            printf 'fuzz\t%s\t%s\t%s\n' "$name" $st $((SECONDS - t0)) >>"$work/results"
            rm -rf "$fwork"
        }
        running=0
        for f in build-fuzz/tests/fuzz/fuzz_*; do
            [ -x "$f" ] || continue
            fuzz_one "$f" &
            running=$((running + 1))
            if [ $running -ge "$jobs" ]; then
                wait -n
                running=$((running - 1))
            fi
        done
        wait
    fi
else
    echo "*** clang not available: no fuzz smoke"
    [ "${CI:-}" = true ] && count fail || count skip
fi

# What users and packagers build: gcc at -O3 (Release, with the tests) and clang (library and
# programs). Warning-free, since these too build with -Werror here.
phase "builds users make (gcc Release, clang Release)"
for cfg in "release-gcc:-DCMAKE_BUILD_TYPE=Release" \
    "release-clang:-DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCAIRN_TESTS=OFF"; do
    name=${cfg%%:*}
    t0=$SECONDS
    # shellcheck disable=SC2086 # the flags are split on purpose
    build "build-$name" ${cfg#*:} &&
        printf 'builds\tbuild/build-%s\tpass\t%s\n' "$name" $((SECONDS - t0)) >>"$work/results"
done
# A Release cairnd has no test hooks (CAIRN_TEST_HOOKS off): it refuses --fake-clock.
t0=$SECONDS
st=fail
[ -x build-release-gcc/cairnd ] && CAIRN_BIN=$PWD/build CAIRN_RELEASE_BIN=$PWD/build-release-gcc \
    tests/sched/test_config_hygiene.sh >"$work/hooks.log" 2>&1 && st=pass
[ $st = pass ] || { cat "$work/hooks.log"; echo "*** the Release cairnd accepts test hooks"; }
printf 'builds\tsched/test_config_hygiene.sh (Release cairnd)\t%s\t%s\n' $st $((SECONDS - t0)) >>"$work/results"
phase ""

echo
echo "=== phase wall times"
awk -F'\t' '{ printf "  %6d s  %s\n", $2, $1; t += $2 } END { printf "  %6d s  total\n", t }' "$work/phases"
echo "=== the 10 slowest tests"
sort -t$'\t' -k4,4 -g -r "$work/results" | head -n 10 |
    awk -F'\t' '{ printf "  %7.1f s  %-6s %s (%s)\n", $4, $1, $2, $3 }'
if grep -q $'\tskip\t' "$work/results"; then
    echo "=== skipped (they did not run: see their output above)"
    awk -F'\t' '$3 == "skip" { printf "  %s %s\n", $1, $2 }' "$work/results"
fi
if grep -q $'\tfail\t' "$work/results"; then
    echo "=== failed"
    awk -F'\t' '$3 == "fail" { printf "  %s %s\n", $1, $2 }' "$work/results"
    if [ -s "$work/why" ]; then
        echo "=== why (their failing lines; the whole output is above)"
        cat "$work/why"
    fi
fi
total_pass=$((total_pass + $(grep -c $'\tpass\t' "$work/results")))
total_fail=$((total_fail + $(grep -c $'\tfail\t' "$work/results")))
total_skip=$((total_skip + $(grep -c $'\tskip\t' "$work/results")))
echo "check: $total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
