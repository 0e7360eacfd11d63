#!/usr/bin/env bash
# `make demo`: the Pangyo drill on a local testbed.
#
# 1. builds firedrill and the testbed (a real control plane from upstream Go
#    modules; KWOK nodes in zone-a, zone-b, zone-c) and starts it;
# 2. installs the CRDs and starts the operator;
# 3. deploys auth (pinned to zone-a), messaging (three zones) and payments
#    (two zones, keeping payments in a ledger: primary in zone-a, standby in
#    zone-b, asynchronous replication 2 s behind), which serve HTTP on the
#    testbed's data plane; messaging and payments sign their users in
#    through auth;
# 4. shows the plan, runs the drill: all three fail, the cascade is named,
#    and payments lost the acknowledged payments of the ledger's last 2 s;
# 5. applies the fix (login in every zone, the ledger synchronous), runs the
#    same drill: all pass, no payment lost;
# 6. prints the verdicts and where the HTML reports are, and stops everything
#    it started (FIREDRILL_DEMO_KEEP=1 leaves it running).
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
# The probes reach the Services by name through the data plane's hosts file
# (FIREDRILL_PROBE_HOSTS, from the testbed's env).
"$BIN/firedrill" operator --metrics-bind 127.0.0.1:0 >"$OUT/operator.log" 2>&1 &
OP_PID=$!
echo "  operator pid $OP_PID, log $OUT/operator.log"

# Wait until a Service has this many ready endpoints.
wait_endpoints() { # namespace/service count
  local svc=$1 want=$2 got
  for _ in $(seq 240); do
    got=$(kubectl -n "${svc%/*}" get endpointslices -l "kubernetes.io/service-name=${svc#*/}" \
      -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}')
    [[ ${#got} -ge $want ]] && return 0
    sleep 0.5
  done
  echo "timed out waiting for $want ready endpoints of $svc" >&2
  return 1
}

# Run the drill and keep its reports under a name; prints the verdict table
# and returns firedrill run's exit code.
drill() { # run-name
  local name=$1 code=0
  "$BIN/firedrill" run -f examples/pangyo/drill.yaml --wait \
    --junit "$OUT/$name.xml" --json "$OUT/$name.json" --html "$OUT/$name.html" || code=$?
  echo
  echo "firedrill run exited $code (0 Passed, 1 Failed, 2 Aborted/Inconclusive, 3 could not run)"
  echo "HTML report: $OUT/$name.html"
  return $code
}

step "Deploying auth (pinned to zone-a), messaging (3 zones), payments (2 zones, its ledger async 2s behind); messaging and payments sign users in through auth"
kubectl apply -f examples/pangyo/workloads.yaml
for d in auth/login messaging/chat payments/checkout payments/ledger-primary payments/ledger-standby; do
  kubectl -n "${d%/*}" rollout status "deployment/${d#*/}" --timeout=120s >/dev/null
done
wait_endpoints auth/login 3
wait_endpoints messaging/chat 6
wait_endpoints payments/checkout 4
wait_endpoints payments/ledger 2
for ns in auth messaging payments; do
  kubectl -n "$ns" get pods -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\t"}{.spec.nodeName}{"\t"}{.status.podIP}{"\n"}{end}'
done | column -t

step "What would break if zone-a burns? (firedrill plan -f drill.yaml: nothing is changed)"
"$BIN/firedrill" plan -f examples/pangyo/drill.yaml || true

step "Run 1: zone-a goes dark for 30s"
first=0
drill pangyo-before-fix || first=$?

step "The fix: login in every zone (examples/pangyo/login-fix.yaml), the ledger synchronous (examples/pangyo/ledger-fix.yaml)"
kubectl -n auth delete deployment login --cascade=foreground --wait=true >/dev/null
kubectl apply -f examples/pangyo/login-fix.yaml
# The ledger's members start afresh, so the primary (zone-a) leads again:
# after run 1 the promoted standby leads, and a member follows a leader it finds.
kubectl -n payments delete deployment ledger-primary ledger-standby --cascade=foreground --wait=true >/dev/null
kubectl -n payments wait --for=delete pod -l app=ledger --timeout=60s >/dev/null 2>&1 || true
kubectl apply -f examples/pangyo/ledger-fix.yaml
for d in auth/login payments/ledger-primary payments/ledger-standby; do
  kubectl -n "${d%/*}" rollout status "deployment/${d#*/}" --timeout=120s >/dev/null
done
wait_endpoints auth/login 3
wait_endpoints payments/ledger 2
kubectl -n auth get pods -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.spec.nodeName}{"\n"}{end}' | column -t
"$BIN/firedrill" plan -f examples/pangyo/drill.yaml || true

step "Run 2: the same drill after the fix"
second=0
drill pangyo-after-fix || second=$?

echo
echo "before the fix: firedrill run exited $first; after the fix: $second"
if [[ -n ${FIREDRILL_DEMO_KEEP:-} ]]; then
  step "Still running. Use it with: eval \"\$($TESTBED env)\"; stop the operator with: kill $OP_PID; then: $TESTBED down"
else
  step "Stopping everything the demo started"
fi
# The story: the first drill fails (the cascade), the second passes (the fix).
ok=1
[[ $first -eq 1 ]] || { echo "the first run exited $first, not 1 (Failed): see its verdict above" >&2; ok=0; }
[[ $second -eq 0 ]] || { echo "the second run exited $second, not 0 (Passed): see its verdict above" >&2; ok=0; }
((ok))
