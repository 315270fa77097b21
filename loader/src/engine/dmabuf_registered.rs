//! DMABUF_REGISTERED: the destination dma-buf is registered with io_uring for the storage
//! device and READ_FIXED requests make the NVMe controller DMA the data straight into it.
//! No CPU copy and no pinning of user pages, for any exporter the device can attach to:
//! a system dma-heap buffer (PFNMAP, out of reach of O_DIRECT on a stock kernel) as well as
//! a udmabuf. Needs the io_uring dma-buf read/write series (see `sys/regbuf.rs` for the uAPI
//! and what the kernel accepts); detected once at start (`Capabilities::io_uring_dmabuf_regbuf`).
//!
//! When it applies ([`applies`]): the kernel has the uAPI, the buffer is a real dma-buf of at
//! most 1 GiB (the series' limit; a larger load is not split over several dma-bufs, which
//! would not be one buffer: it takes the next path, saying so), and the target is what the
//! kernel accepts: an NVMe namespace opened O_DIRECT, i.e. a raw block-device source (allowed
//! by `Config::allow_block_devices`). A regular file is tried as the target itself (its
//! O_DIRECT reopen: the kernel then maps the file's blocks, nothing here has to): the series
//! says file targets may come, v3 refuses them with EOPNOTSUPP, which is recorded in the
//! reason and remembered per file system so later loads skip the attempt. Then, where
//! `Config::file_extent_devices` names the NVMe namespace under the file's ext4, the file's
//! blocks are read from the namespace, handed out only when provably the file's
//! ([`super::file_extents`], the extent route). Every refusal (registration errno, a first
//! read refused, a check of the extent route) steps down to the path the buffer would
//! otherwise take, with the reason in `io_path_reason`: BUFFERED for a dma-heap or a client's
//! dma-buf, DIRECT_REGISTERED for a udmabuf. A client's dma-buf target (`loadInto`) is
//! registered whole, the reads landing at its target offset ([`Buffer::dmabuf_window`]).
//!
//! The reads themselves ([`fill`]) take any dma-buf fd and any target, so a caller with its
//! own dma-buf (a client-provided buffer) uses the same registration.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

use nix::errno::Errno;

use super::{direct_body, file_extents, Attempt, Done, Progress};
use crate::api::{BufferKind, Capabilities, Config, ErrorKind, IoPath, LoadError};
use crate::buffer::Buffer;
use crate::source::Source;
use crate::sys::regbuf::{DmabufRing, MAX_DMABUF_SIZE};
use crate::sys::ring::Completion;

/// A spurious EAGAIN (mapping invalidated by the exporter, map not ready inline) is re-issued;
/// this many in a row for one request means it will not get better.
const MAX_EAGAIN_RETRIES: u32 = 1000;

/// `len` bytes at `dev_off` of the target land at `buf_off` of the dma-buf. `dev_off` and
/// `len` are multiples of the target's logical block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub buf_off: u64,
    pub dev_off: u64,
    pub len: u64,
}

/// How [`fill`] reads: `depth` READ_FIXED of at most `chunk` bytes in flight; `block` is the
/// target's logical block size (a short read is continued only on a block boundary).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadParams {
    pub depth: u32,
    pub chunk: usize,
    pub block: u64,
}

/// Why [`fill`] stopped.
#[derive(Debug)]
pub(crate) enum FillError {
    /// The kernel refused to register the dma-buf for the target.
    Register(io::Error),
    /// A read was refused (EINVAL, EFAULT, EOPNOTSUPP, EBADF): this dma-buf/target pair
    /// cannot be read this way (e.g. DMA segments not in 4 KiB multiples).
    Refused {
        errno: Errno,
        dev_off: u64,
    },
    /// The device failed a read.
    Io {
        errno: Errno,
        dev_off: u64,
    },
    /// A read returned 0 bytes before the end of its extent.
    Eof {
        dev_off: u64,
    },
    /// The progress callback said stop (cancelled / deadline).
    Stopped(LoadError),
    Ring(io::Error),
    /// Reads were still in flight when the ring gave up waiting for them, after the error
    /// described: the dma-buf may still be written, so the load fails (no fallback).
    Abandoned(String),
}

#[derive(Clone, Copy)]
struct Pending {
    buf_off: u64,
    dev_off: u64,
    len: u32,
    retries: u32,
}

/// Reads in flight, indexed by their `user_data`.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, pd: Pending) -> usize {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.slots[idx] = Some(pd);
        idx
    }

    fn remove(&mut self, idx: usize) -> Pending {
        let pd = self.slots[idx]
            .take()
            .expect("completion for a pending read");
        self.free.push(idx);
        pd
    }
}

/// Registers `dmabuf` (`dmabuf_size` bytes) for `target` and reads every extent into it as
/// `p` says. `progress(n)` is called
/// with the bytes of each completion; an error from it stops the reads. Returns when every
/// read has completed (or, on error, when none is in flight any more) and the registration
/// is gone; or with [`FillError::Abandoned`] when reads stayed in flight after the error.
pub(crate) fn fill(
    dmabuf: BorrowedFd<'_>,
    dmabuf_size: u64,
    target: BorrowedFd<'_>,
    extents: &[Extent],
    p: ReadParams,
    progress: &mut dyn FnMut(u64) -> Result<(), LoadError>,
) -> Result<(), FillError> {
    let mut ring =
        DmabufRing::new(p.depth, dmabuf, dmabuf_size, target).map_err(FillError::Register)?;
    let r = read_extents(&mut ring, extents, p, progress);
    if !ring.wait_idle() {
        return Err(match r {
            Err(FillError::Stopped(e)) => FillError::Stopped(e),
            other => FillError::Abandoned(format!(
                "{other:?}, with dma-buf reads still in flight {:?} later",
                crate::sys::ring::DRAIN_LIMIT
            )),
        });
    }
    r
}

/// [`fill`]'s loop on a registered ring; returns with reads in flight on an error.
fn read_extents(
    ring: &mut DmabufRing,
    extents: &[Extent],
    p: ReadParams,
    progress: &mut dyn FnMut(u64) -> Result<(), LoadError>,
) -> Result<(), FillError> {
    let ReadParams {
        depth,
        chunk,
        block,
    } = p;
    // At most one MAX_RW_COUNT-sized request, in whole blocks.
    let chunk = (chunk as u64)
        .min((i32::MAX as u64) / block * block)
        .max(block);
    let mut pending = Slab::default();
    let mut cqes: Vec<Completion> = Vec::with_capacity(depth as usize * 2);
    let (mut ext, mut next) = (0usize, 0u64);
    let push = |ring: &mut DmabufRing, pending: &mut Slab, pd: Pending| {
        let idx = pending.insert(pd);
        ring.push_read(pd.buf_off, pd.len, pd.dev_off, idx as u64)
            .map_err(FillError::Ring)
    };
    loop {
        while ring.in_flight() < depth as usize && ext < extents.len() {
            let e = extents[ext];
            let len = (e.len - next).min(chunk);
            push(
                ring,
                &mut pending,
                Pending {
                    buf_off: e.buf_off + next,
                    dev_off: e.dev_off + next,
                    len: len as u32,
                    retries: 0,
                },
            )?;
            next += len;
            if next == e.len {
                (ext, next) = (ext + 1, 0);
            }
        }
        if ring.in_flight() == 0 {
            return Ok(());
        }
        if !ring.submit_and_wait(1).map_err(FillError::Ring)? {
            // A tick without a completion: a cancel or the deadline still ends the load.
            progress(0).map_err(FillError::Stopped)?;
            continue;
        }
        cqes.clear();
        ring.reap(&mut cqes);
        for c in &cqes {
            let pd = pending.remove(c.user_data as usize);
            if c.result < 0 {
                let errno = Errno::from_raw(-c.result);
                match errno {
                    Errno::EAGAIN | Errno::EINTR if pd.retries < MAX_EAGAIN_RETRIES => {
                        push(
                            ring,
                            &mut pending,
                            Pending {
                                retries: pd.retries + 1,
                                ..pd
                            },
                        )?;
                        continue;
                    }
                    Errno::EINVAL | Errno::EFAULT | Errno::EOPNOTSUPP | Errno::EBADF => {
                        return Err(FillError::Refused {
                            errno,
                            dev_off: pd.dev_off,
                        })
                    }
                    _ => {
                        return Err(FillError::Io {
                            errno,
                            dev_off: pd.dev_off,
                        })
                    }
                }
            }
            let n = c.result as u32;
            if n == 0 {
                return Err(FillError::Eof {
                    dev_off: pd.dev_off,
                });
            }
            if n < pd.len {
                if n as u64 % block != 0 {
                    return Err(FillError::Io {
                        errno: Errno::EIO,
                        dev_off: pd.dev_off + n as u64,
                    });
                }
                push(
                    ring,
                    &mut pending,
                    Pending {
                        buf_off: pd.buf_off + n as u64,
                        dev_off: pd.dev_off + n as u64,
                        len: pd.len - n,
                        retries: 0,
                    },
                )?;
            }
            progress(n as u64).map_err(FillError::Stopped)?;
        }
    }
}

/// Whether this load can start on DMABUF_REGISTERED; `Err` says why not.
pub(super) fn applies(
    config: &Config,
    caps: &Capabilities,
    buffer: &Buffer,
    src: &Source,
) -> Result<(), String> {
    if !caps.io_uring_dmabuf_regbuf {
        return Err("this kernel has no io_uring dma-buf registered buffers".into());
    }
    if !buffer.heap.is_dmabuf {
        return Err(format!("{} is not a dma-buf", buffer.heap.name));
    }
    let (_, whole) = buffer.dmabuf_window();
    if whole > MAX_DMABUF_SIZE {
        return Err(format!(
            "the dma-buf ({whole} bytes) is larger than the 1 GiB io_uring registers as one \
             dma-buf, and several dma-bufs would not be one buffer",
        ));
    }
    if src.is_block_device {
        return Ok(());
    }
    // A regular file: the file itself as the target (until the kernel refused one file of
    // this file system), else its blocks on the namespace (the extent route).
    let route = file_extents::locate(config, src);
    match (file_refusal(src.dev), route) {
        (_, Ok(_)) => Ok(()),
        (Some(errno), Err(why)) => Err(format!(
            "io_uring refuses dma-buf registration for files on this file system ({}: the \
             series takes raw NVMe block devices only), and the file's blocks cannot be read \
             from the namespace: {why}",
            Errno::from_raw(errno)
        )),
        // Trying the file itself would wrap the udmabuf before the reads, pinning every page
        // up front instead of letting the direct reads fault them in; a dma-heap buffer
        // exists already, so files are tried (and the answer remembered) with those.
        (None, Err(why)) if buffer.heap.kind == BufferKind::Udmabuf => Err(format!(
            "a regular file into a udmabuf: not tried before a dma-heap load learnt whether \
             this file system takes dma-buf targets, and the file's blocks cannot be read from \
             the namespace: {why}"
        )),
        (None, Err(_)) => Ok(()),
    }
}

/// File systems (by st_dev) whose files io_uring refused as dma-buf targets, and the errno.
/// The series (v3) implements the target side for block devices only and says file targets
/// may come: every load of a file tries the registration for the file itself until the
/// kernel has refused one file of that file system; after that the refusal is known.
static FILE_REFUSALS: Mutex<Vec<(u64, i32)>> = Mutex::new(Vec::new());

fn file_refusal(dev: u64) -> Option<i32> {
    let r = FILE_REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    r.iter().find(|(d, _)| *d == dev).map(|&(_, e)| e)
}

fn remember_file_refusal(dev: u64, errno: i32) {
    let mut r = FILE_REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    if !r.iter().any(|(d, _)| *d == dev) {
        r.push((dev, errno));
    }
}

/// What the buffer falls back to when this path is refused.
fn fallback_path(buffer: &Buffer) -> IoPath {
    match buffer.heap.kind {
        BufferKind::DmaHeap | BufferKind::DmaBuf => IoPath::Buffered,
        BufferKind::Udmabuf | BufferKind::Memfd => IoPath::DirectRegistered,
    }
}

/// What the registration's errno means, per the series' code.
fn explain_register(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EOPNOTSUPP) => {
            "the target cannot take a dma-buf (not a block device, or no CONFIG_DMABUF_TOKEN)"
        }
        Some(libc::EINVAL) => "not an NVMe-PCI namespace opened O_DIRECT, or a dma-buf over 1 GiB",
        Some(libc::EBADF) => "a file descriptor was not open",
        Some(libc::ENOMEM) => "out of memory",
        _ => "the device could not attach the dma-buf",
    }
}

/// The engine's attempt: the block-aligned body of the range by READ_FIXED into the dma-buf,
/// the unaligned head/tail left to the bounce in `finish_pieces`. A raw block device is the
/// target itself; a regular file is tried as the target (the kernel maps its blocks), and
/// when the kernel refuses that, its blocks are read from the namespace under it
/// ([`file_extents`]) where the configuration allows.
pub(super) fn attempt(
    config: &Config,
    caps: &Capabilities,
    src: &Source,
    buffer: &Buffer,
    depth: u32,
    chunk: usize,
    progress: &mut Progress<'_, '_>,
) -> Result<Done, Attempt> {
    let to = fallback_path(buffer);
    let fallback = |why: String| Attempt::Fallback { why, to: Some(to) };
    applies(config, caps, buffer, src).map_err(&fallback)?;
    let dmabuf = buffer
        .dmabuf_now(config)
        .map_err(Attempt::Fatal)?
        .ok_or_else(|| fallback(format!("{} is not a dma-buf", buffer.heap.name)))?;
    let (base, whole) = buffer.dmabuf_window();
    let body = direct_body(src).map_err(&fallback)?;
    let (oa, ma) = (body.offset_align, body.mem_align);
    let (off, end) = (src.offset, src.end());
    if (base + body.start - off) % ma != 0 {
        return Err(fallback(format!(
            "offset {off} puts the data at a dma-buf offset the device cannot target ({ma}-byte alignment needed)"
        )));
    }
    let params = ReadParams {
        depth,
        chunk,
        block: oa,
    };
    let mut note = None;
    if src.is_block_device || file_refusal(src.dev).is_none() {
        let extents = [Extent {
            buf_off: base + body.start - off,
            dev_off: body.start,
            len: body.end - body.start,
        }];
        match fill(dmabuf, whole, body.fd.as_fd(), &extents, params, &mut |n| {
            progress.add(n)
        }) {
            Ok(()) => {
                let mut bounce = Vec::new();
                if off < body.start {
                    bounce.push((off, body.start));
                }
                if body.end < end {
                    bounce.push((body.end, end));
                }
                return Ok(Done {
                    path: IoPath::DmabufRegistered,
                    note: None,
                    bounce,
                    bounce_fd: Some((body.fd, oa, ma)),
                    ..Default::default()
                });
            }
            Err(FillError::Register(err))
                if !src.is_block_device && err.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                remember_file_refusal(src.dev, libc::EOPNOTSUPP);
                let why = format!(
                    "io_uring refused to register the {} dma-buf for {} (EOPNOTSUPP: {})",
                    buffer.heap.name,
                    src.path,
                    explain_register(Some(libc::EOPNOTSUPP))
                );
                match file_extents::locate(config, src) {
                    Ok(_) => note = Some(why),
                    Err(no) => {
                        return Err(fallback(format!(
                            "{why}; the file's blocks cannot be read from the namespace: {no}"
                        )))
                    }
                }
            }
            Err(e) => return Err(fill_error(e, src, buffer, &fallback)),
        }
    }
    let ns = file_extents::locate(config, src).map_err(&fallback)?;
    file_extents::attempt(
        &ns,
        src,
        body,
        &file_extents::Dest {
            dmabuf,
            base,
            whole,
            heap: &buffer.heap.name,
            fallback: to,
        },
        params,
        note,
        progress,
    )
}

/// What a failed [`fill`] on the source itself means for the load.
fn fill_error(
    e: FillError,
    src: &Source,
    buffer: &Buffer,
    fallback: &dyn Fn(String) -> Attempt,
) -> Attempt {
    match e {
        FillError::Register(err) => {
            let what = match err.raw_os_error() {
                Some(e) => Errno::from_raw(e).to_string(),
                None => err.to_string(),
            };
            fallback(format!(
                "io_uring refused to register the {} dma-buf for {} ({what}: {})",
                buffer.heap.name,
                src.path,
                explain_register(err.raw_os_error())
            ))
        }
        FillError::Refused { errno, dev_off } => fallback(format!(
            "READ_FIXED into the registered dma-buf was refused at offset {dev_off} ({errno})"
        )),
        FillError::Io { errno, dev_off } => Attempt::Fatal(LoadError::msg(
            ErrorKind::Io,
            format!("reading {} at offset {dev_off}: {errno}", src.path),
        )),
        FillError::Eof { dev_off } => Attempt::Fatal(LoadError::msg(
            ErrorKind::FileChanged,
            format!(
                "{} ended at {dev_off}, before the range end {}: shrank during the load",
                src.path,
                src.end()
            ),
        )),
        FillError::Stopped(e) => Attempt::Fatal(e),
        FillError::Ring(e) => fallback(format!("io_uring failed: {e}")),
        FillError::Abandoned(what) => Attempt::Fatal(LoadError::msg(
            ErrorKind::Io,
            format!("reading {} into the registered dma-buf: {what}", src.path),
        )),
    }
}
