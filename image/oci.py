#!/usr/bin/env python3
"""Write a reproducible OCI image archive for the firedrill binary, with no
container engine: an OCI image layout (oci-layout, index.json, blobs) in a tar.

The operator image is one layer on an empty base: the static binary,
/etc/passwd and /etc/group naming uid/gid 65532 (nonroot), its home and
/tmp. Every timestamp is 0 (or SOURCE_DATE_EPOCH), owners and modes are
fixed, entries are sorted and gzip has no name or time, so the same binary
always gives the same digest.

With --agent it writes the node agent's image instead: the same binary,
run as root with `agent` as its command, and beside it the `nft` program
given by --nft with every shared library it loads (as `ldd` lists them,
the dynamic loader included), each at the path the loader looks for it.
The agent programs nftables in its node's network namespace; that needs
root and nft, and nothing else of a distribution.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
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


def shared_libraries(program):
    """The absolute paths of the shared objects `program` loads, the dynamic
    loader included, as `ldd` resolves them on this machine."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)", line)
        if m:
            paths.append(m.group(1))
        elif "not found" in line:
            raise SystemExit(f"{program}: a library is missing: {line.strip()}")
    if not paths:
        raise SystemExit(f"{program}: ldd lists no libraries (is it dynamically linked?)")
    return sorted(set(paths))


def with_parents(files):
    """Directory entries for every parent of `files`, then the files, sorted."""
    dirs = set()
    for path, *_ in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    entries = {d: (d, "dir", 0o755, 0, None) for d in dirs}
    for f in files:
        entries[f[0]] = f
    return [entries[k] for k in sorted(entries)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="the static firedrill binary")
    ap.add_argument("--version", required=True)
    ap.add_argument("--revision", default="unknown")
    ap.add_argument("--source", default="https://github.com/firedrill/firedrill")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--out", required=True, help="the archive to write (.tar)")
    ap.add_argument("--agent", action="store_true", help="the node agent's image (root, nft beside the binary)")
    ap.add_argument("--nft", help="with --agent: the nft program to put in the image (default: the one on PATH)")
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

    if args.agent:
        nft = args.nft or subprocess.run(["sh", "-c", "command -v nft"], capture_output=True, text=True).stdout.strip()
        if not nft:
            raise SystemExit("the agent image needs nft (Debian package nftables); none on PATH, and no --nft")
        nft_version = subprocess.run([nft, "--version"], capture_output=True, text=True, check=True).stdout.strip()
        files = [("usr/local/bin/firedrill", "file", 0o755, 0, binary)]
        with open(nft, "rb") as f:
            files.append(("usr/sbin/nft", "file", 0o755, 0, f.read()))
        for lib in shared_libraries(nft):
            with open(lib, "rb") as f:
                # The content, at the path the loader asks for (no symlinks).
                files.append((lib.lstrip("/"), "file", 0o755, 0, f.read()))
        entries = with_parents(files + [("tmp", "dir", 0o1777, 0, None)])
        user, cmd, path = "0:0", ["agent"], "/usr/local/bin:/usr/sbin"
        title = "firedrill-agent"
        description = "The firedrill node agent: cuts its node off the network during a PowerLoss drill"
        workdir = "/"
        created_by = f"image/oci.py --agent: firedrill binary, {nft_version} and its libraries"
    else:
        entries = [
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
        ]
        user, cmd, path = f"{UID}:{UID}", ["operator"], "/usr/local/bin"
        title = "firedrill"
        description = "Rehearse the loss of a whole data center and measure whether services fail over within their SLOs"
        workdir = "/home/nonroot"
        created_by = "image/oci.py: firedrill binary, passwd, group"
    layer = tar_bytes(entries, epoch)
    layer_gz = gzip_bytes(layer)

    labels = {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": description,
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
                "User": user,
                "Entrypoint": ["/usr/local/bin/firedrill"],
                "Cmd": cmd,
                "Env": [f"PATH={path}"],
                "WorkingDir": workdir,
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            "history": [{"created": created, "created_by": created_by}],
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
