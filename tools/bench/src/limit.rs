//! The honest device limit: O_DIRECT io_uring reads with REGISTERED buffers (READ_FIXED, one
//! slot per read in flight) into pre-faulted anonymous memory, at one or several queue depth x
//! chunk sizes, and fio's `--fixedbufs` jobs where fio is installed, each run cold as one more
//! contender of the caller's rotation. The limit is the best median of our registered jobs
//! and fio's, named with the job that gave it: on a VM our loop can read slower than fio's
//! identical job (vCPU wake-ups), and a reference under what fio shows would flatter every
//! ratio. The old unregistered row is kept for comparison only (it sat ~28% under fio).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::measure::{cpu_children, cpu_self, gib_s, Spread, GIB};

/// One way of reading the file as fast as the device allows.
#[derive(Clone, Debug, PartialEq)]
pub enum LimitJob {
    /// Our reader (the core's `device_read`): `fixed` = registered buffers.
    Ours {
        depth: u32,
        chunk: usize,
        fixed: bool,
    },
    /// fio `--fixedbufs`; `shared` adds `--iomem=mmapshared` (shmem, like a memfd).
    Fio {
        depth: u32,
        chunk: usize,
        shared: bool,
    },
}

impl LimitJob {
    pub fn name(&self) -> String {
        match self {
            LimitJob::Ours {
                depth,
                chunk,
                fixed,
            } => format!(
                "limit: O_DIRECT {} QD{depth} x {}K",
                if *fixed { "registered" } else { "unregistered" },
                chunk >> 10
            ),
            LimitJob::Fio {
                depth,
                chunk,
                shared,
            } => format!(
                "limit: fio --fixedbufs{} QD{depth} x {}K",
                if *shared { " mmapshared" } else { "" },
                chunk >> 10
            ),
        }
    }

    /// Whether the job counts for the limit (the unregistered row is only a comparison).
    pub fn is_reference(&self) -> bool {
        !matches!(self, LimitJob::Ours { fixed: false, .. })
    }

    /// One cold run (the caller drops the cache first): (GiB/s, CPU seconds of the run: this
    /// process, or fio).
    pub fn run(&self, path: &Path, size: u64) -> Result<(f64, f64)> {
        let (c_self, c_kids) = (cpu_self(), cpu_children());
        let bw = match self {
            LimitJob::Ours {
                depth,
                chunk,
                fixed,
            } => {
                let t = Instant::now();
                dmabuf_loader::device_read(path, size, *depth, *chunk, *fixed)?;
                gib_s(size, t.elapsed().as_secs_f64())
            }
            LimitJob::Fio {
                depth,
                chunk,
                shared,
            } => fio(path, size, *depth, *chunk, *shared)? / GIB,
        };
        Ok((bw, cpu_self() - c_self + cpu_children() - c_kids))
    }
}

/// The jobs of a run: registered QD 32 x 1 MiB (with `sweep` also QD 16/64 x 1 MiB, QD 32 x
/// 256 KiB / 4 MiB, QD 8 x 4 MiB), the unregistered QD 32 x 1 MiB row, and fio's two jobs
/// when fio is installed.
pub fn jobs(sweep: bool) -> Vec<LimitJob> {
    let mut shapes = vec![(32u32, 1usize << 20)];
    if sweep {
        shapes.extend([
            (16, 1 << 20),
            (64, 1 << 20),
            (32, 256 << 10),
            (32, 4 << 20),
            (8, 4 << 20),
        ]);
    }
    let mut v: Vec<LimitJob> = shapes
        .into_iter()
        .map(|(depth, chunk)| LimitJob::Ours {
            depth,
            chunk,
            fixed: true,
        })
        .collect();
    v.push(LimitJob::Ours {
        depth: 32,
        chunk: 1 << 20,
        fixed: false,
    });
    if fio_present() {
        for shared in [false, true] {
            v.push(LimitJob::Fio {
                depth: 32,
                chunk: 1 << 20,
                shared,
            });
        }
    }
    v
}

pub fn fio_present() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// fio's read bandwidth (bytes/s) for the job.
pub fn fio(path: &Path, size: u64, depth: u32, chunk: usize, shared: bool) -> Result<f64> {
    let mut cmd = Command::new("fio");
    cmd.arg("--name=ref")
        .arg(format!("--filename={}", path.display()))
        .args([
            "--rw=read",
            "--direct=1",
            "--ioengine=io_uring",
            "--invalidate=1",
            "--fixedbufs",
        ])
        .arg(format!("--bs={chunk}"))
        .arg(format!("--iodepth={depth}"))
        .arg(format!("--size={size}"))
        .args(["--output-format=terse", "--terse-version=3"]);
    if shared {
        cmd.arg("--iomem=mmapshared");
    }
    let out = cmd.output().context("running fio")?;
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

/// The limit of a run, and who gave it.
#[derive(Clone, Debug, Default)]
pub struct Limit {
    pub gib_s: f64,
    pub by: String,
    /// Best median of our registered jobs, and fio's best median (for "ours / fio").
    pub ours: Option<(f64, String)>,
    pub fio: Option<(f64, String)>,
}

/// The best median among the reference jobs (`medians[i]` belongs to `jobs[i]`).
pub fn pick(jobs: &[LimitJob], medians: &[Option<Spread>]) -> Limit {
    let mut l = Limit::default();
    for (j, m) in jobs.iter().zip(medians) {
        let Some(m) = m else { continue };
        if !j.is_reference() {
            continue;
        }
        let slot = if matches!(j, LimitJob::Fio { .. }) {
            &mut l.fio
        } else {
            &mut l.ours
        };
        if slot.as_ref().is_none_or(|(b, _)| m.median > *b) {
            *slot = Some((m.median, j.name()));
        }
        if m.median > l.gib_s {
            l.gib_s = m.median;
            l.by = j.name();
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_best_reference_median_not_the_unregistered_row() {
        let jobs = [
            LimitJob::Ours {
                depth: 32,
                chunk: 1 << 20,
                fixed: true,
            },
            LimitJob::Ours {
                depth: 32,
                chunk: 1 << 20,
                fixed: false,
            },
            LimitJob::Fio {
                depth: 32,
                chunk: 1 << 20,
                shared: false,
            },
        ];
        let m = |v: f64| Spread::of(&[v]);
        let l = pick(&jobs, &[m(1.0), m(3.0), m(1.5)]);
        assert_eq!(l.gib_s, 1.5);
        assert!(l.by.contains("fio"), "{}", l.by);
        assert_eq!(l.ours.unwrap().0, 1.0);
        let l = pick(&jobs, &[m(2.0), None, None]);
        assert_eq!((l.gib_s, l.fio.is_none()), (2.0, true));
    }
}
