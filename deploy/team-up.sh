#!/usr/bin/env bash
# The team setup on one machine, for CI and for a developer: a throwaway PostgreSQL cluster
# (loopback only) and an MLflow tracking server on it, with basic-auth, protected @production
# (the unlearnops-auth app) and proxied artifacts on local disk. Stop it with team-down.sh.
#
#   bash deploy/team-up.sh [--install] STATE_DIR      # STATE_DIR must not exist yet, or be empty
#   source STATE_DIR/team.env                           # MLFLOW_TRACKING_URI for this shell
#   bash deploy/team-down.sh STATE_DIR                  # stops both, removes STATE_DIR
#
# --install   apt-get install PostgreSQL if it is missing (root only; what .ci/run does)
#
# Environment:
#   UNLEARNOPS_TEAM_PYTHON   the interpreter with mlflow[auth], psycopg2 and unlearnops-mlflow-auth
#                            (default: .venv/bin/python in the repo root)
#   UNLEARNOPS_TEAM_USERS    engineer and release-manager accounts to create, as NAME:ROLE words
#                            (default: "alice:engineer bob:engineer rita:release-manager")
#   UNLEARNOPS_TEAM_WORKERS  MLflow server workers (default 2: these machines have 2 cores)
#
# It writes STATE_DIR/team.json (addresses, user names, where each secret is) and
# STATE_DIR/secrets/ (0700: generated passwords, pgpass files, the Flask secret key).
# Nothing is written outside STATE_DIR, no port but the two loopback ones is opened, and a
# failure half-way stops whatever was started.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
install=0
if [ "${1:-}" = "--install" ]; then install=1; shift; fi
state="${1:?usage: team-up.sh [--install] STATE_DIR}"
python="${UNLEARNOPS_TEAM_PYTHON:-$repo/.venv/bin/python}"
users="${UNLEARNOPS_TEAM_USERS:-alice:engineer bob:engineer rita:release-manager}"
workers="${UNLEARNOPS_TEAM_WORKERS:-2}"
mlflow_version="3.17.2"   # the same as pyproject.toml and deploy/docker-compose.yml

say() { echo "team-up [${SECONDS}s]: $*" >&2; }
fail() { say "error: $*"; exit 1; }

# ---- PostgreSQL binaries ------------------------------------------------------------------------
find_pg_bin() {
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}
pg_bin="$(find_pg_bin)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  [ "$install" = 1 ] || fail "PostgreSQL is not installed; install Debian's 'postgresql' package or rerun with --install (as root)"
  [ "$(id -u)" = 0 ] || fail "--install needs root (apt-get)"
  say "installing PostgreSQL (apt-get install postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  pg_bin="$(find_pg_bin)"
  [ -x "$pg_bin/initdb" ] || fail "apt-get installed postgresql but no initdb was found under /usr/lib/postgresql"
fi

[ -x "$python" ] || fail "$python: not found; set UNLEARNOPS_TEAM_PYTHON to the venv with mlflow[auth]==$mlflow_version"
"$python" - "$mlflow_version" <<'EOF' || fail "the interpreter lacks the server side; pip install -e '.[team]' ./deploy/mlflow-auth"
import sys
from importlib.metadata import version
import flask_wtf, psycopg, unlearnops_mlflow_auth  # noqa: F401  (basic-auth, the driver, the app)
assert version("mlflow") == sys.argv[1], f"mlflow {version('mlflow')} is installed, the team setup pins {sys.argv[1]}"
EOF

# ---- the state directory ------------------------------------------------------------------------
if [ -e "$state" ] && [ -n "$(ls -A "$state" 2>/dev/null)" ]; then
  fail "$state exists and is not empty; give a new directory (team-down.sh removes an old one)"
fi
mkdir -p "$state"
state="$(cd "$state" && pwd)"
trap 'status=$?; if [ $status -ne 0 ]; then say "failed; stopping what was started"; bash "$here/team-down.sh" "$state" >/dev/null 2>&1 || true; fi' EXIT
chmod 0711 "$state"   # the postgres user must reach its data dir; nothing here is listable
install -d -m 0700 "$state/secrets"
mkdir -p "$state/mlflow/artifacts"

# PostgreSQL refuses to run as root: when root, the cluster belongs to the `postgres` account
# that Debian's package creates.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || fail "running as root, but there is no 'postgres' account to own the cluster"
  as_pg=(runuser -u postgres --)
fi
install -d -m 0700 "$state/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$state/pg"

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { "$python" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
pg_port="$(free_port)"
mlflow_port="$(free_port)"
while [ "$mlflow_port" = "$pg_port" ]; do mlflow_port="$(free_port)"; done

umask 077
for account in mlflow_db unlearnops_db admin flask_key; do secret >"$state/secrets/$account.password"; done
for entry in $users; do secret >"$state/secrets/${entry%%:*}.password"; done
# libpq reads passwords from a pgpass file, so no password is on a command line or in a URI.
echo "127.0.0.1:$pg_port:*:mlflow:$(cat "$state/secrets/mlflow_db.password")" >"$state/secrets/mlflow.pgpass"
echo "127.0.0.1:$pg_port:*:unlearnops:$(cat "$state/secrets/unlearnops_db.password")" >"$state/secrets/unlearnops.pgpass"
umask 022

# ---- PostgreSQL ---------------------------------------------------------------------------------
say "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"
"${as_pg[@]}" "$pg_bin/initdb" -D "$state/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --encoding=UTF8 --locale=C.UTF-8 >"$state/pg/initdb.log" 2>&1 || { cat "$state/pg/initdb.log" >&2; fail "initdb failed"; }
"${as_pg[@]}" mkdir -m 0700 "$state/pg/run"
# Loopback TCP with passwords (scram) for every client; the socket is the cluster owner's only.
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$state/pg/data" -l "$state/pg/postgres.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$state/pg/run" >/dev/null \
  || { tail -20 "$state/pg/postgres.log" >&2; fail "PostgreSQL did not start"; }
echo "$pg_bin" >"$state/pg/bin"

# psql reads the new roles' passwords from its environment (\getenv), not from argv.
MLFLOW_DB_PASSWORD="$(cat "$state/secrets/mlflow_db.password")" \
UNLEARNOPS_DB_PASSWORD="$(cat "$state/secrets/unlearnops_db.password")" \
  "${as_pg[@]}" "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$state/pg/run" -p "$pg_port" -U postgres -d postgres \
  -f "$here/postgres/10-team-roles.sql" -f "$here/postgres/20-audit.sql" >/dev/null
say "PostgreSQL ready: roles, databases, the append-only audit table"

# ---- MLflow tracking server ---------------------------------------------------------------------
say "MLflow $mlflow_version on http://127.0.0.1:$mlflow_port (app unlearnops-auth, $workers workers)"
# --timeout-worker-healthcheck: uvicorn kills a worker that misses a 5 s ping, and a worker
# importing MLflow on a loaded 2-core machine misses it (measured: workers killed in a loop).
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: no background job runner (GenAI scorer jobs), which
# unlearnops does not use. setsid: the server and its uvicorn workers get a process group of their own, which
# team-down.sh ends by its id.
PGHOST=127.0.0.1 PGPORT="$pg_port" PGUSER=mlflow PGPASSFILE="$state/secrets/mlflow.pgpass" \
MLFLOW_AUTH_CONFIG_PATH="$here/mlflow-auth/basic_auth.ini" \
MLFLOW_AUTH_ADMIN_PASSWORD="$(cat "$state/secrets/admin.password")" \
MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$state/secrets/flask_key.password")" \
MLFLOW_ENABLE_TELEMETRY=false \
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
setsid "$python" -m mlflow server \
  --host 127.0.0.1 --port "$mlflow_port" --workers "$workers" \
  --backend-store-uri postgresql:///mlflow \
  --artifacts-destination "$state/mlflow/artifacts" --serve-artifacts \
  --app-name unlearnops-auth \
  --uvicorn-opts "--timeout-worker-healthcheck 120" \
  >"$state/mlflow/server.log" 2>&1 </dev/null &
echo $! >"$state/mlflow/server.pid"

"$python" - "http://127.0.0.1:$mlflow_port/health" "$state/mlflow/server.pid" <<'EOF' || { tail -30 "$state/mlflow/server.log" >&2; fail "the MLflow server did not come up"; }
import os, sys, time, urllib.request
url, pid_file = sys.argv[1], sys.argv[2]
pid = int(open(pid_file).read())
deadline = time.monotonic() + 600  # the first start migrates two empty databases; a loaded machine is slow
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("server exited")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("timed out")
EOF

say "MLflow answers /health"

# ---- accounts, and what the tests and a developer need to find them --------------------------------
"$python" "$here/team_users.py" --state "$state" --tracking-uri "http://127.0.0.1:$mlflow_port" \
  --mlflow-version "$mlflow_version" --postgres-port "$pg_port" --users $users

cat >"$state/team.env" <<EOF
# source this file; then set MLFLOW_TRACKING_USERNAME/PASSWORD (or ~/.mlflow/credentials) for one
# user (their passwords are in $state/secrets/)
export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port
export UNLEARNOPS_AUDIT_URL='postgresql://unlearnops@127.0.0.1:$pg_port/unlearnops?log=team'
export PGPASSFILE=$state/secrets/unlearnops.pgpass
export UNLEARNOPS_AUDIT_KEY=$state/secrets/audit/audit-signing-key.pem
export UNLEARNOPS_AUDIT_WITNESS=$state/witness
export UNLEARNOPS_TEAM_SERVER=$state
EOF
trap - EXIT
say "up: source $state/team.env; stop with: bash deploy/team-down.sh $state"
