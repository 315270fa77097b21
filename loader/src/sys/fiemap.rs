//! FS_IOC_FIEMAP (where a file's bytes are on its block device) and FS_IOC_GETFLAGS (the
//! inode flags: journaled data, encryption, inline data...), for the extent route of
//! DMABUF_REGISTERED (`engine/file_extents.rs`). Layouts and values from
//! `include/uapi/linux/fiemap.h` and `include/uapi/linux/fs.h`.

use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
/// `FS_IOC_GETFLAGS` = `_IOR('f', 1, long)`; the kernel reads and writes an `int`.
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;

/// `fm_flags`: write the file's dirty pages back before mapping.
pub const FIEMAP_FLAG_SYNC: u32 = 0x1;

/// `fe_flags` (`include/uapi/linux/fiemap.h`).
pub const FIEMAP_EXTENT_LAST: u32 = 0x1;
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
pub const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
pub const FIEMAP_EXTENT_DATA_ENCRYPTED: u32 = 0x80;
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
pub const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x400;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
pub const FIEMAP_EXTENT_MERGED: u32 = 0x1000;
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// Inode flags (`FS_*_FL`, `include/uapi/linux/fs.h`).
pub const FS_COMPR_FL: u32 = 0x0000_0004;
pub const FS_ENCRYPT_FL: u32 = 0x0000_0800;
pub const FS_JOURNAL_DATA_FL: u32 = 0x0000_4000;
pub const FS_INLINE_DATA_FL: u32 = 0x1000_0000;

/// `struct fiemap` without its flexible array.
#[repr(C)]
#[derive(Default)]
struct FiemapHead {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

const _: () = assert!(size_of::<FiemapHead>() == 32);
const _: () = assert!(size_of::<RawExtent>() == 56);
const _: () = assert!(offset_of!(RawExtent, fe_flags) == 40);

/// Extents asked for per call.
const BATCH: usize = 128;

/// The request buffer: the header followed by `BATCH` extents, as the kernel expects them.
#[repr(C)]
struct Request {
    head: FiemapHead,
    extents: [RawExtent; BATCH],
}

/// One mapped extent: `len` bytes of the file at `logical` are at byte `physical` of the
/// file system's block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileExtent {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
    pub flags: u32,
}

/// Every extent overlapping `[start, start + len)` of `fd`'s file, in file order (the
/// file system may report extents that begin before `start` or end after the range).
/// `flags` is passed to every call (e.g. [`FIEMAP_FLAG_SYNC`]).
pub fn map(fd: BorrowedFd<'_>, start: u64, len: u64, flags: u32) -> nix::Result<Vec<FileExtent>> {
    let end = start.saturating_add(len);
    let mut out: Vec<FileExtent> = Vec::new();
    let mut pos = start;
    let mut req = Box::new(Request {
        head: FiemapHead::default(),
        extents: [RawExtent::default(); BATCH],
    });
    while pos < end {
        req.head = FiemapHead {
            fm_start: pos,
            fm_length: end - pos,
            fm_flags: flags,
            fm_extent_count: BATCH as u32,
            ..Default::default()
        };
        // SAFETY: FS_IOC_FIEMAP reads the header and writes at most `fm_extent_count`
        // (= BATCH) extents right after it; `req` is one live, writable allocation of exactly
        // that layout (repr(C), sizes asserted above) for the duration of the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FIEMAP, &mut *req as *mut Request) };
        Errno::result(r)?;
        let n = (req.head.fm_mapped_extents as usize).min(BATCH);
        if n == 0 {
            break; // nothing more is mapped: the rest of the range is a hole
        }
        let mut last = false;
        for e in &req.extents[..n] {
            out.push(FileExtent {
                logical: e.fe_logical,
                physical: e.fe_physical,
                len: e.fe_length,
                flags: e.fe_flags,
            });
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        let tail = out.last().expect("n > 0");
        let next = tail.logical.saturating_add(tail.len);
        if last || next <= pos {
            break;
        }
        pos = next;
    }
    Ok(out)
}

/// The inode flags of `fd`'s file (FS_IOC_GETFLAGS, as `lsattr` shows them).
pub fn inode_flags(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int into `flags`, valid and writable for the call.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETFLAGS,
            &mut flags as *mut libc::c_int,
        )
    };
    Errno::result(r)?;
    Ok(flags as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    /// Against the host's own file system: a file with data, a hole and data again maps to
    /// extents that cover the data and leave the hole out (on file systems with FIEMAP;
    /// tmpfs and overlayfs refuse it, which is said and accepted).
    #[test]
    fn a_sparse_file_maps_its_data_and_not_its_hole() {
        let dir = std::env::var("DMABUF_LOADER_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let path = std::path::Path::new(&dir).join(format!("fiemap-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.set_len(3 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&vec![9u8; 1 << 20], 3 << 20).unwrap();
        drop(f);
        let f = std::fs::File::open(&path).unwrap();
        let got = map(f.as_fd(), 0, 4 << 20, FIEMAP_FLAG_SYNC);
        let flags = inode_flags(f.as_fd());
        std::fs::remove_file(&path).unwrap();
        let ext = match got {
            Ok(e) => e,
            Err(e @ (Errno::EOPNOTSUPP | Errno::ENOTTY)) => {
                eprintln!("{dir}: no FIEMAP ({e}): skipped");
                return;
            }
            Err(e) => panic!("FIEMAP: {e}"),
        };
        assert!(flags.is_ok(), "GETFLAGS: {flags:?}");
        assert!(!ext.is_empty());
        for e in &ext {
            assert!(
                e.flags & FIEMAP_EXTENT_DELALLOC == 0,
                "SYNC leaves no delalloc: {e:?}"
            );
            let (a, b) = (e.logical, e.logical + e.len);
            assert!(
                b <= (1 << 20) || a >= (3 << 20),
                "an extent inside the hole: {e:?}"
            );
        }
        let covered: u64 = ext.iter().map(|e| e.len).sum();
        assert!(covered >= 2 << 20, "{ext:?}");
        assert!(
            ext.last().unwrap().flags & FIEMAP_EXTENT_LAST != 0,
            "{ext:?}"
        );
    }
}
