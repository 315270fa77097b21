//! The data path, top to bottom: a validated source ([`Prepared`], see `source.rs`) in, a
//! filled buffer fd ([`Loaded`]) out.
//!
//! 0. **Small ranges** (<= [`SMALL_RANGE`]) into memfd-backed buffers skip everything below:
//!    one pread, one pwrite into an unmapped memfd ([`small`]).
//! 1. **Allocate** the buffer from its provider (`buffer/`): a memfd (also behind udmabuf;
//!    hugetlb or THP pages where the kernel offers them, `buffer/pages.rs`) or a dma-heap
//!    buffer, mapped writable. memfd pages are not allocated here: a helper
//!    thread faults them in ahead of the reads while the I/O runs ([`Populator`]).
//! 2. **Choose the I/O path** ([`choose_path`]): the dma-buf itself registered with io_uring
//!    for the device ([`dmabuf_registered`], kernels with the dma-buf read/write series; for
//!    a regular file through its extents on the namespace, [`file_extents`]), O_DIRECT
//!    into registered pages, O_DIRECT unregistered, io_uring buffered, plain pread. Each refusal by the kernel moves one
//!    step down the chain, and `Loaded::io_path_reason` records why.
//! 3. **Read** ([`direct`], [`buffered_uring`], [`buffered_sync`]); the io_uring loop itself
//!    is in `uring.rs`. Progress, cancellation and the deadline are handled between
//!    completions ([`Progress`]).
//! 4. **Finish**: unaligned head/tail bytes through a small aligned bounce, check the file
//!    is the version the reads began on (`Source::check_unchanged`: a file changed or
//!    truncated meanwhile is FILE_CHANGED, never a mix of two versions), checksum, DMA_BUF_IOCTL_SYNC end, unmap, and turn the
//!    buffer into the fd handed out (udmabuf wrap, read-only seal). Any error before the end
//!    drops the buffer: nothing is returned, nothing leaks.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::anyhow;
use nix::errno::Errno;

use crate::api::*;
use crate::buffer::pages::PagePlan;
use crate::buffer::Buffer;
use crate::loader::Prepared;
use crate::source::Source;
use crate::sys::mman::Mapping;
use crate::sys::ring::ReadRing;
use crate::sys::{cachestat, statx};
use crate::uring::{self, LoopError};

pub(crate) mod dmabuf_registered;
pub(crate) mod file_extents;

/// Reads in flight for the direct path. `dmabuf-loader-bench --sweep` on the dev host (virtio
/// disk, ext4, 2 vCPUs, 1 GiB cold, 1 MiB reads): QD 8 1.75, QD 16 1.61, QD 32 1.87, QD 64
/// 1.54 GiB/s in one interleaved run (+-15% noise); 32 is the best measured and the depth the
/// device-limit reference uses. See tools/bench/README.md.
pub const DEFAULT_QUEUE_DEPTH: u32 = 32;
/// Bytes per direct read. Same sweep at QD 32: 256 KiB 1.74, 1 MiB 1.87, 4 MiB 1.37 GiB/s;
/// 1 MiB also keeps progress and cancellation fine-grained.
pub const DEFAULT_CHUNK: usize = 1 << 20;
/// Buffered (page-cache) reads in flight and their size. Deep queues hurt here: with 32
/// reads of 1 MiB in flight on a cold file the bench measured 0.18-0.26 GiB/s against
/// 0.5-0.73 GiB/s for 1-2 reads of 4 MiB, because concurrent out-of-order reads defeat the
/// kernel's readahead and io_uring's non-blocking buffered reads come back short and are
/// resubmitted. For a range that is not in the cache the reads are also issued IOSQE_ASYNC
/// (plain blocking reads on io-wq workers, readahead intact): 0.78-1.01 GiB/s against
/// 0.48-0.65 without, in the same interleaved runs, on par with a read() loop. Cached data
/// copies fastest inline (no worker hop) and at the same speed at any depth.
pub const BUFFERED_QUEUE_DEPTH: u32 = 2;
pub const BUFFERED_CHUNK: usize = 4 << 20;
/// Registered-buffer slice: the buffer is registered lazily, one slice as the reads reach it,
/// so registration (which pins, i.e. allocates, pages) overlaps with I/O instead of
/// faulting the whole buffer before the first read.
const FIXED_SLICE: usize = 8 << 20;
/// A range at least this much in the page cache takes the buffered path (a memcpy from the
/// cache beats re-reading the device; measured by the bench's warm rows).
const CACHED_FRACTION: f64 = 0.9;
/// Ranges up to this size are read with plain pread() and no populate-ahead thread: for them
/// setting up a ring and a helper thread costs more than the read itself (4 KiB, in process,
/// p50: 48-113 us with a ring + helper, 13-21 us with one pread; measured by the service
/// engineer for the issue-3 loadFile latency target).
pub const SMALL_RANGE: u64 = 64 << 10;
/// Buffers smaller than this get no populate-ahead thread (a thread costs more than
/// faulting in a few pages).
const POPULATE_MIN: u64 = 8 << 20;
/// Step of the page-populating helper thread.
const POPULATE_STEP: usize = 4 << 20;

pub(crate) fn run(
    config: &Config,
    caps: &Capabilities,
    p: Prepared,
    ctl: &LoadControl<'_>,
) -> Result<Loaded> {
    let started = Instant::now();
    let mut progress = Progress::new(ctl, p.source.len);
    progress.check()?;
    if small_unmapped(config, &p) {
        return small(config, p, &mut progress, started);
    }

    // 1. Allocate.
    let t = Instant::now();
    let (mut buffer, map) = Buffer::allocate(&p.heap, p.buffer_size, config, &p.name)?;
    if config.alloc_strategy == AllocStrategy::Prefault && buffer.memfd().is_some() {
        map.populate_write(0..map.len()).map_err(|e| {
            LoadError::new(
                ErrorKind::AllocationFailed,
                anyhow!("prefaulting {} bytes: {e}", map.len()),
            )
        })?;
    }
    buffer.cpu_write_sync(false)?;
    let alloc_time = t.elapsed();

    // 2 + 3. Fill, between the two stamps of the change detection (S1, S2).
    let mut map = Arc::new(map);
    let (io_path, io_path_reason) = if p.source.len == 0 {
        (IoPath::None, "empty range: nothing to read".to_string())
    } else {
        let s1 = p.source.version_before_reads(&|| progress.check())?;
        let filled = fill(config, caps, &p.source, &buffer, &mut map, &mut progress)?;
        // 4. Finish: the file is the version the reads started on (O_DIRECT and io_uring
        // paths can also stop short silently at a truncation), or nothing is handed out.
        p.source.check_unchanged(s1.as_ref())?;
        filled
    };
    let map = Arc::into_inner(map).expect("no reader holds the mapping after fill");
    let checksum = match p.req.checksum {
        ChecksumType::None => None,
        ChecksumType::Xxh3_64 => {
            let data = &map.as_slice()[..p.source.len as usize];
            Some((ChecksumType::Xxh3_64, xxh3_64(data)))
        }
    };
    let page_size = buffer.page_size_seen(&map);
    let pages_note = buffer.pages_note.take();
    buffer.cpu_write_sync(true)?;
    drop(map);
    let heap = buffer.heap.clone();
    let fd = buffer.finish(p.req.read_only, &p.name, config)?;
    progress.check()?;
    let loaded = Loaded {
        fd,
        data_len: p.source.len,
        buffer_size: p.buffer_size,
        heap: heap.name,
        kind: heap.kind,
        io_path,
        page_size,
        io_path_reason,
        alloc_time,
        total_time: started.elapsed(),
        checksum,
    };
    log::debug!(
        "loaded {} bytes of {} at {} into {} ({} KiB pages{}) via {:?} ({}) in {:?}",
        loaded.data_len,
        p.source.path,
        p.source.offset,
        loaded.heap,
        loaded.page_size >> 10,
        pages_note.map(|n| format!(": {n}")).unwrap_or_default(),
        loaded.io_path,
        loaded.io_path_reason,
        loaded.total_time
    );
    Ok(loaded)
}

/// Whether the load takes the small path: a short range into a memfd-backed buffer, not
/// forced onto another path.
fn small_unmapped(config: &Config, p: &Prepared) -> bool {
    p.source.len > 0
        && p.source.len <= SMALL_RANGE
        && p.heap.kind != BufferKind::DmaHeap
        && config
            .force_io_path
            .is_none_or(|f| f == IoPath::BufferedSync)
}

/// The small-load path, all of it: one pread into a heap buffer, one pwrite into a fresh
/// memfd (no mapping, no page fault, no munmap), checksum from the copy we hold, finish.
/// 13 syscalls per 4 KiB load before (validate, memfd, mmap, pread, fstat, munmap, ...),
/// 10 with this path, plus the change detection's barrier before the read (open of
/// /proc/self/fd, fstat, lseek, close) and one fstat after it; see tools/bench/README.md.
fn small(
    config: &Config,
    p: Prepared,
    progress: &mut Progress<'_, '_>,
    started: Instant,
) -> Result<Loaded> {
    let t = Instant::now();
    let buffer = Buffer::allocate_unmapped(&p.heap, p.buffer_size, &p.name)?;
    let alloc_time = t.elapsed();
    let mut data = vec![0u8; p.source.len as usize];
    let s1 = p.source.version_before_reads(&|| progress.check())?;
    pread_full(&p.source, &mut data, p.source.offset)?;
    p.source.check_unchanged(s1.as_ref())?;
    buffer.write_all_at(&data, 0)?;
    progress.add(p.source.len)?;
    let checksum = match p.req.checksum {
        ChecksumType::None => None,
        ChecksumType::Xxh3_64 => Some((ChecksumType::Xxh3_64, xxh3_64(&data))),
    };
    let heap = buffer.heap.clone();
    let fd = buffer.finish(p.req.read_only, &p.name, config)?;
    progress.check()?;
    Ok(Loaded {
        fd,
        data_len: p.source.len,
        buffer_size: p.buffer_size,
        heap: heap.name,
        kind: heap.kind,
        io_path: IoPath::BufferedSync,
        page_size: crate::buffer::pages::BASE_PAGE,
        io_path_reason: format!(
            "small range ({} bytes): one pread costs less than setting up a ring",
            p.source.len
        ),
        alloc_time,
        total_time: started.elapsed(),
        checksum,
    })
}

/// Fraction of the range in the page cache (cachestat), when the kernel can say.
fn cached_fraction(config: &Config, caps: &Capabilities, src: &Source) -> Option<f64> {
    if !(config.page_cache_hint && caps.cachestat) {
        return None;
    }
    let cs = cachestat::cachestat(src.fd.as_fd(), src.offset, src.len).ok()?;
    Some(cs.nr_cache as f64 / src.len.div_ceil(4096).max(1) as f64)
}

/// Where the chain starts, and why.
fn choose_path(
    config: &Config,
    caps: &Capabilities,
    buffer: &Buffer,
    src: &Source,
    cached: Option<f64>,
) -> (IoPath, String) {
    let len = src.len;
    if let Some(p) = config.force_io_path {
        return (p, "forced by configuration".into());
    }
    if len <= SMALL_RANGE {
        return (
            IoPath::BufferedSync,
            format!("small range ({len} bytes): one pread costs less than setting up a ring"),
        );
    }
    if !caps.io_uring {
        return (
            IoPath::BufferedSync,
            "io_uring unavailable on this kernel".into(),
        );
    }
    if dmabuf_registered::applies(config, caps, buffer, src).is_ok() {
        return (
            IoPath::DmabufRegistered,
            "the dma-buf registered with io_uring for the device: it DMAs straight into the buffer"
                .into(),
        );
    }
    if !buffer.heap.direct_io {
        return (
            IoPath::Buffered,
            format!(
                "{} pages are PFNMAP: O_DIRECT cannot target them",
                buffer.heap.name
            ),
        );
    }
    match cached {
        Some(frac) if frac >= CACHED_FRACTION => (
            IoPath::Buffered,
            format!(
                "{:.0}% of the range is in the page cache: a copy beats re-reading the device",
                frac * 100.0
            ),
        ),
        _ => (
            IoPath::DirectRegistered,
            "O_DIRECT straight into the buffer's pages".into(),
        ),
    }
}

/// Why DMABUF_REGISTERED does not apply to this load, `None` when it does (for a caller's
/// own reason text: `target.rs`).
pub(crate) fn dmabuf_registered_refusal(
    config: &Config,
    caps: &Capabilities,
    buffer: &Buffer,
    src: &Source,
) -> Option<String> {
    dmabuf_registered::applies(config, caps, buffer, src).err()
}

fn next_path(p: IoPath) -> IoPath {
    match p {
        IoPath::DirectRegistered | IoPath::DmabufRegistered => IoPath::Direct,
        IoPath::Direct => IoPath::Buffered,
        _ => IoPath::BufferedSync,
    }
}

/// Runs the chain from the chosen path until one path fills the whole range. The range lands
/// at offset 0 of `map` (a load-into target's mapping is a window starting at its offset).
pub(crate) fn fill(
    config: &Config,
    caps: &Capabilities,
    src: &Source,
    buffer: &Buffer,
    map: &mut Arc<Mapping>,
    progress: &mut Progress<'_, '_>,
) -> Result<(IoPath, String)> {
    let cached = cached_fraction(config, caps, src);
    let (mut path, mut reason) = choose_path(config, caps, buffer, src, cached);
    if caps.io_uring_dmabuf_regbuf && path != IoPath::DmabufRegistered {
        if let Err(why) = dmabuf_registered::applies(config, caps, buffer, src) {
            reason = format!("{reason} (DmabufRegistered not used: {why})");
        }
    }
    // Cached data copies fastest inline in our thread; uncached data reads best as plain
    // blocking reads on io-wq workers (see BUFFERED_QUEUE_DEPTH).
    let buffered_async = !cached.is_some_and(|f| f >= CACHED_FRACTION);
    if path == IoPath::None {
        reason = format!("{path:?} cannot be forced for a non-empty range");
        path = IoPath::DirectRegistered;
    }
    let mut populator = match (config.alloc_strategy, buffer.memfd()) {
        (AllocStrategy::Overlap, Some(_))
            if !matches!(path, IoPath::BufferedSync | IoPath::DmabufRegistered)
                && buffer.size >= POPULATE_MIN =>
        {
            Populator::start(
                map.clone(),
                matches!(path, IoPath::DirectRegistered | IoPath::Direct),
            )
        }
        _ => Populator::none(),
    };
    let depth = config.queue_depth.unwrap_or(DEFAULT_QUEUE_DEPTH);
    let chunk = config.chunk_size.unwrap_or(DEFAULT_CHUNK);
    // Registered slices never split a huge page: each one then pins whole large folios,
    // which io_uring coalesces into one segment per folio.
    let slice_min = match buffer.pages {
        PagePlan::Hugetlb(ps) | PagePlan::Thp(ps) => ps as usize,
        PagePlan::Base => 0,
    };
    loop {
        progress.restart();
        let attempt = match path {
            IoPath::DmabufRegistered => {
                dmabuf_registered::attempt(config, caps, src, buffer, depth, chunk, progress)
            }
            IoPath::DirectRegistered | IoPath::Direct => direct(
                src,
                map,
                depth,
                chunk,
                path == IoPath::DirectRegistered,
                slice_min,
                progress,
            ),
            IoPath::Buffered => buffered_uring(
                src,
                map,
                config.queue_depth.unwrap_or(BUFFERED_QUEUE_DEPTH),
                config.chunk_size.unwrap_or(BUFFERED_CHUNK),
                buffered_async,
                progress,
            ),
            _ => {
                populator.stop();
                let m = Arc::get_mut(map).expect("no ring or helper holds the mapping");
                return buffered_sync(src, m, chunk, progress)
                    .map(|()| (IoPath::BufferedSync, reason));
            }
        };
        match attempt {
            Ok(done) => {
                populator.stop();
                let m = Arc::get_mut(map).expect("no ring or helper holds the mapping");
                finish_pieces(src, m, &done, progress)?;
                let reason = match done.note {
                    Some(n) => format!("{reason}; {n}"),
                    None => reason,
                };
                return Ok((done.path, reason));
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Fallback { why, to }) => {
                let to = to.unwrap_or_else(|| next_path(path));
                log::info!(
                    "{path:?} refused for {}: {why}; falling back to {to:?}",
                    src.path
                );
                reason = format!("{why} -> {to:?}");
                path = to;
            }
        }
    }
}

/// What a successful path left for [`finish_pieces`] (needs exclusive access to the map).
#[derive(Default)]
struct Done {
    path: IoPath,
    note: Option<String>,
    /// Unaligned head/tail file ranges to read through the aligned bounce, on this fd.
    bounce: Vec<(u64, u64)>,
    bounce_fd: Option<(OwnedFd, u64, u64)>,
    /// Remainders of short direct reads, finished with pread on the source fd.
    leftovers: Vec<uring::Leftover>,
    /// File ranges that read as zeros (holes, unwritten extents: the extent route).
    zero: Vec<(u64, u64)>,
    /// Bytes already read (the extent route's head and tail, read inside its checks), by
    /// file offset.
    copies: Vec<(u64, Vec<u8>)>,
}

enum Attempt {
    /// This path cannot work here; try `to` (or the next one down).
    Fallback {
        why: String,
        to: Option<IoPath>,
    },
    Fatal(LoadError),
}

fn loop_error(e: LoopError, src: &Source) -> Attempt {
    match e {
        LoopError::Refused(errno) => Attempt::Fallback {
            why: format!("the kernel refused O_DIRECT reads ({errno})"),
            to: None,
        },
        LoopError::Eof { file_off } => Attempt::Fatal(LoadError::msg(
            ErrorKind::FileChanged,
            format!(
                "{} ended at {file_off}, before the range end {}: truncated during the load",
                src.path,
                src.end()
            ),
        )),
        LoopError::Io { errno, file_off } => Attempt::Fatal(LoadError::msg(
            ErrorKind::Io,
            format!("reading {} at offset {file_off}: {errno}", src.path),
        )),
        LoopError::Stopped(e) => Attempt::Fatal(e),
        LoopError::Ring(e) => Attempt::Fallback {
            why: format!("io_uring failed: {e}"),
            to: Some(IoPath::BufferedSync),
        },
    }
}

/// The outcome of an io_uring path once its ring is finished (`idle`: no read left in
/// flight). A ring that gave up on reads still in flight leaked its reference to the
/// mapping, which the kernel may still write to: no other path may fill (or hand out) that
/// buffer then, so a fallback becomes this load's failure.
fn after_ring(
    idle: bool,
    out: std::result::Result<uring::Outcome, LoopError>,
    src: &Source,
) -> std::result::Result<uring::Outcome, Attempt> {
    match out.map_err(|e| loop_error(e, src)) {
        Err(Attempt::Fallback { why, .. }) if !idle => Err(Attempt::Fatal(LoadError::msg(
            ErrorKind::Io,
            format!(
                "{why}; reads of {} still in flight were abandoned with the buffer they \
                 target, so no other path can fill it",
                src.path
            ),
        ))),
        r => r,
    }
}

/// What an O_DIRECT path reads: our own O_DIRECT description of the source and the
/// block-aligned body of the range (the unaligned head and tail go through the bounce in
/// [`finish_pieces`]). Shared by the direct path and DMABUF_REGISTERED.
pub(crate) struct DirectBody {
    pub fd: OwnedFd,
    /// File-offset alignment O_DIRECT needs (STATX_DIOALIGN).
    pub offset_align: u64,
    /// Memory (or dma-buf offset) alignment O_DIRECT needs.
    pub mem_align: u64,
    pub start: u64,
    pub end: u64,
}

/// Reopens the source O_DIRECT and finds the block-aligned body of its range; `Err` says why
/// not, for the fallback reason.
pub(crate) fn direct_body(src: &Source) -> std::result::Result<DirectBody, String> {
    let fd = src.reopen_direct()?;
    let align = match statx::dio_align(&fd) {
        Ok(Some(a)) => a,
        // Pre-6.1 kernel or a file system that does not say: page alignment is what
        // every block device accepts.
        _ => statx::DioAlign {
            mem: 4096,
            offset: 4096,
        },
    };
    let (oa, ma) = (align.offset as u64, align.mem as u64);
    let start = src.offset.next_multiple_of(oa);
    let end = src.end() / oa * oa;
    if start >= end {
        return Err(format!(
            "the range is smaller than one {oa}-byte O_DIRECT block"
        ));
    }
    Ok(DirectBody {
        fd,
        offset_align: oa,
        mem_align: ma,
        start,
        end,
    })
}

/// O_DIRECT into the buffer's pages: the block-aligned body with io_uring (registered
/// buffers when `fixed`), the unaligned head/tail left to the bounce in [`finish_pieces`].
fn direct(
    src: &Source,
    map: &Arc<Mapping>,
    depth: u32,
    chunk: usize,
    fixed: bool,
    slice_min: usize,
    progress: &mut Progress<'_, '_>,
) -> std::result::Result<Done, Attempt> {
    let fallback = |why: String| Attempt::Fallback {
        why,
        to: Some(IoPath::Buffered),
    };
    let DirectBody {
        fd: dfd,
        offset_align: oa,
        mem_align: ma,
        start: body_start,
        end: body_end,
    } = direct_body(src).map_err(fallback)?;
    let (off, end) = (src.offset, src.end());
    // The memory address, not the offset in the mapping: a load-into target's window need
    // not start on a page.
    if (map.as_ptr() as u64 + (body_start - off)) % ma != 0 {
        return Err(fallback(format!(
            "offset {off} puts the data at a memory address O_DIRECT cannot target ({ma}-byte alignment needed)"
        )));
    }
    let mut ring = ReadRing::new(depth, map.clone()).map_err(|e| Attempt::Fallback {
        why: format!("io_uring setup failed: {e}"),
        to: Some(IoPath::BufferedSync),
    })?;
    let mut note = None;
    let mut fixed_slice = None;
    if fixed {
        // A whole number of chunks per slice, so no read straddles two slots.
        let slice = FIXED_SLICE.max(slice_min).max(chunk) / chunk * chunk;
        let slots = (body_end - body_start).div_ceil(slice as u64) as u32;
        match ring.enable_fixed(slots) {
            Ok(()) => fixed_slice = Some(slice),
            Err(e) => {
                drop(ring);
                return Err(Attempt::Fallback {
                    why: format!("registering buffers failed ({e})"),
                    to: Some(IoPath::Direct),
                });
            }
        }
    }
    let range = uring::Range {
        mem_start: (body_start - off) as usize,
        file_start: body_start,
        len: body_end - body_start,
    };
    let params = uring::Params {
        chunk,
        depth,
        direct_align: Some((oa, ma)),
        fixed_slice,
    };
    let out = uring::read_range(&mut ring, dfd.as_fd(), range, params, &mut |n| {
        progress.add(n)
    });
    let out = after_ring(ring.finish().is_some(), out, src)?;
    let mut path = if fixed {
        IoPath::DirectRegistered
    } else {
        IoPath::Direct
    };
    if let Some(d) = out.fixed_downgrade {
        path = IoPath::Direct;
        note = Some(d);
    }
    let mut bounce = Vec::new();
    if off < body_start {
        bounce.push((off, body_start));
    }
    if body_end < end {
        bounce.push((body_end, end));
    }
    Ok(Done {
        path,
        note,
        bounce,
        bounce_fd: Some((dfd, oa, ma)),
        leftovers: out.leftovers,
        ..Default::default()
    })
}

/// io_uring reads through the page cache into the mapping (one CPU copy, in the kernel).
fn buffered_uring(
    src: &Source,
    map: &Arc<Mapping>,
    depth: u32,
    chunk: usize,
    force_async: bool,
    progress: &mut Progress<'_, '_>,
) -> std::result::Result<Done, Attempt> {
    let mut ring = ReadRing::new(depth, map.clone()).map_err(|e| Attempt::Fallback {
        why: format!("io_uring setup failed: {e}"),
        to: Some(IoPath::BufferedSync),
    })?;
    ring.set_force_async(force_async);
    let range = uring::Range {
        mem_start: 0,
        file_start: src.offset,
        len: src.len,
    };
    let params = uring::Params {
        chunk,
        depth,
        direct_align: None,
        fixed_slice: None,
    };
    let out = uring::read_range(&mut ring, src.fd.as_fd(), range, params, &mut |n| {
        progress.add(n)
    });
    let out = after_ring(ring.finish().is_some(), out, src)?;
    Ok(Done {
        path: IoPath::Buffered,
        leftovers: out.leftovers,
        ..Default::default()
    })
}

/// Plain pread() loop: the path when io_uring is unavailable.
fn buffered_sync(
    src: &Source,
    map: &mut Mapping,
    chunk: usize,
    progress: &mut Progress<'_, '_>,
) -> Result<()> {
    let dst = &mut map.as_mut_slice()[..src.len as usize];
    let mut done = 0usize;
    while done < dst.len() {
        let n = (dst.len() - done).min(chunk);
        let got = pread_full(src, &mut dst[done..done + n], src.offset + done as u64)?;
        done += got;
        progress.add(got as u64)?;
    }
    Ok(())
}

/// pread until `buf` is full; EOF first means the file was truncated.
fn pread_full(src: &Source, buf: &mut [u8], file_off: u64) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::uio::pread(&src.fd, &mut buf[got..], (file_off + got as u64) as i64) {
            Ok(0) => {
                return Err(LoadError::msg(
                    ErrorKind::FileChanged,
                    format!(
                        "{} ended at {}, before the range end {}: truncated during the load",
                        src.path,
                        file_off + got as u64,
                        src.end()
                    ),
                ))
            }
            Ok(n) => got += n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => {
                return Err(LoadError::msg(
                    ErrorKind::Io,
                    format!("pread {} at {}: {e}", src.path, file_off + got as u64),
                ))
            }
        }
    }
    Ok(got)
}

/// Reads the unaligned file range `[start, end)` through an aligned bounce on the O_DIRECT
/// fd `dfd` (offsets aligned to `oa`, memory to `ma`); exactly `end - start` bytes, or
/// FileChanged when the file ends first.
pub(crate) fn read_unaligned(
    src: &Source,
    dfd: BorrowedFd<'_>,
    oa: u64,
    ma: u64,
    start: u64,
    end: u64,
) -> Result<Vec<u8>> {
    let a0 = start / oa * oa;
    let a1 = end.next_multiple_of(oa);
    let blen = (a1 - a0) as usize;
    let mut bounce = Mapping::anonymous(blen.next_multiple_of(4096).max(ma as usize))
        .map_err(|e| LoadError::new(ErrorKind::Internal, e))?;
    let buf = &mut bounce.as_mut_slice()[..blen];
    let mut got = 0usize;
    while got < blen {
        match nix::sys::uio::pread(dfd, &mut buf[got..], (a0 + got as u64) as i64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => {
                return Err(LoadError::msg(
                    ErrorKind::Io,
                    format!("O_DIRECT pread {} at {a0}: {e}", src.path),
                ))
            }
        }
        if got % oa as usize != 0 {
            break; // short (EOF) read; cannot continue unaligned
        }
    }
    let need = (end - a0) as usize;
    if got < need {
        return Err(LoadError::msg(
            ErrorKind::FileChanged,
            format!(
                "{} ended at {}, before the range end {end}: truncated during the load",
                src.path,
                a0 + got as u64
            ),
        ));
    }
    Ok(buf[(start - a0) as usize..need].to_vec())
}

/// Head/tail through an aligned bounce on the O_DIRECT fd, short-read remainders, and the
/// extent route's zero ranges and already-read pieces.
fn finish_pieces(
    src: &Source,
    map: &mut Mapping,
    done: &Done,
    progress: &mut Progress<'_, '_>,
) -> Result<()> {
    if let Some((dfd, oa, ma)) = &done.bounce_fd {
        for &(start, end) in &done.bounce {
            let bytes = read_unaligned(src, dfd.as_fd(), *oa, *ma, start, end)?;
            let to = (start - src.offset) as usize;
            map.as_mut_slice()[to..to + bytes.len()].copy_from_slice(&bytes);
            progress.add(end - start)?;
        }
    }
    for &(start, end) in &done.zero {
        let to = (start - src.offset) as usize;
        map.as_mut_slice()[to..to + (end - start) as usize].fill(0);
    }
    for (start, bytes) in &done.copies {
        let to = (start - src.offset) as usize;
        map.as_mut_slice()[to..to + bytes.len()].copy_from_slice(bytes);
    }
    for l in &done.leftovers {
        let got = pread_full(
            src,
            &mut map.as_mut_slice()[l.mem_off..l.mem_off + l.len],
            l.file_off,
        )?;
        progress.add(got as u64)?;
    }
    Ok(())
}

/// Progress reporting + cancellation/deadline checks, between completions.
pub(crate) struct Progress<'c, 'a> {
    ctl: &'c LoadControl<'a>,
    total: u64,
    /// Bytes of the current attempt.
    done: u64,
    /// Highest value reported (a fallback re-reads, the callback never goes backwards).
    reported: u64,
}

impl<'c, 'a> Progress<'c, 'a> {
    pub(crate) fn new(ctl: &'c LoadControl<'a>, total: u64) -> Self {
        Progress {
            ctl,
            total,
            done: 0,
            reported: 0,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.ctl.cancel.is_cancelled() {
            return Err(LoadError::msg(ErrorKind::Cancelled, "load cancelled"));
        }
        if let Some(d) = self.ctl.deadline {
            if Instant::now() >= d {
                return Err(LoadError::msg(
                    ErrorKind::TimedOut,
                    "load exceeded its deadline",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn add(&mut self, n: u64) -> Result<()> {
        self.done += n;
        if self.done > self.reported {
            self.reported = self.done.min(self.total);
            if let Some(cb) = self.ctl.progress {
                cb(self.reported, self.total);
            }
        }
        self.check()
    }

    fn restart(&mut self) {
        self.done = 0;
    }
}

/// Faults the buffer's pages in (MADV_POPULATE_WRITE) on a helper thread, ahead of the
/// reads, so page allocation and zeroing run on the other core while the device works.
/// Contents are never touched; stopping is checked every [`POPULATE_STEP`]. Always joined.
struct Populator {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Populator {
    fn none() -> Self {
        Populator {
            stop: Arc::new(AtomicBool::new(true)),
            handle: None,
        }
    }

    /// `ahead_of_device`: populate front to back, staying ahead of O_DIRECT reads (faulting
    /// 1 GiB takes ~0.4 s, the device ~0.7 s here), so the submitting thread finds its pages
    /// ready and keeps the queue full. Otherwise (copy paths, where the copy outruns the
    /// helper) back to front: the copies fault pages in from the front and the two cores meet
    /// in the middle instead of fighting over the same pages.
    fn start(map: Arc<Mapping>, ahead_of_device: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new().name("dmabuf-populate".into()).spawn(move || {
            let len = map.len();
            let steps = len.div_ceil(POPULATE_STEP);
            for i in 0..steps {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let k = if ahead_of_device { i } else { steps - 1 - i };
                let range = k * POPULATE_STEP..((k + 1) * POPULATE_STEP).min(len);
                if let Err(e) = map.populate_write(range.clone()) {
                    log::info!("populate-ahead stopped at {range:?}: {e}; the reads fault pages in themselves");
                    return;
                }
            }
        });
        match spawned {
            Ok(h) => Populator {
                stop,
                handle: Some(h),
            },
            Err(e) => {
                log::info!("no populate-ahead thread ({e}); the reads fault pages in themselves");
                Self::none()
            }
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::error!("populate-ahead thread panicked");
            }
        }
    }
}

impl Drop for Populator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// XXH3-64, seed 0: the value clients compare with their own hash of the file.
pub(crate) fn xxh3_64(data: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(data)
}

#[cfg(test)]
mod tests {
    /// The checksums must not change with the hash crate: these are the values xxhash-rust
    /// 0.8.19 (`xxh3::xxh3_64`, used before twox-hash) gave for the same inputs, one per XXH3
    /// code path (empty, 1-16 bytes, 129-240 bytes, long input with a partial stripe).
    #[test]
    fn xxh3_values_are_those_xxhash_rust_gave() {
        let long: Vec<u8> = (0..1_048_579u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(super::xxh3_64(b""), 0x2d06800538d394c2);
        assert_eq!(super::xxh3_64(b"dmabuf-loader"), 0xa6c63b973b25035b);
        assert_eq!(super::xxh3_64(&long[..200]), 0x20a87db907ce74e4);
        assert_eq!(super::xxh3_64(&long), 0x5dae2020379a9468);
    }
}
