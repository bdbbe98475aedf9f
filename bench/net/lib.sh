# lib.sh — shared by duel.sh, alternate.sh and cluster.sh (sourced from the repository root): builds the C load
# generator into $BIN (and the delay proxy into $PROXY) when missing or older than its source, and defines:
#   pids / cleanup   every background process started goes in pids; cleanup kills them (also on exit)
#   free_port        prints a free 127.0.0.1 port
#   wait_port PORT   waits up to 10 s until PORT accepts connections
BIN="${TMPDIR:-/tmp}/mybuncache-bench/loadgen"
if [ ! -x "$BIN" ] || [ bench/net/loadgen.c -nt "$BIN" ]; then
  mkdir -p "$(dirname "$BIN")"
  gcc -O2 -o "$BIN.$$" bench/net/loadgen.c -lpthread && mv "$BIN.$$" "$BIN"
fi
PROXY="${TMPDIR:-/tmp}/mybuncache-bench/delay-proxy"
if [ ! -x "$PROXY" ] || [ bench/net/delay-proxy.c -nt "$PROXY" ]; then
  gcc -O2 -o "$PROXY.$$" bench/net/delay-proxy.c && mv "$PROXY.$$" "$PROXY"
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { bun -e 'const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }); console.log(l.port); l.stop(true);'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
