//! V4L2 ioctls on a single-planar video capture node, streaming with
//! `V4L2_MEMORY_DMABUF`: the buffers are dma-bufs we bring, the driver imports them.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::{ioctl_read, ioctl_readwrite, ioctl_write_ptr};

pub const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub const V4L2_MEMORY_DMABUF: u32 = 4;
pub const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
pub const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;
pub const V4L2_BUF_FLAG_ERROR: u32 = 0x0000_0040;

/// struct v4l2_capability (include/uapi/linux/videodev2.h).
#[repr(C)]
struct V4l2Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

/// struct v4l2_pix_format.
#[repr(C)]
#[derive(Clone, Copy)]
struct V4l2PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    priv_: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

/// The `fmt` union of struct v4l2_format: 200 bytes, 8-byte aligned (v4l2_window holds
/// pointers).
#[repr(C)]
union V4l2FormatUnion {
    pix: V4l2PixFormat,
    raw_data: [u8; 200],
    _align: [u64; 25],
}

/// struct v4l2_format.
#[repr(C)]
struct V4l2Format {
    type_: u32,
    fmt: V4l2FormatUnion,
}

/// struct v4l2_requestbuffers.
#[repr(C)]
struct V4l2RequestBuffers {
    count: u32,
    type_: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

/// struct v4l2_timecode.
#[repr(C)]
#[derive(Clone, Copy)]
struct V4l2Timecode {
    type_: u32,
    flags: u32,
    frames: u8,
    seconds: u8,
    minutes: u8,
    hours: u8,
    userbits: [u8; 4],
}

/// The `m` union of struct v4l2_buffer.
#[repr(C)]
#[derive(Clone, Copy)]
union V4l2BufferM {
    offset: u32,
    userptr: libc::c_ulong,
    planes: *mut libc::c_void,
    fd: i32,
}

/// struct v4l2_buffer.
#[repr(C)]
#[derive(Clone, Copy)]
struct V4l2Buffer {
    index: u32,
    type_: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: libc::timeval,
    timecode: V4l2Timecode,
    sequence: u32,
    memory: u32,
    m: V4l2BufferM,
    length: u32,
    reserved2: u32,
    request_fd: i32,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<V4l2Capability>() == 104);
    assert!(std::mem::size_of::<V4l2Format>() == 208);
    assert!(std::mem::size_of::<V4l2RequestBuffers>() == 20);
    assert!(std::mem::size_of::<V4l2Buffer>() == 88);
};

ioctl_read!(vidioc_querycap, b'V', 0, V4l2Capability);
ioctl_readwrite!(vidioc_g_fmt, b'V', 4, V4l2Format);
ioctl_readwrite!(vidioc_reqbufs, b'V', 8, V4l2RequestBuffers);
ioctl_readwrite!(vidioc_querybuf, b'V', 9, V4l2Buffer);
ioctl_readwrite!(vidioc_qbuf, b'V', 15, V4l2Buffer);
ioctl_readwrite!(vidioc_dqbuf, b'V', 17, V4l2Buffer);
ioctl_write_ptr!(vidioc_streamon, b'V', 18, libc::c_int);
ioctl_write_ptr!(vidioc_streamoff, b'V', 19, libc::c_int);

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// What VIDIOC_QUERYCAP says about a node.
#[derive(Clone, Debug)]
pub struct Caps {
    pub driver: String,
    pub card: String,
    /// The node's own capabilities (device_caps when the driver reports them).
    pub device_caps: u32,
}

pub fn querycap(dev: BorrowedFd<'_>) -> nix::Result<Caps> {
    // SAFETY: v4l2_capability is plain old data; all-zero is a valid value.
    let mut c: V4l2Capability = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid v4l2_capability the kernel fills in.
    unsafe { vidioc_querycap(dev.as_raw_fd(), &mut c) }?;
    Ok(Caps {
        driver: c_str(&c.driver),
        card: c_str(&c.card),
        device_caps: if c.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
            c.device_caps
        } else {
            c.capabilities
        },
    })
}

/// The capture format in use (VIDIOC_G_FMT): width, height, fourcc, bytes per image.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub width: u32,
    pub height: u32,
    pub fourcc: u32,
    pub sizeimage: u32,
}

pub fn g_fmt_capture(dev: BorrowedFd<'_>) -> nix::Result<Format> {
    // SAFETY: v4l2_format is plain old data (the union's members all are); zero is valid.
    let mut f: V4l2Format = unsafe { std::mem::zeroed() };
    f.type_ = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    // SAFETY: `f` is a valid v4l2_format for a capture queue; the kernel fills `fmt.pix`.
    unsafe { vidioc_g_fmt(dev.as_raw_fd(), &mut f) }?;
    // SAFETY: for V4L2_BUF_TYPE_VIDEO_CAPTURE the kernel wrote the `pix` member.
    let pix = unsafe { f.fmt.pix };
    Ok(Format {
        width: pix.width,
        height: pix.height,
        fourcc: pix.pixelformat,
        sizeimage: pix.sizeimage,
    })
}

/// VIDIOC_REQBUFS for `count` DMABUF capture buffers (0 frees them); the count the driver
/// granted.
pub fn reqbufs_dmabuf(dev: BorrowedFd<'_>, count: u32) -> nix::Result<u32> {
    let mut r = V4l2RequestBuffers {
        count,
        type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
        memory: V4L2_MEMORY_DMABUF,
        capabilities: 0,
        flags: 0,
        reserved: [0; 3],
    };
    // SAFETY: `r` is a valid v4l2_requestbuffers the kernel reads and updates.
    unsafe { vidioc_reqbufs(dev.as_raw_fd(), &mut r) }?;
    Ok(r.count)
}

fn buffer(index: u32) -> V4l2Buffer {
    // SAFETY: v4l2_buffer is plain old data; all-zero (null planes pointer) is valid.
    let mut b: V4l2Buffer = unsafe { std::mem::zeroed() };
    b.index = index;
    b.type_ = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    b.memory = V4L2_MEMORY_DMABUF;
    b
}

/// What the driver said about one buffer.
#[derive(Clone, Copy, Debug)]
pub struct BufInfo {
    pub index: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub length: u32,
    pub sequence: u32,
}

fn info(b: &V4l2Buffer) -> BufInfo {
    BufInfo {
        index: b.index,
        bytesused: b.bytesused,
        flags: b.flags,
        length: b.length,
        sequence: b.sequence,
    }
}

/// VIDIOC_QUERYBUF of a DMABUF capture buffer.
pub fn querybuf(dev: BorrowedFd<'_>, index: u32) -> nix::Result<BufInfo> {
    let mut b = buffer(index);
    // SAFETY: `b` is a valid single-planar v4l2_buffer (no planes pointer is read).
    unsafe { vidioc_querybuf(dev.as_raw_fd(), &mut b) }?;
    Ok(info(&b))
}

/// VIDIOC_QBUF: queues `dmabuf` (of `length` bytes) as capture buffer `index`. The driver
/// attaches and maps the dma-buf here.
pub fn qbuf_dmabuf(
    dev: BorrowedFd<'_>,
    index: u32,
    dmabuf: BorrowedFd<'_>,
    length: u32,
) -> nix::Result<BufInfo> {
    let mut b = buffer(index);
    b.m = V4l2BufferM {
        fd: dmabuf.as_raw_fd(),
    };
    b.length = length;
    // SAFETY: `b` is a valid single-planar v4l2_buffer naming an fd we hold open for the
    // call; the kernel takes its own reference to the dma-buf.
    unsafe { vidioc_qbuf(dev.as_raw_fd(), &mut b) }?;
    Ok(info(&b))
}

/// VIDIOC_DQBUF (EAGAIN on a non-blocking node when no buffer is done).
pub fn dqbuf(dev: BorrowedFd<'_>) -> nix::Result<BufInfo> {
    let mut b = buffer(0);
    // SAFETY: `b` is a valid single-planar v4l2_buffer the kernel fills in.
    unsafe { vidioc_dqbuf(dev.as_raw_fd(), &mut b) }?;
    Ok(info(&b))
}

pub fn streamon(dev: BorrowedFd<'_>) -> nix::Result<()> {
    let t = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
    // SAFETY: the kernel reads one int, the buffer type.
    unsafe { vidioc_streamon(dev.as_raw_fd(), &t) }.map(drop)
}

pub fn streamoff(dev: BorrowedFd<'_>) -> nix::Result<()> {
    let t = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
    // SAFETY: the kernel reads one int, the buffer type.
    unsafe { vidioc_streamoff(dev.as_raw_fd(), &t) }.map(drop)
}
