//! Warm loads (file in the page cache: the copy path) with the buffer's allocation overlapped
//! three ways, per page policy, interleaved round by round (`measure::order`: the start rotates, every other round backwards):
//! `Overlap` (the default: a helper thread populates the buffer back to front while the
//! copies fault it from the front), `OnDemand` (the copies fault every page themselves) and
//! `Prefault` (everything faulted first: its `total - alloc` is the copy alone). Prints
//! medians [min..max] of wall time and CPU (this process, every thread) and total / copy alone,
//! the ratio issue 16 wants <= 1.15 with huge pages.
//!
//!     cargo run --release -p dmabuf_loader_bench --example warm_overlap -- FILE [SIZE_MIB] [ROUNDS]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use dmabuf_loader::*;
use dmabuf_loader_bench::measure::{cpu_self, Spread};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let file = PathBuf::from(args.get(1).expect("FILE"));
    let size: u64 = args.get(2).map_or(1024, |s| s.parse().unwrap()) << 20;
    let rounds: usize = args.get(3).map_or(5, |s| s.parse().unwrap());
    dmabuf_loader_bench::ensure_file(&file, size)?;
    dmabuf_loader_bench::warm_cache(&file)?;
    let mut jobs = Vec::new();
    for pages in [HugePages::Hugetlb, HugePages::Thp, HugePages::Off] {
        for strat in [
            AllocStrategy::Overlap,
            AllocStrategy::OnDemand,
            AllocStrategy::Prefault,
        ] {
            let l = Loader::new(Config {
                huge_pages: pages,
                alloc_strategy: strat,
                ..Config::default()
            })?;
            jobs.push((
                format!("{pages:?} {strat:?}"),
                l,
                vec![],
                vec![],
                vec![],
                0u64,
            ));
        }
    }
    // WARM_OVERLAP_ONLY="Hugetlb Overlap": one job only (to profile it).
    if let Ok(only) = std::env::var("WARM_OVERLAP_ONLY") {
        jobs.retain(|j| j.0 == only);
    }
    let n = jobs.len();
    let req = LoadRequest {
        heap: Some("memfd".into()),
        ..Default::default()
    };
    for r in 0..rounds {
        for k in 0..n {
            let (_, l, wall, cpu, io, ps) = &mut jobs[dmabuf_loader_bench::measure::order(k, r, n)];
            let f = File::open(&file)?;
            let c0 = cpu_self();
            let x = l.load(f.as_fd(), &req, &LoadControl::default())?;
            let t = x.total_time.as_secs_f64();
            *ps = x.page_size;
            io.push(t - x.alloc_time.as_secs_f64());
            drop(x);
            cpu.push(cpu_self() - c0);
            wall.push(t);
        }
    }
    println!(
        "warm, {} MiB, {rounds} rounds; load average {}",
        size >> 20,
        dmabuf_loader_bench::measure::loadavg()
    );
    let mut copy_alone = 0.0;
    for (name, _, wall, cpu, io, ps) in &jobs {
        let w = Spread::of(wall).unwrap();
        if name.ends_with("Prefault") {
            copy_alone = Spread::of(io).unwrap().median;
        }
        println!(
            "{name:<22} {:>5}K pages  wall {:>7.1} ms [{:.0}..{:.0}]  CPU {:>6.3} s{}",
            ps >> 10,
            w.median * 1e3,
            w.min * 1e3,
            w.max * 1e3,
            Spread::of(cpu).unwrap().median,
            if name.ends_with("Prefault") {
                format!("  copy alone {:.1} ms", copy_alone * 1e3)
            } else {
                String::new()
            }
        );
    }
    // total / copy alone per policy (each policy's own Prefault row).
    for c in jobs.chunks_exact(3) {
        let alone = Spread::of(&c[2].4).unwrap().median;
        println!(
            "{:<10} Overlap / copy alone {:.2}x, OnDemand / copy alone {:.2}x",
            c[0].0.split(' ').next().unwrap_or(""),
            Spread::of(&c[0].2).unwrap().median / alone,
            Spread::of(&c[1].2).unwrap().median / alone
        );
    }
    Ok(())
}
