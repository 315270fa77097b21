//! Every `unsafe` line of the importer check: the DRM (vgem), V4L2 (vivid) and dma-buf ioctls
//! it issues and the mapping it reads and writes buffers through, each behind a safe wrapper.
//! The structs are the kernel's uAPI layouts (include/uapi/drm/drm.h, drm_mode.h,
//! linux/videodev2.h, linux/dma-buf.h), with their sizes asserted where the ioctl number
//! encodes them: a wrong layout would otherwise be ENOTTY at run time, or worse.

pub mod drm;
pub mod map;
pub mod v4l2;
