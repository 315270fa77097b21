//! dma-heaps: /dev/dma_heap/<name> (system, system-uncached, CMA and vendor heaps).
//!
//! The heap allocates every page at DMA_HEAP_IOCTL_ALLOC time and its mmap is VM_PFNMAP,
//! so neither O_DIRECT nor io_uring buffer registration can target it (GUP refuses PFNMAP):
//! only the buffered path (one CPU copy from the page cache) fills a heap buffer.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Context;

use crate::sys::dmabuf;

/// Heap names in `dir`, sorted, `system` first (the conventional default heap).
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| std::fs::File::open(dir.join(n)).is_ok())
        .collect();
    names.sort_by_key(|n| (n != "system", n.clone()));
    names
}

/// Allocates `size` bytes (page multiple) from heap `dir/name`.
pub fn alloc(dir: &Path, name: &str, size: u64) -> anyhow::Result<OwnedFd> {
    let path = dir.join(name);
    let heap = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    dmabuf::heap_alloc(&heap, size)
        .with_context(|| format!("DMA_HEAP_IOCTL_ALLOC {size} bytes from {}", path.display()))
}
