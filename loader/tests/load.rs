//! End-to-end tests of the engine on this machine's providers (memfd here; the VM run
//! covers udmabuf/dma-heap). Every test takes one lock: fd-leak checks count
//! /proc/self/fd, which must not change under them.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use dmabuf_loader::*;

mod common;
use common::*;

/// The buffer's bytes, through a read-only shared mapping (dma-bufs have no read(2)).
fn read_back(fd: &OwnedFd, size: u64) -> Vec<u8> {
    dmabuf_loader::BufferView::map(fd, size as usize)
        .unwrap()
        .as_slice()
        .to_vec()
}

/// Loads and checks: exact bytes, zero padding, sizes.
fn check_load(loader: &Loader, path: &Path, data: &[u8], off: u64, len: Option<u64>) -> Loaded {
    let f = File::open(path).unwrap();
    let req = LoadRequest {
        offset: off,
        length: len,
        checksum: ChecksumType::Xxh3_64,
        ..Default::default()
    };
    let l = loader
        .load(f.as_fd(), &req, &LoadControl::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want = &data[off as usize..len.map(|l| (off + l) as usize).unwrap_or(data.len())];
    assert_eq!(l.data_len, want.len() as u64);
    assert_eq!(
        l.buffer_size,
        (want.len() as u64).div_ceil(4096).max(1) * 4096
    );
    let got = read_back(&l.fd, l.buffer_size);
    assert!(
        got[..want.len()] == *want,
        "data differs ({:?}, off {off}, len {})",
        l.io_path,
        want.len()
    );
    assert!(
        got[want.len()..].iter().all(|&b| b == 0),
        "padding not zero"
    );
    assert_eq!(
        l.checksum,
        Some((ChecksumType::Xxh3_64, twox_hash::XxHash3_64::oneshot(want)))
    );
    assert!(loader
        .heaps()
        .iter()
        .any(|h| h.name == l.heap && h.kind == l.kind));
    l
}

/// The path a forced `p` should end on for this buffer: PFNMAP heap pages only take copies.
fn on_heap(l: &Loaded, p: IoPath) -> IoPath {
    match (l.kind, p) {
        (BufferKind::DmaHeap, IoPath::DirectRegistered | IoPath::Direct) => IoPath::Buffered,
        _ => p,
    }
}

/// (offset, memory) alignment O_DIRECT needs for this file.
fn dio_align(path: &Path) -> (u64, u64) {
    let f = File::open(path).unwrap();
    dmabuf_loader::dio_align(&f)
        .unwrap()
        .map(|a| (a.offset as u64, a.mem as u64))
        .unwrap_or((4096, 4096))
}

fn dio_offset_align(path: &Path) -> u64 {
    dio_align(path).0
}

/// Whether the engine can read `len` bytes at `off` with O_DIRECT straight into its buffer
/// (a block-aligned body exists and lands on memory O_DIRECT accepts).
fn direct_possible(path: &Path, off: u64, len: u64) -> bool {
    let (oa, ma) = dio_align(path);
    let body = off.next_multiple_of(oa);
    body < (off + len) / oa * oa && (body - off) % ma == 0
}

const SIZES: &[usize] = &[0, 1, 4095, 4096, 4097, (1 << 20) + 1, (64 << 20) + 123];
const PATHS: &[IoPath] = &[
    IoPath::DirectRegistered,
    IoPath::Direct,
    IoPath::Buffered,
    IoPath::BufferedSync,
];

#[test]
fn every_size_on_every_path_gives_identical_bytes() {
    let _g = lock();
    let scratch = scratch_dir();
    let before = fd_count();
    for (i, &size) in SIZES.iter().enumerate() {
        let data = pattern(size, i as u64 + 7);
        let path = write_file(scratch.path(), &format!("size-{size}"), &data);
        let oa = dio_offset_align(&path);
        for &p in PATHS {
            let loader = loader_with(|c| c.force_io_path = Some(p));
            let l = check_load(&loader, &path, &data, 0, None);
            let expect = match (size, p) {
                (0, _) => IoPath::None,
                // Smaller than one O_DIRECT block: the direct paths hand over to buffered.
                (s, IoPath::DirectRegistered | IoPath::Direct) if (s as u64) < oa => {
                    IoPath::Buffered
                }
                _ => on_heap(&l, p),
            };
            assert_eq!(
                l.io_path, expect,
                "size {size} forced {p:?}: {}",
                l.io_path_reason
            );
        }
        std::fs::remove_file(path).unwrap();
    }
    assert_eq!(fd_count(), before, "fd leak");
}

#[test]
fn ranges_and_unaligned_offsets() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern((8 << 20) + 777, 99);
    let path = write_file(scratch.path(), "ranges", &data);
    let cases: &[(u64, Option<u64>)] = &[
        (0, Some(1)),
        (1, None),
        (1, Some(4096)),
        (511, Some(3 << 20)),
        (512, Some((2 << 20) + 5)),
        (4095, Some(8192)),
        (4096, None),
        (12345, Some(5 << 20)),
        ((8 << 20) + 776, Some(1)),
        ((8 << 20) + 777, None),
        ((8 << 20) + 777, Some(0)),
    ];
    for &p in PATHS {
        let loader = loader_with(|c| c.force_io_path = Some(p));
        for &(off, len) in cases {
            let l = check_load(&loader, &path, &data, off, len);
            let len = len.unwrap_or(data.len() as u64 - off);
            if len == 0 {
                assert_eq!(l.io_path, IoPath::None);
            } else if p == IoPath::Direct && l.kind != BufferKind::DmaHeap {
                if direct_possible(&path, off, len) {
                    assert_eq!(
                        l.io_path,
                        IoPath::Direct,
                        "off {off} len {len}: {}",
                        l.io_path_reason
                    );
                } else {
                    // No aligned body, or it would land on memory O_DIRECT cannot target.
                    assert_eq!(
                        l.io_path,
                        IoPath::Buffered,
                        "off {off} len {len}: {}",
                        l.io_path_reason
                    );
                }
            }
        }
    }
    // Default (auto) path on a cold-ish file.
    let loader = Loader::new(Config::default()).unwrap();
    for &(off, len) in cases {
        check_load(&loader, &path, &data, off, len);
    }
}

#[test]
fn direct_path_is_used_on_disk_and_refused_on_tmpfs() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(3 << 20, 5);
    let path = write_file(scratch.path(), "direct", &data);
    let loader = loader_with(|c| {
        c.force_io_path = Some(IoPath::DirectRegistered);
    });
    let l = check_load(&loader, &path, &data, 0, None);
    assert_eq!(l.io_path, IoPath::DirectRegistered, "{}", l.io_path_reason);

    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let nix_fs = nix::sys::statfs::statfs(shm.path()).unwrap();
    assert_eq!(
        nix_fs.filesystem_type(),
        nix::sys::statfs::TMPFS_MAGIC,
        "/dev/shm must be tmpfs for this test"
    );
    let tpath = write_file(shm.path(), "tmpfs-file", &data);
    let tmpfs_odirect = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&tpath)
        .is_ok();
    for &p in PATHS {
        let l = check_load(
            &loader_with(|c| c.force_io_path = Some(p)),
            &tpath,
            &data,
            0,
            None,
        );
        if !tmpfs_odirect && matches!(p, IoPath::DirectRegistered | IoPath::Direct) {
            // tmpfs before 6.6 refuses O_DIRECT: the chain falls back to buffered.
            assert_eq!(l.io_path, IoPath::Buffered);
            assert!(
                l.io_path_reason.contains("refused O_DIRECT"),
                "reason: {}",
                l.io_path_reason
            );
        }
    }
    // The auto choice: tmpfs data always sits in the page cache, so the copy path is chosen
    // (and it is the only one on kernels where tmpfs refuses O_DIRECT).
    let l = check_load(
        &Loader::new(Config::default()).unwrap(),
        &tpath,
        &data,
        100,
        Some(1 << 20),
    );
    assert_eq!(l.io_path, IoPath::Buffered, "{}", l.io_path_reason);
}

#[test]
fn cached_range_takes_the_buffered_path() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(4 << 20, 11);
    let path = write_file(scratch.path(), "cached", &data);
    let loader = Loader::new(Config::default()).unwrap();
    assert!(loader.capabilities().cachestat, "kernel 6.5+ has cachestat");
    // write_all left it in the page cache.
    let l = check_load(&loader, &path, &data, 0, None);
    assert_eq!(l.io_path, IoPath::Buffered, "{}", l.io_path_reason);
    assert!(l.io_path_reason.contains("page cache"));
    // Dropped from the cache: direct.
    let f = File::open(&path).unwrap();
    nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
    let l = check_load(&loader, &path, &data, 0, None);
    assert_eq!(l.io_path, IoPath::DirectRegistered, "{}", l.io_path_reason);
}

fn expect_err(loader: &Loader, fd: impl AsFd, req: &LoadRequest) -> LoadError {
    let before = fd_count();
    let e = loader
        .load(fd.as_fd(), req, &LoadControl::default())
        .expect_err("must fail");
    assert_eq!(fd_count(), before, "fd leak on error {e}");
    e
}

fn source_error(e: &LoadError) -> SourceError {
    *e.source
        .downcast_ref::<SourceError>()
        .unwrap_or_else(|| panic!("not a SourceError: {e:#}"))
}

#[test]
fn bad_sources_each_get_their_own_error() {
    let _g = lock();
    let scratch = scratch_dir();
    let loader = Loader::new(Config::default()).unwrap();
    let req = LoadRequest::default();
    let data = pattern(10000, 3);
    let path = write_file(scratch.path(), "bad-sources", &data);

    let o_path = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&path)
        .unwrap();
    let e = expect_err(&loader, &o_path, &req);
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::PathOnlyFd, SourceError::PathOnly)
    );

    let wo = OpenOptions::new().write(true).open(&path).unwrap();
    let e = expect_err(&loader, &wo, &req);
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::NotReadable, SourceError::WriteOnly)
    );

    let (r, _w) = nix::unistd::pipe().unwrap();
    let e = expect_err(&loader, &r, &req);
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::UnsupportedFileType, SourceError::Pipe)
    );

    let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = expect_err(&loader, &s1, &req);
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::UnsupportedFileType, SourceError::Socket)
    );

    let dir = File::open(scratch.path()).unwrap();
    let e = expect_err(&loader, &dir, &req);
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::UnsupportedFileType, SourceError::Directory)
    );

    let null = File::open("/dev/null").unwrap();
    let e = expect_err(&loader, &null, &req);
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::UnsupportedFileType, SourceError::CharDevice)
    );
    assert!(format!("{e}").contains("/dev/null"), "{e}");

    // Regular files on pseudo file systems: size 0 (procfs) or 4096 (sysfs) whatever they hold.
    for (pseudo, fs) in [
        ("/proc/self/status", "procfs"),
        ("/sys/kernel/mm/transparent_hugepage/enabled", "sysfs"),
    ] {
        let Ok(f) = File::open(pseudo) else { continue };
        let e = expect_err(&loader, &f, &req);
        assert_eq!(
            (e.kind, source_error(&e)),
            (
                ErrorKind::UnsupportedFileType,
                SourceError::PseudoFileSystem
            ),
            "{pseudo}"
        );
        assert!(format!("{e:#}").contains(fs), "{e:#}");
    }
    // A genuinely empty regular file is not one of them: it loads, as 0 bytes.
    let empty = write_file(scratch.path(), "empty", &[]);
    let l = loader
        .load(
            File::open(&empty).unwrap().as_fd(),
            &req,
            &LoadControl::default(),
        )
        .expect("an empty regular file loads");
    assert_eq!(l.data_len, 0);

    // A closed fd number.
    let closed = File::open(&path).unwrap();
    let raw = closed.as_raw_fd();
    drop(closed);
    // SAFETY: only used to ask fcntl about a number that is not open.
    let stale = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    let e = loader.prepare(stale, &req).expect_err("closed fd");
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::BadFd, SourceError::Closed)
    );

    let f = File::open(&path).unwrap();
    let r = |offset, length| LoadRequest {
        offset,
        length,
        ..Default::default()
    };
    let e = expect_err(&loader, &f, &r(10001, None));
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::InvalidRange, SourceError::OffsetPastEnd)
    );
    let e = expect_err(&loader, &f, &r(5000, Some(5001)));
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::InvalidRange, SourceError::RangePastEnd)
    );
    let e = expect_err(&loader, &f, &r(5000, Some(u64::MAX)));
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::InvalidRange, SourceError::RangeOverflow)
    );
    let small = loader_with(|c| c.max_load_bytes = 4096);
    let e = expect_err(&small, &f, &r(0, None));
    assert_eq!(
        (e.kind, source_error(&e)),
        (ErrorKind::TooLarge, SourceError::TooLarge)
    );
    let e = expect_err(
        &loader,
        &f,
        &LoadRequest {
            heap: Some("nope".into()),
            ..Default::default()
        },
    );
    assert_eq!(e.kind, ErrorKind::UnknownHeap);
}

#[test]
fn client_file_description_is_untouched() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(1 << 20, 8);
    let path = write_file(scratch.path(), "untouched", &data);
    let mut f = File::open(&path).unwrap();
    f.seek(SeekFrom::Start(123)).unwrap();
    let flags = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    for &p in PATHS {
        let loader = loader_with(|c| c.force_io_path = Some(p));
        loader
            .load(f.as_fd(), &LoadRequest::default(), &LoadControl::default())
            .unwrap();
        assert_eq!(
            nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap(),
            flags
        );
        assert_eq!(f.stream_position().unwrap(), 123);
    }
}

#[test]
fn read_only_memfd_cannot_be_mapped_writable() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(100_000, 4);
    let path = write_file(scratch.path(), "ro", &data);
    let loader = Loader::new(Config::default()).unwrap();
    let f = File::open(&path).unwrap();
    let l = loader
        .load(
            f.as_fd(),
            &LoadRequest {
                read_only: true,
                heap: Some("memfd".into()),
                ..Default::default()
            },
            &LoadControl::default(),
        )
        .unwrap();
    assert_eq!(read_back(&l.fd, l.buffer_size)[..data.len()], data[..]);
    let fl = nix::fcntl::fcntl(l.fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(fl & libc::O_ACCMODE, libc::O_RDONLY);
    let len = std::num::NonZeroUsize::new(l.buffer_size as usize).unwrap();
    use nix::sys::mman::{mmap, MapFlags, ProtFlags};
    // SAFETY: a fresh mapping request; if it (wrongly) succeeded we leak it, nothing aliases.
    let w = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &l.fd,
            0,
        )
    };
    assert!(
        w.is_err(),
        "writable shared mapping of a read-only buffer succeeded"
    );
    // The seal also stops writes through any other description of the memfd.
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", l.fd.as_raw_fd()));
    if let Ok(rw) = rw {
        assert!(
            rw.write_at(b"x", 0).is_err(),
            "write to a sealed buffer succeeded"
        );
    }
}

/// Open memfds created with `name` (their /proc/self/fd link is "/memfd:<name> (deleted)").
fn memfds_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains(&format!("memfd:{name}")))
        .count()
}

fn maps_named(name: &str) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(name))
        .count()
}

#[test]
fn cancellation_mid_load_frees_everything() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(64 << 20, 21);
    let path = write_file(scratch.path(), "cancel-me", &data);
    for &p in PATHS {
        let loader = loader_with(|c| c.force_io_path = Some(p));
        let f = File::open(&path).unwrap();
        let before = fd_count();
        let token = CancelToken::new();
        let tok = token.clone();
        let seen_memfd = std::sync::atomic::AtomicUsize::new(0);
        let cb = |done: u64, _total: u64| {
            if done >= 4 << 20 && !tok.is_cancelled() {
                seen_memfd.store(
                    memfds_named("cancel-me-buf"),
                    std::sync::atomic::Ordering::SeqCst,
                );
                tok.cancel();
            }
        };
        let ctl = LoadControl {
            cancel: token.clone(),
            deadline: None,
            progress: Some(&cb),
        };
        let req = LoadRequest {
            name: Some("cancel-me-buf".into()),
            ..Default::default()
        };
        let e = loader.load(f.as_fd(), &req, &ctl).expect_err("cancelled");
        assert_eq!(e.kind, ErrorKind::Cancelled, "{p:?}: {e}");
        assert_eq!(
            seen_memfd.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the buffer existed while loading"
        );
        assert_eq!(
            memfds_named("cancel-me-buf"),
            0,
            "memfd still open after cancel"
        );
        assert_eq!(
            maps_named("cancel-me-buf"),
            0,
            "buffer still mapped after cancel"
        );
        assert_eq!(fd_count(), before, "fd leak after cancel ({p:?})");
    }
    // A deadline in the past fails before any work.
    let loader = Loader::new(Config::default()).unwrap();
    let f = File::open(&path).unwrap();
    let ctl = LoadControl {
        deadline: Some(Instant::now() - Duration::from_millis(1)),
        ..Default::default()
    };
    assert_eq!(
        loader
            .load(f.as_fd(), &LoadRequest::default(), &ctl)
            .unwrap_err()
            .kind,
        ErrorKind::TimedOut
    );
}

#[test]
fn truncated_during_load_is_an_error_never_garbage() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(64 << 20, 31);
    for &p in PATHS {
        let path = write_file(scratch.path(), "shrinks", &data);
        let loader = loader_with(|c| c.force_io_path = Some(p));
        let f = File::open(&path).unwrap();
        let victim = OpenOptions::new().write(true).open(&path).unwrap();
        let cb = |done: u64, _t: u64| {
            if done >= 1 << 20 {
                victim.set_len(2 << 20).unwrap();
            }
        };
        let ctl = LoadControl {
            progress: Some(&cb),
            ..Default::default()
        };
        match loader.load(f.as_fd(), &LoadRequest::default(), &ctl) {
            Err(e) => assert_eq!(e.kind, ErrorKind::FileChanged, "{p:?}: {e}"),
            Ok(l) => panic!(
                "{p:?}: truncated file loaded as {} bytes via {:?}",
                l.data_len, l.io_path
            ),
        }
    }
    // Progress is monotonic and ends at the total.
    let path = write_file(scratch.path(), "progress", &data[..(5 << 20) + 3]);
    let last = std::sync::Mutex::new((0u64, 0u64));
    let cb = |d: u64, t: u64| {
        let mut g = last.lock().unwrap();
        assert!(d >= g.0, "progress went backwards");
        *g = (d, t);
    };
    let f = File::open(&path).unwrap();
    let ctl = LoadControl {
        progress: Some(&cb),
        ..Default::default()
    };
    Loader::new(Config::default())
        .unwrap()
        .load(f.as_fd(), &LoadRequest::default(), &ctl)
        .unwrap();
    assert_eq!(*last.lock().unwrap(), ((5 << 20) + 3, (5 << 20) + 3));
}

/// userfaultfd(2) pieces for [`write_in_progress_is_waited_for_by_every_path`]
/// (linux/userfaultfd.h; the libc crate has only the syscall number).
mod uffd {
    #[repr(C)]
    pub struct Api {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Register {
        pub start: u64,
        pub len: u64,
        pub mode: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Copy {
        pub dst: u64,
        pub src: u64,
        pub len: u64,
        pub mode: u64,
        pub copy: i64,
    }
    nix::ioctl_readwrite!(api, 0xAA, 0x3F, Api);
    nix::ioctl_readwrite!(register, 0xAA, 0x00, Register);
    nix::ioctl_readwrite!(copy, 0xAA, 0x03, Copy);
    pub const UFFD_API: u64 = 0xAA;
    pub const MODE_MISSING: u64 = 1;
    pub const EVENT_PAGEFAULT: u8 = 0x12;
}

/// A write(2) that began before the load and is still copying (it set ctime when it began,
/// and holds the inode lock) must be finished before the reads: else the load hands out the
/// part it has written next to old bytes, and the stamps after the reads still match (the
/// write changes ctime once). The writer here stalls half-way on a userfaultfd page of its
/// source buffer, with the first 64 KiB of the file new and the next 64 KiB old; each path
/// (the small path included) loads 64 KiB across that line while a helper lets the write
/// finish 300 ms later: all new bytes, all old, or FILE_CHANGED, never the mix.
#[test]
fn write_in_progress_is_waited_for_by_every_path() {
    use std::os::fd::FromRawFd;
    let _g = lock();
    let scratch = scratch_dir();
    const HALF: usize = 64 << 10;
    let (old, new) = (0xAAu8, 0xBBu8);
    for p in std::iter::once(None).chain(PATHS.iter().copied().map(Some)) {
        let path = write_file(scratch.path(), "in-progress", &vec![old; 2 * HALF]);
        // SAFETY: userfaultfd takes flags only and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        if raw < 0 {
            eprintln!(
                "skipped: userfaultfd: {} (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd)",
                std::io::Error::last_os_error()
            );
            return;
        }
        // SAFETY: a fresh fd owned by nothing else.
        let ufd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let mut a = uffd::Api {
            api: uffd::UFFD_API,
            features: 0,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes the struct we pass.
        unsafe { uffd::api(ufd.as_raw_fd(), &mut a) }.expect("UFFDIO_API");
        // The writer's source: first half written (present), second half missing.
        let src = nix::sys::mman::MapFlags::MAP_PRIVATE | nix::sys::mman::MapFlags::MAP_ANONYMOUS;
        // SAFETY: a fresh anonymous mapping; unmapped at the end of the iteration, after the
        // writer and the helper are joined.
        let buf = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                std::num::NonZeroUsize::new(2 * HALF).unwrap(),
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                src,
            )
        }
        .unwrap();
        let base = buf.as_ptr() as u64;
        // SAFETY: the first half of the mapping just made, writable.
        unsafe { std::ptr::write_bytes(buf.as_ptr().cast::<u8>(), new, HALF) };
        let mut reg = uffd::Register {
            start: base + HALF as u64,
            len: HALF as u64,
            mode: uffd::MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes the struct; the range is ours.
        unsafe { uffd::register(ufd.as_raw_fd(), &mut reg) }.expect("UFFDIO_REGISTER");
        let writer = OpenOptions::new().write(true).open(&path).unwrap();
        let fill = vec![new; HALF];
        std::thread::scope(|s| {
            let w = s.spawn(|| {
                // SAFETY: the whole mapping, valid until after this thread is joined.
                let all = unsafe { std::slice::from_raw_parts(base as *const u8, 2 * HALF) };
                writer.write_all_at(all, 0).unwrap();
            });
            // The writer is stalled once its fault on the second half is reported.
            let mut msg = [0u8; 32];
            assert_eq!(nix::unistd::read(ufd.as_raw_fd(), &mut msg).unwrap(), 32);
            assert_eq!(msg[0], uffd::EVENT_PAGEFAULT);
            let mut now = vec![0u8; 2 * HALF];
            File::open(&path)
                .unwrap()
                .read_exact_at(&mut now, 0)
                .unwrap();
            assert!(
                now[..HALF].iter().all(|&b| b == new) && now[HALF..].iter().all(|&b| b == old),
                "the stalled write did not leave the first half new and the second old"
            );
            std::thread::sleep(Duration::from_millis(20)); // out of the write's clock tick
            let helper = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                let mut c = uffd::Copy {
                    dst: base + HALF as u64,
                    src: fill.as_ptr() as u64,
                    len: HALF as u64,
                    mode: 0,
                    copy: 0,
                };
                // SAFETY: UFFDIO_COPY copies `len` bytes from `fill` (alive until joined) into
                // the registered, still missing range and wakes the writer.
                unsafe { uffd::copy(ufd.as_raw_fd(), &mut c) }.expect("UFFDIO_COPY");
            });
            let loader = loader_with(|c| c.force_io_path = p);
            let req = LoadRequest {
                offset: (HALF / 2) as u64,
                length: Some(HALF as u64),
                ..Default::default()
            };
            let r = loader.load(
                File::open(&path).unwrap().as_fd(),
                &req,
                &LoadControl::default(),
            );
            helper.join().unwrap();
            w.join().unwrap();
            match r {
                Err(e) => assert_eq!(e.kind, ErrorKind::FileChanged, "{p:?}: {e:#}"),
                Ok(l) => {
                    let got = read_back(&l.fd, l.buffer_size);
                    let got = &got[..HALF];
                    assert!(
                        got.iter().all(|&b| b == new) || got.iter().all(|&b| b == old),
                        "{p:?} ({:?}, {}): a write in progress was handed out half done: {} new \
                         bytes then {} old",
                        l.io_path,
                        l.io_path_reason,
                        got.iter().take_while(|&&b| b == new).count(),
                        got.iter()
                            .skip_while(|&&b| b == new)
                            .filter(|&&b| b == old)
                            .count()
                    );
                }
            }
        });
        // SAFETY: the mapping made above; nothing uses it any more (threads joined).
        unsafe { nix::sys::mman::munmap(buf, 2 * HALF) }.unwrap();
    }
}

/// A file appended to, or rewritten in place (same size) behind the reads, while it loads:
/// FILE_CHANGED on every path, never a buffer that mixes two versions (the stamps before and
/// after the reads differ); and a file written just before its load loads (the first stamp
/// waits out the clock tick it was written in).
#[test]
fn grown_or_rewritten_during_load_is_file_changed_never_a_mix() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(16 << 20, 37);
    for &p in PATHS {
        for how in ["append", "rewrite"] {
            let path = write_file(scratch.path(), "meddled", &data);
            let loader = loader_with(|c| c.force_io_path = Some(p));
            let f = File::open(&path).unwrap();
            let writer = OpenOptions::new().write(true).open(&path).unwrap();
            let meddled = std::sync::atomic::AtomicBool::new(false);
            let cb = |done: u64, _t: u64| {
                if done >= 1 << 20 && !meddled.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    use std::os::unix::fs::FileExt;
                    match how {
                        // Another writer appends 8 MiB while the load runs.
                        "append" => writer.write_all_at(&vec![0xAB; 8 << 20], data.len() as u64),
                        // ... or overwrites the first MiB, which has been read already.
                        _ => writer.write_all_at(&vec![0xCD; 1 << 20], 0),
                    }
                    .unwrap();
                }
            };
            let ctl = LoadControl {
                progress: Some(&cb),
                ..Default::default()
            };
            let r = loader.load(f.as_fd(), &LoadRequest::default(), &ctl);
            assert!(meddled.into_inner(), "{p:?} {how}: the callback never ran");
            match r {
                Err(e) => assert_eq!(e.kind, ErrorKind::FileChanged, "{p:?} {how}: {e:#}"),
                Ok(l) => panic!(
                    "{p:?} {how}: a file changed during its load was handed out ({:?}, {})",
                    l.io_path, l.io_path_reason
                ),
            }
        }
        // Written (ctime in this very clock tick) and loaded at once: loads, exactly.
        let path = write_file(scratch.path(), "fresh", &data[..(3 << 20) + 5]);
        let l = loader_with(|c| c.force_io_path = Some(p))
            .load(
                File::open(&path).unwrap().as_fd(),
                &LoadRequest::default(),
                &LoadControl::default(),
            )
            .unwrap_or_else(|e| panic!("{p:?}: a freshly written file: {e:#}"));
        assert!(
            read_back(&l.fd, l.buffer_size)[..l.data_len as usize] == data[..(3 << 20) + 5],
            "{p:?}: contents differ"
        );
    }
}

/// A file rewritten between the validation of the request (`prepare`: an async load waits
/// for its turn there) and the first read: FILE_CHANGED on every path, small ranges too,
/// never the new bytes under the old request.
#[test]
fn rewritten_between_prepare_and_the_reads_is_file_changed() {
    let _g = lock();
    let scratch = scratch_dir();
    for len in [4096usize, 3 << 20] {
        for &p in PATHS {
            let data = pattern(len, 41);
            let path = write_file(scratch.path(), "later", &data);
            let loader = loader_with(|c| c.force_io_path = Some(p));
            let f = File::open(&path).unwrap();
            let prepared = loader.prepare(f.as_fd(), &LoadRequest::default()).unwrap();
            std::os::unix::fs::FileExt::write_all_at(
                &OpenOptions::new().write(true).open(&path).unwrap(),
                &[0x11; 4096],
                0,
            )
            .unwrap();
            match loader.run(prepared, &LoadControl::default()) {
                Err(e) => assert_eq!(e.kind, ErrorKind::FileChanged, "{p:?} {len}: {e:#}"),
                Ok(l) => panic!("{p:?} {len}: loaded after a rewrite ({:?})", l.io_path),
            }
        }
    }
}

#[test]
fn capabilities_and_heaps_on_this_host() {
    let _g = lock();
    let loader = Loader::new(Config::default()).unwrap();
    let caps = loader.capabilities();
    assert!(!caps.kernel_release.is_empty());
    // Stock kernels do not have the io_uring dmabuf registered-buffer uAPI; the VM rig's seed
    // kernel does (its stage sets the variable; tests/dmabuf_registered.rs checks the detail).
    let expected = std::env::var("DMABUF_LOADER_EXPECT_DMABUF_REGBUF").is_ok_and(|v| v == "1");
    assert_eq!(caps.io_uring_dmabuf_regbuf, expected);
    let last = loader.heaps().last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.kind, last.is_dmabuf),
        ("memfd", BufferKind::Memfd, false)
    );
    // Heap dir pointed at an empty directory and no udmabuf: memfd is the default.
    let empty = tempfile::tempdir().unwrap();
    let l = loader_with(|c| {
        c.dma_heap_dir = empty.path().into();
        c.udmabuf_path = empty.path().join("udmabuf");
    });
    assert_eq!(l.heaps().len(), 1);
    assert_eq!(l.resolve_heap(Some("auto")).unwrap().name, "memfd");
    let none = Loader::new(Config {
        allowed_heaps: Some(vec!["system".into()]),
        dma_heap_dir: empty.path().into(),
        ..Default::default()
    });
    assert!(none.is_err());
}

/// Every provider this machine has (memfd on the host; udmabuf and the system heap too in
/// the tools/vm guest), on every path: exact bytes, the right kind, the name set, the memfd
/// of a udmabuf gone, no fd left behind.
#[test]
fn every_provider_on_this_machine() {
    let _g = lock();
    let scratch = scratch_dir();
    let loader = Loader::new(Config::default()).unwrap();
    let has_udmabuf = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/udmabuf")
        .is_ok();
    let has_system = File::open("/dev/dma_heap/system").is_ok();
    let names: Vec<&str> = loader.heaps().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names.contains(&"udmabuf"), has_udmabuf, "{names:?}");
    assert_eq!(names.contains(&"system"), has_system, "{names:?}");
    let want_default = if has_udmabuf {
        "udmabuf"
    } else if has_system {
        "system"
    } else {
        "memfd"
    };
    assert_eq!(loader.resolve_heap(None).unwrap().name, want_default);
    eprintln!("providers here: {names:?}");
    let limit = dmabuf_loader::udmabuf_size_limit();
    if let (true, Some(limit)) = (has_udmabuf, limit) {
        // Past udmabuf.size_limit_mb: `auto` moves on to the next heap, "udmabuf" says why not.
        let big = write_file(
            scratch.path(),
            "past-udmabuf-limit",
            &pattern(limit as usize + 1, 5),
        );
        let f = File::open(&big).unwrap();
        let p = loader.prepare(f.as_fd(), &LoadRequest::default()).unwrap();
        assert_ne!(p.heap().kind, BufferKind::Udmabuf);
        let named = LoadRequest {
            heap: Some("udmabuf".into()),
            ..Default::default()
        };
        assert_eq!(
            loader.prepare(f.as_fd(), &named).unwrap_err().kind,
            ErrorKind::TooLarge
        );
        std::fs::remove_file(big).unwrap();
    }

    let data = pattern((3 << 20) + 5, 77);
    let path = write_file(scratch.path(), "providers", &data);
    // 12: on NVMe (4-byte memory alignment) the body lands on O_DIRECT-able memory.
    let (off, want) = (12u64, &data[12..]);
    for h in loader.heaps() {
        for &p in PATHS {
            let forced = loader_with(|c| c.force_io_path = Some(p));
            let f = File::open(&path).unwrap();
            let before = fd_count();
            let req = LoadRequest {
                heap: Some(h.name.clone()),
                offset: off,
                name: Some("prov-test".into()),
                checksum: ChecksumType::Xxh3_64,
                ..Default::default()
            };
            let l = forced
                .load(f.as_fd(), &req, &LoadControl::default())
                .unwrap_or_else(|e| panic!("{} {p:?}: {e}", h.name));
            assert_eq!((l.kind, l.heap.as_str()), (h.kind, h.name.as_str()));
            assert_eq!(l.checksum.unwrap().1, twox_hash::XxHash3_64::oneshot(want));
            let m = dmabuf_loader::BufferView::map(&l.fd, l.buffer_size as usize).unwrap();
            assert!(
                m.as_slice()[..want.len()] == *want,
                "{} {p:?}: data differs",
                h.name
            );
            assert!(
                m.as_slice()[want.len()..].iter().all(|&b| b == 0),
                "{} {p:?}: padding",
                h.name
            );
            drop(m);
            if h.is_dmabuf {
                let info =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", l.fd.as_raw_fd()))
                        .unwrap();
                assert!(info.contains("exp_name:"), "not a dma-buf: {info}");
                assert!(
                    info.contains("prov-test"),
                    "DMA_BUF_SET_NAME missing: {info}"
                );
            }
            if h.kind == BufferKind::DmaHeap {
                // PFNMAP pages: whatever was forced, only the copy paths can fill them.
                assert!(
                    matches!(l.io_path, IoPath::Buffered | IoPath::BufferedSync),
                    "{:?}",
                    l.io_path
                );
            }
            if h.kind == BufferKind::Udmabuf {
                assert_eq!(
                    memfds_named("prov-test"),
                    0,
                    "the udmabuf's memfd must be closed"
                );
                if p == IoPath::Direct && direct_possible(&path, off, want.len() as u64) {
                    assert_eq!(l.io_path, IoPath::Direct, "{}", l.io_path_reason);
                }
            }
            drop(l);
            assert_eq!(fd_count(), before, "{} {p:?}: fd leak", h.name);
        }
        let f = File::open(&path).unwrap();
        let ro = LoadRequest {
            heap: Some(h.name.clone()),
            read_only: true,
            ..Default::default()
        };
        let r = loader.load(f.as_fd(), &ro, &LoadControl::default());
        if h.is_dmabuf {
            assert_eq!(r.unwrap_err().kind, ErrorKind::InvalidArgument);
        } else {
            assert!(r.is_ok());
        }
    }
}

/// With io_uring off (`sysctl kernel.io_uring_disabled=2`, as the VM run sets it for a second
/// pass) every load still works, on plain pread(); with it on, the io_uring paths run.
#[test]
fn io_uring_disabled_falls_back_to_pread() {
    let _g = lock();
    let scratch = scratch_dir();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() == "2")
        .unwrap_or(false);
    let loader = Loader::new(Config::default()).unwrap();
    assert_eq!(loader.capabilities().io_uring, !disabled);
    eprintln!("io_uring disabled by sysctl: {disabled}");
    let data = pattern((2 << 20) + 3, 41);
    let path = write_file(scratch.path(), "no-uring", &data);
    let before = fd_count();
    for p in [None, Some(IoPath::DirectRegistered), Some(IoPath::Buffered)] {
        let l = check_load(&loader_with(|c| c.force_io_path = p), &path, &data, 0, None);
        if disabled {
            assert_eq!(
                l.io_path,
                IoPath::BufferedSync,
                "{p:?}: {}",
                l.io_path_reason
            );
            assert!(
                l.io_path_reason.contains("io_uring"),
                "{}",
                l.io_path_reason
            );
        } else {
            assert_ne!(
                l.io_path,
                IoPath::BufferedSync,
                "{p:?}: {}",
                l.io_path_reason
            );
        }
    }
    assert_eq!(fd_count(), before);
}

#[test]
fn odd_chunk_sizes_and_depths_still_give_exact_bytes() {
    let _g = lock();
    let scratch = scratch_dir();
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Loader>();
    let data = pattern((20 << 20) + 999, 55);
    let path = write_file(scratch.path(), "odd-chunks", &data);
    for (qd, chunk) in [
        (1u32, 4096usize),
        (3, 3 << 20),
        (7, 12 << 10),
        (64, 5 << 20),
    ] {
        for &p in PATHS {
            let loader = loader_with(|c| {
                c.force_io_path = Some(p);
                c.queue_depth = Some(qd);
                c.chunk_size = Some(chunk);
            });
            let l = check_load(&loader, &path, &data, 512, None);
            assert_eq!(
                l.io_path,
                on_heap(&l, p),
                "QD{qd} chunk {chunk}: {}",
                l.io_path_reason
            );
        }
    }
    assert!(Loader::new(Config {
        chunk_size: Some(1000),
        ..Default::default()
    })
    .is_err());
    assert!(Loader::new(Config {
        queue_depth: Some(0),
        ..Default::default()
    })
    .is_err());
}

/// A real device read error (the tools/vm rig's blkdebug disk: DMABUF_LOADER_EIO_FILE names a
/// file whose block at DMABUF_LOADER_EIO_OFFSET fails) is an `Io` error on every path and
/// provider, with nothing left behind; the bytes before it still load. Without such a file
/// (a plain host) there is no device fault to inject and the test only says so.
#[test]
fn device_read_error_is_an_io_error() {
    let _g = lock();
    let Some(file) = std::env::var_os("DMABUF_LOADER_EIO_FILE") else {
        eprintln!("no DMABUF_LOADER_EIO_FILE: no injectable device fault on this machine");
        return;
    };
    let bad_at: u64 = std::env::var("DMABUF_LOADER_EIO_OFFSET")
        .unwrap()
        .parse()
        .unwrap();
    let loader = Loader::new(Config::default()).unwrap();
    for h in loader.heaps() {
        for &p in PATHS {
            let forced = loader_with(|c| c.force_io_path = Some(p));
            let f = File::open(&file).unwrap();
            let before = fd_count();
            let req = LoadRequest {
                heap: Some(h.name.clone()),
                ..Default::default()
            };
            let e = forced
                .load(f.as_fd(), &req, &LoadControl::default())
                .expect_err("EIO");
            assert_eq!(e.kind, ErrorKind::Io, "{} {p:?}: {e}", h.name);
            assert_eq!(fd_count(), before, "{} {p:?}: fd leak", h.name);
            let head = LoadRequest {
                length: Some(bad_at),
                ..req
            };
            let l = forced
                .load(f.as_fd(), &head, &LoadControl::default())
                .unwrap();
            assert_eq!(l.data_len, bad_at);
        }
    }
}

#[test]
fn buffer_larger_than_memory_is_an_allocation_error() {
    let _g = lock();
    let scratch = scratch_dir();
    let mem_total: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        * 1024;
    // A sparse file: costs no disk, asks for more memory than the machine has.
    let path = scratch.path().join("bigger-than-ram");
    let f = File::create(&path).unwrap();
    f.set_len(mem_total + (1 << 30)).unwrap();
    drop(f);
    let loader = loader_with(|c| c.max_load_bytes = u64::MAX);
    let before = fd_count();
    for heap in loader.heaps().to_vec() {
        let file = File::open(&path).unwrap();
        let req = LoadRequest {
            heap: Some(heap.name.clone()),
            ..Default::default()
        };
        let e = expect_err(&loader, &file, &req);
        // udmabuf has its own (smaller) size limit, refused earlier as TooLarge.
        let ok = e.kind == ErrorKind::AllocationFailed
            || (heap.kind == BufferKind::Udmabuf && e.kind == ErrorKind::TooLarge);
        assert!(ok, "heap {}: {e:#}", heap.name);
        assert!(
            format!("{e:#}").contains("bytes"),
            "message says the size: {e:#}"
        );
    }
    assert_eq!(fd_count(), before, "a refused allocation leaked an fd");
    std::fs::remove_file(&path).unwrap();
}

/// Small ranges skip the ring and the helper thread (latency of small loads); big ones don't.
#[test]
fn small_ranges_take_one_pread() {
    let _g = lock();
    let scratch = scratch_dir();
    let data = pattern(1 << 20, 13);
    let path = write_file(scratch.path(), "small", &data);
    let loader = Loader::new(Config::default()).unwrap();
    let l = check_load(&loader, &path, &data, 100, Some(4096));
    assert_eq!(l.io_path, IoPath::BufferedSync, "{}", l.io_path_reason);
    assert!(
        l.io_path_reason.contains("small range"),
        "{}",
        l.io_path_reason
    );
    let big = dmabuf_loader::SMALL_RANGE + 4096;
    let l = check_load(&loader, &path, &data, 0, Some(big));
    assert_ne!(l.io_path, IoPath::BufferedSync, "{}", l.io_path_reason);
}
