//! What huge pages save: faulting and zeroing a buffer, and a whole engine load, with 4 KiB
//! shmem pages vs shmem THP vs hugetlb, interleaved round by round (order rotated), wall and
//! CPU time (this process: user + sys, every thread incl. the populate helper and io-wq).
//!
//!     cargo run --release -p dmabuf_loader --example page_cost -- FILE [SIZE_MIB] [ROUNDS]
//!
//! THP needs /sys/kernel/mm/transparent_hugepage/shmem_enabled at `advise` (or `always`),
//! hugetlb free pages in /sys/kernel/mm/hugepages; a policy the machine cannot serve falls
//! back and the page-size column shows what the buffer really got.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dmabuf_loader::HugePages;
use dmabuf_loader::*;
use nix::sys::resource::{getrusage, UsageWho};

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let file = PathBuf::from(args.get(1).expect("FILE"));
    let size: u64 = args.get(2).map_or(1024, |s| s.parse().unwrap()) << 20;
    let rounds: usize = args.get(3).map_or(5, |s| s.parse().unwrap());
    dmabuf_loader_bench::ensure_file(&file, size)?;
    let policies = [HugePages::Off, HugePages::Thp, HugePages::Hugetlb];
    // The same with every page faulted in before the I/O: "I/O alone" = total - alloc.
    let prefault: Vec<Loader> = policies
        .iter()
        .map(|&p| {
            Loader::new(Config {
                huge_pages: p,
                alloc_strategy: AllocStrategy::Prefault,
                ..Default::default()
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut io_alone = vec![Vec::new(); policies.len()];
    let loaders: Vec<Loader> = policies
        .iter()
        .map(|&p| {
            Loader::new(Config {
                huge_pages: p,
                ..Default::default()
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let gib = size as f64 / (1u64 << 30) as f64;
    // [policy][fault wall, fault cpu, cold wall, cold cpu, warm wall, warm cpu]
    let mut m = vec![vec![Vec::new(); 6]; policies.len()];
    let mut page = vec![(0u64, 0u64); policies.len()];
    for round in 0..rounds {
        for k in 0..policies.len() {
            let i = (k + round) % policies.len();
            let l = &loaders[i];
            // Fault + zero only.
            let (c0, t0) = (cpu(), Instant::now());
            let buf = l.allocate("memfd", size, "page-cost")?;
            buf.populate()?;
            let (wall, c) = (t0.elapsed(), cpu() - c0);
            page[i].0 = buf.page_size();
            eprintln!(
                "round {round} {:?} fault+zero {:.0} ms cpu {:.0} ms, {} KiB pages",
                policies[i],
                wall.as_secs_f64() * 1e3,
                c.as_secs_f64() * 1e3,
                page[i].0 >> 10
            );
            drop(buf);
            m[i][0].push(wall.as_secs_f64() / gib);
            m[i][1].push(c.as_secs_f64() / gib);
            // Whole engine load, cold then warm.
            for (j, warm) in [(2, false), (4, true)] {
                if warm {
                    dmabuf_loader_bench::warm_cache(&file)?;
                } else {
                    dmabuf_loader_bench::drop_cache(&file)?;
                }
                let f = File::open(&file)?;
                let req = LoadRequest {
                    heap: Some("memfd".into()),
                    ..Default::default()
                };
                let (c0, t0) = (cpu(), Instant::now());
                let loaded = l.load(f.as_fd(), &req, &LoadControl::default())?;
                let (wall, c) = (t0.elapsed(), cpu() - c0);
                page[i].1 = loaded.page_size;
                eprintln!(
                    "round {round} {:?} {} {:?} {:.0} ms cpu {:.0} ms, {} KiB pages",
                    policies[i],
                    if warm { "warm" } else { "cold" },
                    loaded.io_path,
                    wall.as_secs_f64() * 1e3,
                    c.as_secs_f64() * 1e3,
                    loaded.page_size >> 10
                );
                drop(loaded);
                m[i][j].push(wall.as_secs_f64() / gib);
                m[i][j + 1].push(c.as_secs_f64() / gib);
            }
            // Warm, pages prefaulted: the I/O alone.
            dmabuf_loader_bench::warm_cache(&file)?;
            let f = File::open(&file)?;
            let req = LoadRequest {
                heap: Some("memfd".into()),
                ..Default::default()
            };
            let l = prefault[i].load(f.as_fd(), &req, &LoadControl::default())?;
            io_alone[i].push((l.total_time - l.alloc_time).as_secs_f64() / gib);
        }
    }
    println!("{size} bytes, {rounds} rounds, medians in s per GiB (spread min..max in brackets)");
    println!(
        "{:<9} {:>10} {:>26} {:>26} {:>26} {:>26} {:>26} {:>26}",
        "policy",
        "pages",
        "fault+zero wall",
        "fault+zero cpu",
        "cold load wall",
        "cold load cpu",
        "warm load wall",
        "warm load cpu"
    );
    for (i, p) in policies.iter().enumerate() {
        let cells: Vec<String> = m[i]
            .iter_mut()
            .map(|v| {
                let (lo, hi) = (
                    v.iter().cloned().fold(f64::MAX, f64::min),
                    v.iter().cloned().fold(0.0, f64::max),
                );
                format!("{:.3} [{:.3}..{:.3}]", median(v), lo, hi)
            })
            .collect();
        println!(
            "{:<9} {:>4}K/{:>4}K {:>26} {:>26} {:>26} {:>26} {:>26} {:>26}",
            format!("{p:?}"),
            page[i].0 >> 10,
            page[i].1 >> 10,
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5]
        );
    }
    for (i, p) in policies.iter().enumerate() {
        let io = median(&mut io_alone[i]);
        let warm = median(&mut m[i][4]);
        println!(
            "{p:?}: warm I/O alone {io:.3} s/GiB, warm total {warm:.3} s/GiB: total / I/O alone {:.2}x (target <= 1.15 with huge pages)",
            warm / io
        );
    }
    Ok(())
}
