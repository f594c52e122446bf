#!/usr/bin/env bash
# One command for a local Prefect installation: a server and a process worker bound to
# 127.0.0.1, with every deployment registered (deploy/deployments.py).
#
#   make serve            (or deploy/serve.sh)   UI at http://127.0.0.1:4200
#
# Then: prefect deployment run self-training/demo --param teacher_iters=300
#       or the Run button of a deployment in the UI. Ctrl-C stops worker and server.
# SELFTRAIN_PREFECT_PORT (4200), PREFECT_HOME (runs/prefect) and SELFTRAIN_PREFECT_DB (a
# PREFECT_API_DATABASE_CONNECTION_URL, e.g. postgresql+asyncpg://... for the Postgres
# option; SQLite under PREFECT_HOME by default) change where it lives.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${SELFTRAIN_PREFECT_PORT:-4200}"
export PREFECT_HOME="${PREFECT_HOME:-$PWD/runs/prefect}"
export PREFECT_API_URL="http://127.0.0.1:$port/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# The UI asks the server where its API is: without these it names the default port 4200.
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$port" PREFECT_UI_API_URL="$PREFECT_API_URL"
if [ -n "${SELFTRAIN_PREFECT_DB:-}" ]; then export PREFECT_API_DATABASE_CONNECTION_URL="$SELFTRAIN_PREFECT_DB"; fi
mkdir -p "$PREFECT_HOME"
py=.venv/bin/python

server_pid=""
if curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; then
  echo "a Prefect server already answers on $PREFECT_API_URL: using it"
else
  echo "starting the Prefect server on 127.0.0.1:$port (log: $PREFECT_HOME/server.log)"
  "$py" -m prefect server start --host 127.0.0.1 --port "$port" >>"$PREFECT_HOME/server.log" 2>&1 &
  server_pid=$!
  trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null' EXIT
  for _ in $(seq 1 240); do
    curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "the server exited; see $PREFECT_HOME/server.log" >&2; exit 1; }
    sleep 0.5
  done
fi
"$py" -m deploy.deployments register
echo "UI: http://127.0.0.1:$port  -  starting a process worker on pool selftrain-process (Ctrl-C stops)"
"$py" -m prefect worker start --pool selftrain-process --name "local-$(hostname)"
