//! dmabuf-loader-pressure: loads under memory pressure.
//!
//! Each contender (status quo: alloc + mmap + read() loop; the engine in a child process;
//! the service, started inside the cgroup, loaded into by a client outside it) runs
//!
//! * unconstrained (the reference time),
//! * inside a memory-limited cgroup (v2 or v1, whichever this machine has) with limit =
//!   file size x `--limit-pct` (default 125%),
//! * inside a cgroup too small for the buffer (`--tight-pct`, default 50%): the engine and
//!   the service must refuse with ALLOCATION_FAILED, nobody may be OOM-killed,
//! * with `--stress`: unconstrained, while a stressor process holds all but
//!   file size x 1.25 + `--spare-mib` of MemAvailable (anonymous, populated; no swap here, so
//!   only the page cache can give way, as on a phone with 4 GB taken).
//!
//! Contender order rotates every round. Per run it prints wall time, completion (ok /
//! error code / killed by signal), the peak memory the contender added (its cgroup's peak
//! usage: buffer + page cache charged to it; unconstrained runs use a cgroup without a
//! limit), the file's page cache left behind (cachestat) and OOM kills. Needs root
//! (cgroup creation). Every cgroup and child is removed/killed when it ends.
//!
//!     dmabuf-loader-pressure FILE [--rounds 3] [--stress] [--service-bin PATH --client-bin PATH]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dmabuf_loader::{Config, LoadControl, LoadRequest, Loader};

#[derive(Parser, Debug)]
#[command(
    name = "dmabuf-loader-pressure",
    about = "Loads under memory pressure (cgroup limit, stressor)"
)]
struct Cli {
    /// File to load (on a disk file system; its size is the buffer size).
    file: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// cgroup limit as a percentage of the file size.
    #[arg(long, default_value_t = 125)]
    limit_pct: u64,
    /// The limit of the "cannot fit" runs, percent of the file size.
    #[arg(long, default_value_t = 50)]
    tight_pct: u64,
    /// Also run with a stressor holding most free memory.
    #[arg(long)]
    stress: bool,
    /// Memory the stressor leaves free beyond 1.25 x the file (MiB): others use this machine.
    #[arg(long, default_value_t = 2048)]
    spare_mib: u64,
    /// The service binary (default: next to this one).
    #[arg(long)]
    service_bin: Option<PathBuf>,
    /// The client binary (default: next to this one).
    #[arg(long)]
    client_bin: Option<PathBuf>,
    /// Internal: run one contender in this process (status-quo | engine) and report.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the cgroup the child joins first.
    #[arg(long, hide = true)]
    join: Option<PathBuf>,
    /// Internal: hold this many bytes (the stressor).
    #[arg(long, hide = true)]
    hold: Option<u64>,
}

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

use dmabuf_loader_bench::drop_cache;

/// The child side: one load, reported on stdout as "ok <ms>" or "err <Kind> <message>".
fn child(which: &str, file: &Path, join: Option<&Path>) -> Result<()> {
    if let Some(j) = join {
        Cgroup::join(j)?;
    }
    let loader = Loader::new(Config::default())?;
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let r: Result<(), String> = match which {
        "engine" => {
            let f = File::open(file)?;
            let req = LoadRequest {
                heap: Some("memfd".into()),
                ..Default::default()
            };
            loader
                .load(f.as_fd(), &req, &LoadControl::default())
                .map(drop)
                .map_err(|e| format!("{:?} {e}", e.kind))
        }
        "status-quo" => {
            // What app code does: allocate 4 KiB pages with no memory check (it faults pages
            // in until the memory runs out), read() through the page cache. Anonymous memory
            // stands in for the memfd/dma-heap mapping: the cgroup charges both the same way.
            (|| -> Result<(), String> {
                let len = size.div_ceil(4096) * 4096;
                let mut map = Vec::<u8>::new();
                map.try_reserve_exact(len as usize)
                    .map_err(|e| format!("AllocationFailed {e}"))?;
                map.resize(len as usize, 0);
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
        Ok(()) => println!("ok {:.1}", t.elapsed().as_secs_f64() * 1e3),
        Err(e) => println!("err {e}"),
    }
    Ok(())
}

/// The stressor: holds `bytes` of populated anonymous memory until killed.
fn hold(bytes: u64) -> Result<()> {
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
struct Outcome {
    wall: Duration,
    /// "ok", an error kind / code, or "killed by signal N".
    result: String,
    peak: u64,
    oom_kills: u64,
    /// Bytes of the file in the page cache right after the load.
    cache_left: u64,
}

/// Bytes of `path` in the page cache (cachestat, 6.5+; 0 where the kernel lacks it).
fn cached_bytes(path: &Path) -> u64 {
    let Ok(f) = File::open(path) else { return 0 };
    dmabuf_loader::page_cache_bytes(f.as_fd()).unwrap_or(0)
}

struct Env {
    me: PathBuf,
    service_bin: PathBuf,
    client_bin: PathBuf,
    file: PathBuf,
    size: u64,
}

fn run_child(env: &Env, which: &str, limit: Option<u64>, tag: &str) -> Result<Outcome> {
    let cg = Some(Cgroup::create(
        &format!("dmabuf-loader-pressure-{}-{tag}", std::process::id()),
        limit,
    )?);
    drop_cache(&env.file)?;
    let mut cmd = Command::new(&env.me);
    cmd.arg("--child")
        .arg(which)
        .arg(&env.file)
        .stdout(Stdio::piped());
    if let Some(cg) = &cg {
        cmd.arg("--join").arg(cg.path());
    }
    let t = Instant::now();
    let out = cmd.output().context("running the contender")?;
    let wall = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
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
        peak: cg.as_ref().map_or(0, |c| c.peak()),
        oom_kills: cg.as_ref().map_or(0, |c| c.oom_kills()),
        cache_left: cached_bytes(&env.file),
    })
}

/// The service inside the cgroup (its buffer pages are charged there), the client outside.
fn run_service(env: &Env, limit: Option<u64>, tag: &str) -> Result<Outcome> {
    let cg = Some(Cgroup::create(
        &format!("dmabuf-loader-pressure-{}-{tag}", std::process::id()),
        limit,
    )?);
    let sock = std::env::temp_dir().join(format!(
        "dmabuf-loader-pressure-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&sock);
    let mut svc: Child = {
        let mut c = Command::new(&env.service_bin);
        c.arg("--socket")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cg) = &cg {
            use std::os::unix::process::CommandExt;
            let procs = std::ffi::CString::new(
                cg.path()
                    .join("cgroup.procs")
                    .into_os_string()
                    .into_encoded_bytes(),
            )?;
            // SAFETY: only async-signal-safe work between fork and exec: one open/write/close
            // of a path prepared before the fork; no allocation, no lock.
            unsafe {
                c.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    libc::close(fd);
                    if ok {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                })
            };
        }
        c.spawn().context("starting the service")?
    };
    let up = Instant::now();
    while !sock.exists() {
        if up.elapsed() > Duration::from_secs(10) {
            let _ = svc.kill();
            let _ = svc.wait();
            bail!("the service did not create {}", sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop_cache(&env.file)?;
    let t = Instant::now();
    let out = Command::new(&env.client_bin)
        .arg("--socket")
        .arg(&sock)
        .args(["load", "--heap", "memfd", "--json"])
        .arg(&env.file)
        .output()
        .context("running the client")?;
    let wall = t.elapsed();
    let cache_left = cached_bytes(&env.file);
    let alive = matches!(svc.try_wait(), Ok(None));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let result = if !alive {
        format!(
            "service died ({:?})",
            svc.try_wait().ok().flatten().map(|s| s.signal())
        )
    } else if out.status.success() {
        "ok".into()
    } else {
        // The client prints the ErrorCode name on refusal (exit status 3).
        let code = ["ALLOCATION_FAILED", "TOO_LARGE", "BUSY", "IO_ERROR"]
            .into_iter()
            .find(|c| text.contains(c))
            .unwrap_or("failed");
        format!("{code} (exit {:?})", out.status.code())
    };
    let (peak, oom) = cg.as_ref().map_or((0, 0), |c| (c.peak(), c.oom_kills()));
    let _ = svc.kill();
    let _ = svc.wait();
    let _ = std::fs::remove_file(&sock);
    drop(cg);
    Ok(Outcome {
        wall,
        result,
        peak,
        oom_kills: oom,
        cache_left,
    })
}

fn run_one(env: &Env, which: &str, limit: Option<u64>, tag: &str) -> Result<Outcome> {
    match which {
        "service" => run_service(env, limit, tag),
        _ => run_child(env, which, limit, tag),
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(b) = cli.hold {
        return hold(b);
    }
    let file = cli.file.clone().context("FILE is required")?;
    if let Some(which) = &cli.child {
        return child(which, &file, cli.join.as_deref());
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("exe dir")?.to_path_buf();
    let env = Env {
        service_bin: cli
            .service_bin
            .clone()
            .unwrap_or_else(|| dir.join("dmabuf-loader-service")),
        client_bin: cli
            .client_bin
            .clone()
            .unwrap_or_else(|| dir.join("dmabuf-loader")),
        me,
        size: std::fs::metadata(&file)?.len(),
        file,
    };
    let contenders = ["status-quo", "engine", "service"];
    let fits = env.size * cli.limit_pct / 100;
    let tight = env.size * cli.tight_pct / 100;
    let mut modes: Vec<(String, Option<u64>)> = vec![
        ("unconstrained".into(), None),
        (
            format!("cgroup {}% ({:.0} MiB)", cli.limit_pct, mib(fits)),
            Some(fits),
        ),
        (
            format!(
                "cgroup {}% ({:.0} MiB), cannot fit",
                cli.tight_pct,
                mib(tight)
            ),
            Some(tight),
        ),
    ];
    let mut results: Vec<Vec<Vec<Outcome>>> =
        vec![vec![Vec::new(); contenders.len()]; modes.len() + 1];
    let mut stress_row = None;
    if cli.stress {
        modes.push(("stressor".into(), None));
        stress_row = Some(modes.len() - 1);
    }
    println!(
        "file {} ({:.0} MiB); load avg {}",
        env.file.display(),
        mib(env.size),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for (m, (name, limit)) in modes.iter().enumerate() {
        let mut stressor: Option<Child> = None;
        if Some(m) == stress_row {
            let avail = dmabuf_loader::meminfo_bytes("MemAvailable")?;
            let keep = env.size * 5 / 4 + (cli.spare_mib << 20);
            let hold = avail.saturating_sub(keep);
            let mut c = Command::new(&env.me)
                .arg("--hold")
                .arg(hold.to_string())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut line = [0u8; 64];
            let _ = c.stdout.as_mut().map(|o| o.read(&mut line));
            println!(
                "stressor holds {:.0} MiB of {:.0} MiB available (leaves {:.0} MiB)",
                mib(hold),
                mib(avail),
                mib(keep)
            );
            stressor = Some(c);
        }
        for round in 0..cli.rounds {
            for k in 0..contenders.len() {
                let i = (k + round as usize + m) % contenders.len();
                let o = run_one(&env, contenders[i], *limit, &format!("{m}-{round}-{i}"))?;
                eprintln!(
                    "{name} round {round} {:<10} {:>8.0} ms  {}  peak {:.0} MiB  cache left {:.0} MiB  oom kills {}",
                    contenders[i],
                    o.wall.as_secs_f64() * 1e3,
                    o.result,
                    mib(o.peak),
                    mib(o.cache_left),
                    o.oom_kills
                );
                results[m][i].push(o);
            }
        }
        if let Some(mut s) = stressor {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
    println!(
        "\n{:<38} {:<10} {:>10} {:>10} {:>9} {:>11} {:>5}  completion",
        "mode", "contender", "median ms", "vs uncon.", "peak MiB", "cache left", "OOMs"
    );
    for (m, (name, _)) in modes.iter().enumerate() {
        for (i, c) in contenders.iter().enumerate() {
            let mut v = results[m][i].clone();
            v.sort_by_key(|o| o.wall);
            let med = &v[v.len() / 2];
            let mut base: Vec<Duration> = results[0][i].iter().map(|o| o.wall).collect();
            base.sort();
            let ratio = med.wall.as_secs_f64() / base[base.len() / 2].as_secs_f64();
            let ok = v.iter().filter(|o| o.result == "ok").count();
            let mut outcomes: Vec<String> = v.iter().map(|o| o.result.clone()).collect();
            outcomes.dedup();
            println!(
                "{:<38} {:<10} {:>10.0} {:>9.2}x {:>9.0} {:>9.1}MiB {:>5}  {ok}/{} ok; {}",
                name,
                c,
                med.wall.as_secs_f64() * 1e3,
                ratio,
                mib(v.iter().map(|o| o.peak).max().unwrap_or(0)),
                mib(v.iter().map(|o| o.cache_left).max().unwrap_or(0)),
                v.iter().map(|o| o.oom_kills).sum::<u64>(),
                v.len(),
                outcomes.join(" | ")
            );
        }
    }
    Ok(())
}
