#!/usr/bin/env bash
# Render deploy/firedrill.yaml, the chart with its defaults as one manifest
# for `kubectl apply` (`make manifest`; a test fails when it drifts from the chart).
# Helm hooks are left out: the uninstall hook would run at apply. Without
# Helm, run `firedrill stand-down` before `kubectl delete -f`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELM=${HELM:-$("$REPO/tests/testbed/testbed.sh" helm)}
cat <<'YAML'
# firedrill, rendered from charts/firedrill with its default values
# (deploy/render.sh). Install without Helm:
#   kubectl apply --server-side -f deploy/firedrill.yaml
# Before deleting it, end every drill and restore every zone:
#   firedrill stand-down
# The image is ghcr.io/firedrill/firedrill:<appVersion>; push the one
# `make image` builds to your registry and change it below if needed.
apiVersion: v1
kind: Namespace
metadata:
  name: firedrill-system
  labels:
    pod-security.kubernetes.io/enforce: restricted
YAML
"$HELM" template firedrill "$REPO/charts/firedrill" --namespace firedrill-system --include-crds --no-hooks \
  | grep -v '^# Source: '
