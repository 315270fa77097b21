//! Checks that a frozen AIDL API snapshot says the same thing as the AIDL sources.
//!
//! Soong does this on Android with `aidl --checkapi=equal <aidl_api/name/N> <dump of srcs>`: the
//! snapshot is the `--dumpapi` form of the sources (fully qualified type names, no doc comments,
//! the "THIS FILE IS IMMUTABLE" preamble), so a textual diff against the sources means nothing.
//! Here both trees go through a real AIDL compiler (rsbinder-aidl, the one that builds this
//! project's bindings) and the generated Rust is compared: any difference in a type, name,
//! direction, annotation, default value, enumerator or method order changes the generated code,
//! while comments and formatting do not.
//!
//! The `.hash` file is not checked here: `tools/android-checks` recomputes it with the exact
//! shell pipeline of Soong's `aidlVerifyHashRule`.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The first line of the preamble `aidl --dumpapi` writes into every snapshot file.
pub const FROZEN_MARKER: &str =
    "// THIS FILE IS IMMUTABLE. DO NOT EDIT IN ANY CASE.                          //";

/// Every `*.aidl` file under `root`, as paths relative to `root`, sorted. An `aidl_api`
/// directory (the snapshots, which live beside the sources) is not entered.
pub fn aidl_files(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading directory {dir:?}"))? {
            let path = entry.with_context(|| format!("listing {dir:?}"))?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "aidl_api") {
                    continue;
                }
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "aidl") {
                out.push(
                    path.strip_prefix(root)
                        .expect("walk stays under root")
                        .to_path_buf(),
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Compiles the given files (relative to `root`) with rsbinder-aidl, every file stamped with
/// `version` and a fixed hash, and returns the generated Rust.
pub fn compile(root: &Path, files: &[PathBuf], version: i32) -> Result<String> {
    ensure!(!files.is_empty(), "no .aidl files under {root:?}");
    let out = tempfile::tempdir().context("creating a directory for the generated code")?;
    let mut builder = rsbinder_aidl::Builder::new()
        .dest_dir(out.path())
        .include_dir(root);
    for f in files {
        // The same hash on both sides: the real one is checked separately, by the AOSP pipeline.
        builder = builder
            .source(root.join(f))
            .version(version)
            .hash("snapshot-check");
    }
    builder
        .output(PathBuf::from("generated.rs"))
        .generate()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("the AIDL compiler rejected the files under {root:?}"))?;
    fs::read_to_string(out.path().join("generated.rs")).context("reading the generated code")
}

/// Compares the snapshot directory `snapshot` (e.g. `aidl_api/vendor.dmabufloader/1`) with the
/// AIDL sources under `sources` (the directory that holds `vendor/...`). Returns the number of
/// files compared, or an error saying exactly what differs.
pub fn check_snapshot(sources: &Path, snapshot: &Path, version: i32) -> Result<usize> {
    let src_files = aidl_files(sources)?;
    let snap_files = aidl_files(snapshot)?;
    let src_set: BTreeSet<_> = src_files.iter().collect();
    let snap_set: BTreeSet<_> = snap_files.iter().collect();
    let missing: Vec<_> = src_set.difference(&snap_set).collect();
    let extra: Vec<_> = snap_set.difference(&src_set).collect();
    if !missing.is_empty() || !extra.is_empty() {
        bail!(
            "snapshot {snapshot:?} does not hold the same files as {sources:?}: \
             missing {missing:?}, extra {extra:?}"
        );
    }
    for f in &snap_files {
        let text = fs::read_to_string(snapshot.join(f))
            .with_context(|| format!("reading {:?}", snapshot.join(f)))?;
        ensure!(
            text.lines().any(|l| l == FROZEN_MARKER),
            "{:?} lacks the frozen-snapshot preamble of `aidl --dumpapi`",
            snapshot.join(f)
        );
    }
    let from_sources = compile(sources, &src_files, version)?;
    let from_snapshot = compile(snapshot, &snap_files, version)?;
    if from_sources != from_snapshot {
        let (line, a, b) = first_difference(&from_sources, &from_snapshot);
        bail!(
            "snapshot {snapshot:?} differs from the sources {sources:?} (generated code line \
             {line}):\n  sources:  {a}\n  snapshot: {b}"
        );
    }
    Ok(src_files.len())
}

/// The first line where two texts differ: (1-based line number, line of a, line of b).
fn first_difference<'a>(a: &'a str, b: &'a str) -> (usize, &'a str, &'a str) {
    let mut la = a.lines();
    let mut lb = b.lines();
    let mut n = 1;
    loop {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => n += 1,
            (x, y) => return (n, x.unwrap_or("<end>"), y.unwrap_or("<end>")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_aidl() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../aidl")
    }

    fn snapshot(v: &str) -> PathBuf {
        repo_aidl().join("aidl_api/vendor.dmabufloader").join(v)
    }

    /// The version the sources are (aidl_api/vendor.dmabufloader/2).
    const LATEST: i32 = 2;

    /// A private copy of the latest frozen snapshot, to break on purpose.
    fn copy_snapshot() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let src = snapshot("2");
        for f in aidl_files(&src).unwrap() {
            let dst = dir.path().join(&f);
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(src.join(&f), dst).unwrap();
        }
        dir
    }

    fn edit(dir: &Path, file: &str, from: &str, to: &str) {
        let p = dir.join("vendor/dmabufloader").join(file);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?} not in {p:?}");
        fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn expect_mismatch(dir: &Path, what: &str) {
        let err = check_snapshot(&repo_aidl(), dir, LATEST).expect_err(what);
        let msg = format!("{err:#}");
        assert!(msg.contains("differs"), "{what}: {msg}");
    }

    #[test]
    fn frozen_v2_and_current_match_the_sources() {
        assert_eq!(
            check_snapshot(&repo_aidl(), &snapshot("2"), LATEST).unwrap(),
            11
        );
        assert_eq!(
            check_snapshot(&repo_aidl(), &snapshot("current"), LATEST).unwrap(),
            11
        );
    }

    #[test]
    fn frozen_v1_is_not_the_sources_any_more() {
        // v2 added methods, enumerators and fields: the v1 snapshot must not pass as current.
        let err = check_snapshot(&repo_aidl(), &snapshot("1"), LATEST).unwrap_err();
        assert!(format!("{err:#}").contains("differs"), "{err:#}");
    }

    #[test]
    fn formatting_and_comments_do_not_count() {
        let dir = copy_snapshot();
        edit(
            dir.path(),
            "ILoadTask.aidl",
            "  void cancel();",
            "  /** Stops. */\n    void   cancel( ) ;",
        );
        assert_eq!(
            check_snapshot(&repo_aidl(), dir.path(), LATEST).unwrap(),
            11
        );
    }

    #[test]
    fn changed_method_signature_is_caught() {
        let dir = copy_snapshot();
        edit(
            dir.path(),
            "IDmabufLoader.aidl",
            "getHeaps();",
            "getHeaps(int which);",
        );
        expect_mismatch(dir.path(), "an added argument");
    }

    #[test]
    fn changed_enumerator_value_is_caught() {
        let dir = copy_snapshot();
        edit(dir.path(), "ErrorCode.aidl", "BUSY = 13,", "BUSY = 17,");
        expect_mismatch(dir.path(), "a renumbered enumerator");
    }

    #[test]
    fn changed_default_value_is_caught() {
        let dir = copy_snapshot();
        edit(
            dir.path(),
            "LoadRequest.aidl",
            "long length = (-1) /* -1 */;",
            "long length = 0;",
        );
        expect_mismatch(dir.path(), "a changed default");
    }

    #[test]
    fn reordered_methods_are_caught() {
        // Transaction codes follow declaration order: a swap breaks the wire.
        let dir = copy_snapshot();
        edit(
            dir.path(),
            "ILoadCallback.aidl",
            "  oneway void onComplete(in vendor.dmabufloader.LoadResult result);\n  oneway void onError(int errorCode, String message);",
            "  oneway void onError(int errorCode, String message);\n  oneway void onComplete(in vendor.dmabufloader.LoadResult result);",
        );
        expect_mismatch(dir.path(), "swapped methods");
    }

    #[test]
    fn dropped_oneway_is_caught() {
        let dir = copy_snapshot();
        edit(
            dir.path(),
            "ILoadCallback.aidl",
            "oneway void onProgress",
            "void onProgress",
        );
        expect_mismatch(dir.path(), "a method that is no longer oneway");
    }

    #[test]
    fn missing_file_is_caught() {
        let dir = copy_snapshot();
        fs::remove_file(dir.path().join("vendor/dmabufloader/IoPath.aidl")).unwrap();
        let err = check_snapshot(&repo_aidl(), dir.path(), LATEST).unwrap_err();
        assert!(format!("{err:#}").contains("IoPath.aidl"), "{err:#}");
    }

    #[test]
    fn missing_preamble_is_caught() {
        let dir = copy_snapshot();
        edit(
            dir.path(),
            "ServiceInfo.aidl",
            FROZEN_MARKER,
            "// edited by hand",
        );
        let err = check_snapshot(&repo_aidl(), dir.path(), LATEST).unwrap_err();
        assert!(format!("{err:#}").contains("preamble"), "{err:#}");
    }
}
