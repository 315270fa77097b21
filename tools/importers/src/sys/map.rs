//! A shared mapping of a dma-buf, and the DMA_BUF_IOCTL_SYNC bracket around CPU access.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::ioctl_write_ptr;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_WRITE: u64 = 2;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;

/// struct dma_buf_sync (include/uapi/linux/dma-buf.h).
#[repr(C)]
struct DmaBufSync {
    flags: u64,
}

ioctl_write_ptr!(dma_buf_ioctl_sync, b'b', 0, DmaBufSync);

fn sync(fd: BorrowedFd<'_>, flags: u64) -> nix::Result<()> {
    let s = DmaBufSync { flags };
    // SAFETY: `s` is a valid dma_buf_sync the kernel only reads.
    unsafe { dma_buf_ioctl_sync(fd.as_raw_fd(), &s) }.map(drop)
}

/// CPU access to a dma-buf: SYNC(START) on creation, SYNC(END) on drop.
pub struct CpuAccess<'a> {
    fd: BorrowedFd<'a>,
    dir: u64,
}

impl<'a> CpuAccess<'a> {
    pub fn read(fd: BorrowedFd<'a>) -> nix::Result<Self> {
        Self::begin(fd, DMA_BUF_SYNC_READ)
    }
    pub fn write(fd: BorrowedFd<'a>) -> nix::Result<Self> {
        Self::begin(fd, DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE)
    }
    fn begin(fd: BorrowedFd<'a>, dir: u64) -> nix::Result<Self> {
        sync(fd, DMA_BUF_SYNC_START | dir)?;
        Ok(CpuAccess { fd, dir })
    }
}

impl Drop for CpuAccess<'_> {
    fn drop(&mut self) {
        if let Err(e) = sync(self.fd, DMA_BUF_SYNC_END | self.dir) {
            eprintln!("DMA_BUF_IOCTL_SYNC(END): {e}");
        }
    }
}

/// `len` bytes of a dma-buf from offset 0, mapped `MAP_SHARED` (writable when asked);
/// unmapped on drop.
pub struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
    writable: bool,
}

impl Mapping {
    pub fn new(fd: impl AsFd, len: usize, writable: bool) -> nix::Result<Mapping> {
        let n = NonZeroUsize::new(len).ok_or(nix::errno::Errno::EINVAL)?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh shared mapping at an address the kernel picks; it aliases no Rust
        // object, and the fd's memory stays valid while mapped (the mapping holds the file).
        let ptr = unsafe { mmap(None, n, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(Mapping { ptr, len, writable })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop; the borrow ends before that.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.len) }
    }

    /// The bytes, writable; panics on a read-only mapping (a write would fault).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        assert!(self.writable, "as_mut_slice of a read-only mapping");
        // SAFETY: `ptr` maps `len` writable bytes (checked above) until drop; `&mut self`
        // makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`; no slice outlives self.
        if let Err(e) = unsafe { munmap(self.ptr, self.len) } {
            eprintln!("munmap: {e}");
        }
    }
}
