#!/usr/bin/env bash
# Scheduled, incremental inference: submits jobs/infer.py to the Ray cluster so that every clip
# landing under $FATLIB_INCOMING is scored exactly once into $FATLIB_PREDICTIONS.
# Called by cluster/fatlib-infer.timer (systemd) or the crontab line in cluster/crontab.
# Settings come from the environment (systemd: EnvironmentFile=/etc/fatlib/infer.env):
#   FATLIB_MODELS       space-separated model artifacts (s3://.../model ...), a fold ensemble
#   FATLIB_INCOMING     where new clips land (a folder of audio files, s3://...)
#   FATLIB_PREDICTIONS  predictions root (s3://...): <run_id>/submission.csv, _SUCCESS, ledger
#   FATLIB_TTA          crops per clip (default: the job's default)
#   RAY_ADDRESS         the cluster's job server (default http://127.0.0.1:8265, the head node)
#   FATLIB_HOME         checkout of fatlib to submit from (default: this script's repository)
# --dry-run prints the submit command instead of running it.
set -euo pipefail
home="${FATLIB_HOME:-$(cd "$(dirname "$0")/.." && pwd)}"
: "${FATLIB_MODELS:?set FATLIB_MODELS}" "${FATLIB_INCOMING:?set FATLIB_INCOMING}"
: "${FATLIB_PREDICTIONS:?set FATLIB_PREDICTIONS}"
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
models=()
for m in $FATLIB_MODELS; do models+=(--model "$m"); done
tta=()
[[ -n "${FATLIB_TTA:-}" ]] && tta=(--tta "$FATLIB_TTA")
cmd=(ray job submit --working-dir "$home" --runtime-env "$home/cluster/runtime_env.yaml"
     -- python jobs/infer.py "${models[@]}" --data "$FATLIB_INCOMING"
     --out "$FATLIB_PREDICTIONS" --incremental "${tta[@]}")
if [[ "${1:-}" == "--dry-run" ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
cd "$home"
exec "${cmd[@]}"
