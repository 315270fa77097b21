//! How much memory the machine has, and the check that a buffer fits in it.

use anyhow::Context;

/// Smallest buffer whose size is checked against the memory available.
pub const MEMORY_CHECK_FROM: u64 = 64 << 20;

/// A `/proc/meminfo` field in bytes ("MemTotal", "MemAvailable", ...).
pub fn meminfo_bytes(field: &str) -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {field} in /proc/meminfo"))
}

/// Bytes this process's memory cgroup (and every ancestor with a limit) can still take:
/// limit - usage + the file cache it could reclaim, the smallest along the hierarchy.
/// `None` when no memory cgroup limits us (or none is mounted). Memory-limited cgroups are
/// how Android and container hosts bound a service; a shmem buffer larger than the cgroup's
/// room would not fail at allocation time but end in the cgroup's OOM killer.
pub fn cgroup_headroom() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_headroom_in(&own, std::path::Path::new("/sys/fs/cgroup"))
}

fn read_u64(p: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(stat: &str, field: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// [`cgroup_headroom`] for a /proc/self/cgroup text and a cgroup mount root (tests).
pub fn cgroup_headroom_in(own: &str, root: &std::path::Path) -> Option<u64> {
    // v1: "4:memory:/a/b"; the memory controller has its own mount.
    let v1 = own.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
        ctrl.split(',').any(|c| c == "memory").then_some(path)
    });
    if let Some(rel) = v1 {
        let dir = root.join("memory").join(rel.trim_start_matches('/'));
        let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
        // hierarchical_memory_limit is the tightest limit on the way up.
        let limit = stat_field(&stat, "hierarchical_memory_limit")?;
        if limit >= 1 << 62 {
            return None; // "unlimited" is PAGE_COUNTER_MAX pages
        }
        let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
        let file = stat_field(&stat, "total_inactive_file").unwrap_or(0)
            + stat_field(&stat, "total_active_file").unwrap_or(0);
        return Some((limit + file).saturating_sub(usage));
    }
    // v2: "0::/a/b"; walk up to the root, keeping the smallest headroom.
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir = root.join(rel.trim_start_matches('/'));
    let mut best: Option<u64> = None;
    while dir.starts_with(root) && dir != root {
        let max = std::fs::read_to_string(dir.join("memory.max")).ok();
        if let Some(limit) = max.and_then(|m| m.trim().parse::<u64>().ok()) {
            let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
            let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            let file = stat_field(&stat, "file").unwrap_or(0);
            let room = (limit + file).saturating_sub(usage);
            best = Some(best.map_or(room, |b| b.min(room)));
        }
        if !dir.pop() {
            break;
        }
    }
    best
}

/// Refuses a buffer the machine cannot hold (more than MemAvailable, or more than the
/// memory cgroup we run in can still take: [`cgroup_headroom`]). shmem pages are only
/// allocated as the I/O faults them in, and the system dma-heap allocates page by page with
/// ordinary GFP flags, so without this check a request larger than memory would start, drive
/// the machine into reclaim and end with the OOM killer choosing a victim (the 6.12 system
/// heap did exactly that in the VM rig), instead of failing at once with a clear error.
///
/// Buffers under [`MEMORY_CHECK_FROM`] skip it: one cannot exhaust memory by itself (the
/// service's in-flight budget bounds how many run at once), and reading /proc/meminfo would be
/// a large part of a small load's latency.
pub fn check_fits_in_memory(size: u64) -> anyhow::Result<()> {
    if size < MEMORY_CHECK_FROM {
        return Ok(());
    }
    let available = meminfo_bytes("MemAvailable")?;
    if size > available {
        anyhow::bail!(
            "a {size}-byte buffer needs that much memory and the machine has {available} bytes available"
        );
    }
    if let Some(room) = cgroup_headroom() {
        if size > room {
            anyhow::bail!(
                "a {size}-byte buffer needs that much memory and this service's memory cgroup has room for {room} bytes"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let total = meminfo_bytes("MemTotal").unwrap();
        let available = meminfo_bytes("MemAvailable").unwrap();
        assert!(total >= 64 << 20 && total % 1024 == 0, "{total}");
        assert!(
            available > 0 && available <= total,
            "{available} of {total}"
        );
        assert!(meminfo_bytes("MemTot").is_err(), "a prefix is not a field");
    }

    #[test]
    fn cgroup_headroom_reads_v1_and_v2() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // v1: limit 100 MiB, 60 MiB used of which 10 MiB file cache -> 50 MiB room.
        let v1 = r.join("memory/svc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            v1.join("memory.stat"),
            "cache 1\nhierarchical_memory_limit 104857600\ntotal_inactive_file 4194304\ntotal_active_file 6291456\n",
        )
        .unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "62914560\n").unwrap();
        assert_eq!(
            cgroup_headroom_in("5:devices:/\n4:memory:/svc\n", r),
            Some(50 << 20)
        );
        std::fs::write(
            v1.join("memory.stat"),
            "hierarchical_memory_limit 9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_headroom_in("4:memory:/svc\n", r), None, "unlimited");
        // v2: the parent's limit is the tighter one.
        let (p, c) = (r.join("a"), r.join("a/b"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("memory.max"), "max\n").unwrap();
        std::fs::write(p.join("memory.max"), "209715200\n").unwrap();
        std::fs::write(p.join("memory.current"), "104857600\n").unwrap();
        std::fs::write(p.join("memory.stat"), "anon 1\nfile 20971520\n").unwrap();
        assert_eq!(cgroup_headroom_in("0::/a/b\n", r), Some(120 << 20));
        assert_eq!(cgroup_headroom_in("0::/\n", r), None);
    }

    #[test]
    fn small_buffers_skip_the_check_and_huge_ones_fail_it() {
        check_fits_in_memory(MEMORY_CHECK_FROM - 1).unwrap();
        let e = check_fits_in_memory(u64::MAX).unwrap_err();
        assert!(format!("{e}").contains("bytes available"), "{e}");
    }
}
