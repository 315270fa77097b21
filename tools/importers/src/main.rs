//! dmabuf-loader-importers: do other drivers accept the service's buffers, and does the
//! service fill a buffer another driver exported? Run in the VM rig's guest (tools/vm, the
//! stock 6.12 stage, where Debian builds both test drivers as modules), against the running
//! service:
//!
//! - every dma-buf heap the service lists: a buffer it loaded is imported by **vgem**
//!   (DRM_IOCTL_PRIME_FD_TO_HANDLE gives a GEM handle; importing again gives the same handle;
//!   exporting that handle gives back the same dma-buf, so vgem holds our buffer, not a copy;
//!   DRM_IOCTL_GEM_CLOSE releases it, and a second close is EINVAL) and by **vivid**'s video
//!   capture node (VIDIOC_REQBUFS with V4L2_MEMORY_DMABUF, VIDIOC_QBUF of loaded buffers, which
//!   makes vb2 attach and map them; STREAMON; VIDIOC_DQBUF of a frame without
//!   V4L2_BUF_FLAG_ERROR; and most of its bytes no longer the file's: vivid wrote the frame into
//!   our dma-buf);
//! - a **vgem-exported buffer as the loadInto target**: a dumb buffer, PRIME-exported O_RDWR,
//!   filled with a marker byte through its mmap; the service fills an unaligned range of it; the
//!   range must equal the file and every other byte still be the marker. The exporter name
//!   and the I/O path the service reports are printed. An O_RDONLY export of the same buffer
//!   must be refused with TARGET_NOT_WRITABLE.
//!
//! Output, one line each, for tools/vm/guest/test.sh: `PASS <name> <what was proven>`,
//! `FAIL <name> <why>`, `INFO <fact>`, `SKIP <name> <why>`. Exit status 0 when nothing failed.
//! Without vgem or vivid in the kernel the checks that need it are SKIPped ("not built in this
//! kernel"), or FAIL with `--require`.

mod sys;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use dmabuf_loader_binder::aidl::HeapInfo::HeapInfo;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::{buffer_kind_name, error_code_name, io_path_name, Transport};
use dmabuf_loader_client::session::Session;
use dmabuf_loader_client::verify::dmabuf_exporter;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use sys::map::{CpuAccess, Mapping};
use sys::{drm, v4l2};

/// The byte every vgem target starts with, so bytes the service must not touch are recognisable.
const MARKER: u8 = 0x5a;
/// Longest wait for vivid's first frame (TCG is slow; vivid makes ~30 frames a second).
const FRAME_TIMEOUT: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "dmabuf-loader-importers",
    about = "vgem and vivid import the service's dma-bufs; a vgem buffer as a loadInto target"
)]
struct Args {
    /// A file of at least 8 MiB on a disk file system: the service loads ranges of it.
    #[arg(long)]
    file: PathBuf,
    /// Talk to the service on this unix socket (RPC binder) instead of kernel binder.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Kernel binder device (default: /dev/binderfs/binder, else /dev/binder).
    #[arg(long)]
    binder_device: Option<PathBuf>,
    /// A missing vgem or vivid is a failure, not a skip (the stock kernel has both).
    #[arg(long)]
    require: bool,
}

#[derive(Default)]
struct Report {
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, f: impl FnOnce() -> Result<String>) {
        match f() {
            Ok(detail) => println!("PASS {name} {detail}"),
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name} {e:#}");
            }
        }
    }
    fn missing(&mut self, name: &str, what: &str, require: bool) {
        if require {
            self.failed += 1;
            println!("FAIL {name} {what}: not found, and --require says this kernel has it");
        } else {
            println!("SKIP {name} {what}: not built in this kernel");
        }
    }
}

fn open_rw(path: &Path, extra: i32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | extra)
        .open(path)
}

/// The device nodes under `dir` whose names start with `prefix`, in name order.
fn nodes(dir: &str, prefix: &str) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("reading {dir}: {e}")),
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// vgem's primary node (dumb buffers need it; PRIME works on either node).
fn find_vgem() -> Result<Option<(PathBuf, File)>> {
    for p in nodes("/dev/dri", "card")? {
        let f = open_rw(&p, 0).with_context(|| format!("open {}", p.display()))?;
        if drm::driver_name(f.as_fd())
            .with_context(|| format!("DRM_IOCTL_VERSION on {}", p.display()))?
            == "vgem"
        {
            return Ok(Some((p, f)));
        }
    }
    Ok(None)
}

/// vivid's single-planar video capture node, opened non-blocking (DQBUF is polled).
fn find_vivid() -> Result<Option<(PathBuf, File, v4l2::Caps)>> {
    const V4L2_CAP_TOUCH: u32 = 0x1000_0000;
    let want = v4l2::V4L2_CAP_VIDEO_CAPTURE | v4l2::V4L2_CAP_STREAMING;
    for p in nodes("/dev", "video")? {
        let f = open_rw(&p, libc::O_NONBLOCK).with_context(|| format!("open {}", p.display()))?;
        let caps = v4l2::querycap(f.as_fd())
            .with_context(|| format!("VIDIOC_QUERYCAP on {}", p.display()))?;
        if caps.driver == "vivid"
            && caps.device_caps & want == want
            && caps.device_caps & V4L2_CAP_TOUCH == 0
        {
            return Ok(Some((p, f, caps)));
        }
    }
    Ok(None)
}

fn inode(fd: BorrowedFd<'_>) -> Result<u64> {
    Ok(nix::sys::stat::fstat(fd.as_raw_fd())
        .context("fstat")?
        .st_ino)
}

fn read_file(file: &File, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut v = vec![0u8; len as usize];
    file.read_exact_at(&mut v, offset)
        .with_context(|| format!("reading {len} bytes of the file at {offset}"))?;
    Ok(v)
}

/// A buffer the service loaded from `heap`: the first `len` bytes of `file`.
struct Loaded {
    fd: OwnedFd,
    size: u64,
    exporter: String,
}

fn load(session: &Session, file: &File, heap: &HeapInfo, len: u64) -> Result<Loaded> {
    let req = LoadRequest {
        heapName: heap.name.clone(),
        length: len as i64,
        ..Default::default()
    };
    let r = session
        .load(file, &req)?
        .map_err(|e| anyhow!("load of {len} bytes from heap {}: {e}", heap.name))?;
    ensure!(
        r.dataLength == len as i64,
        "the service loaded {} bytes, asked for {len}",
        r.dataLength
    );
    let fd = OwnedFd::from(r.buffer.context("LoadResult.buffer is null")?);
    let exporter = dmabuf_exporter(fd.as_fd())?.context("the loaded buffer is not a dma-buf")?;
    Ok(Loaded {
        fd,
        size: r.bufferSize as u64,
        exporter,
    })
}

/// vgem imports the buffer, holds that very dma-buf, and lets go of it.
fn vgem_import(vgem: BorrowedFd<'_>, b: &Loaded) -> Result<String> {
    let buf = b.fd.as_fd();
    let h = drm::prime_import(vgem, buf).context("DRM_IOCTL_PRIME_FD_TO_HANDLE")?;
    ensure!(h != 0, "PRIME import gave GEM handle 0");
    let again = drm::prime_import(vgem, buf).context("a second DRM_IOCTL_PRIME_FD_TO_HANDLE")?;
    let same = (|| {
        ensure!(again == h, "a second import gave handle {again}, the first {h}: PRIME keeps one GEM object per dma-buf");
        let back = drm::prime_export(vgem, h, libc::O_CLOEXEC)
            .context("DRM_IOCTL_PRIME_HANDLE_TO_FD of the imported handle")?;
        let (a, b) = (inode(back.as_fd())?, inode(buf)?);
        ensure!(a == b, "re-exporting the imported handle gave dma-buf inode {a}, ours is {b}: vgem holds a copy, not our buffer");
        Ok(a)
    })();
    let closed = drm::gem_close(vgem, h).context("DRM_IOCTL_GEM_CLOSE");
    let ino = same?;
    closed?;
    match drm::gem_close(vgem, h) {
        Err(Errno::EINVAL) => {}
        other => bail!("a second DRM_IOCTL_GEM_CLOSE of handle {h}: {other:?}, want EINVAL (the handle is gone)"),
    }
    Ok(format!(
        "{} dma-buf ({} bytes): PRIME import -> GEM handle {h}, a second import the same handle, its re-export the same dma-buf (inode {ino}); GEM_CLOSE released it (a second close: EINVAL)",
        b.exporter, b.size
    ))
}

/// Stops streaming and frees vivid's queue however the check ends.
struct Queue<'a>(BorrowedFd<'a>);

impl Drop for Queue<'_> {
    fn drop(&mut self) {
        let _ = v4l2::streamoff(self.0);
        if let Err(e) = v4l2::reqbufs_dmabuf(self.0, 0) {
            eprintln!("VIDIOC_REQBUFS(0) on vivid: {e}");
        }
    }
}

/// vivid captures a frame into dma-bufs the service loaded from `heap`.
fn vivid_import(
    session: &Session,
    file: &File,
    heap: &HeapInfo,
    vivid: BorrowedFd<'_>,
    fmt: v4l2::Format,
) -> Result<String> {
    let len = (fmt.sizeimage as u64).max(MIB).div_ceil(4096) * 4096;
    let n = v4l2::reqbufs_dmabuf(vivid, 2).context("VIDIOC_REQBUFS(2, V4L2_MEMORY_DMABUF)")?;
    let queue = Queue(vivid);
    ensure!(n >= 1, "VIDIOC_REQBUFS granted no buffer");
    let bufs: Vec<Loaded> = (0..n)
        .map(|_| load(session, file, heap, len))
        .collect::<Result<_>>()?;
    let q0 = v4l2::querybuf(vivid, 0).context("VIDIOC_QUERYBUF(0)")?;
    for (i, b) in bufs.iter().enumerate() {
        let size = u32::try_from(b.size).context("buffer size")?;
        v4l2::qbuf_dmabuf(vivid, i as u32, b.fd.as_fd(), size).with_context(|| {
            format!(
                "VIDIOC_QBUF of the {} dma-buf ({size} bytes) as buffer {i}",
                b.exporter
            )
        })?;
    }
    v4l2::streamon(vivid).context("VIDIOC_STREAMON")?;
    let started = Instant::now();
    let done = loop {
        match v4l2::dqbuf(vivid) {
            Ok(d) => break d,
            Err(Errno::EAGAIN) => {}
            Err(e) => bail!("VIDIOC_DQBUF: {e}"),
        }
        let left = FRAME_TIMEOUT.saturating_sub(started.elapsed());
        ensure!(
            !left.is_zero(),
            "no frame dequeued within {FRAME_TIMEOUT:?}"
        );
        let mut fds = [PollFd::new(vivid, PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        poll(&mut fds, PollTimeout::from(ms)).context("poll on vivid")?;
    };
    let waited = started.elapsed();
    // Every buffer back with us: vivid writes no more.
    drop(queue);
    ensure!(
        done.flags & v4l2::V4L2_BUF_FLAG_ERROR == 0,
        "buffer {} came back with V4L2_BUF_FLAG_ERROR",
        done.index
    );
    let b = bufs
        .get(done.index as usize)
        .with_context(|| format!("dequeued index {} of {n}", done.index))?;
    let used = done.bytesused as u64;
    ensure!(
        used > 0 && used <= b.size,
        "bytesused {used} of a {}-byte buffer",
        b.size
    );
    let want = read_file(file, 0, used)?;
    let map = Mapping::new(b.fd.as_fd(), b.size as usize, false)
        .context("mmap of the dequeued dma-buf")?;
    let changed = {
        let _cpu = CpuAccess::read(b.fd.as_fd()).context("DMA_BUF_IOCTL_SYNC(START|READ)")?;
        map.as_slice()[..used as usize]
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count() as u64
    };
    // Random file bytes match a test pattern's by chance in ~1/256 of the places.
    ensure!(
        changed * 2 > used,
        "only {changed} of the {used} frame bytes differ from the file's: vivid's frame is not in the dma-buf"
    );
    let fourcc: String = fmt
        .fourcc
        .to_le_bytes()
        .iter()
        .map(|&c| c as char)
        .collect();
    Ok(format!(
        "{n} {} dma-bufs ({} bytes each; QUERYBUF length {}) queued as V4L2_MEMORY_DMABUF capture buffers (QBUF: vb2 attached and mapped each), STREAMON, buffer {} dequeued after {:.1} s (sequence {}, {used} bytes of {}x{} {fourcc}, no ERROR flag); {changed} of those bytes no longer the file's: vivid's frame is in our dma-buf",
        b.exporter, b.size, q0.length, done.index, waited.as_secs_f64(), done.sequence, fmt.width, fmt.height
    ))
}

/// Destroys the dumb buffer however the check ends.
struct DumbBuffer<'a> {
    dev: BorrowedFd<'a>,
    handle: u32,
}

impl Drop for DumbBuffer<'_> {
    fn drop(&mut self) {
        if let Err(e) = drm::destroy_dumb(self.dev, self.handle) {
            eprintln!("DRM_IOCTL_MODE_DESTROY_DUMB: {e}");
        }
    }
}

/// A vgem dumb buffer as the loadInto target.
fn vgem_target(session: &Session, file: &File, vgem: BorrowedFd<'_>) -> Result<String> {
    // 1024 x 1025 x 32 bpp: 4 MiB and one row, so the range below ends off a page boundary.
    let dumb =
        drm::create_dumb(vgem, 1024, 1025, 32).context("DRM_IOCTL_MODE_CREATE_DUMB on vgem")?;
    let _dumb = DumbBuffer {
        dev: vgem,
        handle: dumb.handle,
    };
    let size = dumb.size;
    let target = drm::prime_export(vgem, dumb.handle, libc::O_RDWR | libc::O_CLOEXEC)
        .context("DRM_IOCTL_PRIME_HANDLE_TO_FD(DRM_RDWR)")?;
    let exporter = dmabuf_exporter(target.as_fd())?.context("vgem's export is not a dma-buf")?;
    {
        let mut map = Mapping::new(target.as_fd(), size as usize, true)
            .context("mmap(PROT_WRITE) of the vgem dma-buf")?;
        let _cpu = CpuAccess::write(target.as_fd()).context("DMA_BUF_IOCTL_SYNC(START|WRITE)")?;
        map.as_mut_slice().fill(MARKER);
    }
    // Unaligned everywhere: file offset, target offset, and the range's end.
    let (offset, toff) = (12_345u64, 4096 + 123u64);
    let len = size - toff - 777;
    let file_len = file.metadata()?.len();
    ensure!(
        file_len >= offset + len,
        "the file has {file_len} bytes, the check needs {}",
        offset + len
    );
    let req = LoadRequest {
        offset: offset as i64,
        length: len as i64,
        ..Default::default()
    };
    let started = Instant::now();
    let r = session
        .load_into(file, &req, &target, toff as i64)?
        .map_err(|e| anyhow!("loadInto of {len} bytes at {toff} of the vgem buffer: {e}"))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "INFO vgem-target: {size}-byte dumb buffer (pitch {}), fdinfo exp_name={exporter}; service: exporter={} kind={} path={} {} bytes at {} in {ms:.1} ms round trip; reason=\"{}\"",
        dumb.pitch,
        r.heapName,
        buffer_kind_name(r.bufferKind),
        io_path_name(r.ioPath),
        r.dataLength,
        r.dataOffset,
        r.ioPathReason
    );
    ensure!(
        (r.dataLength, r.dataOffset, r.bufferSize) == (len as i64, toff as i64, size as i64),
        "the service reports {} bytes at {} of {}, asked for {len} at {toff} of {size}",
        r.dataLength,
        r.dataOffset,
        r.bufferSize
    );
    ensure!(
        r.heapName == exporter,
        "the service names the exporter {:?}, the kernel {exporter:?}",
        r.heapName
    );
    let want = read_file(file, offset, len)?;
    {
        let map = Mapping::new(target.as_fd(), size as usize, false)
            .context("mmap of the filled vgem dma-buf")?;
        let _cpu = CpuAccess::read(target.as_fd()).context("DMA_BUF_IOCTL_SYNC(START|READ)")?;
        let got = map.as_slice();
        let (a, b) = (toff as usize, (toff + len) as usize);
        let differs = got[a..b].iter().zip(&want).position(|(x, y)| x != y);
        let outside = got[..a]
            .iter()
            .chain(&got[b..])
            .filter(|&&x| x != MARKER)
            .count();
        if differs.is_some() || outside > 0 {
            // Where did the bytes go? (An exporter whose mmap ignores the page offset puts
            // them where the mapping's first page is.)
            let probe = &want[..want.len().min(256)];
            let found = got.windows(probe.len()).position(|w| w == probe);
            bail!(
                "the range differs from the file from target byte {}; {outside} bytes outside it were written; the file's first bytes are at target byte {}",
                differs.map_or("(none)".into(), |i| (a + i).to_string()),
                found.map_or("(nowhere)".into(), |i| i.to_string())
            );
        }
    }
    Ok(format!(
        "{len} bytes of the file at {offset} into the vgem buffer ({exporter}) at {toff}, via {}: the range equals the file through the buffer's mmap, the {} bytes around it still {MARKER:#04x}",
        io_path_name(r.ioPath),
        size - len
    ))
}

/// The same vgem buffer exported read-only: the service must refuse to fill it.
fn vgem_target_read_only(session: &Session, file: &File, vgem: BorrowedFd<'_>) -> Result<String> {
    let dumb =
        drm::create_dumb(vgem, 1024, 16, 32).context("DRM_IOCTL_MODE_CREATE_DUMB on vgem")?;
    let _dumb = DumbBuffer {
        dev: vgem,
        handle: dumb.handle,
    };
    let target = drm::prime_export(vgem, dumb.handle, libc::O_CLOEXEC)
        .context("DRM_IOCTL_PRIME_HANDLE_TO_FD (read-only)")?;
    let req = LoadRequest {
        length: 4096,
        ..Default::default()
    };
    match session.load_into(file, &req, &target, 0)? {
        Ok(_) => bail!("loadInto filled a dma-buf exported O_RDONLY"),
        Err(e) => {
            let name = e.code().map(error_code_name).unwrap_or_default();
            ensure!(
                name == "TARGET_NOT_WRITABLE",
                "want TARGET_NOT_WRITABLE, got {e}"
            );
            Ok(format!("a read-only vgem export is refused: {e}"))
        }
    }
}

fn run(args: &Args) -> Result<u32> {
    let mut report = Report::default();
    let file = File::open(&args.file).with_context(|| format!("open {}", args.file.display()))?;
    let vgem = find_vgem()?;
    let vivid = find_vivid()?;
    match &vgem {
        Some((p, _)) => println!("INFO vgem: {}", p.display()),
        None => report.missing(
            "vgem",
            "vgem (CONFIG_DRM_VGEM): no /dev/dri/card* of driver vgem",
            args.require,
        ),
    }
    let fmt = match &vivid {
        Some((p, f, caps)) => {
            let fmt = v4l2::g_fmt_capture(f.as_fd()).context("VIDIOC_G_FMT on vivid")?;
            println!(
                "INFO vivid: {} ({}; capture format {}x{}, {} bytes per frame)",
                p.display(),
                caps.card,
                fmt.width,
                fmt.height,
                fmt.sizeimage
            );
            Some(fmt)
        }
        None => {
            report.missing(
                "vivid",
                "vivid (CONFIG_VIDEO_VIVID): no /dev/video* capture node of driver vivid",
                args.require,
            );
            None
        }
    };
    if vgem.is_none() && vivid.is_none() {
        return Ok(report.failed);
    }
    let transport = Transport::choose(args.socket.as_deref(), args.binder_device.as_deref())?;
    let session = Session::connect(transport, 2)?;
    let heaps: Vec<HeapInfo> = session
        .proxy()
        .getHeaps()
        .map_err(|e| anyhow!("getHeaps: {e:?}"))?
        .into_iter()
        .filter(|h| h.isDmaBuf)
        .collect();
    ensure!(!heaps.is_empty(), "the service lists no dma-buf heap");
    println!(
        "INFO heaps: {}",
        heaps
            .iter()
            .map(|h| format!("{} ({})", h.name, buffer_kind_name(h.kind)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for heap in &heaps {
        if let Some((_, dev)) = &vgem {
            report.check(&format!("vgem-import-{}", heap.name), || {
                let b = load(&session, &file, heap, MIB)?;
                vgem_import(dev.as_fd(), &b)
            });
        }
        if let (Some((_, dev, _)), Some(fmt)) = (&vivid, fmt) {
            report.check(&format!("vivid-import-{}", heap.name), || {
                vivid_import(&session, &file, heap, dev.as_fd(), fmt)
            });
        }
    }
    if let Some((_, dev)) = &vgem {
        report.check("vgem-target", || vgem_target(&session, &file, dev.as_fd()));
        report.check("vgem-target-read-only", || {
            vgem_target_read_only(&session, &file, dev.as_fd())
        });
    }
    Ok(report.failed)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            println!("FAIL importers {e:#}");
            ExitCode::from(2)
        }
    }
}
