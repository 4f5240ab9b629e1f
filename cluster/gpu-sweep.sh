#!/usr/bin/env bash
# Issue 26's recipe sweep (fsdd-poly, 30 epochs, 3 seeds, test lwlrap of singles and pairs) on a
# lent GPU in one call, where the same sweep takes 2 vCPUs a day. Prepare on this machine:
#
#   mkdir -p .gpu && cp ../shared/gpu/site.tar.xz ../shared/gpu/with-site.sh .gpu/
#   python jobs/preprocess.py --data ../shared/data/fsdd-poly --out .gpu/poly-feat   # 11 MB
#   cp ../shared/data/fsdd-poly/test_truth.csv .gpu/poly-truth.csv
#   (fsdd-fat alike, as fat-feat / fat-truth.csv; .gpu/ is ignored: the device tool needs
#   carry=[".gpu"], 64 MiB in all)
#   bash cluster/gpu-sweep.sh                 # from the project root; figures in $OUT
#
# Each run trains with `jobs/train.py --workers 1 --gpus-per-worker 1` (its own embedded Ray;
# PARALLEL runs share the card) and is scored on the CPU by `jobs/benchmark.py tta --crops 1`:
# a training run's model, or a self-training run's teacher and student ensembles. No run starts
# after BUDGET_S; one still training then is stopped at BUDGET_S + GRACE_S. Writes
# results.tsv (recipe, model, seed, set, fastest epoch (a self-training run's: its teacher's),
# wall, test lwlrap all / singles / multi) and
# each run's logs to $OUT (default /tmp/gpu-sweep); run directories go to $RUNS, not $OUT.
#
# RECIPES: "name=flags;name=flags" (default: seed recipe, the default's one model, cnn10,
# cnn10-att, the default: self-training on the stores' noisy split); SEEDS (0 1 2); SETS (poly);
# EPOCHS (30); PARALLEL (4).
# DRY_RUN=1: one epoch of two recipes, one seed, on this machine's CPU with PY (.venv/bin/python).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-sweep}
RUNS=${RUNS:-/tmp/gpu-sweep-runs}
FEATURES=${FEATURES:-.gpu}
if [ "${DRY_RUN:-0}" = 1 ]; then
  RUN=("${PY:-.venv/bin/python}"); GPUS=0; EPOCHS=${EPOCHS:-1}; SEEDS=${SEEDS:-0}
  RECIPES=${RECIPES:-"seed=--recipe seed;one-model=--no-self-train"}; PARALLEL=${PARALLEL:-1}
  BUDGET_S=${BUDGET_S:-900}
else
  RUN=(bash .gpu/with-site.sh python3); GPUS=1; EPOCHS=${EPOCHS:-30}; SEEDS=${SEEDS:-"0 1 2"}
  RECIPES=${RECIPES:-"seed=--recipe seed;one-model=--no-self-train;cnn10=--arch cnn10 --no-self-train;cnn10-att=--arch cnn10-att --no-self-train;default="}
  PARALLEL=${PARALLEL:-4}; BUDGET_S=${BUDGET_S:-420}
  [ -f .gpu/site.tar.xz ] || { echo "gpu-sweep: .gpu/site.tar.xz missing (see the header)"; exit 2; }
fi
SETS=${SETS:-poly}
GRACE_S=${GRACE_S:-60}
mkdir -p "$OUT" "$RUNS"
START=$(date +%s)

one() {  # NAME SEED SET FLAGS...: train one run, score it, append its line to results.tsv
  local name=$1 seed=$2 set=$3; shift 3
  local tag=$name-$set-s$seed left=$(( START + BUDGET_S - $(date +%s) ))
  [ "$left" -gt 0 ] || { echo "$tag: not started, budget spent" >> "$OUT/skipped.txt"; return; }
  local t0=$(date +%s)
  timeout -k 10 $(( left + GRACE_S )) "${RUN[@]}" jobs/train.py --features "$FEATURES/$set-feat" \
    --out "$RUNS/$tag" --epochs "$EPOCHS" --seed "$seed" --workers 1 --gpus-per-worker "$GPUS" \
    --no-report "$@" > "$OUT/$tag.train.txt" 2>&1
  local rc=$? wall=$(( $(date +%s) - t0 ))
  # The fastest epoch: the recipe's cost without the other runs' load on the card.
  local epoch
  epoch=$(grep -oE ' [0-9]{2}:[0-9]{2}$' "$OUT/$tag.train.txt" | sort | head -n 1 | tr -d ' ')
  local what scores
  for what in model teacher student; do
    # A finished run's artifact only: a stopped one's last checkpoint is no recipe's figure.
    [ "$rc" = 0 ] && [ -e "$RUNS/$tag/$what" ] || continue
    "${RUN[@]}" jobs/benchmark.py tta --model "$RUNS/$tag/$what" --features "$FEATURES/$set-feat" \
      --truth "$FEATURES/$set-truth.csv" --crops 1 > "$OUT/$tag.$what.score.txt" 2>&1
    # The first row "1  all singles multi ...": lwlrap as scored (mean of sigmoids, one crop).
    scores=$(awk '$1 == "1" {print $2"\t"$3"\t"$4; exit}' "$OUT/$tag.$what.score.txt")
    row "$name" "$what" "$seed" "$set" "${epoch:-?}" "${wall}s" "rc=$rc" "${scores:-no score}"
  done
  [ "$rc" = 0 ] || row "$name" - "$seed" "$set" "${epoch:-?}" "${wall}s" "rc=$rc" "not finished"
}

row() {  # one tab-separated line of results.tsv
  (IFS=$'\t'; echo "$*") >> "$OUT/results.tsv"
}

{
  date -u +"%F %T UTC"; git log --oneline -1 2>/dev/null || echo "(no git)"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
} > "$OUT/setup.txt"
rm -f "$OUT/results.tsv" "$OUT/skipped.txt"
row recipe model seed set "fastest epoch" wall rc all singles multi
# Seeds outermost: if the budget runs out, every recipe has its first seeds.
running=0
for seed in $SEEDS; do
  for set in $SETS; do
    IFS=';' read -ra recipes <<< "$RECIPES"
    for recipe in "${recipes[@]}"; do
      # shellcheck disable=SC2086  # the recipe's flags, split into words on purpose
      one "${recipe%%=*}" "$seed" "$set" ${recipe#*=} &
      running=$(( running + 1 ))
      if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$(( running - 1 )); fi
    done
  done
done
wait
echo "sweep: $(( $(date +%s) - START )) s" >> "$OUT/setup.txt"
cat "$OUT/setup.txt" "$OUT/results.tsv"
[ -f "$OUT/skipped.txt" ] && cat "$OUT/skipped.txt"
exit 0
