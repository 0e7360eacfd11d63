#!/usr/bin/env bash
# A release gate in any CI: run the drill against staging and fail the
# pipeline when an SLO is missed. Exit codes: 0 Passed, 1 Failed,
# 2 Aborted or Inconclusive, 3 usage error or cluster unreachable.
set -uo pipefail
DRILL=${1:-examples/pangyo/drill.yaml}
mkdir -p reports
firedrill run -f "$DRILL" --wait --timeout 30m \
  --junit reports/firedrill.xml --json reports/firedrill.json --html reports/firedrill.html
code=$?
case $code in
  0) echo "firedrill: every critical SLO met its objectives" ;;
  1) echo "firedrill: an SLO was missed; see reports/firedrill.html" ;;
  2) echo "firedrill: aborted or inconclusive; the zone was restored" ;;
  *) echo "firedrill: could not run (usage or cluster)" ;;
esac
exit $code
