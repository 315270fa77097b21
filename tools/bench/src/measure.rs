//! What every part of the bench measures the same way: medians and spreads of the rounds,
//! CPU time (this process, its reaped children, another process), resident memory, and the
//! file's page cache. Everything comes from /proc (no `getrusage`: AOSP's nix has no
//! `resource` feature), so the library builds for Android too.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

/// A spread (max / min - 1) above this is flagged: no ratio from such a row means much.
pub const SPREAD_WARN: f64 = 0.25;

/// Median, min and max of one contender's rounds (any unit: GiB/s, seconds...).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        // The median of an even count is the mean of the middle two.
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: s[0],
            max: s[n - 1],
            n,
        })
    }

    /// max / min - 1 (0 for one sample).
    pub fn spread(&self) -> f64 {
        if self.min > 0.0 {
            self.max / self.min - 1.0
        } else {
            0.0
        }
    }

    pub fn too_wide(&self) -> bool {
        self.spread() > SPREAD_WARN
    }

    /// "" or the warning, for the end of a printed row.
    pub fn warning(&self) -> &'static str {
        if self.too_wide() {
            "  (spread too wide)"
        } else {
            ""
        }
    }
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as f64
}

/// Fields of /proc/PID/stat after the command name (index 0 = field 3, "state").
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = s.rsplit_once(')')?.1;
    Some(
        rest.split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect(),
    )
}

/// (user + sys of the process, user + sys of its reaped children), seconds.
fn cpu_pair(pid: &str) -> Option<(f64, f64)> {
    let f = stat_fields(pid)?;
    let t = clk_tck();
    // stat(5): utime 14, stime 15, cutime 16, cstime 17 (1-based) = index 11..14 here.
    Some((
        (f.get(11)? + f.get(12)?) as f64 / t,
        (f.get(13)? + f.get(14)?) as f64 / t,
    ))
}

/// CPU seconds (user + sys, every thread) this process has used.
pub fn cpu_self() -> f64 {
    cpu_pair("self").map_or(0.0, |c| c.0)
}

/// CPU seconds of this process's children that have been waited for (a `Command::output`'s).
pub fn cpu_children() -> f64 {
    cpu_pair("self").map_or(0.0, |c| c.1)
}

/// CPU seconds of process `pid` (0 once it is gone).
pub fn cpu_of(pid: u32) -> f64 {
    cpu_pair(&pid.to_string()).map_or(0.0, |c| c.0)
}

/// RssAnon + RssFile of `pid` in bytes: its own memory, without the shmem of the buffers it
/// maps (RssShmem), which belongs to the loads and is counted as the buffer.
pub fn rss_own(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        s.lines().find_map(|l| {
            l.strip_prefix(key)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
    };
    Some((kib("RssAnon:")? + kib("RssFile:")?) * 1024)
}

/// Bytes of `path` in the page cache (cachestat, 6.5+; `None` where the kernel lacks it).
pub fn cached_bytes(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    dmabuf_loader::page_cache_bytes(f.as_fd())
}

/// The load average line, for "how contended was this run".
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub const GIB: f64 = (1u64 << 30) as f64;

/// Bytes per second as GiB/s for `size` bytes read in `secs`.
pub fn gib_s(size: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    size as f64 / GIB / secs
}

/// Bytes of hugetlb pages in use machine-wide (every pool), from /proc/meminfo's default
/// pool and /sys/kernel/mm/hugepages for the others.
pub fn hugetlb_in_use() -> u64 {
    dmabuf_loader::hugetlb_pools()
        .iter()
        .map(|p| p.total.saturating_sub(p.free) * p.page_size)
        .sum()
}

/// Samples [`hugetlb_in_use`] every few milliseconds on a thread until [`Self::stop`]: the
/// peak a load added. hugetlb pages are not charged to memory cgroups (the pool is reserved
/// outside them), so a cgroup's peak misses a buffer made of them.
pub struct HugetlbPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
    base: u64,
}

impl HugetlbPeak {
    pub fn start() -> HugetlbPeak {
        let base = hugetlb_in_use();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("hugetlb-peak".into())
            .spawn(move || {
                let mut peak = base;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(hugetlb_in_use());
                    std::thread::sleep(std::time::Duration::from_millis(3));
                }
                peak.max(hugetlb_in_use())
            })
            .ok();
        HugetlbPeak { stop, handle, base }
    }

    /// Peak bytes in use above the start (0 when no pool or no thread).
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .map_or(0, |p| p.saturating_sub(self.base))
    }
}

/// The contender at position `k` of round `round` among `n`: the start rotates every round
/// and every other round runs backwards, so no contender always follows the same one. (A
/// plain rotation keeps each contender's predecessor; on a VM whose free memory goes back to
/// the host, a load that follows one that freed its pages to the pool it draws from is fast,
/// one that follows a hugetlb load pays for fresh pages: issue 16 saw a 10x "difference"
/// between two identical code paths that was only this.)
pub fn order(k: usize, round: usize, n: usize) -> usize {
    let i = (k + round / 2) % n;
    if round % 2 == 1 {
        n - 1 - i
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_and_flags_wide_rows() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert!(s.too_wide(), "3/1 - 1 = 200%");
        let e = Spread::of(&[1.0, 1.1, 1.05, 1.2]).unwrap();
        assert!((e.median - 1.075).abs() < 1e-9, "{e:?}");
        assert!(!e.too_wide(), "{}", e.spread());
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn the_order_covers_everyone_and_changes_predecessors() {
        let n = 4;
        let mut before = std::collections::HashSet::new();
        for round in 0..4 {
            let seq: Vec<usize> = (0..n).map(|k| order(k, round, n)).collect();
            let mut sorted = seq.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3], "round {round}: {seq:?}");
            for w in seq.windows(2) {
                before.insert((w[0], w[1]));
            }
        }
        // Contender 1 is preceded by 0 in forward rounds and by 2 in backward ones.
        assert!(
            before.contains(&(0, 1)) && before.contains(&(2, 1)),
            "{before:?}"
        );
    }

    #[test]
    fn cpu_and_rss_of_this_process_are_read() {
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_self() > 0.0);
        assert!(rss_own(std::process::id()).unwrap() > 0);
        assert_eq!(cpu_of(u32::MAX), 0.0, "no such process");
    }
}
