//! dmabuf-loader-limit: the honest device limit for one file, checked against fio.
//!
//! The old reference (`dmabuf_loader::bench::device_limit`) read with plain O_DIRECT into
//! anonymous memory, without registered buffers, at one queue depth: ~28% under
//! `fio --fixedbufs` in the same minutes (issue 16). This one reads with REGISTERED buffers
//! (READ_FIXED, one slot per read in flight) at every queue depth x chunk size of the sweep,
//! cold (POSIX_FADV_DONTNEED before every run), the order rotated every round, and reports
//! medians and the spread of each; the limit is the best median, and the output says which
//! depth and chunk gave it. Where `fio` is installed the same jobs run with fio in the same
//! rotation (`--fixedbufs`, anonymous memory and `--iomem=mmapshared`), so anyone can check
//! the reference. A spread (max/min - 1) over 25% is flagged: no ratio means much then.
//!
//!     dmabuf-loader-limit FILE [--rounds 5] [--quick]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "dmabuf-loader-limit",
    about = "Honest device limit (registered O_DIRECT sweep) vs fio"
)]
struct Cli {
    file: PathBuf,
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Only QD 32 x 1 MiB registered, unregistered and the fio jobs.
    #[arg(long)]
    quick: bool,
}

const SPREAD_WARN: f64 = 0.25;

use dmabuf_loader_bench::drop_cache;

/// O_DIRECT io_uring reads of `chunk` with `depth` in flight into anonymous memory,
/// registered (READ_FIXED, slot = read in flight) when `fixed`: the core's device-limit reader.
pub fn direct_read(
    path: &Path,
    size: u64,
    depth: u32,
    chunk: usize,
    fixed: bool,
) -> Result<Duration> {
    dmabuf_loader::device_read(path, size, depth, chunk, fixed)
}

/// fio's read bandwidth (bytes/s) for the job, or why it could not run.
pub fn fio(path: &Path, size: u64, depth: u32, chunk: usize, extra: &[&str]) -> Result<f64> {
    let out = Command::new("fio")
        .arg("--name=ref")
        .arg(format!("--filename={}", path.display()))
        .args([
            "--rw=read",
            "--direct=1",
            "--ioengine=io_uring",
            "--invalidate=1",
        ])
        .arg(format!("--bs={chunk}"))
        .arg(format!("--iodepth={depth}"))
        .arg(format!("--size={size}"))
        .args(extra)
        .args(["--output-format=terse", "--terse-version=3"])
        .output()
        .context("running fio")?;
    if !out.status.success() {
        bail!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // terse v3: field 7 (1-based) is the read bandwidth in KiB/s.
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: f64 = text
        .lines()
        .last()
        .and_then(|l| l.split(';').nth(6))
        .and_then(|v| v.parse().ok())
        .context("parsing fio's terse output")?;
    Ok(kib * 1024.0)
}

#[derive(Clone)]
enum Job {
    Ours {
        depth: u32,
        chunk: usize,
        fixed: bool,
    },
    Fio {
        depth: u32,
        chunk: usize,
        extra: &'static [&'static str],
        label: &'static str,
    },
}

impl Job {
    fn name(&self) -> String {
        match self {
            Job::Ours {
                depth,
                chunk,
                fixed,
            } => format!(
                "O_DIRECT {} QD{depth} x {}K",
                if *fixed { "registered" } else { "unregistered" },
                chunk >> 10
            ),
            Job::Fio {
                depth,
                chunk,
                label,
                ..
            } => format!("fio {label} QD{depth} x {}K", chunk >> 10),
        }
    }
}

fn fio_present() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Median, min, max of GiB/s samples.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let size = std::fs::metadata(&cli.file)?.len();
    let mut jobs = Vec::new();
    let sweep: Vec<(u32, usize)> = if cli.quick {
        vec![(32, 1 << 20)]
    } else {
        vec![
            (16, 1 << 20),
            (32, 1 << 20),
            (64, 1 << 20),
            (32, 256 << 10),
            (32, 4 << 20),
            (8, 4 << 20),
        ]
    };
    for &(depth, chunk) in &sweep {
        jobs.push(Job::Ours {
            depth,
            chunk,
            fixed: true,
        });
    }
    jobs.push(Job::Ours {
        depth: 32,
        chunk: 1 << 20,
        fixed: false,
    });
    let have_fio = fio_present();
    if have_fio {
        jobs.push(Job::Fio {
            depth: 32,
            chunk: 1 << 20,
            extra: &["--fixedbufs"],
            label: "--fixedbufs",
        });
        jobs.push(Job::Fio {
            depth: 32,
            chunk: 1 << 20,
            extra: &["--fixedbufs", "--iomem=mmapshared"],
            label: "--fixedbufs --iomem=mmapshared",
        });
    }
    println!(
        "{} ({} MiB), cold, {} rounds, order rotated; load avg {}",
        cli.file.display(),
        size >> 20,
        cli.rounds,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if !have_fio {
        println!(
            "fio not installed (tools/install-deps installs it): no outside reference in this run"
        );
    }
    let gib = size as f64 / (1u64 << 30) as f64;
    let mut res: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    for round in 0..cli.rounds as usize {
        for k in 0..jobs.len() {
            let i = (k + round) % jobs.len();
            drop_cache(&cli.file)?;
            let bw = match &jobs[i] {
                Job::Ours {
                    depth,
                    chunk,
                    fixed,
                } => gib / direct_read(&cli.file, size, *depth, *chunk, *fixed)?.as_secs_f64(),
                Job::Fio {
                    depth,
                    chunk,
                    extra,
                    ..
                } => fio(&cli.file, size, *depth, *chunk, extra)? / (1u64 << 30) as f64,
            };
            eprintln!("round {round} {:<44} {bw:.2} GiB/s", jobs[i].name());
            res[i].push(bw);
        }
    }
    println!(
        "{:<44} {:>8} {:>16} {:>7}",
        "job", "median", "min..max GiB/s", "spread"
    );
    let mut best: Option<(usize, f64)> = None;
    let mut best_fio: Option<(usize, f64)> = None;
    for (i, j) in jobs.iter().enumerate() {
        let (med, lo, hi) = stats(&res[i]);
        let spread = hi / lo - 1.0;
        println!(
            "{:<44} {med:>8.2} {:>16} {:>6.0}%{}",
            j.name(),
            format!("{lo:.2}..{hi:.2}"),
            spread * 100.0,
            if spread > SPREAD_WARN {
                "  (spread too wide)"
            } else {
                ""
            }
        );
        let slot = match j {
            Job::Ours { fixed: true, .. } => &mut best,
            Job::Fio { .. } => &mut best_fio,
            _ => continue,
        };
        if slot.is_none_or(|(_, b)| med > b) {
            *slot = Some((i, med));
        }
    }
    if let Some((i, med)) = best {
        println!(
            "device limit: {med:.2} GiB/s ({}, best median of the sweep)",
            jobs[i].name()
        );
        if let Some((f, fmed)) = best_fio {
            println!(
                "fio, same minutes: {fmed:.2} GiB/s ({}); our limit / fio = {:.2}",
                jobs[f].name(),
                med / fmed
            );
        }
    }
    Ok(())
}
