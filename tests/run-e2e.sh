#!/usr/bin/env bash
# Run the end-to-end tests against testbeds of their own, one after the
# other, stopping each whether its tests pass or fail:
#   kwok  KWOK nodes and the stand-in data plane: `cargo test --test e2e`
#   real  real nodes, one per zone (kubelet, containerd, kube-proxy; needs
#         root): `cargo test --test real`
# FIREDRILL_E2E_SUITES picks them (default: "kwok real").
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FIREDRILL_TESTBED_DIR=${FIREDRILL_E2E_TESTBED_DIR:-$(mktemp -d /tmp/firedrill-e2e.XXXXXX)}
NODES=${FIREDRILL_E2E_NODES:-6}
REAL_NODES=${FIREDRILL_E2E_REAL_NODES:-3}
SUITES=${FIREDRILL_E2E_SUITES:-kwok real}
# What the tests write (operator logs, reports, kubeconfigs) goes in a scratch
# directory of this run, removed with the testbed; failures print what matters.
SCRATCH=$(mktemp -d /tmp/firedrill-e2e-scratch.XXXXXX)
chmod 755 "$SCRATCH"

cleanup() {
  "$HERE/testbed/testbed.sh" down || true
  [[ -n ${FIREDRILL_KEEP_TESTBED_STATE:-} ]] || rm -rf "$FIREDRILL_TESTBED_DIR" "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build -p firedrill
# The operator image (static musl binary), which the image and helm tests use,
# and the agent image the real nodes run.
"$HERE/../image/build.sh"
rc=0

# What the testbed's own parts said last: a failure is often explained there.
testbed_logs() {
  local f
  for f in "$@"; do
    echo "--- testbed log $f (last 40 lines)"
    tail -n 40 "$FIREDRILL_TESTBED_DIR/logs/$f.log" 2>/dev/null || true
  done
}

if [[ " $SUITES " == *" kwok "* ]]; then
  "$HERE/testbed/testbed.sh" up "$NODES"
  eval "$("$HERE/testbed/testbed.sh" env)"
  export FIREDRILL_TESTBED_KUBECONFIG=$KUBECONFIG
  suite=0
  TMPDIR=$SCRATCH cargo test --no-fail-fast -p firedrill-e2e --test e2e "$@" || suite=$?
  ((suite == 0)) || { rc=$suite; testbed_logs dataplane kwok kube-controller-manager; }
  "$HERE/testbed/testbed.sh" down
fi

if [[ " $SUITES " == *" real "* ]]; then
  # A testbed of its own: no KWOK nodes and no stand-in data plane beside
  # the real ones, so no KWOK test's workload could land on them.
  start=$SECONDS
  "$HERE/testbed/testbed.sh" up 0 --real "$REAL_NODES"
  eval "$("$HERE/testbed/testbed.sh" env)"
  export FIREDRILL_TESTBED_KUBECONFIG=$KUBECONFIG
  suite=0
  # (Its numbers, cut -> NotReady and the like, are printed: --nocapture.)
  TMPDIR=$SCRATCH cargo test --no-fail-fast -p firedrill-e2e --test real -- --nocapture || suite=$?
  if ((suite != 0)); then
    rc=$suite
    testbed_logs kube-controller-manager real-zone-a-0-kubelet real-zone-a-0-containerd
  fi
  # Down here, not only at exit: a down that finds the machine's sysctls
  # changed fails the run.
  "$HERE/testbed/testbed.sh" down || rc=1
  echo "[e2e] real nodes: up, tests and down in $((SECONDS - start))s"
fi
exit "$rc"
