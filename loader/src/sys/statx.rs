//! statx(2) for STATX_DIOALIGN (not wrapped by nix), and CLOCK_REALTIME_COARSE (the clock
//! the kernel stamps ctime from) for the extent route's change detection.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

/// Direct-I/O alignment of an open file, `None` when the file system does not report it
/// (then O_DIRECT is either unsupported or the block size applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DioAlign {
    pub mem: u32,
    pub offset: u32,
}

/// What statx says about direct I/O: (reported at all, memory alignment, offset alignment).
fn dio_query(fd: impl AsFd) -> nix::Result<(bool, u32, u32)> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let empty: &CStr = c"";
    // SAFETY: AT_EMPTY_PATH with an empty path queries the fd itself; `stx` is a properly
    // sized, writable statx buffer.
    let r = unsafe {
        libc::statx(
            fd.as_fd().as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            stx.as_mut_ptr(),
        )
    };
    Errno::result(r)?;
    // SAFETY: zero-initialised and filled by a successful statx.
    let stx = unsafe { stx.assume_init() };
    Ok((
        stx.stx_mask & libc::STATX_DIOALIGN != 0,
        stx.stx_dio_mem_align,
        stx.stx_dio_offset_align,
    ))
}

pub fn dio_align(fd: impl AsFd) -> nix::Result<Option<DioAlign>> {
    let (reported, mem, offset) = dio_query(fd)?;
    if !reported || offset == 0 {
        return Ok(None);
    }
    Ok(Some(DioAlign {
        mem: mem.max(1),
        offset,
    }))
}

/// Whether the file system says this file takes no direct I/O at all (STATX_DIOALIGN
/// reported with alignment 0): on ext4, data journaling, encryption without inline crypto,
/// verity or inline data, i.e. the file's bytes are not (only) plain in its blocks.
pub fn dio_unsupported(fd: impl AsFd) -> nix::Result<bool> {
    let (reported, _, offset) = dio_query(fd)?;
    Ok(reported && offset == 0)
}

/// CLOCK_REALTIME_COARSE as (seconds, nanoseconds): the timestamp the kernel gives a
/// changed inode's ctime (before multigrain timestamps, and as their floor after).
pub fn coarse_realtime() -> nix::Result<(i64, i64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, valid and writable for the call.
    Errno::result(unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) })?;
    // time_t and c_long are 32 bits on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((ts.tv_sec as i64, ts.tv_nsec as i64))
}
