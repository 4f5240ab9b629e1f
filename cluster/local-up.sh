#!/usr/bin/env bash
# A multi-node Ray cluster on this machine, for development: a head (the job server and the
# dashboard on 127.0.0.1) plus N worker nodes, each a separate raylet. Everything lives under
# one temp dir and one process group, so cluster/local-down.sh stops these processes and no
# others.
#   cluster/local-up.sh [WORKERS=2] [CPUS_PER_WORKER=1]
# Clients then need RAY_ADDRESS (the job server for `ray job submit`, the GCS for a direct
# `python jobs/...`) and RAY_AUTH_MODE=token, as printed at the end.
# Token auth stays on (Ray's default): the head writes ~/.ray/auth_token and clients read it.
set -euo pipefail
# Run in a process group of our own, recorded in the temp dir: every Ray process started
# below inherits it, and cluster/local-down.sh stops exactly that group.
if [[ "$(ps -o pgid= $$ | tr -d ' ')" != "$$" ]]; then
  exec setsid --wait "$0" "$@"
fi
workers="${1:-2}"
cpus="${2:-1}"
temp="${FATLIB_RAY_TEMP:-/tmp/fatlib-ray}"
port="${FATLIB_GCS_PORT:-6390}"
dashboard="${FATLIB_DASHBOARD_PORT:-8266}"
mkdir -p "$temp"
echo "$$" > "$temp/local-up.pgid"
export RAY_AUTH_MODE=token
# Ray code inside workers that looks up "the" cluster by itself (Ray Train's placement-group
# cleaner) reads RAY_ADDRESS or else /tmp/ray/ray_current_cluster, which this temp dir never
# writes: hand every process started below the address.
export RAY_ADDRESS="127.0.0.1:$port"
# A fresh machine has no token yet: create ~/.ray/auth_token once (kept if it exists).
ray get-auth-token --generate >/dev/null
# Every node of one machine would take the agent's default port 52365; whichever binds first
# wins, and when that is not the head `ray job submit` answers "No available agent". Port 0
# lets each agent take a free port (also beside another Ray already running here).
ray start --head --port "$port" --num-cpus 0 --temp-dir "$temp" --dashboard-agent-listen-port 0 \
  --dashboard-host 127.0.0.1 --dashboard-port "$dashboard" --disable-usage-stats >/dev/null
for _ in $(seq "$workers"); do
  ray start --address "127.0.0.1:$port" --num-cpus "$cpus" --dashboard-agent-listen-port 0 \
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
