#!/usr/bin/env bash
# `make demo`: a local testbed cluster (real kube-apiserver, etcd,
# controller-manager, scheduler; KWOK nodes in three zones), the firedrill
# CRDs, and the example drill validated by the API server. Stops everything it
# started when it ends, unless FIREDRILL_DEMO_KEEP=1.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TESTBED=tests/testbed/testbed.sh
NODES=${NODES:-9}
FIREDRILL=${CARGO_TARGET_DIR:-target}/debug/firedrill

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ -z ${FIREDRILL_DEMO_KEEP:-} ]]; then
  trap '"$TESTBED" down' EXIT
fi

step "Starting the testbed: $NODES fake nodes over zone-a, zone-b, zone-c"
"$TESTBED" up "$NODES"
eval "$("$TESTBED" env)"
kubectl version

step "Zones"
kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.labels.topology\.kubernetes\.io/zone}{"\n"}{end}' | sort | uniq -c |
  awk '{printf "  %-8s %s nodes\n", $2, $1}'

step "Nodes"
kubectl get nodes -L topology.kubernetes.io/zone

step "Installing the firedrill CRDs (firedrill crd | kubectl apply)"
"$FIREDRILL" crd | kubectl apply --server-side -f -
kubectl wait --for=condition=Established --timeout=60s crd -l '!nonexistent' >/dev/null
kubectl get crd -o custom-columns='CRD:.metadata.name,SHORT:.spec.names.shortNames[0],SCOPE:.spec.scope' | grep -E 'CRD|firedrill'

step "The example drill, checked by the API server (kubectl apply --dry-run=server)"
kubectl apply --dry-run=server -f examples/zone-a-drill.yaml
step "A broken one is refused with the field named"
sed 's/interval: 1s/interval: 10ms/' examples/zone-a-drill.yaml | kubectl apply --dry-run=server -f - 2>&1 | sed 's/^/  /' || true

if [[ -n ${FIREDRILL_DEMO_KEEP:-} ]]; then
  step "The testbed keeps running. Use it with: eval \"\$($TESTBED env)\"; stop it with: $TESTBED down"
else
  step "Stopping the testbed"
fi
