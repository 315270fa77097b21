//! Generates the rsbinder bindings for vendor.dmabufloader, stamped with the frozen version and
//! hash (aidl_api/vendor.dmabufloader/<N>/.hash), as Soong's `aidl_interface` does for
//! `vendor.dmabufloader-V<N>-rust` on Android:
//! - `dmabufloader.rs`: the current version (2) from the AIDL sources, what every user links;
//! - `dmabufloader_v1.rs`: version 1 from its frozen snapshot aidl_api/vendor.dmabufloader/1,
//!   what a client built before v2 sees (the v1-client-against-v2-service tests use it).
use std::path::{Path, PathBuf};

/// The version the sources are (frozen as aidl_api/vendor.dmabufloader/2, `current` equal).
const VERSION: i32 = 2;
const API: &str = "aidl_api/vendor.dmabufloader";

fn frozen_hash(version: i32) -> String {
    let hash_file = Path::new(API).join(version.to_string()).join(".hash");
    println!("cargo:rerun-if-changed={}", hash_file.display());
    // Soong appends one line per re-freeze; the last one is the version's hash.
    std::fs::read_to_string(&hash_file)
        .ok()
        .and_then(|h| h.lines().last().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "notfrozen".to_string())
}

fn aidl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {dir:?}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "aidl"))
        .collect();
    files.sort();
    files
}

fn generate(root: &Path, version: i32, output: &str) {
    let src = root.join("vendor/dmabufloader");
    println!("cargo:rerun-if-changed={}", src.display());
    let hash = frozen_hash(version);
    let mut builder = rsbinder_aidl::Builder::new().include_dir(root);
    for f in aidl_files(&src) {
        println!("cargo:rerun-if-changed={}", f.display());
        builder = builder.source(f).version(version).hash(hash.clone());
    }
    builder
        .output(PathBuf::from(output))
        .generate()
        .unwrap_or_else(|err| panic!("AIDL compilation of {src:?} failed: {err:?}"));
}

fn main() {
    generate(Path::new("."), VERSION, "dmabufloader.rs");
    generate(&Path::new(API).join("1"), 1, "dmabufloader_v1.rs");
}
