//! Owned memory mappings (`mmap`/`munmap`/`madvise`).

use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use anyhow::Context;
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags};

/// A `MAP_SHARED` (file) or `MAP_PRIVATE|MAP_ANONYMOUS` read/write mapping, unmapped on drop.
/// Pages are NOT populated at creation: they are faulted in by the first write, a DMA pin
/// (GUP) or [`Mapping::populate_write`].
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through `&self`/
// `&mut self` like any owned buffer, so it may move between and be shared across threads.
unsafe impl Send for Mapping {}
// SAFETY: see above; shared access only hands out `&[u8]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared and writable.
    pub fn shared_rw(fd: impl AsFd, len: usize) -> anyhow::Result<Self> {
        let nz = NonZeroUsize::new(len).context("cannot map 0 bytes")?;
        // SAFETY: a fresh mapping at an address the kernel chooses aliases no Rust object;
        // the fd stays valid for the call and the mapping keeps its own file reference.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .with_context(|| format!("mmap(MAP_SHARED, {len} bytes)"))?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Maps `len` bytes of `fd` from offset 0, shared and read-only (to inspect a result).
    pub fn shared_ro(fd: impl AsFd, len: usize) -> anyhow::Result<Self> {
        let nz = NonZeroUsize::new(len).context("cannot map 0 bytes")?;
        // SAFETY: as in `shared_rw`; `as_mut_slice` on it would fault, so callers only read.
        let ptr = unsafe { mmap(None, nz, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, fd, 0) }
            .with_context(|| format!("mmap(MAP_SHARED, PROT_READ, {len} bytes)"))?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Anonymous private memory (the bench's "device limit" target).
    pub fn anonymous(len: usize) -> anyhow::Result<Self> {
        let nz = NonZeroUsize::new(len).context("cannot map 0 bytes")?;
        // SAFETY: as above; an anonymous mapping aliases nothing.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS,
            )
        }
        .with_context(|| format!("mmap(MAP_ANONYMOUS, {len} bytes)"))?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Start address, for handing to the kernel (never dereferenced here).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping owned by self, readable; the borrow of self
        // keeps it alive and `&mut` access is excluded by the borrow checker.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Faults `range` in for writing without changing its contents (MADV_POPULATE_WRITE,
    /// Linux 5.14+). Safe to run concurrently with I/O into the same pages: it only
    /// allocates and maps pages, never stores data. Takes `&self` so a helper thread can
    /// run ahead of the I/O.
    pub fn populate_write(&self, range: std::ops::Range<usize>) -> nix::Result<()> {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range outside mapping"
        );
        if range.is_empty() {
            return Ok(());
        }
        // SAFETY: the range lies inside our live mapping (asserted); POPULATE_WRITE does not
        // modify memory contents, so no Rust reference to these bytes is invalidated.
        let p = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(range.start)) };
        // nix 0.29 (AOSP's) has no MmapAdvise::MADV_POPULATE_WRITE (Linux 5.14): libc's constant.
        // SAFETY: see above.
        let rc =
            unsafe { libc::madvise(p.as_ptr().cast(), range.len(), libc::MADV_POPULATE_WRITE) };
        nix::errno::Errno::result(rc).map(drop)
    }

    /// Asks for transparent huge pages for this mapping (MADV_HUGEPAGE): for a shmem
    /// mapping the kernel then allocates huge folios at fault time where `shmem_enabled`
    /// allows `advise`, falling back to small pages by itself.
    pub fn advise_hugepage(&self) -> nix::Result<()> {
        // SAFETY: the whole live mapping; MADV_HUGEPAGE only changes how future faults
        // allocate, never the contents, so no reference into it is invalidated.
        unsafe { nix::sys::mman::madvise(self.ptr.cast(), self.len, MmapAdvise::MADV_HUGEPAGE) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and nothing borrows it any more (drop has `&mut self`).
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            log::error!("munmap of {} bytes failed: {e}", self.len);
        }
    }
}
