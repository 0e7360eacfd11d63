#!/usr/bin/env bash
# Benchmark: time from `kubectl apply` of a DataCenterFailure to "zone dark"
# (every zone node cordoned, every in-scope pod killed, taint on), the time to
# restore, and the operator's peak RSS, on a testbed of NODES nodes running
# PODS pods. Prints numbers; asserts nothing about speed.
#
#   tests/bench/zone-dark.sh [NODES] [PODS]      (default 300 nodes, 6000 pods)
set -euo pipefail
NODES=${1:-300}
PODS=${2:-6000}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
export FIREDRILL_CACHE=${FIREDRILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/firedrill}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$FIREDRILL_CACHE/cargo/rust-$(rustc --version | cut -d' ' -f2)}
export FIREDRILL_TESTBED_DIR=$(mktemp -d /tmp/firedrill-bench.XXXXXX)
TESTBED=tests/testbed/testbed.sh
OP_PID=
cleanup() {
  [[ -n $OP_PID ]] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null || true
  "$TESTBED" down || true
  rm -rf "$FIREDRILL_TESTBED_DIR"
}
trap cleanup EXIT
ms() { date +%s%3N; }

cargo build --release -q -p firedrill
BIN=$CARGO_TARGET_DIR/release/firedrill
"$TESTBED" up "$NODES"
eval "$("$TESTBED" env)"
kubectl apply --server-side -f crds/ >/dev/null
kubectl create namespace bench >/dev/null
DEPLOYMENTS=$(( (PODS + 999) / 1000 ))
t0=$(ms)
for ((i = 0; i < DEPLOYMENTS; i++)); do
  n=$(( PODS / DEPLOYMENTS ))
  kubectl -n bench create deployment "app-$i" --image=registry.invalid/app:1 --replicas="$n" -o yaml --dry-run=client |
    kubectl apply -f - >/dev/null
done
echo "waiting for $PODS pods to be Ready..."
until [[ $(kubectl -n bench get deploy -o jsonpath='{range .items[*]}{.status.readyReplicas}{"\n"}{end}' | awk '{s+=$1} END {print s+0}') -ge $(( PODS / DEPLOYMENTS * DEPLOYMENTS )) ]]; do sleep 2; done
echo "cluster ready in $(( ($(ms) - t0) / 1000 ))s: $NODES nodes, $(kubectl get pods -A --no-headers | wc -l) pods"

"$BIN" operator --log-format json >"$FIREDRILL_TESTBED_DIR/operator.log" 2>&1 &
OP_PID=$!
sleep 1
peak() { awk '/VmHWM/ {print $2}' "/proc/$OP_PID/status"; }
echo "operator idle RSS: $(( $(peak) / 1024 )) MiB"

zone_pods=$(kubectl get pods -A -o wide --no-headers | awk '$8 ~ /zone-a/' | wc -l)
t_apply=$(ms)
cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailure
metadata: {name: bench}
spec: {zone: zone-a, duration: 20s, faultOnly: true, target: {namespaces: [bench]}}
YAML
phase() { kubectl get dcf bench -o jsonpath='{.status.phase}'; }
until [[ $(phase) == ZoneDown || $(phase) == Failed ]]; do sleep 0.1; done
t_dark=$(ms)
[[ $(phase) == Failed ]] && { kubectl get dcf bench -o jsonpath='{.status.reason}'; echo; exit 1; }
until [[ $(phase) == Restoring || $(phase) == Completed ]]; do sleep 0.1; done
t_restoring=$(ms)
until [[ $(phase) == Completed ]]; do sleep 0.1; done
t_done=$(ms)
killed=$(kubectl get dcf bench -o jsonpath='{.status.fault.podsKilled}')
cordoned=$(kubectl get dcf bench -o jsonpath='{.status.fault.nodesCordoned}')
echo
echo "RESULT nodes=$NODES pods=$PODS zone_nodes=$cordoned zone_pods_before=$zone_pods pods_killed=$killed"
echo "RESULT apply_to_zone_dark_ms=$(( t_dark - t_apply ))"
echo "RESULT restore_ms=$(( t_done - t_restoring ))"
echo "RESULT operator_peak_rss_mib=$(( $(peak) / 1024 ))"
kubectl get dcf bench -o jsonpath='{range .status.transitions[*]}{.phase} {.time}{"\n"}{end}'
grep '"zone down"' "$FIREDRILL_TESTBED_DIR/operator.log" | python3 -c 'import json,sys
for l in sys.stdin:
    f = json.loads(l)["fields"]
    print("RESULT injecting: hold_ms=%s kill_ms=%s taint_ms=%s killed=%s" % (f["hold_ms"], f["kill_ms"], f["taint_ms"], f["killed"]))'
