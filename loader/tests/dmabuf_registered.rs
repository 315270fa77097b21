//! DMABUF_REGISTERED: the dma-buf registered with io_uring for a raw NVMe namespace and filled
//! by READ_FIXED (the io_uring dma-buf read/write series), for raw block-device sources and,
//! through the extent route, for regular files on ext4 on an allowed namespace. Runs for real
//! in the VM rig's seed stage (tools/vm), which sets:
//!   DMABUF_LOADER_EXPECT_DMABUF_REGBUF  1 on the seed kernel, 0 on stock kernels (the host
//!                                       default: no kernel released so far has the uAPI)
//!   DMABUF_LOADER_TEST_NVME             a read-only raw NVMe namespace with static contents
//!   DMABUF_LOADER_TEST_OTHER_BLKDEV     a block device that is not NVMe (a loop device)
//!   DMABUF_LOADER_TEST_EIO_NVME, DMABUF_LOADER_TEST_EIO_SECTOR  an NVMe namespace and the
//!                                       sector on it whose reads fail (qemu blkdebug)
//!   DMABUF_LOADER_TEST_DIR              scratch directory (ext4 on NVMe in the rig)
//!   DMABUF_LOADER_TEST_EXTENT_DEVICE    the NVMe namespace under DMABUF_LOADER_TEST_DIR's file
//!                                       system, allowed for the extent route by these tests
//! Without a device variable the test that needs it says so and returns (the host has no NVMe,
//! dma-heap or udmabuf); the probe test always runs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dmabuf_loader::*;

mod common;

fn expect_available() -> bool {
    std::env::var("DMABUF_LOADER_EXPECT_DMABUF_REGBUF").is_ok_and(|v| v == "1")
}

fn device(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!("{var} not set: skipped (the VM rig sets it)");
            None
        }
    }
}

fn loader_with(f: impl FnOnce(&mut Config)) -> Loader {
    let mut c = Config {
        allow_block_devices: true,
        ..Default::default()
    };
    f(&mut c);
    Loader::new(c).unwrap()
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The buffer's bytes, read the way a client must read a dma-buf: between
/// DMA_BUF_IOCTL_SYNC start and end. The sync waits for every fence on the buffer, so a fence
/// the kernel never signals (the v3 series did that when a READ_FIXED was imported twice)
/// shows up here as a timeout instead of a hung client.
fn read_back(fd: &OwnedFd, size: u64) -> Vec<u8> {
    let dup = fd.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = dmabuf_loader::begin_cpu_read(&dup).map(|()| dup);
        let _ = tx.send(r);
    });
    let synced = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("DMA_BUF_IOCTL_SYNC(START) still blocked after 20 s: a fence is never signalled");
    let bytes = dmabuf_loader::BufferView::map(fd, size as usize)
        .unwrap()
        .as_slice()
        .to_vec();
    if let Ok(d) = synced {
        dmabuf_loader::end_cpu_read(&d).unwrap();
    } // (a memfd has no sync: ENOTTY)
    bytes
}

/// The device's bytes through the page cache (an independent path from the DMA one).
fn device_bytes(dev: &str, off: u64, len: u64) -> Vec<u8> {
    let f = File::open(dev).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

fn heaps_present(loader: &Loader) -> Vec<String> {
    loader
        .heaps()
        .iter()
        .filter(|h| h.is_dmabuf && (h.name == "system" || h.name == "udmabuf"))
        .map(|h| h.name.clone())
        .collect()
}

fn load(loader: &Loader, dev: &str, heap: &str, off: u64, len: u64) -> Result<Loaded> {
    let f = File::open(dev).unwrap();
    let req = LoadRequest {
        heap: Some(heap.into()),
        offset: off,
        length: Some(len),
        ..Default::default()
    };
    loader.load(f.as_fd(), &req, &LoadControl::default())
}

#[test]
fn probe_says_what_the_kernel_has() {
    let loader = loader_with(|_| {});
    let caps = loader.capabilities();
    assert_eq!(
        caps.io_uring_dmabuf_regbuf,
        expect_available(),
        "probe: {}",
        caps.io_uring_dmabuf_regbuf_detail
    );
    if caps.io_uring && !caps.io_uring_dmabuf_regbuf {
        // Stock kernels refuse the extended update's flag word (their `resv`).
        assert!(
            caps.io_uring_dmabuf_regbuf_detail.contains("EINVAL"),
            "{}",
            caps.io_uring_dmabuf_regbuf_detail
        );
    }
    if caps.io_uring_dmabuf_regbuf {
        assert!(caps.io_uring_dmabuf_regbuf_detail.contains("EBADF"));
    }
}

#[test]
fn raw_nvme_ranges_into_each_dma_buf_give_the_device_bytes() {
    let Some(dev) = device("DMABUF_LOADER_TEST_NVME") else {
        return;
    };
    let loader = loader_with(|_| {});
    let heaps = heaps_present(&loader);
    assert!(!heaps.is_empty(), "the rig has a system heap and udmabuf");
    // Aligned; unaligned head and tail (bounced); 512-byte aligned; a small range.
    let ranges = [
        (0u64, 8u64 << 20),
        // More reads than fit in flight (queue depth 32 x 1 MiB).
        (4096, 40 << 20),
        (3 * 4096 + 100, (5 << 20) + 333),
        (512 * 7, 1 << 20),
        (1 << 20, 200 << 10),
    ];
    for heap in &heaps {
        for &(off, len) in &ranges {
            let fds = fd_count();
            let l = load(&loader, &dev, heap, off, len)
                .unwrap_or_else(|e| panic!("{heap} {off}+{len}: {e:#}"));
            let want = if expect_available() {
                vec![IoPath::DmabufRegistered]
            } else if heap == "system" {
                vec![IoPath::Buffered]
            } else {
                vec![IoPath::DirectRegistered, IoPath::Direct]
            };
            assert!(
                want.contains(&l.io_path),
                "{heap} {off}+{len}: {:?} ({}), want {want:?}",
                l.io_path,
                l.io_path_reason
            );
            let got = read_back(&l.fd, l.buffer_size);
            assert!(
                got[..len as usize] == device_bytes(&dev, off, len)[..],
                "{heap} {off}+{len}: bytes differ from the device's"
            );
            assert!(got[len as usize..].iter().all(|&b| b == 0), "padding");
            eprintln!(
                "{heap} {off}+{len}: {:?} ({}) in {:?}",
                l.io_path, l.io_path_reason, l.total_time
            );
            drop(l);
            assert_eq!(fd_count(), fds, "{heap}: fds left behind");
        }
    }
}

#[test]
fn memfd_is_not_a_dma_buf_and_takes_the_direct_path() {
    let Some(dev) = device("DMABUF_LOADER_TEST_NVME") else {
        return;
    };
    let loader = loader_with(|_| {});
    let l = load(&loader, &dev, "memfd", 0, 4 << 20).unwrap();
    assert_ne!(l.io_path, IoPath::DmabufRegistered);
    if expect_available() {
        assert!(
            l.io_path_reason.contains("not a dma-buf"),
            "{}",
            l.io_path_reason
        );
    }
    assert!(read_back(&l.fd, 4 << 20) == device_bytes(&dev, 0, 4 << 20));
}

#[test]
fn non_nvme_block_device_is_refused_and_falls_back_with_the_errno() {
    let Some(dev) = device("DMABUF_LOADER_TEST_OTHER_BLKDEV") else {
        return;
    };
    let loader = loader_with(|_| {});
    for heap in heaps_present(&loader) {
        let len = 2u64 << 20;
        let l = load(&loader, &dev, &heap, 0, len).unwrap();
        let want = if heap == "system" {
            IoPath::Buffered
        } else {
            IoPath::DirectRegistered
        };
        assert_eq!(l.io_path, want, "{heap}: {}", l.io_path_reason);
        if expect_available() {
            assert!(
                l.io_path_reason.contains("EINVAL") && l.io_path_reason.contains("register"),
                "{heap}: {}",
                l.io_path_reason
            );
        }
        assert!(
            read_back(&l.fd, len) == device_bytes(&dev, 0, len),
            "{heap}"
        );
    }
}

#[test]
fn forced_dmabuf_path_on_a_file_falls_back_with_the_reason() {
    let dir = std::env::var("DMABUF_LOADER_TEST_DIR").unwrap_or_else(|_| "/tmp".into());
    let path = std::path::Path::new(&dir).join(format!("regbuf-forced-{}", std::process::id()));
    let data: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let loader = loader_with(|c| c.force_io_path = Some(IoPath::DmabufRegistered));
    let f = File::open(&path).unwrap();
    let l = loader
        .load(f.as_fd(), &LoadRequest::default(), &LoadControl::default())
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_ne!(l.io_path, IoPath::DmabufRegistered, "{}", l.io_path_reason);
    assert!(
        l.io_path_reason.contains("-> "),
        "the refusal is recorded: {}",
        l.io_path_reason
    );
    assert!(read_back(&l.fd, l.buffer_size)[..data.len()] == data[..]);
}

#[test]
fn cancel_and_deadline_mid_load_free_everything() {
    let Some(dev) = device("DMABUF_LOADER_TEST_NVME") else {
        return;
    };
    // Small reads, few in flight: many completions, so the stop lands mid-load.
    let loader = loader_with(|c| {
        c.chunk_size = Some(64 << 10);
        c.queue_depth = Some(2);
    });
    for heap in heaps_present(&loader) {
        let fds = fd_count();
        let f = OpenOptions::new().read(true).open(&dev).unwrap();
        let req = LoadRequest {
            heap: Some(heap.clone()),
            length: Some(32 << 20),
            ..Default::default()
        };
        let calls = AtomicUsize::new(0);
        let ctl = LoadControl::default();
        let cancel = ctl.cancel.clone();
        let cb = |_: u64, _: u64| {
            if calls.fetch_add(1, Ordering::Relaxed) == 3 {
                cancel.cancel();
            }
        };
        let ctl = LoadControl {
            progress: Some(&cb),
            ..ctl
        };
        let e = loader.load(f.as_fd(), &req, &ctl).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Cancelled, "{heap}: {e:#}");
        assert!(
            calls.load(Ordering::Relaxed) < 32 * 16,
            "{heap}: stopped early"
        );

        let slow = |_: u64, _: u64| std::thread::sleep(Duration::from_millis(20));
        let ctl = LoadControl {
            deadline: Some(Instant::now() + Duration::from_millis(200)),
            progress: Some(&slow),
            ..Default::default()
        };
        let e = loader.load(f.as_fd(), &req, &ctl).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TimedOut, "{heap}: {e:#}");
        drop(f);
        assert_eq!(fd_count(), fds, "{heap}: fds left behind");
    }
}

#[test]
fn device_eio_is_an_io_error_and_frees_everything() {
    let (Some(dev), Some(sector)) = (
        device("DMABUF_LOADER_TEST_EIO_NVME"),
        device("DMABUF_LOADER_TEST_EIO_SECTOR"),
    ) else {
        return;
    };
    let bad = sector.parse::<u64>().unwrap() * 512;
    let loader = loader_with(|_| {});
    for heap in heaps_present(&loader) {
        let fds = fd_count();
        let (off, len) = (bad.saturating_sub(1 << 20) / 4096 * 4096, 2u64 << 20);
        let e = load(&loader, &dev, &heap, off, len).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io, "{heap}: {e:#}");
        assert_eq!(fd_count(), fds, "{heap}: fds left behind");
        // The bytes before the bad sector still load.
        let l = load(&loader, &dev, &heap, off, (bad - off) / 4096 * 4096).unwrap();
        if expect_available() {
            assert_eq!(l.io_path, IoPath::DmabufRegistered, "{}", l.io_path_reason);
        }
    }
}

#[test]
fn regular_file_target_is_tried_and_the_refusal_recorded() {
    let loader = loader_with(|_| {});
    if !loader.heaps().iter().any(|h| h.name == "system") {
        eprintln!("no system dma-heap: skipped (the VM rig has one)");
        return;
    }
    let dir = std::env::var("DMABUF_LOADER_TEST_DIR").unwrap_or_else(|_| "/tmp".into());
    let path = std::path::Path::new(&dir).join(format!("regbuf-file-{}", std::process::id()));
    let data: Vec<u8> = (0..(2 << 20) + 17).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    for round in 0..2 {
        let f = File::open(&path).unwrap();
        let req = LoadRequest {
            heap: Some("system".into()),
            ..Default::default()
        };
        let l = loader
            .load(f.as_fd(), &req, &LoadControl::default())
            .unwrap();
        eprintln!("file round {round}: {:?} ({})", l.io_path, l.io_path_reason);
        if expect_available() {
            // v3 implements dma-buf targets for block devices only.
            assert_eq!(l.io_path, IoPath::Buffered, "{}", l.io_path_reason);
            assert!(
                l.io_path_reason.contains("EOPNOTSUPP"),
                "round {round}: {}",
                l.io_path_reason
            );
        }
        assert!(read_back(&l.fd, l.buffer_size)[..data.len()] == data[..]);
    }
    std::fs::remove_file(&path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The extent route: regular files on ext4 on an allowed NVMe namespace.

/// The namespace under the scratch directory, when the rig says which it is.
fn extent_device() -> Option<PathBuf> {
    device("DMABUF_LOADER_TEST_EXTENT_DEVICE").map(PathBuf::from)
}

/// Whether loads of files in the scratch directory must take the extent route here.
fn expect_extents() -> bool {
    expect_available() && extent_device().is_some()
}

fn extent_loader(f: impl FnOnce(&mut Config)) -> Loader {
    let dev = extent_device();
    loader_with(|c| {
        c.file_extent_devices = dev.into_iter().collect();
        f(c)
    })
}

/// Writes `data` to a new file, syncs it and waits out the clock tick of its ctime, so the
/// route's "changed in the current tick" check does not send it elsewhere.
fn aged_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = common::write_file(dir, name, data);
    std::thread::sleep(Duration::from_millis(30));
    p
}

fn file_load(
    loader: &Loader,
    path: &Path,
    heap: &str,
    off: u64,
    len: u64,
    ctl: &LoadControl<'_>,
) -> Result<Loaded> {
    let f = File::open(path).unwrap();
    let req = LoadRequest {
        heap: Some(heap.into()),
        offset: off,
        length: Some(len),
        ..Default::default()
    };
    loader.load(f.as_fd(), &req, ctl)
}

fn assert_extent_route(l: &Loaded, what: &str) {
    if expect_extents() {
        assert_eq!(
            l.io_path,
            IoPath::DmabufRegistered,
            "{what}: {}",
            l.io_path_reason
        );
        assert!(
            l.io_path_reason.contains("blocks read from"),
            "{what}: {}",
            l.io_path_reason
        );
    }
}

#[test]
fn files_on_an_allowed_namespace_load_through_their_extents() {
    let _g = common::lock();
    let loader = extent_loader(|_| {});
    let heaps = heaps_present(&loader);
    if heaps.is_empty() {
        eprintln!("no system heap or udmabuf: skipped (the VM rig has both)");
        return;
    }
    let dir = common::scratch_dir();
    let data = common::pattern((9 << 20) + 333, 41);
    let path = aged_file(dir.path(), "extents", &data);
    // Aligned; unaligned head and tail (read through the file); a 512-byte-aligned range.
    for &(off, len) in &[
        (0u64, data.len() as u64),
        (3 * 4096 + 100, (5 << 20) + 333),
        (512 * 7, 1 << 20),
    ] {
        for heap in &heaps {
            let fds = fd_count();
            let l = file_load(&loader, &path, heap, off, len, &LoadControl::default())
                .unwrap_or_else(|e| panic!("{heap} {off}+{len}: {e:#}"));
            eprintln!(
                "{heap} file {off}+{len}: {:?} ({}) in {:?}",
                l.io_path, l.io_path_reason, l.total_time
            );
            assert_extent_route(&l, &format!("{heap} {off}+{len}"));
            let got = read_back(&l.fd, l.buffer_size);
            assert!(
                got[..len as usize] == data[off as usize..(off + len) as usize],
                "{heap} {off}+{len}: bytes differ from the file's"
            );
            assert!(got[len as usize..].iter().all(|&b| b == 0), "padding");
            drop(l);
            assert_eq!(fd_count(), fds, "{heap}: fds left behind");
        }
    }
}

#[test]
fn holes_and_unwritten_extents_read_as_zeros() {
    let _g = common::lock();
    let loader = extent_loader(|_| {});
    let dir = common::scratch_dir();
    // 1 MiB data | 2 MiB hole | 1 MiB fallocated (unwritten) | 1 MiB data.
    let mb = 1usize << 20;
    let a = common::pattern(mb, 7);
    let b = common::pattern(mb, 8);
    let path = dir.path().join("sparse");
    {
        let f = File::create(&path).unwrap();
        f.write_all_at(&a, 0).unwrap();
        f.set_len(5 * mb as u64).unwrap();
        nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FallocateFlags::empty(),
            3 * mb as i64,
            mb as i64,
        )
        .unwrap();
        f.write_all_at(&b, 4 * mb as u64).unwrap();
        f.sync_all().unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    let mut want = vec![0u8; 5 * mb];
    want[..mb].copy_from_slice(&a);
    want[4 * mb..].copy_from_slice(&b);
    for heap in heaps_present(&loader) {
        let l = file_load(
            &loader,
            &path,
            &heap,
            0,
            want.len() as u64,
            &LoadControl::default(),
        )
        .unwrap();
        eprintln!("{heap} sparse: {:?} ({})", l.io_path, l.io_path_reason);
        assert_extent_route(&l, &heap);
        if expect_extents() {
            assert!(
                l.io_path_reason
                    .contains(&format!("{} bytes of holes", 3 * mb)),
                "{heap}: the hole and the unwritten extent are zeros: {}",
                l.io_path_reason
            );
        }
        assert!(
            read_back(&l.fd, l.buffer_size)[..want.len()] == want[..],
            "{heap}"
        );
    }
}

#[test]
fn a_fresh_file_not_yet_written_back_loads_its_exact_bytes() {
    let _g = common::lock();
    let loader = extent_loader(|_| {});
    let dir = common::scratch_dir();
    for heap in heaps_present(&loader) {
        let data = common::pattern(6 << 20, 99);
        let path = dir.path().join(format!("fresh-{heap}"));
        File::create(&path).unwrap().write_all(&data).unwrap(); // no fsync: dirty pages
                                                                // At once: the route either writes the pages back (FIEMAP_FLAG_SYNC) and reads
                                                                // them, or steps down because the file changed in this clock tick.
        let l = file_load(
            &loader,
            &path,
            &heap,
            0,
            data.len() as u64,
            &LoadControl::default(),
        )
        .unwrap();
        eprintln!("{heap} fresh: {:?} ({})", l.io_path, l.io_path_reason);
        if expect_extents() && l.io_path != IoPath::DmabufRegistered {
            assert!(
                l.io_path_reason.contains("current clock tick"),
                "{heap}: {}",
                l.io_path_reason
            );
        }
        assert!(
            read_back(&l.fd, l.buffer_size)[..data.len()] == data[..],
            "{heap}"
        );
        // Rewritten (still dirty) and loaded a tick later: the route itself, exact bytes.
        let data = common::pattern(6 << 20, 100);
        File::create(&path).unwrap().write_all(&data).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let l = file_load(
            &loader,
            &path,
            &heap,
            0,
            data.len() as u64,
            &LoadControl::default(),
        )
        .unwrap();
        assert_extent_route(&l, &format!("{heap} dirty, a tick later"));
        assert!(
            read_back(&l.fd, l.buffer_size)[..data.len()] == data[..],
            "{heap}"
        );
    }
}

/// Loads `path` with small reads, one in flight, and runs `meddle` once from the progress
/// callback, i.e. between two reads of the load.
fn load_meddled(
    loader: &Loader,
    path: &Path,
    heap: &str,
    len: u64,
    meddle: &(dyn Fn() + Sync),
) -> Result<Loaded> {
    let once = AtomicBool::new(false);
    let cb = |_: u64, _: u64| {
        if !once.swap(true, Ordering::Relaxed) {
            meddle();
        }
    };
    let ctl = LoadControl {
        progress: Some(&cb),
        ..Default::default()
    };
    let r = file_load(loader, path, heap, 0, len, &ctl);
    assert!(
        once.load(Ordering::Relaxed),
        "the load never reported progress"
    );
    r
}

#[test]
fn truncate_and_rewrite_during_the_load_is_file_changed() {
    let _g = common::lock();
    let loader = extent_loader(|c| {
        c.chunk_size = Some(256 << 10);
        c.queue_depth = Some(1);
    });
    let dir = common::scratch_dir();
    for heap in heaps_present(&loader) {
        let old = common::pattern(8 << 20, 1);
        let new = common::pattern(8 << 20, 2);
        let path = aged_file(dir.path(), &format!("rewrite-{heap}"), &old);
        let rewrite = || {
            let mut f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(0).unwrap();
            f.write_all(&new).unwrap();
            f.sync_all().unwrap();
        };
        let r = load_meddled(&loader, &path, &heap, old.len() as u64, &rewrite);
        match &r {
            Ok(l) => eprintln!(
                "{heap} rewritten mid-load: {:?} ({})",
                l.io_path, l.io_path_reason
            ),
            Err(e) => eprintln!("{heap} rewritten mid-load: {e:#}"),
        }
        // Every path stamps the file before and after its reads (the extent route checks
        // its extents too): a rewrite in between is FILE_CHANGED, never one version or a mix.
        match r {
            Err(e) => assert_eq!(e.kind, ErrorKind::FileChanged, "{heap}: {e:#}"),
            Ok(l) => panic!(
                "{heap}: a file rewritten during its load was handed out ({:?}: {})",
                l.io_path, l.io_path_reason
            ),
        }
    }
}

#[test]
fn blocks_freed_and_reused_by_another_file_mid_load_are_never_handed_out() {
    let _g = common::lock();
    let loader = extent_loader(|c| {
        c.chunk_size = Some(256 << 10);
        c.queue_depth = Some(1);
    });
    let dir = common::scratch_dir();
    let len = 8usize << 20;
    let other = common::pattern(len, 77);
    for heap in heaps_present(&loader) {
        for how in ["punch", "truncate"] {
            let data = common::pattern(len, 5);
            let path = aged_file(dir.path(), &format!("freed-{heap}-{how}"), &data);
            let g_path = dir.path().join(format!("reuser-{heap}-{how}"));
            // Free F's blocks (keeping its size, so only the extent and ctime checks can
            // notice), commit the journal so ext4 may reuse them, and write G over them.
            let free_and_reuse = || {
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                if how == "punch" {
                    nix::fcntl::fallocate(
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        0,
                        len as i64,
                    )
                    .unwrap();
                } else {
                    f.set_len(0).unwrap();
                    f.set_len(len as u64).unwrap();
                }
                nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).unwrap();
                let mut g = File::create(&g_path).unwrap();
                g.write_all(&other).unwrap();
                g.sync_all().unwrap();
            };
            let r = load_meddled(&loader, &path, &heap, len as u64, &free_and_reuse);
            match &r {
                Ok(l) => eprintln!(
                    "{heap} {how} + reuse mid-load: {:?} ({})",
                    l.io_path, l.io_path_reason
                ),
                Err(e) => eprintln!("{heap} {how} + reuse mid-load: {e:#}"),
            }
            // Freeing F's blocks changes its ctime: FILE_CHANGED on every path, so neither
            // G's bytes nor F's zeros are ever handed out.
            match r {
                Err(e) => assert_eq!(e.kind, ErrorKind::FileChanged, "{heap} {how}: {e:#}"),
                Ok(l) => panic!(
                    "{heap} {how}: a file whose blocks were freed during its load was handed \
                     out ({:?}: {})",
                    l.io_path, l.io_path_reason
                ),
            }
            std::fs::remove_file(&g_path).unwrap();
        }
    }
}

#[test]
fn a_namespace_not_on_the_allowlist_falls_back_and_says_so() {
    let _g = common::lock();
    let dir = common::scratch_dir();
    let data = common::pattern(3 << 20, 13);
    let path = aged_file(dir.path(), "not-allowed", &data);
    let other = device("DMABUF_LOADER_TEST_NVME").map(PathBuf::from);
    for (devices, says) in [
        (Vec::new(), "file_extent_devices is empty"),
        (
            other.into_iter().collect::<Vec<_>>(),
            "is not one of the configured file_extent_devices",
        ),
    ] {
        let loader = loader_with(|c| c.file_extent_devices = devices.clone());
        for heap in heaps_present(&loader) {
            let l = file_load(
                &loader,
                &path,
                &heap,
                0,
                data.len() as u64,
                &LoadControl::default(),
            )
            .unwrap();
            eprintln!(
                "{heap} not allowed ({devices:?}): {:?} ({})",
                l.io_path, l.io_path_reason
            );
            assert_ne!(l.io_path, IoPath::DmabufRegistered, "{}", l.io_path_reason);
            if expect_available() && (devices.is_empty() || extent_device().is_some()) {
                assert!(
                    l.io_path_reason.contains(says),
                    "{heap}: {}",
                    l.io_path_reason
                );
            }
            assert!(
                read_back(&l.fd, l.buffer_size)[..data.len()] == data[..],
                "{heap}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// loadInto: a dma-buf the client brings.

const FILL: u8 = 0xa5;

/// A system-heap dma-buf of `size` bytes allocated the way a client does, every byte FILL
/// (written by loading a file of FILL bytes into it).
fn filled_target(loader: &Loader, dir: &Path, size: u64) -> OwnedFd {
    let (fd, heap) = loader.allocate_target("system", size).unwrap();
    assert_eq!(heap.kind, BufferKind::DmaHeap);
    let fill = common::write_file(dir, "fill", &vec![FILL; size as usize]);
    let f = File::open(fill).unwrap();
    loader
        .load_into(
            f.as_fd(),
            &LoadRequest::default(),
            fd.as_fd(),
            0,
            &LoadControl::default(),
        )
        .unwrap();
    fd
}

/// Loads `len` bytes at `off` of `src` into `target` at `toff` and checks the range holds
/// `want` and every other byte is still FILL.
fn check_into(
    loader: &Loader,
    src: &Path,
    (off, len): (u64, u64),
    (target, size, toff): (&OwnedFd, u64, u64),
    want: &[u8],
) -> Filled {
    let f = File::open(src).unwrap();
    let req = LoadRequest {
        offset: off,
        length: Some(len),
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
        .unwrap_or_else(|e| panic!("{} {off}+{len} at {toff}: {e:#}", src.display()));
    let got = read_back(target, size);
    let (a, b) = (toff as usize, (toff + len) as usize);
    assert!(got[a..b] == *want, "{:?}: the range differs", r.io_path);
    assert!(
        got[..a].iter().chain(&got[b..]).all(|&x| x == FILL),
        "{:?}: bytes outside the range were written",
        r.io_path
    );
    r
}

#[test]
fn raw_nvme_range_into_a_client_system_heap_dma_buf_at_an_offset() {
    let _g = common::lock();
    let Some(dev) = device("DMABUF_LOADER_TEST_NVME") else {
        return;
    };
    let loader = loader_with(|_| {});
    if !loader.heaps().iter().any(|h| h.name == "system") {
        eprintln!("no system heap: skipped");
        return;
    }
    let dir = common::scratch_dir();
    let size = 12u64 << 20;
    for (off, len, toff) in [
        (0u64, 4u64 << 20, 1u64 << 20),
        (4096 * 3 + 17, (3 << 20) + 5, (5 << 20) + 4096 + 17),
    ] {
        let fds = fd_count();
        let target = filled_target(&loader, dir.path(), size);
        let r = check_into(
            &loader,
            Path::new(&dev),
            (off, len),
            (&target, size, toff),
            &device_bytes(&dev, off, len),
        );
        eprintln!(
            "into system {off}+{len} at {toff}: {:?} ({})",
            r.io_path, r.io_path_reason
        );
        if expect_available() {
            assert_eq!(r.io_path, IoPath::DmabufRegistered, "{}", r.io_path_reason);
        } else {
            assert_eq!(r.io_path, IoPath::Buffered, "{}", r.io_path_reason);
        }
        drop(target);
        assert_eq!(fd_count(), fds, "an fd was kept");
    }
}

#[test]
fn a_file_into_a_client_dma_buf_takes_the_extent_route() {
    let _g = common::lock();
    let loader = extent_loader(|_| {});
    if !loader.heaps().iter().any(|h| h.name == "system") {
        eprintln!("no system heap: skipped");
        return;
    }
    let dir = common::scratch_dir();
    let data = common::pattern((4 << 20) + 99, 61);
    let path = aged_file(dir.path(), "into-src", &data);
    let size = 8u64 << 20;
    let target = filled_target(&loader, dir.path(), size);
    // The target offset is the file offset modulo 512, so the block-aligned body lands on a
    // dma-buf offset the NVMe queue can DMA to.
    let (off, len, toff) = (4096u64 + 3, (3 << 20) + 7, (2 << 20) + 3);
    let r = check_into(
        &loader,
        &path,
        (off, len),
        (&target, size, toff),
        &data[off as usize..(off + len) as usize],
    );
    eprintln!(
        "into system file {off}+{len} at {toff}: {:?} ({})",
        r.io_path, r.io_path_reason
    );
    if expect_extents() {
        assert_eq!(r.io_path, IoPath::DmabufRegistered, "{}", r.io_path_reason);
    }
}

/// CPU time of this process (all threads, user + system) and busy time of the whole machine
/// (user + nice + system + irq + softirq of every CPU), in clock ticks.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let proc = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    let all = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = all
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    (proc, cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6])
}

/// Loads `len` bytes of what `open` opens with each contender's loader, interleaved, the
/// order rotated each round, the source's page cache dropped before each load; prints each
/// load and the medians (wall time, this process's CPU per GiB, the guest's CPU per GiB).
fn run_bench(
    what: &str,
    open: &dyn Fn() -> File,
    len: u64,
    contenders: &[(&str, IoPath)],
    loaders: &[Loader],
) {
    let rounds: usize = std::env::var("DMABUF_LOADER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let tick = 100.0; // USER_HZ
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let i = (k + round) % contenders.len();
            let (heap, want) = contenders[i];
            let f = open();
            nix::fcntl::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .unwrap();
            let req = LoadRequest {
                heap: Some(heap.into()),
                length: Some(len),
                ..Default::default()
            };
            let (p0, s0) = cpu_ticks();
            let t = Instant::now();
            let l = loaders[i]
                .load(f.as_fd(), &req, &LoadControl::default())
                .unwrap();
            let wall = t.elapsed().as_secs_f64();
            let (p1, s1) = cpu_ticks();
            assert_eq!(l.io_path, want, "{what} {heap}: {}", l.io_path_reason);
            drop(l);
            let gib = len as f64 / (1u64 << 30) as f64;
            let (pc, sc) = ((p1 - p0) as f64 / tick / gib, (s1 - s0) as f64 / tick / gib);
            println!(
                "BENCH source={what} round={round} heap={heap} path={want:?} wall_ms={:.1} MiB/s={:.0} proc_cpu_s_per_GiB={pc:.2} guest_cpu_s_per_GiB={sc:.2}",
                wall * 1e3,
                len as f64 / (1 << 20) as f64 / wall
            );
            results[i].push((wall, pc, sc));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    for (i, &(heap, path)) in contenders.iter().enumerate() {
        let r = &results[i];
        let wall = median(r.iter().map(|x| x.0).collect());
        println!(
            "BENCH-SUMMARY source={what} heap={heap} path={path:?} rounds={rounds} cpus={cpus} MiB={} median_MiB/s={:.0} median_proc_cpu_s_per_GiB={:.2} median_guest_cpu_s_per_GiB={:.2}",
            len >> 20,
            len as f64 / (1 << 20) as f64 / wall,
            median(r.iter().map(|x| x.1).collect()),
            median(r.iter().map(|x| x.2).collect())
        );
    }
}

const BENCH_CONTENDERS: [(&str, IoPath); 4] = [
    ("system", IoPath::Buffered),
    ("system", IoPath::DmabufRegistered),
    ("udmabuf", IoPath::DirectRegistered),
    ("udmabuf", IoPath::DmabufRegistered),
];

/// The rig's bench (tools/vm: `vm bench`), not a check: the same raw NVMe range into the
/// system heap by BUFFERED (the status quo's CPU copy) vs DMABUF_REGISTERED, and into a
/// udmabuf by DIRECT_REGISTERED vs DMABUF_REGISTERED, interleaved, the order rotated each
/// round, the device's page cache dropped before each load. Prints wall time and CPU per GiB.
#[test]
#[ignore = "a benchmark: tools/vm's bench mode runs it on the seed kernel"]
fn bench_raw_range_paths() {
    let Some(dev) = device("DMABUF_LOADER_TEST_NVME") else {
        return;
    };
    let loaders: Vec<Loader> = BENCH_CONTENDERS
        .iter()
        .map(|&(_, p)| loader_with(|c| c.force_io_path = Some(p)))
        .collect();
    run_bench(
        "raw",
        &|| File::open(&dev).unwrap(),
        48 << 20,
        &BENCH_CONTENDERS,
        &loaders,
    );
}

/// The same comparison for a regular file on the NVMe ext4 disk: DMABUF_REGISTERED is the
/// extent route here (FIEMAP, the checks, READ_FIXED from the namespace), against the file
/// system's own paths.
#[test]
#[ignore = "a benchmark: tools/vm's bench mode runs it on the seed kernel"]
fn bench_file_paths() {
    if extent_device().is_none() {
        return;
    }
    let dir = common::scratch_dir();
    let len = 48u64 << 20;
    let path = aged_file(dir.path(), "bench", &common::pattern(len as usize, 3));
    let loaders: Vec<Loader> = BENCH_CONTENDERS
        .iter()
        .map(|&(_, p)| extent_loader(|c| c.force_io_path = Some(p)))
        .collect();
    run_bench(
        "file",
        &|| File::open(&path).unwrap(),
        len,
        &BENCH_CONTENDERS,
        &loaders,
    );
}
