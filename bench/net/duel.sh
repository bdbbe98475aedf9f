#!/usr/bin/env bash
# duel.sh — compare the CPU cost per request of two node variants precisely on a noisy machine.
#
# Both nodes are pinned to the SAME core (0) and each gets its own load generator (25 connections,
# pipelined) on core 1, at the same time. The scheduler splits core 0 evenly between two busy
# processes, so the ratio of their ops/s is the inverse ratio of their CPU cost per request, and
# whatever else the machine does slows both alike. Identical nodes measure A/B = 1.00 ± 0.015 here,
# where single back-to-back runs differ by ±15 %.
#
# The variants differ by environment (a temporary switch in the code under test), or by tree:
#   A="MY_SWITCH=1" B="" bash bench/net/duel.sh [value-size 100] [rounds 3]
#   A_DIR=/path/to/other/checkout bash bench/net/duel.sh 4096 5
set -euo pipefail
cd "$(dirname "$0")/../.."
VALUE=${1:-100}
ROUNDS=${2:-3}
A_DIR=${A_DIR:-$PWD}
B_DIR=${B_DIR:-$PWD}
# shellcheck source=lib.sh
source bench/net/lib.sh

for round in $(seq "$ROUNDS"); do
  pa=$(free_port); pb=$(free_port)
  (cd "$A_DIR" && exec env ${A:-} taskset -c 0 bun node.ts --port "$pa" --memory 256mb >/dev/null 2>&1) & pids+=($!)
  (cd "$B_DIR" && exec env ${B:-} taskset -c 0 bun node.ts --port "$pb" --memory 256mb >/dev/null 2>&1) & pids+=($!)
  wait_port "$pa"; wait_port "$pb"
  ra=$(mktemp); rb=$(mktemp)
  taskset -c 1 "$BIN" --port "$pa" --connections 25 --depth 16 --value-size "$VALUE" --duration 4 --warmup 1 > "$ra" & la=$!
  taskset -c 1 "$BIN" --port "$pb" --connections 25 --depth 16 --value-size "$VALUE" --duration 4 --warmup 1 > "$rb" & lb=$!
  wait "$la" "$lb"
  cleanup; pids=()
  a=$(grep -o '"ops_per_s":[0-9]*' "$ra" | cut -d: -f2); b=$(grep -o '"ops_per_s":[0-9]*' "$rb" | cut -d: -f2)
  rm -f "$ra" "$rb"
  awk -v a="$a" -v b="$b" -v r="$round" 'BEGIN { printf "round %d: A %d ops/s, B %d ops/s, A/B %.3f\n", r, a, b, a / b }'
  sleep 0.3
done
