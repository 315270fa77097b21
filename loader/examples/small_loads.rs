//! N in-process loads of one (small) file: the core's share of a small load's latency, for
//! `strace -c -f` / `perf stat` (syscalls and instructions per load) and a p50.
//!
//!     cargo run --release -p dmabuf_loader --example small_loads -- FILE [N]

use std::fs::File;
use std::os::fd::AsFd;
use std::time::Instant;

use dmabuf_loader::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let file = File::open(args.get(1).expect("FILE"))?;
    let n: usize = args.get(2).map_or(1000, |s| s.parse().unwrap());
    let loader = Loader::new(Config::default())?;
    let req = LoadRequest::default();
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let l = loader.load(file.as_fd(), &req, &LoadControl::default())?;
        drop(l);
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{n} loads: p50 {:.1} us, p90 {:.1} us, min {:.1} us",
        us[n / 2],
        us[n * 9 / 10],
        us[0]
    );
    Ok(())
}
