#!/usr/bin/env bash
# Install what cairn needs on Debian bookworm. Idempotent; run as root (or with sudo).
#   scripts/deps.sh build   compiler, cmake and the -dev libraries
#   scripts/deps.sh test    build + the real peers the tests start (influxd, PostgreSQL,
#                           awscli, s3rver from npm, clang for libFuzzer/sanitizers)
#   scripts/deps.sh bench   build + the peers the benchmark compares against
set -euo pipefail
what=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)

build_pkgs=(build-essential cmake ninja-build pkg-config
    libssl-dev zlib1g-dev libzstd-dev libdeflate-dev libcurl4-openssl-dev libjansson-dev
    libsqlite3-dev libpq-dev libmicrohttpd-dev tzdata help2man scdoc
    libargon2-dev) # scdoc: the man pages; libargon2: Argon2id keys (cairn init --kdf argon2id)
test_pkgs=(python3 clang clang-format libclang-rt-14-dev influxdb influxdb-client postgresql awscli
    curl xxd procps iproute2 valgrind faketime openssl zstd)
# Node.js for s3rver: Debian's packages unless a node with npm is already installed (some
# images ship NodeSource's nodejs, which bundles npm and conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || test_pkgs+=(nodejs npm)
# tests/cli/test_encryption.py decrypts a repository with an independent Python decryptor.
test_pkgs+=(python3-cryptography)
# cairnd's sd_notify (optional at build; tests/sched/test_systemd_notify.py needs it) and
# tests/sched/test_unit.sh's `systemd-analyze verify/security` of dist/cairnd.service.
test_pkgs+=(libsystemd-dev systemd)
# ... and its Argon2id password keys with python3-argon2.
test_pkgs+=(python3-argon2)
# The Redis source tests (tests/source/test_redis*.py) start a real redis-server and check
# its RDBs with redis-check-rdb.
test_pkgs+=(redis-server redis-tools)
# The etcd source tests (tests/source/test_etcd*.py) start a real etcd 3.4 and restore its
# snapshots with etcdctl.
test_pkgs+=(etcd-server etcd-client)
# tests/cli/test_progress_tty.py reads the progress line of backup and restore from a tmux pane.
test_pkgs+=(tmux)
# The monitoring tests (tests/metrics/test_alert_rules.sh, test_prometheus_scrape.py) run
# promtool on dist/prometheus and a real Prometheus scraping cairnd.
test_pkgs+=(prometheus)
# tests/storage/test_tree_fidelity.py sets a POSIX ACL (setfacl, as root) to check it survives.
test_pkgs+=(acl)
# tests/cli/test_json_schema.py validates every --json output against tests/cli/schema.
test_pkgs+=(python3-jsonschema)
# tests/storage/test_skip.py proves with strace(1) that unchanged files are never opened.
test_pkgs+=(strace)
bench_pkgs=(hyperfine restic borgbackup zstd pigz isal time)

pkgs=("${build_pkgs[@]}")
case "$what" in
build) ;;
test) pkgs+=("${test_pkgs[@]}") ;;
bench) pkgs+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
*) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$what" != build ]; then
    # s3rver: a real S3-speaking server for the S3 driver tests, kept inside the tree.
    if [ ! -x "$here/.cache/node/node_modules/.bin/s3rver" ]; then
        echo "deps: installing s3rver (npm)"
        mkdir -p "$here/.cache/node"
        (cd "$here/.cache/node" && npm install --silent --no-audit --no-fund s3rver@3 >/dev/null)
    fi
    # s3rver 3.7.1 (the last release) dies when a PUT races a DELETE that empties the key's
    # directory: the object's write stream fails to open (ENOENT) with no 'error' listener, an
    # uncaught exception (seen with many processes taking and dropping lock objects under
    # .locks/ at once, reliability/test_lock_race.py). Real S3 answers such a race; here the
    # PUT now fails with a 500, which the client retries. docs/TESTING.md says why.
    fsjs="$here/.cache/node/node_modules/s3rver/lib/stores/filesystem.js"
    if [ -f "$fsjs" ] && grep -q 'const writeStream = fs.createWriteStream(objectPath);' "$fsjs"; then
        sed -i "s|const writeStream = fs.createWriteStream(objectPath);|const writeStream = fs.createWriteStream(objectPath).on('error', reject); // patched by cairn scripts/deps.sh|" "$fsjs"
    fi
    # s3rver also answers a PUT (and an UploadPart) before its bytes are in the file: it
    # resolves when the request body has been read, while the file stream still writes (the
    # Buffer case at once), so a CopyObject right after (cairn's atomic PUT: '<key>.tmp', then
    # a copy) can copy a partial file. Seen once at load 10: an index object a completed
    # prune had just written read as malformed (storage/test_dedup_crash.py, repack part; not
    # reproduced on demand). Real S3 is read-after-write consistent; here the answer now
    # waits for the file stream's 'finish'.
    if [ -f "$fsjs" ] && grep -q "^ *resolve(\[object.content.length, md5Context.digest('hex')\]);" "$fsjs"; then
        sed -i -e "s|^\( *\)resolve(\[object.content.length, md5Context.digest('hex')\]);|\1writeStream.on('finish', () => resolve([object.content.length, md5Context.digest('hex')])); // patched by cairn scripts/deps.sh|" \
            -e "s|^\( *\)\.on('finish', () => resolve(\[totalLength, md5Context.digest('hex')\]))|\1// resolved when the file is written: patched by cairn scripts/deps.sh|" \
            -e "s|^\( *\)resolve(\[totalLength, md5Context.digest('hex')\]);|\1// resolved when the file is written: patched by cairn scripts/deps.sh|" \
            -e "s|^\( *\)\.pipe(writeStream);|\1.pipe(writeStream)\n\1.on('finish', () => resolve([totalLength, md5Context.digest('hex')]));|" "$fsjs"
    fi
fi
echo "deps: $what dependencies present"
