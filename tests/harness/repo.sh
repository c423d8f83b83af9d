# Repositories in shell tests (sourced). A location must be a repository before its first
# backup (cairn backup, cairn put and cairnd refuse a fresh one: docs/FORMAT.md "Repository").
#   init_location URL [OPTIONS...]  cairn init URL: plain (--no-encryption) without OPTIONS,
#                                   else with them (--key-file FILE, --password-file FILE ...)
init_location() {
    local url=$1
    shift
    [ $# -gt 0 ] || set -- --no-encryption
    "${CAIRN_BIN:?CAIRN_BIN not set}/cairn" init "$@" "$url" >/dev/null ||
        { echo "FAIL: cairn init $* $url" >&2; exit 1; }
}
