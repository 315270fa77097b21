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

/// Refuses a buffer the machine cannot hold (more than MemAvailable). shmem pages are only
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
    fn small_buffers_skip_the_check_and_huge_ones_fail_it() {
        check_fits_in_memory(MEMORY_CHECK_FROM - 1).unwrap();
        let e = check_fits_in_memory(u64::MAX).unwrap_err();
        assert!(format!("{e}").contains("bytes available"), "{e}");
    }
}
