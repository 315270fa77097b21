//! udmabuf: a sealed memfd wrapped into a real dma-buf by /dev/udmabuf.
//!
//! Order matters for speed: UDMABUF_CREATE pins (and so allocates) every page of the memfd.
//! The engine therefore reads into the memfd's MAP_SHARED mapping FIRST, letting the I/O
//! fault pages in chunk by chunk, and wraps the memfd only once it is full; the memfd is
//! closed right after, leaving the dma-buf as the only owner of the pages.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::Context;

use crate::sys::dmabuf;

/// True when `dev` can be opened for udmabuf creation.
pub fn present(dev: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_ok()
}

/// The largest buffer the udmabuf driver accepts (module parameter `size_limit_mb`,
/// 64 MiB by default): UDMABUF_CREATE fails with EINVAL above it.
pub fn size_limit() -> Option<u64> {
    let mb = std::fs::read_to_string("/sys/module/udmabuf/parameters/size_limit_mb").ok()?;
    mb.trim().parse::<u64>().ok().map(|mb| mb << 20)
}

/// Wraps the whole (sealed, filled) memfd into a dma-buf.
pub fn wrap(dev: &Path, memfd: impl AsFd, size: u64) -> anyhow::Result<OwnedFd> {
    let dev_fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("open {}", dev.display()))?;
    dmabuf::udmabuf_create(&dev_fd, memfd, size)
        .with_context(|| format!("UDMABUF_CREATE ({size} bytes)"))
}
