//! statx(2) for STATX_DIOALIGN (not wrapped by nix).

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

pub fn dio_align(fd: impl AsFd) -> nix::Result<Option<DioAlign>> {
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
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return Ok(None);
    }
    Ok(Some(DioAlign {
        mem: stx.stx_dio_mem_align.max(1),
        offset: stx.stx_dio_offset_align,
    }))
}
