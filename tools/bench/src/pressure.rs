//! Loads under memory pressure. Each contender (status quo: alloc + mmap + read() loop, in a
//! child process; the engine, in a child process; the service, started inside the cgroup and
//! loaded into by a client outside it) runs
//!
//! * unconstrained (the reference time; in a cgroup without a limit, so its peak memory and
//!   the page cache it leaves are measured too),
//! * inside a memory cgroup (v2 or v1, whichever this machine has) of file size x
//!   `limit_pct` (default 125%),
//! * inside one too small for the buffer (`tight_pct`, default 50%): the engine and the
//!   service must refuse with ALLOCATION_FAILED, nobody may be OOM-killed,
//! * with `stress`: unconstrained, beside a stressor process holding all of MemAvailable but
//!   file size x 1.25 plus `spare_mib` (anonymous, populated; no swap, so only the page cache
//!   can give way, as on a phone with most of its memory taken).
//!
//! The contender order rotates every round. Per run: wall time, completion (ok / error code /
//! killed by signal), the peak memory the contender added (its cgroup's peak usage: buffer +
//! page cache charged to it), the file's page cache left behind (cachestat) and OOM kills.
//! Needs root (cgroup creation). Every cgroup and child is removed/killed when it ends. The
//! child contenders and the stressor are the bench binary itself (`--child`, `--hold`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dmabuf_loader::{Config, LoadControl, LoadRequest, Loader};

/// A memory-limited cgroup, removed on drop (its processes must have exited or moved).
pub struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// Creates `name` with memory limit `limit` bytes under the v2 root if it has the memory
    /// controller, else under the v1 memory hierarchy.
    pub fn create(name: &str, limit: Option<u64>) -> Result<Cgroup> {
        let v2_root = Path::new("/sys/fs/cgroup");
        let v2_ctrls =
            std::fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap_or_default();
        let (dir, v2) = if v2_ctrls.split_whitespace().any(|c| c == "memory") {
            // The root's subtree_control must hand the memory controller down.
            let _ = std::fs::write(v2_root.join("cgroup.subtree_control"), "+memory");
            (v2_root.join(name), true)
        } else if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            (PathBuf::from("/sys/fs/cgroup/memory").join(name), false)
        } else {
            bail!("no memory cgroup controller (v1 or v2) on this machine");
        };
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let cg = Cgroup { dir, v2 };
        if let Some(limit) = limit {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            std::fs::write(cg.dir.join(file), limit.to_string())
                .with_context(|| format!("setting {file}"))?;
        }
        if v2 {
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        }
        Ok(cg)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves the calling process into the cgroup.
    pub fn join(dir: &Path) -> Result<()> {
        std::fs::write(dir.join("cgroup.procs"), "0")
            .with_context(|| format!("joining {}", dir.display()))
    }

    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.dir.join(f)).unwrap_or_default()
    }

    fn field(text: &str, key: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Highest usage seen (bytes).
    pub fn peak(&self) -> u64 {
        let f = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(f).trim().parse().unwrap_or(0)
    }

    /// Current usage (bytes).
    pub fn usage(&self) -> u64 {
        let f = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        self.read(f).trim().parse().unwrap_or(0)
    }

    /// OOM kills inside the cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        if self.v2 {
            Self::field(&self.read("memory.events"), "oom_kill ")
        } else {
            Self::field(&self.read("memory.oom_control"), "oom_kill ")
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes left (a child that was killed is gone; a service we stopped too).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove cgroup {}", self.dir.display());
    }
}

use crate::drop_cache;

/// The child side: one load, reported on stdout as "ok <ms>" or "err <Kind> <message>".
pub fn child(which: &str, file: &Path, join: Option<&Path>) -> Result<()> {
    if let Some(j) = join {
        Cgroup::join(j)?;
    }
    let loader = Loader::new(Config::default())?;
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let mut page_size = 4096;
    let r: Result<(), String> = match which {
        "engine" => {
            let f = File::open(file)?;
            let req = LoadRequest {
                heap: Some("memfd".into()),
                ..Default::default()
            };
            loader
                .load(f.as_fd(), &req, &LoadControl::default())
                .map(|l| page_size = l.page_size)
                .map_err(|e| format!("{:?} {e}", e.kind))
        }
        "status-quo" => {
            // What app code does: allocate 4 KiB pages with no memory check (it faults pages
            // in until the memory runs out), read() through the page cache. Anonymous memory
            // stands in for the memfd/dma-heap mapping: the cgroup charges both the same way.
            (|| -> Result<(), String> {
                let len = size.div_ceil(4096) * 4096;
                // Zeroed allocation: fresh pages the read() below faults in, as into a mapping.
                let mut map = vec![0u8; len as usize];
                let mut f = File::open(file).map_err(|e| e.to_string())?;
                let dst = &mut map[..size as usize];
                let mut done = 0;
                while done < dst.len() {
                    let end = (done + (1 << 20)).min(dst.len());
                    match f.read(&mut dst[done..end]) {
                        Ok(0) => return Err("early EOF".into()),
                        Ok(n) => done += n,
                        Err(e) => return Err(format!("Io {e}")),
                    }
                }
                drop(map);
                Ok(())
            })()
        }
        other => bail!("unknown contender {other}"),
    };
    match r {
        Ok(()) => println!("ok {:.1} {page_size}", t.elapsed().as_secs_f64() * 1e3),
        Err(e) => println!("err {e}"),
    }
    Ok(())
}

/// The stressor: holds `bytes` of populated anonymous memory until killed.
pub fn hold(bytes: u64) -> Result<()> {
    // Touch every page so the memory is really held (not just reserved).
    let mut map = Vec::<u8>::new();
    map.try_reserve_exact(bytes as usize)
        .context("allocating the stressor's memory")?;
    map.resize(bytes as usize, 1);
    std::hint::black_box(&map);
    println!("holding {bytes}");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub wall: Duration,
    /// "ok", an error kind / code, or "killed by signal N".
    pub result: String,
    /// The cgroup's peak usage (buffer + page cache charged to the contender).
    pub peak: u64,
    pub oom_kills: u64,
    /// Bytes of the file in the page cache right after the load.
    pub cache_left: u64,
    /// The page size the buffer got (service and engine; 0 when not known).
    pub page_size: u64,
    /// Peak hugetlb bytes the load took from the pool (not charged to any cgroup; included
    /// in `peak`).
    pub hugetlb: u64,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct PressureOptions {
    pub file: PathBuf,
    pub rounds: u32,
    pub limit_pct: u64,
    pub tight_pct: u64,
    pub stress: bool,
    pub spare_mib: u64,
    /// Arguments for the service (e.g. its admission limits).
    pub service_args: Vec<String>,
    /// Which contenders: "status-quo", "engine", "service".
    pub contenders: Vec<String>,
}

impl PressureOptions {
    pub fn new(file: PathBuf) -> Self {
        PressureOptions {
            file,
            rounds: 3,
            limit_pct: 125,
            tight_pct: 50,
            stress: false,
            spare_mib: 2048,
            service_args: Vec::new(),
            contenders: ["status-quo", "engine", "service"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// One mode's results: `runs[contender][round]`.
#[derive(Clone, Debug)]
pub struct Mode {
    pub name: String,
    pub limit: Option<u64>,
    pub runs: Vec<Vec<Outcome>>,
}

#[derive(Clone, Debug)]
pub struct PressureReport {
    pub size: u64,
    pub contenders: Vec<String>,
    /// unconstrained, cgroup fits, cgroup cannot fit, [stressor].
    pub modes: Vec<Mode>,
    pub stressor_note: Option<String>,
}

/// Median wall time of a set of runs (ok or not).
pub fn median_wall(v: &[Outcome]) -> Duration {
    let mut w: Vec<Duration> = v.iter().map(|o| o.wall).collect();
    w.sort();
    w.get(w.len() / 2).copied().unwrap_or_default()
}

impl PressureReport {
    pub fn contender(&self, name: &str) -> Option<usize> {
        self.contenders.iter().position(|c| c == name)
    }

    /// Median wall in mode `m` / median unconstrained, for contender `c`.
    pub fn slowdown(&self, m: usize, c: usize) -> f64 {
        median_wall(&self.modes[m].runs[c]).as_secs_f64()
            / median_wall(&self.modes[0].runs[c]).as_secs_f64()
    }

    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if let Some(n) = &self.stressor_note {
            writeln!(out, "{n}")?;
        }
        writeln!(
            out,
            "{:<38} {:<10} {:>10} {:>10} {:>10} {:>11} {:>5} {:>6}  completion",
            "memory mode",
            "contender",
            "median ms",
            "vs uncon.",
            "peak added",
            "cache left",
            "OOMs",
            "pages"
        )?;
        for (m, mode) in self.modes.iter().enumerate() {
            for (i, c) in self.contenders.iter().enumerate() {
                let v = &mode.runs[i];
                let ok = v.iter().filter(|o| o.result == "ok").count();
                let mut outcomes: Vec<String> = v.iter().map(|o| o.result.clone()).collect();
                outcomes.dedup();
                if v.iter().any(|o| o.hugetlb > 0) {
                    outcomes
                        .push("buffer from the hugetlb pool (not charged to the cgroup)".into());
                }
                let peak = v.iter().map(|o| o.peak).max().unwrap_or(0);
                writeln!(
                    out,
                    "{:<38} {:<10} {:>10.0} {:>9.2}x {:>9.3}x {:>10.1}% {:>5} {:>5}K  {ok}/{} ok; {}",
                    mode.name,
                    c,
                    median_wall(v).as_secs_f64() * 1e3,
                    self.slowdown(m, i),
                    peak as f64 / self.size as f64,
                    v.iter().map(|o| o.cache_left).max().unwrap_or(0) as f64 * 100.0
                        / self.size as f64,
                    v.iter().map(|o| o.oom_kills).sum::<u64>(),
                    v.iter().map(|o| o.page_size).max().unwrap_or(0) >> 10,
                    v.len(),
                    outcomes.join(" | ")
                )?;
            }
        }
        Ok(())
    }
}

fn cached(path: &Path) -> u64 {
    crate::measure::cached_bytes(path).unwrap_or(0)
}

fn run_child(
    me: &Path,
    file: &Path,
    which: &str,
    limit: Option<u64>,
    tag: &str,
) -> Result<Outcome> {
    let cg = Cgroup::create(
        &format!("dmabuf-loader-bench-{}-{tag}", std::process::id()),
        limit,
    )?;
    drop_cache(file)?;
    let huge = crate::measure::HugetlbPeak::start();
    let t = Instant::now();
    let out = Command::new(me)
        .arg("--child")
        .arg(which)
        .arg("--join")
        .arg(cg.path())
        .arg("--file")
        .arg(file)
        .stdout(Stdio::piped())
        .output()
        .context("running the contender")?;
    let wall = t.elapsed();
    let hugetlb = huge.stop();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let page_size = text
        .strip_prefix("ok ")
        .and_then(|r| r.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let result = match out.status.signal() {
        Some(sig) => format!("killed by signal {sig}"),
        None if text.starts_with("ok") => "ok".into(),
        None => text
            .strip_prefix("err ")
            .unwrap_or(&text)
            .chars()
            .take(90)
            .collect(),
    };
    Ok(Outcome {
        wall,
        result,
        peak: cg.peak() + hugetlb,
        oom_kills: cg.oom_kills(),
        cache_left: cached(file),
        page_size,
        hugetlb,
    })
}

/// The service inside the cgroup (its buffer pages are charged there), the client outside.
fn run_service(o: &PressureOptions, limit: Option<u64>, tag: &str) -> Result<Outcome> {
    let cg = Cgroup::create(
        &format!("dmabuf-loader-bench-{}-{tag}", std::process::id()),
        limit,
    )?;
    let mut svc = crate::service::Service::start(&o.service_args, Some(cg.path()), tag)?;
    // What the idle service already holds is not the load's.
    let base = cg.usage();
    drop_cache(&o.file)?;
    let huge = crate::measure::HugetlbPeak::start();
    let l = svc.load(&o.file)?;
    let hugetlb = huge.stop();
    let cache_left = cached(&o.file);
    let result = if !svc.alive() {
        "service died".to_string()
    } else {
        l.result.clone()
    };
    let (peak, oom) = (cg.peak().saturating_sub(base) + hugetlb, cg.oom_kills());
    drop(svc);
    drop(cg);
    Ok(Outcome {
        wall: l.wall,
        result,
        peak,
        oom_kills: oom,
        cache_left,
        page_size: l.page_size,
        hugetlb,
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Runs every mode; `me` is the bench binary (its `--child` / `--hold` modes).
pub fn run(o: &PressureOptions, me: &Path, log: &mut dyn Write) -> Result<PressureReport> {
    let size = std::fs::metadata(&o.file)?.len();
    let fits = size * o.limit_pct / 100;
    let tight = size * o.tight_pct / 100;
    let mut modes = vec![
        Mode {
            name: "unconstrained".into(),
            limit: None,
            runs: vec![],
        },
        Mode {
            name: format!("cgroup {}% ({:.0} MiB)", o.limit_pct, mib(fits)),
            limit: Some(fits),
            runs: vec![],
        },
        Mode {
            name: format!(
                "cgroup {}% ({:.0} MiB), cannot fit",
                o.tight_pct,
                mib(tight)
            ),
            limit: Some(tight),
            runs: vec![],
        },
    ];
    if o.stress {
        modes.push(Mode {
            name: "stressor".into(),
            limit: None,
            runs: vec![],
        });
    }
    let mut stressor_note = None;
    let n = o.contenders.len();
    #[allow(clippy::needless_range_loop)] // modes[m] and `m` itself (the rotation) are both used
    for m in 0..modes.len() {
        modes[m].runs = vec![Vec::new(); n];
        let mut stressor: Option<Child> = None;
        if modes[m].name == "stressor" {
            let avail = dmabuf_loader::meminfo_bytes("MemAvailable")?;
            let keep = size * 5 / 4 + (o.spare_mib << 20);
            let hold = avail.saturating_sub(keep);
            let mut c = Command::new(me)
                .arg("--hold")
                .arg(hold.to_string())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut line = [0u8; 64];
            let _ = c.stdout.as_mut().map(|o| o.read(&mut line));
            stressor_note = Some(format!(
                "stressor held {:.0} MiB of {:.0} MiB available (left {:.0} MiB)",
                mib(hold),
                mib(avail),
                mib(keep)
            ));
            stressor = Some(c);
        }
        for round in 0..o.rounds {
            for k in 0..n {
                let i = crate::measure::order(k, round as usize + m, n);
                let tag = format!("p{m}-{round}-{i}");
                let limit = modes[m].limit;
                let r = match o.contenders[i].as_str() {
                    "service" => run_service(o, limit, &tag),
                    c => run_child(me, &o.file, c, limit, &tag),
                };
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some(mut s) = stressor {
                            let _ = s.kill();
                            let _ = s.wait();
                        }
                        return Err(e);
                    }
                };
                let _ = writeln!(
                    log,
                    "{} round {round} {:<10} {:>8.0} ms  {}  peak {:.0} MiB  cache left {:.0} MiB  oom kills {}",
                    modes[m].name,
                    o.contenders[i],
                    r.wall.as_secs_f64() * 1e3,
                    r.result,
                    mib(r.peak),
                    mib(r.cache_left),
                    r.oom_kills
                );
                modes[m].runs[i].push(r);
            }
        }
        if let Some(mut s) = stressor {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
    Ok(PressureReport {
        size,
        contenders: o.contenders.clone(),
        modes,
        stressor_note,
    })
}
