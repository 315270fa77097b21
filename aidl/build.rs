//! Generates the rsbinder bindings for vendor.dmabufloader from the AIDL sources, stamped with
//! the frozen version and hash (aidl_api/vendor.dmabufloader/<N>/.hash), as Soong's
//! `aidl_interface` does for `vendor.dmabufloader-V<N>-rust` on Android.
use std::path::{Path, PathBuf};

const VERSION: i32 = 1;

fn main() {
    let src = PathBuf::from("vendor/dmabufloader");
    let hash_file = Path::new("aidl_api/vendor.dmabufloader")
        .join(VERSION.to_string())
        .join(".hash");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", hash_file.display());
    let hash = std::fs::read_to_string(&hash_file)
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "notfrozen".to_string());

    let mut builder = rsbinder_aidl::Builder::new();
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .expect("aidl sources")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "aidl"))
        .collect();
    files.sort();
    for f in files {
        builder = builder.source(f).version(VERSION).hash(hash.clone());
    }
    builder
        .output(PathBuf::from("dmabufloader.rs"))
        .generate()
        .unwrap_or_else(|err| panic!("AIDL compilation failed: {err:?}"));
}
