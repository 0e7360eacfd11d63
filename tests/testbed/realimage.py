#!/usr/bin/env python3
"""Write a one-binary OCI image archive for the testbed's real nodes (the
pause and serving images), with no container engine: the binary at
/nodekit, run as `/nodekit CMD`. Uses the layout writer of image/oci.py;
the archive names the image (io.containerd.image.name) for `ctr images import`.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "image"))
from oci import canonical, gzip_bytes, sha256, tar_bytes  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--name", required=True, help="the image's full name, e.g. localhost/testbed/pause:1")
    ap.add_argument("--cmd", required=True, help="the program's first argument")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.binary, "rb") as f:
        binary = f.read()
    layer = tar_bytes([("nodekit", "file", 0o755, 0, binary), ("tmp", "dir", 0o1777, 0, None)], 0)
    layer_gz = gzip_bytes(layer)
    config = canonical({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/nodekit", args.cmd], "Env": ["PATH=/"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(layer_gz), "size": len(layer_gz)}],
    })
    tag = args.name.rsplit(":", 1)[1]
    index = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(manifest),
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": args.name, "org.opencontainers.image.ref.name": tag},
        }],
    })
    entries = [("blobs", "dir", 0o755, 0, None), ("blobs/sha256", "dir", 0o755, 0, None)]
    entries += [(f"blobs/sha256/{sha256(b)[7:]}", "file", 0o644, 0, b) for b in sorted({layer_gz, config, manifest})]
    entries += [("index.json", "file", 0o644, 0, index),
                ("oci-layout", "file", 0o644, 0, canonical({"imageLayoutVersion": "1.0.0"}))]
    with open(args.out + ".tmp", "wb") as f:
        f.write(tar_bytes(entries, 0))
    os.replace(args.out + ".tmp", args.out)
    print(json.dumps({"archive": args.out, "manifest": sha256(manifest)}))


if __name__ == "__main__":
    main()
