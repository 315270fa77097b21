//! Exposes the frozen AIDL hash (aidl/aidl_api/vendor.dmabufloader/1/.hash) to the test binary
//! as VTS_FROZEN_AIDL_HASH, so `interface.hash` checks the service against the frozen snapshot
//! and not only against the hash compiled into the bindings. Absent file: the variable is unset
//! and the test falls back to the bindings' HASH (Soong stamps that with the frozen hash).
use std::path::Path;

fn main() {
    let hash_file = Path::new("../aidl/aidl_api/vendor.dmabufloader/1/.hash");
    // Watch the snapshot directory once it exists; before that, the aidl/ tree (Cargo scans a
    // directory recursively, so the snapshot appearing reruns this script). A missing path
    // would instead rerun it on every build.
    let watch = if Path::new("../aidl/aidl_api").exists() {
        "../aidl/aidl_api"
    } else {
        "../aidl"
    };
    println!("cargo:rerun-if-changed={watch}");
    if let Ok(h) = std::fs::read_to_string(hash_file) {
        let h = h.trim();
        if !h.is_empty() {
            println!("cargo:rustc-env=VTS_FROZEN_AIDL_HASH={h}");
        }
    }
}
