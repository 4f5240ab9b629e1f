#!/usr/bin/env bash
# Issue 13's GPU figures in one call on a bare CUDA machine (no Ray installed, no network):
#
#   mkdir -p .gpu && cp ../shared/gpu/site.tar.xz ../shared/gpu/with-site.sh .gpu/  # ignored:
#   the device tool needs carry=[".gpu"]
#   bash cluster/gpu-check.sh                 # from the project root; figures in $OUT
#
# Runs `jobs/benchmark.py train --device cuda` (the training stage's steady samples/s, the
# step alone, their ratio, GPU utilisation, the loop thread's phases) and `jobs/benchmark.py
# infer --device cuda` (crops/s from a feature store at TTA 4 with 1, 4 and 8 actors sharing
# the card, against the network alone), and the input benchmark (the host half on the host's
# CPU), each under its own timeout so one cannot eat the other's time. Writes setup.txt,
# input.txt, train.txt, infer.txt and summary.txt to $OUT (default /tmp/gpu-check) and prints
# the summary.
# DRY_RUN=1: the same commands on this machine's CPU at toy sizes, with PY (.venv/bin/python).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if [ "${DRY_RUN:-0}" = 1 ]; then
  RUN=("${PY:-.venv/bin/python}"); DEVICE=cpu; CAP=400
  TRAIN=(--clips 256 --epochs 2 --batch-size 32); INFER=(--clips 128 --actors 1,2)
  INPUT=(--rounds 2)
else
  RUN=(bash .gpu/with-site.sh python3); DEVICE=cuda; CAP=240
  TRAIN=(); INFER=(--actors 1,4,8); INPUT=()
  [ -f .gpu/site.tar.xz ] || { echo "gpu-check: .gpu/site.tar.xz missing (see the header)"; exit 2; }
fi
{
  date -u +"%F %T UTC"; git log --oneline -1 2>/dev/null || echo "(no git)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "${RUN[@]}" -c "import torch, sys; print('python', sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1
} > "$OUT/setup.txt"
timeout -k 10 60 "${RUN[@]}" jobs/benchmark.py input "${INPUT[@]}" > "$OUT/input.txt" 2>&1
echo "exit $?" >> "$OUT/input.txt"
timeout -k 10 "$CAP" "${RUN[@]}" jobs/benchmark.py train --device "$DEVICE" "${TRAIN[@]}" \
  > "$OUT/train.txt" 2>&1
echo "exit $?" >> "$OUT/train.txt"
timeout -k 10 "$CAP" "${RUN[@]}" jobs/benchmark.py infer --device "$DEVICE" --tta 4 \
  "${INFER[@]}" > "$OUT/infer.txt" 2>&1
echo "exit $?" >> "$OUT/infer.txt"
{
  cat "$OUT/setup.txt"
  echo "== train (targets: >= 15,000 samples/s and ratio >= 0.70)"
  grep -E "^(device|stage|network|ratio|GPU|phases|[0-9]+ clips)|exit" "$OUT/train.txt"
  echo "== infer (target: >= 20,000 crops/s at TTA 4)"
  grep -E "^(device|stage|network|ratio|GPU|actors|figure)|exit" "$OUT/infer.txt"
  echo "== the host half on this machine's CPU, one thread"
  tail -n 15 "$OUT/input.txt"
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"
