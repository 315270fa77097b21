//! `Loader::load_into` (AIDL v2 `loadInto`): filling a buffer the caller owns, on whatever
//! this machine has. A machine with a dma-buf source (the VM rig: the system dma-heap and
//! udmabuf) must take only dma-bufs as targets, and the tests use those; a machine without any
//! (this workplace's hosts) takes sealed memfds instead, and the tests use those. Either way a
//! memfd on a dma-buf machine is NOT_A_DMABUF (checked there). The VM rig runs this file with
//! the core tests (tools/vm/guest/test.sh).
//! Every test takes one lock: the fd-leak checks count /proc/self/fd.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use dmabuf_loader::*;

mod common;
use common::*;

/// The filler byte every target starts with, so untouched bytes are recognisable.
const FILL: u8 = 0xa5;

/// Does this machine have a dma-buf source (then targets must be dma-bufs)?
fn dmabuf_machine(loader: &Loader) -> bool {
    loader.heaps().iter().any(|h| h.is_dmabuf)
}

/// Where the tests take targets from: every dma-buf heap of the machine (system heap,
/// udmabuf, ...), or "memfd" where it has none.
fn target_heaps(loader: &Loader) -> Vec<HeapInfo> {
    let d: Vec<HeapInfo> = loader
        .heaps()
        .iter()
        .filter(|h| h.is_dmabuf)
        .cloned()
        .collect();
    if !d.is_empty() {
        return d;
    }
    let m = loader.resolve_heap(Some("memfd")).unwrap().clone();
    vec![m]
}

/// CPU writes into a target through a shared mapping (not pwrite: a hugetlb memfd has no
/// write()), bracketed by DMA_BUF_IOCTL_SYNC for a dma-buf.
mod cpu {
    use std::num::NonZeroUsize;
    use std::os::fd::{AsRawFd, BorrowedFd};

    use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

    #[repr(C)]
    struct DmaBufSync {
        flags: u64,
    }
    nix::ioctl_write_ptr!(dma_buf_ioctl_sync, b'b', 0, DmaBufSync);
    const WRITE: u64 = 2;
    const END: u64 = 4;

    /// Sets every byte of the target `fd` (`len` bytes, its whole size) to `byte`.
    pub fn fill(fd: BorrowedFd<'_>, len: usize, byte: u8, dmabuf: bool) {
        let n = NonZeroUsize::new(len).expect("a non-empty buffer");
        let sync = |flags| {
            let s = DmaBufSync { flags };
            if dmabuf {
                // SAFETY: `s` is a valid struct dma_buf_sync the kernel only reads.
                unsafe { dma_buf_ioctl_sync(fd.as_raw_fd(), &s) }.expect("DMA_BUF_IOCTL_SYNC");
            }
        };
        // SAFETY: a fresh shared mapping at an address the kernel picks, aliasing no Rust
        // object; it is written only below and unmapped before returning.
        let p = unsafe {
            mmap(
                None,
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .expect("mmap(PROT_WRITE) of the target");
        sync(WRITE);
        // SAFETY: `p` maps `len` writable bytes until the munmap below.
        unsafe { std::ptr::write_bytes(p.as_ptr().cast::<u8>(), byte, len) };
        sync(WRITE | END);
        // SAFETY: exactly the mapping made above; no reference into it remains.
        unsafe { munmap(p, len) }.expect("munmap");
    }
}

/// A target of `size` bytes from `heap`, every byte FILL (allocated and written by the
/// "client").
fn target_from(loader: &Loader, heap: &HeapInfo, size: u64) -> OwnedFd {
    let (fd, got) = loader.allocate_target(&heap.name, size).unwrap();
    assert_eq!(got.kind, heap.kind);
    let whole = target_size(fd.as_fd());
    assert!(
        whole >= size,
        "{}: {whole} bytes, asked for {size}",
        heap.name
    );
    cpu::fill(fd.as_fd(), whole as usize, FILL, heap.is_dmabuf);
    fd
}

/// A target of this machine's first kind (see [`target_heaps`]).
fn any_target(loader: &Loader, size: u64) -> OwnedFd {
    target_from(loader, &target_heaps(loader)[0], size)
}

/// The whole size of a target: a dma-buf's from lseek (a heap rounds up to whole pages), a
/// memfd's from fstat.
fn target_size(fd: BorrowedFd<'_>) -> u64 {
    match dmabuf_exporter(fd) {
        Some(_) => {
            nix::unistd::lseek(fd.as_raw_fd(), 0, nix::unistd::Whence::SeekEnd).unwrap() as u64
        }
        None => nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_size as u64,
    }
}

fn dmabuf_exporter(fd: BorrowedFd<'_>) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("exp_name:"))
        .map(|v| v.trim().to_string())
}

/// Every byte of the target, read through a shared mapping (the CPU read bracketed for a
/// dma-buf).
fn read_target(fd: &OwnedFd) -> Vec<u8> {
    let dma = dmabuf_exporter(fd.as_fd()).is_some();
    let view = BufferView::map(fd, target_size(fd.as_fd()) as usize).unwrap();
    if dma {
        begin_cpu_read(fd).unwrap();
    }
    let v = view.as_slice().to_vec();
    if dma {
        end_cpu_read(fd).unwrap();
    }
    v
}

/// A plain memfd sealed against shrinking and growing (what a host target is): for the checks
/// that hold on every machine (fd access mode, same inode), and the memfd refusals.
fn sealed_memfd(size: u64) -> OwnedFd {
    let fd: OwnedFd = nix::sys::memfd::memfd_create(
        c"into-test",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
            | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .unwrap();
    nix::unistd::ftruncate(&fd, size as i64).unwrap();
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(
            nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW,
        ),
    )
    .unwrap();
    fd
}

/// Loads `data[off..off+len]` into a fresh target of `size` from `heap` at `toff` and checks
/// every byte: the range holds the file's bytes, everything else is still FILL.
#[allow(clippy::too_many_arguments)]
fn check_into(
    loader: &Loader,
    heap: &HeapInfo,
    path: &Path,
    data: &[u8],
    off: u64,
    len: u64,
    size: u64,
    toff: u64,
) -> Filled {
    let target = target_from(loader, heap, size);
    let size = target_size(target.as_fd());
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
        .unwrap_or_else(|e| {
            panic!(
                "{}: off {off} len {len} size {size} toff {toff}: {e:#}",
                heap.name
            )
        });
    let got = read_target(&target);
    let want = &data[off as usize..(off + len) as usize];
    let (a, b) = (toff as usize, (toff + len) as usize);
    assert!(
        got[a..b] == *want,
        "{} {:?}: range differs (off {off} len {len} toff {toff})",
        heap.name,
        r.io_path
    );
    assert!(
        got[..a].iter().chain(&got[b..]).all(|&x| x == FILL),
        "{} {:?}: bytes outside the range were written (toff {toff} len {len} size {size})",
        heap.name,
        r.io_path
    );
    assert_eq!(r.data_len, len);
    assert_eq!(r.target_offset, toff);
    assert_eq!(r.target_size, size);
    assert_eq!(r.exporter, heap.name);
    assert_eq!(r.kind, heap.kind);
    // A dma-buf's page size is its exporter's, which the loader cannot see; a memfd's is its
    // st_blksize (4096, or the huge page size of a hugetlb memfd).
    let page = if heap.is_dmabuf {
        0
    } else {
        nix::sys::stat::fstat(target.as_raw_fd())
            .unwrap()
            .st_blksize as u64
    };
    assert_eq!(r.page_size, page);
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
        for (heap, (off, len, size, toff)) in target_heaps(&loader).iter().flat_map(|h| {
            [
                (0u64, 4u64 << 20, 4u64 << 20, 0u64),
                (0, 4 << 20, 8 << 20, 1 << 20),
                (4096, (3 << 20) + 5, 5 << 20, 777),
                (123, (2 << 20) + 1, 4 << 20, (4 << 20) - (2 << 20) - 1),
                (data.len() as u64 - 1, 1, 8192, 8191),
                (0, data.len() as u64, data.len() as u64 + 4096, 4096),
            ]
            .map(|c| (h, c))
        }) {
            let r = check_into(&loader, heap, &path, &data, off, len, size, toff);
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

/// An aligned load takes O_DIRECT into a memfd target (a host), and the CPU mapping into a
/// dma-heap or udmabuf target (the rig): their mmap is PFNMAP, which O_DIRECT cannot pin.
#[test]
fn aligned_target_takes_o_direct_where_its_pages_allow_and_says_so() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(8 << 20, 11);
    let path = write_file(dir.path(), "src", &data);
    let loader = loader_with(|c| c.page_cache_hint = false);
    let direct_ok = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .is_ok();
    for heap in target_heaps(&loader) {
        let r = check_into(&loader, &heap, &path, &data, 0, 8 << 20, 8 << 20, 0);
        if heap.is_dmabuf {
            // Never O_DIRECT into a PFNMAP mapping. Where the kernel has the io_uring dma-buf
            // series the engine may try DMABUF_REGISTERED first (the seed kernel: its
            // decision for client targets is engine/dmabuf_registered.rs's, not this test's).
            let regbuf = loader.capabilities().io_uring_dmabuf_regbuf;
            assert!(
                r.io_path == IoPath::Buffered || (regbuf && r.io_path == IoPath::DmabufRegistered),
                "a {} target is PFNMAP: {:?} ({})",
                heap.name,
                r.io_path,
                r.io_path_reason
            );
            if !regbuf {
                assert!(r.io_path_reason.contains("PFNMAP"), "{}", r.io_path_reason);
            }
        } else if direct_ok {
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
                    .contains("no io_uring dma-buf registration")
                || r.io_path_reason
                    .contains("the file's blocks cannot be read from the namespace"),
            "{}",
            r.io_path_reason
        );
    }
}

#[test]
fn reusing_one_target_many_times_gives_each_file_exactly() {
    let _g = lock();
    let dir = scratch_dir();
    let loader = Loader::new(Config::default()).unwrap();
    let target = any_target(&loader, 2 << 20);
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
        let got = read_target(&target);
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

    // Too small: by a page at offset 0 (a dma-heap rounds sizes up to pages), by the offset,
    // and an offset that overflows.
    let small = any_target(&loader, len - 4096);
    let e = expect_into_err(&loader, &src, &req, &small, 0);
    assert_eq!(e.kind, ErrorKind::TargetTooSmall, "{e:#}");
    assert_eq!(target_error(&e), TargetError::TooSmall);
    assert!(
        format!("{e:#}").contains(&format!("has {}", len - 4096)),
        "{e:#}"
    );
    let t = any_target(&loader, len);
    assert_eq!(target_size(t.as_fd()), len);
    let e = expect_into_err(&loader, &src, &req, &t, 1);
    assert_eq!(e.kind, ErrorKind::TargetTooSmall, "{e:#}");
    let e = expect_into_err(&loader, &src, &req, &t, u64::MAX - 10);
    assert_eq!(e.kind, ErrorKind::TargetTooSmall, "{e:#}");
    assert!(
        read_target(&t).iter().all(|&b| b == FILL),
        "a refused target was written"
    );

    // Read-only: a memfd reopened O_RDONLY (what a client holding only read access has; a
    // dma-buf cannot be reopened). The access mode is refused before the kind is looked at.
    let m = sealed_memfd(len);
    let ro = File::open(format!("/proc/self/fd/{}", m.as_raw_fd())).unwrap();
    let e = expect_into_err(&loader, &src, &req, &ro, 0);
    assert_eq!(e.kind, ErrorKind::TargetNotWritable, "{e:#}");
    assert_eq!(target_error(&e), TargetError::ReadOnly);
    // Write-only: cannot be mapped either.
    let wo = OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", m.as_raw_fd()))
        .unwrap();
    let e = expect_into_err(&loader, &src, &req, &wo, 0);
    assert_eq!(target_error(&e), TargetError::WriteOnly);
    // O_PATH.
    let opath: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/self/fd/{}", m.as_raw_fd()))
        .unwrap()
        .into();
    let e = expect_into_err(&loader, &src, &req, &opath, 0);
    assert_eq!(target_error(&e), TargetError::PathOnly);
    assert_eq!(e.kind, ErrorKind::TargetNotWritable);

    // Where the machine has dma-bufs, a memfd is not a target at all: refused as such before
    // its seals are looked at (NOT_A_DMABUF). Where it has none, the seals decide.
    let memfd_refused = |e: &LoadError, otherwise: TargetError| {
        if dmabuf_machine(&loader) {
            assert_eq!(target_error(e), TargetError::MemfdOnDmabufMachine, "{e:#}");
            assert_eq!(e.kind, ErrorKind::NotADmabuf);
        } else {
            assert_eq!(target_error(e), otherwise, "{e:#}");
        }
    };
    if dmabuf_machine(&loader) {
        // However well sealed (a good target on a host).
        let e = expect_into_err(&loader, &src, &req, &m, 0);
        memfd_refused(&e, TargetError::MemfdOnDmabufMachine);
    }

    // Sealed against writes: O_RDWR, but the kernel would refuse the writable mapping.
    let sealed = sealed_memfd(len);
    nix::fcntl::fcntl(
        sealed.as_raw_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_WRITE),
    )
    .unwrap();
    let e = expect_into_err(&loader, &src, &req, &sealed, 0);
    memfd_refused(&e, TargetError::Sealed);
    if !dmabuf_machine(&loader) {
        assert_eq!(e.kind, ErrorKind::TargetNotWritable);
    }

    // A memfd its owner could still truncate under the service (no F_SEAL_SHRINK).
    let unsealed: OwnedFd = nix::sys::memfd::memfd_create(
        c"unsealed",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
            | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .unwrap();
    nix::unistd::ftruncate(&unsealed, len as i64).unwrap();
    let e = expect_into_err(&loader, &src, &req, &unsealed, 0);
    memfd_refused(&e, TargetError::NotSealedShrink);
    if !dmabuf_machine(&loader) {
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }
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
    // A memfd source loaded into itself (the same inode is refused first, on every machine).
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
    assert!(read_target(&t).iter().all(|&b| b == FILL));

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
    let t = any_target(&loader, 4096);
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
    assert!(read_target(&t).iter().all(|&b| b == FILL));
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
        let t = any_target(&loader, (32 << 20) + 8192);
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
        let got = read_target(&t);
        assert!(got[..4096].iter().all(|&b| b == FILL), "{forced:?}: head");
        assert!(
            got[4096 + data.len()..].iter().all(|&b| b == FILL),
            "{forced:?}: tail"
        );
    }
    assert_eq!(fd_count(), before);
}

/// A source truncated, or rewritten in place behind the reads, during a loadInto: FILE_CHANGED,
/// never success with a mix of two versions in the client's buffer.
#[test]
fn truncated_or_rewritten_source_is_file_changed_never_success() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(16 << 20, 13);
    let loader = loader_with(|c| {
        c.force_io_path = Some(IoPath::BufferedSync);
        c.chunk_size = Some(1 << 20);
    });
    for how in ["truncate", "rewrite"] {
        let path = write_file(dir.path(), "src", &data);
        let t = any_target(&loader, 16 << 20);
        let f = File::open(&path).unwrap();
        let writer = OpenOptions::new().write(true).open(&path).unwrap();
        let once = std::sync::Once::new();
        let progress = move |done: u64, _total: u64| {
            if done >= 2 << 20 {
                once.call_once(|| match how {
                    "truncate" => writer.set_len(1 << 20).unwrap(),
                    _ => {
                        std::os::unix::fs::FileExt::write_all_at(&writer, &[0xEE; 4096], 0).unwrap()
                    }
                });
            }
        };
        let ctl = LoadControl {
            progress: Some(&progress),
            ..Default::default()
        };
        let e = loader
            .load_into(f.as_fd(), &LoadRequest::default(), t.as_fd(), 0, &ctl)
            .expect_err(how);
        assert_eq!(e.kind, ErrorKind::FileChanged, "{how}: {e:#}");
    }
}

#[test]
fn machine_with_dmabufs_refuses_memfd_targets() {
    let _g = lock();
    // A dma-heap directory with one (fake) heap entry makes this a "machine with dma-bufs"
    // for the loader's policy; the memfd target must then be refused as not a dma-buf.
    let heaps = tempfile::tempdir().unwrap();
    std::fs::write(heaps.path().join("system"), b"").unwrap();
    let t = sealed_memfd(8192);
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

/// A client's own hugetlb memfd (what `allocate_target` gives where the pool has free 2 MiB
/// pages) is filled like any other target: hugetlbfs has no read(2)/write(2), so every byte
/// must go in through a mapping or O_DIRECT. Outside the range its fresh zeros stay.
#[test]
fn hugetlb_memfd_target_is_filled_through_its_mapping() {
    let _g = lock();
    let free = dmabuf_loader::hugetlb_pools()
        .iter()
        .find(|p| p.page_size == 2 << 20)
        .map_or(0, |p| p.free);
    if free < 2 {
        eprintln!("skipped: no free 2 MiB hugetlb pages here (/proc/sys/vm/nr_hugepages)");
        return;
    }
    let dir = scratch_dir();
    let loader = loader_with(|c| c.huge_pages = HugePages::Hugetlb);
    if dmabuf_machine(&loader) {
        eprintln!("skipped: this machine has dma-bufs, so a memfd is no target here");
        return;
    }
    let size = 4u64 << 20;
    let (target, _) = loader.allocate_target("memfd", size).unwrap();
    let data = pattern((1 << 20) + 13, 9);
    let path = write_file(dir.path(), "h", &data);
    let f = File::open(&path).unwrap();
    let r = loader
        .load_into(
            f.as_fd(),
            &LoadRequest::default(),
            target.as_fd(),
            4096 + 512,
            &LoadControl::default(),
        )
        .unwrap();
    assert_eq!(r.data_len, data.len() as u64);
    let got = dmabuf_loader::BufferView::map(&target, size as usize).unwrap();
    let got = got.as_slice();
    let at = 4096 + 512;
    assert!(got[at..at + data.len()] == data[..], "{}", r.io_path_reason);
    assert!(got[..at].iter().all(|&b| b == 0));
    assert!(got[at + data.len()..].iter().all(|&b| b == 0));
}
