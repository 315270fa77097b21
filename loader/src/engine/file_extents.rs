//! The extent route of DMABUF_REGISTERED: a regular file's bytes read by the NVMe controller
//! straight from the namespace under the file system, into the dma-buf. The io_uring dma-buf
//! series (v3) registers a dma-buf only for a raw NVMe namespace, not for a file, so for a
//! file on ext4 on an nvme-pci namespace that the configuration allows
//! (`Config::file_extent_devices`), the loader asks the file system where the range's blocks
//! are (FIEMAP with FIEMAP_FLAG_SYNC on its own O_DIRECT reopen), registers the dma-buf for
//! the namespace and READ_FIXEDs each extent's physical range into the right dma-buf offset;
//! holes and unwritten extents become zeros, the unaligned head and tail are read through
//! the file.
//!
//! The service opens a raw device here that also holds other files, so it hands the bytes
//! out only when they are provably this file's ([`attempt`], argued in full in
//! `docs/dmabuf-registered.md`, "Why the extent route hands out only the file's bytes"):
//! 1. [`locate`]: ext4 (one block device, no reflink), not journaling data (mount option or
//!    inode flag), not encrypted/compressed/inline, the partition on an nvme-pci namespace on
//!    the allowlist;
//! 2. stamp S1 (size, mtime, ctime, ino, dev), then CLOCK_REALTIME_COARSE: S1's ctime must be
//!    older than that tick, so every later change of the file (each sets ctime from that
//!    clock) gives a different ctime;
//! 3. a barrier (SEEK_DATA takes the inode lock shared: operations holding it, such as a
//!    truncate or fallocate that began before S1, finish first), then extents E1;
//! 4. every extent plain; the reads; the head and tail through the file;
//! 5. extents E2, the barrier, stamp S2: S2 == S1 and E2 == E1, or the load fails with
//!    FILE_CHANGED and nothing read is handed out.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::sys::stat::{fstat, stat, SFlag};

use super::dmabuf_registered::{fill, Extent, FillError, ReadParams};
use super::{read_unaligned, Attempt, DirectBody, Done, Progress};
use crate::api::{Config, ErrorKind, IoPath, LoadError};
use crate::source::{barrier, Source, Version};
use crate::sys::blkdev::{self, DiskSpan, Driver};
use crate::sys::fiemap::{self, FileExtent};
use crate::sys::statx;

/// statfs `f_type` of ext4 (`EXT4_SUPER_MAGIC`, also ext2/ext3).
const EXT4_SUPER_MAGIC: i64 = 0xEF53;

/// Extents whose bytes are not plainly at their physical address: refused.
const NOT_PLAIN: u32 = fiemap::FIEMAP_EXTENT_UNKNOWN
    | fiemap::FIEMAP_EXTENT_DELALLOC
    | fiemap::FIEMAP_EXTENT_ENCODED
    | fiemap::FIEMAP_EXTENT_DATA_ENCRYPTED
    | fiemap::FIEMAP_EXTENT_NOT_ALIGNED
    | fiemap::FIEMAP_EXTENT_DATA_INLINE
    | fiemap::FIEMAP_EXTENT_DATA_TAIL;

/// The flags an extent may carry and still be read: the last one, unwritten (read as zeros),
/// merged (a reporting detail) and shared (reflink: see the docs). Any other bit, including
/// one a later kernel defines, is refused.
const ACCEPTED: u32 = fiemap::FIEMAP_EXTENT_LAST
    | fiemap::FIEMAP_EXTENT_UNWRITTEN
    | fiemap::FIEMAP_EXTENT_MERGED
    | fiemap::FIEMAP_EXTENT_SHARED;

/// Where a file's blocks can be read raw: the allowlisted namespace and the partition span.
#[derive(Debug)]
pub(crate) struct Namespace {
    /// The configured path of the namespace (what the service opens).
    pub path: PathBuf,
    pub span: DiskSpan,
}

/// Whether the extent route can serve `src`, without opening anything but sysfs and
/// mountinfo; `Err` says why not (for `ioPathReason`).
pub(crate) fn locate(config: &Config, src: &Source) -> Result<Namespace, String> {
    if config.file_extent_devices.is_empty() {
        return Err(
            "no NVMe namespace is configured for reading files' blocks directly \
             (file_extent_devices is empty)"
                .into(),
        );
    }
    let fs = nix::sys::statfs::fstatfs(src.fd.as_fd())
        .map_err(|e| format!("fstatfs: {e}"))?
        .filesystem_type()
        .0 as i64;
    if fs != EXT4_SUPER_MAGIC {
        return Err(format!(
            "the file system (magic {fs:#x}) is not ext4: the extent route reads only ext4, \
             whose FIEMAP addresses are offsets on the one block device st_dev names"
        ));
    }
    if let Some(why) = journaled_mount(src.dev) {
        return Err(why);
    }
    let flags = fiemap::inode_flags(src.fd.as_fd()).map_err(|e| format!("FS_IOC_GETFLAGS: {e}"))?;
    for (bit, what) in [
        (
            fiemap::FS_JOURNAL_DATA_FL,
            "journals its data (its newest bytes may be in the journal, not in place)",
        ),
        (
            fiemap::FS_ENCRYPT_FL,
            "is encrypted (its blocks hold ciphertext)",
        ),
        (fiemap::FS_COMPR_FL, "is compressed"),
        (
            fiemap::FS_INLINE_DATA_FL,
            "keeps its data inline in the inode",
        ),
    ] {
        if flags & bit != 0 {
            return Err(format!("the file {what}"));
        }
    }
    if statx::dio_unsupported(src.fd.as_fd()).unwrap_or(false) {
        return Err(
            "the file system takes no direct I/O for this file (STATX_DIOALIGN 0: \
                    journaled, encrypted, verity or inline data)"
                .into(),
        );
    }
    let span = blkdev::disk_span(src.dev).map_err(|e| {
        format!(
            "/sys/dev/block/{}:{} does not say which disk holds the file system: {e}",
            nix::sys::stat::major(src.dev),
            nix::sys::stat::minor(src.dev)
        )
    })?;
    if let Driver::Other(what) = &span.driver {
        return Err(format!(
            "{what}: io_uring registers dma-bufs only for nvme-pci namespaces"
        ));
    }
    let path = config
        .file_extent_devices
        .iter()
        .find(|p| {
            stat(p.as_path()).is_ok_and(|st| {
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFBLK
                    && st.st_rdev == span.disk_dev
            })
        })
        .cloned()
        .ok_or_else(|| {
            format!(
                "{} ({}:{}) is not one of the configured file_extent_devices",
                span.disk,
                nix::sys::stat::major(span.disk_dev),
                nix::sys::stat::minor(span.disk_dev)
            )
        })?;
    Ok(Namespace { path, span })
}

/// `Some(why)` when the file system on `dev` is mounted `data=journal` (mountinfo's super
/// options): data then goes through the journal, and its newest version may not be in place.
fn journaled_mount(dev: u64) -> Option<String> {
    let want = format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter(|l| l.split(' ').nth(2) == Some(want.as_str()))
        .find_map(|l| {
            let supers = l.split(" - ").nth(1)?.split(' ').nth(2)?;
            supers
                .split(',')
                .any(|o| o == "data=journal")
                .then(|| format!("the file system ({want}) is mounted data=journal: file data may sit in the journal, not in place"))
        })
}

/// The reads and the zero ranges for the file range `[start, end)` from its extents.
/// `base` is where `range_start` (the load's first byte) lands in the dma-buf. Reads are
/// `(dma-buf offset, namespace offset, length)`; zero ranges are file ranges.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub reads: Vec<Extent>,
    pub zero: Vec<(u64, u64)>,
}

pub(crate) fn plan(
    extents: &[FileExtent],
    start: u64,
    end: u64,
    range_start: u64,
    base: u64,
    span: &DiskSpan,
) -> Result<Plan, String> {
    let lbs = span.logical_block.max(1);
    let mut p = Plan::default();
    let mut pos = start;
    for e in extents {
        let e_end = e.logical.checked_add(e.len).ok_or("an extent past 2^64")?;
        if e_end <= start || e.len == 0 {
            continue; // before the range (FIEMAP reports whole extents)
        }
        if e.logical >= end {
            break;
        }
        if e.logical < pos && pos > start {
            return Err(format!(
                "FIEMAP returned overlapping extents at {}",
                e.logical
            ));
        }
        if e.logical > pos {
            p.zero.push((pos, e.logical));
            pos = e.logical;
        }
        let (a, b) = (pos, e_end.min(end));
        if e.flags & (NOT_PLAIN | !ACCEPTED) != 0 {
            return Err(format!(
                "the extent at file offset {} has FIEMAP flags {:#x} (delalloc, encoded, \
                 encrypted, inline, tail or unknown): its bytes are not plainly in its blocks",
                e.logical, e.flags
            ));
        }
        if e.flags & fiemap::FIEMAP_EXTENT_UNWRITTEN != 0 {
            // Allocated, never written: reads as zeros, whatever the blocks hold.
            p.zero.push((a, b));
        } else {
            let phys = e.physical + (a - e.logical);
            let len = b - a;
            if phys.checked_add(len).is_none_or(|x| x > span.len) {
                return Err(format!(
                    "the extent at file offset {} lies outside the partition ({phys}+{len} > {})",
                    e.logical, span.len
                ));
            }
            let dev_off = span.start + phys;
            if dev_off % lbs != 0 || len % lbs != 0 {
                return Err(format!(
                    "the extent at file offset {} is not in whole {lbs}-byte device blocks",
                    e.logical
                ));
            }
            p.reads.push(Extent {
                buf_off: base + (a - range_start),
                dev_off,
                len,
            });
        }
        pos = b;
        if pos >= end {
            break;
        }
    }
    if pos < end {
        p.zero.push((pos, end));
    }
    Ok(p)
}

/// The namespace opened read-only, O_DIRECT (the series needs it), checked to be the device
/// the allowlist entry named when [`locate`] looked.
fn open_namespace(ns: &Namespace) -> Result<OwnedFd, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&ns.path)
        .map_err(|e| format!("opening {} O_DIRECT: {e}", ns.path.display()))?;
    let st = fstat(f.as_raw_fd()).map_err(|e| format!("fstat {}: {e}", ns.path.display()))?;
    if st.st_rdev != ns.span.disk_dev {
        return Err(format!(
            "{} is no longer {}",
            ns.path.display(),
            ns.span.disk
        ));
    }
    Ok(OwnedFd::from(f))
}

/// Everything [`attempt`] needs besides the source.
pub(super) struct Dest<'a> {
    pub dmabuf: BorrowedFd<'a>,
    /// Where the range's first byte lands in the dma-buf, and the dma-buf's whole size.
    pub base: u64,
    pub whole: u64,
    pub heap: &'a str,
    /// The path a refusal steps down to.
    pub fallback: IoPath,
}

/// The extent route's load of `body` (the block-aligned part of the range, on the file's
/// O_DIRECT reopen `body.fd`); see the module docs for the order of the checks.
pub(super) fn attempt(
    ns: &Namespace,
    src: &Source,
    body: DirectBody,
    dest: &Dest<'_>,
    p: ReadParams,
    note: Option<String>,
    progress: &mut Progress<'_, '_>,
) -> Result<Done, Attempt> {
    let fallback = |why: String| Attempt::Fallback {
        why,
        to: Some(dest.fallback),
    };
    let changed = |what: String| {
        Attempt::Fatal(LoadError::msg(
            ErrorKind::FileChanged,
            format!(
                "{} changed during the load ({what}): what was read from {} is discarded",
                src.path, ns.span.disk
            ),
        ))
    };
    let shrank = |size: i64| {
        Attempt::Fatal(LoadError::msg(
            ErrorKind::FileChanged,
            format!(
                "{} shrank to {size} bytes during the load (range ends at {})",
                src.path,
                src.end()
            ),
        ))
    };
    let fd = body.fd.as_fd();
    let dev = open_namespace(ns).map_err(fallback)?;
    // 2. S1, then the clock: S1's ctime must be older than the current tick.
    let s1 = Version::of(fd).map_err(fallback)?;
    if (s1.dev, s1.ino) != (src.dev, src.ino) {
        return Err(fallback("the O_DIRECT reopen is not the same inode".into()));
    }
    if (s1.size as u64) < src.end() {
        return Err(shrank(s1.size));
    }
    let now = statx::coarse_realtime().map_err(|e| fallback(format!("clock_gettime: {e}")))?;
    if s1.ctime >= now {
        return Err(fallback(format!(
            "{} changed in the current clock tick (ctime {}.{:09} >= coarse clock {}.{:09}): \
             a further change in this tick could leave ctime as it is",
            src.path, s1.ctime.0, s1.ctime.1, now.0, now.1
        )));
    }
    // 3. The barrier, then E1 (FIEMAP_FLAG_SYNC writes dirty pages back first).
    barrier(fd, body.start).map_err(fallback)?;
    let len = body.end - body.start;
    let e1 = fiemap::map(fd, body.start, len, fiemap::FIEMAP_FLAG_SYNC)
        .map_err(|e| fallback(format!("FIEMAP: {e}")))?;
    let plan =
        plan(&e1, body.start, body.end, src.offset, dest.base, &ns.span).map_err(fallback)?;
    // 4. The reads, the head and tail through the file.
    fill(
        dest.dmabuf,
        dest.whole,
        dev.as_fd(),
        &plan.reads,
        ReadParams {
            block: ns.span.logical_block,
            ..p
        },
        &mut |n| progress.add(n),
    )
    .map_err(|e| match e {
        FillError::Register(err) => fallback(format!(
            "io_uring refused to register the {} dma-buf for {} ({err})",
            dest.heap,
            ns.path.display()
        )),
        FillError::Refused { errno, dev_off } => fallback(format!(
            "READ_FIXED from {} into the registered dma-buf was refused at offset {dev_off} ({errno})",
            ns.span.disk
        )),
        FillError::Io { errno, dev_off } => Attempt::Fatal(LoadError::msg(
            ErrorKind::Io,
            format!(
                "reading {} (its blocks at {dev_off} of {}): {errno}",
                src.path, ns.span.disk
            ),
        )),
        FillError::Eof { dev_off } => Attempt::Fatal(LoadError::msg(
            ErrorKind::Io,
            format!("{} ended at {dev_off}, inside the partition", ns.span.disk),
        )),
        FillError::Stopped(e) => Attempt::Fatal(e),
        FillError::Ring(e) => fallback(format!("io_uring failed: {e}")),
        FillError::Abandoned(what) => Attempt::Fatal(LoadError::msg(
            ErrorKind::Io,
            format!("reading {} from {}: {what}", src.path, ns.span.disk),
        )),
    })?;
    drop(dev);
    let mut copies = Vec::new();
    for (a, b) in [(src.offset, body.start), (body.end, src.end())] {
        if a < b {
            let bytes = read_unaligned(src, fd, body.offset_align, body.mem_align, a, b)
                .map_err(Attempt::Fatal)?;
            progress.add(b - a).map_err(Attempt::Fatal)?;
            copies.push((a, bytes));
        }
    }
    // 5. E2, the barrier, S2: unchanged, or nothing is handed out.
    let e2 = fiemap::map(fd, body.start, len, fiemap::FIEMAP_FLAG_SYNC)
        .map_err(|e| changed(format!("FIEMAP after the reads failed: {e}")))?;
    barrier(fd, body.start).map_err(changed)?;
    let s2 = Version::of(fd).map_err(changed)?;
    if (s2.size as u64) < src.end() {
        return Err(shrank(s2.size));
    }
    if s2 != s1 {
        return Err(changed(format!(
            "size {} -> {}, mtime {:?} -> {:?}, ctime {:?} -> {:?}",
            s1.size, s2.size, s1.mtime, s2.mtime, s1.ctime, s2.ctime
        )));
    }
    if e2 != e1 {
        return Err(changed(format!(
            "its extents moved: {} before the reads, {} after",
            e1.len(),
            e2.len()
        )));
    }
    let zero_bytes: u64 = plan.zero.iter().map(|(a, b)| b - a).sum();
    progress.add(zero_bytes).map_err(Attempt::Fatal)?;
    let read: u64 = plan.reads.iter().map(|r| r.len).sum();
    let what = format!(
        "the file's blocks read from {} ({} extents, {read} bytes; {zero_bytes} bytes of holes \
         or unwritten extents as zeros), file unchanged during the reads",
        ns.span.disk,
        plan.reads.len()
    );
    Ok(Done {
        path: IoPath::DmabufRegistered,
        note: Some(match note {
            Some(n) => format!("{n}; {what}"),
            None => what,
        }),
        zero: plan.zero,
        copies,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fiemap::{FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_SHARED, FIEMAP_EXTENT_UNWRITTEN};

    fn span() -> DiskSpan {
        DiskSpan {
            disk: "nvme0n1".into(),
            disk_dev: 0,
            driver: Driver::NvmePci,
            start: 1 << 20,
            len: 1 << 30,
            logical_block: 512,
        }
    }

    fn ext(logical: u64, physical: u64, len: u64, flags: u32) -> FileExtent {
        FileExtent {
            logical,
            physical,
            len,
            flags,
        }
    }

    #[test]
    fn holes_and_unwritten_extents_become_zero_ranges_and_data_lands_at_its_offset() {
        const K: u64 = 4096;
        let e = [
            ext(0, 100 * K, 4 * K, 0),
            // hole 4K..8K
            ext(8 * K, 300 * K, 2 * K, FIEMAP_EXTENT_UNWRITTEN),
            ext(
                10 * K,
                500 * K,
                6 * K,
                FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_LAST,
            ),
        ];
        // Body [K, 20K) of a range starting at 512, landing at dma-buf offset 8192.
        let p = plan(&e, K, 20 * K, 512, 8192, &span()).unwrap();
        let s = 1 << 20;
        assert_eq!(
            p.reads,
            vec![
                Extent {
                    buf_off: 8192 + K - 512,
                    dev_off: s + 101 * K,
                    len: 3 * K
                },
                Extent {
                    buf_off: 8192 + 10 * K - 512,
                    dev_off: s + 500 * K,
                    len: 6 * K
                },
            ]
        );
        assert_eq!(
            p.zero,
            vec![(4 * K, 8 * K), (8 * K, 10 * K), (16 * K, 20 * K)]
        );
    }

    #[test]
    fn extents_that_are_not_plain_or_outside_the_partition_are_refused() {
        for flags in [
            fiemap::FIEMAP_EXTENT_DELALLOC,
            fiemap::FIEMAP_EXTENT_ENCODED,
            fiemap::FIEMAP_EXTENT_DATA_ENCRYPTED,
            fiemap::FIEMAP_EXTENT_DATA_INLINE,
            fiemap::FIEMAP_EXTENT_NOT_ALIGNED,
            fiemap::FIEMAP_EXTENT_UNKNOWN | fiemap::FIEMAP_EXTENT_DELALLOC,
        ] {
            let e = plan(&[ext(0, 0, 8192, flags)], 0, 8192, 0, 0, &span()).unwrap_err();
            assert!(e.contains("not plainly"), "{flags:#x}: {e}");
        }
        let e = plan(&[ext(0, (1 << 30) - 4096, 8192, 0)], 0, 8192, 0, 0, &span()).unwrap_err();
        assert!(e.contains("outside the partition"), "{e}");
        let mut odd = span();
        odd.logical_block = 4096;
        odd.start = 512;
        let e = plan(&[ext(0, 0, 8192, 0)], 0, 8192, 0, 0, &odd).unwrap_err();
        assert!(e.contains("device blocks"), "{e}");
    }

    #[test]
    fn a_range_past_the_last_extent_is_zeros_and_an_empty_map_is_all_hole() {
        let p = plan(&[], 0, 1 << 20, 0, 0, &span()).unwrap();
        assert_eq!(p.zero, vec![(0, 1 << 20)]);
        assert!(p.reads.is_empty());
        // An extent starting before the range is clipped to it.
        let p = plan(&[ext(0, 0, 1 << 20, 0)], 4096, 8192, 4096, 0, &span()).unwrap();
        assert_eq!(
            p.reads,
            vec![Extent {
                buf_off: 0,
                dev_off: (1 << 20) + 4096,
                len: 4096
            }]
        );
        assert!(p.zero.is_empty());
    }

    #[test]
    fn journaled_mounts_are_found_in_mountinfo() {
        // This process's own mounts: no real file system here is data=journal.
        let st = nix::sys::stat::stat("/").unwrap();
        assert_eq!(journaled_mount(st.st_dev), None);
    }
}
