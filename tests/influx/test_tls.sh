#!/usr/bin/env bash
# cairnd serve over TLS with client certificates (certificates made here with the openssl
# command): cairn backup and an online cairn restore go through with a client certificate of
# the right CA; a plain client, a client without a certificate, one whose certificate another
# CA signed, one that does not trust the server's CA and one expecting another server name are
# all turned away, each with its own error, and the server logs why. --tls-allow-plain serves
# plain clients (influxd) beside TLS ones.
set -euo pipefail
source "$(dirname "$0")/../sched/cairnd_lib.sh"
source "$(dirname "$0")/../harness/skips.sh"
command -v openssl >/dev/null || missing "openssl (the command) is not installed"

# ca NAME: a self-signed CA; cert NAME CA SUBJECT [SAN]: a certificate CA signed.
ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
        -keyout "$T/$1.key" -out "$T/$1.pem" 2>/dev/null
}
cert() {
    local ext="$T/$1.ext"
    printf 'basicConstraints=CA:FALSE\n%s\n' "${4:+subjectAltName=$4}" >"$ext"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$3" -keyout "$T/$1.key" -out "$T/$1.csr" \
        2>/dev/null
    openssl x509 -req -in "$T/$1.csr" -CA "$T/$2.pem" -CAkey "$T/$2.key" -CAcreateserial \
        -days 2 -extfile "$ext" -out "$T/$1.pem" 2>/dev/null
}
ca ca
ca rogue
cert server ca cairn-server "IP:127.0.0.1,DNS:localhost"
cert client ca cairn-client
cert intruder rogue cairn-intruder

mkdir -p "$T/data/mydb/autogen/1" "$T/data/mydb/autogen/2"
head -c 300000 /dev/urandom >"$T/data/mydb/autogen/1/000000001-000000001.tsm"
head -c 100000 /dev/urandom >"$T/data/mydb/autogen/2/000000001-000000001.tsm"
start_serve "$T/data" --allow-restore --tls-cert "$T/server.pem" --tls-key "$T/server.key" \
    --tls-client-ca "$T/ca.pem"
grep -q "TLS with client certificates" "$T/serve.log" || fail "serve log: $(cat "$T/serve.log")"
CLIENT=(--tls-ca "$T/ca.pem" --tls-cert "$T/client.pem" --tls-key "$T/client.key")

init_location "file://$T/store"
# backup NAME [OPTION...]: exit status of cairn backup into $T/store (stderr in $T/NAME.err).
backup() {
    local rc=0
    "$B/cairn" backup --from "$ADDR" --to "file://$T/store" --name "$1" "${@:2}" \
        >/dev/null 2>"$T/$1.err" || rc=$?
    echo $rc
}

# 1. The right client certificate: a backup that verifies and restores to the same bytes.
[ "$(backup good "${CLIENT[@]}")" = 0 ] || fail "TLS backup: $(cat "$T/good.err")"
"$B/cairn" verify "file://$T/store" good >/dev/null || fail "verify"
"$B/cairn" restore "file://$T/store" good --into "$T/legacy" >/dev/null || fail "restore --into"
mkdir "$T/x"
tar -xf "$T/legacy/mydb.autogen.00001.00" -C "$T/x"
cmp "$T/x/mydb/autogen/1/000000001-000000001.tsm" "$T/data/mydb/autogen/1/000000001-000000001.tsm" ||
    fail "shard 1 differs"
grep -q "TLS client certificate .*CN *= *cairn-client" "$T/serve.log" ||
    fail "client certificate not logged: $(tail -5 "$T/serve.log")"
echo "PASS: backup over TLS with a client certificate"

# 2. An online restore over TLS (metastore and shard uploads end with a close_notify).
"$B/cairn" restore "file://$T/store" good --to "$ADDR" --db mydb --newdb copy "${CLIENT[@]}" \
    >/dev/null 2>"$T/restore.err" || fail "TLS restore: $(cat "$T/restore.err")"
got=$(find "$T/data/copy" -name '*.tsm' | wc -l)
[ "$got" = 2 ] || fail "restored shards: $got"
for f in "$T"/data/copy/autogen/*/000000001-000000001.tsm; do
    cmp -s "$f" "$T/data/mydb/autogen/1/000000001-000000001.tsm" ||
        cmp -s "$f" "$T/data/mydb/autogen/2/000000001-000000001.tsm" || fail "restored $f differs"
done
echo "PASS: online restore over TLS"

# 3. Turned away, each for its own reason; none leaves a complete backup.
rc=$(backup plain)
[ "$rc" = 9 ] || fail "a plain client: exit $rc, want 9: $(cat "$T/plain.err")"
grep -q "refused the backup: TLS is required" "$T/plain.err" || fail "plain: $(cat "$T/plain.err")"
wait_for 60 grep -q "plain connection refused: TLS is required" "$T/serve.log" ||
    fail "plain refusal not logged"
rc=$(backup nocert --tls-ca "$T/ca.pem")
[ "$rc" = 9 ] || fail "no client certificate: exit $rc, want 9: $(cat "$T/nocert.err")"
grep -qi "certificate" "$T/nocert.err" || fail "no client certificate: $(cat "$T/nocert.err")"
rc=$(backup intruder --tls-ca "$T/ca.pem" --tls-cert "$T/intruder.pem" --tls-key "$T/intruder.key")
[ "$rc" = 9 ] || fail "foreign client certificate: exit $rc, want 9: $(cat "$T/intruder.err")"
rc=$(backup distrust --tls-ca "$T/rogue.pem" --tls-cert "$T/client.pem" --tls-key "$T/client.key")
[ "$rc" != 0 ] || fail "a server of an untrusted CA was used"
grep -q "certificate verify failed" "$T/distrust.err" || fail "untrusted: $(cat "$T/distrust.err")"
rc=$(backup wrongname "${CLIENT[@]}" --tls-server-name db9.example)
[ "$rc" != 0 ] || fail "a server certificate of another name was accepted"
grep -q "hostname mismatch\|certificate verify failed" "$T/wrongname.err" ||
    fail "wrong name: $(cat "$T/wrongname.err")"
wait_for 60 grep -q "TLS handshake failed" "$T/serve.log" || fail "handshake failures not logged"
for n in plain nocert intruder distrust wrongname; do
    [ ! -f "$T/store/$n/MANIFEST" ] || fail "$n left a complete backup"
done
echo "PASS: plain, certificate-less, foreign, distrusting and misnamed clients refused"

# 4. --tls-allow-plain: plain clients (influxd speaks no TLS) and TLS ones side by side.
kill "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
start_serve "$T/data" --tls-cert "$T/server.pem" --tls-key "$T/server.key" --tls-allow-plain
[ "$(backup mixed-plain)" = 0 ] || fail "plain beside TLS: $(cat "$T/mixed-plain.err")"
[ "$(backup mixed-tls --tls-ca "$T/ca.pem")" = 0 ] || fail "TLS beside plain: $(cat "$T/mixed-tls.err")"
echo "PASS: --tls-allow-plain serves both"
