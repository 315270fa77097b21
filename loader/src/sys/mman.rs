//! Owned memory mappings (`mmap`/`munmap`/`madvise`).

use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use anyhow::Context;
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags};

/// A `MAP_SHARED` (file) or `MAP_PRIVATE|MAP_ANONYMOUS` read/write mapping, unmapped on drop.
/// Pages are NOT populated at creation: they are faulted in by the first write, a DMA pin
/// (GUP) or [`Mapping::populate_write`].
///
/// A mapping made by [`Mapping::shared_rw_window`] shows only a byte range of the file that
/// need not start or end on a page: `as_ptr`/`len`/the slices are that window, while the
/// kernel mapping around it covers whole pages from the file's start (`head` bytes before
/// it, `tail` after).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes of the kernel mapping before `ptr` (0 unless a window).
    head: usize,
    /// Bytes of the kernel mapping after the window (0 unless a window).
    tail: usize,
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|v| v as usize)
        .unwrap_or(4096)
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
            head: 0,
            tail: 0,
        })
    }

    /// Maps the bytes `offset..offset + len` of `fd`, shared and writable: the returned
    /// mapping shows exactly that window. A write through it cannot reach a byte of the file
    /// outside the window (the slices end there).
    ///
    /// The kernel mapping starts at file offset 0 (`head` = `offset` bytes before the
    /// window), never at the window's own page: many dma-buf exporters ignore the page offset
    /// of an mmap. The DRM GEM helpers (drm_gem_shmem: vgem, virtio-gpu, panfrost, panthor,
    /// v3d...) and drivers such as msm, etnaviv and lima find the page to map from the fault
    /// address relative to the start of the VMA ("we don't use vmf->pgoff since that has the
    /// fake offset"), so a mapping at offset N of their dma-buf shows page 0 at its start:
    /// the bytes would land N bytes early, outside the range (seen with vgem in the VM rig).
    /// Mapping from 0 is right for every exporter and costs only address space.
    /// `align` is the file's page size when it is larger than the base page (a hugetlb
    /// memfd maps and unmaps only in whole huge pages). Returns the raw errno on failure, so a
    /// caller can tell EACCES/EPERM (not writable) from ENODEV/EINVAL (the file's driver
    /// refuses mmap).
    pub fn shared_rw_window(
        fd: impl AsFd,
        offset: u64,
        len: usize,
        align: usize,
    ) -> nix::Result<Self> {
        let page = page_size().max(align);
        if !page.is_power_of_two() {
            return Err(nix::errno::Errno::EINVAL);
        }
        let head = usize::try_from(offset).map_err(|_| nix::errno::Errno::EOVERFLOW)?;
        let map_len = head
            .checked_add(len)
            .and_then(|end| end.checked_next_multiple_of(page))
            .ok_or(nix::errno::Errno::EOVERFLOW)?;
        let nz = NonZeroUsize::new(map_len).ok_or(nix::errno::Errno::EINVAL)?;
        // SAFETY: as in `shared_rw`: a fresh mapping at a kernel-chosen address aliases no Rust
        // object; the kernel checks the length against the file.
        let base = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        // SAFETY: `head <= head + len <= map_len`, so the window start lies inside the new
        // mapping (or at its end, for an empty window).
        let ptr = unsafe { NonNull::new_unchecked(base.as_ptr().cast::<u8>().add(head)) };
        Ok(Self {
            ptr,
            len,
            head,
            tail: map_len - head - len,
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
            head: 0,
            tail: 0,
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
            head: 0,
            tail: 0,
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
        // madvise wants a page-aligned start: widen the range to its pages, which stay inside
        // the kernel mapping (a window's mapping covers whole pages around it).
        let start = self.head + range.start;
        let aligned = start - start % page_size();
        let len = self.head + range.end - aligned;
        // SAFETY: `aligned..aligned + len` lies inside our live kernel mapping (the range is
        // asserted inside the window, the window inside the mapping); POPULATE_WRITE does not
        // modify memory contents, so no Rust reference to these bytes is invalidated.
        let p = unsafe { NonNull::new_unchecked(self.base().add(aligned)) };
        // nix 0.29 (AOSP's) has no MmapAdvise::MADV_POPULATE_WRITE (Linux 5.14): libc's constant.
        // SAFETY: see above.
        let rc = unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_POPULATE_WRITE) };
        nix::errno::Errno::result(rc).map(drop)
    }

    /// Asks for transparent huge pages for this mapping (MADV_HUGEPAGE): for a shmem
    /// mapping the kernel then allocates huge folios at fault time where `shmem_enabled`
    /// allows `advise`, falling back to small pages by itself.
    pub fn advise_hugepage(&self) -> nix::Result<()> {
        // SAFETY: the whole live kernel mapping; MADV_HUGEPAGE only changes how future faults
        // allocate, never the contents, so no reference into it is invalidated.
        unsafe {
            nix::sys::mman::madvise(
                NonNull::new_unchecked(self.base()).cast(),
                self.map_len(),
                MmapAdvise::MADV_HUGEPAGE,
            )
        }
    }

    /// Start of the kernel mapping (page-aligned), `head` bytes before the window.
    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr().wrapping_sub(self.head)
    }

    /// Length of the kernel mapping.
    fn map_len(&self) -> usize {
        self.head + self.len + self.tail
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let (base, len) = (self.base(), self.map_len());
        // SAFETY: base..base+len is the kernel mapping we own, and nothing borrows it any more
        // (drop has `&mut self`).
        if let Err(e) = unsafe { munmap(NonNull::new_unchecked(base).cast(), len) } {
            log::error!("munmap of {len} bytes failed: {e}");
        }
    }
}
