//! io_uring dma-buf registered buffers: the uAPI of Pavel Begunkov's "Add dmabuf read/write via
//! io_uring" series (PATCH v3, 2026-04-29; not in mainline as of 7.3). A dma-buf from any
//! exporter is installed in a fixed-buffer slot *for one target file*, and READ_FIXED on that
//! file DMAs straight into the dma-buf. Every constant and layout below is checked against the
//! patched `include/uapi/linux/io_uring.h` (see `../shared/seed-kernel/README.md`).
//!
//! The facts the callers rely on (same README, from the series' code):
//! - no new opcode: `IORING_REGISTER_BUFFERS_UPDATE` (16) with `io_uring_rsrc_update2::flags`
//!   (the former `resv`) = [`IORING_RSRC_UPDATE_EXTENDED`] (`1U << 1`), `data` pointing at
//!   `struct io_uring_regbuf_desc` instead of a `struct iovec`; a buffer table must exist first
//!   (sparse registration); the call returns the number of descriptors processed;
//! - the target must be an NVMe (nvme-pci) namespace block device opened `O_DIRECT`, and the
//!   requests must be issued on that same open file (a dup is the same file); regular files
//!   are refused with EOPNOTSUPP, other block devices or a non-O_DIRECT open with EINVAL;
//! - the registered buffer has base address 0 and the dma-buf's length: `sqe->addr` is the
//!   byte offset inside the dma-buf; the dma-buf is at most 1 GiB ([`MAX_DMABUF_SIZE`]);
//! - a spurious EAGAIN (mapping invalidated by the exporter) must be re-issued.
//!
//! Unlike [`super::ring::ReadRing`], no user memory is involved: the kernel writes into the
//! dma-buf's pages, which the registration keeps alive (it holds references on the dma-buf and
//! the target file until the slot is cleared), so an early drop cannot make the kernel write
//! into freed memory of ours. [`DmabufRing`] still waits for every read in flight before it
//! unregisters, so no DMA lands in a buffer after it was handed out.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use io_uring::{opcode, types};
use nix::errno::Errno;

use super::ring::{new_ring, Completion, Ring};

pub const IORING_REGISTER_BUFFERS_UPDATE: u32 = 16;
/// `enum io_uring_rsrc_reg_flags`: `data` points to `struct io_uring_regbuf_desc[nr]`.
pub const IORING_RSRC_UPDATE_EXTENDED: u32 = 1 << 1;
/// `enum io_uring_regbuf_type`.
pub const IO_REGBUF_TYPE_EMPTY: u32 = 0;
pub const IO_REGBUF_TYPE_DMABUF: u32 = 2;
/// `SZ_1G`: larger dma-bufs are refused with EINVAL at registration.
pub const MAX_DMABUF_SIZE: u64 = 1 << 30;

/// `struct io_uring_rsrc_update2` (`resv` is `flags` after the series).
#[repr(C)]
#[derive(Default)]
struct RsrcUpdate2 {
    offset: u32,
    flags: u32,
    data: u64,
    tags: u64,
    nr: u32,
    resv2: u32,
}

/// `struct io_uring_regbuf_desc`.
#[repr(C)]
#[derive(Default)]
struct RegbufDesc {
    kind: u32,
    flags: u32,
    size: u64,
    uaddr: u64,
    dmabuf_fd: i32,
    target_fd: i32,
    resv: [u64; 6],
}

// The layouts of the patched header (README: 32 and 80 bytes, no padding).
const _: () = assert!(size_of::<RsrcUpdate2>() == 32);
const _: () = assert!(offset_of!(RsrcUpdate2, flags) == 4);
const _: () = assert!(offset_of!(RsrcUpdate2, data) == 8);
const _: () = assert!(offset_of!(RsrcUpdate2, nr) == 24);
const _: () = assert!(size_of::<RegbufDesc>() == 80);
const _: () = assert!(offset_of!(RegbufDesc, size) == 8);
const _: () = assert!(offset_of!(RegbufDesc, uaddr) == 16);
const _: () = assert!(offset_of!(RegbufDesc, dmabuf_fd) == 24);
const _: () = assert!(offset_of!(RegbufDesc, target_fd) == 28);
const _: () = assert!(offset_of!(RegbufDesc, resv) == 32);

/// One extended buffer update of `slot` on `ring`: the kernel's return value (descriptors
/// processed) or its errno.
fn update_extended(ring: RawFd, slot: u32, desc: &RegbufDesc) -> Result<i64, Errno> {
    let up = RsrcUpdate2 {
        offset: slot,
        flags: IORING_RSRC_UPDATE_EXTENDED,
        data: desc as *const RegbufDesc as u64,
        nr: 1,
        ..Default::default()
    };
    // SAFETY: io_uring_register on a ring fd we own; `up` and the one descriptor it points to
    // are valid, initialised and alive for the call, and the kernel only reads them. The
    // descriptor names fds (or -1); the kernel takes its own references on them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring,
            IORING_REGISTER_BUFFERS_UPDATE,
            &up as *const RsrcUpdate2,
            size_of::<RsrcUpdate2>() as libc::c_uint,
        )
    };
    Errno::result(r)
}

/// The answer of [`probe`]: whether the uAPI is there, and how that was decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub available: bool,
    pub detail: String,
}

/// Detects the uAPI without side effects, once, on a throwaway ring with a one-slot sparse
/// buffer table:
/// 1. an EMPTY descriptor through the extended update. The series accepts it (1 descriptor
///    processed, the empty slot stays empty); older kernels refuse the non-zero flags word
///    (their `resv`) with EINVAL before reading anything.
/// 2. a DMABUF descriptor whose fds are -1. The series parses it and fails the fd lookup
///    with EBADF; EINVAL here would mean the type is unknown, EOPNOTSUPP a kernel built
///    without CONFIG_DMABUF_TOKEN. Only EBADF counts as available.
///
/// Nothing is registered either way, and the ring is closed on return.
pub fn probe() -> io::Result<Probe> {
    let ring = new_ring(2)?;
    ring.submitter().register_buffers_sparse(1)?;
    let no = |detail: String| {
        Ok(Probe {
            available: false,
            detail,
        })
    };
    let empty = RegbufDesc {
        kind: IO_REGBUF_TYPE_EMPTY,
        ..RegbufDesc::default()
    };
    match update_extended(ring.as_raw_fd(), 0, &empty) {
        Ok(1) => {}
        Err(Errno::EINVAL) => {
            return no(
                "the kernel refuses IORING_RSRC_UPDATE_EXTENDED (EINVAL): no io_uring dma-buf registered buffers"
                    .into(),
            )
        }
        Ok(n) => return no(format!("an EMPTY extended update returned {n}, not 1")),
        Err(e) => return no(format!("an EMPTY extended update failed with {e}")),
    }
    let bad = RegbufDesc {
        kind: IO_REGBUF_TYPE_DMABUF,
        dmabuf_fd: -1,
        target_fd: -1,
        ..Default::default()
    };
    match update_extended(ring.as_raw_fd(), 0, &bad) {
        Err(Errno::EBADF) => Ok(Probe {
            available: true,
            detail: "extended buffer update accepted; a DMABUF descriptor with fd -1 failed with EBADF".into(),
        }),
        Err(Errno::EOPNOTSUPP) => no(
            "extended buffer updates exist but DMABUF descriptors are refused (EOPNOTSUPP: kernel without CONFIG_DMABUF_TOKEN)"
                .into(),
        ),
        Err(e) => no(format!(
            "extended buffer updates exist but a DMABUF descriptor with fd -1 failed with {e}, not EBADF"
        )),
        Ok(n) => {
            // Registered something for fd -1: not the series' behaviour. Clear the slot.
            let _ = update_extended(ring.as_raw_fd(), 0, &empty);
            no(format!(
                "a DMABUF descriptor with fd -1 was accepted ({n}): not the uAPI this loader knows"
            ))
        }
    }
}

/// A ring with one dma-buf registered (slot 0) for one target file, issuing READ_FIXED on
/// that file into byte offsets of the dma-buf.
pub struct DmabufRing {
    ring: Ring,
    /// Our dup of the target: the same open file the registration names (requests on another
    /// open of the device fail with EBADF).
    target: OwnedFd,
    size: u64,
    /// [`Ring::wait_idle`] gave up on reads still in flight: the table and the ring stay.
    gave_up: bool,
}

impl DmabufRing {
    /// Registers `dmabuf` (of `size` bytes) for `target` on a new ring with room for
    /// `entries` reads in flight. Errors are the kernel's refusal (see the module docs).
    pub fn new(
        entries: u32,
        dmabuf: BorrowedFd<'_>,
        size: u64,
        target: BorrowedFd<'_>,
    ) -> io::Result<Self> {
        if size == 0 || size > MAX_DMABUF_SIZE {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let target = target.try_clone_to_owned()?;
        let ring = Ring::new(entries)?;
        ring.submitter().register_buffers_sparse(1)?;
        let desc = RegbufDesc {
            kind: IO_REGBUF_TYPE_DMABUF,
            dmabuf_fd: dmabuf.as_raw_fd(),
            target_fd: target.as_raw_fd(),
            ..Default::default()
        };
        match update_extended(ring.as_raw_fd(), 0, &desc) {
            Ok(1) => Ok(Self {
                ring,
                target,
                size,
                gave_up: false,
            }),
            Ok(n) => Err(io::Error::other(format!(
                "dma-buf registration processed {n} descriptors, not 1"
            ))),
            Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.ring.in_flight()
    }

    /// Queues a READ_FIXED of `len` bytes at `file_off` of the target into `[buf_off,
    /// buf_off + len)` of the dma-buf (checked against its size here, and by the kernel).
    /// Submits first if the SQ is full.
    pub fn push_read(
        &mut self,
        buf_off: u64,
        len: u32,
        file_off: u64,
        user_data: u64,
    ) -> io::Result<()> {
        if buf_off
            .checked_add(len as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let sqe = opcode::ReadFixed::new(
            types::Fd(self.target.as_raw_fd()),
            buf_off as usize as *mut u8,
            len,
            0,
        )
        .offset(file_off)
        .build()
        .user_data(user_data)
        // Always issued from an io-wq worker (blocking, never IOCB_NOWAIT). v3 takes a
        // reference on the dma-buf's map at import and overwrites it when an inline issue
        // comes back -EAGAIN (e.g. the NVMe queue's tags are all busy) and the request is
        // imported again from io-wq: the first reference is never dropped, the token's fence
        // is never signalled, and every DMA_BUF_IOCTL_SYNC on the buffer then blocks forever
        // (seen in the VM rig for any load with more reads than fit in flight). Issued
        // async, a request is imported exactly once.
        .flags(io_uring::squeue::Flags::ASYNC);
        // SAFETY: for a dma-buf registered buffer `addr` is an offset into the dma-buf, not a
        // pointer: the kernel never dereferences it in our address space, it checks the range
        // against the dma-buf (bounds checked above too) and DMAs into pages the registration
        // keeps referenced. The target fd is ours until `Drop`, which waits for every read in
        // flight first.
        unsafe { self.ring.push(&sqe) }
    }

    /// Submits what is queued and waits until at least `want` completions are ready, or
    /// [`WAIT_TICK`](super::ring::WAIT_TICK) passed (`Ok(false)`).
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<bool> {
        self.ring.submit_and_wait(want)
    }

    /// Moves every ready completion into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        self.ring.reap(out)
    }

    /// Waits until no read is in flight (see [`Ring::wait_idle`]); `false` when reads are
    /// left in flight: the device may still write into the dma-buf, so no other path may
    /// fill it or hand it out, and the registration and the ring are leaked when dropped.
    pub fn wait_idle(&mut self) -> bool {
        if !self.gave_up {
            if let Err(e) = self.ring.wait_idle() {
                log::error!(
                    "io_uring wait failed with {} dma-buf reads in flight: {e}",
                    self.ring.in_flight()
                );
                self.gave_up = true;
            }
        }
        !self.gave_up
    }
}

impl Drop for DmabufRing {
    /// Waits for the reads in flight (no DMA may land after the buffer is handed out), then
    /// clears the table, which drops the registration's references on the dma-buf and the
    /// target (the kernel finishes that release asynchronously); the ring closes last. Reads
    /// still in flight after [`Ring::wait_idle`] gave up leave the table and the ring leaked.
    fn drop(&mut self) {
        if !self.wait_idle() {
            // Leave the registration in place (before 6.13 the unregister would block until
            // those reads complete): the ring is leaked with it (`Ring`'s drop).
            return;
        }
        if let Err(e) = self.ring.submitter().unregister_buffers() {
            log::warn!("unregistering the dma-buf buffer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Against the running kernel: no released kernel has the series, so unless the VM
    /// rig's seed stage says otherwise, the probe must say unavailable, and why.
    #[test]
    fn probe_on_this_kernel() {
        let expected = std::env::var("DMABUF_LOADER_EXPECT_DMABUF_REGBUF").is_ok_and(|v| v == "1");
        let p = probe().expect("io_uring works on this machine");
        assert_eq!(p.available, expected, "{}", p.detail);
        let want = if expected { "EBADF" } else { "EINVAL" };
        assert!(p.detail.contains(want), "{}", p.detail);
    }

    #[test]
    fn registration_checks_the_size_before_the_kernel() {
        let f = std::fs::File::open("/dev/null").unwrap();
        for size in [0, MAX_DMABUF_SIZE + 1] {
            let e = DmabufRing::new(2, f.as_fd(), size, f.as_fd())
                .err()
                .unwrap();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        }
    }
}
