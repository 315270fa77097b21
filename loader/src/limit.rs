//! The device-limit reader: O_DIRECT io_uring reads into anonymous memory and nothing else
//! (no buffer provider, no copy, no checksum), through the same ring (`sys::ring`) the engine
//! submits with. Benchmarks (tools/bench, `dmabuf-loader bench`) measure the engine against
//! it; it lives here because the ring is private to this crate.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::sys::mman::Mapping;
use crate::sys::ring::ReadRing;

/// Reads the first `size` bytes of `path` with O_DIRECT, `chunk`-byte reads, `depth` in flight,
/// into pre-faulted anonymous memory, registered with io_uring (READ_FIXED, one slot per read
/// in flight) when `fixed`; returns the time from the first submission to the last
/// completion. Fails if the file system refuses O_DIRECT or a read fails.
pub fn device_read(
    path: &Path,
    size: u64,
    depth: u32,
    chunk: usize,
    fixed: bool,
) -> anyhow::Result<Duration> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let mem = Mapping::anonymous(depth as usize * chunk)?;
    mem.populate_write(0..mem.len())?;
    let mut ring = ReadRing::new(depth, Arc::new(mem))?;
    if fixed {
        ring.enable_fixed(depth)?;
        for s in 0..depth as usize {
            ring.register_slot(s as u16, s * chunk..(s + 1) * chunk)?;
        }
    }
    let mut free: Vec<usize> = (0..depth as usize).collect();
    let mut next = 0u64;
    let mut cqes = Vec::new();
    let mut got = 0u64;
    let t = Instant::now();
    loop {
        while next < size {
            let Some(slot) = free.pop() else { break };
            // The last read may end mid-block: O_DIRECT wants the aligned length (the slot
            // is a whole chunk) and returns the short count at EOF.
            let n = ((size - next).min(chunk as u64) as usize)
                .next_multiple_of(4096)
                .min(chunk);
            ring.push_read(
                f.as_fd(),
                slot * chunk..slot * chunk + n,
                next,
                slot as u64,
                fixed.then_some(slot as u16),
            )?;
            next += n as u64;
        }
        if ring.in_flight() == 0 {
            break;
        }
        if !ring.submit_and_wait(1)? {
            continue; // a tick without a completion: the reference read keeps waiting
        }
        cqes.clear();
        ring.reap(&mut cqes);
        for c in &cqes {
            if c.result < 0 {
                bail!(
                    "O_DIRECT read failed: {}",
                    std::io::Error::from_raw_os_error(-c.result)
                );
            }
            got += c.result as u64;
            free.push(c.user_data as usize);
        }
    }
    let d = t.elapsed();
    drop(ring.finish());
    if got != size {
        bail!("device-limit run read {got} of {size} bytes");
    }
    Ok(d)
}

/// Bytes of the open file `fd` that sit in the page cache (cachestat(2), Linux 6.5+; `None`
/// where the kernel lacks it): what a load left behind for everyone else to evict.
pub fn page_cache_bytes(fd: impl std::os::fd::AsFd) -> Option<u64> {
    crate::sys::cachestat::cachestat(fd, 0, 0)
        .ok()
        .map(|c| c.nr_cache * crate::loader::page_size())
}
