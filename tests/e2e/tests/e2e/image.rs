//! The operator image `make image` builds (tests/run-e2e.sh builds it before
//! the tests): reproducible, digest-valid, configured to run as uid 65532,
//! with a static binary that works from the image's own root filesystem.
//! The `helm` tests run a whole experiment with this image's binary. The node
//! agent's image (the same binary with nft) partitions a network namespace
//! from its own root filesystem.
//!
//! Nothing here touches the cluster, but unpacking and assembling images is
//! heavy work the drills' timing should not compete with: every test shares
//! the testbed (`zones_lock_shared`), so none of them runs during a drill.

use firedrill_e2e::*;
use serde_json::Value;
use std::process::Command;

fn sha256(path: &std::path::Path) -> String {
    run_ok(Command::new("sha256sum").arg(path), "sha256sum")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn skopeo_ref() -> String {
    format!(
        "oci-archive:{}:{}",
        image_archive().display(),
        image_ref_name()
    )
}

#[test]
fn assembling_it_again_gives_the_same_archive() {
    let _shared = zones_lock_shared();
    let archive = image_archive();
    let config: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo").args(["inspect", "--config", &skopeo_ref()]),
        "skopeo inspect --config",
    ))
    .unwrap();
    let labels = &config["config"]["Labels"];
    // The image's own binary, assembled again elsewhere, under another umask.
    let dir = std::env::temp_dir().join(format!("firedrill-image-again-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let again = dir.join("again.oci.tar");
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec python3 \"$@\"")
        .arg("sh")
        .arg(repo_root().join("image/oci.py"))
        .arg("--binary")
        .arg(image_rootfs().join("usr/local/bin/firedrill"))
        .args([
            "--version",
            labels["org.opencontainers.image.version"].as_str().unwrap(),
        ])
        .args([
            "--revision",
            labels["org.opencontainers.image.revision"]
                .as_str()
                .unwrap(),
        ])
        .arg("--out")
        .arg(&again)
        .current_dir(&dir)
        .output()
        .unwrap();
    let same = out.status.success() && sha256(&again) == sha256(&archive);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        same,
        "the same binary assembled again gave a different archive"
    );
}

#[test]
fn skopeo_copies_it_checking_every_digest_and_the_config_is_as_promised() {
    let _shared = zones_lock_shared();
    let dir = std::env::temp_dir().join(format!("firedrill-image-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let docker = dir.join("image.docker.tar");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", &skopeo_ref()])
        .arg(format!(
            "docker-archive:{}:firedrill:test",
            docker.display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let config: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo").args(["inspect", "--config", &skopeo_ref()]),
        "skopeo inspect --config",
    ))
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/firedrill"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["operator"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let labels = &c["Labels"];
    for key in [
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
    ] {
        assert!(
            labels[key].as_str().is_some_and(|v| !v.is_empty()),
            "label {key} missing: {labels}"
        );
    }
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        config["created"], "1970-01-01T00:00:00Z",
        "timestamps are 0"
    );
}

/// An ELF file's program header types.
fn program_headers(bytes: &[u8]) -> Vec<u32> {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap())
        })
        .collect()
}

#[test]
fn the_binary_is_static_and_runs_from_the_image_as_uid_65532() {
    let _shared = zones_lock_shared();
    let rootfs = image_rootfs();
    let bin = std::fs::read(rootfs.join("usr/local/bin/firedrill")).unwrap();
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    let headers = program_headers(&bin);
    assert!(
        !headers.contains(&PT_INTERP),
        "the binary asks for a dynamic loader"
    );
    assert!(
        !headers.contains(&PT_DYNAMIC) || !bin.windows(8).any(|w| w == b"libc.so."),
        "the binary links a shared libc"
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    // Nothing but the binary and what it needs.
    let mut files: Vec<String> = walk(&rootfs)
        .into_iter()
        .map(|p| p.strip_prefix(&rootfs).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["etc/group", "etc/passwd", "usr/local/bin/firedrill"],
        "files in the image"
    );

    // `firedrill crd`, run from the image as uid 65532, matches crds/.
    let out = run_ok(
        &mut image_command(&["crd", "--dir", "/tmp/crds"], &[]),
        "firedrill crd in the image",
    );
    let _ = out;
    for f in std::fs::read_dir(repo_root().join("crds"))
        .unwrap()
        .flatten()
    {
        let ours = std::fs::read_to_string(f.path()).unwrap();
        let theirs = std::fs::read_to_string(rootfs.join("tmp/crds").join(f.file_name()))
            .unwrap_or_else(|e| panic!("the image wrote no {:?}: {e}", f.file_name()));
        assert_eq!(
            theirs,
            ours,
            "{:?} from the image differs from crds/",
            f.file_name()
        );
    }
    // It wrote them as uid 65532, the image's user.
    let meta = std::fs::metadata(rootfs.join("tmp/crds")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65532);
    let _ = std::fs::remove_dir_all(rootfs.join("tmp/crds"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The node agent's image: the same binary as root, with its own nft and the
/// libraries nft loads. From the unpacked image alone (a chroot with nothing
/// of this machine's PATH), inside a network namespace of its own, `agent
/// cut` installs the partition with the image's nft, a server on that
/// namespace's loopback stops answering, and `agent lift` brings it back.
#[test]
fn the_agent_image_cuts_a_network_namespace_off_with_its_own_nft() {
    let _shared = zones_lock_shared();
    assert_eq!(euid(), 0, "chroot and network namespaces need root");
    let archive = agent_image_archive();
    let reference = format!("oci-archive:{}:{}", archive.display(), image_ref_name());
    let config: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo").args(["inspect", "--config", &reference]),
        "skopeo inspect --config (agent)",
    ))
    .unwrap();
    let c = &config["config"];
    assert_eq!(
        c["User"], "0:0",
        "nftables in the host's namespace needs root"
    );
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/firedrill"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["agent"]));
    assert_eq!(
        c["Env"],
        serde_json::json!(["PATH=/usr/local/bin:/usr/sbin"])
    );
    assert_eq!(
        c["Labels"]["org.opencontainers.image.title"],
        "firedrill-agent"
    );

    let rootfs = agent_image_rootfs();
    // The agent's binary is the operator image's, byte for byte.
    assert!(
        std::fs::read(rootfs.join("usr/local/bin/firedrill")).unwrap()
            == std::fs::read(image_rootfs().join("usr/local/bin/firedrill")).unwrap(),
        "the agent image carries another firedrill binary"
    );
    let script = r#"
in_image() { env -i PATH=/usr/local/bin:/usr/sbin "$CHROOT" "$ROOTFS" "$@"; }
ip link set lo up
python3 -c 'import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 18182)); s.listen(16)
while True:
    c,_=s.accept(); c.sendall(b"up\n"); c.close()' &
server=$!
trap 'kill $server' EXIT
sleep 0.5
try() { python3 -c 'import socket
s=socket.create_connection(("127.0.0.1", 18182), timeout=1.5)
print(s.recv(16).decode().strip() or "empty")' 2>/dev/null || echo "timed out"; }
echo "nft: $(in_image nft --version)"
echo "before: $(try)"
in_image firedrill agent cut --until $(( $(date +%s) + 600 )) --no-spare-loopback
echo "rules: $(in_image nft list table inet firedrill_power_loss | grep -c 'meta time')"
echo "during: $(try)"
in_image firedrill agent lift
echo "tables after lift: $(in_image nft list tables | wc -l)"
echo "lifted: $(try)"
"#;
    let out = Command::new("unshare")
        .args(["-n", "bash", "-euo", "pipefail", "-c", script])
        .env("CHROOT", chroot_program())
        .env("ROOTFS", &rootfs)
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nft: nftables v"), "{text}");
    assert!(text.contains("before: up"), "{text}");
    assert!(text.contains("rules: 3"), "{text}");
    assert!(
        text.contains("during: timed out"),
        "dropped, not refused:\n{text}"
    );
    assert!(text.contains("tables after lift: 0"), "{text}");
    assert!(text.contains("lifted: up"), "{text}");
}
