#!/usr/bin/env bash
# The GPU run of docs/performance.md, as one script for a lent GPU machine (no network there).
#
# Prepare here (network):  bench/gpu-run.sh --prepare     # diffusers' wheel into .gpu-wheels/ (pure Python, ~4 MB)
# Run there:               OUT=<dir> bash bench/gpu-run.sh  # carry .gpu-wheels; logs and JSON land in $OUT
#
# One GPU: every speed-up mode at the paper's settings (720x480, 49 frames), 10 timed steps per mode (the table
# also gives the 50-step video from them). With several GPUs, also the split replica's layouts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--prepare" ]]; then
  python3 -m pip download --no-deps --only-binary :all: diffusers==0.42.1 -d .gpu-wheels
  exit 0
fi
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target .gpu-site .gpu-wheels/*.whl
export PYTHONPATH="$PWD/.gpu-site:$PWD" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{ nvidia-smi; python3 -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"; } \
  | tee "$OUT/machine.txt"
STEPS=${STEPS:-10}
timeout "${TIMEOUT_S:-480}" python3 bench/generate.py --steps "$STEPS" --json "$OUT/single.json" 2>&1 | tee "$OUT/single.log"
gpus=$(nvidia-smi -L | wc -l)
for layout in 2x1 1x2 2x2 1x4; do
  cfg=${layout%x*} ulysses=${layout#*x}
  ((cfg * ulysses <= gpus)) || continue
  timeout 300 torchrun --standalone --nproc-per-node $((cfg * ulysses)) bench/generate.py --steps "$STEPS" \
    --modes plain,compiled --parallel "$layout" --json "$OUT/parallel-$layout.json" 2>&1 | tee "$OUT/parallel-$layout.log"
done
