//! The `dmabuf-loader` binary against a service running in this test process on a unix
//! socket (the same library code the `dmabuf-loader-service` binary runs): load with
//! --verify/--json/--async/--checksum/--read-only, heaps, info, bench, and the exit status and
//! JSON of a refused request.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dmabuf_loader_binder::{ServerHandle, Transport, SERVICE_NAME};
use dmabuf_loader_service::config::ConfigOverrides;
use dmabuf_loader_service::DmabufLoaderService;
use serde_json::Value;

struct Fixture {
    dir: tempfile::TempDir,
    socket: PathBuf,
    _server: ServerHandle,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let socket = dir.path().join("svc.sock");
    let config = ConfigOverrides {
        max_load_bytes: Some(64 << 20),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let t = Transport::Unix {
        path: socket.clone(),
    };
    let service = DmabufLoaderService::new(config, t.describe()).unwrap();
    let server = dmabuf_loader_binder::serve(&t, SERVICE_NAME, &service.into_binder(), 6).unwrap();
    Fixture {
        dir,
        socket,
        _server: server,
    }
}

fn run(f: &Fixture, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmabuf-loader"))
        .arg("--socket")
        .arg(&f.socket)
        .args(args)
        .output()
        .expect("running dmabuf-loader")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn load_verify_json_reports_the_facts() {
    let f = start();
    let p = file(f.dir.path(), "a.bin", 1_000_003);
    let o = run(
        &f,
        &[
            "load",
            p.to_str().unwrap(),
            "--verify",
            "--checksum",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["data_length"], 1_000_003);
    assert_eq!(v["buffer_size"].as_i64().unwrap() % 4096, 0);
    assert_eq!(v["heap"], "memfd");
    assert_eq!(v["buffer_kind"], "MEMFD");
    assert_eq!(v["is_dmabuf"], false, "this host has no dma-buf source");
    assert_eq!(v["verified"], true);
    assert!(v["checksum_xxh3"].as_str().unwrap().starts_with("0x"));
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["round_trip_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn load_async_range_read_only_text_output() {
    let f = start();
    let p = file(f.dir.path(), "b.bin", 3 << 20);
    let o = run(
        &f,
        &[
            "load",
            p.to_str().unwrap(),
            "--async",
            "--offset",
            "5",
            "--length",
            "2000000",
            "--read-only",
            "--verify",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("range       [5, 2000005)"), "{out}");
    assert!(out.contains("read-only"), "{out}");
    assert!(out.contains("verify      OK"), "{out}");
    assert!(out.contains("throughput"), "{out}");
}

#[test]
fn a_refused_request_exits_3_with_the_error_code() {
    let f = start();
    let big = file(f.dir.path(), "big.bin", 65 << 20);
    let o = run(&f, &["load", big.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v = json(&o);
    assert_eq!(v["error"]["name"], "TOO_LARGE");
    assert_eq!(v["error"]["code"], 6);
    let small = file(f.dir.path(), "s.bin", 10);
    let o = run(&f, &["load", small.to_str().unwrap(), "--heap", "nope"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("UNKNOWN_HEAP (7)"));
    let o = run(
        &f,
        &["load", small.to_str().unwrap(), "--offset", "11", "--async"],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("INVALID_RANGE"));
}

#[test]
fn heaps_and_info() {
    let f = start();
    let o = run(&f, &["heaps", "--json"]);
    assert!(o.status.success());
    let v = json(&o);
    assert_eq!(v[0]["name"], "memfd");
    let o = run(&f, &["info", "--json"]);
    assert!(o.status.success());
    let v = json(&o);
    assert_eq!(v["interface_version"], 1);
    assert_eq!(v["interface_hash"], v["client_interface_hash"]);
    assert_eq!(v["max_load_bytes"], 64 << 20);
    let o = run(&f, &["info"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("interface       version 1"));
}

#[test]
fn bench_runs_both_modes() {
    let f = start();
    let p = file(f.dir.path(), "c.bin", 8 << 20);
    let o = run(
        &f,
        &[
            "bench",
            p.to_str().unwrap(),
            "--rounds",
            "1",
            "--no-baselines",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert!(v["service_vs_engine_best"].as_f64().unwrap() > 0.0, "{v}");
    let small = file(f.dir.path(), "d.bin", 4096);
    let o = run(
        &f,
        &[
            "bench",
            small.to_str().unwrap(),
            "--latency",
            "--iterations",
            "50",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert!(v["load_file"]["p50_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["bare_fd_call"]["p50_us"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn no_service_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dmabuf-loader"))
        .args([
            "--socket",
            dir.path().join("none.sock").to_str().unwrap(),
            "info",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is dmabuf-loader-service listening"), "{err}");
}
