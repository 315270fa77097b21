//! dmabuf_loader_bench: the benchmark behind `dmabuf-loader-bench` (and reusable by any front
//! end: the client's `dmabuf-loader bench` runs its contenders too). In ONE run on the same
//! file it times, cold (POSIX_FADV_DONTNEED before every run) and warm,
//!
//! * the honest device limit ([`limit`]: registered O_DIRECT at QD 32 x 1 MiB, with
//!   `sweep` more shapes, the old unregistered row, fio's `--fixedbufs` jobs where installed);
//! * the status quo: allocate the buffer (4 KiB pages), mmap it, plain `read()` loop through
//!   the page cache;
//! * the engine (`Loader::load`) in this process, and the engine with its pages faulted in
//!   before the clock starts for the I/O (its `total - alloc` is "I/O alone");
//! * the service ([`service`]: `dmabuf-loader-service` started by the bench, loaded into by
//!   `dmabuf-loader load` clients) when its binaries are next to the bench's, and N loads at
//!   once through it (8 x 128 MiB by default);
//!
//! every contender once per round, the order rotated every round, so the disk's drift hits
//! them alike. Each row gives the median and the spread of the rounds (flagged when too wide)
//! and the cost columns: allocation time, CPU seconds per GiB (user + sys: this process, fio,
//! or client + service), the file's page cache left behind, the page size the buffer got.
//! Memory pressure ([`pressure`]) and the targets' verdicts ([`targets`]) complete the run.
//! Figures are only ever printed; no test asserts a timing.

pub mod limit;
pub mod measure;
pub mod pressure;
pub mod service;
pub mod targets;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dmabuf_loader::*;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

use limit::{Limit, LimitJob};
use measure::{cached_bytes, cpu_self, gib_s, Spread};

const MIB: u64 = 1 << 20;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The file to read; created (filled with pseudo-random bytes) when missing or of
    /// another size.
    pub file: PathBuf,
    pub size: u64,
    /// Rounds of each contender, cold and warm (medians are reported).
    pub rounds: u32,
    /// Heap for the status quo and the engine (default: memfd, the provider this host has).
    pub heap: String,
    /// Engine configuration (queue depth, chunk size, forced path...).
    pub config: Config,
    /// Also sweep the limit's shapes and the engine's variants (queue depth x chunk size,
    /// paths, allocation strategies).
    pub sweep: bool,
    /// Time the service too (when its binaries are there), with these arguments.
    pub service: bool,
    pub service_args: Vec<String>,
    /// N loads of `size` bytes at once through the service (files next to `file`).
    pub concurrent: Option<(u32, u64)>,
    /// Also the warm rounds.
    pub warm: bool,
}

impl BenchOptions {
    pub fn new(file: PathBuf) -> Self {
        BenchOptions {
            file,
            size: 1 << 30,
            rounds: 5,
            heap: "memfd".into(),
            config: Config::default(),
            sweep: false,
            service: true,
            service_args: Vec::new(),
            concurrent: Some((8, 128 << 20)),
            warm: true,
        }
    }
}

/// What a row is, for the summary.
#[derive(Clone, Debug, PartialEq)]
pub enum Role {
    Limit(LimitJob),
    StatusQuo,
    Engine,
    /// The engine with its pages faulted in first: `total - alloc` = I/O alone.
    EngineIoAlone,
    Service,
    /// `n` loads of `each` bytes at once through the service.
    Concurrent {
        n: u32,
        each: u64,
    },
    /// A sweep variant of the engine.
    Variant,
}

/// One contender's runs, cold or warm.
#[derive(Clone, Debug, Default)]
pub struct Runs {
    pub gib_s: Vec<f64>,
    pub total_s: Vec<f64>,
    pub alloc_s: Vec<f64>,
    pub cpu_per_gib: Vec<f64>,
    /// Share of the file left in the page cache after the run (cold runs only).
    pub cache_left: Vec<f64>,
    /// Concurrent rows: the service's own RSS growth per load in flight, bytes.
    pub rss_per_load: Vec<f64>,
    pub page_size: u64,
    pub paths: Vec<String>,
    pub failures: Vec<String>,
}

impl Runs {
    pub fn gib(&self) -> Option<Spread> {
        Spread::of(&self.gib_s)
    }
    pub fn median(v: &[f64]) -> Option<f64> {
        Spread::of(v).map(|s| s.median)
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub role: Role,
    pub cold: Runs,
    pub warm: Runs,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub size: u64,
    pub rounds: u32,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub rows: Vec<Row>,
    pub limit: Limit,
    /// Why the service rows are missing, if they are.
    pub service_note: Option<String>,
}

impl BenchReport {
    pub fn row(&self, role: &Role) -> Option<&Row> {
        self.rows.iter().find(|r| &r.role == role)
    }
    pub fn concurrent(&self) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| matches!(r.role, Role::Concurrent { .. }))
    }

    /// The table, as the bench prints it.
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} rounds, every contender once per round, order rotated; medians [min..max]; load average {} at the start, {} at the end",
            self.rounds, self.loadavg_start, self.loadavg_end
        )?;
        for warm in [false, true] {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| !(if warm { &r.warm } else { &r.cold }).gib_s.is_empty())
                .collect();
            if rows.is_empty() {
                continue;
            }
            writeln!(
                out,
                "\n{:<44} {:>7} {:>14} {:>8} {:>8} {:>9} {:>7} {:>6}  path",
                if warm {
                    "WARM (file in the page cache)"
                } else {
                    "COLD (page cache dropped)"
                },
                "GiB/s",
                "min..max",
                "wall ms",
                "alloc ms",
                "CPU s/GiB",
                "cache",
                "pages"
            )?;
            for r in rows {
                let x = if warm { &r.warm } else { &r.cold };
                let g = x.gib().unwrap_or_default();
                let med = |v: &[f64]| Runs::median(v).unwrap_or(0.0);
                let cache = Runs::median(&x.cache_left)
                    .map_or("-".to_string(), |c| format!("{:.1}%", c * 100.0));
                let mut paths = x.paths.clone();
                paths.sort();
                paths.dedup();
                let fails = if x.failures.is_empty() {
                    String::new()
                } else {
                    format!("  FAILED {}x: {}", x.failures.len(), x.failures[0])
                };
                let rss = Runs::median(&x.rss_per_load).map_or(String::new(), |b| {
                    format!("  service RSS +{:.2} MiB/load", b / MIB as f64)
                });
                writeln!(
                    out,
                    "{:<44} {:>7.2} {:>14} {:>8.0} {:>8.0} {:>9.3} {:>7} {:>5}K  {}{}{}{}",
                    r.name,
                    g.median,
                    format!("{:.2}..{:.2}", g.min, g.max),
                    med(&x.total_s) * 1e3,
                    med(&x.alloc_s) * 1e3,
                    med(&x.cpu_per_gib),
                    cache,
                    x.page_size >> 10,
                    paths.join("/"),
                    rss,
                    fails,
                    g.warning()
                )?;
            }
        }
        writeln!(
            out,
            "\ndevice limit: {:.2} GiB/s ({}){}",
            self.limit.gib_s,
            self.limit.by,
            match (&self.limit.ours, &self.limit.fio) {
                (Some((o, _)), Some((f, _))) =>
                    format!("; our registered loop / fio = {:.2}", o / f),
                _ => String::new(),
            }
        )?;
        if let Some(n) = &self.service_note {
            writeln!(out, "service: {n}")?;
        }
        Ok(())
    }
}

/// Creates `path` with `size` pseudo-random bytes unless it already has that size.
pub fn ensure_file(path: &Path, size: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path)
        .map(|m| m.len() == size)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut block = vec![0u8; MIB as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    let mut left = size;
    let mut i = 0u64;
    while left > 0 {
        block[..8].copy_from_slice(&i.to_le_bytes()); // every MiB differs
        let n = left.min(MIB) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
        i += 1;
    }
    f.sync_all()?;
    Ok(())
}

/// Drops `path` from the page cache (POSIX_FADV_DONTNEED): the start of every cold run.
pub fn drop_cache(path: &Path) -> anyhow::Result<()> {
    let f = File::open(path)?;
    posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .context("POSIX_FADV_DONTNEED")?;
    Ok(())
}

/// Reads `path` once through the page cache: what makes the warm runs warm.
pub fn warm_cache(path: &Path) -> anyhow::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; MIB as usize];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// The status quo: allocate from the provider, mmap, read() loop. Returns (total, alloc).
pub fn status_quo(
    loader: &Loader,
    path: &Path,
    size: u64,
    heap: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let t = Instant::now();
    let mut buf = loader.allocate(heap, size, "bench-status-quo")?;
    buf.begin_cpu_write()?;
    let alloc = t.elapsed();
    let mut f = File::open(path)?;
    let dst = &mut buf.as_mut_slice()[..size as usize];
    let mut done = 0;
    while done < dst.len() {
        let end = (done + MIB as usize).min(dst.len());
        let n = f.read(&mut dst[done..end])?;
        if n == 0 {
            bail!("status quo: early EOF at {done}");
        }
        done += n;
    }
    buf.end_cpu_write()?;
    let total = t.elapsed();
    drop(buf); // unmapping/freeing is not part of either contender's time
    Ok((total, alloc))
}

/// The engine in this process. Returns (total, alloc, io path, page size).
pub fn engine(
    loader: &Loader,
    path: &Path,
    heap: &str,
) -> anyhow::Result<(Duration, Duration, IoPath, u64)> {
    let f = File::open(path)?;
    let req = LoadRequest {
        heap: Some(heap.into()),
        ..Default::default()
    };
    let l = loader.load(f.as_fd(), &req, &LoadControl::default())?;
    Ok((l.total_time, l.alloc_time, l.io_path, l.page_size))
}

/// A status-quo loader: what app code gets (4 KiB pages, no huge-page policy).
pub fn status_quo_loader() -> anyhow::Result<Loader> {
    Loader::new(Config {
        huge_pages: HugePages::Off,
        ..Config::default()
    })
}

enum Contender {
    Limit(LimitJob),
    StatusQuo,
    Engine(Box<Loader>),
    Service,
    Concurrent(Vec<PathBuf>),
}

/// One run's figures.
#[derive(Default)]
struct Run {
    total: Duration,
    alloc: Duration,
    cpu: f64,
    page_size: u64,
    path: String,
    rss_per_load: Option<f64>,
    failure: Option<String>,
}

fn loader_variant(base: &Config, f: impl FnOnce(&mut Config)) -> anyhow::Result<Box<Loader>> {
    let mut c = base.clone();
    f(&mut c);
    Ok(Box::new(Loader::new(c)?))
}

fn run_one(
    c: &Contender,
    opts: &BenchOptions,
    sq: &Loader,
    svc: Option<&service::Service>,
) -> anyhow::Result<Run> {
    let c0 = cpu_self();
    Ok(match c {
        Contender::Limit(j) => {
            let (bw, cpu) = j.run(&opts.file, opts.size)?;
            Run {
                total: Duration::from_secs_f64(opts.size as f64 / measure::GIB / bw),
                cpu,
                ..Default::default()
            }
        }
        Contender::StatusQuo => {
            let (total, alloc) = status_quo(sq, &opts.file, opts.size, &opts.heap)?;
            Run {
                total,
                alloc,
                cpu: cpu_self() - c0,
                page_size: 4096,
                ..Default::default()
            }
        }
        Contender::Engine(l) => {
            let (total, alloc, p, page_size) = engine(l, &opts.file, &opts.heap)?;
            Run {
                total,
                alloc,
                cpu: cpu_self() - c0,
                page_size,
                path: format!("{p:?}"),
                ..Default::default()
            }
        }
        Contender::Service => {
            let l = svc.context("no service")?.load(&opts.file)?;
            Run {
                total: l.wall,
                cpu: l.cpu,
                page_size: l.page_size,
                path: l.io_path,
                failure: (l.result != "ok").then_some(l.result),
                ..Default::default()
            }
        }
        Contender::Concurrent(files) => {
            let svc = svc.context("no service")?;
            let (wall, loads, rss, cpu) = svc.load_concurrently(files)?;
            let bad: Vec<&str> = loads
                .iter()
                .filter(|l| l.result != "ok")
                .map(|l| l.result.as_str())
                .collect();
            let mut paths: Vec<String> = loads.iter().map(|l| l.io_path.clone()).collect();
            paths.sort();
            paths.dedup();
            Run {
                total: wall,
                cpu,
                page_size: loads.iter().map(|l| l.page_size).max().unwrap_or(0),
                path: paths.join("/"),
                rss_per_load: Some(rss as f64 / files.len() as f64),
                failure: (!bad.is_empty())
                    .then(|| format!("{} of {} loads: {}", bad.len(), loads.len(), bad[0])),
                ..Default::default()
            }
        }
    })
}

/// Runs the whole rotation and returns the figures (print them with [`BenchReport::print`]).
pub fn run(opts: &BenchOptions, log: &mut dyn Write) -> anyhow::Result<BenchReport> {
    ensure_file(&opts.file, opts.size)?;
    let loadavg_start = measure::loadavg();
    let sq = status_quo_loader()?;
    let mut rows: Vec<(Row, Contender, bool)> = Vec::new(); // (row, contender, runs warm too)
    let mut add = |name: String, role: Role, c: Contender, warm: bool| {
        rows.push((
            Row {
                name,
                role,
                cold: Runs::default(),
                warm: Runs::default(),
            },
            c,
            warm,
        ))
    };
    let limit_jobs = limit::jobs(opts.sweep);
    for j in &limit_jobs {
        add(
            j.name(),
            Role::Limit(j.clone()),
            Contender::Limit(j.clone()),
            false,
        );
    }
    add(
        format!("status quo ({} 4K + mmap + read())", opts.heap),
        Role::StatusQuo,
        Contender::StatusQuo,
        true,
    );
    add(
        "engine (in process)".into(),
        Role::Engine,
        Contender::Engine(loader_variant(&opts.config, |_| {})?),
        true,
    );
    add(
        "engine, pages prefaulted (I/O alone)".into(),
        Role::EngineIoAlone,
        Contender::Engine(loader_variant(&opts.config, |c| {
            c.alloc_strategy = AllocStrategy::Prefault
        })?),
        true,
    );
    let mut service_note = None;
    let svc = if !opts.service {
        service_note = Some("not run (--no-service)".into());
        None
    } else if !service::available() {
        service_note = Some(format!(
            "not run: no dmabuf-loader-service / dmabuf-loader next to this binary ({})",
            service::bin_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ));
        None
    } else {
        Some(service::Service::start(&opts.service_args, None, "main")?)
    };
    if svc.is_some() {
        add(
            "service (dmabuf-loader load, memfd)".into(),
            Role::Service,
            Contender::Service,
            true,
        );
        if let Some((n, each)) = opts.concurrent {
            let dir = opts.file.parent().unwrap_or(Path::new("."));
            let mut files = Vec::new();
            for i in 0..n {
                let f = dir.join(format!("dmabuf-loader-bench-{}M-{i}.bin", each >> 20));
                ensure_file(&f, each)?;
                files.push(f);
            }
            add(
                format!("service, {n} x {} MiB at once (aggregate)", each >> 20),
                Role::Concurrent { n, each },
                Contender::Concurrent(files),
                false,
            );
        }
    }
    if opts.sweep {
        for (qd, chunk) in [
            (8u32, 1usize << 20),
            (16, 1 << 20),
            (64, 1 << 20),
            (32, 256 << 10),
            (32, 4 << 20),
        ] {
            add(
                format!("engine QD{qd} chunk {}K", chunk >> 10),
                Role::Variant,
                Contender::Engine(loader_variant(&opts.config, |c| {
                    c.queue_depth = Some(qd);
                    c.chunk_size = Some(chunk);
                })?),
                true,
            );
        }
        for p in [
            IoPath::DirectRegistered,
            IoPath::Direct,
            IoPath::Buffered,
            IoPath::BufferedSync,
        ] {
            add(
                format!("engine forced {p:?}"),
                Role::Variant,
                Contender::Engine(loader_variant(&opts.config, |c| c.force_io_path = Some(p))?),
                true,
            );
        }
        add(
            "engine OnDemand pages".into(),
            Role::Variant,
            Contender::Engine(loader_variant(&opts.config, |c| {
                c.alloc_strategy = AllocStrategy::OnDemand
            })?),
            true,
        );
    }
    for warm in [false, true] {
        if warm && !opts.warm {
            break;
        }
        if warm {
            warm_cache(&opts.file)?;
        }
        let n = rows.len();
        for round in 0..opts.rounds as usize {
            for k in 0..n {
                let (row, c, runs_warm) = &mut rows[measure::order(k, round, n)];
                if warm && !*runs_warm {
                    continue;
                }
                let files: Vec<PathBuf> = match c {
                    Contender::Concurrent(f) => f.clone(),
                    _ => vec![opts.file.clone()],
                };
                if !warm {
                    for f in &files {
                        drop_cache(f)?;
                    }
                }
                let r = run_one(c, opts, &sq, svc.as_ref())?;
                let bytes = match &row.role {
                    Role::Concurrent { n, each } => *n as u64 * each,
                    _ => opts.size,
                };
                let bw = gib_s(bytes, r.total.as_secs_f64());
                let _ =
                    writeln!(
                    log,
                    "{} round {round} {:<44} {bw:>6.2} GiB/s  alloc {:>5.0} ms  CPU {:.3} s  {}{}",
                    if warm { "warm" } else { "cold" },
                    row.name,
                    r.alloc.as_secs_f64() * 1e3,
                    r.cpu,
                    r.path,
                    r.failure.as_deref().map(|f| format!("  FAILED: {f}")).unwrap_or_default()
                );
                let x = if warm { &mut row.warm } else { &mut row.cold };
                if let Some(f) = r.failure {
                    x.failures.push(f);
                    continue;
                }
                x.gib_s.push(bw);
                x.total_s.push(r.total.as_secs_f64());
                x.alloc_s.push(r.alloc.as_secs_f64());
                x.cpu_per_gib.push(r.cpu / (bytes as f64 / measure::GIB));
                if !warm && !matches!(row.role, Role::Limit(_)) {
                    let left: u64 = files.iter().filter_map(|f| cached_bytes(f)).sum();
                    x.cache_left.push(left as f64 / bytes as f64);
                }
                if let Some(b) = r.rss_per_load {
                    x.rss_per_load.push(b);
                }
                x.page_size = x.page_size.max(r.page_size);
                if !r.path.is_empty() {
                    x.paths.push(r.path);
                }
            }
        }
    }
    drop(svc);
    let rows: Vec<Row> = rows.into_iter().map(|(r, _, _)| r).collect();
    let medians: Vec<Option<Spread>> = limit_jobs
        .iter()
        .map(|j| {
            rows.iter()
                .find(|r| r.role == Role::Limit(j.clone()))
                .and_then(|r| r.cold.gib())
        })
        .collect();
    let limit = limit::pick(&limit_jobs, &medians);
    Ok(BenchReport {
        size: opts.size,
        rounds: opts.rounds,
        loadavg_start,
        loadavg_end: measure::loadavg(),
        rows,
        limit,
        service_note,
    })
}
