//! A load inside a memory cgroup too small for its buffer fails with AllocationFailed at
//! once; nobody is OOM-killed. A load that fits the same cgroup succeeds. Real cgroups: needs
//! root and a memory controller (v1 or v2); skipped, saying so, where neither is available.
//!
//! The load runs in a child process (this test binary re-run with DMABUF_CG_CHILD set) that
//! joins the cgroup first: memory charges follow the process, not the thread.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use dmabuf_loader::*;

/// Creates a memory cgroup with `limit` bytes; None (and why) where that is impossible.
fn make_cgroup(name: &str, limit: u64) -> Result<(PathBuf, bool), String> {
    let v2 = Path::new("/sys/fs/cgroup");
    let ctrls = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    let (dir, is_v2, file) = if ctrls.split_whitespace().any(|c| c == "memory") {
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+memory");
        (v2.join(name), true, "memory.max")
    } else if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        (
            Path::new("/sys/fs/cgroup/memory").join(name),
            false,
            "memory.limit_in_bytes",
        )
    } else {
        return Err("no memory cgroup controller".into());
    };
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    if let Err(e) = std::fs::write(dir.join(file), limit.to_string()) {
        let _ = std::fs::remove_dir(&dir);
        return Err(format!("{file}: {e}"));
    }
    Ok((dir, is_v2))
}

fn oom_kills(dir: &Path, v2: bool) -> u64 {
    let f = if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    std::fs::read_to_string(dir.join(f))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Child side: join the cgroup, load the file, print the outcome.
#[test]
fn child_side() {
    let (Ok(cg), Ok(file)) = (
        std::env::var("DMABUF_CG_CHILD"),
        std::env::var("DMABUF_CG_FILE"),
    ) else {
        return; // only meaningful when run by the parent test
    };
    std::fs::write(Path::new(&cg).join("cgroup.procs"), "0").unwrap();
    // 4 KiB pages: hugetlb pages are not charged to a memory cgroup (v1 never; v2 only with
    // the memory_hugetlb_accounting mount option), so where the machine has a free hugetlb
    // pool the buffer rightly fits and this test would prove nothing.
    let loader = Loader::new(Config {
        huge_pages: HugePages::Off,
        ..Config::default()
    })
    .unwrap();
    let f = File::open(&file).unwrap();
    let req = LoadRequest {
        heap: Some("memfd".into()),
        ..Default::default()
    };
    match loader.load(f.as_fd(), &req, &LoadControl::default()) {
        Ok(l) => println!("OUTCOME ok {}", l.data_len),
        Err(e) => println!("OUTCOME err {:?} {e}", e.kind),
    }
}

#[test]
fn a_load_that_cannot_fit_the_cgroup_fails_cleanly() {
    let size: u64 = 96 << 20;
    let name = format!("dmabuf-loader-test-{}", std::process::id());
    let (cg, v2) = match make_cgroup(&name, size / 2) {
        Ok(x) => x,
        Err(why) => {
            eprintln!("skipped: cannot create a memory cgroup here ({why})");
            return;
        }
    };
    let dir =
        tempfile::tempdir_in(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")).unwrap();
    let path = dir.path().join("cg-file");
    let mut f = File::create(&path).unwrap();
    f.write_all(&vec![0x5a; size as usize]).unwrap();
    f.sync_all().unwrap();
    let run = |cgdir: &Path| {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_side", "--nocapture", "--test-threads=1"])
            .env("DMABUF_CG_CHILD", cgdir)
            .env("DMABUF_CG_FILE", &path)
            .output()
            .unwrap()
    };
    let out = run(&cg);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let kills = oom_kills(&cg, v2);
    // Now a limit the buffer fits in (buffer + 25% + the test binary's own few MiB).
    let limit_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    std::fs::write(cg.join(limit_file), (size * 5 / 4 + (16 << 20)).to_string()).unwrap();
    let out2 = run(&cg);
    let text2 = String::from_utf8_lossy(&out2.stdout).to_string();
    let kills2 = oom_kills(&cg, v2);
    let _ = std::fs::remove_dir(&cg);
    assert_eq!(out.status.signal(), None, "the child was killed: {text}");
    assert!(
        text.contains("OUTCOME err AllocationFailed") && text.contains("memory cgroup"),
        "{text}"
    );
    assert_eq!(kills, 0, "OOM kills in the cgroup");
    assert_eq!(
        out2.status.signal(),
        None,
        "killed with room to fit: {text2}"
    );
    assert!(text2.contains(&format!("OUTCOME ok {size}")), "{text2}");
    assert_eq!(kills2, 0);
}
