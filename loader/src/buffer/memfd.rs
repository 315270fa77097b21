//! memfd: the page source behind both the `memfd` fallback and udmabuf.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::unistd::ftruncate;

/// A sealable memfd of `size` bytes named `name` (shown in /proc/<pid>/fd and maps).
/// No page is allocated yet: the I/O faults pages in as it goes.
pub fn create(name: &str, size: u64) -> anyhow::Result<OwnedFd> {
    create_with(name, size, MemFdCreateFlag::empty())
}

/// A sealable hugetlb memfd of `size` bytes (a multiple of `page_size`) in pages of
/// `page_size` from the kernel's pool. Pages are reserved when the memfd is mapped
/// MAP_SHARED: a pool too small fails that mmap (ENOMEM), never a later fault.
pub fn create_hugetlb(name: &str, size: u64, page_size: u64) -> anyhow::Result<OwnedFd> {
    anyhow::ensure!(
        page_size.is_power_of_two() && size % page_size == 0,
        "{size} bytes is not a whole number of {page_size}-byte huge pages"
    );
    let log2 = page_size.trailing_zeros() as libc::c_uint;
    let size_bits = MemFdCreateFlag::from_bits_retain(log2 << libc::MFD_HUGE_SHIFT);
    create_with(name, size, MemFdCreateFlag::MFD_HUGETLB | size_bits)
        .with_context(|| format!("hugetlb memfd of {} KiB pages", page_size >> 10))
}

fn create_with(name: &str, size: u64, extra: MemFdCreateFlag) -> anyhow::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name.replace('\0', "")).context("memfd name")?;
    let fd = memfd_create(
        cname.as_c_str(),
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING | extra,
    )
    .context("memfd_create")?;
    ftruncate(&fd, size as i64).with_context(|| format!("ftruncate memfd to {size} bytes"))?;
    // Fixed size from here on, like a dma-buf; udmabuf requires F_SEAL_SHRINK anyway.
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
    )
    .context("F_ADD_SEALS(SHRINK|GROW)")?;
    Ok(fd)
}

/// Makes a filled memfd read-only for whoever receives it: F_SEAL_WRITE (no writable
/// shared mapping, no write(2), by anyone, from now on; needs our own mapping gone and no
/// page pinned) and F_SEAL_SEAL, then a fresh O_RDONLY description via /proc/self/fd so
/// the receiver cannot even ask for write access. The O_RDWR original is closed.
pub fn seal_read_only(fd: OwnedFd) -> anyhow::Result<OwnedFd> {
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL),
    )
    .context("F_ADD_SEALS(WRITE|SEAL) on the filled memfd")?;
    let ro = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .context("reopening the memfd O_RDONLY via /proc/self/fd")?;
    Ok(ro.into())
}
