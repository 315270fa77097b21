//! `dmabuf-loader-soak`: thousands of mixed loads against a running dmabuf-loader-service from
//! up to 64 concurrent clients, then checks that the service's fd count and RSS return to
//! their baseline. Exit status 0 only if every operation had its expected outcome and nothing
//! leaked.
//!
//! The mix, per operation (seeded, so a run can be replayed with --seed):
//! - sync `load` of a random range of a random file (0 B .. 8 MiB) on a random heap, with the
//!   service's XXH3 checked against the file, and every 8th buffer mapped and compared;
//! - `loadFile` of a whole file, mapped and compared;
//! - a bad input (pipe, socket, directory, /dev/null, O_PATH, write-only, range past EOF,
//!   unknown heap, over the size limit) that must fail with its exact ErrorCode;
//! - `loadAsync` waited to the end, or cancelled at once (then exactly one of onComplete or
//!   onError(CANCELLED) arrives), or abandoned: the client drops its whole connection while
//!   the load runs, like a process that dies;
//! - `getHeaps` / `getServiceInfo`.
//!
//! BUSY (the service's admission limits) is an expected answer: the client backs off and
//! retries, and the count is reported.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use dmabuf_loader_binder::aidl::ChecksumType::ChecksumType;
use dmabuf_loader_binder::aidl::ErrorCode::ErrorCode;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::{CallError, Transport};
use dmabuf_loader_client::session::Session;
use dmabuf_loader_client::verify::verify;

#[derive(Parser, Debug, Clone)]
#[command(about = "Soak a running dmabuf-loader-service and check it leaks nothing")]
struct Args {
    /// The service's unix socket (RPC binder); without it, kernel binder.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Kernel binder device (default: /dev/binderfs/binder, else /dev/binder).
    #[arg(long, value_name = "PATH")]
    binder_device: Option<PathBuf>,
    /// The service's pid, whose /proc fd count and RSS are checked.
    #[arg(long)]
    pid: u32,
    /// Operations in all.
    #[arg(long, default_value_t = 4000)]
    ops: u32,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 64)]
    clients: u32,
    /// Seed of the operation mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to make the test files (a disk directory: tmpfs would skip O_DIRECT).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// RSS the service may keep above its baseline afterwards (allocator caches), in MiB.
    #[arg(long, default_value_t = 16)]
    rss_slack_mib: u64,
}

const SIZES: &[usize] = &[0, 1, 4095, 4097, 65_539, (1 << 20) + 7, 8 << 20];

struct Files {
    dir: tempfile::TempDir,
    files: Vec<(PathBuf, usize)>,
}

fn make_files(dir: &Path) -> Result<Files> {
    std::fs::create_dir_all(dir)?;
    let dir = tempfile::tempdir_in(dir).context("scratch dir")?;
    let mut files = Vec::new();
    for (i, &len) in SIZES.iter().enumerate() {
        let p = dir.path().join(format!("f{i}-{len}"));
        let mut f = File::create(&p)?;
        let mut rng = fastrand::Rng::with_seed(i as u64 + 77);
        let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        f.write_all(&data)?;
        f.sync_all()?;
        files.push((p, len));
    }
    Ok(Files { dir, files })
}

/// fd count and RSS (bytes) of a process.
fn usage(pid: u32) -> Result<(usize, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("is the service (pid {pid}) running?"))?
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS in /proc/<pid>/status")?;
    Ok((fds, rss_kib * 1024))
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<&'static str, u64>,
    busy_retries: u64,
    failures: Vec<String>,
}

impl Tally {
    fn count(&mut self, what: &'static str) {
        *self.outcomes.entry(what).or_default() += 1;
    }
}

fn expect_code(
    r: std::result::Result<impl Sized, CallError>,
    want: ErrorCode,
    what: &str,
) -> Result<()> {
    match r {
        Ok(_) => bail!("{what}: succeeded, expected {want:?}"),
        Err(e) if e.code() == Some(want.0) => Ok(()),
        Err(e) => bail!("{what}: expected {want:?}, got {e}"),
    }
}

/// Retries `f` while the service answers BUSY.
fn retry_busy<T>(
    tally: &Mutex<Tally>,
    mut f: impl FnMut() -> Result<std::result::Result<T, CallError>>,
) -> Result<std::result::Result<T, CallError>> {
    for attempt in 0..2000 {
        match f()? {
            Err(e) if e.code() == Some(ErrorCode::BUSY.0) => {
                tally.lock().unwrap().busy_retries += 1;
                std::thread::sleep(Duration::from_micros(200 * (attempt % 10 + 1)));
            }
            other => return Ok(other),
        }
    }
    bail!("still BUSY after 2000 retries")
}

fn one_op(
    rng: &mut fastrand::Rng,
    session: &mut Session,
    transport: &Transport,
    files: &Files,
    heaps: &[String],
    max_load: u64,
    tally: &Mutex<Tally>,
) -> Result<&'static str> {
    let (path, len) = files.files[rng.usize(..files.files.len())].clone();
    let file = File::open(&path)?;
    let heap = heaps[rng.usize(..heaps.len())].clone();
    match rng.u32(..100) {
        0..=34 => {
            let offset = if len == 0 { 0 } else { rng.u64(..=len as u64) };
            let length = if rng.bool() {
                -1
            } else {
                rng.i64(0..=(len as i64 - offset as i64))
            };
            let req = LoadRequest {
                heapName: heap,
                offset: offset as i64,
                length,
                checksum: ChecksumType::XXH3_64,
                ..Default::default()
            };
            let r = retry_busy(tally, || session.load(&file, &req))?
                .map_err(|e| anyhow::anyhow!("load {req:?}: {e}"))?;
            let want_len = if length < 0 {
                len as u64 - offset
            } else {
                length as u64
            };
            ensure!(
                r.dataLength as u64 == want_len,
                "dataLength {} != {want_len}",
                r.dataLength
            );
            let mut data = vec![0u8; want_len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, offset)?;
            ensure!(
                r.checksum as u64 == twox_hash::XxHash3_64::oneshot(&data),
                "checksum mismatch for {req:?}"
            );
            if rng.u32(..8) == 0 {
                let fd = r.buffer.as_ref().context("no buffer in the result")?;
                verify(
                    std::os::fd::AsFd::as_fd(fd),
                    r.bufferSize as u64,
                    r.dataLength as u64,
                    &file,
                    offset,
                )?;
            }
            Ok("load ok")
        }
        35..=44 => {
            let fd = retry_busy(tally, || session.load_file(&file))?
                .map_err(|e| anyhow::anyhow!("loadFile: {e}"))?;
            let size = len.max(1).div_ceil(4096) as u64 * 4096;
            verify(std::os::fd::AsFd::as_fd(&fd), size, len as u64, &file, 0)?;
            Ok("loadFile ok")
        }
        45..=64 => bad_input(rng, session, files, max_load),
        65..=84 => {
            let req = LoadRequest {
                heapName: heap,
                length: -1,
                ..Default::default()
            };
            let a = match retry_busy(tally, || session.load_async(&file, &req))? {
                Ok(a) => a,
                Err(e) => bail!("loadAsync: {e}"),
            };
            match rng.u32(..3) {
                0 => {
                    let r = a
                        .wait(Duration::from_secs(60), |_, _| {})?
                        .map_err(|e| anyhow::anyhow!("async load: {e}"))?;
                    ensure!(
                        r.dataLength as usize == len,
                        "async dataLength {}",
                        r.dataLength
                    );
                    Ok("async ok")
                }
                1 => {
                    let _ = a.cancel();
                    match a.wait(Duration::from_secs(60), |_, _| {})? {
                        Ok(_) => Ok("async cancel lost the race (completed)"),
                        Err(e) if e.code() == Some(ErrorCode::CANCELLED.0) => Ok("async cancelled"),
                        Err(e) => bail!("cancelled async load: {e}"),
                    }
                }
                _ => {
                    // The client "dies": its connection goes away mid-load.
                    drop(a);
                    *session = Session::connect(transport.clone(), 2)?;
                    Ok("async abandoned + reconnect")
                }
            }
        }
        _ => {
            let h = session
                .proxy()
                .getHeaps()
                .map_err(|e| anyhow::anyhow!("getHeaps: {e:?}"))?;
            ensure!(!h.is_empty(), "no heaps");
            session
                .proxy()
                .getServiceInfo()
                .map_err(|e| anyhow::anyhow!("getServiceInfo: {e:?}"))?;
            Ok("info ok")
        }
    }
}

fn bad_input(
    rng: &mut fastrand::Rng,
    session: &Session,
    files: &Files,
    max_load: u64,
) -> Result<&'static str> {
    let (path, len) = files.files.last().unwrap().clone();
    let req = || LoadRequest {
        length: -1,
        ..Default::default()
    };
    let case = rng.u32(..9);
    let r = match case {
        0 => {
            let (r, _w) = nix::unistd::pipe()?;
            expect_code(
                session.load(&r, &req())?,
                ErrorCode::UNSUPPORTED_FILE_TYPE,
                "pipe",
            )
        }
        1 => {
            let (a, _b) = std::os::unix::net::UnixStream::pair()?;
            expect_code(
                session.load(&a, &req())?,
                ErrorCode::UNSUPPORTED_FILE_TYPE,
                "socket",
            )
        }
        2 => {
            let d = File::open(files.dir.path())?;
            expect_code(
                session.load(&d, &req())?,
                ErrorCode::UNSUPPORTED_FILE_TYPE,
                "directory",
            )
        }
        3 => {
            let n = File::open("/dev/null")?;
            expect_code(
                session.load(&n, &req())?,
                ErrorCode::UNSUPPORTED_FILE_TYPE,
                "/dev/null",
            )
        }
        4 => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(&path)?;
            match session.load(&f, &req())? {
                // Kernel binder refuses to carry an O_PATH fd at all: the transaction fails in
                // the driver and the service never sees it. A refusal either way.
                Err(CallError::Binder(_))
                    if matches!(session.transport, Transport::Kernel { .. }) =>
                {
                    Ok(())
                }
                r => expect_code(r, ErrorCode::PATH_ONLY_FD, "O_PATH"),
            }
        }
        5 => {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            expect_code(
                session.load(&f, &req())?,
                ErrorCode::NOT_READABLE,
                "write-only",
            )
        }
        6 => {
            let f = File::open(&path)?;
            let past = LoadRequest {
                offset: len as i64 + 1,
                ..req()
            };
            expect_code(
                session.load(&f, &past)?,
                ErrorCode::INVALID_RANGE,
                "range past EOF",
            )
        }
        7 => {
            let f = File::open(&path)?;
            let bad = LoadRequest {
                heapName: "no-such-heap".into(),
                ..req()
            };
            expect_code(
                session.load(&f, &bad)?,
                ErrorCode::UNKNOWN_HEAP,
                "unknown heap",
            )
        }
        _ => {
            let big = files.dir.path().join(format!("sparse-{}", rng.u64(..)));
            let f = File::create(&big)?;
            f.set_len(max_load + 1)?;
            let r = File::open(&big)?;
            std::fs::remove_file(&big)?;
            expect_code(
                session.load(&r, &req())?,
                ErrorCode::TOO_LARGE,
                "over the size limit",
            )
        }
    };
    r.map(|_| "bad input refused with its code")
}

fn main() -> Result<()> {
    let args = Args::parse();
    let transport = match &args.socket {
        Some(p) => Transport::Unix { path: p.clone() },
        None => Transport::choose(None, args.binder_device.as_deref())?,
    };
    let files = make_files(&args.dir)?;
    let control = Session::connect(transport.clone(), 1)?;
    let heaps: Vec<String> = control
        .proxy()
        .getHeaps()
        .map_err(|e| anyhow::anyhow!("getHeaps: {e:?}"))?
        .into_iter()
        .map(|h| h.name)
        .collect();
    let max_load = control
        .proxy()
        .getServiceInfo()
        .map_err(|e| anyhow::anyhow!("getServiceInfo: {e:?}"))?
        .maxLoadBytes as u64;

    // Warm up (first loads create the service's lazily made state), then take the baseline.
    for (p, _) in &files.files {
        let f = File::open(p)?;
        let _ = control.load_file(&f)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let (base_fds, base_rss) = usage(args.pid)?;
    println!(
        "soak: {} ops from {} clients on {}, heaps {heaps:?}; service pid {} baseline: {base_fds} fds, RSS {:.1} MiB",
        args.ops,
        args.clients,
        transport.describe(),
        args.pid,
        base_rss as f64 / (1 << 20) as f64
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let files = Arc::new(files);
    let mut peak = (base_fds, base_rss);
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for c in 0..args.clients {
            let ops = args.ops / args.clients + u32::from(c < args.ops % args.clients);
            let (transport, files, heaps, tally) = (
                transport.clone(),
                Arc::clone(&files),
                heaps.clone(),
                Arc::clone(&tally),
            );
            let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(c as u64);
            handles.push(s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut session = match Session::connect(transport.clone(), 2) {
                    Ok(s) => s,
                    Err(e) => {
                        tally
                            .lock()
                            .unwrap()
                            .failures
                            .push(format!("client {c}: connect: {e:#}"));
                        return;
                    }
                };
                for i in 0..ops {
                    match one_op(
                        &mut rng,
                        &mut session,
                        &transport,
                        &files,
                        &heaps,
                        max_load,
                        &tally,
                    ) {
                        Ok(what) => tally.lock().unwrap().count(what),
                        Err(e) => tally
                            .lock()
                            .unwrap()
                            .failures
                            .push(format!("client {c} op {i}: {e:#}")),
                    }
                }
            }));
        }
        while handles.iter().any(|h| !h.is_finished()) {
            if let Ok((f, r)) = usage(args.pid) {
                peak = (peak.0.max(f), peak.1.max(r));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    drop(control);

    // Every client is gone: the service must come back to its baseline.
    let settle = Instant::now();
    let slack = args.rss_slack_mib << 20;
    let (mut fds, mut rss) = usage(args.pid)?;
    while (fds > base_fds || rss > base_rss + slack) && settle.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        (fds, rss) = usage(args.pid)?;
    }

    let tally = tally.lock().unwrap();
    let total: u64 = tally.outcomes.values().sum();
    println!(
        "soak: {total} ops in {:.1}s ({:.0} ops/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for (what, n) in &tally.outcomes {
        println!("  {n:>6}  {what}");
    }
    println!("  {:>6}  BUSY answers (retried)", tally.busy_retries);
    println!(
        "soak: service peak {} fds, RSS {:.1} MiB; after: {fds} fds (baseline {base_fds}), RSS {:.1} MiB (baseline {:.1}, slack {} MiB)",
        peak.0,
        peak.1 as f64 / (1 << 20) as f64,
        rss as f64 / (1 << 20) as f64,
        base_rss as f64 / (1 << 20) as f64,
        args.rss_slack_mib
    );
    for f in tally.failures.iter().take(20) {
        println!("  FAILED: {f}");
    }
    let mut problems = Vec::new();
    if !tally.failures.is_empty() {
        problems.push(format!("{} operations failed", tally.failures.len()));
    }
    if fds > base_fds {
        problems.push(format!("service fds {fds} > baseline {base_fds}: leak"));
    }
    if rss > base_rss + slack {
        problems.push(format!(
            "service RSS did not return within {} MiB of its baseline",
            args.rss_slack_mib
        ));
    }
    if total != u64::from(args.ops) - tally.failures.len() as u64 {
        problems.push(format!("{total} outcomes counted for {} ops", args.ops));
    }
    if problems.is_empty() {
        println!("soak: PASS");
        Ok(())
    } else {
        bail!("soak FAILED: {}", problems.join("; "))
    }
}
