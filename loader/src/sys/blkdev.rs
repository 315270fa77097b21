//! Block-device ioctls.

use std::os::fd::{AsRawFd, BorrowedFd};

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// The size in bytes of the block device `fd` (BLKGETSIZE64).
pub fn size(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`, which is valid for the call.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }?;
    Ok(size)
}
