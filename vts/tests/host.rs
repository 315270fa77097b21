//! The host run of the VTS suite (part of `cargo test --workspace`): the real service runs in
//! this process (the dmabuf_loader_service library, default limits) on a unix socket, and
//! VtsHalDmabufLoaderTargetTest runs against it as a child process, as it would on a device.
//! Afterwards the service must hold no more fds than before the suite: every buffer, file,
//! callback and session the 61 cases caused was released.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use dmabuf_loader_binder::{Transport, SERVICE_NAME};
use dmabuf_loader_service::config::ServiceConfig;
use dmabuf_loader_service::DmabufLoaderService;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Scratch space on a real disk when possible: VTS_DMABUF_LOADER_TMPDIR, else Cargo's
/// per-target tmp dir (under target/, not a tmpfs /tmp).
fn scratch_parent() -> PathBuf {
    std::env::var_os("VTS_DMABUF_LOADER_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

#[test]
fn vts_suite_passes_against_the_host_service_without_leaking_fds() {
    let parent = scratch_parent();
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("vts-host.")
        .tempdir_in(&parent)
        .unwrap();
    let sock = dir.path().join("loader.sock");

    let config = ServiceConfig::defaults();
    let transport = Transport::Unix { path: sock.clone() };
    let service = DmabufLoaderService::new(config.clone(), transport.describe()).unwrap();
    let shutdown = service.shutdown_handle();
    let server = dmabuf_loader_binder::serve(
        &transport,
        SERVICE_NAME,
        &service.into_binder(),
        config.max_concurrent_loads + 2,
    )
    .unwrap();
    let fds_before = open_fds();

    let status = Command::new(env!("CARGO_BIN_EXE_VtsHalDmabufLoaderTargetTest"))
        .arg("--socket")
        .arg(&sock)
        .arg("--tmpdir")
        .arg(dir.path())
        .status()
        .expect("run VtsHalDmabufLoaderTargetTest");
    assert!(
        status.success(),
        "VtsHalDmabufLoaderTargetTest failed: {status}"
    );

    // The child's sessions end when it exits; the server notices asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds_after = open_fds();
    while fds_after > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        fds_after = open_fds();
    }
    assert!(
        fds_after <= fds_before,
        "the service holds {fds_after} fds after the suite, {fds_before} before it"
    );
    assert!(
        shutdown.shutdown(Duration::from_secs(10)),
        "loads still running at shutdown"
    );
    drop(server);
}
