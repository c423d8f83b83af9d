#!/usr/bin/env bash
# Run every test: the suite in a normal build and again under ASan+UBSan, the concurrent tests
# under TSan, and each libFuzzer target for a short fixed time. Installs its own dependencies.
# The last line is the total: "check: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export CAIRN_SHARED=${CAIRN_SHARED:-$(cd .. && pwd)/shared}
scripts/deps.sh test || { echo "check: 0 passed, 1 failed"; exit 1; }

jobs=$(nproc)
gen=""
command -v ninja >/dev/null 2>&1 && gen="-G Ninja"
total_pass=0
total_fail=0
log=$(mktemp)

# run_ctest DIR [ctest args...]: runs ctest and adds its counts to the totals.
run_ctest() {
    local dir=$1
    shift
    ctest --test-dir "$dir" -j "$jobs" --output-on-failure --timeout 900 "$@" 2>&1 | tee "$log"
    local line
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        if grep -q "No tests were found" "$log"; then
            return 0
        fi
        total_fail=$((total_fail + 1))
        return 1
    fi
    local failed all
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    all=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    total_pass=$((total_pass + all - failed))
    total_fail=$((total_fail + failed))
}

# build DIR cmake-args...: configure and build; a build failure counts as one failed test.
build() {
    local dir=$1
    shift
    echo "=== build $dir"
    if ! { cmake -S . -B "$dir" $gen "$@" >/dev/null && cmake --build "$dir" -j "$jobs"; }; then
        echo "*** build of $dir failed"
        total_fail=$((total_fail + 1))
        return 1
    fi
}

echo "=== tests (RelWithDebInfo)"
build build -DCMAKE_BUILD_TYPE=RelWithDebInfo && run_ctest build

echo "=== tests under ASan+UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build build-asan -DCMAKE_BUILD_TYPE=Debug -DCAIRN_SANITIZE=ON && run_ctest build-asan -LE "nosan|slow"
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "=== concurrent tests under TSan"
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
build build-tsan -DCMAKE_BUILD_TYPE=Debug -DCAIRN_TSAN=ON && run_ctest build-tsan -L concurrent
unset TSAN_OPTIONS

echo "=== fuzz smoke (libFuzzer)"
if command -v clang >/dev/null 2>&1; then
    if build build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DCAIRN_FUZZ=ON -DCAIRN_TESTS=OFF; then
        for f in build-fuzz/tests/fuzz/fuzz_*; do
            [ -x "$f" ] || continue
            name=$(basename "$f")
            corpus=tests/fuzz/corpus/${name#fuzz_}
            work=$(mktemp -d)
            echo "--- $name (${CAIRN_FUZZ_SECONDS:-20}s)"
            if "$f" -max_total_time="${CAIRN_FUZZ_SECONDS:-20}" -print_final_stats=0 "$work" ${corpus:+$( [ -d "$corpus" ] && echo "$corpus")} >"$log" 2>&1; then
                total_pass=$((total_pass + 1))
            else
                tail -n 40 "$log"
                echo "*** $name found a crash"
                total_fail=$((total_fail + 1))
            fi
            rm -rf "$work"
        done
    fi
else
    echo "*** SKIPPED: clang not available, no fuzz smoke"
fi

rm -f "$log"
echo "check: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
