#!/usr/bin/env bash
# High availability on a real PostgreSQL (issue 18): three `cairnd run` share one state with a
# leader lease (lease = 2s). Each round the fake clock reaches the next scheduled minute and
# the current leader is killed (SIGKILL) or stopped (SIGSTOP) at a random moment, often in
# the middle of the backup; a follower takes over when the lease expires. /healthz names the
# roles, and a reload on the leader keeps it the leader. A stopped leader is
# resumed (SIGCONT) after its successor finished the instant: it must step down without
# writing anything (fencing). At the end every scheduled instant has exactly one complete
# backup that verifies, none was completed twice, none is missing, and the state rows were
# written with non-decreasing lease tokens (a stale leader's save never landed).
#
# CAIRN_FAILOVER_ROUNDS (default 8, about 40 s; the issue's figure is 20) and
# CAIRN_FAILOVER_SEED (default: random, printed) size and replay it.
source "$(dirname "$0")/cairnd_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
ROUNDS=${CAIRN_FAILOVER_ROUNDS:-8}
SEED=${CAIRN_FAILOVER_SEED:-$((($$ + SECONDS) % 32768))}
RANDOM=$SEED
echo "failover: $ROUNDS rounds, seed $SEED"
PIDS=("" "" "")
PORTS=("" "" "")
LOGN=(0 0 0)
STOPPED=""
kill_nodes() {
    local p
    for p in "${PIDS[@]}"; do
        [ -n "$p" ] && { kill -CONT "$p"; kill -9 "$p"; } 2>/dev/null
    done
    return 0
}
extra_cleanup() { pg_stop; }
# The nodes go before cairnd_lib's cleanup waits for every child.
trap 'rc=$?; kill_nodes; (exit $rc); cleanup' EXIT
pg_start
mkdir -p "$T/backups"
"$B/cairn" init "file://$T/backups" --no-encryption >/dev/null
cat >"$T/cairnd.conf" <<CONF
[cairnd]
state = $PG_URL
state-keep = 100000
metrics-listen = 127.0.0.1:0
lease = 2s
lease-renew = 250ms
catch-up-rate = 50/s
snapshot-interval = 1s
shutdown-timeout = 5s

[schedule m]
source = exec:head -c 300000 /dev/urandom; sleep 0.5
to = file://$T/backups
every = 1m
keep-last = 1000
CONF

# start_node I: (re)start cairnd number I with a fresh log.
start_node() {
    local i=$1
    LOGN[$i]=$((LOGN[$i] + 1))
    local log="$T/run$i.${LOGN[$i]}.log"
    "$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" >"$log" 2>&1 &
    PIDS[$i]=$!
    wait_for 120 grep -qs "metrics on http://" "$log" || fail "cairnd $i did not start: $(cat "$log")"
    PORTS[$i]=$(sed -n 's/.*metrics on http:\/\/127.0.0.1:\([0-9]*\)\/metrics.*/\1/p' "$log" | head -n 1)
}
node_log() { echo "$T/run$1.${LOGN[$1]}.log"; }
node_metric() {
    curl -fsS --max-time 2 "http://127.0.0.1:${PORTS[$1]}/metrics" 2>/dev/null | awk -v k="$2" '$1 == k { print $2 }'
}
# leader: the index of the running node that leads (none: fails).
LEADER=""
find_leader() {
    LEADER=""
    local i n=0
    for i in 0 1 2; do
        [ "${PIDS[$i]}" = "$STOPPED" ] && continue
        if [ "$(node_metric "$i" cairn_leader)" = 1 ]; then
            LEADER=$i
            n=$((n + 1))
        fi
    done
    [ $n -eq 1 ]
}
name_of() { date -u -d "@$1" +%Y%m%dT%H%M%SZ-m; }
complete() { [ -f "$T/backups/$(name_of "$1")/MANIFEST" ]; }
# instant_done AT: its backup is complete and the state moved past it (dry run reads it).
instant_done() {
    complete "$1" || return 1
    local last
    last=$("$B/cairnd" run --config "$T/cairnd.conf" --fake-clock "$T/clock" --dry-run --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["schedules"][0]["last"])') || return 1
    [ "$(date -u -d "$last" +%s)" -ge "$1" ]
}

t0=$(date -u -d 2026-01-01T10:00:30Z +%s)
set_clock "$t0"
for i in 0 1 2; do start_node $i; done
wait_for 60 find_leader || fail "no single leader among three"
echo "first leader: node $LEADER"
# /healthz names the roles; a follower is healthy (200).
f=$(((LEADER + 1) % 3))
curl -fsS "http://127.0.0.1:${PORTS[$f]}/healthz" | grep -q "^follower: the leader is .* (lease token 1," ||
    fail "follower /healthz: $(curl -sS "http://127.0.0.1:${PORTS[$f]}/healthz")"
curl -fsS "http://127.0.0.1:${PORTS[$LEADER]}/healthz" | grep -q "^leader (lease token 1," ||
    fail "leader /healthz: $(curl -sS "http://127.0.0.1:${PORTS[$LEADER]}/healthz")"
# A reload on the leader keeps the leadership: a new term with the next token, no failover.
kill -HUP "${PIDS[$LEADER]}"
first=$LEADER
wait_for 60 grep -q "configuration reloaded" "$(node_log "$first")" || fail "leader did not reload"
leads_with() { find_leader && [ "$LEADER" = "$1" ] && [ "$(node_metric "$1" cairn_lease_token)" = "$2" ]; }
wait_for 60 leads_with "$first" 2 || fail "after a reload node $first does not lead with token 2 (leader $LEADER)"
at=$((t0 + 30)) # 10:01:00, the first scheduled instant
for round in $(seq 1 "$ROUNDS"); do
    old=$LEADER
    oldpid=${PIDS[$old]}
    oldtok=$(node_metric "$old" cairn_lease_token)
    set_clock "$at"
    # A random moment: before, during or after the 0.5 s backup.
    sleep "0.$((RANDOM % 9))"
    if [ $((RANDOM % 2)) -eq 0 ]; then
        how=SIGKILL
        kill -9 "$oldpid"
        wait "$oldpid" 2>/dev/null || true
        PIDS[$old]=""
    else
        how=SIGSTOP
        kill -STOP "$oldpid"
        STOPPED=$oldpid
    fi
    wait_for 120 find_leader || fail "round $round: no new leader after $how of node $old"
    newtok=$(node_metric "$LEADER" cairn_lease_token)
    [ "$LEADER" != "$old" ] && [ "$newtok" -gt "$oldtok" ] ||
        fail "round $round: leader $LEADER token $newtok after node $old (token $oldtok)"
    wait_for 120 instant_done "$at" || fail "round $round: $(name_of "$at") not done by node $LEADER"
    echo "round $round: $how node $old (token $oldtok) -> node $LEADER (token $newtok), $(name_of "$at") done"
    if [ "$how" = SIGSTOP ]; then
        log=$(node_log "$old")
        from=$(($(stat -c %s "$log") + 1))
        kill -CONT "$oldpid"
        STOPPED=""
        wait_for 60 grep -q "LEADER LEASE LOST" "$log" || fail "round $round: resumed node $old did not step down"
        wait_for 30 sh -c "[ \"\$(curl -fsS --max-time 2 http://127.0.0.1:${PORTS[$old]}/metrics | awk '\$1 == \"cairn_leader\" {print \$2}')\" = 0 ]" ||
            fail "round $round: resumed node $old still says it leads"
        if tail -c +"$from" "$log" | grep -E "backup [0-9TZ]+-m complete|storage: backup '.*' complete in|removing incomplete|schedule m: (pruned|removed)|aborted backup|state snapshot saved"; then
            fail "round $round: the deposed node $old wrote after it was resumed (not fenced)"
        fi
        tail -c +"$from" "$log" | grep -E "fenced|lease .* lost|LOST" | head -n 3 | sed 's/^/  resumed: /'
    else
        start_node "$old" # back to three
    fi
    at=$((at + 60))
done
# One more instant with everyone up, then a clean stop of all three.
set_clock "$at"
wait_for 120 instant_done "$at" || fail "final instant $(name_of "$at") not done"
for i in 0 1 2; do kill -TERM "${PIDS[$i]}"; done
for i in 0 1 2; do
    wait_exit 60 "${PIDS[$i]}" || fail "node $i did not stop on SIGTERM"
    [ "$EXIT_RC" -eq 0 ] || fail "node $i exited $EXIT_RC"
    PIDS[$i]=""
done

# Every instant from 10:01 to the last has exactly one complete backup, nothing else is complete.
want=""
for ((x = t0 + 30; x <= at; x += 60)); do want+="$(name_of "$x") "; done
got=$(cd "$T/backups" && for d in *-m; do [ -f "$d/MANIFEST" ] && printf '%s ' "$d"; done)
[ "$got" = "$want" ] || fail "complete backups: got '$got', want '$want'"
for b in $want; do
    n=$(cat "$T"/run*.log | grep -c "schedule m: backup $b complete" || true)
    [ "$n" -le 1 ] || fail "$b was completed $n times"
    "$B/cairn" verify "file://$T/backups" "$b" >/dev/null 2>"$T/verify.err" || fail "$b does not verify: $(cat "$T/verify.err")"
done
# The state rows' tokens never go down: no stale leader's save landed after a newer one's.
pg_sql "SELECT token FROM cairn_state_snapshots ORDER BY id" >"$T/tokens"
sort -n -c "$T/tokens" || fail "a state save with a stale token landed: $(tr '\n' ' ' <"$T/tokens")"
[ "$(head -n 1 "$T/tokens")" -ge 1 ] || fail "state saved without a lease token"
echo "tokens of state rows: $(uniq "$T/tokens" | tr '\n' ' ')"
echo "PASS: $ROUNDS failovers, every instant backed up exactly once, stale leaders fenced"
