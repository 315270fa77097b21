//! The Rust `loadInto` client of docs/android.md ("Filling a buffer the client already owns"),
//! as a program the workspace builds: the code between the two `docs/android.md` marker lines
//! is the page's fenced block, byte for byte (`client/tests/doc_snippets.rs` checks), so the
//! page cannot show code that does not compile. On Android the page's imports come from AOSP's
//! `binder` crate and `vendor.dmabufloader-V2-rust`; here the same names come from
//! `dmabuf_loader_binder`, which gives them the same meaning on both.
//!
//!     cargo run -p dmabuf_loader_client --example load_into -- FILE [--socket PATH]
//!
//! allocates a buffer of the machine's default heap (the "NPU arena"), has the service fill it
//! at offset 4096 with FILE, and checks the range against the file.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use dmabuf_loader_binder::aidl::IDmabufLoader::IDmabufLoader;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::{ParcelFileDescriptor, Strong, Transport, SERVICE_NAME};

// ---- docs/android.md begin
use std::os::fd::BorrowedFd;

fn reload_weights(
    loader: &Strong<dyn IDmabufLoader>,
    path: &str,
    arena: BorrowedFd<'_>, // the NPU driver's dma-buf, kept by the caller
    offset: i64,
) -> Result<()> {
    if loader.getInterfaceVersion().map_err(|e| anyhow!("{e:?}"))? < 2 {
        anyhow::bail!("the service is V1: no loadInto");
    }
    let file = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
    let target = ParcelFileDescriptor::new(arena.try_clone_to_owned()?);
    let result = loader
        .loadInto(
            &ParcelFileDescriptor::new(file),
            &LoadRequest::default(),
            &target,
            offset,
        )
        .map_err(|status| anyhow!("{path}: {status}"))?; // ErrorCode in the status
    log::info!(
        "{path}: {} bytes at {} of the {} buffer via {:?}",
        result.dataLength,
        result.dataOffset,
        result.heapName,
        result.ioPath
    );
    Ok(())
}
// ---- docs/android.md end

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut file, mut socket) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(args.next().context("--socket PATH")?)),
            _ => file = Some(a),
        }
    }
    let path = file.context("usage: load_into FILE [--socket PATH]")?;
    let transport = Transport::choose(socket.as_deref(), None)?;
    let conn = dmabuf_loader_binder::connect::<dyn IDmabufLoader>(&transport, SERVICE_NAME, 1)?;
    let len = std::fs::metadata(&path)
        .with_context(|| format!("stat {path}"))?
        .len();
    let offset = 4096u64;
    let core = dmabuf_loader::Loader::new(dmabuf_loader::Config::default())?;
    let (arena, heap) = core
        .allocate_target("", offset + len)
        .map_err(|e| anyhow!("allocating the arena: {e}"))?;
    reload_weights(&conn.service, &path, arena.as_fd(), offset as i64)?;
    let file = std::fs::File::open(&path)?;
    let size = offset + len;
    let v = dmabuf_loader_client::verify::verify_range(arena.as_fd(), size, offset, len, &file, 0)?;
    println!(
        "{path}: {} bytes at {offset} of a {} buffer, verified (xxh3 {:#018x})",
        v.data_len, heap.name, v.xxh3
    );
    Ok(())
}
