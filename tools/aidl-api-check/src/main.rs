//! `aidl-api-check <aidl sources root> <snapshot dir> <version>`: exits 0 when the snapshot
//! (e.g. aidl/aidl_api/vendor.dmabufloader/1) is the same API as the sources (e.g. aidl/).
use anyhow::{Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sources, snapshot, version] = args.as_slice() else {
        anyhow::bail!("usage: aidl-api-check <aidl sources root> <snapshot dir> <version>");
    };
    let version: i32 = version
        .parse()
        .with_context(|| format!("bad version {version:?}"))?;
    let n =
        aidl_api_check::check_snapshot(&PathBuf::from(sources), &PathBuf::from(snapshot), version)?;
    println!("aidl-api-check: {snapshot} == {sources}: {n} files compiled by rsbinder-aidl, same generated code");
    Ok(())
}
