#!/usr/bin/env bash
# Two `cairnd run` on one SQLite state: the second refuses to start (exit 10), naming the
# state and the owner's pid; see state_lock_lib.sh.
source "$(dirname "$0")/cairnd_lib.sh"
source "$(dirname "$0")/state_lock_lib.sh"
STATE_URL="sqlite:$T/state/cairnd.db"
STATE_KIND=sqlite
state_lock_main
