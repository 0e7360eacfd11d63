//! The fuzz targets' properties (`operator/fuzz`), run on stable Rust over
//! seeded pseudo-random inputs and every input kept in
//! `operator/fuzz/regressions/<target>/` (inputs the fuzzer once failed on).

#[path = "../fuzz/src/lib.rs"]
mod checks;

/// xorshift64*: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % (max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn run(target: &str, check: fn(&[u8]), cases: usize, max_len: usize) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut kept = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            check(&std::fs::read(e.path()).unwrap());
            kept += 1;
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for _ in 0..cases {
        let input = rng.bytes(max_len);
        if let Err(e) = std::panic::catch_unwind(|| check(&input)) {
            // Keep the input: it reproduces the failure under the fuzzer too
            // (`cargo fuzz run <target> <file>`).
            let out = std::env::temp_dir().join(format!("firedrill-{target}-failure.bin"));
            std::fs::write(&out, &input).unwrap();
            eprintln!("{target}: failing input saved to {}", out.display());
            std::panic::resume_unwind(e);
        }
    }
    eprintln!("{target}: {kept} kept inputs, {cases} generated");
}

#[test]
fn strings() {
    run("strings", checks::strings, 20_000, 64);
}

#[test]
fn spec() {
    run("spec", checks::spec, 3_000, 2_048);
}

#[test]
fn timeline() {
    run("timeline", checks::timeline, 3_000, 4_096);
}

#[test]
fn cluster() {
    run("cluster", checks::cluster, 3_000, 2_048);
}
