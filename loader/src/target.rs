//! Client-owned targets (AIDL v2 `loadInto`): fill a range of a buffer the caller already
//! owns (a gralloc or vendor-heap dma-buf, a GPU or camera driver's export) with a range of a
//! file, instead of allocating a new buffer.
//!
//! The target fd is as untrusted as the source. [`validate`] checks it through the kernel, on
//! our own dup (so the fd number we inspect cannot be closed and reused under us):
//! - open read-write (F_GETFL access mode O_RDWR; O_PATH, O_RDONLY and O_WRONLY are refused:
//!   a shared writable mapping needs both rights);
//! - not the source itself (same inode);
//! - a dma-buf (its fdinfo has `exp_name`, which only the dma-buf core prints; its size is
//!   `lseek(SEEK_END)`, which for a dma-buf does not move the shared file position) or, on a
//!   machine without any dma-buf source, a memfd (`/memfd:` name and F_GET_SEALS works; its
//!   size from fstat, because lseek would move the position the client shares with us), not
//!   sealed against writes, and sealed against shrinking (F_SEAL_SHRINK, as udmabuf requires:
//!   a client truncating it during the load would otherwise make the service's own CPU
//!   accesses to the mapping fault with SIGBUS);
//! - `offset + length` inside it.
//!
//! It is never reopened (a /proc/self/fd reopen would give the service its own rights to the
//! inode, not the caller's), and every reference to it (the dup, the mapping) is gone when
//! the call returns.
//!
//! The paths, best first; [`Filled::io_path_reason`](crate::Filled) says which ran and why the
//! ones before it did not apply:
//! 1. **DMABUF_REGISTERED**: the target dma-buf registered with io_uring for the source and
//!    filled by READ_FIXED, DMA straight into the client's buffer whatever the exporter
//!    (`engine/dmabuf_registered.rs`). io_uring registers the *whole* target dma-buf (so the
//!    1 GiB limit applies to it, not to the range) and every read lands at the target offset
//!    plus its place in the range. Needs the io_uring dma-buf series
//!    (`Capabilities::io_uring_dmabuf_regbuf`) and a source the kernel takes: a raw NVMe
//!    block device, or a regular file whose blocks the extent route may read
//!    (`engine/file_extents.rs`, `Config::file_extent_devices`). The registration is per
//!    call: gone, with our dup of the target fd, when the call returns (the kernel drops its
//!    last reference asynchronously, moments later).
//! 2. **O_DIRECT into the target's mapping** where its pages take it: a memfd's shmem or
//!    hugetlb pages (the engine's DIRECT_REGISTERED/DIRECT paths, on a window mapping).
//! 3. **The CPU mapping**: mmap of the dma-buf between DMA_BUF_IOCTL_SYNC start and end, and
//!    buffered reads into it (dma-heap, udmabuf and DRM exports are PFNMAP: O_DIRECT and
//!    buffer registration cannot pin them).
//!
//! An exporter that refuses mmap when no registration is possible is refused before anything
//! is read (`TargetNotMappable`).
//!
//! **After a failure** (I/O error, truncated file, cancel, deadline) the target's bytes in
//! `[offset, offset + length)` are unspecified (partly written); bytes outside that range
//! are never written: every write goes through the window mapping of exactly that range
//! (`Mapping::shared_rw_window`), whose slices end there and against which the io_uring
//! reads are bounds-checked. A failed or cancelled load never reports success.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, SFlag};
use nix::unistd::{lseek, Whence};

use crate::api::{
    BufferKind, Capabilities, ChecksumType, Config, ErrorKind, Filled, HeapInfo, IoPath,
    LoadControl, LoadError, LoadRequest, Result,
};
use crate::buffer::{self, Buffer};
use crate::engine::{self, Progress};
use crate::source::Source;
use crate::sys::dmabuf;
use crate::sys::mman::Mapping;

/// Why a target fd was refused; carried (downcastable) inside [`LoadError::source`], like
/// [`SourceError`](crate::source::SourceError) for the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the target fd is not open (EBADF)")]
    Closed,
    #[error("the target fd is an O_PATH fd: it grants no right to write")]
    PathOnly,
    #[error("the target fd is open read-only (O_RDONLY): filling it needs O_RDWR")]
    ReadOnly,
    #[error("the target fd is open write-only (O_WRONLY): mapping it needs O_RDWR")]
    WriteOnly,
    #[error("the target is the source file itself")]
    IsSource,
    #[error("the target is not a dma-buf")]
    NotDmabuf,
    #[error("the target is a memfd, and this machine has dma-bufs: targets must be dma-bufs")]
    MemfdOnDmabufMachine,
    #[error("the target memfd is sealed against writing (F_SEAL_WRITE / F_SEAL_FUTURE_WRITE)")]
    Sealed,
    #[error(
        "the target memfd is not sealed against shrinking (F_SEAL_SHRINK): its owner could \
         truncate it under the service"
    )]
    NotSealedShrink,
    #[error("the target is too small for the range at that offset")]
    TooSmall,
    #[error("the kernel refused a writable mapping of the target")]
    MapDenied,
    #[error("the target's exporter refuses mmap, and io_uring registration is not possible")]
    Unmappable,
}

impl TargetError {
    pub fn kind(self) -> ErrorKind {
        use TargetError::*;
        match self {
            Closed => ErrorKind::BadFd,
            PathOnly | ReadOnly | WriteOnly | Sealed | MapDenied => ErrorKind::TargetNotWritable,
            IsSource | NotSealedShrink => ErrorKind::InvalidArgument,
            NotDmabuf | MemfdOnDmabufMachine => ErrorKind::NotADmabuf,
            TooSmall => ErrorKind::TargetTooSmall,
            Unmappable => ErrorKind::TargetNotMappable,
        }
    }
}

fn refuse(e: TargetError, detail: String) -> LoadError {
    LoadError {
        kind: e.kind(),
        source: anyhow::Error::new(e).context(detail),
    }
}

/// A validated target: our dup, what the kernel said about it, and the mapping of the range.
#[derive(Debug)]
pub(crate) struct Target {
    fd: OwnedFd,
    kind: BufferKind,
    exporter: String,
    size: u64,
    offset: u64,
    len: u64,
    page_size: u64,
    /// The writable window `offset..offset + len` (None for an empty range).
    map: Option<Mapping>,
}

impl Target {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn exporter(&self) -> &str {
        &self.exporter
    }
    pub(crate) fn kind(&self) -> BufferKind {
        self.kind
    }
    fn is_dmabuf(&self) -> bool {
        self.kind != BufferKind::Memfd
    }
}

/// What the machine allows as a target.
pub(crate) struct Policy<'a> {
    /// memfds are targets only where the machine has no dma-buf source at all (a Linux host
    /// without dma-heaps and udmabuf); elsewhere the contract is "a dma-buf".
    pub memfd_targets: bool,
    /// To tell a dma-heap's buffer (exporter name = heap name) from another exporter's.
    pub dma_heap_dir: &'a Path,
}

/// `exp_name` from a dma-buf's fdinfo; `None` for any other file.
fn exporter_name(fd: BorrowedFd<'_>) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("exp_name:"))
        .map(|v| v.trim().to_string())
}

fn describe(mode: u32, link: &str) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "a pipe/FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFREG if link.starts_with("/memfd:") => "a memfd",
        SFlag::S_IFREG => "a regular file",
        _ if link.starts_with("anon_inode:") => "an anonymous-inode file (eventfd, timerfd...)",
        _ => "a special file",
    }
}

/// Validates the untrusted `fd` as the target of `len` bytes at `offset`, for `source`, and
/// maps that range writable. No byte of it is read or written here.
pub(crate) fn validate(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    source: &Source,
    policy: &Policy<'_>,
) -> Result<Target> {
    let raw = fd.as_raw_fd();
    let flags = match fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        Ok(f) => OFlag::from_bits_retain(f),
        Err(Errno::EBADF) => return Err(refuse(TargetError::Closed, format!("target fd {raw}"))),
        Err(e) => {
            return Err(LoadError::new(
                ErrorKind::BadFd,
                anyhow!("fcntl(F_GETFL) on the target fd {raw}: {e}"),
            ))
        }
    };
    if flags.contains(OFlag::O_PATH) {
        return Err(refuse(TargetError::PathOnly, format!("target fd {raw}")));
    }
    match flags & OFlag::O_ACCMODE {
        OFlag::O_RDWR => {}
        OFlag::O_WRONLY => return Err(refuse(TargetError::WriteOnly, format!("target fd {raw}"))),
        _ => return Err(refuse(TargetError::ReadOnly, format!("target fd {raw}"))),
    }
    // From here on only our own dup is inspected: its number cannot be reused under us.
    let fd = fd.try_clone_to_owned().map_err(|e| {
        LoadError::new(
            ErrorKind::Internal,
            anyhow!("dup of the target fd {raw}: {e}"),
        )
    })?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| {
        LoadError::new(
            ErrorKind::BadFd,
            anyhow!("fstat of the target fd {raw}: {e}"),
        )
    })?;
    if (st.st_dev, st.st_ino) == (source.dev, source.ino) {
        return Err(refuse(
            TargetError::IsSource,
            format!("target fd {raw} and the source are both {}", source.path),
        ));
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (kind, exporter, size, page_size) = if let Some(exp) = exporter_name(fd.as_fd()) {
        // dma_buf_llseek answers SEEK_END with the buffer size and leaves f_pos alone.
        let size = lseek(fd.as_raw_fd(), 0, Whence::SeekEnd).map_err(|e| {
            LoadError::new(
                ErrorKind::BadFd,
                anyhow!("lseek(SEEK_END) on the target dma-buf ({exp}): {e}"),
            )
        })? as u64;
        let kind = if exp == buffer::UDMABUF {
            BufferKind::Udmabuf
        } else if policy.dma_heap_dir.join(&exp).exists() {
            BufferKind::DmaHeap
        } else {
            BufferKind::DmaBuf
        };
        (kind, exp, size, 0)
    } else {
        let what = describe(st.st_mode, &link);
        let seals = fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS);
        if !(link.starts_with("/memfd:") && seals.is_ok()) {
            return Err(refuse(
                TargetError::NotDmabuf,
                format!(
                    "target fd {raw} is {what} ({link}){}",
                    if policy.memfd_targets {
                        "; on this machine a memfd is accepted too"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if !policy.memfd_targets {
            return Err(refuse(
                TargetError::MemfdOnDmabufMachine,
                format!("target fd {raw} ({link})"),
            ));
        }
        let seals = seals.unwrap_or(0);
        if seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
            return Err(refuse(
                TargetError::Sealed,
                format!("target fd {raw} ({link}), seals {seals:#x}"),
            ));
        }
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(refuse(
                TargetError::NotSealedShrink,
                format!("target fd {raw} ({link}), seals {seals:#x}"),
            ));
        }
        (
            BufferKind::Memfd,
            buffer::MEMFD.to_string(),
            st.st_size as u64,
            st.st_blksize as u64,
        )
    };
    let end = offset.checked_add(len).filter(|&e| e <= size);
    if end.is_none() {
        return Err(refuse(
            TargetError::TooSmall,
            format!(
                "{len} bytes at target offset {offset} need {} bytes; the target ({exporter}) has {size}",
                offset as u128 + len as u128
            ),
        ));
    }
    let map = if len == 0 {
        None
    } else {
        let n = usize::try_from(len)
            .map_err(|_| LoadError::msg(ErrorKind::TooLarge, "range exceeds address space"))?;
        // A hugetlb memfd maps only in whole huge pages (its st_blksize).
        match Mapping::shared_rw_window(&fd, offset, n, page_size as usize) {
            Ok(m) => Some(m),
            Err(e @ (Errno::EACCES | Errno::EPERM)) => {
                return Err(refuse(
                    TargetError::MapDenied,
                    format!("mmap(PROT_WRITE, MAP_SHARED) of the target ({exporter}): {e}"),
                ))
            }
            Err(e) => {
                // DMABUF_REGISTERED itself would not need the mapping, but the unaligned
                // head/tail, the zeros of holes and every fallback path write through it.
                return Err(refuse(
                    TargetError::Unmappable,
                    format!(
                        "the exporter {exporter:?} refused mmap ({e}); the loader needs the \
                         mapping for unaligned bytes, holes and every path but DMABUF_REGISTERED"
                    ),
                ));
            }
        }
    };
    Ok(Target {
        fd,
        kind,
        exporter,
        size,
        offset,
        len,
        page_size,
        map,
    })
}

/// DMA_BUF_IOCTL_SYNC(START|WRITE) on a dma-buf target; END on drop, so the exporter's
/// begin/end_cpu_access stay paired on every error path too.
struct CpuAccess<'a>(Option<BorrowedFd<'a>>);

impl<'a> CpuAccess<'a> {
    fn begin(t: &'a Target) -> Result<Self> {
        if !t.is_dmabuf() {
            return Ok(CpuAccess(None));
        }
        dmabuf::sync(
            &t.fd,
            dmabuf::DMA_BUF_SYNC_WRITE | dmabuf::DMA_BUF_SYNC_START,
        )
        .map_err(|e| {
            LoadError::new(
                ErrorKind::TargetNotMappable,
                anyhow!(
                    "DMA_BUF_IOCTL_SYNC(START) on the target ({}): {e}",
                    t.exporter
                ),
            )
        })?;
        Ok(CpuAccess(Some(t.fd.as_fd())))
    }

    fn end(mut self) -> Result<()> {
        match self.0.take() {
            Some(fd) => dmabuf::sync(fd, dmabuf::DMA_BUF_SYNC_WRITE | dmabuf::DMA_BUF_SYNC_END)
                .map_err(|e| {
                    LoadError::new(
                        ErrorKind::Internal,
                        anyhow!("DMA_BUF_IOCTL_SYNC(END) on the target: {e}"),
                    )
                }),
            None => Ok(()),
        }
    }
}

impl Drop for CpuAccess<'_> {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            if let Err(e) = dmabuf::sync(fd, dmabuf::DMA_BUF_SYNC_WRITE | dmabuf::DMA_BUF_SYNC_END)
            {
                log::warn!("DMA_BUF_IOCTL_SYNC(END) on a failed load's target: {e}");
            }
        }
    }
}

/// Fills the prepared target. `Ok` only when every byte of the range was read and the
/// source did not shrink meanwhile.
pub(crate) fn run(
    config: &Config,
    caps: &Capabilities,
    source: Source,
    mut target: Target,
    req: &LoadRequest,
    ctl: &LoadControl<'_>,
) -> Result<Filled> {
    let started = Instant::now();
    let mut progress = Progress::new(ctl, source.len);
    progress.check()?;
    let (io_path, io_path_reason, checksum) = match target.map.take() {
        None => (
            IoPath::None,
            "empty range: nothing to read".to_string(),
            None,
        ),
        Some(map) => {
            let cpu = CpuAccess::begin(&target)?;
            let dest = Buffer::client_target(
                HeapInfo {
                    name: target.exporter.clone(),
                    kind: if target.is_dmabuf() {
                        BufferKind::DmaBuf
                    } else {
                        BufferKind::Memfd
                    },
                    is_dmabuf: target.is_dmabuf(),
                    direct_io: !target.is_dmabuf(),
                    page_sizes: if target.is_dmabuf() {
                        Vec::new()
                    } else {
                        vec![target.page_size]
                    },
                },
                target.len,
                target.fd.try_clone().map_err(|e| {
                    LoadError::new(ErrorKind::Internal, anyhow!("dup of the target: {e}"))
                })?,
                target.is_dmabuf().then_some((target.offset, target.size)),
            );
            let mut map = Arc::new(map);
            let s1 = source.version_before_reads(&|| progress.check())?;
            let (path, reason) =
                engine::fill(config, caps, &source, &dest, &mut map, &mut progress)?;
            source.check_unchanged(s1.as_ref())?;
            // Step 1 of the chain says why it did not run, whatever path ran after it.
            let reason = if path == IoPath::DmabufRegistered {
                reason
            } else if !caps.io_uring_dmabuf_regbuf {
                format!(
                    "DMABUF_REGISTERED: the kernel has no io_uring dma-buf registration; {reason}"
                )
            } else {
                let why = engine::dmabuf_registered_refusal(config, caps, &dest, &source)
                    .unwrap_or_else(|| "tried, refused as follows".into());
                format!("DMABUF_REGISTERED: {why}; {reason}")
            };
            let map = Arc::into_inner(map).expect("no reader holds the mapping after fill");
            let checksum = match req.checksum {
                ChecksumType::None => None,
                ChecksumType::Xxh3_64 => {
                    Some((ChecksumType::Xxh3_64, engine::xxh3_64(map.as_slice())))
                }
            };
            drop(map);
            cpu.end()?;
            (path, reason, checksum)
        }
    };
    progress.check()?;
    let filled = Filled {
        data_len: source.len,
        target_offset: target.offset,
        target_size: target.size,
        exporter: target.exporter.clone(),
        kind: target.kind,
        io_path,
        io_path_reason,
        page_size: target.page_size,
        total_time: started.elapsed(),
        checksum,
    };
    log::debug!(
        "filled {} bytes of {} at {} into the client's {} at {} via {:?} ({}) in {:?}",
        filled.data_len,
        source.path,
        source.offset,
        filled.exporter,
        filled.target_offset,
        filled.io_path,
        filled.io_path_reason,
        filled.total_time
    );
    Ok(filled)
}
