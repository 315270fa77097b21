//! A safe io_uring wrapper for one job: positional reads into memory the ring OWNS
//! ([`ReadRing`]), on the bookkeeping every ring of the crate shares ([`Ring`]: push with a
//! submit when the SQ is full, submit-and-wait, reap, wait until idle; the dma-buf ring of
//! `regbuf.rs` uses it too).
//!
//! Soundness: the kernel writes into the target memory until each read completes, so the
//! ring holds a reference (`Arc`) to the [`Mapping`] and drops it only in [`ReadRing::finish`],
//! after every submitted read has completed and the fixed buffers are unregistered. If the
//! ring is dropped early (error, cancel) `Drop` waits for the reads in flight first; if it
//! is leaked, the mapping is leaked with it. Every read is bounds-checked against the
//! mapping (and against its registered slot for fixed reads) before it is queued.

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring, Submitter};

use super::mman::Mapping;

/// One finished read: the caller's tag and the kernel's result (bytes or -errno).
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// A ring and the count of its requests in flight.
pub struct Ring {
    ring: IoUring,
    in_flight: usize,
}

impl Ring {
    /// A ring (see [`new_ring`]) with room for `entries` requests in flight; the CQ is
    /// twice the SQ by default, so completions never overflow.
    pub fn new(entries: u32) -> io::Result<Self> {
        Ok(Self {
            ring: new_ring(entries)?,
            in_flight: 0,
        })
    }

    pub fn submitter(&self) -> Submitter<'_> {
        self.ring.submitter()
    }

    /// Number of requests pushed and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues `sqe`, submitting first if the SQ is full.
    ///
    /// # Safety
    /// Everything `sqe` makes the kernel read or write (memory, a registered buffer slot, the
    /// fd) must stay valid until its completion is reaped: the owner waits for that
    /// ([`Ring::wait_idle`]) before it releases any of it.
    pub unsafe fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's contract above.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits what is queued and waits until at least `want` completions are ready.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want.min(self.in_flight)) {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves every ready completion into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            self.in_flight -= 1;
            out.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
            });
        }
    }

    /// Waits until no request is in flight. `Err` (cannot happen with a live ring) leaves
    /// requests in flight: the caller must then never release what they use.
    pub fn wait_idle(&mut self) -> io::Result<()> {
        let mut sink = Vec::new();
        while self.in_flight > 0 {
            self.submit_and_wait(1)?;
            sink.clear();
            self.reap(&mut sink);
        }
        Ok(())
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

pub struct ReadRing {
    ring: Ring,
    mem: Option<Arc<Mapping>>,
    slots: Vec<Option<Range<usize>>>,
    force_async: bool,
}

/// Builds a ring; tries SINGLE_ISSUER|DEFER_TASKRUN (6.1+: completions run in our thread
/// when we wait, no extra context switches), then COOP_TASKRUN (5.19+), then a plain ring.
pub fn new_ring(entries: u32) -> io::Result<IoUring> {
    if let Ok(r) = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
    {
        return Ok(r);
    }
    if let Ok(r) = IoUring::builder().setup_coop_taskrun().build(entries) {
        return Ok(r);
    }
    IoUring::new(entries)
}

impl ReadRing {
    /// A ring with room for `entries` reads in flight, reading into `mem`.
    pub fn new(entries: u32, mem: Arc<Mapping>) -> io::Result<Self> {
        Ok(Self {
            ring: Ring::new(entries)?,
            mem: Some(mem),
            slots: Vec::new(),
            force_async: false,
        })
    }

    fn mem(&self) -> &Mapping {
        self.mem.as_deref().expect("mapping present until finish")
    }

    /// Issue every read from an io-wq worker (IOSQE_ASYNC): a plain blocking read per worker
    /// instead of io_uring's non-blocking attempt + page-wait retries.
    pub fn set_force_async(&mut self, on: bool) {
        self.force_async = on;
    }

    /// Number of reads submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.ring.in_flight()
    }

    /// Creates an empty (sparse) table of `n` fixed-buffer slots (5.13+).
    pub fn enable_fixed(&mut self, n: u32) -> io::Result<()> {
        self.ring.submitter().register_buffers_sparse(n)?;
        self.slots = vec![None; n as usize];
        Ok(())
    }

    /// Registers (pins) `range` of the mapping as fixed buffer `slot`.
    pub fn register_slot(&mut self, slot: u16, range: Range<usize>) -> io::Result<()> {
        let s = slot as usize;
        if s >= self.slots.len() || range.start >= range.end || range.end > self.mem().len() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let base = self.mem().as_ptr() as usize;
        let iov = libc::iovec {
            iov_base: (base + range.start) as *mut _,
            iov_len: range.len(),
        };
        // SAFETY: the iovec lies inside the mapping (checked above), which this ring owns
        // and does not release before `finish` unregisters every buffer.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(slot as u32, &[iov], None)
        }?;
        self.slots[s] = Some(range);
        Ok(())
    }

    /// Queues a read of `range` of the mapping from `file_off` of `fd`; with `fixed`, as
    /// READ_FIXED against that registered slot. Submits first if the SQ is full.
    pub fn push_read(
        &mut self,
        fd: BorrowedFd<'_>,
        range: Range<usize>,
        file_off: u64,
        user_data: u64,
        fixed: Option<u16>,
    ) -> io::Result<()> {
        let len = range.len();
        if range.start > range.end || range.end > self.mem().len() || len > u32::MAX as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if let Some(slot) = fixed {
            match self.slots.get(slot as usize) {
                Some(Some(r)) if r.start <= range.start && range.end <= r.end => {}
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
        }
        let ptr = self.mem().as_ptr().wrapping_add(range.start);
        let fd = types::Fd(fd.as_raw_fd());
        let sqe = match fixed {
            Some(slot) => opcode::ReadFixed::new(fd, ptr, len as u32, slot)
                .offset(file_off)
                .build(),
            None => opcode::Read::new(fd, ptr, len as u32)
                .offset(file_off)
                .build(),
        }
        .user_data(user_data);
        let sqe = if self.force_async {
            sqe.flags(io_uring::squeue::Flags::ASYNC)
        } else {
            sqe
        };
        // SAFETY: the target range is inside the mapping we own (checked above) and stays
        // mapped until the read completes (`finish`/`Drop` wait for it); the fd is borrowed
        // for this call and the kernel takes its own reference when it issues.
        unsafe { self.ring.push(&sqe) }
    }

    /// Submits what is queued and waits until at least `want` completions are ready.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        self.ring.submit_and_wait(want)
    }

    /// Moves every ready completion into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        self.ring.reap(out)
    }

    fn wait_idle(&mut self) {
        if let Err(e) = self.ring.wait_idle() {
            // Cannot happen with a live ring; the mapping must then never be released.
            log::error!(
                "io_uring wait failed with {} reads in flight: {e}",
                self.ring.in_flight()
            );
            std::mem::forget(self.mem.take());
        }
    }

    /// Waits for every read in flight, unregisters the fixed buffers (synchronously, so no
    /// page stays pinned) and returns the mapping.
    pub fn finish(mut self) -> Arc<Mapping> {
        self.wait_idle();
        if self.slots.iter().any(Option::is_some) {
            if let Err(e) = self.ring.submitter().unregister_buffers() {
                log::warn!("unregistering fixed buffers: {e}");
            }
        }
        self.mem.take().expect("mapping present until finish")
    }
}

impl Drop for ReadRing {
    fn drop(&mut self) {
        if self.mem.is_some() {
            self.wait_idle();
        }
    }
}
