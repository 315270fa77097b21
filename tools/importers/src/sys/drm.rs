//! DRM ioctls on a vgem node: the driver's name, dumb buffers, PRIME import and export, GEM
//! handle close.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::{ioctl_readwrite, ioctl_write_ptr};

const DRM_IOCTL_BASE: u8 = b'd';

/// struct drm_version (include/uapi/drm/drm.h).
#[repr(C)]
struct DrmVersion {
    version_major: libc::c_int,
    version_minor: libc::c_int,
    version_patchlevel: libc::c_int,
    name_len: libc::size_t,
    name: *mut libc::c_char,
    date_len: libc::size_t,
    date: *mut libc::c_char,
    desc_len: libc::size_t,
    desc: *mut libc::c_char,
}

/// struct drm_gem_close.
#[repr(C)]
struct DrmGemClose {
    handle: u32,
    pad: u32,
}

/// struct drm_prime_handle.
#[repr(C)]
struct DrmPrimeHandle {
    handle: u32,
    flags: u32,
    fd: i32,
}

/// struct drm_mode_create_dumb (include/uapi/drm/drm_mode.h).
#[repr(C)]
struct DrmModeCreateDumb {
    height: u32,
    width: u32,
    bpp: u32,
    flags: u32,
    handle: u32,
    pitch: u32,
    size: u64,
}

/// struct drm_mode_destroy_dumb.
#[repr(C)]
struct DrmModeDestroyDumb {
    handle: u32,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<DrmVersion>() == 64);
    assert!(std::mem::size_of::<DrmPrimeHandle>() == 12);
    assert!(std::mem::size_of::<DrmModeCreateDumb>() == 32);
};

ioctl_readwrite!(drm_ioctl_version, DRM_IOCTL_BASE, 0x00, DrmVersion);
ioctl_write_ptr!(drm_ioctl_gem_close, DRM_IOCTL_BASE, 0x09, DrmGemClose);
ioctl_readwrite!(
    drm_ioctl_prime_handle_to_fd,
    DRM_IOCTL_BASE,
    0x2d,
    DrmPrimeHandle
);
ioctl_readwrite!(
    drm_ioctl_prime_fd_to_handle,
    DRM_IOCTL_BASE,
    0x2e,
    DrmPrimeHandle
);
ioctl_readwrite!(
    drm_ioctl_mode_create_dumb,
    DRM_IOCTL_BASE,
    0xb2,
    DrmModeCreateDumb
);
ioctl_readwrite!(
    drm_ioctl_mode_destroy_dumb,
    DRM_IOCTL_BASE,
    0xb4,
    DrmModeDestroyDumb
);

/// The DRM driver's name ("vgem", "i915", ...) of an open DRM node.
pub fn driver_name(dev: BorrowedFd<'_>) -> nix::Result<String> {
    let mut v = DrmVersion {
        version_major: 0,
        version_minor: 0,
        version_patchlevel: 0,
        name_len: 0,
        name: std::ptr::null_mut(),
        date_len: 0,
        date: std::ptr::null_mut(),
        desc_len: 0,
        desc: std::ptr::null_mut(),
    };
    // SAFETY: `v` is a valid drm_version; with every length 0 the kernel writes no string,
    // only the lengths and version numbers into `v`.
    unsafe { drm_ioctl_version(dev.as_raw_fd(), &mut v) }?;
    let mut name = vec![0u8; v.name_len];
    v.name = name.as_mut_ptr().cast();
    v.date_len = 0;
    v.desc_len = 0;
    // SAFETY: `name` has `v.name_len` writable bytes, which is at most what the kernel copies
    // into `v.name`; date and desc have length 0, so nothing is written through them.
    unsafe { drm_ioctl_version(dev.as_raw_fd(), &mut v) }?;
    name.truncate(v.name_len.min(name.len()));
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// A dumb buffer the driver created (its GEM handle on this file, row pitch, size).
#[derive(Clone, Copy, Debug)]
pub struct Dumb {
    pub handle: u32,
    pub pitch: u32,
    pub size: u64,
}

/// DRM_IOCTL_MODE_CREATE_DUMB: a `width` x `height` buffer of `bpp` bits per pixel.
pub fn create_dumb(dev: BorrowedFd<'_>, width: u32, height: u32, bpp: u32) -> nix::Result<Dumb> {
    let mut a = DrmModeCreateDumb {
        height,
        width,
        bpp,
        flags: 0,
        handle: 0,
        pitch: 0,
        size: 0,
    };
    // SAFETY: `a` is a valid drm_mode_create_dumb the kernel reads and fills in.
    unsafe { drm_ioctl_mode_create_dumb(dev.as_raw_fd(), &mut a) }?;
    Ok(Dumb {
        handle: a.handle,
        pitch: a.pitch,
        size: a.size,
    })
}

/// DRM_IOCTL_MODE_DESTROY_DUMB: drops this file's handle of a dumb buffer.
pub fn destroy_dumb(dev: BorrowedFd<'_>, handle: u32) -> nix::Result<()> {
    let mut a = DrmModeDestroyDumb { handle };
    // SAFETY: `a` is a valid drm_mode_destroy_dumb; the kernel only reads the handle.
    unsafe { drm_ioctl_mode_destroy_dumb(dev.as_raw_fd(), &mut a) }.map(drop)
}

/// DRM_IOCTL_PRIME_FD_TO_HANDLE: imports a dma-buf, returns this file's GEM handle of it.
pub fn prime_import(dev: BorrowedFd<'_>, dmabuf: BorrowedFd<'_>) -> nix::Result<u32> {
    let mut a = DrmPrimeHandle {
        handle: 0,
        flags: 0,
        fd: dmabuf.as_raw_fd(),
    };
    // SAFETY: `a` is a valid drm_prime_handle naming an fd we hold open for the call; the
    // kernel takes its own reference to the dma-buf and writes the handle into `a`.
    unsafe { drm_ioctl_prime_fd_to_handle(dev.as_raw_fd(), &mut a) }?;
    Ok(a.handle)
}

/// DRM_IOCTL_PRIME_HANDLE_TO_FD: exports a GEM handle as a dma-buf fd; `flags` is
/// O_CLOEXEC, optionally with O_RDWR (DRM_CLOEXEC, DRM_RDWR).
pub fn prime_export(dev: BorrowedFd<'_>, handle: u32, flags: i32) -> nix::Result<OwnedFd> {
    let mut a = DrmPrimeHandle {
        handle,
        flags: flags as u32,
        fd: -1,
    };
    // SAFETY: `a` is a valid drm_prime_handle; on success the kernel installs a new fd in
    // `a.fd`, which nothing else owns.
    unsafe { drm_ioctl_prime_handle_to_fd(dev.as_raw_fd(), &mut a) }?;
    // SAFETY: `a.fd` was just created for us by the kernel and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(a.fd) })
}

/// DRM_IOCTL_GEM_CLOSE: releases this file's handle (EINVAL if it is not one).
pub fn gem_close(dev: BorrowedFd<'_>, handle: u32) -> nix::Result<()> {
    let a = DrmGemClose { handle, pad: 0 };
    // SAFETY: `a` is a valid drm_gem_close the kernel only reads.
    unsafe { drm_ioctl_gem_close(dev.as_raw_fd(), &a) }.map(drop)
}
