//! `dmabuf-loader bench`: what going through the service costs.
//!
//! Throughput (`bench FILE`): cold loads of the same file, interleaved round by round in
//! ABBA order (service, engine, engine, service, ...; page cache dropped before each), best and
//! median of the rounds, with the core bench's status quo and device limit
//! (`dmabuf_loader_bench`) timed in the same cold rounds, so all four stand side by side.
//!
//! Latency (`bench FILE --latency`): p50/p90/p99 of `loadFile` on a small file against a bare
//! binder call passing one fd each way (an echo service in another process, same transport),
//! interleaved call by call.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dmabuf_loader::{LoadControl, Loader};
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use serde::Serialize;

use dmabuf_loader_bench as core_bench;
use dmabuf_loader_bench::measure::Spread;

use crate::echo::EchoServer;
use crate::session::{pfd_of, CallError, Session};

/// One contender's cold (or warm) rounds: medians, spread and cost columns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stat {
    pub name: String,
    pub median_gib_s: f64,
    pub min_gib_s: f64,
    pub max_gib_s: f64,
    /// max / min - 1 over the rounds; above 25% the row is flagged.
    pub spread: f64,
    pub median_ms: f64,
    /// CPU seconds per GiB, user + sys: this process (+ the service's with --service-pid:
    /// None for the service row without it), or fio.
    pub cpu_s_per_gib: Option<f64>,
    /// Share of the file left in the page cache after a cold run (None: warm, or no cachestat).
    pub cache_left: Option<f64>,
    pub page_size: u64,
    pub io_path: String,
}

#[derive(Default)]
struct Samples {
    gib: Vec<f64>,
    ms: Vec<f64>,
    cpu: Vec<f64>,
    cpu_known: bool,
    cache: Vec<f64>,
    page_size: u64,
    paths: Vec<String>,
}

impl Samples {
    fn stat(&self, name: &str) -> Option<Stat> {
        let g = Spread::of(&self.gib)?;
        let mut paths = self.paths.clone();
        paths.sort();
        paths.dedup();
        Some(Stat {
            name: name.into(),
            median_gib_s: g.median,
            min_gib_s: g.min,
            max_gib_s: g.max,
            spread: g.spread(),
            median_ms: Spread::of(&self.ms).map_or(0.0, |s| s.median),
            cpu_s_per_gib: self
                .cpu_known
                .then(|| Spread::of(&self.cpu).map(|s| s.median))
                .flatten(),
            cache_left: Spread::of(&self.cache).map(|s| s.median),
            page_size: self.page_size,
            io_path: paths.join("/"),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub file: String,
    pub size: u64,
    pub rounds: u32,
    pub heap: String,
    pub load_average: String,
    /// Cold rows: the service, the in-process engine, the status quo and the limit jobs.
    pub cold: Vec<Stat>,
    pub warm: Vec<Stat>,
    /// The best median of the registered O_DIRECT loop and fio's jobs, and which gave it.
    pub device_limit_gib_s: Option<f64>,
    pub device_limit_by: Option<String>,
    pub service_vs_device_limit: Option<f64>,
    pub service_vs_status_quo: Option<f64>,
    pub service_cpu_vs_status_quo: Option<f64>,
    /// Median of (client round trip - the service's own engine time) over every service load,
    /// minus the same for the in-process engine (wall time - its own time): the cost of
    /// binder, fd passing and the service's bookkeeping per load.
    pub service_overhead_ms: f64,
    /// Why the baselines (status quo, limit) could not run, if they could not.
    pub baselines_error: Option<String>,
}

enum Who {
    Service,
    Engine,
    StatusQuo,
    Limit(core_bench::limit::LimitJob),
}

/// Throughput: the service, the in-process engine and (unless `with_baselines` is false) the
/// status quo and the device limit, cold, every one once per round with the order rotated;
/// then the service and the engine warm.
pub fn throughput(
    session: &Session,
    file: &Path,
    rounds: u32,
    with_baselines: bool,
    service_pid: Option<u32>,
    log: &mut dyn Write,
) -> Result<ThroughputReport> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    let rounds = rounds.max(1);
    // The engine in this process is set up like the service's and uses the heap it used.
    let probe = {
        let f = crate::cli::open_source(file)?;
        let req = LoadRequest {
            length: 1.min(size as i64),
            ..Default::default()
        };
        session
            .load(&f, &req)?
            .map_err(anyhow::Error::new)
            .context("probing the service")?
    };
    let heap = probe.heapName.clone();
    drop(probe);
    let loader =
        Loader::new(dmabuf_loader::Config::default()).context("starting the in-process engine")?;
    let sq_loader = core_bench::status_quo_loader().context("starting the status-quo engine")?;
    let engine_req = dmabuf_loader::LoadRequest {
        heap: Some(heap.clone()),
        ..Default::default()
    };
    let service_req = LoadRequest {
        heapName: heap.clone(),
        ..Default::default()
    };
    let mut who = vec![
        ("service (binder)".to_string(), Who::Service),
        ("in-process engine".to_string(), Who::Engine),
    ];
    if with_baselines {
        who.push((
            format!("status quo ({heap} 4K + mmap + read())"),
            Who::StatusQuo,
        ));
        for j in core_bench::limit::jobs(false) {
            who.push((j.name(), Who::Limit(j)));
        }
    }
    let gib = size as f64 / core_bench::measure::GIB;
    let mut overheads = Vec::new();
    let mut tails = Vec::new();
    let mut baselines_error = None;
    let mut cold: Vec<Samples> = who.iter().map(|_| Samples::default()).collect();
    let mut warm: Vec<Samples> = (0..2).map(|_| Samples::default()).collect();
    let svc_cpu = || service_pid.map_or(0.0, core_bench::measure::cpu_of);
    for is_warm in [false, true] {
        if is_warm {
            core_bench::warm_cache(file)?;
        }
        let n = if is_warm { 2 } else { who.len() };
        for round in 0..rounds as usize {
            for k in 0..n {
                let i = core_bench::measure::order(k, round, n);
                if !is_warm {
                    core_bench::drop_cache(file)?;
                }
                let (c0, s0) = (core_bench::measure::cpu_self(), svc_cpu());
                let t = Instant::now();
                let mut page_size = 0;
                let mut path = String::new();
                let mut fio_cpu = None;
                let r: Result<Duration> = (|| match &who[i].1 {
                    Who::Service => {
                        let f = File::open(file)?;
                        let r = session
                            .load(&f, &service_req)?
                            .map_err(anyhow::Error::new)
                            .context("service load")?;
                        let d = t.elapsed();
                        overheads.push(
                            d.saturating_sub(Duration::from_nanos(r.totalNanos.max(0) as u64)),
                        );
                        page_size = r.pageSize as u64;
                        path = dmabuf_loader_binder::io_path_name(r.ioPath).to_string();
                        drop(r); // freeing the buffer is not part of either contender's time
                        Ok(d)
                    }
                    Who::Engine => {
                        let f = File::open(file)?;
                        let l = loader
                            .load(f.as_fd(), &engine_req, &LoadControl::default())
                            .context("in-process load")?;
                        let d = t.elapsed();
                        tails.push(d.saturating_sub(l.total_time));
                        page_size = l.page_size;
                        path = l.io_path.to_string();
                        drop(l);
                        Ok(d)
                    }
                    Who::StatusQuo => {
                        page_size = 4096;
                        Ok(core_bench::status_quo(&sq_loader, file, size, &heap)?.0)
                    }
                    Who::Limit(j) => {
                        let (bw, cpu) = j.run(file, size)?;
                        fio_cpu = Some(cpu);
                        Ok(Duration::from_secs_f64(gib / bw))
                    }
                })();
                let d = match r {
                    Ok(d) => d,
                    Err(e) if matches!(who[i].1, Who::StatusQuo | Who::Limit(_)) => {
                        baselines_error.get_or_insert(format!("{}: {e:#}", who[i].0));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                std::thread::sleep(Duration::from_millis(20)); // the service's tick accounting
                let own = core_bench::measure::cpu_self() - c0;
                let is_service = matches!(who[i].1, Who::Service);
                let cpu = fio_cpu.unwrap_or(own + if is_service { svc_cpu() - s0 } else { 0.0 });
                let s = if is_warm { &mut warm[i] } else { &mut cold[i] };
                s.gib.push(gib / d.as_secs_f64().max(1e-9));
                s.ms.push(d.as_secs_f64() * 1e3);
                s.cpu.push(cpu / gib);
                s.cpu_known = !is_service || service_pid.is_some();
                if !is_warm && !matches!(who[i].1, Who::Limit(_)) {
                    if let Some(c) = core_bench::measure::cached_bytes(file) {
                        s.cache.push(c as f64 / size as f64);
                    }
                }
                s.page_size = s.page_size.max(page_size);
                if !path.is_empty() {
                    s.paths.push(path);
                }
                writeln!(
                    log,
                    "{} round {round}: {:<44} {:>8.1} ms {:>6.2} GiB/s",
                    if is_warm { "warm" } else { "cold" },
                    who[i].0,
                    d.as_secs_f64() * 1e3,
                    gib / d.as_secs_f64().max(1e-9)
                )?;
            }
        }
    }
    let median_ms = |v: &[Duration]| {
        Spread::of(&v.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>())
            .map_or(0.0, |s| s.median)
    };
    let cold: Vec<Stat> = who
        .iter()
        .zip(&cold)
        .filter_map(|((name, _), s)| s.stat(name))
        .collect();
    let warm: Vec<Stat> = who
        .iter()
        .zip(&warm)
        .filter_map(|((name, _), s)| s.stat(name))
        .collect();
    // The limit: the best median among the reference jobs.
    let jobs: Vec<core_bench::limit::LimitJob> = who
        .iter()
        .filter_map(|(_, w)| match w {
            Who::Limit(j) => Some(j.clone()),
            _ => None,
        })
        .collect();
    let medians: Vec<Option<Spread>> = jobs
        .iter()
        .map(|j| {
            cold.iter().find(|s| s.name == j.name()).map(|s| Spread {
                median: s.median_gib_s,
                min: s.min_gib_s,
                max: s.max_gib_s,
                n: 1,
            })
        })
        .collect();
    let limit = core_bench::limit::pick(&jobs, &medians);
    let find = |prefix: &str| cold.iter().find(|s| s.name.starts_with(prefix));
    let (svc, sq) = (find("service"), find("status quo"));
    let has_limit = limit.gib_s > 0.0;
    Ok(ThroughputReport {
        file: file.display().to_string(),
        size,
        rounds,
        heap,
        load_average: core_bench::measure::loadavg(),
        device_limit_gib_s: has_limit.then_some(limit.gib_s),
        device_limit_by: has_limit.then(|| limit.by.clone()),
        service_vs_device_limit: svc
            .filter(|_| has_limit)
            .map(|s| s.median_gib_s / limit.gib_s),
        service_vs_status_quo: svc.zip(sq).map(|(s, q)| s.median_gib_s / q.median_gib_s),
        service_cpu_vs_status_quo: svc
            .and_then(|s| s.cpu_s_per_gib)
            .zip(sq.and_then(|q| q.cpu_s_per_gib))
            .map(|(s, q)| s / q),
        service_overhead_ms: (median_ms(&overheads) - median_ms(&tails)).max(0.0),
        baselines_error,
        cold,
        warm,
    })
}

impl ThroughputReport {
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "file {} ({} bytes), heap {}, {} rounds, order rotated every round; medians [min..max]; load average {}",
            self.file, self.size, self.heap, self.rounds, self.load_average
        )?;
        for (title, rows) in [
            ("COLD (page cache dropped)", &self.cold),
            ("WARM", &self.warm),
        ] {
            writeln!(
                out,
                "{title:<44} {:>7} {:>14} {:>9} {:>9} {:>7} {:>6}  path",
                "GiB/s", "min..max", "wall ms", "CPU s/GiB", "cache", "pages"
            )?;
            for s in rows.iter() {
                writeln!(
                    out,
                    "  {:<42} {:>7.2} {:>14} {:>9.1} {:>9} {:>7} {:>5}K  {}{}",
                    s.name,
                    s.median_gib_s,
                    format!("{:.2}..{:.2}", s.min_gib_s, s.max_gib_s),
                    s.median_ms,
                    s.cpu_s_per_gib
                        .map_or("-".to_string(), |c| format!("{c:.3}")),
                    s.cache_left
                        .map_or("-".to_string(), |c| format!("{:.1}%", c * 100.0)),
                    s.page_size >> 10,
                    s.io_path,
                    if s.spread > core_bench::measure::SPREAD_WARN {
                        "  (spread too wide)"
                    } else {
                        ""
                    }
                )?;
            }
        }
        if let (Some(l), Some(by)) = (self.device_limit_gib_s, &self.device_limit_by) {
            writeln!(out, "device limit: {l:.2} GiB/s ({by})")?;
        }
        let opt = |v: Option<f64>| v.map_or("not measured".to_string(), |v| format!("{v:.2}x"));
        writeln!(
            out,
            "cold service / device limit {} (target >= 0.95), service / status quo {} (target >= 2.5), service CPU / status quo CPU {} (target <= 0.2{})",
            opt(self.service_vs_device_limit),
            opt(self.service_vs_status_quo),
            opt(self.service_cpu_vs_status_quo),
            if self.service_cpu_vs_status_quo.is_none() { "; needs --service-pid" } else { "" }
        )?;
        writeln!(
            out,
            "binder + service overhead per load (round trip - engine time, vs in-process): {:.3} ms",
            self.service_overhead_ms
        )?;
        if let Some(e) = &self.baselines_error {
            writeln!(out, "baselines: some runs failed ({e})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConcurrentReport {
    pub file: String,
    pub loads: u32,
    pub bytes_each: u64,
    pub rounds: u32,
    /// Aggregate GiB/s of each batch (all loads at once), median and range.
    pub median_gib_s: f64,
    pub min_gib_s: f64,
    pub max_gib_s: f64,
    /// The same bytes as one load through the service, in the same rounds.
    pub single_median_gib_s: f64,
    pub refused: Vec<String>,
    /// The service's own RSS growth (RssAnon + RssFile) per load in flight, with --service-pid.
    pub service_rss_per_load_mib: Option<f64>,
}

/// `loads` loads of FILE's equal slices at once (one connection and thread each), against one
/// load of the whole file, cold, alternating round by round.
pub fn concurrent(
    session: &Session,
    file: &Path,
    loads: u32,
    rounds: u32,
    service_pid: Option<u32>,
    log: &mut dyn Write,
) -> Result<ConcurrentReport> {
    let size = std::fs::metadata(file)?.len();
    let each = (size / loads as u64) & !((1 << 20) - 1);
    anyhow::ensure!(
        each > 0,
        "{} is too small for {loads} slices of 1 MiB or more",
        file.display()
    );
    let sessions: Vec<Session> = (0..loads)
        .map(|_| Session::connect(session.transport.clone(), 1))
        .collect::<Result<_>>()?;
    let total = each * loads as u64;
    let gib = total as f64 / core_bench::measure::GIB;
    let (mut batch, mut single, mut refused, mut rss) = (vec![], vec![], vec![], vec![]);
    let rss_of = || service_pid.and_then(core_bench::measure::rss_own);
    for round in 0..rounds.max(1) {
        for k in 0..2 {
            core_bench::drop_cache(file)?;
            if (k + round) % 2 == 0 {
                let req = LoadRequest {
                    length: total as i64,
                    ..Default::default()
                };
                let t = Instant::now();
                let r = session
                    .load(&File::open(file)?, &req)?
                    .map_err(anyhow::Error::new)?;
                let d = t.elapsed();
                drop(r);
                single.push(gib / d.as_secs_f64());
                writeln!(
                    log,
                    "round {round}: one load of {} MiB {:.2} GiB/s",
                    total >> 20,
                    gib / d.as_secs_f64()
                )?;
                continue;
            }
            let r0 = rss_of();
            let peak = std::sync::atomic::AtomicU64::new(r0.unwrap_or(0));
            let done = std::sync::atomic::AtomicU32::new(0);
            let t = Instant::now();
            let results: Vec<Result<std::result::Result<(), String>>> = std::thread::scope(|s| {
                let hs: Vec<_> = sessions
                    .iter()
                    .enumerate()
                    .map(|(i, sess)| {
                        let done = &done;
                        s.spawn(move || {
                            let req = LoadRequest {
                                offset: (i as u64 * each) as i64,
                                length: each as i64,
                                ..Default::default()
                            };
                            let r = sess
                                .load(&File::open(file)?, &req)
                                .map(|r| r.map(drop).map_err(|e| e.to_string()));
                            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            r
                        })
                    })
                    .collect();
                while done.load(std::sync::atomic::Ordering::SeqCst) < loads {
                    if let Some(r) = rss_of() {
                        peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                hs.into_iter()
                    .map(|h| h.join().expect("load thread"))
                    .collect()
            });
            let d = t.elapsed();
            for r in results {
                if let Err(e) = r? {
                    refused.push(e);
                }
            }
            if let Some(r0) = r0 {
                rss.push(
                    (peak.into_inner().saturating_sub(r0)) as f64 / loads as f64 / (1 << 20) as f64,
                );
            }
            batch.push(gib / d.as_secs_f64());
            writeln!(
                log,
                "round {round}: {loads} x {} MiB at once {:.2} GiB/s",
                each >> 20,
                gib / d.as_secs_f64()
            )?;
        }
    }
    let b = Spread::of(&batch).unwrap_or_default();
    Ok(ConcurrentReport {
        file: file.display().to_string(),
        loads,
        bytes_each: each,
        rounds,
        median_gib_s: b.median,
        min_gib_s: b.min,
        max_gib_s: b.max,
        single_median_gib_s: Spread::of(&single).map_or(0.0, |s| s.median),
        refused,
        service_rss_per_load_mib: Spread::of(&rss).map(|s| s.median),
    })
}

impl ConcurrentReport {
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} x {} MiB of {} at once, {} rounds, cold: aggregate {:.2} GiB/s [{:.2}..{:.2}]; one load of the same bytes {:.2} GiB/s; batch / single {:.2}x",
            self.loads,
            self.bytes_each >> 20,
            self.file,
            self.rounds,
            self.median_gib_s,
            self.min_gib_s,
            self.max_gib_s,
            self.single_median_gib_s,
            self.median_gib_s / self.single_median_gib_s.max(1e-9)
        )?;
        if let Some(r) = self.service_rss_per_load_mib {
            writeln!(
                out,
                "service RSS growth per load in flight: {r:.2} MiB (target <= 8)"
            )?;
        }
        if !self.refused.is_empty() {
            writeln!(
                out,
                "{} loads refused, e.g. {}",
                self.refused.len(),
                self.refused[0]
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
}

fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Percentiles {
        p50_us: at(0.5),
        p90_us: at(0.9),
        p99_us: at(0.99),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub file: String,
    pub size: u64,
    pub iterations: u32,
    /// What ran on which CPU.
    pub pinned: String,
    pub load_file: Percentiles,
    pub bare_fd_call: Percentiles,
    /// The same load by the engine in this process (no binder): what the service adds is
    /// `load_file - engine_in_process`.
    pub engine_in_process: Percentiles,
    /// p50(loadFile) / p50(bare call).
    pub p50_ratio: f64,
}

/// Pins every thread of process `pid` (0: the calling thread only) to `cpu`.
fn pin(pid: u32, cpu: usize) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu).context("CPU number")?;
    if pid == 0 {
        return sched_setaffinity(Pid::from_raw(0), &set).context("pinning this thread");
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of {pid}"))?;
    for t in tasks {
        let tid: i32 = t?.file_name().to_string_lossy().parse().unwrap_or(0);
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            // The thread ended between the listing and now (a finished load's worker).
            Err(nix::errno::Errno::ESRCH) => {}
            r => r.with_context(|| format!("pinning thread {tid} of {pid}"))?,
        }
    }
    Ok(())
}

/// Latency of `loadFile` on `file` vs the echo baseline, interleaved call by call. With
/// `pin_cpu`, this thread, the echo server and (with `service_pid`) every thread of the
/// service run on that one CPU: no cross-CPU wake-ups, so the ratio measures the work.
pub fn latency(
    session: &Session,
    file: &Path,
    iterations: u32,
    pin_cpu: Option<usize>,
    service_pid: Option<u32>,
) -> Result<LatencyReport> {
    let echo = EchoServer::start(&session.transport).context("starting the bare-call baseline")?;
    let mut pinned = String::from("unpinned");
    if let Some(cpu) = pin_cpu {
        pin(0, cpu)?;
        pin(echo.pid(), cpu)?;
        pinned = format!("client thread and echo server on CPU {cpu}");
        if let Some(s) = service_pid {
            pin(s, cpu)?;
            pinned.push_str(", service too");
        } else {
            pinned.push_str(" (service not pinned: no --service-pid)");
        }
    }
    let f = crate::cli::open_source(file)?;
    let size = f.metadata()?.len();
    let pfd = pfd_of(&f)?;
    let iterations = iterations.max(10);
    let (mut load, mut bare, mut local) = (Vec::new(), Vec::new(), Vec::new());
    let loader =
        Loader::new(dmabuf_loader::Config::default()).context("starting the in-process engine")?;
    let local_req = dmabuf_loader::LoadRequest::default();
    // Warm-up: connections, page cache, allocator.
    for _ in 0..20 {
        session
            .proxy()
            .loadFile(&pfd)
            .map_err(|s| anyhow::Error::new(CallError::from_status(&s)).context("loadFile"))?;
        echo.conn
            .service
            .loadFile(&pfd)
            .map_err(|s| anyhow::anyhow!("echo: {s:?}"))?;
    }
    for _ in 0..iterations {
        let t = Instant::now();
        let b = session
            .proxy()
            .loadFile(&pfd)
            .map_err(|s| anyhow::Error::new(CallError::from_status(&s)).context("loadFile"))?;
        drop(b);
        load.push(t.elapsed());
        let t = Instant::now();
        let b = echo
            .conn
            .service
            .loadFile(&pfd)
            .map_err(|s| anyhow::anyhow!("echo: {s:?}"))?;
        drop(b);
        bare.push(t.elapsed());
        let t = Instant::now();
        let l = loader
            .load(f.as_fd(), &local_req, &LoadControl::default())
            .context("in-process load")?;
        drop(l);
        local.push(t.elapsed());
    }
    let load_file = percentiles(&mut load);
    let bare_fd_call = percentiles(&mut bare);
    let engine_in_process = percentiles(&mut local);
    Ok(LatencyReport {
        pinned,
        engine_in_process,
        file: file.display().to_string(),
        size,
        iterations,
        p50_ratio: load_file.p50_us / bare_fd_call.p50_us,
        load_file,
        bare_fd_call,
    })
}

impl LatencyReport {
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "latency, {} ({} bytes), {} calls each, interleaved, {}:",
            self.file, self.size, self.iterations, self.pinned
        )?;
        for (name, p) in [
            ("loadFile", &self.load_file),
            ("bare binder call, one fd each way", &self.bare_fd_call),
            ("same load, in-process engine", &self.engine_in_process),
        ] {
            writeln!(
                out,
                "  {name:<36} p50 {:>8.1} us  p90 {:>8.1} us  p99 {:>8.1} us",
                p.p50_us, p.p90_us, p.p99_us
            )?;
        }
        writeln!(
            out,
            "loadFile p50 / bare call p50: {:.2}x (target <= 2)",
            self.p50_ratio
        )
    }
}
