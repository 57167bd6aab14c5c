#!/usr/bin/env bash
# `make gpu-check` on a GPU machine: the interpreter that has torch, timm and CuPy (GPU_PY,
# default python3) runs tests/perf/gpu_check.py on the workspace sources; what it lacks is
# installed from .gpu-kit/ (`make gpu-kit`) into GPU_SITE (outside .gpu-kit, so the kit the
# device tool carries stays ~52 MiB), never from the network.
# Arguments go to gpu_check.py (--cpu for the dry mode, --out PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${GPU_PY:-python3}"
SITE="${GPU_SITE:-${TMPDIR:-/tmp}/histoprompt-gpu-site}"
if [ -d .gpu-kit/wheels ]; then
  "$PY" -m tests.perf.gpu_kit --install "$SITE"
fi
export PYTHONPATH="$SITE:$PWD/core/src:$PWD/wsi/src:$PWD/export/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m tests.perf.gpu_check "$@"
