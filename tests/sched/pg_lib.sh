#!/usr/bin/env bash
# Start a throwaway PostgreSQL 15 on loopback for a test: data and unix socket inside a temp
# dir owned by the postgres user, a free TCP port on 127.0.0.1. Sets PG_URL and defines
# pg_stop. Without a usable server the test is skipped (exit 77), and fails under CI=true,
# where scripts/deps.sh has installed PostgreSQL.
source "$(dirname "${BASH_SOURCE[0]}")/../harness/skips.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DIR=""

pg_skip() {
    missing "$* (PostgreSQL part of $(basename "$0"))"
}

pg_stop() {
    if [ -n "$PG_DIR" ] && [ -f "$PG_DIR/db/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/db" -m immediate stop >/dev/null 2>&1 || true
    fi
    [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
    PG_DIR=""
}

# pg_sql SQL: run one statement through the unix socket, print unaligned tuples.
pg_sql() {
    runuser -u postgres -- "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -X -Atq -v ON_ERROR_STOP=1 \
        -c "$1" postgres
}

pg_start() {
    [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || pg_skip "no PostgreSQL server binaries in $PG_BIN"
    id postgres >/dev/null 2>&1 || pg_skip "no postgres user"
    command -v runuser >/dev/null || pg_skip "no runuser"
    PG_DIR=$(mktemp -d /tmp/cairn-pg-XXXXXX)
    chown postgres "$PG_DIR"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/db" -A trust -U postgres >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log"; pg_skip "initdb failed"; }
    local port tries=0
    while :; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        if runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/db" -l "$PG_DIR/pg.log" -w -t 30 \
            -o "-k $PG_DIR -p $port -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 2>&1; then
            break
        fi
        tries=$((tries + 1))
        [ $tries -lt 3 ] || { cat "$PG_DIR/pg.log"; pg_skip "postgres would not start"; }
    done
    PG_PORT=$port
    PG_URL="postgresql://postgres@127.0.0.1:$port/postgres?connect_timeout=5"
    echo "postgres up on 127.0.0.1:$port"
}

# pg_down / pg_up: stop the server (data kept) and start it again on the same port.
pg_down() {
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/db" -m fast -w stop >/dev/null 2>&1
}
pg_up() {
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/db" -l "$PG_DIR/pg.log" -w -t 60 \
        -o "-k $PG_DIR -p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
}
