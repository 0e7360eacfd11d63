#!/usr/bin/env bash
# Real tools the tests use, installed by package name:
#   prometheus (Debian)      the prometheus probe tests
#   chromium (Debian)        the HTML report is rendered and screenshotted
#   nftables (Debian)        the node agent's partition, tested in a network namespace
#   musl-tools (Debian)      the static binary in the operator image (make image)
#   umoci, skopeo (Debian)   the image archive is unpacked and copied, checking digests
#   containerd, runc,        the testbed's real nodes (testbed.sh up --real N): a
#   socat (Debian)           container runtime per node, and relays to the API server
#   containernetworking-plugins (Debian)  the real nodes' pod network (bridge, host-local)
#   junitparser, pillow      the JUnit report is parsed the way CI servers
#   (PyPI)                   read it; the screenshot is checked not blank
# Debian packages are installed without letting them start system services.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUDO=
[[ $(id -u) -eq 0 ]] || SUDO=sudo

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v socat >/dev/null 2>&1 || need+=(socat)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
if ((${#need[@]})); then
  echo "[deps] installing from Debian's packages: ${need[*]}"
  created_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap '[[ -n $created_policy ]] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! python3 -c 'import junitparser, PIL' 2>/dev/null; then
  echo "[deps] installing from PyPI: $(tr '\n' ' ' <"$HERE/requirements.txt")"
  python3 -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
fi
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  echo "[deps] adding the Rust target x86_64-unknown-linux-musl (the image's static binary)"
  rustup target add x86_64-unknown-linux-musl
fi
