//! Validation of the untrusted source fd and the requested range, and the source's identity:
//! where it points (readlink of /proc/self/fd), reopening it with or without O_DIRECT, and
//! the same-inode check on every reopen. No other module of the engine opens /proc/self/fd
//! for a source.
//!
//! Cheap by design: fcntl(F_GETFL), fstat, (BLKGETSIZE64 for allowed block devices), a
//! readlink and a dup. Nothing here changes the flags of the client's open file description;
//! the direct path later reopens the file through /proc/self/fd ([`Source::reopen_direct`]),
//! which yields a NEW description.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::api::{Config, ErrorKind, LoadError, LoadRequest, Result};
use crate::sys::blkdev;

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

    /// Our own O_DIRECT description of the source (see [`reopen`]); `Err` says why not, for
    /// the engine's fallback reason.
    pub fn reopen_direct(&self) -> std::result::Result<OwnedFd, String> {
        reopen(&self.fd, (self.dev, self.ino), true)
    }
}

fn block_device_size(fd: BorrowedFd<'_>) -> Result<u64> {
    blkdev::size(fd).map_err(|e| LoadError::new(ErrorKind::Io, anyhow!("BLKGETSIZE64: {e}")))
}

/// Current size of an open source (used again after the load to detect truncation).
pub fn current_size(fd: BorrowedFd<'_>, is_block_device: bool) -> Result<u64> {
    if is_block_device {
        return block_device_size(fd);
    }
    let st = fstat(fd).map_err(|e| LoadError::new(ErrorKind::Io, anyhow!("fstat: {e}")))?;
    Ok(st.st_size as u64)
}

/// Opens `/proc/self/fd/N` read-only, with or without O_DIRECT: a NEW open file description
/// (the client's flags are never touched) of the same inode `id` = (dev, ino), checked.
/// O_DIRECT is for the direct path; without it, for the paths that read at unaligned offsets
/// when the client's own description is O_DIRECT.
fn reopen(fd: &OwnedFd, id: (u64, u64), direct: bool) -> std::result::Result<OwnedFd, String> {
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let what = if direct {
        "the O_DIRECT reopen"
    } else {
        "the reopen"
    };
    let mut flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    if direct {
        flags |= OFlag::O_DIRECT;
    }
    let new = nix::fcntl::open(proc_path.as_str(), flags, nix::sys::stat::Mode::empty()).map_err(
        |e| match e {
            Errno::EINVAL if direct => "the file system refused O_DIRECT (EINVAL)".to_string(),
            _ if direct => format!("reopening with O_DIRECT failed: {e}"),
            _ => format!("open {proc_path}: {e}"),
        },
    )?;
    let nst = fstat(&new).map_err(|e| format!("fstat of {what}: {e}"))?;
    if (nst.st_dev, nst.st_ino) != id {
        return Err(format!("{what} is not the same inode"));
    }
    Ok(new)
}

/// Validates `fd` and the range of `req` against `config`.
pub fn validate(fd: BorrowedFd<'_>, req: &LoadRequest, config: &Config) -> Result<Source> {
    let raw = fd.as_raw_fd();
    let flags = match fcntl(fd, FcntlArg::F_GETFL) {
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
        fstat(fd).map_err(|e| LoadError::new(ErrorKind::BadFd, anyhow!("fstat fd {raw}: {e}")))?;
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
        reopen(&dup, (st.st_dev, st.st_ino), false).map_err(|e| {
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
        offset,
        len,
        is_block_device,
        path,
    })
}
