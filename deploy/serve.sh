#!/usr/bin/env bash
# One command for a local Prefect installation: a server and a process worker bound to
# 127.0.0.1, with every deployment registered (deploy/deployments.py).
#
#   make serve            (or deploy/serve.sh)   UI at http://127.0.0.1:4200
#
# Then, in another shell: source deploy/env.sh; prefect deployment run self-training/demo
#       or the Run button of a deployment in the UI. One Ctrl-C stops worker and server.
# SELFTRAIN_PREFECT_PORT (4200), PREFECT_HOME (runs/prefect) and SELFTRAIN_PREFECT_DB (a
# PREFECT_API_DATABASE_CONNECTION_URL, e.g. postgresql+asyncpg://... for the Postgres
# option; SQLite under PREFECT_HOME by default) change where it lives.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${SELFTRAIN_PREFECT_PORT:-4200}"
source deploy/env.sh   # PATH, PREFECT_HOME (runs/prefect), PREFECT_API_URL for this port
# The UI asks the server where its API is: without these it names the default port 4200.
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$port" PREFECT_UI_API_URL="$PREFECT_API_URL"
if [ -n "${SELFTRAIN_PREFECT_DB:-}" ]; then export PREFECT_API_DATABASE_CONNECTION_URL="$SELFTRAIN_PREFECT_DB"; fi
mkdir -p "$PREFECT_HOME"
py=.venv/bin/python

server_pid="" worker_pid=""
# Server and worker run in sessions of their own (setsid), so a Ctrl-C reaches only this script,
# which stops the worker first (it would otherwise retry the gone server for minutes), then the
# server; each gets 10 s after SIGTERM before it is killed.
stop_one() {  # pid: TERM the process group, wait up to 10 s, then KILL what is left
  local pid="$1" i
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for i in $(seq 1 20); do kill -0 -- "-$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
stop() {
  trap - INT TERM EXIT
  echo "stopping the worker and the server"
  stop_one "$worker_pid"
  stop_one "$server_pid"
  exit 0
}
trap stop INT TERM EXIT
if curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; then
  echo "a Prefect server already answers on $PREFECT_API_URL: using it"
else
  echo "starting the Prefect server on 127.0.0.1:$port (log: $PREFECT_HOME/server.log)"
  setsid "$py" -m prefect server start --host 127.0.0.1 --port "$port" >>"$PREFECT_HOME/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 240); do
    curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "the server exited; see $PREFECT_HOME/server.log" >&2; exit 1; }
    sleep 0.5
  done
fi
"$py" -m deploy.deployments register
setsid "$py" -m prefect worker start --pool selftrain-process --name "local-$(hostname)" >>"$PREFECT_HOME/worker.log" 2>&1 &
worker_pid=$!
cat <<MSG

UI:      http://127.0.0.1:$port
worker:  pool selftrain-process (log: $PREFECT_HOME/worker.log)
In another shell, from $PWD:
  source deploy/env.sh
  prefect deployment ls
  prefect deployment run self-training/demo --param teacher_iters=60 --param student_iters=30 --param score_threshold=0.0 --watch
  prefect flow-run logs <flow run id>     (one line per stage, training progress; also in $PREFECT_HOME/worker.log)
Ctrl-C here stops the worker and the server.
MSG
wait "$worker_pid"
