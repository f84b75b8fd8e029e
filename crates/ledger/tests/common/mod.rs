//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `shared/testdata`, which CI clones next to the repository (the repo is `main/`).
pub const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

/// The test data directory; panics with a clear message when it is missing, so that a missing
/// checkout can never make the vector tests pass vacuously.
pub fn testdata(sub: &str) -> PathBuf {
    let p = Path::new(TESTDATA).join(sub);
    assert!(
        p.is_dir(),
        "test vectors not found at {}: the shared/ directory (with testdata/) must be checked out \
         next to the repository root",
        p.display()
    );
    p
}

/// Every `*.json` file under `dir`, recursively, in a stable order.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn read_json(p: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
