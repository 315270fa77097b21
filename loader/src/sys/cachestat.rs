//! cachestat(2) (Linux 6.5+, syscall 451 on x86_64 and arm64; not wrapped by libc/nix).

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat` (pages).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Cachestat {
    pub nr_cache: u64,
    pub nr_dirty: u64,
    pub nr_writeback: u64,
    pub nr_evicted: u64,
    pub nr_recently_evicted: u64,
}

/// Page-cache state of `len` bytes at `off` of `fd`. ENOSYS on kernels before 6.5.
pub fn cachestat(fd: impl AsFd, off: u64, len: u64) -> nix::Result<Cachestat> {
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    {
        let range = CachestatRange { off, len };
        let mut out = Cachestat::default();
        // SAFETY: both structs are valid for the call (range read, out written); flags 0.
        let r = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                fd.as_fd().as_raw_fd(),
                &range as *const CachestatRange,
                &mut out as *mut Cachestat,
                0u32,
            )
        };
        Errno::result(r)?;
        Ok(out)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )))]
    {
        let _ = (fd, off, len);
        Err(Errno::ENOSYS)
    }
}
