//! A safe io_uring wrapper for one job: positional reads into memory the ring OWNS
//! ([`ReadRing`]), on the bookkeeping every ring of the crate shares ([`Ring`]: push with a
//! submit when the SQ is full, submit-and-wait, reap, wait until idle; the dma-buf ring of
//! `regbuf.rs` uses it too).
//!
//! Soundness: the kernel writes into the target memory until each read completes, so the
//! ring holds a reference (`Arc`) to the [`Mapping`] and drops it only in [`ReadRing::finish`],
//! after every submitted read has completed and the fixed buffers are unregistered. If the
//! ring is dropped early (error, cancel) `Drop` cancels and waits for the reads in flight
//! first; if it is leaked, the mapping is leaked with it. Every read is bounds-checked against
//! the mapping (and against its registered slot for fixed reads) before it is queued.
//!
//! No wait is unbounded: [`Ring::submit_and_wait`] returns after [`WAIT_TICK`] without a
//! completion, so the read loops check cancellation and the deadline even when the device
//! (or a kernel bug: the v3 dma-buf series' lost completion, docs/dmabuf-registered.md) never
//! completes a read; and a ring whose reads are still in flight [`DRAIN_LIMIT`] after it asked
//! the kernel to cancel them is leaked, with everything they target, instead of blocking
//! the loading thread forever. A leak costs one ring fd and the buffer; the service stays up.

use std::io;
use std::mem::ManuallyDrop;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring, Submitter};

use super::mman::Mapping;

/// One finished read: the caller's tag and the kernel's result (bytes or -errno).
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// Longest a wait for a completion blocks before it gives its caller a chance to check
/// cancellation and the deadline.
pub const WAIT_TICK: Duration = Duration::from_secs(1);
/// Longest an early drop waits for the requests in flight after asking the kernel to cancel
/// them (an O_DIRECT read already at the device cannot be cancelled; NVMe's own I/O timeout
/// is 30 s) before the ring is leaked with them.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// A ring and the count of its requests in flight. Dropped with requests still in flight
/// (only after [`Ring::wait_idle`] gave up on them) the ring is leaked, not closed.
pub struct Ring {
    ring: ManuallyDrop<IoUring>,
    in_flight: usize,
}

impl Ring {
    /// A ring (see [`new_ring`]) with room for `entries` requests in flight; the CQ is
    /// twice the SQ by default, so completions never overflow.
    pub fn new(entries: u32) -> io::Result<Self> {
        Ok(Self {
            ring: ManuallyDrop::new(new_ring(entries)?),
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

    /// Submits what is queued and waits until at least `want` completions are ready, or
    /// [`WAIT_TICK`] passed without them: `Ok(false)`, and the caller checks whether to go on
    /// waiting. (Kernels before 5.11 have no timed wait: there it waits for the completions.)
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<bool> {
        self.submit_and_wait_for(want, WAIT_TICK)
    }

    fn submit_and_wait_for(&mut self, want: usize, tick: Duration) -> io::Result<bool> {
        let ts = types::Timespec::from(tick);
        let args = types::SubmitArgs::new().timespec(&ts);
        let want = want.min(self.in_flight);
        if want == 0 {
            self.ring.submit()?;
            return Ok(true);
        }
        loop {
            let r = if self.ring.params().is_feature_ext_arg() {
                self.ring.submitter().submit_with_args(want, &args)
            } else {
                self.ring.submit_and_wait(want)
            };
            match r {
                Ok(_) if !self.ring.completion().is_empty() => return Ok(true),
                // io_uring_enter reports what it submitted, not that its wait then timed
                // out: wait again, with nothing left to submit.
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => return Ok(false),
                // A signal: back to the caller as a tick would be, so a stream of signals
                // cannot keep it from checking cancel and the deadline.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    return Ok(!self.ring.completion().is_empty())
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
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

    /// Waits until no request is in flight: at once when none is; else it asks the kernel to
    /// cancel them all (the caller no longer wants them: an error, a cancel, a deadline) and
    /// waits at most [`DRAIN_LIMIT`]. `Err` leaves requests in flight: the caller must then
    /// never release what they use, and this ring is leaked when dropped.
    pub fn wait_idle(&mut self) -> io::Result<()> {
        self.wait_idle_within(DRAIN_LIMIT, true)
    }

    fn wait_idle_within(&mut self, limit: Duration, cancel: bool) -> io::Result<()> {
        let mut sink = Vec::new();
        self.reap(&mut sink);
        if self.in_flight == 0 {
            return Ok(());
        }
        if cancel {
            // IORING_REGISTER_SYNC_CANCEL (6.0+), any request, not waiting for them here.
            // Older kernels refuse it (EINVAL): the wait below then lets them finish.
            let any = types::CancelBuilder::any();
            if let Err(e) = self
                .ring
                .submitter()
                .register_sync_cancel(Some(types::Timespec::new()), any)
            {
                log::debug!("io_uring sync cancel of {} requests: {e}", self.in_flight);
            }
        }
        let start = Instant::now();
        while self.in_flight > 0 {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} io_uring requests still in flight {limit:?} after they were no \
                         longer wanted: the ring and what they target are leaked",
                        self.in_flight
                    ),
                ));
            }
            self.submit_and_wait_for(1, left.min(WAIT_TICK))?;
            sink.clear();
            self.reap(&mut sink);
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            // SAFETY: the ring is dropped once, here, and never used after.
            unsafe { ManuallyDrop::drop(&mut self.ring) }
        } else {
            // Requests the kernel never completed: closing the ring would let its owner
            // believe their memory is free. Leak the ring (its fd stays open).
            log::error!(
                "leaking an io_uring with {} requests that never completed",
                self.in_flight
            );
        }
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
    /// How long an early end waits for the reads in flight, and whether it cancels them
    /// first ([`DRAIN_LIMIT`], yes; tests shorten it and skip the cancel to reach the leak).
    drain: (Duration, bool),
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
            drain: (DRAIN_LIMIT, true),
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

    /// Submits what is queued and waits until at least `want` completions are ready, or
    /// [`WAIT_TICK`] passed (`Ok(false)`).
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<bool> {
        self.ring.submit_and_wait(want)
    }

    /// Moves every ready completion into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        self.ring.reap(out)
    }

    /// Waits until no read is in flight (see [`Ring::wait_idle`]); `false` when reads are
    /// left in flight: the mapping is then leaked (never unmapped: the kernel may still
    /// write to it) and the ring with it.
    fn wait_idle(&mut self) -> bool {
        let (limit, cancel) = self.drain;
        match self.ring.wait_idle_within(limit, cancel) {
            Ok(()) => true,
            Err(e) => {
                log::error!(
                    "io_uring wait failed with {} reads in flight: {e}",
                    self.ring.in_flight()
                );
                std::mem::forget(self.mem.take());
                false
            }
        }
    }

    #[cfg(test)]
    fn set_drain(&mut self, limit: Duration, cancel: bool) {
        self.drain = (limit, cancel);
    }

    /// Waits for every read in flight, unregisters the fixed buffers (synchronously, so no
    /// page stays pinned) and returns the mapping; `None` when reads are still in flight
    /// after the wait ([`DRAIN_LIMIT`]): the mapping and the ring are leaked, the buffers
    /// stay registered (before 6.13 the unregister would block until those reads complete),
    /// and whatever holds another reference to the mapping must not count on being its
    /// only owner.
    pub fn finish(mut self) -> Option<Arc<Mapping>> {
        if !self.wait_idle() {
            return None;
        }
        if self.slots.iter().any(Option::is_some) {
            if let Err(e) = self.ring.submitter().unregister_buffers() {
                log::warn!("unregistering fixed buffers: {e}");
            }
        }
        self.mem.take()
    }
}

impl Drop for ReadRing {
    fn drop(&mut self) {
        if self.mem.is_some() {
            let _ = self.wait_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    /// A read of an empty pipe: the kernel keeps it pending until data comes or it is
    /// cancelled, the stand-in for a device that never answers.
    fn pending_read(ring: &mut Ring) -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let buf: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let sqe = opcode::Read::new(types::Fd(r.as_raw_fd()), buf.as_mut_ptr(), 4096)
            .build()
            .user_data(7);
        // SAFETY: the buffer is leaked (valid forever) and the pipe outlives the ring's use
        // of it in each test (it is closed after the read completed or the ring was leaked).
        unsafe { ring.push(&sqe) }.unwrap();
        (r, w)
    }

    #[test]
    fn a_wait_without_completions_returns_after_a_tick_and_wait_idle_cancels() {
        let mut ring = Ring::new(4).unwrap();
        let _pipe = pending_read(&mut ring);
        let t = Instant::now();
        assert!(!ring.submit_and_wait(1).unwrap(), "a completion came");
        let waited = t.elapsed();
        assert!(
            waited >= WAIT_TICK / 2 && waited < WAIT_TICK * 5,
            "waited {waited:?} for a tick of {WAIT_TICK:?}"
        );
        assert_eq!(ring.in_flight(), 1);
        // No longer wanted: cancelled (6.0+ sync cancel), so the ring is idle at once.
        let t = Instant::now();
        ring.wait_idle().unwrap();
        assert_eq!(ring.in_flight(), 0);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn requests_that_never_complete_leak_the_ring_instead_of_blocking() {
        let mut ring = Ring::new(4).unwrap();
        let (_r, w) = pending_read(&mut ring);
        let fd = ring.as_raw_fd();
        let e = ring
            .wait_idle_within(Duration::from_millis(200), false)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("1 io_uring requests"), "{e}");
        drop(ring);
        // Leaked, not closed: the fd is still open.
        assert!(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok());
        // The read completes into its (leaked) buffer whenever data comes.
        nix::unistd::write(w.as_fd(), b"late").unwrap();
        // The ring fd is the test's to close now.
        // SAFETY: the ring fd leaked above is owned by nothing else.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }

    /// `finish` on a ring whose read never completes gives up after the drain limit: it
    /// returns no mapping (leaked: the kernel may still write to it) instead of panicking on
    /// the mapping `wait_idle` already leaked, and leaves the ring open.
    #[test]
    fn finish_with_a_read_that_never_completes_leaks_the_mapping() {
        let mem = Arc::new(Mapping::anonymous(1 << 16).unwrap());
        let mut ring = ReadRing::new(4, mem.clone()).unwrap();
        ring.set_drain(Duration::from_millis(200), false);
        let (r, w) = nix::unistd::pipe().unwrap();
        ring.push_read(r.as_fd(), 0..4096, 0, 1, None).unwrap();
        let fd = ring.ring.as_raw_fd();
        let t = Instant::now();
        assert!(
            ring.finish().is_none(),
            "a mapping handed back with a read in flight"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok());
        // Our reference plus the one leaked with the ring: never unmapped under the read.
        assert_eq!(Arc::strong_count(&mem), 2);
        drop(mem);
        nix::unistd::write(w.as_fd(), b"late").unwrap();
        // SAFETY: the ring fd leaked above is owned by nothing else.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
}
