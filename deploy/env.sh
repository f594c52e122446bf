# Point this shell at the local installation that `make serve` runs:
#
#   source deploy/env.sh
#   prefect deployment ls
#   prefect deployment run self-training/demo --param teacher_iters=60 --param student_iters=30 \
#       --param score_threshold=0.0 --watch
#
# Puts the project's virtual environment first on PATH (so `prefect`, `python` and `selftrain`
# are the locked ones) and sets PREFECT_API_URL to the server of `make serve` (port
# SELFTRAIN_PREFECT_PORT, default 4200). Without PREFECT_API_URL the prefect CLI silently starts
# a temporary server of its own, which knows no deployments.
_selftrain_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export PATH="$_selftrain_root/.venv/bin:$PATH"
export PREFECT_HOME="${PREFECT_HOME:-$_selftrain_root/runs/prefect}"
export PREFECT_API_URL="http://127.0.0.1:${SELFTRAIN_PREFECT_PORT:-4200}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
unset _selftrain_root
