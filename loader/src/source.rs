//! Validation of the untrusted source fd and the requested range.
//!
//! Cheap by design: fcntl(F_GETFL), fstat, (BLKGETSIZE64 for allowed block devices) and a
//! dup. Nothing here changes the flags of the client's open file description; the direct
//! path later reopens the file through /proc/self/fd, which yields a NEW description.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::api::{Config, ErrorKind, LoadError, LoadRequest, Result};

/// Why a source fd was refused; carried (downcastable) inside [`LoadError::source`], so each
/// refusal is a distinct typed error even where several share one AIDL [`ErrorKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("fd is not open (EBADF)")]
    Closed,
    #[error("fd is an O_PATH fd: it grants no right to read")]
    PathOnly,
    #[error("fd is open write-only (O_WRONLY)")]
    WriteOnly,
    #[error("fd is a pipe/FIFO, not a regular file")]
    Pipe,
    #[error("fd is a socket, not a regular file")]
    Socket,
    #[error("fd is a directory, not a regular file")]
    Directory,
    #[error("fd is a character device (e.g. /dev/null), not a regular file")]
    CharDevice,
    #[error("fd is a block device and this loader does not accept block devices")]
    BlockDevice,
    #[error("fd is a symlink or other special file, not a regular file")]
    OtherType,
    #[error("offset is beyond the end of the file")]
    OffsetPastEnd,
    #[error("offset + length is beyond the end of the file")]
    RangePastEnd,
    #[error("offset + length overflows")]
    RangeOverflow,
    #[error("the requested length exceeds the per-load limit")]
    TooLarge,
}

impl SourceError {
    pub fn kind(self) -> ErrorKind {
        use SourceError::*;
        match self {
            Closed => ErrorKind::BadFd,
            PathOnly => ErrorKind::PathOnlyFd,
            WriteOnly => ErrorKind::NotReadable,
            Pipe | Socket | Directory | CharDevice | BlockDevice | OtherType => {
                ErrorKind::UnsupportedFileType
            }
            OffsetPastEnd | RangePastEnd | RangeOverflow => ErrorKind::InvalidRange,
            TooLarge => ErrorKind::TooLarge,
        }
    }
}

fn refuse(e: SourceError, detail: String) -> LoadError {
    LoadError {
        kind: e.kind(),
        source: anyhow::Error::new(e).context(detail),
    }
}

/// A validated source: our own dup of the client's fd plus what we checked.
#[derive(Debug)]
pub struct Source {
    /// Our dup (F_DUPFD_CLOEXEC): shares the client's description, used only for
    /// positional reads (pread / io_uring with an explicit offset), so the file position
    /// and flags the client sees never change.
    pub fd: OwnedFd,
    pub dev: u64,
    pub ino: u64,
    /// File (or block device) size when validated.
    pub file_size: u64,
    pub offset: u64,
    pub len: u64,
    pub is_block_device: bool,
    /// Where the fd points (readlink /proc/self/fd/N), for names and logs.
    pub path: String,
}

impl Source {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
    /// Short label for buffer names: the file name.
    pub fn label(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

fn block_device_size(fd: BorrowedFd<'_>) -> Result<u64> {
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`, which is valid for the call.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }
        .map_err(|e| LoadError::new(ErrorKind::Io, anyhow!("BLKGETSIZE64: {e}")))?;
    Ok(size)
}

/// Current size of an open source (used again after the load to detect truncation).
pub fn current_size(fd: BorrowedFd<'_>, is_block_device: bool) -> Result<u64> {
    if is_block_device {
        return block_device_size(fd);
    }
    let st =
        fstat(fd.as_raw_fd()).map_err(|e| LoadError::new(ErrorKind::Io, anyhow!("fstat: {e}")))?;
    Ok(st.st_size as u64)
}

/// Opens `/proc/self/fd/N` read-only without O_DIRECT: a new open file description of the
/// same inode (checked), for the paths that read at unaligned offsets.
fn reopen_without_direct(
    fd: &OwnedFd,
    st: &nix::sys::stat::FileStat,
) -> std::result::Result<OwnedFd, String> {
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    // std opens O_RDONLY | O_CLOEXEC and hands back an owned fd.
    let new = OwnedFd::from(
        std::fs::File::open(&proc_path).map_err(|e| format!("open {proc_path}: {e}"))?,
    );
    let nst = fstat(new.as_raw_fd()).map_err(|e| format!("fstat of the reopen: {e}"))?;
    if (nst.st_dev, nst.st_ino) != (st.st_dev, st.st_ino) {
        return Err("the reopen is not the same inode".into());
    }
    Ok(new)
}

/// Validates `fd` and the range of `req` against `config`.
pub fn validate(fd: BorrowedFd<'_>, req: &LoadRequest, config: &Config) -> Result<Source> {
    let raw = fd.as_raw_fd();
    let flags = match fcntl(raw, FcntlArg::F_GETFL) {
        Ok(f) => OFlag::from_bits_retain(f),
        Err(Errno::EBADF) => return Err(refuse(SourceError::Closed, format!("fd {raw}"))),
        Err(e) => {
            return Err(LoadError::new(
                ErrorKind::BadFd,
                anyhow!("fcntl(F_GETFL) on fd {raw}: {e}"),
            ))
        }
    };
    if flags.contains(OFlag::O_PATH) {
        return Err(refuse(SourceError::PathOnly, format!("fd {raw}")));
    }
    if flags & OFlag::O_ACCMODE == OFlag::O_WRONLY {
        return Err(refuse(SourceError::WriteOnly, format!("fd {raw}")));
    }
    let st =
        fstat(raw).map_err(|e| LoadError::new(ErrorKind::BadFd, anyhow!("fstat fd {raw}: {e}")))?;
    let path = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("fd:{raw}"));
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let (is_block_device, file_size) = match fmt {
        SFlag::S_IFREG => (false, st.st_size as u64),
        SFlag::S_IFBLK if config.allow_block_devices => (true, block_device_size(fd)?),
        SFlag::S_IFBLK => return Err(refuse(SourceError::BlockDevice, path)),
        SFlag::S_IFIFO => return Err(refuse(SourceError::Pipe, path)),
        SFlag::S_IFSOCK => return Err(refuse(SourceError::Socket, path)),
        SFlag::S_IFDIR => return Err(refuse(SourceError::Directory, path)),
        SFlag::S_IFCHR => return Err(refuse(SourceError::CharDevice, path)),
        _ => return Err(refuse(SourceError::OtherType, path)),
    };
    let offset = req.offset;
    if offset > file_size {
        return Err(refuse(
            SourceError::OffsetPastEnd,
            format!("offset {offset}, file size {file_size} ({path})"),
        ));
    }
    let len = req.length.unwrap_or(file_size - offset);
    let end = offset.checked_add(len).ok_or_else(|| {
        refuse(
            SourceError::RangeOverflow,
            format!("offset {offset} + length {len}"),
        )
    })?;
    if end > file_size {
        return Err(refuse(
            SourceError::RangePastEnd,
            format!("offset {offset} + length {len} = {end} > file size {file_size} ({path})"),
        ));
    }
    if len > config.max_load_bytes {
        return Err(refuse(
            SourceError::TooLarge,
            format!(
                "{len} bytes requested, limit {} ({path})",
                config.max_load_bytes
            ),
        ));
    }
    let dup = fd
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| LoadError::new(ErrorKind::Internal, anyhow!("dup of fd {raw}: {e}")))?;
    // A client description opened with O_DIRECT would make every buffered/pread read on our
    // dup (which shares it) fail with EINVAL at unaligned offsets. Read through a NEW
    // description without O_DIRECT instead (the checks above already refused O_PATH and
    // write-only fds), never by changing the client's flags.
    let dup = if flags.contains(OFlag::O_DIRECT) {
        reopen_without_direct(&dup, &st).map_err(|e| {
            LoadError::new(
                ErrorKind::Io,
                anyhow!("fd {raw} ({path}) is O_DIRECT and could not be reopened without it: {e}"),
            )
        })?
    } else {
        dup
    };
    Ok(Source {
        fd: dup,
        dev: st.st_dev,
        ino: st.st_ino,
        file_size,
        offset,
        len,
        is_block_device,
        path,
    })
}
