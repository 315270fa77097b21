//! Fuzzes the service's transaction entry: arbitrary parcels, built from typed pieces (ints,
//! longs, strings, fds of every kind, callback binders) or none at all, sent to every method
//! of the real `dmabuf-loader-service` binary over RPC binder on a unix socket, exactly as a
//! hostile client process would.
//!
//! Properties checked on every input:
//! - the service process never dies (a panic, abort or crash ends it) and never hangs;
//! - it stays up for everyone: a well-formed getHeaps() answers after every input (from a new
//!   connection if the fuzzed one was closed for breaking the protocol);
//! - nothing leaks in the service: once the loads the input started have ended, the service
//!   process's fd count is back at its idle baseline.
//!
//! The service binary comes from $DMABUF_SERVICE_BIN (tools/fuzz builds it).
#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use dmabuf_loader_binder::aidl::IDmabufLoader::IDmabufLoader;
use dmabuf_loader_binder::aidl::ILoadCallback::{BnLoadCallback, ILoadCallback};
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::{
    self as binder, Connection, Interface, ParcelFileDescriptor, Strong, SERVICE_NAME,
};
use libfuzzer_sys::fuzz_target;
use rsbinder::FIRST_CALL_TRANSACTION;

#[derive(Arbitrary, Debug)]
enum FdKind {
    File,
    Empty,
    Pipe,
    Directory,
    DevNull,
    PathOnly,
    WriteOnly,
}

#[derive(Arbitrary, Debug)]
enum Piece {
    I32(i32),
    I64(i64),
    Bool(bool),
    Str(String),
    Fd(FdKind),
    NullFd,
    Callback,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Index into the interface's five methods. (Codes outside them never reach our stub:
    /// rsbinder answers them itself, and its RPC session treats some as protocol errors.)
    method: u8,
    /// Without the interface token the stub must refuse the call outright.
    header: bool,
    pieces: Vec<Piece>,
}

struct Fixture {
    _dir: tempfile::TempDir,
    files: PathBuf,
    socket: PathBuf,
    conn: Mutex<Connection<dyn IDmabufLoader>>,
    server: Mutex<Child>,
    /// fds open when idle; re-taken after a reconnect (the new session's fds).
    baseline_fds: std::sync::atomic::AtomicUsize,
}

struct Callback;
impl Interface for Callback {}
impl ILoadCallback for Callback {
    fn onProgress(&self, _: i64, _: i64) -> binder::BinderResult<()> {
        Ok(())
    }
    fn onComplete(&self, _: &LoadResult) -> binder::BinderResult<()> {
        Ok(())
    }
    fn onError(&self, _: i32, _: &str) -> binder::BinderResult<()> {
        Ok(())
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn fd_list(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            format!(
                "{}->{}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    v.sort();
    v
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = std::env::current_dir().unwrap().join("target/fuzz-scratch");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let files = dir.path().to_path_buf();
        let mut data = File::create(files.join("data")).unwrap();
        data.write_all(&(0..100_000u32).map(|i| i as u8).collect::<Vec<_>>())
            .unwrap();
        File::create(files.join("empty")).unwrap();
        let socket = files.join("svc.sock");
        let bin = std::env::var_os("DMABUF_SERVICE_BIN")
            .expect("set DMABUF_SERVICE_BIN to the dmabuf-loader-service binary (tools/fuzz does)");
        let log = File::create(files.join("service.log")).unwrap();
        let mut server = Command::new(bin);
        server
            .args(["--socket".as_ref(), socket.as_os_str()])
            .args([
                "--max-load-bytes",
                "1M",
                "--max-bytes-in-flight",
                "4M",
                "--max-concurrent-loads",
                "4",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        // libFuzzer ends the process with exit(): no destructor kills the child, so the kernel
        // must. SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent; it runs in the forked child before exec.
        unsafe {
            server.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let server = server.spawn().unwrap();
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "service did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        let conn = binder::connect_unix::<dyn IDmabufLoader>(&socket, SERVICE_NAME, 2, None).unwrap();
        conn.service.getHeaps().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let baseline_fds = fd_count(server.id());
        Fixture {
            _dir: dir,
            files,
            socket,
            conn: Mutex::new(conn),
            server: Mutex::new(server),
            baseline_fds: baseline_fds.into(),
        }
    })
}

fn open_fd(files: &std::path::Path, kind: &FdKind) -> OwnedFd {
    let data = files.join("data");
    match kind {
        FdKind::File => File::open(&data).unwrap().into(),
        FdKind::Empty => File::open(files.join("empty")).unwrap().into(),
        FdKind::Pipe => nix::unistd::pipe().unwrap().0,
        FdKind::Directory => File::open(files).unwrap().into(),
        FdKind::DevNull => File::open("/dev/null").unwrap().into(),
        FdKind::PathOnly => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&data)
            .unwrap()
            .into(),
        FdKind::WriteOnly => std::fs::OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .into(),
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let mut conn = f.conn.lock().unwrap();
    {
        let binder = conn.service.as_binder();
        let remote = binder.as_remote().expect("the service is remote");
        let mut data = remote.prepare_transact(input.header).unwrap();
        for piece in input.pieces.iter().take(16) {
            let _ = match piece {
                Piece::I32(v) => data.write(v),
                Piece::I64(v) => data.write(v),
                Piece::Bool(v) => data.write(v),
                Piece::Str(s) => data.write(s),
                Piece::Fd(kind) => data.write(&ParcelFileDescriptor::new(open_fd(&f.files, kind))),
                Piece::NullFd => data.write(&Option::<ParcelFileDescriptor>::None),
                Piece::Callback => {
                    let cb: Strong<dyn ILoadCallback> = BnLoadCallback::new_binder(Callback);
                    data.write(&cb)
                }
            };
        }
        let code = FIRST_CALL_TRANSACTION + u32::from(input.method % 5);
        // Any reply or error is fine: the call must only not crash, hang or leak.
        let _ = remote.submit_transact(code, &data, 0);
    }
    let pid = f.server.lock().unwrap().id();
    if let Ok(Some(status)) = f.server.lock().unwrap().try_wait() {
        panic!(
            "the service died ({status}) on {input:?}; its log: {}",
            f.files.join("service.log").display()
        );
    }
    // Still serving. rsbinder closes the session of a client whose parcel does not parse:
    // that client is gone, but the service must serve a new one.
    if conn.service.getHeaps().is_err() {
        *conn = binder::connect_unix::<dyn IDmabufLoader>(&f.socket, SERVICE_NAME, 2, None)
            .expect("the service no longer accepts connections");
        conn.service
            .getHeaps()
            .expect("the service stopped answering");
        settle_and_rebase(f, pid);
    }
    drop(conn);
    // Loads this input started (async ones too) end quickly at these sizes; wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let baseline = f.baseline_fds.load(std::sync::atomic::Ordering::Relaxed);
    while fd_count(pid) > baseline {
        assert!(
            Instant::now() < deadline,
            "service fd count {} did not return to {} or below after {input:?}: {:?}",
            fd_count(pid),
            baseline,
            fd_list(pid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
});

/// After a reconnect: wait until the old session's threads have let go of their fds, then take
/// the new idle count as the baseline.
fn settle_and_rebase(f: &Fixture, pid: u32) {
    let mut last = fd_count(pid);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        let now = fd_count(pid);
        if now == last {
            break;
        }
        last = now;
    }
    f.baseline_fds
        .store(last, std::sync::atomic::Ordering::Relaxed);
}
