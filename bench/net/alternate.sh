#!/usr/bin/env bash
# alternate.sh — compare two node trees back to back: in each round A runs alone on core 0 with the
# load generator (50 connections, 10k keys, 90 % gets) on core 1, then B the same way, and the
# round's B/A is printed, then the median. Slower and noisier than duel.sh (the machine's speed
# drifts between the two runs of a round), but it sees what a duel cannot: a change in how the
# node's writes pace the client (wake-ups, batching), which two nodes sharing a core hide.
#   A_DIR=/path/to/base B_DIR=/path/to/new bash bench/net/alternate.sh [value-size 100] [depth 16] [rounds 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
VALUE=${1:-100}
DEPTH=${2:-16}
ROUNDS=${3:-8}
A_DIR=${A_DIR:-$PWD}
B_DIR=${B_DIR:-$PWD}
# shellcheck source=lib.sh
source bench/net/lib.sh

run() { # run DIR: prints the ops/s of one 4 s run of the node in DIR
  local port out ops
  port=$(free_port); out=$(mktemp)
  (cd "$1" && exec taskset -c 0 bun node.ts --port "$port" --memory 256mb >/dev/null 2>&1) & pids+=($!)
  wait_port "$port"
  taskset -c 1 "$BIN" --port "$port" --connections 50 --depth "$DEPTH" --value-size "$VALUE" --duration 4 --warmup 1 > "$out"
  cleanup; pids=()
  ops=$(grep -o '"ops_per_s":[0-9]*' "$out" | cut -d: -f2); rm -f "$out"
  echo "$ops"
}

ratios=()
for round in $(seq "$ROUNDS"); do
  a=$(run "$A_DIR"); sleep 0.3; b=$(run "$B_DIR"); sleep 0.3
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
  ratios+=("$r")
  echo "round $round: A $a ops/s, B $b ops/s, B/A $r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "median B/A %.3f over %d rounds\n", m, NR }'
