//! Issue 16's targets, each with the figure this run measured and met / not met. A target
//! whose figure is missing (no service binary, no root for cgroups, a row that failed) is
//! printed as "not measured" with the reason, never as met.

use std::io::Write;

use crate::pressure::{median_wall, PressureReport};
use crate::{BenchReport, Role, Runs};

/// One target's verdict.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub target: String,
    pub figure: String,
    /// `None`: not measured (the figure says why).
    pub met: Option<bool>,
}

impl Verdict {
    fn new(target: &str, figure: String, met: Option<bool>) -> Verdict {
        Verdict {
            target: target.into(),
            figure,
            met,
        }
    }
    fn missing(target: &str, why: &str) -> Verdict {
        Verdict::new(target, format!("not measured: {why}"), None)
    }
}

/// The latency target's inputs (from `dmabuf-loader bench --latency --pin`).
#[derive(Clone, Debug)]
pub struct Latency {
    pub load_p50_us: f64,
    pub bare_p50_us: f64,
    pub transport: String,
}

fn med(v: &[f64]) -> Option<f64> {
    Runs::median(v)
}

/// Every target of issue 16 from what this run measured.
pub fn evaluate(
    b: &BenchReport,
    pressure: Result<&PressureReport, &str>,
    latency: Result<&Latency, &str>,
) -> Vec<Verdict> {
    let mut v = Vec::new();
    let lim = b.limit.gib_s;
    let svc = b.row(&Role::Service);
    let sq = b.row(&Role::StatusQuo);
    let no_svc = b
        .service_note
        .clone()
        .unwrap_or_else(|| "the service row failed".into());
    let huge = svc.map_or(0, |s| s.cold.page_size) > 4096;
    match (
        svc.and_then(|s| s.cold.gib()),
        sq.and_then(|s| s.cold.gib()),
    ) {
        (Some(s), Some(q)) if lim > 0.0 => {
            v.push(Verdict::new(
                "cold service >= 0.95x device limit",
                format!(
                    "{:.2}x ({:.2} / {:.2} GiB/s)",
                    s.median / lim,
                    s.median,
                    lim
                ),
                Some(s.median / lim >= 0.95),
            ));
            v.push(Verdict::new(
                "cold service >= 2.5x status quo",
                format!(
                    "{:.2}x ({:.2} / {:.2} GiB/s)",
                    s.median / q.median,
                    s.median,
                    q.median
                ),
                Some(s.median / q.median >= 2.5),
            ));
        }
        _ => {
            v.push(Verdict::missing(
                "cold service >= 0.95x device limit",
                &no_svc,
            ));
            v.push(Verdict::missing("cold service >= 2.5x status quo", &no_svc));
        }
    }
    match (
        svc.and_then(|s| med(&s.cold.cpu_per_gib)),
        sq.and_then(|s| med(&s.cold.cpu_per_gib)),
    ) {
        (Some(c), Some(q)) => {
            let pages = svc.map_or(0, |s| s.cold.page_size) >> 10;
            v.push(if huge {
                Verdict::new(
                    "cold CPU <= 0.25 s/GiB with huge pages (client + service)",
                    format!("{c:.3} s/GiB ({pages} KiB pages)"),
                    Some(c <= 0.25),
                )
            } else {
                Verdict::new(
                    "cold CPU <= 0.25 s/GiB with huge pages (client + service)",
                    format!(
                        "{c:.3} s/GiB, but the buffers got 4 KiB pages (no pool / shmem THP here)"
                    ),
                    None,
                )
            });
            v.push(Verdict::new(
                "cold CPU <= 0.2x the status quo's",
                format!("{:.2}x ({c:.3} / {q:.3} s/GiB)", c / q),
                Some(c / q <= 0.2),
            ));
        }
        _ => {
            v.push(Verdict::missing(
                "cold CPU <= 0.25 s/GiB with huge pages",
                &no_svc,
            ));
            v.push(Verdict::missing(
                "cold CPU <= 0.2x the status quo's",
                &no_svc,
            ));
        }
    }
    let eng = b.row(&Role::Engine);
    let io = b.row(&Role::EngineIoAlone);
    match (eng, io) {
        (Some(e), Some(i)) if !e.warm.total_s.is_empty() && !i.warm.total_s.is_empty() => {
            let io_alone: Vec<f64> = i
                .warm
                .total_s
                .iter()
                .zip(&i.warm.alloc_s)
                .map(|(t, a)| t - a)
                .collect();
            let (t, a) = (med(&e.warm.total_s).unwrap(), med(&io_alone).unwrap());
            let pages = e.warm.page_size >> 10;
            v.push(Verdict::new(
                "warm total-with-allocation <= 1.15x I/O alone, huge pages",
                format!(
                    "{:.2}x ({:.0} / {:.0} ms, {pages} KiB pages)",
                    t / a,
                    t * 1e3,
                    a * 1e3
                ),
                (e.warm.page_size > 4096).then_some(t / a <= 1.15),
            ));
        }
        _ => v.push(Verdict::missing(
            "warm total-with-allocation <= 1.15x I/O alone, huge pages",
            "no warm rounds",
        )),
    }
    let direct_left: Vec<f64> = [svc, eng]
        .into_iter()
        .flatten()
        .flat_map(|r| r.cold.cache_left.iter().copied())
        .collect();
    match direct_left.iter().copied().reduce(f64::max) {
        Some(worst) => v.push(Verdict::new(
            "page cache left by a direct-path load < 1%",
            format!(
                "worst {:.2}% (service + engine cold runs; status quo {:.0}%)",
                worst * 100.0,
                sq.and_then(|s| med(&s.cold.cache_left)).unwrap_or(0.0) * 100.0
            ),
            Some(worst < 0.01),
        )),
        None => v.push(Verdict::missing(
            "page cache left by a direct-path load < 1%",
            "no cachestat on this kernel",
        )),
    }
    match pressure {
        Ok(p) => pressure_verdicts(p, &mut v),
        Err(why) => {
            for t in [
                "peak added memory <= 1.05x the buffer",
                "cgroup buffer + 25%: service <= 1.2x unconstrained",
                "stressor: service <= 1.2x unconstrained",
                "cannot fit: ALLOCATION_FAILED, no OOM kill",
            ] {
                v.push(Verdict::missing(t, why));
            }
        }
    }
    match b.concurrent() {
        Some(c) if c.cold.gib().is_some() && lim > 0.0 => {
            let g = c.cold.gib().unwrap();
            let Role::Concurrent { n, each } = c.role else {
                unreachable!()
            };
            v.push(Verdict::new(
                &format!("{n} x {} MiB concurrent >= 0.9x device limit", each >> 20),
                format!(
                    "{:.2}x ({:.2} / {lim:.2} GiB/s){}",
                    g.median / lim,
                    g.median,
                    if c.cold.failures.is_empty() {
                        String::new()
                    } else {
                        format!("; {} batch(es) had refused loads", c.cold.failures.len())
                    }
                ),
                Some(g.median / lim >= 0.9 && c.cold.failures.is_empty()),
            ));
            let r = med(&c.cold.rss_per_load).unwrap_or(0.0) / (1 << 20) as f64;
            v.push(Verdict::new(
                "service RSS growth <= 8 MiB per load in flight",
                format!("{r:.2} MiB per load"),
                Some(r <= 8.0),
            ));
        }
        Some(c) if !c.cold.failures.is_empty() => {
            v.push(Verdict::new(
                "concurrent loads >= 0.9x device limit",
                format!("every batch failed: {}", c.cold.failures[0]),
                Some(false),
            ));
        }
        _ => v.push(Verdict::missing(
            "8 x 128 MiB concurrent >= 0.9x device limit",
            if svc.is_some() {
                "not run (--concurrent 0)"
            } else {
                &no_svc
            },
        )),
    }
    match latency {
        Ok(l) => {
            let r = l.load_p50_us / l.bare_p50_us;
            v.push(Verdict::new(
                "4 KiB loadFile p50 <= 2x bare one-fd call, pinned",
                format!(
                    "{r:.2}x ({:.1} / {:.1} us, {})",
                    l.load_p50_us, l.bare_p50_us, l.transport
                ),
                Some(r <= 2.0),
            ));
        }
        Err(why) => v.push(Verdict::missing(
            "4 KiB loadFile p50 <= 2x bare one-fd call, pinned",
            why,
        )),
    }
    v
}

fn pressure_verdicts(p: &PressureReport, v: &mut Vec<Verdict>) {
    let (Some(s), q) = (p.contender("service"), p.contender("status-quo")) else {
        v.push(Verdict::missing(
            "memory pressure targets",
            "the service did not run",
        ));
        return;
    };
    let size = p.size as f64;
    let peak = p.modes[0].runs[s].iter().map(|o| o.peak).max().unwrap_or(0) as f64 / size;
    let sq_peak = q.map_or(0.0, |q| {
        p.modes[0].runs[q].iter().map(|o| o.peak).max().unwrap_or(0) as f64 / size
    });
    v.push(Verdict::new(
        "peak added memory <= 1.05x the buffer",
        format!("service {peak:.3}x (status quo {sq_peak:.2}x)"),
        Some(peak <= 1.05 && peak > 0.0),
    ));
    let ok = |m: usize| p.modes[m].runs[s].iter().all(|o| o.result == "ok");
    let sq_ratio = |m: usize| {
        q.map_or(String::new(), |q| {
            format!(
                "; status quo {:.2}x ({:.0} ms)",
                p.slowdown(m, q),
                median_wall(&p.modes[m].runs[q]).as_secs_f64() * 1e3
            )
        })
    };
    let huge_note = if p.modes[1].runs[s].iter().any(|o| o.hugetlb > 0) {
        " [hugetlb pool: not charged to the cgroup]"
    } else {
        ""
    };
    v.push(Verdict::new(
        "cgroup buffer + 25%: service <= 1.2x unconstrained",
        format!(
            "{:.2}x ({:.0} / {:.0} ms){}{}",
            p.slowdown(1, s),
            median_wall(&p.modes[1].runs[s]).as_secs_f64() * 1e3,
            median_wall(&p.modes[0].runs[s]).as_secs_f64() * 1e3,
            sq_ratio(1),
            if ok(1) { "" } else { "; some loads FAILED" },
        ) + huge_note,
        Some(ok(1) && p.slowdown(1, s) <= 1.2),
    ));
    if p.modes.len() > 3 {
        v.push(Verdict::new(
            "stressor: service <= 1.2x unconstrained",
            format!("{:.2}x{}", p.slowdown(3, s), sq_ratio(3)),
            Some(ok(3) && p.slowdown(3, s) <= 1.2),
        ));
    } else {
        v.push(Verdict::missing(
            "stressor: service <= 1.2x unconstrained",
            "not run (--stress)",
        ));
    }
    let tight = &p.modes[2];
    if tight.runs[s]
        .iter()
        .any(|o| o.hugetlb > 0 && o.result == "ok")
    {
        v.push(Verdict::new(
            "cannot fit: ALLOCATION_FAILED, no OOM kill",
            "the service's buffer came from the hugetlb pool, which no memory cgroup is charged \
             for: it did fit, and loaded (run without a pool to test the refusal)"
                .into(),
            None,
        ));
        return;
    }
    let ooms: u64 = tight.runs.iter().flatten().map(|o| o.oom_kills).sum();
    let refused = tight.runs[s]
        .iter()
        .all(|o| o.result.starts_with("ALLOCATION_FAILED"));
    let eng_refused = p.contender("engine").is_none_or(|e| {
        tight.runs[e]
            .iter()
            .all(|o| o.result.starts_with("AllocationFailed"))
    });
    let sq_fate = q.map_or(String::new(), |q| {
        let mut r: Vec<String> = tight.runs[q].iter().map(|o| o.result.clone()).collect();
        r.dedup();
        format!("; status quo: {}", r.join(" | "))
    });
    let eng_ooms: u64 = tight
        .runs
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != q)
        .flat_map(|(_, r)| r.iter().map(|o| o.oom_kills))
        .sum();
    v.push(Verdict::new(
        "cannot fit: ALLOCATION_FAILED, no OOM kill",
        format!(
            "service {}, engine {}, OOM kills of ours {eng_ooms} (all contenders {ooms}){sq_fate}",
            if refused {
                "ALLOCATION_FAILED"
            } else {
                "NOT refused"
            },
            if eng_refused {
                "AllocationFailed"
            } else {
                "NOT refused"
            },
        ),
        Some(refused && eng_refused && eng_ooms == 0),
    ));
}

pub fn print(v: &[Verdict], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "\nTARGETS (issue 16)")?;
    for t in v {
        let m = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "n/a",
        };
        writeln!(out, "  {:<8} {:<58} {}", m, t.target, t.figure)?;
    }
    Ok(())
}
