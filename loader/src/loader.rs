//! [`Loader`]: probes the machine once, then validates (`prepare`) and runs loads.

use std::os::fd::BorrowedFd;

use anyhow::anyhow;

use crate::api::{
    BufferKind, Capabilities, Config, ErrorKind, Filled, HeapInfo, LoadControl, LoadError,
    LoadRequest, Loaded, Result,
};
use crate::source::{self, Source};
use crate::target::{self, Target};
use crate::{buffer, engine, sys};

/// The engine. `Send + Sync`: share one with `Arc` and run loads from many threads.
#[derive(Debug)]
pub struct Loader {
    config: Config,
    heaps: Vec<HeapInfo>,
    caps: Capabilities,
    /// udmabuf's size limit (udmabuf.size_limit_mb), when it has one.
    udmabuf_limit: Option<u64>,
    /// The machine has no dma-buf source at all (no dma-heap, no udmabuf): load-into targets
    /// may be memfds. Independent of `allowed_heaps`, which limits what we allocate.
    memfd_targets: bool,
}

/// A validated request: our dup of the source fd, the resolved range and heap. Cheap to
/// make; holds no buffer memory.
#[derive(Debug)]
pub struct Prepared {
    pub(crate) source: Source,
    pub(crate) heap: HeapInfo,
    pub(crate) req: LoadRequest,
    pub(crate) buffer_size: u64,
    pub(crate) name: String,
}

impl Prepared {
    pub fn data_len(&self) -> u64 {
        self.source.len
    }
    pub fn buffer_size(&self) -> u64 {
        self.buffer_size
    }
    pub fn heap(&self) -> &HeapInfo {
        &self.heap
    }
    /// Where the source fd points, as readlink(/proc/self/fd/N) said when it was validated
    /// ("fd:N" when it has no name), for logs.
    pub fn path(&self) -> &str {
        &self.source.path
    }
}

/// A validated load-into request: our dups of the source and the target fd, the resolved
/// range, and the target's mapping. Holds no memory of its own.
#[derive(Debug)]
pub struct PreparedInto {
    pub(crate) source: Source,
    pub(crate) target: Target,
    pub(crate) req: LoadRequest,
}

impl PreparedInto {
    pub fn data_len(&self) -> u64 {
        self.source.len
    }
    pub fn target_size(&self) -> u64 {
        self.target.size()
    }
    /// The target's exporter ("system", "udmabuf", "vgem", ... or "memfd").
    pub fn exporter(&self) -> &str {
        self.target.exporter()
    }
    pub fn target_kind(&self) -> BufferKind {
        self.target.kind()
    }
}

pub(crate) fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|v| v as u64)
        .unwrap_or(4096)
}

/// Buffer size for `len` data bytes: page-rounded, at least one page.
pub fn buffer_size_for(len: u64) -> u64 {
    let page = page_size();
    len.div_ceil(page).max(1) * page
}

fn probe_capabilities() -> Capabilities {
    let kernel_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let io_uring = match sys::ring::new_ring(2) {
        Ok(_) => true,
        Err(e) => {
            let sysctl =
                std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_default();
            log::warn!(
                "io_uring unavailable ({e}; kernel.io_uring_disabled={}): every load uses plain pread()",
                sysctl.trim()
            );
            false
        }
    };
    let regbuf = if io_uring {
        sys::regbuf::probe().unwrap_or_else(|e| sys::regbuf::Probe {
            available: false,
            detail: format!("the probe could not run: {e}"),
        })
    } else {
        sys::regbuf::Probe {
            available: false,
            detail: "io_uring unavailable".into(),
        }
    };
    log::info!(
        "io_uring dma-buf registered buffers: {} ({})",
        if regbuf.available {
            "available"
        } else {
            "unavailable"
        },
        regbuf.detail
    );
    let cachestat = match buffer::memfd::create("dmabuf-loader-probe", 0) {
        Ok(fd) => !matches!(
            sys::cachestat::cachestat(&fd, 0, 0),
            Err(nix::errno::Errno::ENOSYS)
        ),
        Err(_) => false,
    };
    Capabilities {
        kernel_release,
        io_uring,
        io_uring_dmabuf_regbuf: regbuf.available,
        io_uring_dmabuf_regbuf_detail: regbuf.detail,
        cachestat,
    }
}

impl Loader {
    /// Probes heaps and kernel features once.
    pub fn new(config: Config) -> anyhow::Result<Loader> {
        if config.queue_depth == Some(0)
            || config.chunk_size.is_some_and(|c| c == 0 || c % 4096 != 0)
        {
            return Err(anyhow!(
                "queue_depth must be > 0 and chunk_size a non-zero multiple of 4096"
            ));
        }
        let heaps = buffer::probe(&config);
        if heaps.is_empty() {
            return Err(anyhow!(
                "no buffer source is allowed by the configuration ({:?})",
                config.allowed_heaps
            ));
        }
        let caps = probe_capabilities();
        log::info!(
            "loader ready: heaps [{}], kernel {}, io_uring {}, io_uring dmabuf regbuf {}, cachestat {}",
            heaps.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", "),
            caps.kernel_release,
            caps.io_uring,
            caps.io_uring_dmabuf_regbuf,
            caps.cachestat
        );
        let udmabuf_limit = heaps
            .iter()
            .any(|h| h.kind == BufferKind::Udmabuf)
            .then(buffer::udmabuf::size_limit)
            .flatten();
        if let Some(l) = udmabuf_limit {
            log::info!(
                "udmabuf takes buffers up to {} MiB (udmabuf.size_limit_mb); larger auto loads use the next heap",
                l >> 20
            );
        }
        let memfd_targets = !buffer::udmabuf::present(&config.udmabuf_path)
            && buffer::dma_heap::list(&config.dma_heap_dir).is_empty();
        Ok(Loader {
            config,
            heaps,
            caps,
            udmabuf_limit,
            memfd_targets,
        })
    }

    /// Buffer sources, default first.
    pub fn heaps(&self) -> &[HeapInfo] {
        &self.heaps
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Resolves a heap name (`None`, "" and "auto" = the default heap).
    pub fn resolve_heap(&self, name: Option<&str>) -> Result<&HeapInfo> {
        match name {
            None | Some("") | Some("auto") => Ok(&self.heaps[0]),
            Some(n) => self.heaps.iter().find(|h| h.name == n).ok_or_else(|| {
                LoadError::msg(
                    ErrorKind::UnknownHeap,
                    format!(
                        "heap {n:?} does not exist or is not allowed (available: {})",
                        self.heaps
                            .iter()
                            .map(|h| h.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }),
        }
    }

    /// Whether `heap` can hold a buffer of `size` bytes.
    fn fits(&self, heap: &HeapInfo, size: u64) -> bool {
        heap.kind != BufferKind::Udmabuf || self.udmabuf_limit.is_none_or(|l| size <= l)
    }

    /// Validates the untrusted fd + request (no allocation, no I/O beyond fcntl/fstat),
    /// dups the fd, resolves range and heap. `auto` takes the first heap (in `heaps()`
    /// order) that can hold the buffer: udmabuf has a size limit, the dma-heaps do not.
    pub fn prepare(&self, fd: BorrowedFd<'_>, req: &LoadRequest) -> Result<Prepared> {
        let named = self.resolve_heap(req.heap.as_deref())?;
        let auto = matches!(req.heap.as_deref(), None | Some("") | Some("auto"));
        let source = source::validate(fd, req, &self.config)?;
        let buffer_size = buffer_size_for(source.len);
        let heap = if auto {
            self.heaps
                .iter()
                .find(|h| self.fits(h, buffer_size))
                .unwrap_or(named)
                .clone()
        } else {
            named.clone()
        };
        if !self.fits(&heap, buffer_size) {
            return Err(LoadError::msg(
                ErrorKind::TooLarge,
                format!(
                    "{buffer_size} bytes exceed the udmabuf limit of {} MiB (udmabuf.size_limit_mb); use another heap",
                    self.udmabuf_limit.unwrap_or(0) >> 20
                ),
            ));
        }
        if req.read_only && heap.is_dmabuf {
            return Err(LoadError::msg(
                ErrorKind::InvalidArgument,
                format!(
                    "read-only buffers are not possible from {:?}: dma-heap and udmabuf exports are always O_RDWR \
                     and a dma-buf cannot be reopened with fewer rights; ask for a writable buffer or the memfd heap",
                    heap.name
                ),
            ));
        }
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| source.label().to_string());
        Ok(Prepared {
            source,
            heap,
            req: req.clone(),
            buffer_size,
            name,
        })
    }

    /// Allocates and fills the buffer; returns it only when complete and correct.
    pub fn run(&self, p: Prepared, ctl: &LoadControl<'_>) -> Result<Loaded> {
        engine::run(&self.config, &self.caps, p, ctl)
    }

    /// Validates a load into a buffer the caller owns (`target`, at byte `target_offset`):
    /// the source as [`prepare`](Self::prepare) does, then the target (see `target.rs`: a
    /// dma-buf, or a memfd where the machine has no dma-buf source; O_RDWR; not the source;
    /// large enough) and maps the range. `req.heap` and `req.read_only` do not apply to a
    /// buffer the caller owns and must be unset.
    pub fn prepare_into(
        &self,
        fd: BorrowedFd<'_>,
        req: &LoadRequest,
        target: BorrowedFd<'_>,
        target_offset: u64,
    ) -> Result<PreparedInto> {
        if req.heap.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(LoadError::msg(
                ErrorKind::InvalidArgument,
                format!(
                    "heap {:?} given for a load into the caller's own buffer: nothing is allocated, leave it empty",
                    req.heap.as_deref().unwrap_or_default()
                ),
            ));
        }
        if req.read_only {
            return Err(LoadError::msg(
                ErrorKind::InvalidArgument,
                "read-only applies to buffers the service hands out, not to the caller's own target",
            ));
        }
        let source = source::validate(fd, req, &self.config)?;
        let policy = target::Policy {
            memfd_targets: self.memfd_targets,
            dma_heap_dir: &self.config.dma_heap_dir,
        };
        let target = target::validate(target, target_offset, source.len, &source, &policy)?;
        if target.kind() == BufferKind::Memfd {
            // Unallocated memfd pages are allocated by our writes; refuse what cannot fit
            // rather than end in the OOM killer, as for our own memfd buffers.
            buffer::memory::check_fits_in_memory(source.len)
                .map_err(|e| LoadError::new(ErrorKind::AllocationFailed, e))?;
        }
        Ok(PreparedInto {
            source,
            target,
            req: req.clone(),
        })
    }

    /// Fills the prepared target; `Ok` only when the whole range was read. After an error the
    /// range of the target is unspecified and the rest of it untouched.
    pub fn run_into(&self, p: PreparedInto, ctl: &LoadControl<'_>) -> Result<Filled> {
        target::run(&self.config, &self.caps, p.source, p.target, &p.req, ctl)
    }

    /// `prepare_into` + `run_into`.
    pub fn load_into(
        &self,
        fd: BorrowedFd<'_>,
        req: &LoadRequest,
        target: BorrowedFd<'_>,
        target_offset: u64,
        ctl: &LoadControl<'_>,
    ) -> Result<Filled> {
        let p = self.prepare_into(fd, req, target, target_offset)?;
        self.run_into(p, ctl)
    }

    /// Allocates an empty, finished buffer of `size` bytes from `heap` ("" = the default) the
    /// way a client allocates its own: for callers that bring their own target to
    /// [`load_into`](Self::load_into) (the client's `load --into`, its bench, tests). A dma-buf
    /// unless the heap is `memfd` (then sealed against shrinking and growing, as targets must).
    /// A dma-buf is whole pages: its size is rounded up to the page (a dma-heap does so
    /// itself; udmabuf refuses any other size with EINVAL).
    pub fn allocate_target(
        &self,
        heap: &str,
        size: u64,
    ) -> Result<(std::os::fd::OwnedFd, HeapInfo)> {
        let heap = self.resolve_heap(Some(heap))?.clone();
        let size = if heap.is_dmabuf {
            size.next_multiple_of(page_size())
        } else {
            size
        };
        if !self.fits(&heap, size) {
            return Err(LoadError::msg(
                ErrorKind::TooLarge,
                format!("{size} bytes exceed the udmabuf limit"),
            ));
        }
        let (buf, map) =
            buffer::Buffer::allocate(&heap, size, &self.config, "dmabuf-loader-target")?;
        drop(map);
        let fd = buf.finish(false, "dmabuf-loader-target", &self.config)?;
        Ok((fd, heap))
    }

    /// `prepare` + `run`.
    pub fn load(
        &self,
        fd: BorrowedFd<'_>,
        req: &LoadRequest,
        ctl: &LoadControl<'_>,
    ) -> Result<Loaded> {
        let p = self.prepare(fd, req)?;
        self.run(p, ctl)
    }
}
