//! dmabuf-loader-bench: every figure of issue 16 in one run: the device limit (registered
//! O_DIRECT + fio), the status quo, the engine and the service, cold and warm, interleaved with
//! the order rotated every round; N loads at once through the service; memory pressure
//! (cgroups, a stressor) when run as root; the 4 KiB latency through `dmabuf-loader bench
//! --latency --pin`; then every target as met / not met. The logic lives in the library next
//! to it (`dmabuf_loader_bench`) so other front ends can reuse it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Parser;
use dmabuf_loader::{Config, IoPath};
use dmabuf_loader_bench::{self as bench, pressure, service, targets, BenchOptions};

#[derive(Parser, Debug)]
// `name` and `about` as text: clap would read CARGO_PKG_NAME and CARGO_PKG_DESCRIPTION, which
// Soong does not set as Cargo does (`version` reads CARGO_PKG_VERSION: tools/bench/Android.bp
// sets cargo_env_compat for it).
#[command(
    name = "dmabuf-loader-bench",
    version,
    about = "Device limit vs status quo vs the engine vs the service: cold and warm, memory \
             pressure, concurrency and latency, in one interleaved run"
)]
struct Args {
    /// Directory for the generated test files (use a disk file system: tmpfs cannot measure a
    /// disk). Not needed with --file.
    #[arg(required_unless_present_any = ["file", "child", "hold"])]
    dir: Option<PathBuf>,
    /// Size of the generated file, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Use this file instead of generating one (its size is used as is).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Rounds per contender, cold and warm (medians are reported, spread shown).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Provider for the status quo and the engine.
    #[arg(long, default_value = "memfd")]
    heap: String,
    /// Engine queue depth (default: the engine's measured default).
    #[arg(long)]
    queue_depth: Option<u32>,
    /// Engine chunk size in KiB (default: the engine's measured default).
    #[arg(long)]
    chunk_kib: Option<usize>,
    /// Start the engine's fallback chain at this path (direct-registered, direct, buffered,
    /// buffered-sync) instead of letting it choose.
    #[arg(long, value_parser = parse_path)]
    force_path: Option<IoPath>,
    /// Also sweep the limit's shapes and the engine's queue depth, chunk size, paths and
    /// allocation strategies.
    #[arg(long)]
    sweep: bool,
    /// Leave the service out (service rows, concurrency, pressure through it, latency).
    #[arg(long)]
    no_service: bool,
    /// An argument for the service the bench starts (repeat: --service-arg=--max-concurrent-loads --service-arg=8).
    #[arg(long, allow_hyphen_values = true)]
    service_arg: Vec<String>,
    /// Loads at once through the service (0: none).
    #[arg(long, default_value_t = 8)]
    concurrent: u32,
    /// Size of each concurrent load's file, MiB.
    #[arg(long, default_value_t = 128)]
    concurrent_mib: u64,
    /// Skip the warm rounds.
    #[arg(long)]
    no_warm: bool,
    /// Skip the memory-pressure modes (they need root and a memory cgroup controller).
    #[arg(long)]
    no_pressure: bool,
    /// Rounds of each memory-pressure mode.
    #[arg(long, default_value_t = 2)]
    pressure_rounds: u32,
    /// Also the stressor mode (a process holding most of MemAvailable).
    #[arg(long)]
    stress: bool,
    /// Memory the stressor leaves free beyond 1.25 x the file (MiB): others use this machine.
    #[arg(long, default_value_t = 2048)]
    spare_mib: u64,
    /// The cgroup limit that fits, percent of the file size.
    #[arg(long, default_value_t = 125)]
    limit_pct: u64,
    /// The cgroup limit that cannot fit, percent of the file size.
    #[arg(long, default_value_t = 50)]
    tight_pct: u64,
    /// Skip the 4 KiB latency run.
    #[arg(long)]
    no_latency: bool,
    /// Calls per contender for the latency run.
    #[arg(long, default_value_t = 3000)]
    latency_iterations: u32,
    /// Print every run as it finishes.
    #[arg(long, short)]
    verbose: bool,
    /// Internal (pressure): run one contender (status-quo | engine) in this process.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal (pressure): the cgroup the child joins first.
    #[arg(long, hide = true)]
    join: Option<PathBuf>,
    /// Internal (pressure): hold this many bytes (the stressor).
    #[arg(long, hide = true)]
    hold: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(b) = a.hold {
        return pressure::hold(b);
    }
    if let Some(which) = &a.child {
        let file = a.file.as_ref().context("--child needs --file")?;
        return pressure::child(which, file, a.join.as_deref());
    }
    let (file, size, dir) = match &a.file {
        Some(f) => (
            f.clone(),
            std::fs::metadata(f)
                .with_context(|| format!("stat {}", f.display()))?
                .len(),
            f.parent().map(PathBuf::from).unwrap_or_else(|| ".".into()),
        ),
        None => {
            let dir = a
                .dir
                .clone()
                .context("a directory for the test file is needed")?;
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            (
                dir.join(format!("dmabuf-loader-bench-{}M.bin", a.size_mib)),
                a.size_mib << 20,
                dir,
            )
        }
    };
    let mut opts = BenchOptions::new(file.clone());
    opts.size = size;
    opts.rounds = a.rounds.max(1);
    opts.heap = a.heap.clone();
    opts.sweep = a.sweep;
    opts.service = !a.no_service;
    opts.service_args = a.service_arg.clone();
    opts.concurrent = (a.concurrent > 0).then_some((a.concurrent, a.concurrent_mib << 20));
    opts.warm = !a.no_warm;
    opts.config = Config {
        force_io_path: a.force_path,
        queue_depth: a.queue_depth,
        chunk_size: a.chunk_kib.map(|k| k << 10),
        ..Config::default()
    };
    let pools: Vec<String> = dmabuf_loader::hugetlb_pools()
        .iter()
        .map(|p| format!("{} KiB: {} free", p.page_size >> 10, p.free))
        .collect();
    println!(
        "file {} ({:.2} GiB), heap {}, {} CPUs, kernel {}; hugetlb pools [{}], shmem THP {:?}; fio {}",
        file.display(),
        size as f64 / (1u64 << 30) as f64,
        opts.heap,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        pools.join(", "),
        dmabuf_loader::shmem_thp_sizes(),
        if bench::limit::fio_present() { "installed" } else { "not installed (tools/install-deps installs it): no outside reference" }
    );
    let mut sink = std::io::sink();
    let mut stderr = std::io::stderr();
    let log: &mut dyn std::io::Write = if a.verbose { &mut stderr } else { &mut sink };
    let report = bench::run(&opts, log)?;
    report.print(&mut std::io::stdout())?;

    let with_service = opts.service && service::available();
    let root = nix::unistd::geteuid().is_root();
    let pressure_report = if a.no_pressure {
        Err("skipped (--no-pressure)".to_string())
    } else if !root {
        Err("needs root (memory cgroups)".to_string())
    } else {
        let mut p = pressure::PressureOptions::new(file.clone());
        p.rounds = a.pressure_rounds.max(1);
        p.limit_pct = a.limit_pct;
        p.tight_pct = a.tight_pct;
        p.stress = a.stress;
        p.spare_mib = a.spare_mib;
        p.service_args = a.service_arg.clone();
        if !with_service {
            p.contenders.retain(|c| c != "service");
        }
        let me = std::env::current_exe()?;
        println!(
            "\nMEMORY PRESSURE ({} rounds per mode, contenders rotated)",
            p.rounds
        );
        match pressure::run(&p, &me, log) {
            Ok(r) => {
                r.print(&mut std::io::stdout())?;
                Ok(r)
            }
            Err(e) => Err(format!("failed: {e:#}")),
        }
    };
    let latency = if a.no_latency {
        Err("skipped (--no-latency)".to_string())
    } else if !with_service {
        Err("no service binary".to_string())
    } else {
        latency(&dir, &a).map_err(|e| format!("failed: {e:#}"))
    };
    if let Ok(l) = &latency {
        println!(
            "\nLATENCY 4 KiB, pinned, {} calls each: loadFile p50 {:.1} us, bare one-fd call p50 {:.1} us ({})",
            a.latency_iterations, l.load_p50_us, l.bare_p50_us, l.transport
        );
    }
    let v = targets::evaluate(
        &report,
        pressure_report.as_ref().map_err(String::as_str),
        latency.as_ref().map_err(String::as_str),
    );
    targets::print(&v, &mut std::io::stdout())?;
    println!("load average at the end: {}", bench::measure::loadavg());
    Ok(())
}

/// `dmabuf-loader bench --latency --pin --json` against a service the bench starts.
fn latency(dir: &std::path::Path, a: &Args) -> anyhow::Result<targets::Latency> {
    let small = dir.join("dmabuf-loader-bench-4K.bin");
    bench::ensure_file(&small, 4096)?;
    let svc = service::Service::start(&a.service_arg, None, "latency")?;
    let client = service::bin_dir()
        .context("binary dir")?
        .join("dmabuf-loader");
    let out = Command::new(client)
        .arg("--socket")
        .arg(svc.socket())
        .arg("bench")
        .arg(&small)
        .args(["--latency", "--pin", "--json", "--service-pid"])
        .arg(svc.pid().to_string())
        .arg("--iterations")
        .arg(a.latency_iterations.to_string())
        .output()
        .context("running dmabuf-loader bench --latency")?;
    if !out.status.success() {
        bail!(
            "dmabuf-loader bench --latency: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let p50 = |section: &str| -> anyhow::Result<f64> {
        let at = text
            .find(&format!("\"{section}\""))
            .with_context(|| format!("no {section} in the client's JSON"))?;
        let rest = &text[at..];
        let k = rest.find("\"p50_us\":").context("no p50_us")? + "\"p50_us\":".len();
        rest[k..]
            .trim_start()
            .split(|c: char| c == ',' || c.is_whitespace() || c == '}')
            .next()
            .and_then(|v| v.parse().ok())
            .context("parsing p50_us")
    };
    Ok(targets::Latency {
        load_p50_us: p50("load_file")?,
        bare_p50_us: p50("bare_fd_call")?,
        transport: "host unix socket".into(),
    })
}

fn parse_path(s: &str) -> Result<IoPath, String> {
    Ok(match s {
        "direct-registered" => IoPath::DirectRegistered,
        "direct" => IoPath::Direct,
        "buffered" => IoPath::Buffered,
        "buffered-sync" => IoPath::BufferedSync,
        _ => {
            return Err(format!(
                "unknown path {s:?} (direct-registered, direct, buffered, buffered-sync)"
            ))
        }
    })
}
