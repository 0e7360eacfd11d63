//! `crds/` must be exactly what the Rust types generate. When this fails,
//! run `make crds` and commit the result.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[test]
fn committed_crds_match_the_types() {
    check(&manifest_dir().join("../crds"));
}

#[test]
fn the_helm_chart_carries_the_same_crds() {
    check(&manifest_dir().join("../charts/firedrill/crds"));
}

/// Read at run time, so a build cache shared between clones checks this clone.
fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
}

fn check(dir: &Path) {
    let generated = firedrill::api::crd_files().expect("CRDs serialize");
    for (file, yaml) in &generated {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| {
            panic!("{}/{file} is missing ({e}); run `make crds`", dir.display())
        });
        assert!(
            committed == *yaml,
            "{}/{file} differs from what the types generate; run `make crds` and commit the result",
            dir.display()
        );
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    let expected: BTreeSet<String> = generated.into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        on_disk,
        expected,
        "{} holds files the types do not generate",
        dir.display()
    );
}
