#!/usr/bin/env bash
# Stops the cluster cluster/local-up.sh started, and only it: local-up.sh runs in its own
# process group and records it, so another Ray on this machine keeps running. (Matching
# command lines is not enough: Ray's agents rename themselves and the client server does
# not name the temp dir.)
set -uo pipefail
temp="${FATLIB_RAY_TEMP:-/tmp/fatlib-ray}"
record="$temp/local-up.pgid"
if [[ ! -f "$record" ]]; then
  echo "no cluster recorded in $record" >&2
  exit 0
fi
group="$(cat "$record")"
# Live members of the group (zombies left for a non-reaping init do not count).
alive() { ps -eo pgid=,stat= | awk -v g="$group" '$1 == g && $2 !~ /^Z/ {n++} END {exit !n}'; }
kill -TERM -- "-$group" 2>/dev/null || true
for _ in $(seq 50); do
  alive || { rm -f "$record"; exit 0; }
  sleep 0.2
done
kill -KILL -- "-$group" 2>/dev/null || true
# A killed process lingers until the kernel schedules it (seconds on a loaded machine): return
# only once the group is gone, so what follows never finds the old cluster running.
for _ in $(seq 100); do
  alive || break
  sleep 0.1
done
rm -f "$record"
