//! dma-heap, udmabuf and dma-buf ioctls (uapi: linux/dma-heap.h, linux/udmabuf.h,
//! linux/dma-buf.h), declared with nix's ioctl macros.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `struct dma_heap_allocation_data`.
#[repr(C)]
#[derive(Default)]
pub struct DmaHeapAllocationData {
    pub len: u64,
    pub fd: u32,
    pub fd_flags: u32,
    pub heap_flags: u64,
}

/// `struct udmabuf_create`.
#[repr(C)]
#[derive(Default)]
pub struct UdmabufCreate {
    pub memfd: u32,
    pub flags: u32,
    pub offset: u64,
    pub size: u64,
}

/// `struct dma_buf_sync`.
#[repr(C)]
#[derive(Default)]
pub struct DmaBufSync {
    pub flags: u64,
}

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
pub const DMA_BUF_SYNC_READ: u64 = 1;
pub const DMA_BUF_SYNC_WRITE: u64 = 2;
pub const DMA_BUF_SYNC_START: u64 = 0;
pub const DMA_BUF_SYNC_END: u64 = 4;

nix::ioctl_readwrite!(dma_heap_ioctl_alloc, b'H', 0x0, DmaHeapAllocationData);
nix::ioctl_write_ptr!(udmabuf_ioctl_create, b'u', 0x42, UdmabufCreate);
nix::ioctl_write_ptr!(dma_buf_ioctl_sync, b'b', 0, DmaBufSync);
// DMA_BUF_SET_NAME is `_IOW('b', 1, const char *)`: the argument IS the string pointer.
nix::ioctl_write_ptr_bad!(
    dma_buf_ioctl_set_name,
    nix::request_code_write!(b'b', 1, std::mem::size_of::<u64>()),
    libc::c_char
);

/// Allocates `len` bytes from an open dma-heap; returns the dma-buf (O_RDWR|O_CLOEXEC).
pub fn heap_alloc(heap: impl AsFd, len: u64) -> nix::Result<OwnedFd> {
    let mut data = DmaHeapAllocationData {
        len,
        fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        ..Default::default()
    };
    // SAFETY: `data` is a valid, exclusively borrowed dma_heap_allocation_data for the call.
    unsafe { dma_heap_ioctl_alloc(heap.as_fd().as_raw_fd(), &mut data) }?;
    // SAFETY: on success the kernel installed a new fd in `data.fd` that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(data.fd as i32) })
}

/// Wraps `size` bytes of a sealed memfd into a dma-buf (O_RDWR|O_CLOEXEC).
pub fn udmabuf_create(dev: impl AsFd, memfd: impl AsFd, size: u64) -> nix::Result<OwnedFd> {
    let arg = UdmabufCreate {
        memfd: memfd.as_fd().as_raw_fd() as u32,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size,
    };
    // SAFETY: `arg` is a valid udmabuf_create for the duration of the call.
    let fd = unsafe { udmabuf_ioctl_create(dev.as_fd().as_raw_fd(), &arg) }?;
    // SAFETY: the ioctl returns a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// DMA_BUF_IOCTL_SYNC with `flags` (START/END | READ/WRITE).
pub fn sync(dmabuf: impl AsFd, flags: u64) -> nix::Result<()> {
    let arg = DmaBufSync { flags };
    loop {
        // SAFETY: `arg` is a valid dma_buf_sync for the call.
        match unsafe { dma_buf_ioctl_sync(dmabuf.as_fd().as_raw_fd(), &arg) } {
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            r => return r.map(drop),
        }
    }
}

/// DMA_BUF_SET_NAME (the kernel keeps at most 32 bytes incl. NUL; longer names are cut).
pub fn set_name(dmabuf: impl AsFd, name: &str) -> nix::Result<()> {
    let cut: String = name.chars().filter(|c| *c != '\0').take(31).collect();
    let c = CString::new(cut).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `c` is a NUL-terminated string alive for the call; the kernel copies it.
    unsafe { dma_buf_ioctl_set_name(dmabuf.as_fd().as_raw_fd(), c.as_ptr()) }.map(drop)
}
