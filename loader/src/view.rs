//! CPU access to buffers outside the engine, through safe wrappers over the private `sys`
//! and `buffer` modules:
//! - [`BufferView`]: a loaded buffer's bytes, read-only, with the `DMA_BUF_IOCTL_SYNC` read
//!   bracket a dma-buf wants ([`begin_cpu_read`]/[`end_cpu_read`]), for checks such as the
//!   client's `--verify` and the tests;
//! - [`MappedBuffer`] ([`Loader::allocate`]): an empty buffer from a provider, mapped writable,
//!   which is where the status quo (alloc + mmap + `read()`) starts, for comparisons.

use std::os::fd::AsFd;

use anyhow::Context;

use crate::api::Result;
use crate::buffer::Buffer;
use crate::loader::{buffer_size_for, Loader};
use crate::sys::dmabuf::{self, DMA_BUF_SYNC_END, DMA_BUF_SYNC_READ, DMA_BUF_SYNC_START};
use crate::sys::mman::Mapping;

/// The first `len` bytes of a buffer fd, mapped read-only (`MAP_SHARED`); unmapped on drop.
/// Works for every buffer the engine hands out (dma-heap, udmabuf, memfd).
#[derive(Debug)]
pub struct BufferView {
    map: Mapping,
}

impl BufferView {
    pub fn map(fd: impl AsFd, len: usize) -> anyhow::Result<BufferView> {
        Ok(BufferView {
            map: Mapping::shared_ro(fd, len)?,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        self.map.as_slice()
    }
}

/// `DMA_BUF_IOCTL_SYNC(START | READ)` on a dma-buf before the CPU reads it (fails with ENOTTY
/// on a plain memfd, which needs no bracket).
pub fn begin_cpu_read(dmabuf: impl AsFd) -> anyhow::Result<()> {
    dmabuf::sync(dmabuf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
        .context("DMA_BUF_IOCTL_SYNC(START | READ)")
}

/// `DMA_BUF_IOCTL_SYNC(END | READ)` after the CPU read a dma-buf.
pub fn end_cpu_read(dmabuf: impl AsFd) -> anyhow::Result<()> {
    dmabuf::sync(dmabuf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)
        .context("DMA_BUF_IOCTL_SYNC(END | READ)")
}

/// An empty buffer from one provider and its writable mapping, freed on drop.
#[derive(Debug)]
pub struct MappedBuffer {
    // Declared first: the mapping goes before the buffer's fd.
    map: Mapping,
    buf: Buffer,
}

impl MappedBuffer {
    /// Faults every page of the buffer in (MADV_POPULATE_WRITE): what allocation costs before
    /// any byte is read.
    pub fn populate(&self) -> Result<()> {
        self.map.populate_write(0..self.map.len()).map_err(|e| {
            crate::api::LoadError::new(
                crate::api::ErrorKind::AllocationFailed,
                anyhow::anyhow!("MADV_POPULATE_WRITE: {e}"),
            )
        })
    }

    /// The size of the pages the kernel gave the mapping (4 KiB, a THP or hugetlb size).
    pub fn page_size(&self) -> u64 {
        self.buf.page_size_seen(&self.map)
    }

    /// The mapping, `buffer_size` bytes long.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.map.as_mut_slice()
    }

    /// `DMA_BUF_IOCTL_SYNC(START | WRITE)` before CPU writes (a no-op for memfds).
    pub fn begin_cpu_write(&self) -> Result<()> {
        self.buf.cpu_write_sync(false)
    }

    /// `DMA_BUF_IOCTL_SYNC(END | WRITE)` after CPU writes (a no-op for memfds).
    pub fn end_cpu_write(&self) -> Result<()> {
        self.buf.cpu_write_sync(true)
    }
}

impl Loader {
    /// A buffer for `len` data bytes (page-rounded) from `heap`, mapped writable, under the
    /// same memory check the engine's allocations get. No byte is read into it.
    pub fn allocate(&self, heap: &str, len: u64, name: &str) -> Result<MappedBuffer> {
        let info = self.resolve_heap(Some(heap))?.clone();
        let (buf, map) = Buffer::allocate(&info, buffer_size_for(len), self.config(), name)?;
        Ok(MappedBuffer { map, buf })
    }
}
