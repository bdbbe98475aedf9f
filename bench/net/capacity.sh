#!/usr/bin/env bash
# capacity.sh — how many items a node holds in the same memory as memcached.
#
# For each value size, each server gets MEMORY MiB (ours: --memory; memcached: -m, one thread),
# the load generator sets KEYS keys once (more data than fits: the oldest are evicted), then
# reads uniformly random keys for a few seconds; the share of Gets that hit is the share of the
# key space the server still holds, so hits × KEYS is the items it keeps.
#
#   bash bench/net/capacity.sh [memory MiB 64] [value sizes "100 1000 4000"]
# shellcheck source=lib.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/net/lib.sh
MEMORY=${1:-64}
SIZES=${2:-"100 1000 4000"}
echo "server | value B | keys | hit share | items held | data held MiB"
for size in $SIZES; do
  keys=$(( MEMORY * 1024 * 1024 * 2 / (size + 30) )) # about twice what fits
  [ "$keys" -gt 1000000 ] && keys=1000000 # (the load generator's most)
  for server in ours $(command -v memcached >/dev/null && echo memcached); do
    port=$(free_port)
    if [ "$server" = ours ]; then
      bun node.ts --port "$port" --memory "${MEMORY}mb" --log-level warn >/dev/null 2>&1 &
    else
      memcached -p "$port" -l 127.0.0.1 -U 0 -t 1 -m "$MEMORY" -u nobody >/dev/null 2>&1 &
    fi
    pids+=($!)
    wait_port "$port"
    proto=thrift; [ "$server" = memcached ] && proto=memcache
    out=$("$BIN" --port "$port" --protocol "$proto" --keys "$keys" --value-size "$size" --get-ratio 1 --depth 16 --duration 3 --warmup 0 | tail -1)
    kill "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-1]}" 2>/dev/null || true
    bun -e '
      const [server, size, keys, line] = process.argv.slice(1);
      const r = JSON.parse(line);
      const ops = r.ops_per_s * r.seconds, share = 1 - r.misses / ops, held = share * Number(keys);
      console.log(`${server} | ${size} | ${keys} | ${share.toFixed(3)} | ${Math.round(held)} | ${(held * Number(size) / 1048576).toFixed(1)}`);
    ' "$server" "$size" "$keys" "$out"
  done
done
