#!/usr/bin/env bash
# Generates the stock Apache Thrift clients/servers used by the interop tests and the network
# benchmark, with the official compiler (Debian `thrift-compiler`). Output is not committed.
#   test/gen/cache/  from thrift/cache.thrift      (our contract)
#   test/gen/seed/   from thrift/seed/groupcache.thrift (the seed's original contract)
#   test/gen/py/     both again for Python: packages `cache` and `groupcache` (python-interop test)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v thrift >/dev/null || { echo "thrift compiler missing: apt-get install thrift-compiler" >&2; exit 1; }
rm -rf test/gen
mkdir -p test/gen/cache test/gen/seed test/gen/py
thrift --gen js:node,es6 -out test/gen/cache thrift/cache.thrift
thrift --gen js:node,es6 -out test/gen/seed thrift/seed/groupcache.thrift
thrift --gen py -out test/gen/py thrift/cache.thrift
thrift --gen py -out test/gen/py thrift/seed/groupcache.thrift
