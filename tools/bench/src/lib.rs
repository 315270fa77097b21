//! dmabuf_loader_bench: the benchmark behind `dmabuf-loader-bench` (and reusable by any front
//! end: the client's `dmabuf-loader bench` runs its contenders too). In ONE run on the same
//! file it times
//!
//! * (a) the device limit: O_DIRECT io_uring, `limit_depth` (>= 32) reads of 1 MiB in
//!   flight into (pre-faulted) anonymous memory;
//! * (b) the status quo: allocate the buffer from the same provider, mmap it, plain
//!   `read()` loop through the page cache;
//! * (c) this engine (`Loader::load`), and (c') the engine with its pages faulted in
//!   before the clock starts for the I/O, which isolates "I/O alone";
//!
//! cold (POSIX_FADV_DONTNEED before every run) and warm, interleaved (a b c c' a b c c' ...)
//! so drifting disk speed hits every contender alike, keeping the best of the rounds (and
//! reporting the spread). Allocation time is shown separately. Figures are only ever
//! printed; no test asserts a timing.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dmabuf_loader::*;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The file to read; created (filled with pseudo-random bytes) when missing or of
    /// another size.
    pub file: PathBuf,
    pub size: u64,
    /// Rounds of each contender, cold and warm; the best is kept.
    pub rounds: u32,
    /// Heap for the status quo and the engine (default: memfd, the provider this host has).
    pub heap: String,
    /// Reads in flight for the device-limit contender (>= 32).
    pub limit_depth: u32,
    /// Engine configuration (queue depth, chunk size, forced path...).
    pub config: Config,
    /// Also run the parameter sweep (queue depth x chunk size, paths, allocation strategies).
    pub sweep: bool,
}

impl BenchOptions {
    pub fn new(file: PathBuf) -> Self {
        BenchOptions {
            file,
            size: 1 << 30,
            rounds: 5,
            heap: "memfd".into(),
            limit_depth: 32,
            config: Config::default(),
            sweep: false,
        }
    }
}

/// Best and worst of the rounds, plus the allocation part of the best.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub best: Duration,
    pub worst: Duration,
    pub alloc: Duration,
}

impl Sample {
    fn push(&mut self, total: Duration, alloc: Duration) {
        if self.best.is_zero() || total < self.best {
            self.best = total;
            self.alloc = alloc;
        }
        self.worst = self.worst.max(total);
    }
}

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub name: String,
    pub cold: Sample,
    pub warm: Sample,
    pub note: String,
}

#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub size: u64,
    pub limit: Row,
    pub status_quo: Row,
    pub engine: Row,
    pub engine_io_alone: Row,
    pub sweep: Vec<Row>,
}

fn gib_s(size: u64, d: Duration) -> f64 {
    if d.is_zero() {
        return 0.0;
    }
    size as f64 / GIB / d.as_secs_f64()
}

impl BenchReport {
    /// engine / limit, cold (throughput ratio).
    pub fn cold_vs_limit(&self) -> f64 {
        self.limit.cold.best.as_secs_f64() / self.engine.cold.best.as_secs_f64()
    }
    pub fn cold_vs_status_quo(&self) -> f64 {
        self.status_quo.cold.best.as_secs_f64() / self.engine.cold.best.as_secs_f64()
    }
    /// engine / the faster of status quo and limit, warm.
    pub fn warm_vs_best(&self) -> f64 {
        let other = self.status_quo.warm.best.min(self.limit.warm.best);
        other.as_secs_f64() / self.engine.warm.best.as_secs_f64()
    }
    /// Engine total (allocation overlapped) / engine I/O alone (pages faulted beforehand).
    pub fn total_vs_io_alone(&self) -> (f64, f64) {
        let io = |s: &Sample| (s.best - s.alloc).as_secs_f64();
        (
            self.engine.cold.best.as_secs_f64() / io(&self.engine_io_alone.cold),
            self.engine.warm.best.as_secs_f64() / io(&self.engine_io_alone.warm),
        )
    }

    /// The table, as the bench prints it.
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let s = self.size;
        let line = |out: &mut dyn Write, r: &Row| {
            writeln!(
                out,
                "{:<34} {:>6.2} GiB/s {:>7.0} ms {:>7.0} ms  [{:>5.2}..{:>5.2}]   {:>6.2} GiB/s {:>7.0} ms {:>7.0} ms  [{:>5.2}..{:>5.2}]  {}",
                r.name,
                gib_s(s, r.cold.best),
                r.cold.best.as_secs_f64() * 1e3,
                r.cold.alloc.as_secs_f64() * 1e3,
                gib_s(s, r.cold.worst),
                gib_s(s, r.cold.best),
                gib_s(s, r.warm.best),
                r.warm.best.as_secs_f64() * 1e3,
                r.warm.alloc.as_secs_f64() * 1e3,
                gib_s(s, r.warm.worst),
                gib_s(s, r.warm.best),
                r.note
            )
        };
        writeln!(
            out,
            "{:<34} {:>12} {:>10} {:>10}  {:>14}   {:>12} {:>10} {:>10}  {:>14}",
            "contender (best of rounds)",
            "cold",
            "total",
            "alloc",
            "spread GiB/s",
            "warm",
            "total",
            "alloc",
            "spread GiB/s"
        )?;
        for r in [
            &self.limit,
            &self.status_quo,
            &self.engine,
            &self.engine_io_alone,
        ] {
            line(out, r)?;
        }
        let (tc, tw) = self.total_vs_io_alone();
        writeln!(out)?;
        writeln!(
            out,
            "cold: engine/limit {:.2}x (target >= 0.90), engine/status quo {:.2}x (target >= 2.5)",
            self.cold_vs_limit(),
            self.cold_vs_status_quo()
        )?;
        writeln!(
            out,
            "warm: engine/max(status quo, limit) {:.2}x (target >= 1.0)",
            self.warm_vs_best()
        )?;
        writeln!(
            out,
            "engine total-with-alloc / I/O alone: cold {tc:.2}x, warm {tw:.2}x (target <= 1.15)"
        )?;
        if !self.sweep.is_empty() {
            writeln!(out, "\nsweep (engine variants, same interleaving):")?;
            for r in &self.sweep {
                line(out, r)?;
            }
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

/// (a) O_DIRECT io_uring reads of `chunk` with `depth` in flight into registered anonymous
/// memory (READ_FIXED: the best the device gives; the core's reader drives the engine's own
/// private ring).
pub fn device_limit(path: &Path, size: u64, depth: u32, chunk: usize) -> anyhow::Result<Duration> {
    dmabuf_loader::device_read(path, size, depth, chunk, true)
}

/// (b) allocate from the provider, mmap, read() loop. Returns (total, alloc).
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

/// (c) the engine. Returns (total, alloc, io path).
pub fn engine(
    loader: &Loader,
    path: &Path,
    heap: &str,
) -> anyhow::Result<(Duration, Duration, IoPath)> {
    let f = File::open(path)?;
    let req = LoadRequest {
        heap: Some(heap.into()),
        ..Default::default()
    };
    let l = loader.load(f.as_fd(), &req, &LoadControl::default())?;
    Ok((l.total_time, l.alloc_time, l.io_path))
}

enum Contender {
    Limit,
    StatusQuo,
    Engine(Box<Loader>),
}

fn run_one(
    c: &Contender,
    opts: &BenchOptions,
    sq_loader: &Loader,
) -> anyhow::Result<(Duration, Duration, String)> {
    Ok(match c {
        Contender::Limit => (
            device_limit(&opts.file, opts.size, opts.limit_depth, MIB as usize)?,
            Duration::ZERO,
            String::new(),
        ),
        Contender::StatusQuo => {
            let (t, a) = status_quo(sq_loader, &opts.file, opts.size, &opts.heap)?;
            (t, a, String::new())
        }
        Contender::Engine(l) => {
            let (t, a, p) = engine(l, &opts.file, &opts.heap)?;
            (t, a, format!("{p:?}"))
        }
    })
}

fn loader_variant(base: &Config, f: impl FnOnce(&mut Config)) -> anyhow::Result<Box<Loader>> {
    let mut c = base.clone();
    f(&mut c);
    Ok(Box::new(Loader::new(c)?))
}

/// Runs the whole bench and returns the figures (print them with [`BenchReport::print`]).
pub fn run(opts: &BenchOptions, log: &mut dyn Write) -> anyhow::Result<BenchReport> {
    if opts.limit_depth < 32 {
        bail!("the device limit is defined with >= 32 reads in flight");
    }
    ensure_file(&opts.file, opts.size)?;
    let base = Loader::new(opts.config.clone())?;
    let mut rows: Vec<(Row, Contender)> = vec![
        (
            Row {
                name: format!("(a) device limit O_DIRECT QD{}", opts.limit_depth),
                ..Default::default()
            },
            Contender::Limit,
        ),
        (
            Row {
                name: format!("(b) status quo {} mmap+read()", opts.heap),
                ..Default::default()
            },
            Contender::StatusQuo,
        ),
        (
            Row {
                name: "(c) engine".into(),
                ..Default::default()
            },
            Contender::Engine(loader_variant(&opts.config, |_| {})?),
        ),
        (
            Row {
                name: "(c') engine, pages prefaulted".into(),
                ..Default::default()
            },
            Contender::Engine(loader_variant(&opts.config, |c| {
                c.alloc_strategy = AllocStrategy::Prefault
            })?),
        ),
    ];
    if opts.sweep {
        for (qd, chunk) in [
            (8u32, 1usize << 20),
            (16, 1 << 20),
            (64, 1 << 20),
            (32, 256 << 10),
            (32, 4 << 20),
        ] {
            rows.push((
                Row {
                    name: format!("engine QD{qd} chunk {}K", chunk >> 10),
                    ..Default::default()
                },
                Contender::Engine(loader_variant(&opts.config, |c| {
                    c.queue_depth = Some(qd);
                    c.chunk_size = Some(chunk);
                })?),
            ));
        }
        for p in [
            IoPath::DirectRegistered,
            IoPath::Direct,
            IoPath::Buffered,
            IoPath::BufferedSync,
        ] {
            rows.push((
                Row {
                    name: format!("engine forced {p:?}"),
                    ..Default::default()
                },
                Contender::Engine(loader_variant(&opts.config, |c| c.force_io_path = Some(p))?),
            ));
        }
        for (qd, chunk) in [
            (1u32, 4usize << 20),
            (2, 4 << 20),
            (4, 1 << 20),
            (8, 1 << 20),
        ] {
            rows.push((
                Row {
                    name: format!("engine Buffered QD{qd} chunk {}K", chunk >> 10),
                    ..Default::default()
                },
                Contender::Engine(loader_variant(&opts.config, |c| {
                    c.force_io_path = Some(IoPath::Buffered);
                    c.queue_depth = Some(qd);
                    c.chunk_size = Some(chunk);
                })?),
            ));
        }
        rows.push((
            Row {
                name: "engine OnDemand pages".into(),
                ..Default::default()
            },
            Contender::Engine(loader_variant(&opts.config, |c| {
                c.alloc_strategy = AllocStrategy::OnDemand
            })?),
        ));
        rows.push((
            Row {
                name: "engine OnDemand forced Buffered".into(),
                ..Default::default()
            },
            Contender::Engine(loader_variant(&opts.config, |c| {
                c.alloc_strategy = AllocStrategy::OnDemand;
                c.force_io_path = Some(IoPath::Buffered);
            })?),
        ));
    }
    for warm in [false, true] {
        if warm {
            warm_cache(&opts.file)?;
        }
        for round in 0..opts.rounds {
            for (row, c) in rows.iter_mut() {
                if !warm {
                    drop_cache(&opts.file)?;
                }
                let (t, a, note) = run_one(c, opts, &base)?;
                let _ = writeln!(
                    log,
                    "{} round {round} {:<34} {:>6.2} GiB/s (alloc {:.0} ms) {note}",
                    if warm { "warm" } else { "cold" },
                    row.name,
                    gib_s(opts.size, t),
                    a.as_secs_f64() * 1e3
                );
                let s = if warm { &mut row.warm } else { &mut row.cold };
                s.push(t, a);
                if !note.is_empty() && !row.note.contains(&note) {
                    row.note = if row.note.is_empty() {
                        note
                    } else {
                        format!("{}/{note}", row.note)
                    };
                }
            }
        }
    }
    let mut it = rows.into_iter().map(|(r, _)| r);
    let mut next = || it.next().expect("row");
    let (limit, status_quo, engine, engine_io_alone) = (next(), next(), next(), next());
    let sweep = it.collect();
    Ok(BenchReport {
        size: opts.size,
        limit,
        status_quo,
        engine,
        engine_io_alone,
        sweep,
    })
}
