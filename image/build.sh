#!/usr/bin/env bash
# `make image`: the operator's container image as an OCI archive, built with
# no container engine: a fully static (musl) firedrill binary on an empty
# base, written by image/oci.py; and the node agent's image, the same binary
# with nft beside it. Prints the archives' paths and digests.
#
#   out/firedrill-<version>.oci.tar        (OCI image layout in a tar)
#   out/firedrill-agent-<version>.oci.tar  (the agent: root, nft and its libraries)
#
# Load or push it with skopeo, for example:
#   skopeo copy oci-archive:out/firedrill-0.1.0.oci.tar docker://REGISTRY/firedrill:0.1.0
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TARGET=x86_64-unknown-linux-musl

if ! command -v musl-gcc >/dev/null 2>&1; then
  echo "image: musl-gcc is missing (Debian package musl-tools); run tests/deps.sh" >&2
  exit 2
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  echo "[image] adding the Rust target $TARGET"
  rustup target add "$TARGET"
fi

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' operator/Cargo.toml | head -1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
CACHE=${FIREDRILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/firedrill}
RUST_VERSION=$(rustc --version | cut -d' ' -f2)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/cargo/rust-$RUST_VERSION}
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}

# Reproducible: symbols stripped, the registry's path remapped. Cargo hands
# rustc this workspace's sources by relative path, so the clone's own path
# is not in the binary, and the flags (part of cargo's cache key) are the
# same for every clone: a new clone reuses the cached build.
export CC_x86_64_unknown_linux_musl=musl-gcc
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$CARGO_HOME_DIR=/cargo"
export CARGO_PROFILE_RELEASE_STRIP=symbols
start=$(date +%s)
cargo build --release --locked --target "$TARGET" -p firedrill --bin firedrill
BIN=$CARGO_TARGET_DIR/$TARGET/release/firedrill
echo "[image] binary built in $(($(date +%s) - start))s: $(stat -c %s "$BIN") bytes"

mkdir -p out
OUT=out/firedrill-$VERSION.oci.tar
python3 image/oci.py --binary "$BIN" --version "$VERSION" --revision "$REVISION" --out "$OUT"
echo "[image] $OUT: $(stat -c %s "$OUT") bytes, sha256 $(sha256sum "$OUT" | cut -d' ' -f1)"

# The node agent's image (the chart's agent DaemonSet, for PowerLoss drills):
# the same binary, run as root, with this machine's nft and its libraries.
if ! command -v nft >/dev/null 2>&1; then
  echo "image: nft is missing (Debian package nftables); the agent image carries it; run tests/deps.sh" >&2
  exit 2
fi
AGENT=out/firedrill-agent-$VERSION.oci.tar
python3 image/oci.py --agent --binary "$BIN" --version "$VERSION" --revision "$REVISION" --out "$AGENT"
echo "[image] $AGENT: $(stat -c %s "$AGENT") bytes, sha256 $(sha256sum "$AGENT" | cut -d' ' -f1)"
