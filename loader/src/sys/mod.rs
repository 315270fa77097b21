//! Every `unsafe` line of the crate lives below this module: mmap/madvise, the dma-buf,
//! udmabuf and block-device ioctls, raw syscalls libc/nix do not wrap (statx, cachestat, extended
//! io_uring_register) and the io_uring submission wrapper. Each module exposes a safe API
//! whose invariants are checked where they can be and documented with `// SAFETY:` where
//! they rely on the kernel's contract.

pub mod blkdev;
pub mod cachestat;
pub mod dmabuf;
pub mod mman;
pub mod ring;
pub mod statx;
