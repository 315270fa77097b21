//! The `dmabuf-loader` command line.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use dmabuf_loader_binder::aidl::BufferKind::BufferKind;
use dmabuf_loader_binder::aidl::ChecksumType::ChecksumType;
use dmabuf_loader_binder::aidl::IDmabufLoader as aidl_iface;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::{
    borrow_pfd, buffer_kind_name, error_code_name, io_path_name, Transport,
};
use serde::Serialize;

use crate::bench;
use crate::progress::Progress;
use crate::session::{CallError, Session};
use crate::verify;

/// Exit status, the same for every command (docs/service-and-client.md has the table).
/// Something failed on this side: FILE cannot be opened, an output cannot be written.
pub const EXIT_ERROR: i32 = 1;
/// The command line is wrong (clap's own code for usage errors).
pub const EXIT_USAGE: i32 = 2;
/// The service refused or failed the request (the ErrorCode is printed).
pub const EXIT_SERVICE_ERROR: i32 = 3;
/// --verify or the dma-buf check found the buffer wrong.
pub const EXIT_VERIFY_FAILED: i32 = 4;
/// The service could not be reached: no socket, nobody listening, permission denied, not
/// registered, the connection broke or the service died, or no answer within --timeout-secs.
pub const EXIT_NO_SERVICE: i32 = 5;

/// Marks an error as "the service could not be reached" (exit status 5).
#[derive(Debug)]
pub struct Unreachable(pub &'static str);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The exit status for an error, from what is in its chain: the one place that decides it.
pub fn exit_status(e: &anyhow::Error) -> i32 {
    // anyhow's downcast_ref looks through every context layer, for errors and contexts alike.
    if let Some(c) = e.downcast_ref::<CallError>() {
        return call_error_status(c);
    }
    if e.downcast_ref::<Unreachable>().is_some() {
        return EXIT_NO_SERVICE;
    }
    EXIT_ERROR
}

fn call_error_status(e: &CallError) -> i32 {
    match e {
        CallError::Service { .. } => EXIT_SERVICE_ERROR,
        CallError::Binder(_) => EXIT_NO_SERVICE,
    }
}

/// `--offset`/`--length`: a byte count with an optional suffix (4096, 4k, 10M, 1.5GiB).
fn byte_count(what: &'static str) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |s: &str| {
        let n = dmabuf_loader::size::parse(s).map_err(|e| match e {
            dmabuf_loader::size::SizeError::Negative => {
                format!("{what} must be a non-negative byte count, not {s}")
            }
            e => format!("{e}: {what} is a byte count such as 4096, 4k, 10M or 1GiB"),
        })?;
        // The interface carries offsets and lengths as AIDL `long`.
        i64::try_from(n)
            .map(|_| n)
            .map_err(|_| format!("{what} {s} is more than {} bytes", i64::MAX))
    }
}

/// `--rounds`/`--iterations`: a count of at least 1 (0 used to run one round silently).
fn at_least_one(what: &'static str) -> impl Fn(&str) -> Result<u32, String> + Clone {
    move |s: &str| match s.trim().parse::<u32>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{what} must be a whole number of at least 1, not {s}"
        )),
    }
}

fn heap_name(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "a heap name cannot be empty (leave --heap out for the service's default; \
                    `dmabuf-loader heaps` lists them)"
                .into(),
        );
    }
    Ok(s.to_string())
}

#[derive(Parser, Debug)]
#[command(
    name = "dmabuf-loader",
    version,
    about = "Load files into dma-bufs through dmabuf-loader-service",
    after_help = "Connects over kernel binder to vendor.dmabufloader.IDmabufLoader/default, or \
                  over RPC binder with --socket PATH.\nExit status (every command): 0 ok, \
                  1 error on this side (e.g. FILE cannot be opened), 2 usage, 3 the service \
                  refused or failed the request (ErrorCode printed), 4 verification failed, \
                  5 the service could not be reached or did not answer."
)]
pub struct Cli {
    /// Connect over RPC binder on this unix socket (else kernel binder by service name).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Kernel binder device (default: /dev/binderfs/binder, else /dev/binder).
    #[arg(long, global = true, value_name = "PATH")]
    pub binder_device: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load FILE (or a range of it) into a new buffer and report what happened.
    Load(LoadArgs),
    /// List the heaps the service can allocate from.
    Heaps(JsonArg),
    /// Interface version and hash, implementation and kernel features seen by the service.
    Info(JsonArg),
    /// Time loads through the service against the in-process engine, the status quo and the
    /// device limit (or, with --latency, loadFile against a bare binder call).
    Bench(BenchArgs),
    /// Latency baseline server used by `bench --latency` (internal).
    #[command(name = "__bench-echo", hide = true)]
    BenchEcho,
}

#[derive(Args, Debug, Clone)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The file to load (opened read-only by this command; the service gets the fd).
    pub file: PathBuf,
    /// Heap to allocate from (default: the service's default; `heaps` lists them).
    #[arg(long, value_parser = heap_name)]
    pub heap: Option<String>,
    /// First byte of the file to load: bytes, or with a suffix (4k, 10M, 1GiB).
    #[arg(long, default_value = "0", value_parser = byte_count("offset"), allow_hyphen_values = true)]
    pub offset: u64,
    /// Bytes to load, with an optional suffix (default: to the end of the file).
    #[arg(long, value_parser = byte_count("length"), allow_hyphen_values = true)]
    pub length: Option<u64>,
    /// Ask for a read-only buffer fd.
    #[arg(long)]
    pub read_only: bool,
    /// Map the returned buffer and compare it with the file.
    #[arg(long)]
    pub verify: bool,
    /// Use loadAsync (progress bar on a terminal).
    #[arg(long = "async")]
    pub async_: bool,
    /// Ask the service for an XXH3-64 checksum (checked against the buffer with --verify).
    #[arg(long)]
    pub checksum: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// With --async: give up (and cancel) after this many seconds; 0 = no limit (the
    /// service's own load deadline still applies).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// loadInto (v2): allocate the target here, from HEAP (a dma-heap name, "udmabuf", or
    /// "memfd" on a host without dma-bufs), SIZE bytes (default: the range, page-rounded, plus
    /// OFFSET), and have the service fill it at byte OFFSET (default 0); then verify it.
    #[arg(long, value_name = "HEAP[:SIZE[:OFFSET]]")]
    pub into: Option<String>,
}

/// `--into HEAP[:SIZE[:OFFSET]]`, SIZE and OFFSET in bytes (suffixes as everywhere: 4k, 1M).
fn parse_into(s: &str) -> Result<(String, Option<u64>, u64)> {
    let mut it = s.splitn(3, ':');
    let heap = it.next().unwrap_or_default().to_string();
    anyhow::ensure!(
        !heap.is_empty(),
        "--into needs a heap name: HEAP[:SIZE[:OFFSET]]"
    );
    let num = |v: &str| {
        dmabuf_loader::size::parse(v).map_err(|e| anyhow::anyhow!("--into: bad size {v:?}: {e}"))
    };
    let size = it.next().filter(|v| !v.is_empty()).map(num).transpose()?;
    let offset = it.next().map(num).transpose()?.unwrap_or(0);
    Ok((heap, size, offset))
}

/// `load FILE --into ...`: the client allocates its own buffer (the status quo's first step),
/// the service fills the range, the client checks every byte of it.
fn load_into(session: &Session, file: &File, a: &LoadArgs, spec: &str) -> Result<i32> {
    let (heap, size, toff) = parse_into(spec)?;
    let file_size = file.metadata()?.len();
    let len = match a.length {
        Some(l) => l,
        None => file_size.saturating_sub(a.offset),
    };
    let size = size.unwrap_or_else(|| (toff + len).div_ceil(4096).max(1) * 4096);
    let core = dmabuf_loader::Loader::new(dmabuf_loader::Config::default())
        .context("probing this machine's buffer sources")?;
    let alloc_started = Instant::now();
    let (target, info) = core
        .allocate_target(&heap, size)
        .map_err(|e| anyhow::anyhow!("allocating the {size}-byte target from {heap:?}: {e}"))?;
    let alloc_ms = alloc_started.elapsed().as_secs_f64() * 1e3;
    let req = LoadRequest {
        offset: a.offset as i64,
        length: a.length.map_or(-1, |l| l as i64),
        checksum: if a.checksum {
            ChecksumType::XXH3_64
        } else {
            ChecksumType::NONE
        },
        ..Default::default()
    };
    let started = Instant::now();
    let r = match session.load_into(file, &req, &target, toff as i64)? {
        Ok(r) => r,
        Err(e) => return report_call_error(&e, a.json),
    };
    let round_trip = started.elapsed();
    let mut problems = Vec::new();
    if r.dataOffset != toff as i64 || r.dataLength != len as i64 {
        problems.push(format!(
            "the service reports {} bytes at {}, asked for {len} at {toff}",
            r.dataLength, r.dataOffset
        ));
    }
    let verified = match verify::verify_range(target.as_fd(), size, toff, len, file, a.offset) {
        Ok(v) => {
            if r.checksumType == ChecksumType::XXH3_64 && r.checksum as u64 != v.xxh3 {
                problems.push(format!(
                    "service checksum {:#018x} != target xxh3 {:#018x}",
                    r.checksum, v.xxh3
                ));
            }
            true
        }
        Err(e) => {
            problems.push(format!("verify: {e:#}"));
            false
        }
    };
    let secs = round_trip.as_secs_f64().max(1e-9);
    // None for 0 bytes, as in `load`'s report: a rate of nothing means nothing.
    let throughput = (r.dataLength > 0).then(|| r.dataLength as f64 / (1u64 << 20) as f64 / secs);
    let report = serde_json::json!({
        "path": a.file.display().to_string(),
        "target_heap": info.name,
        "target_size": size,
        "target_offset": toff,
        "client_alloc_ms": alloc_ms,
        "exporter": r.heapName,
        "buffer_kind": buffer_kind_name(r.bufferKind),
        "data_length": r.dataLength,
        "page_size": r.pageSize,
        "io_path": io_path_name(r.ioPath),
        "io_path_reason": r.ioPathReason,
        "service_ms": r.totalNanos as f64 / 1e6,
        "round_trip_ms": secs * 1e3,
        "throughput_mib_s": throughput,
        "verified": verified && problems.is_empty(),
        "problems": problems,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} -> the client's {} buffer ({size} bytes, allocated in {alloc_ms:.2} ms) at offset {toff}", a.file.display(), info.name);
        println!(
            "  exporter    {} ({})",
            r.heapName,
            buffer_kind_name(r.bufferKind)
        );
        println!(
            "  data        {} bytes, page size {}",
            r.dataLength, r.pageSize
        );
        if r.dataLength == 0 {
            println!(
                "  empty       {}: nothing was written into the buffer",
                if file_size == 0 {
                    "the file is empty"
                } else {
                    "the range is empty"
                }
            );
        }
        println!(
            "  io path     {} ({})",
            io_path_name(r.ioPath),
            r.ioPathReason
        );
        println!(
            "  time        {:.2} ms in the service, {:.2} ms round trip{}",
            r.totalNanos as f64 / 1e6,
            secs * 1e3,
            throughput.map_or(String::new(), |t| format!(" ({t:.0} MiB/s)"))
        );
        if problems.is_empty() {
            println!("  verify      OK: the range holds exactly the file's bytes");
        } else {
            for p in &problems {
                println!("  PROBLEM     {p}");
            }
        }
    }
    Ok(if problems.is_empty() {
        0
    } else {
        EXIT_VERIFY_FAILED
    })
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The file to load (e.g. 1 GiB for throughput, 4 KiB for --latency).
    pub file: PathBuf,
    /// Rounds of each contender (best and median are shown); at least 1.
    #[arg(long, default_value_t = 4, value_parser = at_least_one("rounds"))]
    pub rounds: u32,
    /// Only service vs in-process engine (skip the core bench's status quo and device limit).
    #[arg(long)]
    pub no_baselines: bool,
    /// Measure loadFile latency on FILE (use a small file, e.g. 4 KiB) instead of throughput.
    #[arg(long)]
    pub latency: bool,
    /// Calls per contender for --latency; at least 1.
    #[arg(long, default_value_t = 2000, value_parser = at_least_one("iterations"))]
    pub iterations: u32,
    /// Loads into a reused client buffer from HEAP (v2 loadInto) vs fresh-buffer loads.
    #[arg(long, value_name = "HEAP")]
    pub into: Option<String>,
    /// The service's pid: its CPU time (throughput, --into), page faults (--into), RSS
    /// (--concurrent), and pinning it next to the client (--latency --pin).
    #[arg(long, value_name = "PID")]
    pub service_pid: Option<u32>,
    /// With --latency: run the client's thread, the echo server and (with --service-pid) the
    /// service on one CPU (default: the last one).
    #[arg(long, value_name = "CPU", num_args = 0..=1, default_missing_value = "last")]
    pub pin: Option<String>,
    /// Load FILE's N equal slices at once (one connection each) against one load of them all.
    #[arg(long, value_name = "N")]
    pub concurrent: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Entry point of the binary; returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    env_logger_init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmabuf-loader: error: {e:#}");
            exit_status(&e)
        }
    }
}

#[cfg(not(target_os = "android"))]
fn env_logger_init() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
}

#[cfg(target_os = "android")]
fn env_logger_init() {}

fn transport(cli: &Cli) -> Result<Transport> {
    Transport::choose(cli.socket.as_deref(), cli.binder_device.as_deref())
}

/// Connects to the service; a failure is "the service could not be reached" (exit status 5).
/// Over a unix socket the error says what is wrong with it in words (dmabuf_loader_binder's
/// connect looks at the path: no such socket, not a socket, nobody listening, permission).
fn connect(transport: Transport) -> Result<Session> {
    Session::connect(transport, 1).context(Unreachable("cannot reach dmabuf-loader-service"))
}

pub fn run(cli: Cli) -> Result<i32> {
    let transport = transport(&cli).context(Unreachable("cannot reach dmabuf-loader-service"))?;
    match cli.command {
        Command::BenchEcho => {
            crate::echo::serve_child(&transport)?;
            Ok(0)
        }
        Command::Load(args) => {
            // The file first: a FILE that cannot be opened is this side's error (exit 1) even
            // when the service is down.
            let file = open_source(&args.file)?;
            let session = connect(transport)?;
            load(&session, &file, &args)
        }
        Command::Heaps(a) => heaps(&connect(transport)?, a.json),
        Command::Info(a) => info(&connect(transport)?, a.json),
        Command::Bench(a) => {
            let session = connect(transport)?;
            let mut out = std::io::stdout().lock();
            let mut log: Box<dyn Write> = if a.json {
                Box::new(std::io::sink())
            } else {
                Box::new(std::io::stderr())
            };
            if let Some(heap) = &a.into {
                let r = crate::bench_into::into(
                    &session,
                    &a.file,
                    heap,
                    a.rounds,
                    a.service_pid,
                    &mut *log,
                )?;
                if a.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
                } else {
                    r.print(&mut out)?;
                }
            } else if let Some(n) = a.concurrent {
                let r =
                    bench::concurrent(&session, &a.file, n, a.rounds, a.service_pid, &mut *log)?;
                if a.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
                } else {
                    r.print(&mut out)?;
                }
            } else if a.latency {
                let cpu = match a.pin.as_deref() {
                    None => None,
                    Some("last") => {
                        Some(std::thread::available_parallelism().map_or(1, |n| n.get()) - 1)
                    }
                    Some(n) => Some(
                        n.parse()
                            .with_context(|| format!("--pin {n}: a CPU number"))?,
                    ),
                };
                let r = bench::latency(&session, &a.file, a.iterations, cpu, a.service_pid)?;
                if a.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
                } else {
                    r.print(&mut out)?;
                }
            } else {
                let r = bench::throughput(
                    &session,
                    &a.file,
                    a.rounds,
                    !a.no_baselines,
                    a.service_pid,
                    &mut *log,
                )?;
                if a.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
                } else {
                    r.print(&mut out)?;
                }
            }
            Ok(0)
        }
    }
}

/// Everything `load` reports (the JSON form; the text form prints the same facts).
#[derive(Debug, Serialize, Default)]
pub struct LoadReport {
    pub path: String,
    pub file_size: u64,
    pub offset: u64,
    pub heap: String,
    pub buffer_kind: String,
    pub is_dmabuf: bool,
    /// fdinfo `exp_name` of the returned fd (None: not a dma-buf).
    pub exporter: Option<String>,
    pub data_length: i64,
    pub buffer_size: i64,
    /// The page size the buffer got (4096, or a huge page's).
    pub page_size: i64,
    pub read_only: bool,
    pub io_path: String,
    pub io_path_reason: String,
    pub alloc_ms: f64,
    pub service_ms: f64,
    pub round_trip_ms: f64,
    /// None for a load of 0 bytes (a rate of nothing means nothing).
    pub throughput_mib_s: Option<f64>,
    pub checksum_xxh3: Option<String>,
    pub verified: Option<bool>,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ErrorReport<'a> {
    error: ErrorBody<'a>,
}
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: Option<i32>,
    name: Option<String>,
    message: &'a str,
}

fn report_call_error(e: &CallError, json: bool) -> Result<i32> {
    if json {
        let (code, message) = match e {
            CallError::Service { code, message } => (Some(*code), message.as_str()),
            CallError::Binder(m) => (None, m.as_str()),
        };
        let r = ErrorReport {
            error: ErrorBody {
                code,
                name: code.map(error_code_name),
                message,
            },
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        eprintln!("dmabuf-loader: the service refused: {e}");
    }
    Ok(call_error_status(e))
}

/// Opens FILE read-only so that no file type can block the open: O_NONBLOCK (a FIFO without a
/// writer would otherwise wait forever, before anything reaches the service), then cleared, so
/// the service gets an ordinary blocking fd and says itself what it thinks of the file type.
pub fn open_source(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .with_context(|| format!("fcntl(F_GETFL) on {}", path.display()))?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
        .with_context(|| format!("clearing O_NONBLOCK on {}", path.display()))?;
    Ok(file)
}

fn load(session: &Session, file: &File, a: &LoadArgs) -> Result<i32> {
    if let Some(spec) = &a.into {
        return load_into(session, file, a, spec);
    }
    let file_size = file.metadata()?.len();
    let req = LoadRequest {
        heapName: a.heap.clone().unwrap_or_default(),
        offset: a.offset as i64,
        length: a.length.map_or(-1, |l| l as i64),
        readOnly: a.read_only,
        checksum: if a.checksum {
            ChecksumType::XXH3_64
        } else {
            ChecksumType::NONE
        },
    };
    let started = Instant::now();
    let outcome = if a.async_ {
        load_async(session, file, &req, a)?
    } else {
        session.load(file, &req)?
    };
    let round_trip = started.elapsed();
    let result = match outcome {
        Ok(r) => r,
        Err(e) => return report_call_error(&e, a.json),
    };
    let (report, ok) = check(&result, file, file_size, a, round_trip)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_load(&report, a.verify);
    }
    Ok(if ok { 0 } else { EXIT_VERIFY_FAILED })
}

fn load_async(
    session: &Session,
    file: &File,
    req: &LoadRequest,
    a: &LoadArgs,
) -> Result<Result<LoadResult, CallError>> {
    let task = match session.load_async(file, req)? {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let mut progress = Progress::new(std::io::stderr().is_terminal() && !a.json);
    let timeout = (a.timeout_secs > 0).then(|| Duration::from_secs(a.timeout_secs));
    let outcome = task.wait(timeout, |done, total| progress.update(done, total));
    progress.finish();
    match outcome {
        Ok(r) => Ok(r),
        Err(e) => {
            // Timed out: stop the work we no longer wait for.
            let _ = task.cancel();
            Err(e)
        }
    }
}

fn check(
    r: &LoadResult,
    file: &File,
    file_size: u64,
    a: &LoadArgs,
    round_trip: Duration,
) -> Result<(LoadReport, bool)> {
    let buffer = r
        .buffer
        .as_ref()
        .context("the service returned no buffer")?;
    let fd = borrow_pfd(buffer);
    let mut problems = Vec::new();
    let exporter = verify::dmabuf_exporter(fd)?;
    let memfd = r.bufferKind == BufferKind::MEMFD;
    if !memfd && exporter.is_none() {
        problems.push(format!(
            "the service said {} but the fd is not a dma-buf (no exp_name in fdinfo)",
            buffer_kind_name(r.bufferKind)
        ));
    }
    if a.read_only {
        let fl = nix::fcntl::fcntl(fd.as_fd().as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        if fl & libc::O_ACCMODE != libc::O_RDONLY {
            problems.push("asked for a read-only buffer but the fd is writable".into());
        }
    }
    let checksum = (r.checksumType == ChecksumType::XXH3_64).then_some(r.checksum as u64);
    let mut verified = None;
    if a.verify {
        match verify::verify(fd, r.bufferSize as u64, r.dataLength as u64, file, a.offset) {
            Ok(v) => {
                let mut good = true;
                if let Some(c) = checksum {
                    if c != v.xxh3 {
                        problems.push(format!(
                            "service checksum {c:#018x} != buffer xxh3 {:#018x}",
                            v.xxh3
                        ));
                        good = false;
                    }
                }
                verified = Some(good);
            }
            Err(e) => {
                problems.push(format!("verify: {e:#}"));
                verified = Some(false);
            }
        }
    }
    let secs = round_trip.as_secs_f64().max(1e-9);
    let report = LoadReport {
        path: a.file.display().to_string(),
        file_size,
        offset: a.offset,
        heap: r.heapName.clone(),
        buffer_kind: buffer_kind_name(r.bufferKind),
        is_dmabuf: exporter.is_some(),
        exporter,
        data_length: r.dataLength,
        buffer_size: r.bufferSize,
        page_size: r.pageSize,
        read_only: a.read_only,
        io_path: io_path_name(r.ioPath),
        io_path_reason: r.ioPathReason.clone(),
        alloc_ms: r.allocNanos as f64 / 1e6,
        service_ms: r.totalNanos as f64 / 1e6,
        round_trip_ms: secs * 1e3,
        throughput_mib_s: (r.dataLength > 0)
            .then(|| r.dataLength as f64 / (1u64 << 20) as f64 / secs),
        checksum_xxh3: checksum.map(|c| format!("{c:#018x}")),
        verified,
        problems,
    };
    let ok = report.problems.is_empty();
    Ok((report, ok))
}

fn print_load(r: &LoadReport, verify: bool) {
    println!("loaded {} -> heap {} ({})", r.path, r.heap, r.buffer_kind);
    println!(
        "  range       [{}, {}) of a {}-byte file",
        r.offset,
        r.offset + r.data_length as u64,
        r.file_size
    );
    if r.data_length == 0 {
        println!(
            "  empty       {}: the buffer holds no data",
            if r.file_size == 0 {
                "the file is empty"
            } else {
                "the range is empty"
            }
        );
    }
    println!(
        "  buffer      {} bytes ({} data){}",
        r.buffer_size,
        r.data_length,
        if r.read_only { ", read-only" } else { "" }
    );
    match (&r.exporter, r.buffer_kind.as_str()) {
        (Some(e), _) => println!("  dma-buf     yes (exporter {e})"),
        (None, "MEMFD") => {
            println!("  dma-buf     no: a plain memfd (this machine has no dma-heap or udmabuf)")
        }
        (None, _) => println!("  dma-buf     NO (see problems)"),
    }
    println!("  io path     {} ({})", r.io_path, r.io_path_reason);
    println!(
        "  time        alloc {:.1} ms, service {:.1} ms, round trip {:.1} ms",
        r.alloc_ms, r.service_ms, r.round_trip_ms
    );
    if let Some(t) = r.throughput_mib_s {
        println!("  throughput  {t:.0} MiB/s");
    }
    if let Some(c) = &r.checksum_xxh3 {
        println!("  checksum    xxh3 {c}");
    }
    if verify {
        match r.verified {
            Some(true) => println!(
                "  verify      OK: the buffer holds exactly the file's bytes, padding zero"
            ),
            _ => println!("  verify      FAILED"),
        }
    }
    for p in &r.problems {
        println!("  PROBLEM     {p}");
    }
}

#[derive(Debug, Serialize)]
struct HeapRow {
    name: String,
    kind: String,
    is_dmabuf: bool,
    direct_io: bool,
}

fn heaps(session: &Session, json: bool) -> Result<i32> {
    let heaps = match session.proxy().getHeaps() {
        Ok(h) => h,
        Err(s) => return report_call_error(&CallError::from_status(&s), json),
    };
    let rows: Vec<HeapRow> = heaps
        .iter()
        .map(|h| HeapRow {
            name: h.name.clone(),
            kind: buffer_kind_name(h.kind),
            is_dmabuf: h.isDmaBuf,
            direct_io: h.directIo,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<20} {:<10} {:<8} DIRECT I/O", "HEAP", "KIND", "DMA-BUF");
        for (i, h) in rows.iter().enumerate() {
            let name = if i == 0 {
                format!("{} (default)", h.name)
            } else {
                h.name.clone()
            };
            println!(
                "{name:<20} {:<10} {:<8} {}",
                h.kind,
                yes(h.is_dmabuf),
                yes(h.direct_io)
            );
        }
    }
    Ok(0)
}

fn available(b: bool) -> &'static str {
    if b {
        "available"
    } else {
        "not available"
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[derive(Debug, Serialize)]
struct InfoReport {
    transport: String,
    interface_version: i32,
    interface_hash: String,
    client_interface_version: i32,
    client_interface_hash: String,
    implementation: String,
    kernel_release: String,
    io_uring: bool,
    io_uring_dmabuf_regbuf: bool,
    cachestat: bool,
    max_load_bytes: i64,
}

fn info(session: &Session, json: bool) -> Result<i32> {
    let p = session.proxy();
    let status = |s| CallError::from_status(&s);
    let (version, hash, si) = match (
        p.getInterfaceVersion(),
        p.getInterfaceHash(),
        p.getServiceInfo(),
    ) {
        (Ok(v), Ok(h), Ok(i)) => (v, h, i),
        (Err(s), _, _) | (_, Err(s), _) | (_, _, Err(s)) => {
            return report_call_error(&status(s), json)
        }
    };
    let r = InfoReport {
        transport: session.transport.describe(),
        interface_version: version,
        interface_hash: hash,
        client_interface_version: aidl_iface::VERSION,
        client_interface_hash: aidl_iface::HASH.to_string(),
        implementation: si.implementation,
        kernel_release: si.kernelRelease,
        io_uring: si.ioUring,
        io_uring_dmabuf_regbuf: si.ioUringDmabufRegbuf,
        cachestat: si.cachestat,
        max_load_bytes: si.maxLoadBytes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "service         vendor.dmabufloader.IDmabufLoader/default over {}",
            r.transport
        );
        println!(
            "interface       version {} hash {}",
            r.interface_version, r.interface_hash
        );
        println!(
            "client built    version {} hash {}",
            r.client_interface_version, r.client_interface_hash
        );
        println!("implementation  {}", r.implementation);
        println!("kernel          {}", r.kernel_release);
        println!("io_uring        {}", available(r.io_uring));
        println!(
            "io_uring dma-buf registered buffers (kernel series, not in mainline): {}",
            available(r.io_uring_dmabuf_regbuf)
        );
        println!("cachestat       {}", available(r.cachestat));
        println!(
            "max load        {} per load",
            dmabuf_loader::size::format(r.max_load_bytes.max(0) as u64)
        );
    }
    Ok(0)
}

/// Used by tests: does `path` look like a socket the service listens on?
pub fn socket_exists(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}
