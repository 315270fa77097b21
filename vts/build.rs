//! Shared by the two VTS packages (vts/ and vts/v1/, one source tree):
//! - exposes each frozen AIDL hash (aidl/aidl_api/vendor.dmabufloader/<N>/.hash) to the suite
//!   as VTS_FROZEN_AIDL_HASH_<N>, so `interface.hash` checks the service against the frozen
//!   snapshot of the version it reports, not only against the hash compiled into the bindings;
//! - sets `cfg(aidl_v1)` for the package `vts_hal_dmabuf_loader_v1`: the same suite built
//!   against the frozen v1 bindings, to prove a v1 client still passes against a v2 service.
use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(aidl_v1)");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let v1 = std::env::var("CARGO_PKG_NAME").is_ok_and(|n| n.ends_with("_v1"));
    if v1 {
        println!("cargo:rustc-cfg=aidl_v1");
    }
    let repo = Path::new(&manifest)
        .ancestors()
        .find(|d| d.join("aidl/aidl_api").is_dir())
        .map(Path::to_path_buf);
    let Some(repo) = repo else {
        println!("cargo:rerun-if-changed={manifest}");
        return;
    };
    let api = repo.join("aidl/aidl_api/vendor.dmabufloader");
    println!("cargo:rerun-if-changed={}", api.display());
    for v in 1..=9 {
        if let Ok(h) = std::fs::read_to_string(api.join(v.to_string()).join(".hash")) {
            if let Some(h) = h.lines().last().map(str::trim).filter(|h| !h.is_empty()) {
                println!("cargo:rustc-env=VTS_FROZEN_AIDL_HASH_{v}={h}");
            }
        }
    }
}
