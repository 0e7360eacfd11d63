//! A command line that cannot be read exits 3 (usage), never clap's 2, which
//! a pipeline gate would read as Inconclusive. Help and version exit 0.

use std::process::Command;

fn firedrill(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_firedrill"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("the firedrill binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreadable_command_line_is_a_usage_error() {
    let (code, _, err) = firedrill(&["run", "-f", "drill.yaml", "--wiat"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("--wiat"), "{err}");
    let (code, _, err) = firedrill(&["frobnicate"]);
    assert_eq!(code, Some(3), "{err}");
    let (code, _, err) = firedrill(&["run", "-f", "drill.yaml", "--timeout", "soon"]);
    assert_eq!(code, Some(3), "{err}");
}

#[test]
fn help_and_version_exit_zero() {
    let (code, out, _) = firedrill(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("plan"), "{out}");
    let (code, out, _) = firedrill(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("firedrill "), "{out}");
}
