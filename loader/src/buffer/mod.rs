//! Buffer providers: where the destination pages come from and how the filled pages are
//! handed out. Each provider says whether its pages take direct I/O and whether the fd it
//! yields is a real dma-buf ([`HeapInfo`]).

pub mod dma_heap;
pub mod memfd;
pub mod memory;
pub mod pages;
pub mod udmabuf;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use anyhow::anyhow;

use crate::api::{BufferKind, Config, ErrorKind, HeapInfo, LoadError, Result};
use crate::sys::dmabuf;
use crate::sys::mman::Mapping;
use pages::PagePlan;

/// Name of the memfd provider.
pub const MEMFD: &str = "memfd";
/// Name of the udmabuf provider.
pub const UDMABUF: &str = "udmabuf";

/// Every buffer source present and allowed, default first: udmabuf (zero-copy capable real
/// dma-buf), then the dma-heaps (`system` first), then memfd (not a dma-buf; the default
/// only where nothing else exists).
pub fn probe(config: &Config) -> Vec<HeapInfo> {
    let mut heaps = Vec::new();
    let shmem_sizes = pages::available_sizes(config.huge_pages);
    if udmabuf::present(&config.udmabuf_path) {
        heaps.push(HeapInfo {
            name: UDMABUF.into(),
            kind: BufferKind::Udmabuf,
            is_dmabuf: true,
            direct_io: true,
            page_sizes: shmem_sizes.clone(),
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
            // The heap chooses (the system heap allocates 1 MiB, 64 KiB and 4 KiB chunks);
            // not visible from here.
            page_sizes: Vec::new(),
        });
    }
    heaps.push(HeapInfo {
        name: MEMFD.into(),
        kind: BufferKind::Memfd,
        is_dmabuf: false,
        direct_io: true,
        page_sizes: shmem_sizes,
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
    /// The pages it was created with (memfd, udmabuf; `Base` for a dma-heap).
    pub pages: PagePlan,
    /// Why a huge-page plan was not used, when it was refused.
    pub pages_note: Option<String>,
    /// memfd (memfd, udmabuf) or dma-buf (dma-heap) behind the mapping.
    fd: OwnedFd,
    /// The udmabuf made before the reads ([`Buffer::dmabuf_now`]), handed out by `finish`.
    early_dmabuf: OnceLock<OwnedFd>,
    /// A client's dma-buf target: where the range starts in it and the whole dma-buf's size
    /// (io_uring registers the whole dma-buf; the reads land at that offset).
    window: Option<(u64, u64)>,
}

fn alloc_err(e: anyhow::Error) -> LoadError {
    LoadError::new(ErrorKind::AllocationFailed, e)
}

/// A hugetlb memfd of `size` bytes (rounded up to whole `page_size` pages) and its mapping;
/// the mmap reserves every page, so a pool too small fails here.
fn hugetlb(name: &str, size: u64, page_size: u64) -> anyhow::Result<(OwnedFd, Mapping)> {
    let rounded = size.next_multiple_of(page_size);
    let fd = memfd::create_hugetlb(name, rounded, page_size)?;
    let len = usize::try_from(rounded)?;
    let map =
        Mapping::shared_rw(&fd, len).map_err(|e| e.context("reserving the huge pages (mmap)"))?;
    Ok((fd, map))
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
        let len = usize::try_from(size)
            .map_err(|_| LoadError::msg(ErrorKind::TooLarge, "size exceeds address space"))?;
        if heap.kind == BufferKind::DmaBuf {
            return Err(LoadError::msg(
                ErrorKind::Internal,
                "no heap allocates foreign dma-bufs",
            ));
        }
        if heap.kind == BufferKind::DmaHeap {
            // The system heaps allocate page by page with ordinary GFP flags: a buffer larger
            // than memory would end in reclaim and the OOM killer (seen in the VM rig), not
            // in a clean error. CMA/carveout heaps have their own pools: not checked.
            if heap.name.starts_with("system") {
                memory::check_fits_in_memory(size).map_err(alloc_err)?;
            }
            let fd = dma_heap::alloc(&config.dma_heap_dir, &heap.name, size).map_err(alloc_err)?;
            if let Err(e) = dmabuf::set_name(&fd, name) {
                log::debug!("DMA_BUF_SET_NAME on {}: {e}", heap.name);
            }
            let map = Mapping::shared_rw(&fd, len).map_err(alloc_err)?;
            let buffer = Buffer {
                heap: heap.clone(),
                size,
                pages: PagePlan::Base,
                pages_note: None,
                fd,
                early_dmabuf: OnceLock::new(),
                window: None,
            };
            return Ok((buffer, map));
        }
        // memfd / udmabuf. udmabuf wraps exactly `size` bytes, so a hugetlb memfd behind it
        // may be padded to whole huge pages; a plain memfd is handed out itself and must
        // keep the size the caller was told.
        let mut plan = pages::plan(config.huge_pages, size, heap.kind == BufferKind::Udmabuf);
        let mut pages_note = None;
        if let PagePlan::Hugetlb(ps) = plan {
            match hugetlb(name, size, ps) {
                Ok((fd, map)) => {
                    let buffer = Buffer {
                        heap: heap.clone(),
                        size,
                        pages: plan,
                        pages_note,
                        fd,
                        early_dmabuf: OnceLock::new(),
                        window: None,
                    };
                    return Ok((buffer, map));
                }
                Err(e) => {
                    log::info!("no hugetlb pages for {name} ({e:#}); using shmem pages");
                    pages_note = Some(format!("hugetlb refused: {e:#}"));
                    plan = if config.huge_pages == pages::HugePages::Off {
                        PagePlan::Base
                    } else {
                        pages::thp_or_base(size)
                    };
                }
            }
        }
        // shmem pages are only allocated as the I/O faults them in: without this check a
        // buffer larger than memory would start, drive the machine into reclaim and end with
        // the OOM killer choosing a victim, instead of failing at once.
        memory::check_fits_in_memory(size).map_err(alloc_err)?;
        let fd = memfd::create(name, size).map_err(alloc_err)?;
        let map = Mapping::shared_rw(&fd, len).map_err(alloc_err)?;
        if let PagePlan::Thp(_) = plan {
            if let Err(e) = map.advise_hugepage() {
                pages_note = Some(format!("MADV_HUGEPAGE refused: {e}"));
                plan = PagePlan::Base;
            }
        }
        Ok((
            Buffer {
                heap: heap.clone(),
                size,
                pages: plan,
                pages_note,
                fd,
                early_dmabuf: OnceLock::new(),
                window: None,
            },
            map,
        ))
    }

    /// A client's buffer (a load-into target, see `target.rs`) as the engine's destination:
    /// `heap.kind` is `Memfd` (shmem pages: O_DIRECT, populate-ahead) or `DmaBuf` (a dma-buf:
    /// io_uring registration where the kernel has it, else CPU copy into its mapping), `fd`
    /// our dup of it, `size` the range's length. For a dma-buf, `window` is where the range
    /// starts in it and the whole dma-buf's size. Never `finish`ed: the client keeps it, and
    /// our dup closes with this value when the call returns.
    pub(crate) fn client_target(
        heap: HeapInfo,
        size: u64,
        fd: OwnedFd,
        window: Option<(u64, u64)>,
    ) -> Buffer {
        Buffer {
            heap,
            size,
            pages: PagePlan::Base,
            pages_note: None,
            fd,
            early_dmabuf: OnceLock::new(),
            window,
        }
    }

    /// A small memfd-backed buffer (memfd, udmabuf) with no mapping: the engine's small-load
    /// path fills it with [`Buffer::write_all_at`], which spares an mmap, a page fault and
    /// an munmap (a TLB shootdown in a multi-threaded service) per load.
    pub fn allocate_unmapped(heap: &HeapInfo, size: u64, name: &str) -> Result<Buffer> {
        if matches!(heap.kind, BufferKind::DmaHeap | BufferKind::DmaBuf) {
            return Err(LoadError::msg(
                ErrorKind::Internal,
                "a dma-buf can only be filled through a mapping",
            ));
        }
        let fd = memfd::create(name, size).map_err(alloc_err)?;
        Ok(Buffer {
            heap: heap.clone(),
            size,
            pages: PagePlan::Base,
            pages_note: None,
            fd,
            early_dmabuf: OnceLock::new(),
            window: None,
        })
    }

    /// pwrite()s `data` at `off` into the memfd of an unmapped buffer.
    pub fn write_all_at(&self, data: &[u8], off: u64) -> Result<()> {
        let fd = self.memfd().ok_or_else(|| {
            LoadError::msg(ErrorKind::Internal, "write_all_at on a dma-heap buffer")
        })?;
        let mut done = 0;
        while done < data.len() {
            match nix::sys::uio::pwrite(fd, &data[done..], (off + done as u64) as i64) {
                Ok(n) => done += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(LoadError::msg(
                        ErrorKind::AllocationFailed,
                        format!("writing {} bytes into the memfd: {e}", data.len()),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The page size the buffer really has (call while `map` still maps it, after the
    /// pages are in): hugetlb is guaranteed by its reservation; for THP the kernel says how
    /// much of the mapping it PMD-mapped; 0 for a dma-heap (its own choice, not visible).
    pub fn page_size_seen(&self, map: &Mapping) -> u64 {
        match (self.heap.kind, self.pages) {
            (BufferKind::DmaHeap | BufferKind::DmaBuf, _) => 0,
            (_, PagePlan::Hugetlb(ps)) => ps,
            (_, PagePlan::Thp(ps)) => {
                pages::thp_page_size_seen(map.as_ptr() as usize, map.len(), ps)
            }
            (_, PagePlan::Base) => pages::BASE_PAGE,
        }
    }

    /// The memfd whose pages the mapping shows (memfd, udmabuf), if any.
    pub fn memfd(&self) -> Option<BorrowedFd<'_>> {
        matches!(self.heap.kind, BufferKind::Memfd | BufferKind::Udmabuf).then(|| self.fd.as_fd())
    }

    /// The dma-buf itself, before it is filled, for a device to DMA into (the io_uring
    /// dma-buf registered-buffer path): a dma-heap buffer's own fd, or for udmabuf the memfd
    /// wrapped now rather than at `finish` (UDMABUF_CREATE pins, i.e. allocates, every page
    /// here instead of letting the reads fault them in). `None` for a memfd: not a dma-buf.
    pub fn dmabuf_now(&self, config: &Config) -> Result<Option<BorrowedFd<'_>>> {
        match self.heap.kind {
            BufferKind::Memfd => Ok(None),
            // A client's dma-buf target: our dup of its fd.
            BufferKind::DmaBuf => Ok(self.window.map(|_| self.fd.as_fd())),
            BufferKind::DmaHeap => Ok(Some(self.fd.as_fd())),
            BufferKind::Udmabuf => {
                if self.early_dmabuf.get().is_none() {
                    let d = udmabuf::wrap(&config.udmabuf_path, &self.fd, self.size)
                        .map_err(alloc_err)?;
                    let _ = self.early_dmabuf.set(d);
                }
                Ok(self.early_dmabuf.get().map(|d| d.as_fd()))
            }
        }
    }

    /// What io_uring registers for this buffer: the byte offset in the dma-buf where the
    /// range lands and the whole dma-buf's size (0 and the buffer's size for a buffer the
    /// loader allocated; a client's target registers whole, the range at its offset).
    pub fn dmabuf_window(&self) -> (u64, u64) {
        self.window.unwrap_or((0, self.size))
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
                let dmabuf = match self.early_dmabuf.into_inner() {
                    Some(d) => d,
                    None => udmabuf::wrap(&config.udmabuf_path, &self.fd, self.size)
                        .map_err(alloc_err)?,
                };
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
