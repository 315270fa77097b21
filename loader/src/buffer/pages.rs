//! Page sizes for memfd-backed buffers (memfd, udmabuf): hugetlb, shmem THP or 4 KiB.
//!
//! Faulting and zeroing 262,144 4 KiB pages is most of a cold 1 GiB load's CPU time and a
//! warm load's wall time (tools/bench/README.md). The kernel offers two ways round it, chosen
//! here at run time for every buffer from what the machine has at that moment:
//!
//! * **hugetlb** (`MFD_HUGETLB`): pages from the pool an administrator reserved
//!   (`/sys/kernel/mm/hugepages/hugepages-<N>kB`). The mmap reserves every page of the buffer,
//!   so a pool too small fails right there (and we fall back) instead of at fault time.
//!   Used only when the pool's free pages hold the whole buffer and the buffer is a whole
//!   number of huge pages (a hugetlb memfd cannot have a partial page; for udmabuf, where the
//!   dma-buf wraps only the bytes asked for, up to 1/32 of padding is accepted).
//! * **shmem THP** (`MADV_HUGEPAGE` on the memfd mapping) when
//!   `/sys/kernel/mm/transparent_hugepage/shmem_enabled` (or a per-size mTHP
//!   `hugepages-<N>kB/shmem_enabled`) allows `advise`, `always` or `within_size`. The kernel
//!   falls back to 4 KiB pages by itself, fault by fault, when it has no huge page to give.
//!
//! Neither ever fails a load: every refusal ends in ordinary 4 KiB shmem pages. What the
//! buffer really got is reported in `Loaded::page_size` (hugetlb: guaranteed by the
//! reservation; THP: the PMD-mapped share of the mapping, read back from /proc/self/smaps).

use std::path::Path;

pub use crate::api::HugePages;

/// The base page size.
pub const BASE_PAGE: u64 = 4096;
/// Buffers smaller than this always get base pages (a huge page would be mostly padding).
pub const HUGE_MIN: u64 = 2 << 20;

const HUGETLB_DIR: &str = "/sys/kernel/mm/hugepages";
const THP_DIR: &str = "/sys/kernel/mm/transparent_hugepage";

/// What the buffer was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagePlan {
    /// A hugetlb memfd of pages of this size (bytes).
    Hugetlb(u64),
    /// A shmem memfd whose mapping got MADV_HUGEPAGE; the kernel may use up to this size.
    Thp(u64),
    Base,
}

/// One hugetlb pool: page size and free pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugetlbPool {
    pub page_size: u64,
    pub free: u64,
    pub total: u64,
}

/// hugetlb pools under `dir` (normally /sys/kernel/mm/hugepages), largest page first.
pub fn hugetlb_pools_in(dir: &Path) -> Vec<HugetlbPool> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let read = |p: &Path, f: &str| -> Option<u64> {
        std::fs::read_to_string(p.join(f)).ok()?.trim().parse().ok()
    };
    let mut pools: Vec<HugetlbPool> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let p = e.path();
            Some(HugetlbPool {
                page_size: kb << 10,
                free: read(&p, "free_hugepages")?,
                total: read(&p, "nr_hugepages")?,
            })
        })
        .collect();
    pools.sort_by_key(|p| std::cmp::Reverse(p.page_size));
    pools
}

pub fn hugetlb_pools() -> Vec<HugetlbPool> {
    hugetlb_pools_in(Path::new(HUGETLB_DIR))
}

/// The selected word of a sysfs THP setting ("always [advise] never" -> "advise").
fn selected(setting: &str) -> Option<&str> {
    let s = setting.split('[').nth(1)?;
    s.split(']').next()
}

fn allows(word: &str) -> bool {
    matches!(word, "always" | "within_size" | "advise" | "force")
}

/// shmem THP sizes (bytes) the kernel may use for a MADV_HUGEPAGE mapping, largest first,
/// read from `dir` (normally /sys/kernel/mm/transparent_hugepage): the PMD size when the
/// top-level `shmem_enabled` allows it, and every mTHP size whose own `shmem_enabled` allows
/// it (`inherit` follows the top level; older kernels have no per-size files).
pub fn shmem_thp_sizes_in(dir: &Path) -> Vec<u64> {
    let top = std::fs::read_to_string(dir.join("shmem_enabled")).unwrap_or_default();
    let top_allows = selected(&top).is_some_and(allows);
    let pmd: Option<u64> = std::fs::read_to_string(dir.join("hpage_pmd_size"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let mut sizes = Vec::new();
    let mut per_size = false;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(kb) = name
                .strip_prefix("hugepages-")
                .and_then(|n| n.strip_suffix("kB"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let Ok(s) = std::fs::read_to_string(e.path().join("shmem_enabled")) else {
                continue;
            };
            per_size = true;
            let ok = match selected(&s) {
                Some("inherit") => top_allows,
                Some(w) => allows(w),
                None => false,
            };
            if ok {
                sizes.push(kb << 10);
            }
        }
    }
    if !per_size && top_allows {
        sizes.extend(pmd);
    }
    sizes.sort_unstable_by_key(|&s| std::cmp::Reverse(s));
    sizes
}

pub fn shmem_thp_sizes() -> Vec<u64> {
    shmem_thp_sizes_in(Path::new(THP_DIR))
}

/// Page sizes a memfd-backed provider may use right now, ascending (4096 first): what
/// `HeapInfo::page_sizes` reports.
pub fn available_sizes(policy: HugePages) -> Vec<u64> {
    let mut v = vec![BASE_PAGE];
    if policy != HugePages::Off {
        v.extend(shmem_thp_sizes());
        if policy != HugePages::Thp {
            v.extend(
                hugetlb_pools()
                    .iter()
                    .filter(|p| p.total > 0)
                    .map(|p| p.page_size),
            );
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The hugetlb page size to try for a `size`-byte buffer, if any: the largest pool with
/// enough free pages (any pool when `insist`) where the buffer is a whole number of pages,
/// or, with `pad_ok`, wastes at most 1/32 on padding.
pub fn pick_hugetlb(pools: &[HugetlbPool], size: u64, pad_ok: bool, insist: bool) -> Option<u64> {
    pools
        .iter()
        .filter(|p| size >= p.page_size)
        .filter(|p| {
            let rounded = size.next_multiple_of(p.page_size);
            rounded == size || (pad_ok && (rounded - size) * 32 <= size)
        })
        .fold(None::<(&HugetlbPool, bool)>, |best, p| {
            // The largest pool with room wins; `insist` falls back to the largest that
            // fits the size at all (an empty 1 GiB pool must not hide a full 2 MiB one).
            let room = p.free >= size.div_ceil(p.page_size);
            match best {
                Some((_, true)) => best,
                Some((_, false)) if !room => best,
                _ if room || insist => Some((p, room)),
                _ => best,
            }
        })
        .map(|(p, _)| p.page_size)
}

/// The plan for a `size`-byte memfd-backed buffer (first choice; the allocation falls back
/// from hugetlb to THP/base when the kernel refuses).
pub fn plan(policy: HugePages, size: u64, pad_ok: bool) -> PagePlan {
    if policy == HugePages::Off || size < HUGE_MIN {
        return PagePlan::Base;
    }
    if policy != HugePages::Thp {
        let pools = hugetlb_pools();
        if let Some(ps) = pick_hugetlb(&pools, size, pad_ok, policy == HugePages::Hugetlb) {
            return PagePlan::Hugetlb(ps);
        }
    }
    thp_or_base(size)
}

/// THP when the kernel allows it for shmem, else base pages.
pub fn thp_or_base(size: u64) -> PagePlan {
    match shmem_thp_sizes().into_iter().find(|&s| s <= size) {
        Some(s) => PagePlan::Thp(s),
        None => PagePlan::Base,
    }
}

/// kB of the `field` line of the /proc/self/smaps entry starting at address `start`.
pub fn smaps_field_kb(smaps: &str, start: usize, field: &str) -> Option<u64> {
    let head = format!("{start:x}-");
    let mut in_entry = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let is_header = first.split_once('-').is_some_and(|(a, b)| {
            u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok()
        });
        if is_header {
            in_entry = line.starts_with(&head);
            continue;
        }
        if in_entry {
            if let Some(v) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
                return v.split_whitespace().next()?.parse().ok();
            }
        }
    }
    None
}

/// The page size the buffer behind the mapping at `start` (`len` bytes) really got, for a
/// THP plan: the PMD size when at least half the mapping is PMD-mapped shmem, else 4096
/// (mTHP sizes below the PMD are not visible per mapping; reported as 4096).
pub fn thp_page_size_seen(start: usize, len: usize, pmd: u64) -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return BASE_PAGE;
    };
    match smaps_field_kb(&smaps, start, "ShmemPmdMapped") {
        Some(kb) if kb << 10 >= len as u64 / 2 => pmd,
        _ => BASE_PAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn hugetlb_pools_are_read_largest_first() {
        let d = tempfile::tempdir().unwrap();
        for (kb, free, nr) in [(2048, "3\n", "4\n"), (1048576, "0\n", "0\n")] {
            write(d.path(), &format!("hugepages-{kb}kB/free_hugepages"), free);
            write(d.path(), &format!("hugepages-{kb}kB/nr_hugepages"), nr);
        }
        let pools = hugetlb_pools_in(d.path());
        assert_eq!(
            pools,
            vec![
                HugetlbPool {
                    page_size: 1 << 30,
                    free: 0,
                    total: 0
                },
                HugetlbPool {
                    page_size: 2 << 20,
                    free: 3,
                    total: 4
                },
            ]
        );
        assert!(hugetlb_pools_in(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn hugetlb_is_picked_only_when_the_pool_holds_the_buffer() {
        let pools = [
            HugetlbPool {
                page_size: 1 << 30,
                free: 1,
                total: 1,
            },
            HugetlbPool {
                page_size: 2 << 20,
                free: 3,
                total: 4,
            },
        ];
        assert_eq!(pick_hugetlb(&pools, 1 << 30, false, false), Some(1 << 30));
        assert_eq!(pick_hugetlb(&pools, 6 << 20, false, false), Some(2 << 20));
        assert_eq!(
            pick_hugetlb(&pools, 8 << 20, false, false),
            None,
            "4 pages, 3 free"
        );
        assert_eq!(
            pick_hugetlb(&pools, 8 << 20, false, true),
            Some(2 << 20),
            "insist"
        );
        assert_eq!(
            pick_hugetlb(&pools, (4 << 20) + 4096, false, false),
            None,
            "partial page"
        );
        assert_eq!(
            pick_hugetlb(&pools, (4 << 20) + 4096, true, true),
            None,
            "too much padding"
        );
        assert_eq!(
            pick_hugetlb(&pools, (64 << 20) - 4096, true, true),
            Some(2 << 20)
        );
        assert_eq!(
            pick_hugetlb(&pools, 1 << 20, true, true),
            None,
            "smaller than a page"
        );
        // An empty 1 GiB pool must not hide a 2 MiB pool that holds the buffer, insisting
        // or not (issue 16: HugePages::Hugetlb picked the empty 1 GiB pool, failed, and fell
        // back to THP).
        let empty_big = [
            HugetlbPool {
                page_size: 1 << 30,
                free: 0,
                total: 0,
            },
            HugetlbPool {
                page_size: 2 << 20,
                free: 600,
                total: 600,
            },
        ];
        for insist in [false, true] {
            assert_eq!(
                pick_hugetlb(&empty_big, 1 << 30, false, insist),
                Some(2 << 20),
                "insist {insist}"
            );
        }
        assert_eq!(
            pick_hugetlb(&empty_big[..1], 1 << 30, false, true),
            Some(1 << 30),
            "insist with no pool that has room: the largest that fits"
        );
    }

    #[test]
    fn thp_settings_are_parsed_per_size() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "shmem_enabled",
            "always within_size advise [never] deny force\n",
        );
        write(d.path(), "hpage_pmd_size", "2097152\n");
        write(
            d.path(),
            "hugepages-2048kB/shmem_enabled",
            "always [inherit] within_size advise never\n",
        );
        write(
            d.path(),
            "hugepages-64kB/shmem_enabled",
            "always inherit within_size [advise] never\n",
        );
        write(
            d.path(),
            "hugepages-16kB/shmem_enabled",
            "always inherit within_size advise [never]\n",
        );
        assert_eq!(
            shmem_thp_sizes_in(d.path()),
            vec![64 << 10],
            "inherit follows never"
        );
        write(
            d.path(),
            "shmem_enabled",
            "always within_size [advise] never deny force\n",
        );
        assert_eq!(shmem_thp_sizes_in(d.path()), vec![2 << 20, 64 << 10]);
        // A kernel without per-size files: the PMD size follows the top level.
        let old = tempfile::tempdir().unwrap();
        write(
            old.path(),
            "shmem_enabled",
            "always within_size [advise] never deny force\n",
        );
        write(old.path(), "hpage_pmd_size", "2097152\n");
        assert_eq!(shmem_thp_sizes_in(old.path()), vec![2 << 20]);
        write(old.path(), "shmem_enabled", "[never] deny\n");
        assert!(shmem_thp_sizes_in(old.path()).is_empty());
    }

    #[test]
    fn small_buffers_and_off_get_base_pages() {
        assert_eq!(plan(HugePages::Off, 1 << 30, false), PagePlan::Base);
        assert_eq!(
            plan(HugePages::Auto, HUGE_MIN - 4096, false),
            PagePlan::Base
        );
        assert_eq!(plan(HugePages::Hugetlb, 4096, true), PagePlan::Base);
    }

    #[test]
    fn smaps_entry_fields_are_found_by_start_address() {
        let smaps = "\
7f0000000000-7f0040000000 rw-s 00000000 00:01 1234    /memfd:x (deleted)
Size:            1048576 kB
ShmemPmdMapped:   1046528 kB
7f0040000000-7f0040001000 rw-p 00000000 00:00 0
Size:                  4 kB
ShmemPmdMapped:        0 kB
";
        assert_eq!(
            smaps_field_kb(smaps, 0x7f00_0000_0000, "ShmemPmdMapped"),
            Some(1046528)
        );
        assert_eq!(
            smaps_field_kb(smaps, 0x7f00_4000_0000, "ShmemPmdMapped"),
            Some(0)
        );
        assert_eq!(smaps_field_kb(smaps, 0x7f00_4000_0000, "Size"), Some(4));
        assert_eq!(smaps_field_kb(smaps, 0x1000, "Size"), None);
    }
}
