#!/usr/bin/env bash
# GPU check for issue 6: one prepared script, under 5 minutes on one H100/H200.
#
# Here (CPU machine, once):   .venv/bin/python perf/gpu_check.py --prepare    # -> perf/out/gpu_assets (~4 MB)
# There (the device tool):    run(command="bash perf/gpu_check.sh", carry=["perf/out/gpu_assets"], timeout_s=420)
# It uses the GPU machine's own python3 (torch, transformers, safetensors, tqdm are installed there);
# the .venv does not travel. Results: perf/out/gpu_check.json and gpu_check.log, copied to $OUT.
# What it measures: see the docstring of perf/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"    # the GPU machine has no editable install
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
OUTDIR="${OUT:-perf/out}"
mkdir -p "$OUTDIR" perf/out
PY=python3
[ -x .venv/bin/python ] && [ -z "${OUT:-}" ] && PY=.venv/bin/python
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  $PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$OUTDIR/gpu_check.log"
timeout 290 $PY perf/gpu_check.py "$@" 2>&1 | tee -a "$OUTDIR/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "exit code $rc" | tee -a "$OUTDIR/gpu_check.log"
exit "$rc"
