#!/usr/bin/env bash
# Stops the cluster cluster/local-up.sh started (its processes only: matched by its temp dir,
# so another Ray on this machine keeps running).
set -uo pipefail
temp="${FATLIB_RAY_TEMP:-/tmp/fatlib-ray}"
pkill -TERM -f -- "$temp" || true
for _ in $(seq 50); do
  pgrep -f -- "$temp" >/dev/null || exit 0
  sleep 0.2
done
pkill -KILL -f -- "$temp" || true
