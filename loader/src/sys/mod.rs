//! Every `unsafe` line of the crate lives below this module: mmap/madvise, the dma-buf,
//! udmabuf, block-device and FIEMAP/GETFLAGS ioctls, raw syscalls libc/nix do not wrap (statx, cachestat), the
//! io_uring submission wrapper (`ring`) and the io_uring dma-buf registered-buffer uAPI
//! (`regbuf`: the extended io_uring_register calls). Each module exposes a safe API
//! whose invariants are checked where they can be and documented with `// SAFETY:` where
//! they rely on the kernel's contract.

pub mod blkdev;
pub mod cachestat;
pub mod dmabuf;
pub mod fiemap;
pub mod mman;
pub mod regbuf;
pub mod ring;
pub mod statx;
