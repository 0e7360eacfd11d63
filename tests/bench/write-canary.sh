#!/usr/bin/env bash
# The write canary's memory bench (`make bench`): the testbed's store (one
# primary, no standby, records in a temporary file) on a free loopback port,
# and the write probe writing to it 10 times a second for MINUTES minutes
# (default 10; FIREDRILL_BENCH_MINUTES), reading everything back at the end.
# Prints the probe process's RSS every minute (operator/examples/write_canary.rs).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
MINUTES=${1:-${FIREDRILL_BENCH_MINUTES:-10}}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p firedrill-testbed
cargo build --release -q -p firedrill --example write_canary
DIR=$(mktemp -d)
STORE_PID=
cleanup() {
  [[ -n $STORE_PID ]] && kill "$STORE_PID" 2>/dev/null && wait "$STORE_PID" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TARGET/release/firedrill-testbed" serve --listen "127.0.0.1:$PORT" --name bench/ledger \
  --store-role primary --data "$DIR/records" 2>"$DIR/store.log" &
STORE_PID=$!
up=
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && up=1 && break
  sleep 0.1
done
[[ -n $up ]] || { echo "the store did not start:" >&2; cat "$DIR/store.log" >&2; exit 1; }
"$TARGET/release/examples/write_canary" "http://127.0.0.1:$PORT" "$MINUTES"
echo "store: $(wc -l <"$DIR/records") records kept, its RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$STORE_PID/status")"
