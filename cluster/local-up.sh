#!/usr/bin/env bash
# A multi-node Ray cluster on this machine, for development: a head (the job server and the
# dashboard on 127.0.0.1) plus N worker nodes, each a separate raylet. Everything lives under
# one temp dir, so cluster/local-down.sh stops these processes and no others.
#   cluster/local-up.sh [WORKERS=2] [CPUS_PER_WORKER=1]
# Clients then need RAY_ADDRESS (the job server for `ray job submit`, the GCS for a direct
# `python jobs/...`) and RAY_AUTH_MODE=token, as printed at the end.
# Token auth stays on (Ray's default): the head writes ~/.ray/auth_token and clients read it.
set -euo pipefail
workers="${1:-2}"
cpus="${2:-1}"
temp="${FATLIB_RAY_TEMP:-/tmp/fatlib-ray}"
port="${FATLIB_GCS_PORT:-6390}"
dashboard="${FATLIB_DASHBOARD_PORT:-8266}"
export RAY_AUTH_MODE=token
ray start --head --port "$port" --num-cpus 0 --temp-dir "$temp" \
  --dashboard-host 127.0.0.1 --dashboard-port "$dashboard" --disable-usage-stats >/dev/null
for _ in $(seq "$workers"); do
  ray start --address "127.0.0.1:$port" --num-cpus "$cpus" \
    --resources "{\"fatlib_cpu\": $cpus}" --disable-usage-stats >/dev/null
done
# The job server answers before its agent can take jobs; wait until it does.
for _ in $(seq 60); do
  ray job list --address "http://127.0.0.1:$dashboard" >/dev/null 2>&1 && break
  sleep 1
done
echo "Ray: head + $workers worker node(s) of $cpus CPU(s); temp dir $temp"
echo "for ray job submit:   export RAY_ADDRESS=http://127.0.0.1:$dashboard RAY_AUTH_MODE=token"
echo "for python jobs/...:  export RAY_ADDRESS=127.0.0.1:$port RAY_AUTH_MODE=token"
