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

use crate::echo::EchoServer;
use crate::session::{pfd_of, Session};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stat {
    pub best_ms: f64,
    pub median_ms: f64,
    pub worst_ms: f64,
    pub best_gib_s: f64,
    pub median_gib_s: f64,
}

fn stat(size: u64, samples: &mut [Duration]) -> Stat {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let gib = |d: Duration| size as f64 / (1u64 << 30) as f64 / d.as_secs_f64().max(1e-12);
    let best = samples[0];
    let median = samples[samples.len() / 2];
    Stat {
        best_ms: ms(best),
        median_ms: ms(median),
        worst_ms: ms(samples[samples.len() - 1]),
        best_gib_s: gib(best),
        median_gib_s: gib(median),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub file: String,
    pub size: u64,
    pub rounds: u32,
    pub heap: String,
    pub service_cold: Stat,
    pub engine_cold: Stat,
    /// Median of (client round trip - the service's own engine time) over every service load,
    /// minus the same for the in-process engine (wall time - its own time): the cost of
    /// binder, fd passing and the service's bookkeeping per load.
    pub service_overhead_ms: f64,
    /// That overhead as a share of the median cold load through the service.
    pub overhead_share: f64,
    /// In-process engine time / service time, best of rounds (1.0 = no cost for binder).
    pub service_vs_engine_best: f64,
    pub service_vs_engine_median: f64,
    pub service_warm: Stat,
    pub engine_warm: Stat,
    pub service_vs_engine_warm_best: f64,
    pub service_vs_engine_warm_median: f64,
    pub device_limit_cold: Option<Stat>,
    pub status_quo_cold: Option<Stat>,
    pub service_vs_status_quo: Option<f64>,
    pub service_vs_device_limit: Option<f64>,
    /// Why the core bench (status quo, device limit) could not run, if it could not.
    pub baselines_error: Option<String>,
}

/// Throughput of cold loads: service vs in-process engine, interleaved; then the core bench.
pub fn throughput(
    session: &Session,
    file: &Path,
    rounds: u32,
    with_core_bench: bool,
    log: &mut dyn Write,
) -> Result<ThroughputReport> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    let rounds = rounds.max(1);
    // The engine in this process is set up like the service's and uses the heap it used.
    let probe = {
        let f = File::open(file)?;
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
    let engine_req = dmabuf_loader::LoadRequest {
        heap: Some(heap.clone()),
        ..Default::default()
    };
    let service_req = LoadRequest {
        heapName: heap.clone(),
        ..Default::default()
    };

    let (mut svc, mut eng) = (Vec::new(), Vec::new());
    // Round trip minus the service's own engine time: what binder and the service add.
    let overheads = std::cell::RefCell::new(Vec::new());
    // The same for the in-process engine: work after its own clock stops (unmapping the
    // buffer, ...) that both contenders pay; subtracted so only binder's share remains.
    let engine_tails = std::cell::RefCell::new(Vec::new());
    let time_service = |log: &mut dyn Write, round: u32, cold: bool| -> Result<Duration> {
        if cold {
            core_bench::drop_cache(file)?;
        }
        let t = Instant::now();
        let f = File::open(file)?;
        let r = session
            .load(&f, &service_req)?
            .map_err(anyhow::Error::new)
            .context("service load")?;
        let d = t.elapsed();
        overheads
            .borrow_mut()
            .push(d.saturating_sub(Duration::from_nanos(r.totalNanos.max(0) as u64)));
        let path = crate::bench::io_path_of(&r);
        drop(r); // freeing the buffer is not part of either contender's time
        writeln!(
            log,
            "{} round {round}: service  {:>8.1} ms  {:>6.2} GiB/s  {path}",
            if cold { "cold" } else { "warm" },
            d.as_secs_f64() * 1e3,
            gib_s(size, d)
        )?;
        Ok(d)
    };
    let time_engine = |log: &mut dyn Write, round: u32, cold: bool| -> Result<Duration> {
        if cold {
            core_bench::drop_cache(file)?;
        }
        let t = Instant::now();
        let f = File::open(file)?;
        let l = loader
            .load(f.as_fd(), &engine_req, &LoadControl::default())
            .context("in-process load")?;
        let d = t.elapsed();
        engine_tails
            .borrow_mut()
            .push(d.saturating_sub(l.total_time));
        let path = format!(
            "{} (alloc {:.0} ms)",
            l.io_path,
            l.alloc_time.as_secs_f64() * 1e3
        );
        drop(l);
        writeln!(
            log,
            "{} round {round}: engine   {:>8.1} ms  {:>6.2} GiB/s  {path}",
            if cold { "cold" } else { "warm" },
            d.as_secs_f64() * 1e3,
            gib_s(size, d)
        )?;
        Ok(d)
    };
    // ABBA order: a drift in disk speed within a run hits both contenders alike. Cold
    // rounds first, then warm ones (file in the page cache: the CPU-bound copy path, where
    // any per-load cost of binder shows most).
    let (mut svc_warm, mut eng_warm) = (Vec::new(), Vec::new());
    let (mut sq, mut lim) = (Vec::new(), Vec::new());
    let mut baselines_error = None;
    let sq_loader =
        Loader::new(dmabuf_loader::Config::default()).context("starting the status-quo engine")?;
    let time_baselines = |log: &mut dyn Write,
                          round: u32,
                          sq: &mut Vec<Duration>,
                          lim: &mut Vec<Duration>|
     -> Result<()> {
        let mut one = |name: &str, status_quo: bool| -> Result<()> {
            core_bench::drop_cache(file)?;
            let d = if status_quo {
                core_bench::status_quo(&sq_loader, file, size, &heap)?.0
            } else {
                core_bench::device_limit(file, size, 32, 1 << 20)?
            };
            writeln!(
                log,
                "cold round {round}: {name} {:>8.1} ms  {:>6.2} GiB/s",
                d.as_secs_f64() * 1e3,
                gib_s(size, d)
            )?;
            if status_quo {
                sq.push(d)
            } else {
                lim.push(d)
            }
            Ok(())
        };
        if round % 2 == 0 {
            one("status quo", true)?;
            one("limit     ", false)?;
        } else {
            one("limit     ", false)?;
            one("status quo", true)?;
        }
        Ok(())
    };
    for cold in [true, false] {
        if !cold {
            core_bench::warm_cache(file)?;
        }
        let (s, e) = if cold {
            (&mut svc, &mut eng)
        } else {
            (&mut svc_warm, &mut eng_warm)
        };
        for round in 0..rounds {
            if round % 2 == 0 {
                s.push(time_service(log, round, cold)?);
                e.push(time_engine(log, round, cold)?);
            } else {
                e.push(time_engine(log, round, cold)?);
                s.push(time_service(log, round, cold)?);
            }
            // The core bench's status quo and device limit, cold, in the same rounds.
            if cold && with_core_bench && baselines_error.is_none() {
                if let Err(e) = time_baselines(log, round, &mut sq, &mut lim) {
                    baselines_error = Some(format!("{e:#}"));
                }
            }
        }
    }
    let median_ms = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let service_overhead_ms =
        (median_ms(overheads.into_inner()) - median_ms(engine_tails.into_inner())).max(0.0);
    let service_cold = stat(size, &mut svc);
    let engine_cold = stat(size, &mut eng);
    let service_warm = stat(size, &mut svc_warm);
    let engine_warm = stat(size, &mut eng_warm);
    let mut report = ThroughputReport {
        file: file.display().to_string(),
        size,
        rounds,
        heap: heap.clone(),
        service_overhead_ms,
        overhead_share: service_overhead_ms / service_cold.median_ms,
        service_vs_engine_best: engine_cold.best_ms / service_cold.best_ms,
        service_vs_engine_median: engine_cold.median_ms / service_cold.median_ms,
        service_vs_engine_warm_best: engine_warm.best_ms / service_warm.best_ms,
        service_vs_engine_warm_median: engine_warm.median_ms / service_warm.median_ms,
        service_cold,
        engine_cold,
        service_warm,
        engine_warm,
        device_limit_cold: None,
        status_quo_cold: None,
        service_vs_status_quo: None,
        service_vs_device_limit: None,
        baselines_error: None,
    };
    report.baselines_error = baselines_error;
    if report.baselines_error.is_none() && !sq.is_empty() && !lim.is_empty() {
        let sq = stat(size, &mut sq);
        let limit = stat(size, &mut lim);
        report.service_vs_device_limit = Some(limit.best_ms / report.service_cold.best_ms);
        report.service_vs_status_quo = Some(sq.best_ms / report.service_cold.best_ms);
        report.device_limit_cold = Some(limit);
        report.status_quo_cold = Some(sq);
    }
    Ok(report)
}

fn io_path_of(r: &dmabuf_loader_binder::aidl::LoadResult::LoadResult) -> String {
    format!(
        "{} (alloc {:.0} ms)",
        dmabuf_loader_binder::io_path_name(r.ioPath),
        r.allocNanos as f64 / 1e6
    )
}

fn gib_s(size: u64, d: Duration) -> f64 {
    size as f64 / (1u64 << 30) as f64 / d.as_secs_f64().max(1e-12)
}

impl ThroughputReport {
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "file {} ({} bytes), heap {}; cold (page cache dropped before each run), best of {} rounds:",
            self.file, self.size, self.heap, self.rounds
        )?;
        let row = |out: &mut dyn Write, name: &str, s: &Stat| {
            let median = format!("(median {:>6.2} GiB/s)", s.median_gib_s);
            writeln!(
                out,
                "  {name:<36} {:>7.2} GiB/s {:>9.1} ms   {median}",
                s.best_gib_s, s.best_ms
            )
        };
        row(out, "through the service (binder)", &self.service_cold)?;
        row(out, "in-process engine", &self.engine_cold)?;
        if let Some(s) = &self.status_quo_cold {
            row(out, "status quo (alloc + mmap + read())", s)?;
        }
        if let Some(s) = &self.device_limit_cold {
            row(out, "device limit (O_DIRECT, QD32)", s)?;
        }
        writeln!(
            out,
            "service / in-process engine: {:.3}x best, {:.3}x median (target >= 0.97)",
            self.service_vs_engine_best, self.service_vs_engine_median
        )?;
        writeln!(
            out,
            "binder + service overhead per load (round trip - engine time, vs in-process): {:.3} ms \
             = {:.4}% of a cold load (=> service/engine {:.4}x without disk noise)",
            self.service_overhead_ms,
            self.overhead_share * 100.0,
            1.0 - self.overhead_share
        )?;
        writeln!(
            out,
            "warm (file in the page cache), best of {} rounds:",
            self.rounds
        )?;
        row(out, "through the service (binder)", &self.service_warm)?;
        row(out, "in-process engine", &self.engine_warm)?;
        writeln!(
            out,
            "service / in-process engine, warm: {:.3}x best, {:.3}x median",
            self.service_vs_engine_warm_best, self.service_vs_engine_warm_median
        )?;
        if let Some(e) = &self.baselines_error {
            writeln!(out, "status quo / device limit: not measured ({e})")?;
        }
        if let (Some(sq), Some(lim)) = (self.service_vs_status_quo, self.service_vs_device_limit) {
            writeln!(
                out,
                "service / status quo: {sq:.2}x   service / device limit: {lim:.2}x"
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
    pub load_file: Percentiles,
    pub bare_fd_call: Percentiles,
    /// The same load by the engine in this process (no binder): what the service adds is
    /// `load_file - engine_in_process`.
    pub engine_in_process: Percentiles,
    /// p50(loadFile) / p50(bare call).
    pub p50_ratio: f64,
}

/// Latency of `loadFile` on `file` vs the echo baseline, interleaved call by call.
pub fn latency(session: &Session, file: &Path, iterations: u32) -> Result<LatencyReport> {
    let echo = EchoServer::start(&session.transport).context("starting the bare-call baseline")?;
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
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
            .map_err(|s| anyhow::anyhow!("loadFile: {s:?}"))?;
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
            .map_err(|s| anyhow::anyhow!("loadFile: {s:?}"))?;
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
            "latency, {} ({} bytes), {} calls each, interleaved:",
            self.file, self.size, self.iterations
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
