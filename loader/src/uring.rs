//! The io_uring read loop shared by the direct and the buffered paths: keeps `depth` reads
//! of `chunk` bytes in flight over one contiguous range, resubmits short reads and EAGAIN,
//! and reports progress between completions (where cancellation and the deadline are
//! checked).

use std::os::fd::BorrowedFd;

use nix::errno::Errno;

use crate::api::LoadError;
use crate::sys::ring::{Completion, ReadRing};

/// One contiguous range to read: file bytes `[file_start, file_start+len)` land at mapping
/// offset `mem_start`.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub mem_start: usize,
    pub file_start: u64,
    pub len: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub chunk: usize,
    pub depth: u32,
    /// Direct I/O: a refused read (EINVAL/EFAULT/EOPNOTSUPP) means "fall back", and a short
    /// read whose remainder breaks this (offset, memory) alignment is left to the caller.
    pub direct_align: Option<(u64, u64)>,
    /// Registered-buffer slice size (a multiple of `chunk`); `None` = plain reads.
    pub fixed_slice: Option<usize>,
}

/// Bytes the loop could not read with its own alignment (a direct short read at EOF).
#[derive(Clone, Copy, Debug)]
pub struct Leftover {
    pub mem_off: usize,
    pub file_off: u64,
    pub len: usize,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub leftovers: Vec<Leftover>,
    /// Set when buffer registration failed part-way and later reads went unregistered.
    pub fixed_downgrade: Option<String>,
}

#[derive(Debug)]
pub enum LoopError {
    /// Direct I/O was refused by the kernel for this file/memory (caller falls back).
    Refused(Errno),
    /// A read returned 0 before the end: the file is shorter than when validated.
    Eof {
        file_off: u64,
    },
    Io {
        errno: Errno,
        file_off: u64,
    },
    /// Progress callback said stop (cancelled / deadline).
    Stopped(LoadError),
    Ring(std::io::Error),
}

#[derive(Clone, Copy)]
struct Pending {
    mem_off: usize,
    file_off: u64,
    len: usize,
    slot: Option<u16>,
}

/// Reads `r` through `ring`. `progress(n)` is called with the bytes each completion added;
/// returning an error stops the loop (reads in flight are waited for by the ring).
pub fn read_range(
    ring: &mut ReadRing,
    fd: BorrowedFd<'_>,
    r: Range,
    p: Params,
    progress: &mut dyn FnMut(u64) -> Result<(), LoadError>,
) -> Result<Outcome, LoopError> {
    let mut out = Outcome::default();
    let mut fixed_slice = p.fixed_slice;
    if let Some(slice) = fixed_slice {
        let n = r.len.div_ceil(slice as u64);
        if n > u16::MAX as u64 {
            fixed_slice = None;
            out.fixed_downgrade = Some(format!("{n} registered slices exceed the table"));
        }
    }
    let mut registered: Vec<bool> = Vec::new();
    let mut slab: Vec<Option<Pending>> = Vec::with_capacity(p.depth as usize);
    let mut free: Vec<usize> = Vec::new();
    let mut cqes: Vec<Completion> = Vec::with_capacity(p.depth as usize * 2);
    let mut next: u64 = 0;

    let push = |ring: &mut ReadRing,
                slab: &mut Vec<Option<Pending>>,
                free: &mut Vec<usize>,
                pd: Pending| {
        let idx = match free.pop() {
            Some(i) => i,
            None => {
                slab.push(None);
                slab.len() - 1
            }
        };
        slab[idx] = Some(pd);
        ring.push_read(
            fd,
            pd.mem_off..pd.mem_off + pd.len,
            pd.file_off,
            idx as u64,
            pd.slot,
        )
    };

    loop {
        while ring.in_flight() < p.depth as usize && next < r.len {
            let len = (r.len - next).min(p.chunk as u64) as usize;
            let mem_off = r.mem_start + next as usize;
            let mut slot = None;
            if let Some(slice) = fixed_slice {
                let s = (next / slice as u64) as usize;
                if registered.len() <= s {
                    registered.resize(s + 1, false);
                }
                if !registered[s] {
                    let start = r.mem_start + s * slice;
                    let end = (start + slice).min(r.mem_start + r.len as usize);
                    match ring.register_slot(s as u16, start..end) {
                        Ok(()) => registered[s] = true,
                        Err(e) => {
                            log::info!("registering buffer slice {s} failed ({e}); continuing with unregistered O_DIRECT");
                            out.fixed_downgrade =
                                Some(format!("registering a buffer slice failed: {e}"));
                            fixed_slice = None;
                        }
                    }
                }
                if fixed_slice.is_some() {
                    slot = Some(s as u16);
                }
            }
            let pd = Pending {
                mem_off,
                file_off: r.file_start + next,
                len,
                slot,
            };
            push(ring, &mut slab, &mut free, pd).map_err(LoopError::Ring)?;
            next += len as u64;
        }
        if ring.in_flight() == 0 {
            return Ok(out);
        }
        if !ring.submit_and_wait(1).map_err(LoopError::Ring)? {
            // Nothing completed within a tick: cancelled or past the deadline ends the load
            // even if the device never answers (the ring then cancels what is in flight).
            progress(0).map_err(LoopError::Stopped)?;
            continue;
        }
        cqes.clear();
        ring.reap(&mut cqes);
        for c in &cqes {
            let idx = c.user_data as usize;
            let pd = slab[idx].take().expect("completion for a pending read");
            free.push(idx);
            if c.result < 0 {
                let errno = Errno::from_raw(-c.result);
                match errno {
                    Errno::EAGAIN | Errno::EINTR => {
                        push(ring, &mut slab, &mut free, pd).map_err(LoopError::Ring)?;
                        continue;
                    }
                    Errno::EINVAL | Errno::EFAULT | Errno::EOPNOTSUPP
                        if p.direct_align.is_some() =>
                    {
                        return Err(LoopError::Refused(errno));
                    }
                    _ => {
                        return Err(LoopError::Io {
                            errno,
                            file_off: pd.file_off,
                        })
                    }
                }
            }
            let n = c.result as usize;
            if n == 0 {
                return Err(LoopError::Eof {
                    file_off: pd.file_off,
                });
            }
            if n < pd.len {
                let rest = Pending {
                    mem_off: pd.mem_off + n,
                    file_off: pd.file_off + n as u64,
                    len: pd.len - n,
                    slot: pd.slot,
                };
                let aligned = match p.direct_align {
                    None => true,
                    Some((off_align, mem_align)) => {
                        rest.file_off % off_align == 0
                            && rest.len as u64 % off_align == 0
                            && rest.mem_off as u64 % mem_align == 0
                    }
                };
                if aligned {
                    push(ring, &mut slab, &mut free, rest).map_err(LoopError::Ring)?;
                } else {
                    out.leftovers.push(Leftover {
                        mem_off: rest.mem_off,
                        file_off: rest.file_off,
                        len: rest.len,
                    });
                }
            }
            progress(n as u64).map_err(LoopError::Stopped)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::api::ErrorKind;
    use crate::sys::mman::Mapping;

    /// A read the kernel never completes (an empty pipe stands in for a device that does not
    /// answer) cannot hold the load: the loop asks `progress(0)` every tick, its deadline
    /// error ends the loop, and dropping the ring cancels the read instead of waiting forever.
    #[test]
    fn a_read_that_never_completes_still_ends_at_the_deadline() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut ring = ReadRing::new(4, Arc::new(Mapping::anonymous(1 << 20).unwrap())).unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut calls = 0;
        let t = Instant::now();
        let e = read_range(
            &mut ring,
            r.as_fd(),
            Range {
                mem_start: 0,
                file_start: 0,
                len: 1 << 20,
            },
            Params {
                chunk: 1 << 20,
                depth: 1,
                direct_align: None,
                fixed_slice: None,
            },
            &mut |n| {
                calls += 1;
                assert_eq!(n, 0, "no byte can arrive from an empty pipe");
                if Instant::now() >= deadline {
                    Err(LoadError::msg(ErrorKind::TimedOut, "deadline"))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, LoopError::Stopped(ref l) if l.kind == ErrorKind::TimedOut),
            "{e:?}"
        );
        assert!(calls >= 1);
        assert_eq!(ring.in_flight(), 1);
        drop(ring);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
