//! Public types of the core. The service, the client, the bench and the tests use these.
//! Kept binder-free so the same engine runs in-process, in a test and behind any binder crate.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a buffer's memory comes from. Mirrors AIDL `BufferKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// `/dev/dma_heap/<name>`: a real dma-buf; its mmap is PFNMAP so only buffered I/O reaches it.
    DmaHeap,
    /// memfd + `/dev/udmabuf`: a real dma-buf whose memfd pages take O_DIRECT.
    Udmabuf,
    /// A plain memfd: NOT a dma-buf; only where the machine has no dma-buf source.
    Memfd,
    /// A dma-buf from another exporter (a GPU or camera driver, vgem): only ever a client's
    /// [`Loader::load_into`](crate::Loader::load_into) target, never allocated here.
    DmaBuf,
}

/// How the bytes reached the buffer. Mirrors AIDL `IoPath`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum IoPath {
    DirectRegistered,
    Direct,
    Buffered,
    BufferedSync,
    DmabufRegistered,
    #[default]
    None,
}

impl IoPath {
    /// The one spelling used everywhere a person reads it (logs, reports, the bench): the AIDL
    /// enumerator's name, `DIRECT_REGISTERED`.
    pub fn name(self) -> &'static str {
        match self {
            IoPath::DirectRegistered => "DIRECT_REGISTERED",
            IoPath::Direct => "DIRECT",
            IoPath::Buffered => "BUFFERED",
            IoPath::BufferedSync => "BUFFERED_SYNC",
            IoPath::DmabufRegistered => "DMABUF_REGISTERED",
            IoPath::None => "NONE",
        }
    }
}

impl std::fmt::Display for IoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Checksum over the loaded data range. Mirrors AIDL `ChecksumType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ChecksumType {
    #[default]
    None,
    Xxh3_64,
}

/// A buffer source the loader can allocate from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapInfo {
    /// Name used to select it: "system", "system-uncached", "udmabuf", "memfd", ...
    pub name: String,
    pub kind: BufferKind,
    pub is_dmabuf: bool,
    /// O_DIRECT can read straight into its pages.
    pub direct_io: bool,
    /// Page sizes (bytes, ascending) its buffers may get on this machine as probed: 4096,
    /// the shmem THP sizes the kernel allows and the hugetlb pools configured (memfd,
    /// udmabuf; see `buffer/pages.rs`). Empty for a dma-heap: the heap chooses, unseen.
    pub page_sizes: Vec<u64>,
}

/// What to load.
#[derive(Clone, Debug, Default)]
pub struct LoadRequest {
    /// Heap name; `None` or "auto" picks the fastest real dma-buf source present.
    pub heap: Option<String>,
    pub offset: u64,
    /// `None` = to end of file.
    pub length: Option<u64>,
    /// The returned fd cannot be mapped writable. Possible for `memfd` (sealed F_SEAL_WRITE
    /// and reopened O_RDONLY). Refused with `InvalidArgument` for dma-buf providers: a
    /// dma-heap or udmabuf export is always O_RDWR, the engine needs it writable to fill it,
    /// and a dma-buf cannot be reopened with fewer rights (/proc/self/fd open gives ENXIO).
    pub read_only: bool,
    pub checksum: ChecksumType,
    /// Name given to the buffer with DMA_BUF_SET_NAME (default: derived from the source).
    pub name: Option<String>,
}

/// A filled buffer.
#[derive(Debug)]
pub struct Loaded {
    /// The buffer fd (dma-buf unless `kind == Memfd`); data at offset 0, padding zeroed.
    pub fd: OwnedFd,
    pub data_len: u64,
    /// `data_len` rounded up to the page size, and at least one page (the kernel has no
    /// empty dma-bufs, so an empty range yields one zeroed page).
    pub buffer_size: u64,
    pub heap: String,
    pub kind: BufferKind,
    pub io_path: IoPath,
    /// Page size of the buffer's memory: 4096, a THP size (most of the buffer PMD-mapped)
    /// or a hugetlb size; 0 for a dma-heap buffer (the heap's own choice, not visible).
    pub page_size: u64,
    /// Why that path (e.g. "filesystem refused O_DIRECT (EINVAL)").
    pub io_path_reason: String,
    /// Time to create the buffer before the first read. With the default
    /// [`AllocStrategy::Overlap`] memfd/udmabuf pages are faulted in while the I/O runs, so
    /// that cost is inside `total_time` only; a dma-heap allocates everything here.
    pub alloc_time: Duration,
    pub total_time: Duration,
    pub checksum: Option<(ChecksumType, u64)>,
}

/// A client-owned buffer filled by [`Loader::run_into`](crate::Loader::run_into). The
/// target itself stays the caller's: the loader kept no reference to it.
#[derive(Debug)]
pub struct Filled {
    pub data_len: u64,
    /// Where the data starts in the target.
    pub target_offset: u64,
    /// Size of the whole target (dma-buf size, or memfd size).
    pub target_size: u64,
    /// The target's exporter (`exp_name`: "system", "udmabuf", "vgem", ...) or "memfd".
    pub exporter: String,
    /// `DmaHeap` when the exporter is a dma-heap of this machine, `Udmabuf`, `Memfd`, or
    /// `DmaBuf` for any other exporter.
    pub kind: BufferKind,
    pub io_path: IoPath,
    /// Why that path, including why the paths before it in the chain did not apply.
    pub io_path_reason: String,
    /// Page size of the target's memory: the memfd's (st_blksize: 4096, or the hugetlb page
    /// size); 0 for a dma-buf, whose exporter's page size the loader cannot see.
    pub page_size: u64,
    pub total_time: Duration,
    pub checksum: Option<(ChecksumType, u64)>,
}

/// Kernel features found at run time.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub kernel_release: String,
    pub io_uring: bool,
    /// io_uring can register a dma-buf as a fixed buffer for a target file (the dma-buf
    /// read/write series): the DMABUF_REGISTERED path.
    pub io_uring_dmabuf_regbuf: bool,
    /// How the probe decided (the kernel's answers), for logs and `info`.
    pub io_uring_dmabuf_regbuf_detail: String,
    pub cachestat: bool,
}

/// Cancellation shared between the caller and a running load; checked between completions.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Per-load controls: cancellation, deadline, progress reporting.
#[derive(Default)]
pub struct LoadControl<'a> {
    pub cancel: CancelToken,
    /// Past this instant the load fails with `ErrorKind::TimedOut`.
    pub deadline: Option<Instant>,
    /// Called with (bytes done, bytes total), monotonically, from the loading thread.
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

/// Every way a load can fail. One variant per distinct cause the caller can act on; the
/// service maps each to one AIDL `ErrorCode` in a single place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    BadFd,
    PathOnlyFd,
    NotReadable,
    /// Pipe, socket, directory, char device, block device (unless allowed), ...
    UnsupportedFileType,
    InvalidRange,
    TooLarge,
    UnknownHeap,
    AllocationFailed,
    Io,
    FileChanged,
    Cancelled,
    TimedOut,
    Busy,
    PermissionDenied,
    InvalidArgument,
    Internal,
    /// A load-into target is not a dma-buf (nor, where the machine has no dma-buf source,
    /// a memfd).
    NotADmabuf,
    /// A load-into target ends before `target_offset + length`.
    TargetTooSmall,
    /// A load-into target is not open O_RDWR, or is sealed against writes.
    TargetNotWritable,
    /// A load-into target's exporter refuses both a CPU mapping and io_uring registration.
    TargetNotMappable,
}

/// A load failure: its kind plus a human-readable chain of context (anyhow inside).
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {source:#}")]
pub struct LoadError {
    pub kind: ErrorKind,
    pub source: anyhow::Error,
}

impl LoadError {
    pub fn new(kind: ErrorKind, source: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }
    pub fn msg(kind: ErrorKind, msg: impl std::fmt::Display + Send + Sync + 'static) -> Self {
        Self {
            kind,
            source: anyhow::anyhow!("{msg}"),
        }
    }
}

pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// Engine configuration. `Default` is what a service on a device wants.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest single load accepted (`ErrorKind::TooLarge` above it).
    pub max_load_bytes: u64,
    /// Accept block devices as sources (off by default: they expose raw storage).
    pub allow_block_devices: bool,
    /// Whole NVMe namespaces (device node paths, e.g. a dedicated `/dev/block/by-name/...`)
    /// from which the loader may read a regular file's blocks directly, behind the file
    /// system, for DMABUF_REGISTERED (the extent route; `docs/dmabuf-registered.md`). Empty
    /// (the default): never. The loader opens such a namespace itself, so it must hold
    /// nothing a client may not read through its own files (never userdata).
    pub file_extent_devices: Vec<std::path::PathBuf>,
    /// Heaps that may be used; `None` = every source found.
    pub allowed_heaps: Option<Vec<String>>,
    /// Directory of dma-heaps (tests point it elsewhere).
    pub dma_heap_dir: std::path::PathBuf,
    /// The udmabuf device.
    pub udmabuf_path: std::path::PathBuf,
    /// io_uring reads in flight; `None` = the measured default.
    pub queue_depth: Option<u32>,
    /// Bytes per read; `None` = the measured default.
    pub chunk_size: Option<usize>,
    /// Test/bench knob: start the fallback chain at this path instead of choosing one
    /// (a path the kernel refuses still falls back; `Loaded::io_path` says what ran).
    pub force_io_path: Option<IoPath>,
    /// How memfd/udmabuf pages get allocated (bench knob; the default is the fast one).
    pub alloc_strategy: AllocStrategy,
    /// Use cachestat(2) to send mostly-cached ranges down the buffered path.
    pub page_cache_hint: bool,
    /// Huge pages for memfd/udmabuf buffers (`Auto`: hugetlb when the pool holds the
    /// buffer, else shmem THP when allowed, else 4 KiB; never fails a load).
    pub huge_pages: HugePages,
}

/// Which page sizes a memfd-backed buffer may use. `Auto` is what a device wants; the
/// others are for tests and the bench. See `buffer/pages.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HugePages {
    /// hugetlb when the pool holds the buffer, else shmem THP when allowed, else 4 KiB.
    #[default]
    Auto,
    /// Try hugetlb even when the pool looks empty (falls back like `Auto`).
    Hugetlb,
    /// shmem THP only (no hugetlb), when allowed.
    Thp,
    /// 4 KiB pages only.
    Off,
}

/// How a memfd-backed buffer's pages are allocated relative to the I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AllocStrategy {
    /// A helper thread faults pages in (MADV_POPULATE_WRITE) ahead of the reads, on the
    /// other core, while the I/O runs; the reads fault in whatever it has not reached.
    #[default]
    Overlap,
    /// The reads fault pages in themselves (GUP / copy_to_user), nothing runs ahead.
    OnDemand,
    /// Every page is faulted in before the first read (counted in `alloc_time`): what the
    /// bench uses to time "I/O alone".
    Prefault,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_load_bytes: 16 << 30,
            allow_block_devices: false,
            file_extent_devices: Vec::new(),
            allowed_heaps: None,
            dma_heap_dir: "/dev/dma_heap".into(),
            udmabuf_path: "/dev/udmabuf".into(),
            queue_depth: None,
            chunk_size: None,
            force_io_path: None,
            alloc_strategy: AllocStrategy::Overlap,
            page_cache_hint: true,
            huge_pages: Default::default(),
        }
    }
}
