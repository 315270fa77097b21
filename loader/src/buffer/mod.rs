//! Buffer providers: where the destination pages come from and how the filled pages are
//! handed out. Each provider says whether its pages take direct I/O and whether the fd it
//! yields is a real dma-buf ([`HeapInfo`]).

pub mod dma_heap;
pub mod memfd;
pub mod memory;
pub mod udmabuf;

use std::os::fd::{BorrowedFd, OwnedFd};

use anyhow::anyhow;

use crate::api::{BufferKind, Config, ErrorKind, HeapInfo, LoadError, Result};
use crate::sys::dmabuf;
use crate::sys::mman::Mapping;

/// Name of the memfd provider.
pub const MEMFD: &str = "memfd";
/// Name of the udmabuf provider.
pub const UDMABUF: &str = "udmabuf";

/// Every buffer source present and allowed, default first: udmabuf (zero-copy capable real
/// dma-buf), then the dma-heaps (`system` first), then memfd (not a dma-buf; the default
/// only where nothing else exists).
pub fn probe(config: &Config) -> Vec<HeapInfo> {
    let mut heaps = Vec::new();
    if udmabuf::present(&config.udmabuf_path) {
        heaps.push(HeapInfo {
            name: UDMABUF.into(),
            kind: BufferKind::Udmabuf,
            is_dmabuf: true,
            direct_io: true,
        });
    }
    for name in dma_heap::list(&config.dma_heap_dir) {
        if name == UDMABUF || name == MEMFD {
            continue; // would be ambiguous; never seen on real devices
        }
        heaps.push(HeapInfo {
            name,
            kind: BufferKind::DmaHeap,
            is_dmabuf: true,
            direct_io: false,
        });
    }
    heaps.push(HeapInfo {
        name: MEMFD.into(),
        kind: BufferKind::Memfd,
        is_dmabuf: false,
        direct_io: true,
    });
    if let Some(allowed) = &config.allowed_heaps {
        heaps.retain(|h| allowed.iter().any(|a| a == &h.name));
    }
    heaps
}

/// An allocated, not yet handed out buffer.
#[derive(Debug)]
pub struct Buffer {
    pub heap: HeapInfo,
    pub size: u64,
    /// memfd (memfd, udmabuf) or dma-buf (dma-heap) behind the mapping.
    fd: OwnedFd,
}

fn alloc_err(e: anyhow::Error) -> LoadError {
    LoadError::new(ErrorKind::AllocationFailed, e)
}

impl Buffer {
    /// Creates the buffer and a writable mapping of it. For memfd/udmabuf no page is
    /// allocated yet (the I/O faults them in); a dma-heap allocates everything here.
    pub fn allocate(
        heap: &HeapInfo,
        size: u64,
        config: &Config,
        name: &str,
    ) -> Result<(Buffer, Mapping)> {
        // shmem pages are only allocated as the I/O faults them in, and the system heaps
        // allocate page by page with ordinary GFP flags; either way a buffer larger than
        // memory would end in reclaim and the OOM killer (seen in the VM rig with the system
        // heap), not in a clean error. CMA/carveout heaps have their own pools: not checked.
        if heap.kind != BufferKind::DmaHeap || heap.name.starts_with("system") {
            memory::check_fits_in_memory(size).map_err(alloc_err)?;
        }
        let fd = match heap.kind {
            BufferKind::Memfd | BufferKind::Udmabuf => {
                memfd::create(name, size).map_err(alloc_err)?
            }
            BufferKind::DmaHeap => {
                dma_heap::alloc(&config.dma_heap_dir, &heap.name, size).map_err(alloc_err)?
            }
            BufferKind::DmaBuf => {
                return Err(LoadError::msg(
                    ErrorKind::Internal,
                    "no heap allocates foreign dma-bufs",
                ))
            }
        };
        if heap.kind == BufferKind::DmaHeap {
            if let Err(e) = dmabuf::set_name(&fd, name) {
                log::debug!("DMA_BUF_SET_NAME on {}: {e}", heap.name);
            }
        }
        let len = usize::try_from(size)
            .map_err(|_| LoadError::msg(ErrorKind::TooLarge, "size exceeds address space"))?;
        let map = Mapping::shared_rw(&fd, len).map_err(alloc_err)?;
        Ok((
            Buffer {
                heap: heap.clone(),
                size,
                fd,
            },
            map,
        ))
    }

    /// A client's buffer (a load-into target, see `target.rs`) as the engine's destination:
    /// `heap.kind` is `Memfd` (shmem pages: O_DIRECT, populate-ahead) or `DmaBuf` (a dma-buf
    /// mapping: CPU copy only), `fd` our dup of it. Never `finish`ed: the client keeps it.
    pub(crate) fn client_target(heap: HeapInfo, size: u64, fd: OwnedFd) -> Buffer {
        Buffer { heap, size, fd }
    }

    /// The memfd whose pages the mapping shows (memfd, udmabuf), if any.
    pub fn memfd(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        matches!(self.heap.kind, BufferKind::Memfd | BufferKind::Udmabuf).then(|| self.fd.as_fd())
    }

    /// DMA_BUF_IOCTL_SYNC around CPU writes into a dma-heap buffer (no-op for memfds; a
    /// udmabuf does not exist yet while the engine writes).
    pub fn cpu_write_sync(&self, end: bool) -> Result<()> {
        if self.heap.kind != BufferKind::DmaHeap {
            return Ok(());
        }
        let flags = dmabuf::DMA_BUF_SYNC_WRITE
            | if end {
                dmabuf::DMA_BUF_SYNC_END
            } else {
                dmabuf::DMA_BUF_SYNC_START
            };
        dmabuf::sync(&self.fd, flags).map_err(|e| {
            LoadError::new(
                ErrorKind::Internal,
                anyhow!("DMA_BUF_IOCTL_SYNC({flags:#x}): {e}"),
            )
        })
    }

    /// Turns the filled buffer into the fd handed to the client. Call after the mapping is
    /// gone (read-only sealing requires no writable mapping).
    pub fn finish(self, read_only: bool, name: &str, config: &Config) -> Result<OwnedFd> {
        match self.heap.kind {
            BufferKind::Memfd if read_only => {
                memfd::seal_read_only(self.fd).map_err(|e| LoadError::new(ErrorKind::Internal, e))
            }
            BufferKind::Memfd => Ok(self.fd),
            BufferKind::Udmabuf => {
                let dmabuf =
                    udmabuf::wrap(&config.udmabuf_path, &self.fd, self.size).map_err(alloc_err)?;
                if let Err(e) = dmabuf::set_name(&dmabuf, name) {
                    log::debug!("DMA_BUF_SET_NAME on udmabuf: {e}");
                }
                Ok(dmabuf) // the memfd (self.fd) closes here; the dma-buf holds the pages
            }
            BufferKind::DmaHeap => Ok(self.fd),
            BufferKind::DmaBuf => Err(LoadError::msg(
                ErrorKind::Internal,
                "a client's dma-buf is never handed out as a new buffer",
            )),
        }
    }
}
