#!/usr/bin/env bash
# Stops what team-up.sh started in STATE_DIR (the MLflow server's process group, then the
# PostgreSQL cluster) and removes STATE_DIR: no process, port or file is left behind.
#   bash deploy/team-down.sh STATE_DIR
# Safe to run twice, or on a half-started STATE_DIR.
set -uo pipefail

state="${1:?usage: team-down.sh STATE_DIR}"
[ -d "$state" ] || exit 0
state="$(cd "$state" && pwd)"

# The MLflow server was started with setsid: its pid is its process group's id, and the
# uvicorn workers are in that group.
if [ -f "$state/mlflow/server.pid" ]; then
  group="$(cat "$state/mlflow/server.pid")"
  if kill -0 -- "-$group" 2>/dev/null; then
    kill -TERM -- "-$group" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 -- "-$group" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$group" 2>/dev/null
  fi
fi

if [ -f "$state/pg/bin" ] && [ -f "$state/pg/data/postmaster.pid" ]; then
  pg_bin="$(cat "$state/pg/bin")"
  as_pg=()
  [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$state/pg/data" -m fast -w -t 60 stop >/dev/null 2>&1 \
    || "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$state/pg/data" -m immediate -w stop >/dev/null 2>&1
fi

rm -rf -- "$state"
