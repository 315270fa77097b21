//! dmabuf-loader-bench: times (a) the device limit, (b) the status quo and (c) the engine on
//! one file, cold and warm, interleaved, and prints the table and the target ratios.
//! The logic lives in the library next to it (`dmabuf_loader_bench`) so other front ends can
//! reuse it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dmabuf_loader::{Config, IoPath};
use dmabuf_loader_bench::{self as bench, BenchOptions};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory for the generated test file (use a disk file system: tmpfs cannot measure a
    /// disk). Not needed with --file.
    #[arg(required_unless_present = "file")]
    dir: Option<PathBuf>,
    /// Size of the generated file, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Use this file instead of generating one (its size is used as is).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Rounds per contender, cold and warm (best is reported, spread shown).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Provider for the status quo and the engine.
    #[arg(long, default_value = "memfd")]
    heap: String,
    /// Reads in flight for the device-limit contender (>= 32).
    #[arg(long, default_value_t = 32)]
    limit_depth: u32,
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
    /// Also sweep queue depth, chunk size, forced paths and allocation strategies.
    #[arg(long)]
    sweep: bool,
    /// Print every run as it finishes.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (file, size) = match &a.file {
        Some(f) => (
            f.clone(),
            std::fs::metadata(f)
                .with_context(|| format!("stat {}", f.display()))?
                .len(),
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
            )
        }
    };
    let mut opts = BenchOptions::new(file.clone());
    opts.size = size;
    opts.rounds = a.rounds.max(1);
    opts.heap = a.heap;
    opts.limit_depth = a.limit_depth;
    opts.sweep = a.sweep;
    opts.config = Config {
        force_io_path: a.force_path,
        queue_depth: a.queue_depth,
        chunk_size: a.chunk_kib.map(|k| k << 10),
        ..Config::default()
    };
    println!(
        "file {} ({:.2} GiB), {} rounds, heap {}, {} CPUs, kernel {}",
        file.display(),
        size as f64 / (1u64 << 30) as f64,
        opts.rounds,
        opts.heap,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        nix_release()
    );
    let mut sink = std::io::sink();
    let mut stdout = std::io::stdout();
    let log: &mut dyn std::io::Write = if a.verbose { &mut stdout } else { &mut sink };
    let report = bench::run(&opts, log)?;
    report.print(&mut std::io::stdout())?;
    Ok(())
}

fn nix_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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
