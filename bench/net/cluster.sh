#!/usr/bin/env bash
# cluster.sh — throughput through one node of a two-node cluster, for a client that is not
# ring-aware (like the seed's Kitex clients): about half of its keys are owned by the other node,
# which the first one answers from its mirror or forwards (PeerGet/PeerSet).
#
# Both nodes are pinned to core 0 (so a forward costs two context switches there: the figure is
# the CPU cost of the cluster path, not what two machines would do), the load generator (50
# connections, depth 16, 10k keys, 100 B values) to core 1, talking to node A only. Prints ops/s
# and each node's CPU share per round. With DELAY_US=N, A reaches B through delay-proxy.c (on core
# 1), which holds each chunk N µs each way: a round trip between machines (B's member id is then
# the proxy's address, `--self`). Trees and settings by environment:
#   DIR=/path/to/tree  GET_RATIO=0.9  NODE_ARGS="--mirror-share 0"  DELAY_US=1000  bash bench/net/cluster.sh [rounds 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
DIR=${DIR:-$PWD}
# shellcheck source=lib.sh
source bench/net/lib.sh
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for round in $(seq "$ROUNDS"); do
  pa=$(free_port); pb=$(free_port); bid="127.0.0.1:$pb"
  if [ -n "${DELAY_US:-}" ]; then
    px=$(free_port); bid="127.0.0.1:$px"
    taskset -c 1 "$PROXY" "$px" "$pb" "$DELAY_US" & pids+=($!)
  fi
  peers="127.0.0.1:$pa,$bid"
  # shellcheck disable=SC2086
  (cd "$DIR" && exec taskset -c 0 bun node.ts --port "$pa" --peers "$peers" --memory 256mb --log-level warn ${NODE_ARGS:-} >/dev/null 2>&1) & a=$!; pids+=($a)
  # shellcheck disable=SC2086
  (cd "$DIR" && exec taskset -c 0 bun node.ts --port "$pb" --self "$bid" --peers "$peers" --memory 256mb --log-level warn ${NODE_ARGS:-} >/dev/null 2>&1) & b=$!; pids+=($b)
  wait_port "$pa"; wait_port "$pb"
  out=$(mktemp)
  taskset -c 1 "$BIN" --port "$pa" --connections 50 --depth 16 --value-size 100 --get-ratio "${GET_RATIO:-0.9}" --duration 6 --warmup 1 > "$out" & l=$!
  sleep 3; a0=$(ticks "$a"); b0=$(ticks "$b"); sleep 2; a1=$(ticks "$a"); b1=$(ticks "$b")
  wait "$l"
  ops=$(grep -o '"ops_per_s":[0-9]*' "$out" | cut -d: -f2); rm -f "$out"
  cleanup; pids=()
  echo "round $round: $ops ops/s through A; CPU over 2 s: A $(( (a1 - a0) / 2 ))%, B $(( (b1 - b0) / 2 ))%"
  sleep 0.3
done
