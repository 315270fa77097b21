//! The service as a contender: `dmabuf-loader-service --socket` started by the bench
//! (optionally inside a memory cgroup, so its buffers are charged there), loaded into by
//! `dmabuf-loader load --json` clients (binaries next to the bench's own). Each load reports
//! wall time, CPU (client + service, user + sys), the I/O path and the page size the buffer
//! got; N loads can run at once (the concurrency target).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::measure::{cpu_children, cpu_of, rss_own};

/// Where the project's binaries are: next to the running one (cargo's target dir, or
/// /usr/bin in the rig), or `DMABUF_LOADER_BIN_DIR`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DMABUF_LOADER_BIN_DIR") {
        return Some(d.into());
    }
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

/// Whether the service and client binaries are there to be run.
pub fn available() -> bool {
    bin_dir().is_some_and(|d| {
        d.join("dmabuf-loader-service").exists() && d.join("dmabuf-loader").exists()
    })
}

pub struct Service {
    child: Child,
    sock: PathBuf,
    client: PathBuf,
}

/// One load through the service.
#[derive(Clone, Debug, Default)]
pub struct ServiceLoad {
    pub wall: Duration,
    /// Client + service, user + sys, seconds.
    pub cpu: f64,
    /// "ok", or the ErrorCode name the client printed (ALLOCATION_FAILED, BUSY...).
    pub result: String,
    pub io_path: String,
    pub page_size: u64,
}

impl Service {
    /// Starts the service on a private socket with `args`; inside cgroup `cgroup` (its
    /// directory) when given: a shell writes its own pid into `cgroup.procs`, then execs the
    /// service, so every page the service allocates is charged there.
    pub fn start(args: &[String], cgroup: Option<&Path>, tag: &str) -> Result<Service> {
        let dir = bin_dir().context("where the service binary is")?;
        let bin = dir.join("dmabuf-loader-service");
        let sock = std::env::temp_dir().join(format!(
            "dmabuf-loader-bench-{}-{tag}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&sock);
        let mut cmd = match cgroup {
            Some(cg) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg("echo $$ > \"$1\" && shift && exec \"$@\"")
                    .arg("sh")
                    .arg(cg.join("cgroup.procs"))
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--socket")
            .arg(&sock)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut svc = Service {
            child,
            sock,
            client: dir.join("dmabuf-loader"),
        };
        let t = Instant::now();
        while !svc.sock.exists() {
            if t.elapsed() > Duration::from_secs(10) || svc.child.try_wait()?.is_some() {
                bail!("the service did not listen on {}", svc.sock.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(svc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> &Path {
        &self.sock
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The service's own memory (RssAnon + RssFile, without the buffers' shmem).
    pub fn rss(&self) -> u64 {
        rss_own(self.pid()).unwrap_or(0)
    }

    fn client(&self, file: &Path) -> Command {
        let mut c = Command::new(&self.client);
        c.arg("--socket")
            .arg(&self.sock)
            .args(["load", "--heap", "memfd", "--json"])
            .arg(file);
        c
    }

    /// One load: wall time from the client's start to its exit, CPU of the client and the
    /// service (the service's counted from its /proc stat, so only one load may run).
    pub fn load(&self, file: &Path) -> Result<ServiceLoad> {
        let (c0, s0) = (cpu_children(), cpu_of(self.pid()));
        let t = Instant::now();
        let out = self.client(file).output().context("running the client")?;
        let wall = t.elapsed();
        // The service's tick accounting lags the reply by a little.
        std::thread::sleep(Duration::from_millis(20));
        let mut l = parse(&out);
        l.wall = wall;
        l.cpu = cpu_children() - c0 + cpu_of(self.pid()) - s0;
        Ok(l)
    }

    /// `files.len()` loads at once, one client each: (wall time of the whole batch, each
    /// load, the service's peak own RSS growth during the batch, client + service CPU).
    pub fn load_concurrently(
        &self,
        files: &[PathBuf],
    ) -> Result<(Duration, Vec<ServiceLoad>, u64, f64)> {
        let rss0 = self.rss();
        let (c0, s0) = (cpu_children(), cpu_of(self.pid()));
        let t = Instant::now();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let mut peak = rss0;
        let results: Vec<Result<(Output, Duration)>> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .iter()
                .map(|f| {
                    let (cmd, done) = (self.client(f), &done);
                    s.spawn(move || {
                        let mut cmd = cmd;
                        let r = cmd.output().context("running a client");
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        r.map(|o| (o, t.elapsed()))
                    })
                })
                .collect();
            while done.load(std::sync::atomic::Ordering::SeqCst) < files.len() {
                peak = peak.max(self.rss());
                std::thread::sleep(Duration::from_millis(2));
            }
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        let wall = t.elapsed();
        std::thread::sleep(Duration::from_millis(20));
        let cpu = cpu_children() - c0 + cpu_of(self.pid()) - s0;
        let mut loads = Vec::new();
        for r in results {
            let (o, w) = r?;
            let mut l = parse(&o);
            l.wall = w;
            loads.push(l);
        }
        Ok((wall, loads, peak.saturating_sub(rss0), cpu))
    }
}

/// Reads the client's `load --json` output: the path and page size, or the error code name.
fn parse(out: &Output) -> ServiceLoad {
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        let k = format!("\"{key}\":");
        let at = text.find(&k)? + k.len();
        let v = text[at..].trim_start();
        let v = v.strip_prefix('"').unwrap_or(v);
        Some(
            v.chars()
                .take_while(|c| !matches!(c, '"' | ',' | '\n' | '}'))
                .collect::<String>(),
        )
    };
    if out.status.success() {
        return ServiceLoad {
            result: "ok".into(),
            io_path: field("io_path").unwrap_or_default(),
            page_size: field("page_size")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            ..Default::default()
        };
    }
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    let code = [
        "ALLOCATION_FAILED",
        "TOO_LARGE",
        "BUSY",
        "IO_ERROR",
        "TIMED_OUT",
    ]
    .into_iter()
    .find(|c| all.contains(c))
    .map(str::to_string);
    ServiceLoad {
        result: code.unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            match out.status.signal() {
                Some(s) => format!("client killed by signal {s}"),
                None => format!("failed (exit {:?})", out.status.code()),
            }
        }),
        ..Default::default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}
