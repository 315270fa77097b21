//! The OS-level checks the cases need: test files with position-dependent contents, mapping a
//! returned buffer, DMA_BUF_IOCTL_SYNC, /proc/self/fdinfo, counting this process's fds. The
//! only `unsafe` of the suite lives here.

use std::ffi::c_void;
use std::fs::File;
use std::io::Write;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags};

/// The page size of this machine (the service runs on the same kernel).
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as u64)
}

pub fn round_up_to_page(n: u64) -> u64 {
    let p = page_size();
    n.div_ceil(p) * p
}

/// The byte at `pos` of a file generated with `seed`: every 8-byte word is a hash of its index
/// and the seed, so a misplaced, repeated or shifted chunk never compares equal.
pub fn pattern_word(seed: u64, word_index: u64) -> u64 {
    // splitmix64 finaliser
    let mut z =
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ word_index.wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes `size` bytes of the `seed` pattern to a new file at `path`.
pub fn write_pattern_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    const CHUNK: u64 = 1 << 20;
    let mut buf = Vec::with_capacity(CHUNK as usize);
    let mut pos = 0u64;
    while pos < size {
        let n = CHUNK.min(size - pos);
        buf.clear();
        let first_word = pos / 8;
        let words = n.div_ceil(8);
        for w in 0..words {
            buf.extend_from_slice(&pattern_word(seed, first_word + w).to_le_bytes());
        }
        buf.truncate(n as usize);
        f.write_all(&buf)
            .with_context(|| format!("write {}", path.display()))?;
        pos += n;
    }
    // Clean pages only: dirty ones would stay in the cache on DONTNEED.
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    Ok(())
}

/// Drops a clean file's pages from the page cache (POSIX_FADV_DONTNEED; no root needed).
pub fn drop_page_cache(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .with_context(|| format!("posix_fadvise(DONTNEED) on {}", path.display()))?;
    Ok(())
}

/// A sparse file of `size` bytes (no data blocks).
pub fn write_sparse_file(path: &Path, size: u64) -> Result<()> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("truncate {} to {size}", path.display()))?;
    Ok(())
}

/// Reads `len` bytes of `path` from `offset`.
pub fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut v = vec![0u8; len as usize];
    f.read_exact_at(&mut v, offset)
        .with_context(|| format!("read {len} bytes at {offset} of {}", path.display()))?;
    Ok(v)
}

/// A shared mapping of a whole buffer fd, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, MAP_SHARED with `prot`.
    pub fn new(fd: BorrowedFd<'_>, len: u64, prot: ProtFlags) -> nix::Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| Errno::EOVERFLOW)?;
        let nz = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh mapping at a kernel-chosen address; it aliases no Rust object, and
        // the slice handed out by `bytes` lives no longer than `self`, which unmaps on drop.
        let ptr = unsafe { nix::sys::mman::mmap(None, nz, prot, MapFlags::MAP_SHARED, fd, 0)? };
        Ok(Mapping { ptr, len })
    }

    pub fn read_only(fd: BorrowedFd<'_>, len: u64) -> Result<Mapping> {
        Mapping::new(fd, len, ProtFlags::PROT_READ)
            .with_context(|| format!("mmap PROT_READ MAP_SHARED of {len} bytes"))
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is readable (every Mapping has PROT_READ in practice; a
        // PROT_WRITE-only one is never created by this suite) and `len` bytes long; the
        // buffer may change under us only if the service writes to it after handing it over,
        // which is what the comparisons would catch.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }

    /// Writes `byte` over the whole mapping, which must have been mapped PROT_WRITE.
    pub fn fill(&self, byte: u8) {
        // SAFETY: the mapping is `len` bytes of shared memory we mapped PROT_READ|PROT_WRITE
        // (callers only fill writable mappings); no Rust reference into it is alive (`bytes`
        // borrows `self`, and `fill` takes `&self` only between such borrows in the cases).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().cast::<u8>(), byte, self.len) }
    }

    /// mprotect(PROT_READ|PROT_WRITE) on the mapping: must fail for a read-only buffer.
    pub fn try_make_writable(&self) -> nix::Result<()> {
        // SAFETY: changes the protection of our own mapping only; no Rust reference assumes
        // it is read-only or writable.
        unsafe {
            nix::sys::mman::mprotect(
                self.ptr,
                self.len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            )
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

// SAFETY: the mapping is plain shared memory; reading it from several threads is fine.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

/// `struct dma_buf_sync` of <linux/dma-buf.h>.
#[repr(C)]
pub struct DmaBufSync {
    flags: u64,
}
const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_WRITE: u64 = 2;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;
nix::ioctl_write_ptr!(dma_buf_ioctl_sync, b'b', 0, DmaBufSync);

/// DMA_BUF_IOCTL_SYNC with `flags`.
fn dma_buf_sync(fd: BorrowedFd<'_>, flags: u64) -> nix::Result<()> {
    let arg = DmaBufSync { flags };
    // SAFETY: DMA_BUF_IOCTL_SYNC reads one struct dma_buf_sync, which `arg` is, and the
    // kernel checks the fd (a non-dma-buf fd gets ENOTTY).
    unsafe { dma_buf_ioctl_sync(fd.as_raw_fd(), &arg) }.map(drop)
}

pub fn dma_buf_begin_cpu_read(fd: BorrowedFd<'_>) -> Result<()> {
    dma_buf_sync(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
        .context("DMA_BUF_IOCTL_SYNC(START|READ)")
}

pub fn dma_buf_begin_cpu_write(fd: BorrowedFd<'_>) -> Result<()> {
    dma_buf_sync(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE)
        .context("DMA_BUF_IOCTL_SYNC(START|WRITE)")
}

pub fn dma_buf_end_cpu_write(fd: BorrowedFd<'_>) -> Result<()> {
    dma_buf_sync(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE).context("DMA_BUF_IOCTL_SYNC(END|WRITE)")
}

pub fn dma_buf_end_cpu_read(fd: BorrowedFd<'_>) -> Result<()> {
    dma_buf_sync(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ).context("DMA_BUF_IOCTL_SYNC(END|READ)")
}

/// The `exp_name:` of /proc/self/fdinfo/<fd>: present exactly for dma-buf fds.
pub fn dma_buf_exporter(fd: BorrowedFd<'_>) -> Result<Option<String>> {
    let p = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    Ok(s.lines()
        .find_map(|l| l.strip_prefix("exp_name:"))
        .map(|v| v.trim().to_string()))
}

/// st_size of an fd (dma-bufs and memfds report their buffer size).
pub fn fd_size(fd: BorrowedFd<'_>) -> Result<u64> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat of the returned buffer")?;
    Ok(st.st_size as u64)
}

/// The O_ACCMODE of an fd.
pub fn access_mode(fd: BorrowedFd<'_>) -> Result<nix::fcntl::OFlag> {
    let fl = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).context("F_GETFL")?;
    Ok(nix::fcntl::OFlag::from_bits_truncate(fl) & nix::fcntl::OFlag::O_ACCMODE)
}

/// Number of open fds of this process.
pub fn open_fd_count() -> Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")
        .context("read /proc/self/fd")?
        .count())
}

/// The release of the running kernel (uname -r).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Compares a mapped buffer with the file range it should hold: the first `data` bytes equal
/// the file's `[offset, offset+data)`, the rest of the buffer is zero. Reports the first
/// differing offset.
pub fn check_buffer(buf: &[u8], file: &Path, offset: u64, data: u64) -> Result<()> {
    ensure!(
        buf.len() as u64 >= data,
        "buffer of {} bytes is smaller than the {data} bytes of data",
        buf.len()
    );
    let f = File::open(file).with_context(|| format!("open {}", file.display()))?;
    const CHUNK: usize = 1 << 20;
    let mut expect = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < data {
        let n = CHUNK.min((data - done) as usize);
        f.read_exact_at(&mut expect[..n], offset + done)
            .with_context(|| format!("read {} at {}", file.display(), offset + done))?;
        let got = &buf[done as usize..done as usize + n];
        if got != &expect[..n] {
            let i = got
                .iter()
                .zip(&expect[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!(
                "buffer byte {} (file offset {}) is {:#04x}, the file has {:#04x}",
                done + i as u64,
                offset + done + i as u64,
                got[i],
                expect[i]
            );
        }
        done += n as u64;
    }
    if let Some(i) = buf[data as usize..].iter().position(|&b| b != 0) {
        bail!(
            "padding byte {} (after {data} data bytes) is {:#04x}, not zero",
            data as usize + i,
            buf[data as usize + i]
        );
    }
    Ok(())
}

/// Maps `fd` (`len` bytes, read-only), brackets the CPU access with DMA_BUF_IOCTL_SYNC when
/// it is a dma-buf, and checks its contents against the file range.
pub fn verify_fd_contents(
    fd: BorrowedFd<'_>,
    len: u64,
    file: &Path,
    offset: u64,
    data: u64,
) -> Result<()> {
    if len == 0 {
        ensure!(data == 0, "a 0-byte buffer cannot hold {data} bytes");
        return Ok(());
    }
    let is_dma_buf = dma_buf_exporter(fd)?.is_some();
    let map = Mapping::read_only(fd, len)?;
    if is_dma_buf {
        dma_buf_begin_cpu_read(fd)?;
    }
    let res = check_buffer(map.bytes(), file, offset, data);
    if is_dma_buf {
        dma_buf_end_cpu_read(fd)?;
    }
    res
}

/// Opens `path` with raw open(2) flags (O_PATH, O_WRONLY, O_DIRECTORY...).
pub fn open_with(path: &Path, flags: nix::fcntl::OFlag) -> Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        path,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(owned)
    .with_context(|| format!("open {} with {flags:?}", path.display()))
}

/// Reopens an fd through /proc/self/fd with `flags`.
pub fn reopen(fd: BorrowedFd<'_>, flags: nix::fcntl::OFlag) -> nix::Result<std::os::fd::OwnedFd> {
    let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()));
    nix::fcntl::open(
        &p,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(owned)
}

/// Takes ownership of the fd open(2) just returned (nix 0.29's `open` gives a raw fd).
fn owned(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    // SAFETY: `fd` was returned by a successful open(2) a moment ago and nothing else owns it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// Fails unless mapping `fd` writable + shared is refused with EACCES or EPERM.
pub fn expect_no_writable_mapping(fd: BorrowedFd<'_>, len: u64, what: &str) -> Result<()> {
    match Mapping::new(fd, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE) {
        Ok(_) => Err(anyhow!(
            "{what}: mmap(PROT_WRITE, MAP_SHARED) succeeded on a read-only buffer"
        )),
        Err(Errno::EACCES | Errno::EPERM) => Ok(()),
        Err(e) => Err(anyhow!(
            "{what}: mmap(PROT_WRITE, MAP_SHARED) failed with {e}, expected EACCES or EPERM"
        )),
    }
}
