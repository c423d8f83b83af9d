#!/usr/bin/env bash
# cairnd killed (SIGKILL) and restarted after missing three runs performs exactly those three,
# with the state in the embedded SQLite store.
source "$(dirname "$0")/catchup_lib.sh"
STATE_URL="sqlite:$T/state/cairnd.db"
STATE_KIND=sqlite
catchup_main
