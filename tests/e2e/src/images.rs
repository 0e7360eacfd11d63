//! The operator's and the node agent's images as `make image` builds them:
//! their archives, their root filesystems unpacked with umoci, and the
//! image's binary run from its root filesystem as a container would.

use crate::testbed::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The image archive `make image` built: `FIREDRILL_IMAGE`, else
/// `out/firedrill-<version>.oci.tar`.
pub fn image_archive() -> PathBuf {
    if let Ok(p) = std::env::var("FIREDRILL_IMAGE") {
        return PathBuf::from(p);
    }
    archive_in_out("firedrill")
}

/// The node agent's image archive `make image` writes beside the operator's.
pub fn agent_image_archive() -> PathBuf {
    archive_in_out("firedrill-agent")
}

fn archive_in_out(name: &str) -> PathBuf {
    let cargo = std::fs::read_to_string(repo_root().join("operator/Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_string();
    let path = repo_root().join(format!("out/{name}-{version}.oci.tar"));
    assert!(
        path.exists(),
        "no image archive at {}: build it with `make image` (tests/run-e2e.sh does)",
        path.display()
    );
    path
}

/// The version the image archive is tagged with (its only ref name).
pub fn image_ref_name() -> String {
    ref_name_of(&image_archive())
}

fn ref_name_of(archive: &Path) -> String {
    let name = archive.file_name().unwrap().to_string_lossy();
    let name = name.trim_end_matches(".oci.tar");
    let version = name
        .strip_prefix("firedrill-agent-")
        .or_else(|| name.strip_prefix("firedrill-"))
        .unwrap_or(name);
    version.to_string()
}

/// The image's root filesystem, unpacked once per test process by `umoci
/// unpack` (which checks every blob against its digest), under the testbed's
/// state directory (removed with it). Shared by the tests that only read it
/// (and write nothing they leave behind): a test that puts files in it
/// unpacks a copy of its own with [`unpack_image`].
pub fn image_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| unpack(&image_archive(), "image"))
        .clone()
}

/// A root filesystem of the image for one test alone, unpacked as
/// [`image_rootfs`] is into a directory named after `what`.
pub fn unpack_image(what: &str) -> PathBuf {
    unpack(&image_archive(), what)
}

/// The agent image's root filesystem, unpacked as [`image_rootfs`] is.
pub fn agent_image_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| unpack(&agent_image_archive(), "agent-image"))
        .clone()
}

fn unpack(archive: &Path, what: &str) -> PathBuf {
    let base = std::env::var("FIREDRILL_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join(format!("{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let layout = base.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&layout),
        "unpacking the image archive",
    );
    let bundle = base.join("bundle");
    let mut umoci = Command::new("umoci");
    umoci.arg("unpack");
    if euid() != 0 {
        umoci.arg("--rootless");
    }
    run_ok(
        umoci
            .arg("--image")
            .arg(format!("{}:{}", layout.display(), ref_name_of(archive)))
            .arg(&bundle),
        "umoci unpack",
    );
    bundle.join("rootfs")
}

/// Run a command to success, or panic with its output.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The effective user id (from /proc, without unsafe code).
pub fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

/// chroot(8) by absolute path: a child given the image's PATH would search
/// that instead.
pub fn chroot_program() -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("chroot"))
        .find(|p| p.exists())
        .expect("chroot (coreutils) on PATH")
}

/// A command that runs the image's `firedrill` the way a container runtime
/// would: chrooted into the image's root filesystem as uid/gid 65532 with
/// no environment but `env`. Needs root (chroot).
pub fn image_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    assert_eq!(
        euid(),
        0,
        "running the image's binary needs root (chroot --userspec)"
    );
    image_command_in(&image_rootfs(), args, env)
}

/// [`image_command`] in the root filesystem `rootfs` (from [`unpack_image`]).
pub fn image_command_in(rootfs: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    assert_eq!(
        euid(),
        0,
        "running the image's binary needs root (chroot --userspec)"
    );
    let mut cmd = Command::new(chroot_program());
    cmd.arg("--userspec=65532:65532")
        .arg(rootfs)
        .arg("/usr/local/bin/firedrill")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin")
        .env("HOME", "/home/nonroot");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}
