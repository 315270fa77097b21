//! Huge pages for memfd-backed buffers: every page-size policy gives the exact bytes on every
//! path, a hugetlb request the pool cannot serve falls back to shmem pages without failing
//! the load, and `Loaded::page_size` says what the buffer got.
//!
//! What this machine offers decides what can be checked: with no hugetlb pool and shmem THP
//! off (the dev host's defaults) the tests check the fallbacks. Set
//! `DMABUF_LOADER_EXPECT_HUGE=hugetlb,thp` (after reserving pages with
//! /proc/sys/vm/nr_hugepages and setting shmem_enabled to `advise`) to make them also assert
//! that the buffers really got huge pages.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use dmabuf_loader::*;

mod common;
use common::*;

fn expect_huge(kind: &str) -> bool {
    std::env::var("DMABUF_LOADER_EXPECT_HUGE")
        .map(|v| v.split(',').any(|k| k.trim() == kind))
        .unwrap_or(false)
}

fn read_back(fd: &OwnedFd, size: u64) -> Vec<u8> {
    dmabuf_loader::BufferView::map(fd, size as usize)
        .unwrap()
        .as_slice()
        .to_vec()
}

fn load(loader: &Loader, path: &Path, data: &[u8], read_only: bool) -> Loaded {
    let f = File::open(path).unwrap();
    let req = LoadRequest {
        heap: Some("memfd".into()),
        read_only,
        checksum: ChecksumType::Xxh3_64,
        ..Default::default()
    };
    let l = loader
        .load(f.as_fd(), &req, &LoadControl::default())
        .unwrap_or_else(|e| panic!("load of {} failed: {e}", path.display()));
    assert_eq!(l.data_len, data.len() as u64);
    assert_eq!(l.buffer_size, (data.len() as u64).div_ceil(4096) * 4096);
    let got = read_back(&l.fd, l.buffer_size);
    assert!(
        got[..data.len()] == *data,
        "bytes differ ({:?}, {} B pages)",
        l.io_path,
        l.page_size
    );
    assert!(
        got[data.len()..].iter().all(|&b| b == 0),
        "padding not zero"
    );
    assert_eq!(
        l.checksum,
        Some((ChecksumType::Xxh3_64, twox_hash::XxHash3_64::oneshot(data)))
    );
    l
}

fn loader(policy: HugePages, path: Option<IoPath>) -> Loader {
    Loader::new(Config {
        huge_pages: policy,
        force_io_path: path,
        ..Default::default()
    })
    .unwrap()
}

const PATHS: &[IoPath] = &[
    IoPath::DirectRegistered,
    IoPath::Direct,
    IoPath::Buffered,
    IoPath::BufferedSync,
];

/// The PMD-sized THP the kernel may give a shmem mapping here, if any.
fn thp_pmd() -> Option<u64> {
    let sizes = dmabuf_loader::shmem_thp_sizes();
    sizes.contains(&(2 << 20)).then_some(2 << 20)
}

fn free_2m() -> u64 {
    dmabuf_loader::hugetlb_pools()
        .iter()
        .find(|p| p.page_size == 2 << 20)
        .map_or(0, |p| p.free)
}

#[test]
fn hugetlb_the_pool_cannot_serve_falls_back_without_failing() {
    let _g = lock();
    let dir = scratch_dir();
    // 8 MiB: a whole number of 2 MiB pages, so hugetlb is tried on the memfd heap.
    let data = pattern(8 << 20, 7);
    let path = write_file(dir.path(), "hugetlb-fallback", &data);
    let before = fd_count();
    for &p in PATHS {
        let l = load(&loader(HugePages::Hugetlb, Some(p)), &path, &data, false);
        assert_eq!(l.io_path, p, "forced {p:?}");
        if free_2m() >= 4 && !expect_huge("hugetlb") {
            // A pool exists and served it: that is the other test's case.
            assert_eq!(l.page_size, 2 << 20);
            continue;
        }
        if expect_huge("hugetlb") {
            assert_eq!(l.page_size, 2 << 20, "hugetlb expected on {p:?}");
        } else {
            // The pool had no free page: shmem pages, THP where the kernel allows it.
            let ok = [4096].into_iter().chain(thp_pmd()).collect::<Vec<_>>();
            assert!(ok.contains(&l.page_size), "{} not in {ok:?}", l.page_size);
        }
    }
    assert_eq!(fd_count(), before, "an fd leaked on the fallback");
}

#[test]
fn every_page_size_policy_gives_identical_bytes() {
    let _g = lock();
    let dir = scratch_dir();
    // A whole number of huge pages, and one that is not (hugetlb never pads a memfd).
    for (name, len) in [("hp-even", 8usize << 20), ("hp-odd", (4 << 20) + 4097)] {
        let data = pattern(len, len as u64);
        let path = write_file(dir.path(), name, &data);
        for policy in [
            HugePages::Off,
            HugePages::Thp,
            HugePages::Hugetlb,
            HugePages::Auto,
        ] {
            for &p in PATHS {
                let l = load(&loader(policy, Some(p)), &path, &data, false);
                let huge_ok = len % (2 << 20) == 0;
                let want_hugetlb = matches!(policy, HugePages::Hugetlb | HugePages::Auto)
                    && huge_ok
                    && (expect_huge("hugetlb") || free_2m() >= (len as u64 >> 21));
                let what = format!("{name} {policy:?} {p:?}: {} B pages", l.page_size);
                match policy {
                    HugePages::Off => assert_eq!(l.page_size, 4096, "{what}"),
                    _ if want_hugetlb => assert_eq!(l.page_size, 2 << 20, "{what}"),
                    _ if expect_huge("thp") && thp_pmd().is_some() => {
                        // The odd size's tail gets small pages; most of it is still huge.
                        assert_eq!(l.page_size, 2 << 20, "{what}")
                    }
                    _ => assert!(
                        l.page_size == 4096 || Some(l.page_size) == thp_pmd(),
                        "{what}"
                    ),
                }
            }
        }
    }
}

#[test]
fn read_only_seal_works_on_every_page_size() {
    let _g = lock();
    let dir = scratch_dir();
    let data = pattern(4 << 20, 3);
    let path = write_file(dir.path(), "hp-ro", &data);
    for policy in [HugePages::Off, HugePages::Thp, HugePages::Hugetlb] {
        let l = load(&loader(policy, None), &path, &data, true);
        let len = std::num::NonZeroUsize::new(l.buffer_size as usize).unwrap();
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        // SAFETY: a fresh mapping request; if it (wrongly) succeeded we leak it, nothing
        // aliases.
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
        assert!(w.is_err(), "{policy:?}: a read-only buffer mapped writable");
    }
}

#[test]
fn heaps_report_their_page_sizes() {
    let l = loader(HugePages::Auto, None);
    let memfd = l.resolve_heap(Some("memfd")).unwrap();
    assert_eq!(
        memfd.page_sizes.first(),
        Some(&4096),
        "{:?}",
        memfd.page_sizes
    );
    assert!(memfd.page_sizes.windows(2).all(|w| w[0] < w[1]));
    if let Some(pmd) = thp_pmd() {
        assert!(memfd.page_sizes.contains(&pmd));
    }
    let off = loader(HugePages::Off, None);
    assert_eq!(
        off.resolve_heap(Some("memfd")).unwrap().page_sizes,
        vec![4096]
    );
}
