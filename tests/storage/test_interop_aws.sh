#!/usr/bin/env bash
# Interop with the Debian AWS CLI against a real s3rver: objects cairn writes through S3 are
# listed and downloaded intact by `aws s3`, and a backup directory uploaded with
# `aws s3 cp --recursive` is listed, verified and restored by cairn.
set -euo pipefail
C="$CAIRN_BIN/cairn"
AWS=/usr/bin/aws # a pip `aws` may shadow the Debian one on PATH
S3RVER=${CAIRN_S3RVER:-$CAIRN_SOURCE_DIR/.cache/node/node_modules/.bin/s3rver}
source "$(dirname "$0")/../harness/skips.sh"
[ -x "$AWS" ] || missing "Debian awscli not installed at $AWS (scripts/deps.sh test)"
[ -x "$S3RVER" ] || missing "s3rver not installed at $S3RVER (scripts/deps.sh test)"
command -v node >/dev/null || missing "node not installed (scripts/deps.sh test)"

tmp=$(mktemp -d /tmp/cairn-interop-XXXXXX)
spid=
cleanup() {
    [ -z "$spid" ] || { kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true; }
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/s3data"
: >"$tmp/s3rver.log" # exists before the poll below reads it (the redirect runs in the child)
# s3rver's continuation tokens need DES from OpenSSL's legacy provider on Node >= 17.
NODE_OPTIONS=--openssl-legacy-provider "$S3RVER" -d "$tmp/s3data" -a 127.0.0.1 -p 0 \
    --configure-bucket interop >"$tmp/s3rver.log" 2>&1 &
spid=$!
port=
end=$((SECONDS + 120)) # a deadline for a hang, generous on a loaded machine
while [ $SECONDS -lt $end ]; do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/s3rver.log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$spid" 2>/dev/null || missing "s3rver exited at startup: $(cat "$tmp/s3rver.log")"
    sleep 0.1
done
[ -n "$port" ] || missing "s3rver did not start"
endpoint="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE="$tmp/awsconfig" AWS_SHARED_CREDENTIALS_FILE="$tmp/awscreds"
unset AWS_PROFILE AWS_SESSION_TOKEN || true
aws() { "$AWS" --endpoint-url "$endpoint" "$@"; }
URL="s3://interop/pfx?endpoint=$endpoint&region=us-east-1&path_style=1"

mkdir -p "$tmp/src/d"
head -c $((20 * 1024 * 1024 + 7)) /dev/urandom >"$tmp/src/big.bin" # multipart (8 MiB parts)
echo "small file" >"$tmp/src/small.txt"
head -c 100000 /dev/urandom >"$tmp/src/d/mid.bin"

# 1. cairn writes, aws reads.
source "$(dirname "$0")/../harness/repo.sh"
# --no-dedup: aws reads and writes the per-file objects (fNNNNNN) of a backup directory.
init_location "$URL" --no-encryption --no-dedup
"$C" put "$URL" b1 "$tmp/src" >/dev/null
aws s3 ls --recursive s3://interop/pfx/ >"$tmp/ls.txt"
cat "$tmp/ls.txt"
for k in pfx/b1/MANIFEST pfx/b1/f000000 pfx/b1/f000001 pfx/b1/f000002 pfx/b1/tree; do
    grep -q " $k\$" "$tmp/ls.txt" || { echo "FAIL: aws s3 ls lacks $k"; exit 1; }
done
aws s3 cp --recursive --only-show-errors s3://interop/pfx/b1 "$tmp/dl"
python3 - "$tmp/dl" "$tmp/src" <<'PY'
import hashlib, json, os, subprocess, sys
dl, src = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(dl, "MANIFEST")))
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
for f in m["files"]:
    p = os.path.join(dl, f["name"])
    assert os.path.getsize(p) == f["size"], f
    assert sha(p) == f["sha256"], f
tree = subprocess.run(["zstd", "-dc", os.path.join(dl, "tree")], check=True,
                      stdout=subprocess.PIPE).stdout.decode().splitlines()
entries = [json.loads(ln) for ln in tree]
by_file = {e["file"]: e["path"] for e in entries if e["type"] == "file"}
for name, rel in by_file.items():
    assert sha(os.path.join(dl, name)) == sha(os.path.join(src, rel)), rel
print("aws downloaded %d files intact" % len(m["files"]))
PY

# 2. aws writes a backup directory made by cairn's file driver; cairn lists and verifies it.
init_location "file://$tmp/fstore" --no-encryption --no-dedup
"$C" put "file://$tmp/fstore" b2 "$tmp/src" --zstd >/dev/null
aws s3 cp --recursive --only-show-errors "$tmp/fstore/b2" s3://interop/pfx/b2
"$C" list "$URL" --json >"$tmp/list.json"
python3 - "$tmp/list.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
st = {b["name"]: b["status"] for b in d["backups"]}
assert st == {"b1": "complete", "b2": "complete"}, st
print("cairn lists", st)
PY
"$C" verify "$URL" b2
"$C" get "$URL" b2 "$tmp/restored" >/dev/null
diff -r "$tmp/src" "$tmp/restored"

# 3. A tampered object uploaded by aws is caught by cairn verify (exit code 3).
echo "tampered" >"$tmp/evil"
aws s3 cp --only-show-errors "$tmp/evil" s3://interop/pfx/b2/f000001
set +e
"$C" verify "$URL" b2 >/dev/null 2>"$tmp/verify.err"
rc=$?
set -e
[ "$rc" = 3 ] || { echo "FAIL: verify of tampered backup exited $rc"; cat "$tmp/verify.err"; exit 1; }
grep -q "f000001" "$tmp/verify.err"
"$C" rm "$URL" b1 >/dev/null
[ -z "$(aws s3 ls --recursive s3://interop/pfx/b1/)" ] || { echo "FAIL: rm left objects"; exit 1; }
echo "interop test passed"
