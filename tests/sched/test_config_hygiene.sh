#!/usr/bin/env bash
# cairnd run's configuration hygiene (issue 18): a missing or unreadable config exits 2 (the
# README's table; the unit's RestartPreventExitStatus=2), storage and source URLs and
# unexpanded variables fail `--dry-run` (not the first run), and the fake clock is a test hook.
source "$(dirname "$0")/cairnd_lib.sh"
good() {
    cat <<CONF
[cairnd]
state-dir = $T/state
metrics-listen = off
[schedule a]
source = $T/src
to = $1
every = 1h
keep-last = 1
CONF
}
mkdir -p "$T/src"
expect_fail 2 "config: open '$T/nope.conf'" "$B/cairnd" run --config "$T/nope.conf"
expect_fail 2 "config: open '$T/nope.conf'" "$B/cairnd" run --config "$T/nope.conf" --dry-run
if [ "$(id -u)" != 0 ]; then # root reads anything
    good "file://$T/b" >"$T/locked.conf" && chmod 000 "$T/locked.conf"
    expect_fail 2 "locked.conf" "$B/cairnd" run --config "$T/locked.conf"
fi
good relative/b >"$T/rel.conf"
expect_fail 2 "[schedule a] to: storage URL 'relative/b' has no scheme" \
    "$B/cairnd" run --config "$T/rel.conf" --dry-run
good '${BACKUP_URL}' >"$T/var.conf"
expect_fail 2 "unexpanded variable '\${BACKUP_URL}'" "$B/cairnd" run --config "$T/var.conf" --dry-run
expect_fail 2 "unexpanded variable '\${BACKUP_URL}'" "$B/cairnd" run --config "$T/var.conf"
good "file://$T/b" | sed 's#^source = .*#source = nosuch://h/x#' >"$T/src.conf"
expect_fail 2 "source 'nosuch:': unknown source scheme" "$B/cairnd" run --config "$T/src.conf" --dry-run
# ${CREDENTIALS_DIRECTORY} (systemd LoadCredential=) is expanded, and only when set.
good "file://$T/b" | sed 's#^metrics-listen = off#&\nkey-file = ${CREDENTIALS_DIRECTORY}/repo.key#' >"$T/cred.conf"
expect_fail 2 "\${CREDENTIALS_DIRECTORY} is not set" env -u CREDENTIALS_DIRECTORY \
    "$B/cairnd" run --config "$T/cred.conf" --dry-run
CREDENTIALS_DIRECTORY=$T/creds "$B/cairnd" run --config "$T/cred.conf" --dry-run >/dev/null 2>"$T/cred.err" ||
    fail "a config naming \${CREDENTIALS_DIRECTORY} must load when it is set: $(cat "$T/cred.err")"
# High availability needs PostgreSQL: a SQLite state allows one cairnd (enforced by a lock).
good "file://$T/b" | sed 's#^metrics-listen = off#&\nlease = 15s#' >"$T/lease.conf"
expect_fail 2 "lease needs a PostgreSQL state" "$B/cairnd" run --config "$T/lease.conf" --dry-run
# A good config passes --dry-run.
good "file://$T/b" >"$T/ok.conf"
"$B/cairnd" run --config "$T/ok.conf" --dry-run >/dev/null 2>"$T/ok.err" || fail "good config: $(cat "$T/ok.err")"
# This is a test build: the fake clock is compiled in (CMake CAIRN_TEST_HOOKS=ON); a build
# without it refuses the option with exit 2 (checked when such a cairnd is given as
# CAIRN_RELEASE_BIN, e.g. by scripts/check.sh's Release build).
set_clock 2026-01-01T00:00:00Z
"$B/cairnd" run --config "$T/ok.conf" --fake-clock "$T/clock" --dry-run >"$T/fake.out" 2>&1 ||
    fail "the test build must accept --fake-clock: $(cat "$T/fake.out")"
grep -q "now 2026-01-01T00:00:00Z" "$T/fake.out" || fail "fake clock not used: $(cat "$T/fake.out")"
if [ -n "${CAIRN_RELEASE_BIN:-}" ]; then
    expect_fail 2 "--fake-clock is a test hook and this cairnd was built without test hooks" \
        "$CAIRN_RELEASE_BIN/cairnd" run --config "$T/ok.conf" --fake-clock "$T/clock" --dry-run
    expect_fail 2 "CAIRND_FAKE_CLOCK is a test hook" env CAIRND_FAKE_CLOCK="$T/clock" \
        "$CAIRN_RELEASE_BIN/cairnd" run --config "$T/ok.conf" --dry-run
fi
echo "PASS: config hygiene"
