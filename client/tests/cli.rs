//! The `dmabuf-loader` binary against a service running in this test process on a unix
//! socket (the same library code the `dmabuf-loader-service` binary runs): load with
//! --verify/--json/--async/--checksum/--read-only, heaps, info, bench, and the exit status and
//! JSON of a refused request.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dmabuf_loader_binder::aidl::ChecksumType::ChecksumType;
use dmabuf_loader_binder::aidl::HeapInfo::HeapInfo;
use dmabuf_loader_binder::aidl::IDmabufLoader::{BnDmabufLoader, IDmabufLoader};
use dmabuf_loader_binder::aidl::ILoadCallback::{BnLoadCallback, ILoadCallback};
use dmabuf_loader_binder::aidl::ILoadTask::ILoadTask;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::aidl::ServiceInfo::ServiceInfo;
use dmabuf_loader_binder::{
    BinderResult, Interface, ParcelFileDescriptor, ServerHandle, Strong, Transport, SERVICE_NAME,
};
use dmabuf_loader_service::config::ConfigOverrides;
use dmabuf_loader_service::DmabufLoaderService;
use serde_json::Value;

struct Fixture {
    dir: tempfile::TempDir,
    socket: PathBuf,
    _server: ServerHandle,
}

/// A scratch directory under Cargo's per-target tmp dir (a real disk, removed on drop).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// The service library on a unix socket in this process, its scratch directory next to it.
fn start() -> Fixture {
    start_with(ConfigOverrides::default())
}

/// [`start`] with these service settings (max_load_bytes 64 MiB unless they set it).
fn start_with(overrides: ConfigOverrides) -> Fixture {
    start_serving(overrides, |real| real)
}

/// [`start_with`], serving what `wrap` makes of the real service's binder object.
fn start_serving(
    overrides: ConfigOverrides,
    wrap: impl FnOnce(Strong<dyn IDmabufLoader>) -> Strong<dyn IDmabufLoader>,
) -> Fixture {
    let dir = scratch();
    let socket = dir.path().join("svc.sock");
    let config = ConfigOverrides {
        max_load_bytes: overrides.max_load_bytes.or(Some(64 << 20)),
        ..overrides
    }
    .resolve()
    .unwrap();
    let t = Transport::Unix {
        path: socket.clone(),
    };
    let service = DmabufLoaderService::new(config, t.describe()).unwrap();
    let server =
        dmabuf_loader_binder::serve(&t, SERVICE_NAME, &wrap(service.into_binder()), 6).unwrap();
    Fixture {
        dir,
        socket,
        _server: server,
    }
}

/// What [`Faulty`] does wrong; the real service does neither, so without it exit statuses 4
/// and 5 (no result in time) had no test.
#[derive(Clone, Copy)]
enum Fault {
    /// Every checksum it reports is off by one bit: a buffer that does not hold the file, as
    /// `--verify` sees it (exit status 4).
    WrongChecksum,
    /// An async load runs, but its callbacks never reach the client (exit status 5 once
    /// `--timeout-secs` is over).
    NoCallbacks,
}

/// The real service with one [`Fault`].
struct Faulty(Strong<dyn IDmabufLoader>, Fault);

impl Faulty {
    fn spoil(&self, mut r: LoadResult) -> LoadResult {
        if matches!(self.1, Fault::WrongChecksum) && r.checksumType == ChecksumType::XXH3_64 {
            r.checksum ^= 1;
        }
        r
    }

    fn callback(&self, real: &Strong<dyn ILoadCallback>) -> Strong<dyn ILoadCallback> {
        match self.1 {
            Fault::NoCallbacks => dmabuf_loader_binder::new_binder!(BnLoadCallback, Deaf),
            Fault::WrongChecksum => real.clone(),
        }
    }
}

/// A callback that hears everything and passes nothing on.
struct Deaf;

impl Interface for Deaf {}

impl ILoadCallback for Deaf {
    fn onProgress(&self, _: i64, _: i64) -> BinderResult<()> {
        Ok(())
    }
    fn onComplete(&self, _: &LoadResult) -> BinderResult<()> {
        Ok(())
    }
    fn onError(&self, _: i32, _: &str) -> BinderResult<()> {
        Ok(())
    }
}

impl Interface for Faulty {}

impl IDmabufLoader for Faulty {
    fn loadFile(&self, fd: &ParcelFileDescriptor) -> BinderResult<ParcelFileDescriptor> {
        self.0.loadFile(fd)
    }
    fn load(&self, fd: &ParcelFileDescriptor, request: &LoadRequest) -> BinderResult<LoadResult> {
        self.0.load(fd, request).map(|r| self.spoil(r))
    }
    fn loadAsync(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        callback: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        self.0.loadAsync(fd, request, &self.callback(callback))
    }
    fn getHeaps(&self) -> BinderResult<Vec<HeapInfo>> {
        self.0.getHeaps()
    }
    fn getServiceInfo(&self) -> BinderResult<ServiceInfo> {
        self.0.getServiceInfo()
    }
    fn loadInto(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        target: &ParcelFileDescriptor,
        offset: i64,
    ) -> BinderResult<LoadResult> {
        self.0
            .loadInto(fd, request, target, offset)
            .map(|r| self.spoil(r))
    }
    fn loadIntoAsync(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        target: &ParcelFileDescriptor,
        offset: i64,
        callback: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        self.0
            .loadIntoAsync(fd, request, target, offset, &self.callback(callback))
    }
}

/// The `dmabuf-loader` command, not started.
fn client() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmabuf-loader"))
}

/// The command with `--socket SOCKET` and `args`, not started.
fn client_at(socket: &Path, args: &[&str]) -> Command {
    let mut c = client();
    c.arg("--socket").arg(socket).args(args);
    c
}

/// Runs the command against the fixture's service.
fn run(f: &Fixture, args: &[&str]) -> Output {
    run_at(&f.socket, args, None)
}

/// Runs the command with `--socket SOCKET` (no fixture needed), as `uid` when given.
fn run_at(socket: &Path, args: &[&str], uid: Option<u32>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = client_at(socket, args);
    if let Some(u) = uid {
        c.uid(u);
    }
    c.output().expect("running dmabuf-loader")
}

/// Runs `c` to its end, but kills it and fails the test if it runs longer than `secs`: for
/// the cases that used to block forever, so a regression fails instead of hanging CI.
fn run_bounded(mut c: Command, secs: u64, what: &str) -> Output {
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("`{what}` still runs after {secs} s: the client blocks");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `o` ended with exit status `code` and its stderr says `words`; `what` names the command.
fn assert_exit(o: &Output, code: i32, words: &str, what: &dyn std::fmt::Debug) {
    assert_eq!(o.status.code(), Some(code), "{what:?}: {}", stderr(o));
    assert!(
        stderr(o).contains(words),
        "{what:?}: {words:?} not in: {}",
        stderr(o)
    );
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): stdout {} stderr {}", stdout(o), stderr(o)))
}

fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn load_verify_json_reports_the_facts() {
    let f = start();
    let p = file(f.dir.path(), "a.bin", 1_000_003);
    let o = run(
        &f,
        &[
            "load",
            p.to_str().unwrap(),
            "--verify",
            "--checksum",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["data_length"], 1_000_003);
    assert_eq!(v["buffer_size"].as_i64().unwrap() % 4096, 0);
    assert_eq!(v["heap"], "memfd");
    assert_eq!(v["buffer_kind"], "MEMFD");
    assert_eq!(v["is_dmabuf"], false, "this host has no dma-buf source");
    assert_eq!(v["verified"], true);
    assert!(v["checksum_xxh3"].as_str().unwrap().starts_with("0x"));
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["round_trip_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn load_async_range_read_only_text_output() {
    let f = start();
    let p = file(f.dir.path(), "b.bin", 3 << 20);
    let o = run(
        &f,
        &[
            "load",
            p.to_str().unwrap(),
            "--async",
            "--offset",
            "5",
            "--length",
            "2000000",
            "--read-only",
            "--verify",
        ],
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out} {}", stderr(&o));
    assert!(out.contains("range       [5, 2000005)"), "{out}");
    assert!(out.contains("read-only"), "{out}");
    assert!(out.contains("verify      OK"), "{out}");
    assert!(out.contains("throughput"), "{out}");
}

#[test]
fn a_refused_request_exits_3_with_the_error_code() {
    let f = start();
    let big = file(f.dir.path(), "big.bin", 65 << 20);
    let o = run(&f, &["load", big.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v = json(&o);
    assert_eq!(v["error"]["name"], "TOO_LARGE");
    assert_eq!(v["error"]["code"], 6);
    let small = file(f.dir.path(), "s.bin", 10);
    let o = run(&f, &["load", small.to_str().unwrap(), "--heap", "nope"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("UNKNOWN_HEAP (7)"));
    let o = run(
        &f,
        &["load", small.to_str().unwrap(), "--offset", "11", "--async"],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("INVALID_RANGE"));
}

#[test]
fn heaps_and_info() {
    let f = start();
    let o = run(&f, &["heaps", "--json"]);
    assert!(o.status.success());
    let v = json(&o);
    assert_eq!(v[0]["name"], "memfd");
    let o = run(&f, &["info", "--json"]);
    assert!(o.status.success());
    let v = json(&o);
    assert_eq!(v["interface_version"], 2);
    assert_eq!(v["interface_hash"], v["client_interface_hash"]);
    assert_eq!(v["max_load_bytes"], 64 << 20);
    let o = run(&f, &["info"]);
    assert!(stdout(&o).contains("interface       version 2"));
}

#[test]
fn load_into_a_client_buffer_verifies_and_refusals_exit_3() {
    let f = start();
    let p = file(f.dir.path(), "into.bin", 3_000_000);
    // The client allocates a 4 MiB memfd (this host has no dma-buf) and the service fills
    // it at an unaligned offset; the command checks the range byte for byte and the checksum.
    let o = run(
        &f,
        &[
            "load",
            p.to_str().unwrap(),
            "--into",
            "memfd:4194304:4099",
            "--offset",
            "7",
            "--checksum",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["data_length"], 3_000_000 - 7);
    assert_eq!(v["target_offset"], 4099);
    assert_eq!(v["exporter"], "memfd");
    // A target too small for the range: the service's ErrorCode, exit 3.
    let o = run(&f, &["load", p.to_str().unwrap(), "--into", "memfd:4096"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("TARGET_TOO_SMALL (18)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bench_runs_both_modes() {
    let f = start();
    let p = file(f.dir.path(), "c.bin", 8 << 20);
    let o = run(
        &f,
        &[
            "bench",
            p.to_str().unwrap(),
            "--rounds",
            "1",
            "--no-baselines",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    // Cold rows: the service and the in-process engine (no baselines asked for).
    let cold = v["cold"].as_array().unwrap();
    assert_eq!(cold.len(), 2, "{v}");
    assert!(
        cold[0]["name"].as_str().unwrap().starts_with("service"),
        "{v}"
    );
    for r in cold {
        assert!(r["median_gib_s"].as_f64().unwrap() > 0.0, "{v}");
    }
    assert!(v["device_limit_gib_s"].is_null(), "{v}");
    let small = file(f.dir.path(), "d.bin", 4096);
    let o = run(
        &f,
        &[
            "bench",
            small.to_str().unwrap(),
            "--latency",
            "--pin",
            "0",
            "--iterations",
            "50",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert!(v["load_file"]["p50_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["bare_fd_call"]["p50_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["pinned"].as_str().unwrap().contains("CPU 0"), "{v}");
    // --concurrent: 4 slices of 2 MiB at once, every one admitted.
    let o = run(
        &f,
        &[
            "bench",
            p.to_str().unwrap(),
            "--concurrent",
            "4",
            "--rounds",
            "1",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(
        (v["loads"].as_u64(), v["bytes_each"].as_u64()),
        (Some(4), Some(2 << 20)),
        "{v}"
    );
    assert!(v["refused"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["median_gib_s"].as_f64().unwrap() > 0.0, "{v}");
    // --into: fresh-buffer loads vs loads into one reused client buffer, the service (in this
    // process) measured through --service-pid.
    let pid = std::process::id().to_string();
    let o = run(
        &f,
        &[
            "bench",
            p.to_str().unwrap(),
            "--into",
            "memfd",
            "--rounds",
            "2",
            "--service-pid",
            &pid,
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let names: Vec<_> = v["contenders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["fresh", "client-alloc+into", "reuse"], "{v}");
    assert_eq!(v["contenders"][2]["alloc_ms"], 0.0, "{v}");
    assert!(v["contenders"][0]["service_cpu_ms"].is_number(), "{v}");
}

#[test]
fn connection_errors_say_what_happened_and_exit_5() {
    let dir = scratch();
    // No such socket.
    let o = run_at(&dir.path().join("none.sock"), &["info"], None);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("no socket at"), "{}", stderr(&o));
    // Not a socket.
    let plain = file(dir.path(), "plain", 10);
    let o = run_at(&plain, &["heaps"], None);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not a socket: it is a regular file"),
        "{}",
        stderr(&o)
    );
    // A socket file nobody listens on (its listener is gone).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let o = run_at(&stale, &["info"], None);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nobody is listening on"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("Errno("),
        "a raw errno: {}",
        stderr(&o)
    );
    // A kernel binder device that is not one (rsbinder alone says `NoInit`).
    let o = client()
        .arg("--binder-device")
        .arg(&plain)
        .arg("info")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not a binder device: it is a regular file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn permission_denied_names_the_sockets_owner_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let f = start();
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&f.socket, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Root may connect anyway: run the client as nobody, which needs root to arrange.
    let (as_other, mode) = if nix::unistd::getuid().is_root() {
        (Some(65534), "0700")
    } else {
        std::fs::set_permissions(&f.socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        (None, "0000")
    };
    let o = run_at(&f.socket, &["info"], as_other);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("permission denied connecting to"), "{err}");
    // The socket's owner (this test process, which bound it) and mode: its access control.
    let owner = format!(
        "owned by uid {} gid {} with mode {mode}",
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    );
    assert!(err.contains(&owner), "{owner:?} not in: {err}");
    assert!(
        !err.contains("listening?"),
        "the old misleading hint: {err}"
    );
}

#[test]
fn a_fifo_without_a_writer_is_refused_not_waited_on() {
    let f = start();
    let fifo = f.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The old client blocked in open(2) forever: give each command 20 s, then fail instead of
    // hanging. `bench --into` opened FILE with a plain open(2) too, before any call.
    let fifo = fifo.to_str().unwrap();
    for args in [
        &["load", fifo][..],
        &["load", fifo, "--into", "memfd"],
        &["bench", fifo, "--rounds", "1", "--no-baselines"],
        &["bench", fifo, "--into", "memfd", "--rounds", "1"],
        &["bench", fifo, "--latency", "--iterations", "10"],
    ] {
        let o = run_bounded(client_at(&f.socket, args), 20, &args.join(" "));
        assert_exit(&o, 3, "UNSUPPORTED_FILE_TYPE", &args);
    }
}

#[test]
fn pseudo_files_are_refused_and_empty_files_load_as_empty() {
    let f = start();
    let o = run(&f, &["load", "/proc/self/status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("UNSUPPORTED_FILE_TYPE"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("procfs"), "{}", stderr(&o));
    let empty = file(f.dir.path(), "empty", 0);
    let o = run(&f, &["load", empty.to_str().unwrap(), "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("the file is empty"), "{out}");
    assert!(!out.contains("MiB/s"), "a rate for 0 bytes: {out}");
    let v = json(&run(&f, &["load", empty.to_str().unwrap(), "--json"]));
    assert_eq!(v["data_length"], 0);
    assert!(v["throughput_mib_s"].is_null(), "{v}");
    // The same into a buffer of the client's own (loadInto): no rate of nothing there either.
    let e = empty.to_str().unwrap();
    let o = run(&f, &["load", e, "--into", "memfd"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("the file is empty"), "{out}");
    assert!(!out.contains("MiB/s"), "a rate for 0 bytes: {out}");
    let v = json(&run(&f, &["load", e, "--into", "memfd", "--json"]));
    assert_eq!(
        (v["data_length"].as_i64(), v["verified"].as_bool()),
        (Some(0), Some(true))
    );
    assert!(v["throughput_mib_s"].is_null(), "{v}");
}

#[test]
fn sizes_take_suffixes_and_bad_values_say_why() {
    let f = start();
    let p = file(f.dir.path(), "s.bin", 100_000);
    let v = json(&run(
        &f,
        &[
            "load",
            p.to_str().unwrap(),
            "--offset",
            "1k",
            "--length",
            "4KiB",
            "--verify",
            "--json",
        ],
    ));
    assert_eq!(
        (v["offset"].as_u64(), v["data_length"].as_u64()),
        (Some(1024), Some(4096))
    );
    assert_eq!(v["verified"], true);
    for (args, words) in [
        (
            vec!["--offset", "-1"],
            "offset must be a non-negative byte count",
        ),
        (
            vec!["--length", "-4k"],
            "length must be a non-negative byte count",
        ),
        (vec!["--length", "10Q"], "unknown unit"),
        (vec!["--heap", ""], "a heap name cannot be empty"),
    ] {
        let mut a = vec!["load", p.to_str().unwrap()];
        a.extend(args.iter());
        let o = run(&f, &a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(words), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("-- -"),
            "clap's misleading tip: {}",
            stderr(&o)
        );
    }
    let o = run(&f, &["bench", p.to_str().unwrap(), "--rounds", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("rounds must be at least 1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn timeout_zero_means_no_limit() {
    let f = start();
    let p = file(f.dir.path(), "t.bin", 1 << 20);
    let o = run(
        &f,
        &[
            "load",
            p.to_str().unwrap(),
            "--async",
            "--timeout-secs",
            "0",
            "--verify",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("verify      OK"));
}

#[test]
fn the_same_refusal_exits_3_from_every_command() {
    let f = start();
    // load and bench refuse the same pseudo file; a file that cannot be opened is this side's
    // error (1), whatever the command.
    for cmd in ["load", "bench"] {
        let o = run(&f, &[cmd, "/proc/self/status", "--json"]);
        assert_eq!(o.status.code(), Some(3), "{cmd}: {}", stderr(&o));
        let o = run(&f, &[cmd, "/nonexistent/file"]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stderr(&o));
    }
}

/// Every command and every bench mode, against a service that refuses this caller
/// (allowed_uids): the same refusal is exit 3 with its ErrorCode, whichever command met it.
#[test]
fn a_refused_caller_exits_3_from_every_command_and_mode() {
    let me = nix::unistd::geteuid().as_raw();
    let f = start_with(ConfigOverrides {
        allowed_uids: Some(vec![me.wrapping_add(4242)]),
        ..Default::default()
    });
    let p = file(f.dir.path(), "r.bin", 4 << 20);
    let p = p.to_str().unwrap();
    for args in [
        &["load", p][..],
        &["load", p, "--async"],
        &["load", p, "--into", "memfd"],
        &["heaps"],
        &["info"],
        &["bench", p, "--rounds", "1", "--no-baselines"],
        &["bench", p, "--latency", "--iterations", "10"],
        &["bench", p, "--into", "memfd", "--rounds", "1"],
        &["bench", p, "--concurrent", "2", "--rounds", "1"],
    ] {
        assert_exit(&run(&f, args), 3, "PERMISSION_DENIED", &args);
    }
}

/// No result within `--timeout-secs` is exit 5 (the service did not answer), said in words.
#[test]
fn no_result_in_time_exits_5() {
    let f = start_serving(ConfigOverrides::default(), |real| {
        dmabuf_loader_binder::new_binder!(BnDmabufLoader, Faulty(real, Fault::NoCallbacks))
    });
    let p = file(f.dir.path(), "n.bin", 100_000);
    let args = [
        "load",
        p.to_str().unwrap(),
        "--async",
        "--timeout-secs",
        "1",
    ];
    let o = run_bounded(
        client_at(&f.socket, &args),
        20,
        "load --async --timeout-secs 1",
    );
    assert_exit(&o, 5, "no result from the service within 1s", &args);
}

/// Exit 5 (the service cannot be reached) and exit 2 (usage) from every command alike.
#[test]
fn unreachable_and_usage_exit_the_same_from_every_command() {
    let dir = scratch();
    let p = file(dir.path(), "u.bin", 4096);
    let p = p.to_str().unwrap();
    let none = dir.path().join("none.sock");
    for args in [
        &["load", p][..],
        &["heaps"],
        &["info"],
        &["bench", p, "--rounds", "1"],
    ] {
        assert_exit(&run_at(&none, args, None), 5, "no socket at", &args);
        let mut bad = args.to_vec();
        bad.push("--no-such-flag");
        assert_exit(&run_at(&none, &bad, None), 2, "--no-such-flag", &bad);
    }
}

#[test]
fn info_reads_as_words_and_json_keeps_the_bytes() {
    let f = start();
    let out = stdout(&run(&f, &["info"]));
    assert!(out.contains("max load        64 MiB per load"), "{out}");
    assert!(
        out.contains("io_uring dma-buf registered buffers (kernel series, not in mainline): "),
        "{out}"
    );
    assert!(!out.contains("regbuf"), "{out}");
    assert_eq!(
        json(&run(&f, &["info", "--json"]))["max_load_bytes"],
        64 << 20
    );
}

#[test]
fn bench_spells_the_io_path_one_way() {
    let f = start();
    let p = file(f.dir.path(), "b.bin", 4 << 20);
    let o = run(
        &f,
        &[
            "bench",
            p.to_str().unwrap(),
            "--rounds",
            "1",
            "--no-baselines",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    for camel in [
        "DirectRegistered",
        "BufferedSync",
        "DmabufRegistered",
        "Buffered ",
        "Direct ",
    ] {
        assert!(!all.contains(camel), "{camel} in: {all}");
    }
    assert!(all.contains("DIRECT") || all.contains("BUFFERED"), "{all}");
}

/// A buffer that does not hold the file (here: a checksum that does not match it) is exit 4,
/// from `load --verify` and from `load --into`, which always verifies.
#[test]
fn a_buffer_that_fails_verification_exits_4() {
    let f = start_serving(ConfigOverrides::default(), |real| {
        dmabuf_loader_binder::new_binder!(BnDmabufLoader, Faulty(real, Fault::WrongChecksum))
    });
    let p = file(f.dir.path(), "v.bin", 100_000);
    let p = p.to_str().unwrap();
    for args in [
        &["load", p, "--verify", "--checksum"][..],
        &["load", p, "--into", "memfd", "--checksum"],
    ] {
        let o = run(&f, args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("service checksum"), "{args:?}: {out}");
        assert!(!out.contains("verify      OK"), "{args:?}: {out}");
    }
    // Without a checksum to spoil the same service's buffer verifies: the 4 above was the
    // mismatch, nothing else.
    let o = run(&f, &["load", p, "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("verify      OK"), "{}", stdout(&o));
}

/// `load --async` draws its progress bar on a terminal (stderr a pty, from script(1): util-linux,
/// in every Debian as bsdutils is essential) and nothing on a pipe; the bar's rate stays hidden
/// for its first half second (the old bar's first readings jumped from 22 GiB/s to 455 MiB/s).
#[test]
fn progress_bar_on_a_terminal_only_and_no_early_rate() {
    let f = start();
    let p = file(f.dir.path(), "pb.bin", 48 << 20);
    let load = format!(
        "'{}' --socket '{}' load '{}' --async",
        env!("CARGO_BIN_EXE_dmabuf-loader"),
        f.socket.display(),
        p.display()
    );
    // stdout (the report, whose throughput line says MiB/s) away: the pty shows stderr alone.
    let started = std::time::Instant::now();
    let o = Command::new("script")
        .args(["-qefc", &format!("{load} >/dev/null"), "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("running script(1)");
    let took = started.elapsed();
    let tty = stdout(&o);
    assert!(o.status.success(), "{tty} {}", stderr(&o));
    assert!(
        tty.contains("48 MiB") || tty.contains("48.00 MiB"),
        "no bar on a terminal: {tty:?}"
    );
    if took < std::time::Duration::from_millis(500) {
        assert!(
            !tty.contains("/s"),
            "a rate within the first half second: {tty:?}"
        );
    }
    // On a pipe: the result alone, no bar.
    let o = run(&f, &["load", p.to_str().unwrap(), "--async"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "progress output on a pipe");
}
