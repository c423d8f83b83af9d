#!/usr/bin/env bash
# Two `cairnd run` on one PostgreSQL state: the second refuses to start (exit 10): the first
# holds a session advisory lock; see state_lock_lib.sh.
source "$(dirname "$0")/cairnd_lib.sh"
source "$(dirname "$0")/pg_lib.sh"
source "$(dirname "$0")/state_lock_lib.sh"
extra_cleanup() { pg_stop; }
pg_start
STATE_URL=$PG_URL
STATE_KIND=postgresql
state_lock_main
