//! `dmabuf-loader bench FILE --into HEAP`: what loading into a buffer the client keeps saves
//! (interface v2, `loadInto`), against the fresh-buffer loads of v1.
//!
//! Three contenders, interleaved round by round with the order rotated each round (the
//! machine's noise then hits each one alike):
//! - `fresh`: `load(heapName = HEAP)`: the service allocates a new buffer each time (v1);
//! - `client-alloc+into`: the client allocates a new target from HEAP, then `loadInto`;
//! - `reuse`: `loadInto` one target allocated once before the rounds: no allocation at all.
//!
//! The file is in the page cache (read once before the rounds): the copy path, where what the
//! reuse saves (allocating and faulting in pages) is not hidden behind device time. For each:
//! wall time per load (best, median), the page faults and CPU time of this process and, with
//! `--service-pid`, of the service (utime+stime and minflt from /proc/PID/stat, summed over the
//! rounds: the kernel counts CPU in clock ticks, so per-load figures are averages).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use serde::Serialize;

use crate::cli::open_source;
use crate::session::Session;

const CONTENDERS: [&str; 3] = ["fresh", "client-alloc+into", "reuse"];

#[derive(Debug, Clone, Default, Serialize)]
pub struct IntoStat {
    pub name: String,
    pub best_ms: f64,
    pub median_ms: f64,
    /// Allocation time per load: the service's allocNanos (fresh), the client's own
    /// allocation (client-alloc+into), 0 (reuse).
    pub alloc_ms: f64,
    pub client_cpu_ms: f64,
    pub client_minflt: f64,
    pub service_cpu_ms: Option<f64>,
    pub service_minflt: Option<f64>,
    pub io_path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntoReport {
    pub file: String,
    pub size: u64,
    pub heap: String,
    pub rounds: u32,
    pub contenders: Vec<IntoStat>,
}

/// (CPU time, minor faults) of this process (the same /proc source as the service's).
fn self_usage() -> (Duration, u64) {
    proc_usage(std::process::id()).unwrap_or_default()
}

/// (CPU time, minor faults) of process `pid`, from /proc/PID/stat (fields 10, 14, 15).
fn proc_usage(pid: u32) -> Result<(Duration, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (--service-pid)"))?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        // Field n of stat(5) (1-based, pid = 1, comm = 2) is index n - 3 here.
        f.get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat"))
    };
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let ticks = field(14)? + field(15)?;
    Ok((
        Duration::from_nanos(ticks * 1_000_000_000 / tick),
        field(10)?,
    ))
}

struct Acc {
    samples: Vec<Duration>,
    alloc: Duration,
    client: (Duration, u64),
    service: (Duration, u64),
    io_path: String,
}

pub fn into(
    session: &Session,
    file: &Path,
    heap: &str,
    rounds: u32,
    service_pid: Option<u32>,
    log: &mut dyn Write,
) -> Result<IntoReport> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    let rounds = rounds.max(1);
    let core = dmabuf_loader::Loader::new(dmabuf_loader::Config::default())
        .context("probing this machine's buffer sources")?;
    let target_size = size.div_ceil(4096).max(1) * 4096;
    let alloc = || -> Result<OwnedFd> {
        core.allocate_target(heap, target_size)
            .map(|(fd, _)| fd)
            .map_err(|e| {
                anyhow::anyhow!("allocating a {target_size}-byte target from {heap:?}: {e}")
            })
    };
    let reused = alloc()?;
    // Warm: the file in the page cache (see the module docs). Opened as `load` opens it, so
    // that no file type blocks here (a FIFO without a writer did, forever): what cannot be
    // loaded is the service's to refuse, in the first round.
    std::io::copy(&mut open_source(file)?, &mut std::io::sink())?;
    let mut acc: Vec<Acc> = CONTENDERS
        .iter()
        .map(|_| Acc {
            samples: Vec::new(),
            alloc: Duration::ZERO,
            client: (Duration::ZERO, 0),
            service: (Duration::ZERO, 0),
            io_path: String::new(),
        })
        .collect();
    let fresh_req = LoadRequest {
        heapName: heap.to_string(),
        ..Default::default()
    };
    for round in 0..rounds {
        for k in 0..CONTENDERS.len() {
            let c = (k + round as usize) % CONTENDERS.len();
            let f = open_source(file)?;
            let (cpu0, flt0) = self_usage();
            let svc0 = service_pid.map(proc_usage).transpose()?;
            let t = Instant::now();
            let (r, alloc_time) = match c {
                0 => {
                    let r = session.load(&f, &fresh_req)?;
                    let alloc = r
                        .as_ref()
                        .map(|r| Duration::from_nanos(r.allocNanos.max(0) as u64))
                        .unwrap_or_default();
                    (r, alloc)
                }
                1 => {
                    let a = Instant::now();
                    let target = alloc()?;
                    let alloc_time = a.elapsed();
                    (
                        session.load_into(&f, &LoadRequest::default(), target.as_fd(), 0)?,
                        alloc_time,
                    )
                }
                _ => (
                    session.load_into(&f, &LoadRequest::default(), reused.as_fd(), 0)?,
                    Duration::ZERO,
                ),
            };
            let r = match r {
                Ok(r) => r,
                // The CallError stays in the chain: exit status 3, as from `load`.
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("{}: the service refused", CONTENDERS[c])))
                }
            };
            // The load is only over for the client when the buffer it no longer needs is gone.
            drop(r.buffer);
            let wall = t.elapsed();
            let (cpu1, flt1) = self_usage();
            let svc1 = service_pid.map(proc_usage).transpose()?;
            let a = &mut acc[c];
            a.samples.push(wall);
            a.alloc += alloc_time;
            a.client.0 += cpu1.saturating_sub(cpu0);
            a.client.1 += flt1.saturating_sub(flt0);
            if let (Some(s0), Some(s1)) = (svc0, svc1) {
                a.service.0 += s1.0.saturating_sub(s0.0);
                a.service.1 += s1.1.saturating_sub(s0.1);
            }
            a.io_path = dmabuf_loader_binder::io_path_name(r.ioPath);
            writeln!(
                log,
                "round {round}: {:<18} {:8.2} ms",
                CONTENDERS[c],
                wall.as_secs_f64() * 1e3
            )?;
        }
    }
    let n = rounds as f64;
    let contenders = acc
        .into_iter()
        .zip(CONTENDERS)
        .map(|(mut a, name)| {
            a.samples.sort();
            IntoStat {
                name: name.to_string(),
                best_ms: a.samples[0].as_secs_f64() * 1e3,
                median_ms: a.samples[a.samples.len() / 2].as_secs_f64() * 1e3,
                alloc_ms: a.alloc.as_secs_f64() * 1e3 / n,
                client_cpu_ms: a.client.0.as_secs_f64() * 1e3 / n,
                client_minflt: a.client.1 as f64 / n,
                service_cpu_ms: service_pid.map(|_| a.service.0.as_secs_f64() * 1e3 / n),
                service_minflt: service_pid.map(|_| a.service.1 as f64 / n),
                io_path: a.io_path,
            }
        })
        .collect();
    Ok(IntoReport {
        file: file.display().to_string(),
        size,
        heap: heap.to_string(),
        rounds,
        contenders,
    })
}

impl IntoReport {
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "file {} ({} bytes) in the page cache, heap {}; {} rounds, order rotated each round; per load:",
            self.file, self.size, self.heap, self.rounds
        )?;
        writeln!(
            out,
            "  {:<18} {:>9} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}  io path",
            "",
            "best ms",
            "median ms",
            "alloc ms",
            "client cpu",
            "client flt",
            "service cpu",
            "service flt"
        )?;
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for c in &self.contenders {
            writeln!(
                out,
                "  {:<18} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>10.0} {:>11} {:>11}  {}",
                c.name,
                c.best_ms,
                c.median_ms,
                c.alloc_ms,
                c.client_cpu_ms,
                c.client_minflt,
                opt(c.service_cpu_ms),
                opt(c.service_minflt),
                c.io_path
            )?;
        }
        if let (Some(f), Some(r)) = (self.contenders.first(), self.contenders.last()) {
            writeln!(
                out,
                "reuse / fresh: {:.2}x the wall time (best), {:.2}x (median)",
                r.best_ms / f.best_ms.max(1e-9),
                r.median_ms / f.median_ms.max(1e-9)
            )?;
        }
        Ok(())
    }
}
