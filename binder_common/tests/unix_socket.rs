//! The shared binder layer end to end on the host transport: a small IDmabufLoader served with
//! `serve` on a unix socket in this process, reached with `connect`, as the service and its
//! clients use them: fds both ways, a service-specific failure read back as a `CallError`, the
//! calling uid, the root-object fallback of `connect_unix`, and the death notification and
//! `is_alive` once the server stops.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::time::Duration;

use dmabuf_loader_binder::aidl::ErrorCode::ErrorCode;
use dmabuf_loader_binder::aidl::HeapInfo::HeapInfo;
use dmabuf_loader_binder::aidl::IDmabufLoader::{BnDmabufLoader, IDmabufLoader};
use dmabuf_loader_binder::aidl::ILoadCallback::ILoadCallback;
use dmabuf_loader_binder::aidl::ILoadTask::ILoadTask;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::aidl::ServiceInfo::ServiceInfo;
use dmabuf_loader_binder::{
    self as binder, BinderResult, CallError, Connection, Interface, ParcelFileDescriptor, Strong,
    Transport,
};

const NAME: &str = "vendor.dmabufloader.IDmabufLoader/probe";

/// loadFile echoes a dup of its fd, load refuses with TOO_LARGE, getHeaps names the caller.
struct Probe;

impl Interface for Probe {}

impl IDmabufLoader for Probe {
    fn loadFile(&self, fd: &ParcelFileDescriptor) -> BinderResult<ParcelFileDescriptor> {
        let dup = binder::dup_pfd(fd)
            .map_err(|e| binder::service_specific(ErrorCode::INTERNAL.0, &e.to_string()))?;
        Ok(ParcelFileDescriptor::new(dup))
    }
    fn load(&self, _: &ParcelFileDescriptor, _: &LoadRequest) -> BinderResult<LoadResult> {
        Err(binder::service_specific(ErrorCode::TOO_LARGE.0, "too big"))
    }
    fn loadAsync(
        &self,
        _: &ParcelFileDescriptor,
        _: &LoadRequest,
        _: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        Err(binder::service_specific(ErrorCode::INTERNAL.0, "not here"))
    }
    fn getHeaps(&self) -> BinderResult<Vec<HeapInfo>> {
        Ok(vec![HeapInfo {
            name: format!("uid {}", binder::calling_uid()),
            ..Default::default()
        }])
    }
    fn getServiceInfo(&self) -> BinderResult<ServiceInfo> {
        Ok(ServiceInfo::default())
    }
}

#[test]
fn serve_connect_call_and_death_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Transport::Unix {
        path: dir.path().join("probe.sock"),
    };
    let probe = binder::new_binder!(BnDmabufLoader, Probe);
    let server = binder::serve(&transport, NAME, &probe, 2).unwrap();
    let conn: Connection<dyn IDmabufLoader> = binder::connect(&transport, NAME, 1).unwrap();
    assert!(conn.is_alive());

    // An fd travels both ways and stays the same file.
    let file = tempfile::tempfile().unwrap();
    let back: OwnedFd = conn
        .service
        .loadFile(&ParcelFileDescriptor::new(file.try_clone().unwrap()))
        .unwrap()
        .into();
    assert_ne!(back.as_raw_fd(), file.as_raw_fd());
    assert_eq!(
        std::fs::File::from(back).metadata().unwrap().ino(),
        file.metadata().unwrap().ino()
    );

    // A service-specific failure reads back as its code and message.
    let pfd = ParcelFileDescriptor::new(file.try_clone().unwrap());
    let err = CallError::check(conn.service.load(&pfd, &LoadRequest::default())).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TOO_LARGE.0));
    assert_eq!(err.to_string(), "TOO_LARGE (6): too big");

    // The server sees this process as the caller (SO_PEERCRED of the connection).
    let heaps = conn.service.getHeaps().unwrap();
    assert_eq!(heaps[0].name, format!("uid {}", process_uid()));

    // A name the server does not publish is an error naming it, not some other object.
    let Transport::Unix { path } = &transport else {
        unreachable!()
    };
    let e = binder::connect_unix::<dyn IDmabufLoader>(path, "no/such/name", 1, None)
        .err()
        .expect("connected to a name the server does not publish");
    assert!(
        format!("{e:#}").contains("no service named no/such/name"),
        "{e:#}"
    );

    // Stopping the server ends the session: the death notification fires, is_alive says so.
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let _link = binder::link_to_death(conn.service.as_binder(), move || {
        let _ = tx.lock().unwrap().send(());
    })
    .unwrap();
    server.stop();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no death notification within 10 s of the server stopping");
    assert!(!conn.is_alive());
    assert!(conn.service.getHeaps().is_err());
}

/// This process's real uid, from /proc (keeps the test free of a libc/nix dependency).
fn process_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
