#!/usr/bin/env bash
# Run the end-to-end tests against a testbed of their own: start it, run
# `cargo test -p firedrill-e2e`, and stop it again, whether the tests pass or fail.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FIREDRILL_TESTBED_DIR=${FIREDRILL_E2E_TESTBED_DIR:-$(mktemp -d /tmp/firedrill-e2e.XXXXXX)}
NODES=${FIREDRILL_E2E_NODES:-6}
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

"$HERE/testbed/testbed.sh" up "$NODES"
eval "$("$HERE/testbed/testbed.sh" env)"
export FIREDRILL_TESTBED_KUBECONFIG=$KUBECONFIG
cargo build -p firedrill
# The operator image (static musl binary), which the image and helm tests use.
"$HERE/../image/build.sh"
rc=0
TMPDIR=$SCRATCH cargo test --no-fail-fast -p firedrill-e2e "$@" || rc=$?
if ((rc != 0)); then
  # What the testbed's own parts said last: a failure is often explained there.
  for f in dataplane kwok kube-controller-manager; do
    echo "--- testbed log $f (last 40 lines)"
    tail -n 40 "$FIREDRILL_TESTBED_DIR/logs/$f.log" 2>/dev/null || true
  done
fi
exit "$rc"
