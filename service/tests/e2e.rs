//! End to end: the real `dmabuf-loader-service` binary on a unix socket in a temp dir, driven
//! over RPC binder like any client would. Every method, every error code the host can reach,
//! async progress and cancel, a client SIGKILLed mid-load, 16 concurrent clients, SIGTERM.
//!
//! Error codes not reachable on this host, and where they are covered instead:
//! BAD_FD (binder only ever delivers a valid fd), IO_ERROR (needs a failing device: the VM
//! rig's blkdebug EIO), INTERNAL (no known trigger).
//!
//! Harness: libtest-mimic, so the binary can also run as a helper client process
//! (`DMABUF_E2E_ROLE=...`) that the SIGKILL tests kill.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use dmabuf_loader_binder::aidl::ChecksumType::ChecksumType;
use dmabuf_loader_binder::aidl::IDmabufLoader::{self as iface, IDmabufLoader};
use dmabuf_loader_binder::aidl::ILoadCallback::{BnLoadCallback, ILoadCallback};
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::{
    self as binder, borrow_pfd, clone_result, error_code_name, BinderResult, Connection, Interface,
    ParcelFileDescriptor, Strong, Transport, SERVICE_NAME,
};
use libtest_mimic::{Arguments, Failed, Trial};

const MIB: u64 = 1 << 20;

// ------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------

/// A running service; SIGTERM + wait on drop.
struct Service {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
}

impl Service {
    fn start(extra: &[&str]) -> Result<Service> {
        Self::start_with(extra, |_| {})
    }

    fn start_with(extra: &[&str], tweak: impl FnOnce(&mut Command)) -> Result<Service> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let socket = dir.path().join("svc.sock");
        let log = dir.path().join("svc.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmabuf-loader-service"));
        cmd.arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd.stderr(File::create(&log)?);
        cmd.env("RUST_LOG", "info");
        tweak(&mut cmd);
        let child = cmd.spawn().context("starting dmabuf-loader-service")?;
        let mut svc = Service {
            child,
            dir,
            socket,
            log,
        };
        let t = Instant::now();
        loop {
            if let Some(st) = svc.child.try_wait()? {
                bail!("the service exited at start ({st}):\n{}", svc.log_text());
            }
            if svc.socket.exists() && svc.connect().is_ok() {
                return Ok(svc);
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("the service did not come up in 20 s:\n{}", svc.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> Result<Connection<dyn IDmabufLoader>> {
        self.connect_n(1)
    }

    fn connect_n(&self, connections: u32) -> Result<Connection<dyn IDmabufLoader>> {
        binder::connect(
            &Transport::Unix {
                path: self.socket.clone(),
            },
            SERVICE_NAME,
            connections,
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Open fds of the service process.
    fn fd_count(&self) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count())
    }

    /// (VmRSS, RssShmem) in bytes.
    fn rss(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Ok((field("VmRSS:"), field("RssShmem:")))
    }

    /// SIGTERM, then the exit status (killed after 15 s).
    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        bail!("the service ignored SIGTERM for 15 s:\n{}", self.log_text())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.terminate();
        }
        let _ = &self.dir;
    }
}

/// Deterministic pseudo-random bytes: `seed` picks the content.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn small_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, bytes)?;
    Ok(p)
}

/// A big file of pseudo-random data, made once per target dir and reused.
fn big_file(size: u64) -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-big-{}M.bin", size / MIB));
    if std::fs::metadata(&p)
        .map(|m| m.len() == size)
        .unwrap_or(false)
    {
        return Ok(p);
    }
    let tmp = p.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    let block = pattern(7, MIB as usize);
    for i in 0..size / MIB {
        let mut b = block.clone();
        b[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&b)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}

fn drop_cache(p: &Path) -> Result<()> {
    let f = File::open(p)?;
    nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )?;
    Ok(())
}

fn pfd(f: &impl AsFd) -> Result<ParcelFileDescriptor> {
    Ok(ParcelFileDescriptor::new(f.as_fd().try_clone_to_owned()?))
}

/// `Ok(v)` or the ServiceSpecificException's code and message.
fn code<T>(r: BinderResult<T>) -> std::result::Result<T, (i32, String)> {
    r.map_err(|s| {
        (
            binder::service_specific_code(&s).unwrap_or(i32::MIN),
            binder::status_message(&s),
        )
    })
}

fn expect_code<T: std::fmt::Debug>(r: BinderResult<T>, want: &str) -> Result<String> {
    match code(r) {
        Ok(v) => bail!("expected {want}, got success {v:?}"),
        Err((c, m)) => {
            ensure!(
                error_code_name(c) == want,
                "expected {want}, got {} ({c}): {m}",
                error_code_name(c)
            );
            ensure!(!m.is_empty(), "{want} came without a message");
            Ok(m)
        }
    }
}

/// The whole buffer behind a returned fd (host buffers are memfds, which read() works on).
fn buffer_bytes(fd: &OwnedFd) -> Result<Vec<u8>> {
    let f = File::from(fd.try_clone()?);
    let len = f.metadata()?.len() as usize;
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, 0)?;
    Ok(v)
}

fn check_buffer(fd: &OwnedFd, want: &[u8]) -> Result<()> {
    let got = buffer_bytes(fd)?;
    ensure!(
        got.len() >= want.len(),
        "buffer {} bytes < data {}",
        got.len(),
        want.len()
    );
    ensure!(
        got.len() % 4096 == 0,
        "buffer size {} is not page-rounded",
        got.len()
    );
    if got[..want.len()] != *want {
        let i = (0..want.len()).find(|&i| got[i] != want[i]).unwrap_or(0);
        bail!("buffer differs from the file at byte {i}");
    }
    ensure!(
        got[want.len()..].iter().all(|&b| b == 0),
        "padding is not zero"
    );
    Ok(())
}

fn result_fd(r: &LoadResult) -> Result<OwnedFd> {
    Ok(borrow_pfd(r.buffer.as_ref().context("no buffer in the result")?).try_clone_to_owned()?)
}

// ------------------------------------------------------------------------------------------
// Async callback collecting events
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Ev {
    Progress(i64, i64),
    Complete(LoadResult),
    Error(i32, String),
}

struct Cb(Mutex<mpsc::Sender<Ev>>);
impl Interface for Cb {}
impl ILoadCallback for Cb {
    fn onProgress(&self, done: i64, total: i64) -> BinderResult<()> {
        let _ = self.0.lock().unwrap().send(Ev::Progress(done, total));
        Ok(())
    }
    fn onComplete(&self, r: &LoadResult) -> BinderResult<()> {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Ev::Complete(clone_result(r).expect("dup buffer fd")));
        Ok(())
    }
    fn onError(&self, code: i32, msg: &str) -> BinderResult<()> {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Ev::Error(code, msg.to_string()));
        Ok(())
    }
}

fn callback() -> (Strong<dyn ILoadCallback>, mpsc::Receiver<Ev>) {
    let (tx, rx) = mpsc::channel();
    (
        dmabuf_loader_binder::new_binder!(BnLoadCallback, Cb(Mutex::new(tx))),
        rx,
    )
}

/// Waits for the end event; returns (progress events, end).
fn wait_end(rx: &mpsc::Receiver<Ev>) -> Result<(Vec<(i64, i64)>, Ev)> {
    let mut progress = Vec::new();
    loop {
        match rx
            .recv_timeout(Duration::from_secs(60))
            .context("no end event within 60 s")?
        {
            Ev::Progress(d, t) => progress.push((d, t)),
            end => return Ok((progress, end)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Tests: methods
// ------------------------------------------------------------------------------------------

fn load_file_returns_the_whole_file() -> Result<()> {
    let svc = Service::start(&[])?;
    let c = svc.connect()?;
    let data = pattern(1, 123_457);
    let p = small_file(svc.dir.path(), "a.bin", &data)?;
    let f = File::open(&p)?;
    let buf: OwnedFd = code(c.service.loadFile(&pfd(&f)?))
        .map_err(|e| anyhow!("{e:?}"))?
        .into();
    check_buffer(&buf, &data)?;
    // An empty file gives a valid (page-sized) zero buffer.
    let e = small_file(svc.dir.path(), "empty.bin", b"")?;
    let buf: OwnedFd = code(c.service.loadFile(&pfd(&File::open(&e)?)?))
        .map_err(|e| anyhow!("{e:?}"))?
        .into();
    check_buffer(&buf, b"")?;
    Ok(())
}

fn load_range_checksum_and_read_only() -> Result<()> {
    let svc = Service::start(&[])?;
    let c = svc.connect()?;
    let data = pattern(2, 3 * MIB as usize + 5);
    let p = small_file(svc.dir.path(), "b.bin", &data)?;
    let f = File::open(&p)?;
    let req = LoadRequest {
        offset: 4097,
        length: 2 * MIB as i64 + 3,
        readOnly: true,
        checksum: ChecksumType::XXH3_64,
        ..Default::default()
    };
    let r = code(c.service.load(&pfd(&f)?, &req)).map_err(|e| anyhow!("{e:?}"))?;
    let want = &data[4097..4097 + 2 * MIB as usize + 3];
    ensure!(
        r.dataLength == want.len() as i64,
        "dataLength {}",
        r.dataLength
    );
    ensure!(
        r.bufferSize as u64 % 4096 == 0 && r.bufferSize >= r.dataLength,
        "bufferSize {}",
        r.bufferSize
    );
    ensure!(
        r.heapName == "memfd",
        "host default heap is memfd, got {}",
        r.heapName
    );
    ensure!(r.checksumType == ChecksumType::XXH3_64, "checksum type");
    ensure!(
        r.checksum as u64 == twox_hash::XxHash3_64::oneshot(want),
        "checksum mismatch"
    );
    ensure!(
        r.totalNanos > 0 && r.totalNanos >= r.allocNanos,
        "times {} {}",
        r.totalNanos,
        r.allocNanos
    );
    let fd = result_fd(&r)?;
    check_buffer(&fd, want)?;
    let fl = nix::fcntl::fcntl(fd.as_fd().as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    ensure!(
        fl & libc::O_ACCMODE == libc::O_RDONLY,
        "read-only buffer fd is writable"
    );
    // Even a reopen through /proc (which root may do) cannot write: the memfd is sealed.
    if let Ok(w) = OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    {
        ensure!(
            w.write_at(b"x", 0).is_err(),
            "a read-only buffer could be written"
        );
    }
    Ok(())
}

fn heaps_info_version_hash() -> Result<()> {
    let svc = Service::start(&["--max-load-bytes", "64M"])?;
    let c = svc.connect()?;
    let heaps = code(c.service.getHeaps()).map_err(|e| anyhow!("{e:?}"))?;
    ensure!(!heaps.is_empty(), "no heaps");
    ensure!(
        heaps[0].name == "memfd" && !heaps[0].isDmaBuf,
        "host default heap: {:?}",
        heaps[0]
    );
    let info = code(c.service.getServiceInfo()).map_err(|e| anyhow!("{e:?}"))?;
    ensure!(
        info.maxLoadBytes == 64 * MIB as i64,
        "maxLoadBytes {}",
        info.maxLoadBytes
    );
    ensure!(
        info.implementation.contains("dmabuf-loader"),
        "{}",
        info.implementation
    );
    ensure!(!info.kernelRelease.is_empty(), "kernel release");
    let v = code(c.service.getInterfaceVersion()).map_err(|e| anyhow!("{e:?}"))?;
    let h = code(c.service.getInterfaceHash()).map_err(|e| anyhow!("{e:?}"))?;
    ensure!(v == 2 && v == iface::VERSION, "version {v}");
    ensure!(h == iface::HASH && h.len() == 40, "hash {h}");
    Ok(())
}

fn config_file_is_read() -> Result<()> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let cfg = dir.path().join("svc.toml");
    std::fs::write(&cfg, "max_load_bytes = \"3M\"\nmax_concurrent_loads = 2\n")?;
    let svc = Service::start(&["--config", cfg.to_str().context("utf-8")?])?;
    let info = code(svc.connect()?.service.getServiceInfo()).map_err(|e| anyhow!("{e:?}"))?;
    ensure!(
        info.maxLoadBytes == 3 * MIB as i64,
        "maxLoadBytes {}",
        info.maxLoadBytes
    );
    // A bad config file stops the service at start with a clear message.
    std::fs::write(&cfg, "max_load_bytes = \"lots\"\n")?;
    match Service::start(&["--config", cfg.to_str().context("utf-8")?]) {
        Ok(_) => bail!("a bad config file was accepted"),
        Err(e) => ensure!(format!("{e:#}").contains("lots"), "{e:#}"),
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Tests: error codes
// ------------------------------------------------------------------------------------------

fn errors_about_the_fd() -> Result<()> {
    let svc = Service::start(&[])?;
    let c = svc.connect()?;
    let p = small_file(svc.dir.path(), "x.bin", b"hello")?;
    let req = LoadRequest::default();

    let path_only = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&p)?;
    expect_code(c.service.load(&pfd(&path_only)?, &req), "PATH_ONLY_FD")?;
    let write_only = OpenOptions::new().write(true).open(&p)?;
    expect_code(c.service.load(&pfd(&write_only)?, &req), "NOT_READABLE")?;
    let (r, _w) = nix::unistd::pipe()?;
    expect_code(c.service.loadFile(&pfd(&r)?), "UNSUPPORTED_FILE_TYPE")?;
    let dir = File::open(svc.dir.path())?;
    expect_code(c.service.loadFile(&pfd(&dir)?), "UNSUPPORTED_FILE_TYPE")?;
    let dev = File::open("/dev/null")?;
    expect_code(c.service.loadFile(&pfd(&dev)?), "UNSUPPORTED_FILE_TYPE")?;
    // The same refusals apply to loadAsync, thrown from the call itself.
    let (cb, _rx) = callback();
    expect_code(
        c.service.loadAsync(&pfd(&write_only)?, &req, &cb),
        "NOT_READABLE",
    )?;
    Ok(())
}

/// A read-only loop device over a file, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn over(file: &Path) -> Result<LoopDevice> {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(file)
            .output()
            .context("running losetup")?;
        ensure!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(LoopDevice(PathBuf::from(
            String::from_utf8(out.stdout)?.trim(),
        )))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A block device fd is refused unless the service is started with `--allow-block-devices
/// true`; then its bytes load (a loop device here: CI and the dev hosts are root).
fn block_devices_only_when_allowed() -> Result<()> {
    let svc = Service::start(&[])?;
    let data = pattern(7, 3 << 20);
    let img = small_file(svc.dir.path(), "disk.img", &data)?;
    let dev = match LoopDevice::over(&img) {
        Ok(d) => d,
        Err(e) if !nix::unistd::geteuid().is_root() => {
            eprintln!("skipped: no loop device without root ({e:#})");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let f = File::open(&dev.0)?;
    expect_code(
        svc.connect()?.service.loadFile(&pfd(&f)?),
        "UNSUPPORTED_FILE_TYPE",
    )?;
    drop(svc);
    let svc = Service::start(&["--allow-block-devices", "true"])?;
    let buf: OwnedFd = code(svc.connect()?.service.loadFile(&pfd(&f)?))
        .map_err(|e| anyhow!("{e:?}"))?
        .into();
    check_buffer(&buf, &data)
}

fn errors_about_the_request() -> Result<()> {
    let svc = Service::start(&["--max-load-bytes", "1M"])?;
    let c = svc.connect()?;
    let p = small_file(svc.dir.path(), "x.bin", &pattern(3, 10_000))?;
    let f = File::open(&p)?;
    let load = |req: LoadRequest| c.service.load(&pfd(&f).expect("dup"), &req);
    expect_code(
        load(LoadRequest {
            offset: 10_001,
            ..Default::default()
        }),
        "INVALID_RANGE",
    )?;
    expect_code(
        load(LoadRequest {
            offset: 9_000,
            length: 2_000,
            ..Default::default()
        }),
        "INVALID_RANGE",
    )?;
    expect_code(
        load(LoadRequest {
            offset: -1,
            ..Default::default()
        }),
        "INVALID_RANGE",
    )?;
    expect_code(
        load(LoadRequest {
            length: -2,
            ..Default::default()
        }),
        "INVALID_RANGE",
    )?;
    let m = expect_code(
        load(LoadRequest {
            heapName: "no-such-heap".into(),
            ..Default::default()
        }),
        "UNKNOWN_HEAP",
    )?;
    ensure!(
        m.contains("no-such-heap"),
        "message should name the heap: {m}"
    );
    expect_code(
        load(LoadRequest {
            checksum: ChecksumType(9),
            ..Default::default()
        }),
        "INVALID_ARGUMENT",
    )?;
    let big = small_file(svc.dir.path(), "big.bin", &pattern(4, 2 * MIB as usize))?;
    let m = expect_code(c.service.loadFile(&pfd(&File::open(&big)?)?), "TOO_LARGE")?;
    ensure!(
        m.contains("limit") || m.contains("large") || m.contains("1048576"),
        "{m}"
    );
    // A range of the big file under the limit is fine.
    let r = code(c.service.load(
        &pfd(&File::open(&big)?)?,
        &LoadRequest {
            length: 4096,
            ..Default::default()
        },
    ));
    ensure!(r.is_ok(), "{r:?}");
    Ok(())
}

fn permission_denied_for_other_uids() -> Result<()> {
    let me = nix::unistd::getuid().as_raw();
    let other = (me + 4242).to_string();
    let svc = Service::start(&["--allowed-uids", &other])?;
    let c = svc.connect()?;
    let files = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let p = small_file(files.path(), "x.bin", b"secret")?;
    let m = expect_code(
        c.service.loadFile(&pfd(&File::open(&p)?)?),
        "PERMISSION_DENIED",
    )?;
    ensure!(
        m.contains(&me.to_string()),
        "message should name the uid: {m}"
    );
    expect_code(c.service.getHeaps(), "PERMISSION_DENIED")?;
    expect_code(c.service.getServiceInfo(), "PERMISSION_DENIED")?;
    drop(c);
    drop(svc);
    let allowed = Service::start(&["--allowed-uids", &format!("{other},{me}")])?;
    let c = allowed.connect()?;
    code(c.service.loadFile(&pfd(&File::open(&p)?)?)).map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

fn busy_when_over_concurrency_or_bytes() -> Result<()> {
    let big = big_file(256 * MIB)?;
    // Concurrency: one load at a time.
    let svc = Service::start(&["--max-concurrent-loads", "1"])?;
    let c = svc.connect_n(2)?;
    drop_cache(&big)?;
    let (cb, rx) = callback();
    let _task = code(
        c.service
            .loadAsync(&pfd(&File::open(&big)?)?, &LoadRequest::default(), &cb),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let small = small_file(svc.dir.path(), "s.bin", b"tiny")?;
    let m = expect_code(c.service.loadFile(&pfd(&File::open(&small)?)?), "BUSY")?;
    ensure!(m.contains("max_concurrent_loads"), "{m}");
    let (_, end) = wait_end(&rx)?;
    ensure!(matches!(end, Ev::Complete(_)), "{end:?}");
    // Once it ended, the next load is admitted.
    code(c.service.loadFile(&pfd(&File::open(&small)?)?)).map_err(|e| anyhow!("{e:?}"))?;
    drop(c);
    drop(svc);

    // Bytes: a 300 MiB budget holds one 256 MiB load, not two.
    let svc = Service::start(&["--max-bytes-in-flight", "300M", "--max-load-bytes", "300M"])?;
    let c = svc.connect_n(2)?;
    drop_cache(&big)?;
    let (cb, rx) = callback();
    let _task = code(
        c.service
            .loadAsync(&pfd(&File::open(&big)?)?, &LoadRequest::default(), &cb),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let m = expect_code(c.service.loadFile(&pfd(&File::open(&big)?)?), "BUSY")?;
    ensure!(m.contains("max_bytes_in_flight"), "{m}");
    let (_, end) = wait_end(&rx)?;
    ensure!(matches!(end, Ev::Complete(_)), "{end:?}");
    Ok(())
}

fn timed_out_past_the_load_deadline() -> Result<()> {
    let big = big_file(256 * MIB)?;
    let svc = Service::start(&["--load-timeout-ms", "1"])?;
    let c = svc.connect()?;
    drop_cache(&big)?;
    let m = expect_code(c.service.loadFile(&pfd(&File::open(&big)?)?), "TIMED_OUT")?;
    ensure!(!m.is_empty(), "message");
    let (cb, rx) = callback();
    drop_cache(&big)?;
    code(
        c.service
            .loadAsync(&pfd(&File::open(&big)?)?, &LoadRequest::default(), &cb),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    match wait_end(&rx)?.1 {
        Ev::Error(code, _) if error_code_name(code) == "TIMED_OUT" => {}
        other => bail!("expected onError(TIMED_OUT), got {other:?}"),
    }
    Ok(())
}

fn allocation_failed_when_the_service_cannot_map() -> Result<()> {
    // A sparse 8 GiB file (no disk used) and a service whose address space is capped at
    // 4 GiB: the buffer's mapping cannot be made, a real allocation failure.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let sparse = dir.path().join("sparse.bin");
    File::create(&sparse)?.set_len(8 << 30)?;
    let svc = Service::start_with(&["--max-load-bytes", "16G"], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure only calls setrlimit(2), which is async-signal-safe, between
        // fork and exec; `lim` is a valid rlimit for the call.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 4 << 30,
                    rlim_max: 4 << 30,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })?;
    let c = svc.connect()?;
    let m = expect_code(
        c.service.loadFile(&pfd(&File::open(&sparse)?)?),
        "ALLOCATION_FAILED",
    )?;
    ensure!(!m.is_empty(), "message");
    // And the service goes on serving.
    let small = small_file(svc.dir.path(), "s.bin", b"after")?;
    let buf: OwnedFd = code(c.service.loadFile(&pfd(&File::open(&small)?)?))
        .map_err(|e| anyhow!("{e:?}"))?
        .into();
    check_buffer(&buf, b"after")?;
    Ok(())
}

fn file_changed_when_truncated_mid_load() -> Result<()> {
    let svc = Service::start(&[])?;
    let c = svc.connect()?;
    let src = big_file(256 * MIB)?;
    let p = svc.dir.path().join("shrinks.bin");
    std::fs::copy(&src, &p)?;
    drop_cache(&p)?;
    let (cb, rx) = callback();
    code(
        c.service
            .loadAsync(&pfd(&File::open(&p)?)?, &LoadRequest::default(), &cb),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    // At the first sign of progress, cut the file in half.
    let mut cut = false;
    let end = loop {
        match rx.recv_timeout(Duration::from_secs(60))? {
            Ev::Progress(..) if !cut => {
                OpenOptions::new().write(true).open(&p)?.set_len(64 * MIB)?;
                cut = true;
            }
            Ev::Progress(..) => {}
            end => break end,
        }
    };
    ensure!(cut, "the load ended before any progress event");
    match end {
        Ev::Error(code, m) => ensure!(
            error_code_name(code) == "FILE_CHANGED",
            "{}: {m}",
            error_code_name(code)
        ),
        Ev::Complete(_) => bail!("a load of a file truncated mid-way claimed success"),
        other => bail!("{other:?}"),
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Tests: async
// ------------------------------------------------------------------------------------------

fn async_progress_then_complete() -> Result<()> {
    let svc = Service::start(&[])?;
    let c = svc.connect()?;
    let big = big_file(256 * MIB)?;
    drop_cache(&big)?;
    let (cb, rx) = callback();
    let req = LoadRequest {
        offset: 3,
        length: 200 * MIB as i64,
        checksum: ChecksumType::XXH3_64,
        ..Default::default()
    };
    let task = code(c.service.loadAsync(&pfd(&File::open(&big)?)?, &req, &cb))
        .map_err(|e| anyhow!("{e:?}"))?;
    let (progress, end) = wait_end(&rx)?;
    ensure!(!progress.is_empty(), "no progress events");
    ensure!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress went backwards: {progress:?}"
    );
    ensure!(
        progress
            .iter()
            .all(|&(d, t)| t == 200 * MIB as i64 && d <= t),
        "bad totals: {progress:?}"
    );
    ensure!(
        progress.last() == Some(&(200 * MIB as i64, 200 * MIB as i64)),
        "last progress {:?}",
        progress.last()
    );
    let Ev::Complete(r) = end else {
        bail!("{end:?}")
    };
    let mut want = vec![0u8; 200 * MIB as usize];
    File::open(&big)?.read_exact_at(&mut want, 3)?;
    ensure!(
        r.checksum as u64 == twox_hash::XxHash3_64::oneshot(&want),
        "checksum"
    );
    check_buffer(&result_fd(&r)?, &want)?;
    // cancel() after the end is a harmless no-op.
    code(task.cancel()).map_err(|e| anyhow!("{e:?}"))?;
    ensure!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "an event after the end"
    );
    Ok(())
}

fn async_cancel() -> Result<()> {
    let svc = Service::start(&[])?;
    let c = svc.connect()?;
    let big = big_file(256 * MIB)?;
    drop_cache(&big)?;
    let (cb, rx) = callback();
    let task = code(
        c.service
            .loadAsync(&pfd(&File::open(&big)?)?, &LoadRequest::default(), &cb),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    code(task.cancel()).map_err(|e| anyhow!("{e:?}"))?;
    code(task.cancel()).map_err(|e| anyhow!("second cancel: {e:?}"))?;
    match wait_end(&rx)?.1 {
        Ev::Error(code, _) if error_code_name(code) == "CANCELLED" => {}
        other => bail!("expected onError(CANCELLED), got {other:?}"),
    }
    ensure!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "an event after onError"
    );
    // The service is idle again and serves the next load.
    let small = small_file(svc.dir.path(), "s.bin", b"next")?;
    let buf: OwnedFd = code(c.service.loadFile(&pfd(&File::open(&small)?)?))
        .map_err(|e| anyhow!("{e:?}"))?
        .into();
    check_buffer(&buf, b"next")?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Tests: a client killed mid-load, 16 clients, shutdown
// ------------------------------------------------------------------------------------------

/// Helper role: connect, start a load of FILE (async or sync), print "started", hang.
fn child_client(socket: &str, file: &str, mode: &str) -> Result<()> {
    let c: Connection<dyn IDmabufLoader> = binder::connect(
        &Transport::Unix {
            path: socket.into(),
        },
        SERVICE_NAME,
        1,
    )?;
    let f = File::open(file)?;
    if mode == "into-async" {
        // The client's own buffer (a memfd here: this host has no dma-buf source), filled by
        // loadIntoAsync while the client dies.
        let core = dmabuf_loader::Loader::new(dmabuf_loader::Config::default())?;
        let size = f.metadata()?.len().div_ceil(4096) * 4096;
        let (target, _) = core
            .allocate_target("memfd", size)
            .map_err(|e| anyhow!("{e}"))?;
        let (cb, _rx) = callback();
        code(
            c.service
                .loadIntoAsync(&pfd(&f)?, &LoadRequest::default(), &pfd(&target)?, 0, &cb),
        )
        .map_err(|e| anyhow!("{e:?}"))?;
        println!("started");
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(600));
    } else if mode == "async" {
        let (cb, _rx) = callback();
        code(c.service.loadAsync(&pfd(&f)?, &LoadRequest::default(), &cb))
            .map_err(|e| anyhow!("{e:?}"))?;
        println!("started");
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(600));
    } else {
        println!("started");
        std::io::stdout().flush()?;
        let _ = c.service.loadFile(&pfd(&f)?);
        std::thread::sleep(Duration::from_secs(600));
    }
    Ok(())
}

fn kill_client_mid_load(mode: &str) -> Result<()> {
    let svc = Service::start(&[])?;
    let big = big_file(512 * MIB)?;
    // Baseline after one full load, so lazily created resources (threads, rings) are counted.
    {
        let c = svc.connect()?;
        let small = small_file(svc.dir.path(), "s.bin", b"warm")?;
        code(c.service.loadFile(&pfd(&File::open(&small)?)?)).map_err(|e| anyhow!("{e:?}"))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = svc.fd_count()?;
    let (rss_before, shmem_before) = svc.rss()?;
    drop_cache(&big)?;
    let mut child = Command::new(std::env::current_exe()?)
        .env("DMABUF_E2E_ROLE", "client")
        .args([
            svc.socket.to_str().context("utf-8")?,
            big.to_str().context("utf-8")?,
            mode,
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    ensure!(line.trim() == "started", "helper client said {line:?}");
    if mode == "sync" {
        std::thread::sleep(Duration::from_millis(30)); // let the call reach the service
    }
    let during = svc.rss()?;
    child.kill()?;
    child.wait()?;
    // The service lets go of everything the dead client's load held.
    let t = Instant::now();
    loop {
        let fds = svc.fd_count()?;
        let (rss, shmem) = svc.rss()?;
        if fds <= fds_before && shmem <= shmem_before + 8 * MIB && rss <= rss_before + 64 * MIB {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!(
                "after 30 s the service still holds fds {fds} (before {fds_before}), RSS {} MiB \
                 (before {}), shmem {} MiB (before {}); during the load {:?}\n{}",
                rss / MIB,
                rss_before / MIB,
                shmem / MIB,
                shmem_before / MIB,
                during,
                svc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if mode.ends_with("async") {
        let log = svc.log_text();
        let cancelled = log.contains("callback died") || log.contains("progress callback failed");
        let finished_first = log.contains("did not take the result");
        ensure!(
            cancelled || finished_first,
            "no sign the service noticed the dead client:\n{log}"
        );
        eprintln!(
            "sigkill async: {}",
            if cancelled {
                "the load was cancelled mid-way"
            } else {
                "the load finished before the kill was noticed"
            }
        );
    }
    // ...and keeps serving.
    let c = svc.connect()?;
    let small = small_file(svc.dir.path(), "after.bin", b"still here")?;
    let buf: OwnedFd = code(c.service.loadFile(&pfd(&File::open(&small)?)?))
        .map_err(|e| anyhow!("{e:?}"))?
        .into();
    check_buffer(&buf, b"still here")?;
    Ok(())
}

fn sixteen_concurrent_clients() -> Result<()> {
    let svc = Service::start(&["--max-concurrent-loads", "16"])?;
    let n = 16;
    let files: Vec<(PathBuf, Vec<u8>)> = (0..n)
        .map(|i| {
            let data = pattern(100 + i as u64, (4 * MIB) as usize + i * 4099);
            small_file(svc.dir.path(), &format!("c{i}.bin"), &data).map(|p| (p, data))
        })
        .collect::<Result<_>>()?;
    for (p, _) in &files {
        drop_cache(p)?;
    }
    let barrier = Arc::new(Barrier::new(n));
    let svc = Arc::new(svc);
    let handles: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(i, (p, data))| {
            let barrier = Arc::clone(&barrier);
            let svc = Arc::clone(&svc);
            std::thread::spawn(move || -> Result<()> {
                let c = svc.connect()?;
                let f = File::open(&p)?;
                barrier.wait();
                for round in 0..3 {
                    let req = LoadRequest {
                        checksum: ChecksumType::XXH3_64,
                        ..Default::default()
                    };
                    let r = code(c.service.load(&pfd(&f)?, &req))
                        .map_err(|e| anyhow!("client {i} round {round}: {e:?}"))?;
                    ensure!(
                        r.checksum as u64 == twox_hash::XxHash3_64::oneshot(&data),
                        "client {i}: checksum"
                    );
                    check_buffer(&result_fd(&r)?, &data).with_context(|| format!("client {i}"))?;
                }
                Ok(())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for h in handles {
        if let Err(e) = h.join().map_err(|_| anyhow!("client thread panicked"))? {
            errors.push(format!("{e:#}"));
        }
    }
    ensure!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

fn sigterm_cancels_loads_and_exits_cleanly() -> Result<()> {
    let mut svc = Service::start(&[])?;
    let big = big_file(512 * MIB)?;
    drop_cache(&big)?;
    let c = svc.connect()?;
    let (cb, rx) = callback();
    code(
        c.service
            .loadAsync(&pfd(&File::open(&big)?)?, &LoadRequest::default(), &cb),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let t = Instant::now();
    let st = svc.terminate()?;
    ensure!(st.success(), "exit status {st}:\n{}", svc.log_text());
    ensure!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
    ensure!(!svc.socket.exists(), "the socket file was left behind");
    let log = svc.log_text();
    ensure!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");
    // The client heard either CANCELLED or that the service went away; never a success
    // for a load that was stopped.
    if let Ok(Ev::Complete(_)) = rx.recv_timeout(Duration::from_millis(500)) {
        ensure!(
            !log.contains("cancelled 1"),
            "a cancelled load reported success"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------

fn trial(name: &'static str, f: fn() -> Result<()>) -> Trial {
    Trial::test(name, move || {
        f().map_err(|e| Failed::from(format!("{e:#}")))
    })
}

fn main() {
    if std::env::var("DMABUF_E2E_ROLE").as_deref() == Ok("client") {
        let a: Vec<String> = std::env::args().skip(1).collect();
        if let Err(e) = child_client(&a[0], &a[1], &a[2]) {
            eprintln!("helper client: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let args = Arguments::from_args();
    let tests = vec![
        trial(
            "load_file_returns_the_whole_file",
            load_file_returns_the_whole_file,
        ),
        trial(
            "load_range_checksum_and_read_only",
            load_range_checksum_and_read_only,
        ),
        trial("heaps_info_version_hash", heaps_info_version_hash),
        trial("config_file_is_read", config_file_is_read),
        trial("errors_about_the_fd", errors_about_the_fd),
        trial("errors_about_the_request", errors_about_the_request),
        trial(
            "block_devices_only_when_allowed",
            block_devices_only_when_allowed,
        ),
        trial(
            "permission_denied_for_other_uids",
            permission_denied_for_other_uids,
        ),
        trial(
            "busy_when_over_concurrency_or_bytes",
            busy_when_over_concurrency_or_bytes,
        ),
        trial(
            "timed_out_past_the_load_deadline",
            timed_out_past_the_load_deadline,
        ),
        trial(
            "allocation_failed_when_the_service_cannot_map",
            allocation_failed_when_the_service_cannot_map,
        ),
        trial(
            "file_changed_when_truncated_mid_load",
            file_changed_when_truncated_mid_load,
        ),
        trial("async_progress_then_complete", async_progress_then_complete),
        trial("async_cancel", async_cancel),
        trial("sigkill_client_mid_async_load", || {
            kill_client_mid_load("async")
        }),
        trial("sigkill_client_mid_async_load_into_its_own_buffer", || {
            kill_client_mid_load("into-async")
        }),
        trial("sigkill_client_mid_sync_load", || {
            kill_client_mid_load("sync")
        }),
        trial("sixteen_concurrent_clients", sixteen_concurrent_clients),
        trial(
            "sigterm_cancels_loads_and_exits_cleanly",
            sigterm_cancels_loads_and_exits_cleanly,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
