//! `crds/` must be exactly what the Rust types generate. When this fails,
//! run `make crds` and commit the result.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let generated = firedrill::api::crd_files().expect("CRDs serialize");
    for (file, yaml) in &generated {
        let committed = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("crds/{file} is missing ({e}); run `make crds`"));
        assert!(
            committed == *yaml,
            "crds/{file} differs from what the types generate; run `make crds` and commit the result"
        );
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    let expected: BTreeSet<String> = generated.into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        on_disk, expected,
        "crds/ holds files the types do not generate"
    );
}
