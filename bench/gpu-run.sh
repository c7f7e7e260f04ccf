#!/usr/bin/env bash
# The GPU run of docs/performance.md, as one script for a lent GPU machine (no network there; one H100/H200).
#
#   bench/gpu-run.sh --prepare       here (network): the wheels of bench/gpu-wheels.txt into .gpu-wheels/ (cp312, 13 MB)
#   bench/gpu-run.sh --check         here: the import smoke test in a clean Python 3.12 venv holding the GPU image's
#                                    versions (.gpu-check/, made once: torch 2.11 with its CUDA libraries, ~5 GB)
#   OUT=<dir> bash bench/gpu-run.sh  there: carry .gpu-wheels; the results file and logs land in $OUT
#                                    (on a machine without nvidia-smi: a rehearsal on the tiny architecture;
#                                    PYTHON, MODES, STEPS, BUDGET_S and TIMEOUT_S change what it runs)
#   PHASE=families OUT=<dir> bash bench/gpu-run.sh
#                                    there: the same install and import check, then bench/families.py instead: every
#                                    video family's plain then compiled pipeline, 1 timed step each (FAMILY_STEPS),
#                                    no new family after FAMILY_BUDGET_S (450) s, inside TIMEOUT_S (560) s; writes
#                                    $OUT/<date>-<card>-families.json and families.log. FAMILIES picks (a,b);
#                                    FAMILIES=chronoedit-14b,chronoedit-14b-distill,chronoedit-14b-think: ChronoEdit's
#                                    three profiles alone (last in the default order, so a spent budget can skip them).
# A 15-minute lease holds the default run (~570 s) and then a shorter families run
# (PHASE=families FAMILY_BUDGET_S=150 TIMEOUT_S=240), or one families run alone.
#
# There, in order, well inside one 10-minute command: the wheels installed (--no-index --no-deps), every import
# checked (bench/gpu_imports.py: exit 3 before any GPU time is spent on a run that would die), then
# bench/generate.py: the card's ceilings, then the modes in the order of their worth, 5 timed steps each, no new
# mode after BUDGET_S (400) seconds, every row printed and the JSON rewritten as it is measured (a run cut short
# keeps what it got). With several GPUs, the split layouts follow while time is left. A rerun in what is left of
# a 15-minute lease: BUDGET_S=150 TIMEOUT_S=240 OUT=<dir> bash bench/gpu-run.sh. Then, here:
#   cp $OUT/*-*.json bench/results/ && .venv/bin/python bench/perf_table.py   # the table in docs/performance.md
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
# The GPU image's versions of what f2f and the benchmark use (device KINDS.md, read 2026-11): --check installs these.
IMAGE_PACKAGES=(torch==2.11.0 transformers==5.17.0 numpy==2.5.2 pillow pyyaml safetensors==0.8.0 huggingface_hub==1.33.0
  tokenizers==0.23.2 sentencepiece==0.2.2 accelerate==1.15.0 requests regex filelock packaging)

install_wheels() {  # PYTHON TARGET
  "$1" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$WHEELS"/*.whl
}

case "${1:-}" in
  --prepare)
    rm -rf "$WHEELS"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" -r bench/gpu-wheels.txt
    ls "$WHEELS"
    exit 0
    ;;
  --check)
    py=${PYTHON312:-$(command -v python3.12 || ls /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}
    [[ -x "$py" ]] || { echo "--check needs Python 3.12 (set PYTHON312)" >&2; exit 2; }
    if [[ ! -x .gpu-check/bin/python ]]; then
      "$py" -m venv .gpu-check
      .gpu-check/bin/python -m pip install -q "${IMAGE_PACKAGES[@]}"
    fi
    site=$(mktemp -d)
    trap 'rm -rf "$site"' EXIT
    install_wheels .gpu-check/bin/python "$site"
    PYTHONPATH="$site:$PWD" .gpu-check/bin/python bench/gpu_imports.py "$site"
    PYTHONPATH="$site:$PWD" .gpu-check/bin/python bench/generate.py --help >/dev/null
    PYTHONPATH="$site:$PWD" .gpu-check/bin/python bench/families.py --help >/dev/null
    echo "gpu run: ready ($(ls "$WHEELS" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1))"
    exit 0
    ;;
esac

OUT=${OUT:-out/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TORCHINDUCTOR_CACHE_DIR=/tmp/f2f-inductor
site=/tmp/f2f-site
export PYTHONPATH="$site:$PWD"
if command -v nvidia-smi >/dev/null; then
  install_wheels "$PYTHON" "$site"
  nvidia-smi | tee "$OUT/machine.txt"
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr 'A-Z ' 'a-z-')
  size=() check=("$site")
else  # a rehearsal of the steps after the install on a CPU (tests/models/test_bench_generate.py runs it), tiny
  echo "no GPU here: the same steps on the tiny architecture" | tee "$OUT/machine.txt"
  card=cpu size=(--tiny) check=(--rehearsal)
fi
"$PYTHON" bench/gpu_imports.py "${check[@]}" 2>&1 | tee -a "$OUT/machine.txt"
if [[ "${PHASE:-}" == families ]]; then
  families=(${FAMILIES:+--families "$FAMILIES"})
  [[ $card == cpu ]] && families+=(--modes plain)  # the rehearsal: compiling every tiny family takes minutes on a CPU
  timeout "${TIMEOUT_S:-560}" "$PYTHON" bench/families.py "${size[@]}" "${families[@]}" --steps "${FAMILY_STEPS:-1}" \
    --budget-s "${FAMILY_BUDGET_S:-450}" --json "$OUT/$(date +%F)-$card-families.json" 2>&1 | tee "$OUT/families.log" \
    || echo "families.py stopped early; the results file keeps what it measured"
  exit 0
fi
result="$OUT/$(date +%F)-$card.json"
modes=(${MODES:+--modes "$MODES"})
timeout "${TIMEOUT_S:-500}" "$PYTHON" bench/generate.py "${size[@]}" "${modes[@]}" --steps "${STEPS:-5}" \
  --budget-s "${BUDGET_S:-400}" --json "$result" 2>&1 | tee "$OUT/single.log" \
  || echo "generate.py stopped early; $result keeps what it measured"
gpus=$( (nvidia-smi -L 2>/dev/null || true) | wc -l)
for layout in 2x1 1x2 2x2 1x4; do
  cfg=${layout%x*} ulysses=${layout#*x}
  left=$((570 - SECONDS))  # the whole script stays inside one 10-minute command
  ((cfg * ulysses <= gpus && left > 120)) || continue
  timeout "$left" torchrun --standalone --nproc-per-node $((cfg * ulysses)) bench/generate.py --steps "${STEPS:-5}" \
    --no-ceilings --modes plain,compiled --parallel "$layout" --json "$OUT/$(date +%F)-$card-$layout.json" 2>&1 \
    | tee "$OUT/parallel-$layout.log" || true
done
