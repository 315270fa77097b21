//! memfd: the page source behind both the `memfd` fallback and udmabuf.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::ftruncate;

/// Smallest buffer whose size is checked against the memory available.
pub const MEMORY_CHECK_FROM: u64 = 64 << 20;

/// Refuses a buffer the machine cannot hold (more than MemAvailable). shmem pages are only
/// allocated as the I/O faults them in, and the system dma-heap allocates page by page with
/// ordinary GFP flags, so without this check a request larger than memory would start, drive
/// the machine into reclaim and end with the OOM killer choosing a victim (the 6.12 system
/// heap did exactly that in the VM rig), instead of failing at once with a clear error.
///
/// Buffers under [`MEMORY_CHECK_FROM`] skip it: one cannot exhaust memory by itself (the
/// service's in-flight budget bounds how many run at once), and reading /proc/meminfo would be
/// a large part of a small load's latency.
pub fn check_fits_in_memory(size: u64) -> anyhow::Result<()> {
    if size < MEMORY_CHECK_FROM {
        return Ok(());
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("no MemAvailable in /proc/meminfo")?;
    if size > available {
        anyhow::bail!(
            "a {size}-byte buffer needs that much memory and the machine has {available} bytes available"
        );
    }
    Ok(())
}

/// A sealable memfd of `size` bytes named `name` (shown in /proc/<pid>/fd and maps).
/// No page is allocated yet: the I/O faults pages in as it goes.
pub fn create(name: &str, size: u64) -> anyhow::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name.replace('\0', "")).context("memfd name")?;
    let fd = memfd_create(
        cname.as_c_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .context("memfd_create")?;
    ftruncate(&fd, size as i64).with_context(|| format!("ftruncate memfd to {size} bytes"))?;
    // Fixed size from here on, like a dma-buf; udmabuf requires F_SEAL_SHRINK anyway.
    fcntl(
        &fd,
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
        &fd,
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
