//! The v2 suite against a v1-only instance: every v2 case (loadInto, loadIntoAsync) must say
//! "skipped: v1 instance" and count as ignored, neither passed nor failed.
//!
//! The instance is a fixture built from the frozen v1 bindings (`aidl_v1`, generated from
//! aidl/aidl_api/vendor.dmabufloader/1): it has no loadInto at all and reports interface
//! version 1, which is all a v1 implementation on a device would say. It refuses every load;
//! the v2 cases must not get as far as calling one.

use std::path::Path;
use std::process::Command;

use dmabuf_loader_binder::aidl_v1::ErrorCode::ErrorCode;
use dmabuf_loader_binder::aidl_v1::HeapInfo::HeapInfo;
use dmabuf_loader_binder::aidl_v1::IDmabufLoader::{BnDmabufLoader, IDmabufLoader};
use dmabuf_loader_binder::aidl_v1::ILoadCallback::ILoadCallback;
use dmabuf_loader_binder::aidl_v1::ILoadTask::ILoadTask;
use dmabuf_loader_binder::aidl_v1::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl_v1::LoadResult::LoadResult;
use dmabuf_loader_binder::aidl_v1::ServiceInfo::ServiceInfo;
use dmabuf_loader_binder::{
    service_specific, BinderResult, Interface, ParcelFileDescriptor, Strong, Transport,
    SERVICE_NAME,
};

/// A v1 implementation that only answers what it is: interface version 1 (the generated
/// default of the frozen v1 bindings), no heap, no load.
struct V1Only;

impl Interface for V1Only {}

fn refused<T>() -> BinderResult<T> {
    Err(service_specific(
        ErrorCode::INTERNAL.0,
        "v1 test fixture: it only reports interface version 1",
    ))
}

impl IDmabufLoader for V1Only {
    fn loadFile(&self, _fd: &ParcelFileDescriptor) -> BinderResult<ParcelFileDescriptor> {
        refused()
    }
    fn load(&self, _fd: &ParcelFileDescriptor, _r: &LoadRequest) -> BinderResult<LoadResult> {
        refused()
    }
    fn loadAsync(
        &self,
        _fd: &ParcelFileDescriptor,
        _r: &LoadRequest,
        _cb: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        refused()
    }
    fn getHeaps(&self) -> BinderResult<Vec<HeapInfo>> {
        Ok(Vec::new())
    }
    fn getServiceInfo(&self) -> BinderResult<ServiceInfo> {
        Ok(ServiceInfo {
            implementation: "v1 test fixture".into(),
            ..Default::default()
        })
    }
}

fn suite(sock: &Path, tmp: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_VtsHalDmabufLoaderTargetTest"))
        .arg("--socket")
        .arg(sock)
        .arg("--tmpdir")
        .arg(tmp)
        .args(args)
        .output()
        .expect("run VtsHalDmabufLoaderTargetTest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn v2_cases_against_a_v1_instance_are_skipped_not_passed_or_failed() {
    let dir = tempfile::Builder::new()
        .prefix("vts-v1-instance.")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let sock = dir.path().join("v1.sock");
    let transport = Transport::Unix { path: sock.clone() };
    let binder: Strong<dyn IDmabufLoader> =
        dmabuf_loader_binder::new_binder!(BnDmabufLoader, V1Only);
    let server = dmabuf_loader_binder::serve(&transport, SERVICE_NAME, &binder, 4).unwrap();

    // What a v2 client sees: version 1.
    let conn = dmabuf_loader_binder::connect::<
        dyn dmabuf_loader_binder::aidl::IDmabufLoader::IDmabufLoader,
    >(&transport, SERVICE_NAME, 1)
    .unwrap();
    assert_eq!(conn.service.getInterfaceVersion().unwrap(), 1);
    drop(conn);

    // The v2 cases, as the suite names them (`load_into.*/<instance>`).
    let (ok, list) = suite(&sock, dir.path(), &["--list", "load_into."]);
    assert!(ok, "--list failed:\n{list}");
    let cases: Vec<&str> = list
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    assert!(
        cases.len() >= 12 && cases.iter().all(|c| c.starts_with("load_into.")),
        "expected the v2 cases (loadInto, loadIntoAsync), listed:\n{list}"
    );

    let (ok, out) = suite(&sock, dir.path(), &["load_into."]);
    assert!(ok, "the suite failed against a v1 instance:\n{out}");
    for case in &cases {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("test {case} ")))
            .unwrap_or_else(|| panic!("no result line for {case}:\n{out}"));
        assert!(
            line.trim_end().ends_with("ignored"),
            "{case} was not skipped as a v1 instance: {line}"
        );
    }
    assert!(
        out.contains(&format!(
            "skipped: v1 instance (getInterfaceVersion = 1): {} cases of later versions are ignored on v1.sock",
            cases.len()
        )),
        "the run must say why the v2 cases are ignored:\n{out}"
    );
    let summary = out
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or_else(|| panic!("no libtest summary:\n{out}"));
    assert!(
        summary.contains(&format!("0 passed; 0 failed; {} ignored;", cases.len())),
        "the skips must count as ignored, not passed or failed: {summary}"
    );
    drop(server);
}
