// Shared by the build scripts tools/android/aosp-ws.py writes (include!d, not a crate):
// Soong's rust_bindgen flags applied to a bindgen::Builder, and the generation step.

/// Applies a Soong `bindgen_flag_files` file (one bindgen CLI flag per line) to `b`. Fails on a
/// flag it does not know, so a new line in AOSP's file is noticed rather than ignored.
#[allow(dead_code)]
fn apply_flag_file(mut b: bindgen::Builder, path: &str) -> bindgen::Builder {
    println!("cargo::rerun-if-changed={path}");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (flag, value) = line.split_once('=').unwrap_or((line, ""));
        let value = value.trim_matches('"');
        b = match flag {
            "--default-enum-style" if value == "rust_non_exhaustive" => {
                b.default_enum_style(bindgen::EnumVariation::Rust { non_exhaustive: true })
            }
            "--constified-enum" => b.constified_enum(value),
            "--allowlist-type" => b.allowlist_type(value),
            "--allowlist-function" => b.allowlist_function(value),
            "--blocklist-function" => b.blocklist_function(value),
            _ => panic!("{path}: bindgen flag {line:?} is not handled here"),
        };
    }
    b
}

/// Generates $OUT_DIR/bindings.rs; the vendor variant's headers see __ANDROID_VENDOR__ (the
/// variant is the --cfg android_vendor in RUSTFLAGS, visible here as CARGO_CFG_ANDROID_VENDOR).
fn generate(mut b: bindgen::Builder) {
    if std::env::var_os("CARGO_CFG_ANDROID_VENDOR").is_some() {
        b = b.clang_arg("-D__ANDROID_VENDOR__");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bindings.rs");
    b.generate().expect("bindgen").write_to_file(out).expect("write bindings.rs");
}
