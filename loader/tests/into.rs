//! `Loader::load_into` (AIDL v2 `loadInto`): filling a buffer the caller owns. On this host
//! (no dma-heaps, no udmabuf) targets are memfds, which the loader accepts only on machines
//! without any dma-buf source; the tests check that first and say so when it does not hold.
//! Every test takes one lock: the fd-leak checks count /proc/self/fd.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use dmabuf_loader::*;

mod common;
use common::*;

/// The filler byte every target starts with, so untouched bytes are recognisable.
const FILL: u8 = 0xa5;

/// A memfd target of `size` bytes, every byte FILL (allocated and written by the "client").
fn memfd_target(loader: &Loader, size: u64) -> OwnedFd {
    assert!(
        loader.heaps().iter().all(|h| !h.is_dmabuf),
        "this machine has dma-buf sources: memfd targets are refused here; these tests are for \
         hosts without dma-bufs (the VM rig covers dma-buf targets)"
    );
    let (fd, heap) = loader.allocate_target("memfd", size).unwrap();
    assert_eq!(heap.kind, BufferKind::Memfd);
    File::from(fd.try_clone().unwrap())
        .write_all_at(&vec![FILL; size as usize], 0)
        .unwrap();
    fd
}

fn read_target(fd: &OwnedFd, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    File::from(fd.try_clone().unwrap())
        .read_exact_at(&mut v, 0)
        .unwrap();
    v
}

/// Loads `data[off..off+len]` into a fresh target of `size` at `toff` and checks every byte:
/// the range holds the file's bytes, everything else is still FILL.
fn check_into(
    loader: &Loader,
    path: &Path,
    data: &[u8],
    off: u64,
    len: u64,
    size: u64,
    toff: u64,
) -> Filled {
    let target = memfd_target(loader, size);
    let f = File::open(path).unwrap();
    let req = LoadRequest {
        offset: off,
        length: Some(len),
        checksum: ChecksumType::Xxh3_64,
        ..Default::default()
    };
    let r = loader
        .load_into(
            f.as_fd(),
            &req,
            target.as_fd(),
            toff,
            &LoadControl::default(),
        )
        .unwrap_or_else(|e| panic!("off {off} len {len} size {size} toff {toff}: {e}"));
    let got = read_target(&target, size);
    let want = &data[off as usize..(off + len) as usize];
    let (a, b) = (toff as usize, (toff + len) as usize);
    assert!(
        got[a..b] == *want,
        "{:?}: range differs (off {off} len {len} toff {toff})",
        r.io_path
    );
    assert!(
        got[..a].iter().chain(&got[b..]).all(|&x| x == FILL),
        "{:?}: bytes outside the range were written (toff {toff} len {len} size {size})",
        r.io_path
    );
    assert_eq!(r.data_len, len);
    assert_eq!(r.target_offset, toff);
    assert_eq!(r.target_size, size);
    assert_eq!(r.exporter, "memfd");
    assert_eq!(r.kind, BufferKind::Memfd);
    assert_eq!(r.page_size, 4096);
    assert_eq!(
        r.checksum,
        Some((ChecksumType::Xxh3_64, twox_hash::XxHash3_64::oneshot(want)))
    );
    r
}

#[test]
fn every_path_fills_exactly_the_range_and_nothing_else() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern((6 << 20) + 123, 7);
    let path = write_file(dir.path(), "src", &data);
    let before = fd_count();
    for forced in [
        None,
        Some(IoPath::DirectRegistered),
        Some(IoPath::Direct),
        Some(IoPath::Buffered),
        Some(IoPath::BufferedSync),
    ] {
        let loader = loader_with(|c| {
            c.force_io_path = forced;
            c.page_cache_hint = false;
        });
        // (file offset, length, target size, target offset): aligned, unaligned on either
        // side, the range ending exactly at the target's end, a one-byte range at the end.
        for (off, len, size, toff) in [
            (0u64, 4u64 << 20, 4u64 << 20, 0u64),
            (0, 4 << 20, 8 << 20, 1 << 20),
            (4096, (3 << 20) + 5, 5 << 20, 777),
            (123, (2 << 20) + 1, 4 << 20, (4 << 20) - (2 << 20) - 1),
            (data.len() as u64 - 1, 1, 8192, 8191),
            (0, data.len() as u64, data.len() as u64 + 4096, 4096),
        ] {
            let r = check_into(&loader, &path, &data, off, len, size, toff);
            if let Some(p) = forced {
                // A forced path the kernel refuses for this alignment steps down, and says why.
                if r.io_path != p {
                    assert!(
                        r.io_path_reason.contains("->"),
                        "{p:?} -> {:?} without a reason: {}",
                        r.io_path,
                        r.io_path_reason
                    );
                }
            }
            let says = r.io_path == IoPath::DmabufRegistered
                || r.io_path_reason.starts_with("DMABUF_REGISTERED: ")
                || r.io_path_reason.contains("DmabufRegistered not used")
                || r.io_path_reason.contains("refused to register");
            assert!(
                says,
                "the reason must say why the registered path did not run: {}",
                r.io_path_reason
            );
        }
    }
    assert_eq!(fd_count(), before, "a target or source fd was kept");
}

#[test]
fn aligned_memfd_target_takes_o_direct_and_says_so() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(8 << 20, 11);
    let path = write_file(dir.path(), "src", &data);
    let loader = loader_with(|c| c.page_cache_hint = false);
    let probe = File::open(&path).unwrap();
    let direct_ok = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .is_ok();
    drop(probe);
    let r = check_into(&loader, &path, &data, 0, 8 << 20, 8 << 20, 0);
    if direct_ok {
        assert!(
            matches!(r.io_path, IoPath::DirectRegistered | IoPath::Direct),
            "an aligned memfd target on a disk file system should take O_DIRECT: {:?} ({})",
            r.io_path,
            r.io_path_reason
        );
    }
    assert!(
        r.io_path_reason.contains("source is a regular file")
            || r.io_path_reason
                .contains("no io_uring dma-buf registration"),
        "{}",
        r.io_path_reason
    );
}

#[test]
fn reusing_one_target_many_times_gives_each_file_exactly() {
    let _g = lock();
    let dir = scratch_dir();
    let loader = Loader::new(Config::default()).unwrap();
    let size = 2u64 << 20;
    let target = memfd_target(&loader, size);
    for seed in 1..5u64 {
        let data = pattern((1 << 20) + seed as usize * 1000, seed);
        let path = write_file(dir.path(), &format!("f{seed}"), &data);
        let f = File::open(&path).unwrap();
        let r = loader
            .load_into(
                f.as_fd(),
                &LoadRequest::default(),
                target.as_fd(),
                4096,
                &LoadControl::default(),
            )
            .unwrap();
        assert_eq!(r.data_len, data.len() as u64);
        let got = read_target(&target, size);
        assert!(got[4096..4096 + data.len()] == data[..], "load {seed}");
        assert!(got[..4096].iter().all(|&b| b == FILL));
    }
}

fn expect_into_err(
    loader: &Loader,
    src: impl AsFd,
    req: &LoadRequest,
    target: impl AsFd,
    toff: u64,
) -> LoadError {
    loader
        .load_into(
            src.as_fd(),
            req,
            target.as_fd(),
            toff,
            &LoadControl::default(),
        )
        .expect_err("a bad target must be refused")
}

fn target_error(e: &LoadError) -> TargetError {
    *e.source
        .downcast_ref::<TargetError>()
        .unwrap_or_else(|| panic!("not a TargetError: {e:#}"))
}

#[test]
fn bad_targets_each_get_their_own_error_and_cost_nothing() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(64 << 10, 3);
    let path = write_file(dir.path(), "src", &data);
    let loader = Loader::new(Config::default()).unwrap();
    let src = File::open(&path).unwrap();
    let req = LoadRequest::default();
    let len = data.len() as u64;
    let before = fd_count();

    // Too small: by one byte at offset 0, by the offset, and an offset that overflows.
    let small = memfd_target(&loader, len - 1);
    let e = expect_into_err(&loader, &src, &req, &small, 0);
    assert_eq!(e.kind, ErrorKind::TargetTooSmall, "{e:#}");
    assert_eq!(target_error(&e), TargetError::TooSmall);
    assert!(
        format!("{e:#}").contains(&format!("has {}", len - 1)),
        "{e:#}"
    );
    let t = memfd_target(&loader, len);
    let e = expect_into_err(&loader, &src, &req, &t, 1);
    assert_eq!(e.kind, ErrorKind::TargetTooSmall, "{e:#}");
    let e = expect_into_err(&loader, &src, &req, &t, u64::MAX - 10);
    assert_eq!(e.kind, ErrorKind::TargetTooSmall, "{e:#}");
    assert!(
        read_target(&t, len).iter().all(|&b| b == FILL),
        "a refused target was written"
    );

    // Read-only: the same memfd reopened O_RDONLY (what a client holding only read access has).
    let ro = File::open(format!("/proc/self/fd/{}", t.as_raw_fd())).unwrap();
    let e = expect_into_err(&loader, &src, &req, &ro, 0);
    assert_eq!(e.kind, ErrorKind::TargetNotWritable, "{e:#}");
    assert_eq!(target_error(&e), TargetError::ReadOnly);
    // Write-only: cannot be mapped either.
    let wo = OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", t.as_raw_fd()))
        .unwrap();
    let e = expect_into_err(&loader, &src, &req, &wo, 0);
    assert_eq!(target_error(&e), TargetError::WriteOnly);
    // O_PATH.
    let opath: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/self/fd/{}", t.as_raw_fd()))
        .unwrap()
        .into();
    let e = expect_into_err(&loader, &src, &req, &opath, 0);
    assert_eq!(target_error(&e), TargetError::PathOnly);
    assert_eq!(e.kind, ErrorKind::TargetNotWritable);

    // Sealed against writes: O_RDWR, but the kernel would refuse the writable mapping.
    let sealed = memfd_target(&loader, len);
    nix::fcntl::fcntl(
        sealed.as_raw_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_WRITE),
    )
    .unwrap();
    let e = expect_into_err(&loader, &src, &req, &sealed, 0);
    assert_eq!(target_error(&e), TargetError::Sealed);
    assert_eq!(e.kind, ErrorKind::TargetNotWritable);

    // A memfd its owner could still truncate under the service (no F_SEAL_SHRINK).
    let unsealed: OwnedFd = nix::sys::memfd::memfd_create(
        c"unsealed",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
            | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .unwrap();
    nix::unistd::ftruncate(&unsealed, len as i64).unwrap();
    let e = expect_into_err(&loader, &src, &req, &unsealed, 0);
    assert_eq!(target_error(&e), TargetError::NotSealedShrink, "{e:#}");
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    drop(unsealed);

    // A closed fd: a number that is not open. Not the lowest free one: the loader's own dup of
    // the source would take that number before the target is looked at.
    let closed = 4000;
    assert_eq!(
        nix::fcntl::fcntl(
            // Only asks fcntl about a number; nothing is closed or read through it.
            closed,
            nix::fcntl::FcntlArg::F_GETFL
        ),
        Err(nix::errno::Errno::EBADF)
    );
    // SAFETY: `closed` is not open (checked); the loader's F_GETFL on it fails with EBADF.
    let closed_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(closed) };
    let e = loader
        .load_into(src.as_fd(), &req, closed_fd, 0, &LoadControl::default())
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadFd, "{e:#}");
    assert_eq!(target_error(&e), TargetError::Closed);

    // A pipe, a regular file, /dev/null, a socket: not dma-bufs.
    let (r, w) = nix::unistd::pipe().unwrap();
    for fd in [r.as_fd(), w.as_fd()] {
        let e = expect_into_err(&loader, &src, &req, fd, 0);
        assert!(
            matches!(e.kind, ErrorKind::NotADmabuf | ErrorKind::TargetNotWritable),
            "{e:#}"
        );
    }
    // The read end is O_RDONLY (refused for that first); a pipe opened O_RDWR via /proc:
    let rw_pipe = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", r.as_raw_fd()))
        .unwrap();
    let e = expect_into_err(&loader, &src, &req, &rw_pipe, 0);
    assert_eq!(target_error(&e), TargetError::NotDmabuf);
    assert!(format!("{e:#}").contains("a pipe"), "{e:#}");
    let other = OpenOptions::new()
        .read(true)
        .write(true)
        .open(write_file(dir.path(), "other", &data))
        .unwrap();
    let e = expect_into_err(&loader, &src, &req, &other, 0);
    assert_eq!(e.kind, ErrorKind::NotADmabuf, "{e:#}");
    assert!(format!("{e:#}").contains("a regular file"), "{e:#}");
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();
    let e = expect_into_err(&loader, &src, &req, &null, 0);
    assert!(format!("{e:#}").contains("a character device"), "{e:#}");
    let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = expect_into_err(&loader, &src, &req, &s1, 0);
    assert_eq!(e.kind, ErrorKind::NotADmabuf, "{e:#}");

    // The source fd itself, and the source through another description: the same inode.
    let rw_src = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let e = expect_into_err(&loader, &rw_src, &req, &rw_src, 0);
    assert_eq!(target_error(&e), TargetError::IsSource, "{e:#}");
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let e = expect_into_err(&loader, &src, &req, &rw_src, 0);
    assert_eq!(target_error(&e), TargetError::IsSource, "{e:#}");
    // A memfd source loaded into itself.
    let m = memfd_target(&loader, 8192);
    let e = expect_into_err(&loader, &m, &req, &m, 0);
    assert_eq!(target_error(&e), TargetError::IsSource, "{e:#}");

    // Request fields that do not apply to the caller's buffer.
    for bad in [
        LoadRequest {
            heap: Some("memfd".into()),
            ..Default::default()
        },
        LoadRequest {
            read_only: true,
            ..Default::default()
        },
    ] {
        let e = expect_into_err(&loader, &src, &bad, &t, 0);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:#}");
    }
    // Bad source, good target: the source's error, not the target's.
    let e = expect_into_err(&loader, &r, &req, &t, 0);
    assert_eq!(e.kind, ErrorKind::UnsupportedFileType, "{e:#}");
    assert!(read_target(&t, len).iter().all(|&b| b == FILL));

    drop((
        small, t, m, rw_src, s1, _s2, null, other, rw_pipe, r, w, sealed, opath, wo, ro,
    ));
    assert_eq!(fd_count(), before, "a refusal leaked an fd");
}

#[test]
fn empty_range_writes_nothing() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(8192, 5);
    let path = write_file(dir.path(), "src", &data);
    let loader = Loader::new(Config::default()).unwrap();
    let t = memfd_target(&loader, 4096);
    let f = File::open(&path).unwrap();
    let req = LoadRequest {
        offset: 100,
        length: Some(0),
        ..Default::default()
    };
    // Offset == size is a valid place for an empty range.
    let r = loader
        .load_into(f.as_fd(), &req, t.as_fd(), 4096, &LoadControl::default())
        .unwrap();
    assert_eq!((r.data_len, r.io_path), (0, IoPath::None));
    assert!(read_target(&t, 4096).iter().all(|&b| b == FILL));
}

#[test]
fn cancelled_load_is_an_error_and_leaves_the_outside_untouched() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(32 << 20, 9);
    let path = write_file(dir.path(), "src", &data);
    let before = fd_count();
    for forced in [
        IoPath::DirectRegistered,
        IoPath::Buffered,
        IoPath::BufferedSync,
    ] {
        let loader = loader_with(|c| {
            c.force_io_path = Some(forced);
            c.queue_depth = Some(2);
        });
        let size = (32u64 << 20) + 8192;
        let t = memfd_target(&loader, size);
        let f = File::open(&path).unwrap();
        let ctl = LoadControl::default();
        let cancel = ctl.cancel.clone();
        let progress = move |done: u64, _total: u64| {
            if done >= 4 << 20 {
                cancel.cancel();
            }
        };
        let ctl = LoadControl {
            progress: Some(&progress),
            ..ctl
        };
        let e = loader
            .load_into(f.as_fd(), &LoadRequest::default(), t.as_fd(), 4096, &ctl)
            .expect_err("a cancelled load must not report success");
        assert_eq!(e.kind, ErrorKind::Cancelled, "{forced:?}: {e:#}");
        let got = read_target(&t, size);
        assert!(got[..4096].iter().all(|&b| b == FILL), "{forced:?}: head");
        assert!(
            got[4096 + data.len()..].iter().all(|&b| b == FILL),
            "{forced:?}: tail"
        );
    }
    assert_eq!(fd_count(), before);
}

#[test]
fn truncated_source_is_file_changed_never_success() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(16 << 20, 13);
    let path = write_file(dir.path(), "src", &data);
    let loader = loader_with(|c| {
        c.force_io_path = Some(IoPath::BufferedSync);
        c.chunk_size = Some(1 << 20);
    });
    let t = memfd_target(&loader, 16 << 20);
    let f = File::open(&path).unwrap();
    let truncate = OpenOptions::new().write(true).open(&path).unwrap();
    let progress = move |done: u64, _total: u64| {
        if done >= 2 << 20 {
            truncate.set_len(1 << 20).unwrap();
        }
    };
    let ctl = LoadControl {
        progress: Some(&progress),
        ..Default::default()
    };
    let e = loader
        .load_into(f.as_fd(), &LoadRequest::default(), t.as_fd(), 0, &ctl)
        .expect_err("a truncated source must fail");
    assert_eq!(e.kind, ErrorKind::FileChanged, "{e:#}");
}

#[test]
fn machine_with_dmabufs_refuses_memfd_targets() {
    let _g = lock();
    // A dma-heap directory with one (fake) heap entry makes this a "machine with dma-bufs"
    // for the loader's policy; the memfd target must then be refused as not a dma-buf.
    let heaps = tempfile::tempdir().unwrap();
    std::fs::write(heaps.path().join("system"), b"").unwrap();
    let host = Loader::new(Config::default()).unwrap();
    let t = memfd_target(&host, 8192);
    let loader = loader_with(|c| {
        c.dma_heap_dir = heaps.path().to_path_buf();
        c.allowed_heaps = Some(vec!["memfd".into()]);
    });
    let dir = scratch_dir();
    let path = write_file(dir.path(), "src", &pattern(4096, 1));
    let f = File::open(&path).unwrap();
    let e = loader
        .load_into(
            f.as_fd(),
            &LoadRequest::default(),
            t.as_fd(),
            0,
            &LoadControl::default(),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotADmabuf, "{e:#}");
    assert_eq!(target_error(&e), TargetError::MemfdOnDmabufMachine);
}
