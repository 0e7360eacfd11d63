#!/usr/bin/env bash
# `make demo`: the Pangyo drill on a local testbed.
#
# 1. builds firedrill and the testbed (a real control plane from upstream Go
#    modules; KWOK nodes in zone-a, zone-b, zone-c) and starts it;
# 2. installs the CRDs and starts the operator;
# 3. deploys auth (pinned to zone-a), messaging (three zones) and payments
#    (two zones), shows the plan, then runs the drill and waits;
# 4. prints the verdict table and where the HTML report is;
# 5. stops everything it started (FIREDRILL_DEMO_KEEP=1 leaves it running).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TESTBED=tests/testbed/testbed.sh
NODES=${NODES:-9}
BIN=${CARGO_TARGET_DIR:-target}/debug
OUT=${FIREDRILL_DEMO_DIR:-$REPO/.demo}
mkdir -p "$OUT"
OP_PID=

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
stop_all() {
  if [[ -n $OP_PID ]] && kill -0 "$OP_PID" 2>/dev/null; then
    kill -TERM "$OP_PID"; wait "$OP_PID" 2>/dev/null || true
  fi
  "$TESTBED" down
}
[[ -n ${FIREDRILL_DEMO_KEEP:-} ]] || trap stop_all EXIT

step "Starting the testbed: $NODES nodes over zone-a, zone-b, zone-c"
"$TESTBED" up "$NODES"
eval "$("$TESTBED" env)"
kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.labels.topology\.kubernetes\.io/zone}{"\n"}{end}' | sort | uniq -c |
  awk '{printf "  %-8s %s nodes\n", $2, $1}'

step "Installing the CRDs and starting the operator"
"$BIN/firedrill" crd | kubectl apply --server-side -f -
kubectl wait --for=condition=Established --timeout=60s crd/datacenterfailures.chaos.firedrill.dev >/dev/null
"$BIN/firedrill" operator --metrics-bind 127.0.0.1:0 >"$OUT/operator.log" 2>&1 &
OP_PID=$!
echo "  operator pid $OP_PID, log $OUT/operator.log"

step "Deploying auth (pinned to zone-a), messaging (3 zones), payments (2 zones)"
kubectl apply -f examples/pangyo/workloads.yaml
for d in auth/login messaging/chat payments/checkout; do
  kubectl -n "${d%/*}" rollout status "deployment/${d#*/}" --timeout=120s >/dev/null
done
# The baseline probes read EndpointSlices, which follow the pods a moment later.
for s in auth/login:3 messaging/chat:6; do
  svc=${s%:*} want=${s#*:}
  for _ in $(seq 120); do
    got=$(kubectl -n "${svc%/*}" get endpointslices -l "kubernetes.io/service-name=${svc#*/}" \
      -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}')
    [[ ${#got} -ge $want ]] && break
    sleep 0.5
  done
done
for ns in auth messaging payments; do
  kubectl -n "$ns" get pods -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\t"}{.spec.nodeName}{"\n"}{end}'
done | column -t

step "What would break if zone-a burns? (firedrill plan: nothing is changed)"
"$BIN/firedrill" plan --zone zone-a -n auth -n messaging -n payments || true

step "The drill: zone-a goes dark for 30s (firedrill run --wait)"
set +e
"$BIN/firedrill" run -f examples/pangyo/drill.yaml --wait \
  --junit "$OUT/pangyo-zone-a.xml" --json "$OUT/pangyo-zone-a.json" --html "$OUT/pangyo-zone-a.html"
code=$?
set -e
echo
echo "firedrill run exited $code (0 Passed, 1 Failed, 2 Aborted/Inconclusive, 3 could not run)"
echo "HTML report: $OUT/pangyo-zone-a.html"
if [[ -n ${FIREDRILL_DEMO_KEEP:-} ]]; then
  step "Still running. Use it with: eval \"\$($TESTBED env)\"; stop the operator with: kill $OP_PID; then: $TESTBED down"
else
  step "Stopping everything the demo started"
fi
# The drill is expected to fail (authentication is pinned); anything but a verdict is an error.
[[ $code -le 1 ]]
