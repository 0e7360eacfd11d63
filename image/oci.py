#!/usr/bin/env python3
"""Write a reproducible OCI image archive for the firedrill binary, with no
container engine: an OCI image layout (oci-layout, index.json, blobs) in a tar.

The image is one layer on an empty base: the static binary, /etc/passwd and
/etc/group naming uid/gid 65532 (nonroot), its home and /tmp. Every
timestamp is 0 (or SOURCE_DATE_EPOCH), owners and modes are fixed, entries
are sorted and gzip has no name or time, so the same binary always gives the
same digest.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

UID = 65532
PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"nonroot:x:{UID}:{UID}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnonroot:x:{UID}:\n"


def tar_bytes(entries, mtime):
    """A tar (ustar) of (path, kind, mode, uid, data) entries, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, kind, mode, uid, data in entries:
            info = tarfile.TarInfo(path)
            info.mtime = mtime
            info.mode = mode
            info.uid = info.gid = uid
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    # mtime 0 and no file name: the same bytes every time (as `gzip -n`).
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="the static firedrill binary")
    ap.add_argument("--version", required=True)
    ap.add_argument("--revision", default="unknown")
    ap.add_argument("--source", default="https://github.com/firedrill/firedrill")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--out", required=True, help="the archive to write (.tar)")
    args = ap.parse_args()

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = "1970-01-01T00:00:00Z" if epoch == 0 else None
    if created is None:
        import datetime

        created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    with open(args.binary, "rb") as f:
        binary = f.read()

    layer = tar_bytes(
        [
            ("etc", "dir", 0o755, 0, None),
            ("etc/group", "file", 0o644, 0, GROUP.encode()),
            ("etc/passwd", "file", 0o644, 0, PASSWD.encode()),
            ("home", "dir", 0o755, 0, None),
            ("home/nonroot", "dir", 0o700, UID, None),
            ("tmp", "dir", 0o1777, 0, None),
            ("usr", "dir", 0o755, 0, None),
            ("usr/local", "dir", 0o755, 0, None),
            ("usr/local/bin", "dir", 0o755, 0, None),
            ("usr/local/bin/firedrill", "file", 0o755, 0, binary),
        ],
        epoch,
    )
    layer_gz = gzip_bytes(layer)

    labels = {
        "org.opencontainers.image.title": "firedrill",
        "org.opencontainers.image.description": "Rehearse the loss of a whole data center and measure whether services fail over within their SLOs",
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    config = canonical(
        {
            "architecture": args.arch,
            "os": "linux",
            "created": created,
            "config": {
                "User": f"{UID}:{UID}",
                "Entrypoint": ["/usr/local/bin/firedrill"],
                "Cmd": ["operator"],
                "Env": ["PATH=/usr/local/bin"],
                "WorkingDir": "/home/nonroot",
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            "history": [{"created": created, "created_by": "image/oci.py: firedrill binary, passwd, group"}],
        }
    )
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer_gz),
                    "size": len(layer_gz),
                }
            ],
            "annotations": labels,
        }
    )
    index = canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": args.arch, "os": "linux"},
                    "annotations": {"org.opencontainers.image.ref.name": args.version},
                }
            ],
        }
    )
    blobs = sorted(
        {sha256(b)[len("sha256:"):]: b for b in (layer_gz, config, manifest)}.items()
    )
    entries = [
        ("blobs", "dir", 0o755, 0, None),
        ("blobs/sha256", "dir", 0o755, 0, None),
    ]
    entries += [(f"blobs/sha256/{h}", "file", 0o644, 0, b) for h, b in blobs]
    entries += [
        ("index.json", "file", 0o644, 0, index),
        ("oci-layout", "file", 0o644, 0, canonical({"imageLayoutVersion": "1.0.0"})),
    ]
    archive = tar_bytes(entries, epoch)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(archive)
    os.replace(tmp, args.out)
    print(
        json.dumps(
            {
                "archive": args.out,
                "manifest": sha256(manifest),
                "config": sha256(config),
                "layer": sha256(layer_gz),
                "layerBytes": len(layer_gz),
                "archiveSha256": sha256(archive),
            }
        )
    )


if __name__ == "__main__":
    main()
