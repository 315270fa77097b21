//! The AOSP half (Android, built by Soong with libbinder_rs and vendor.dmabufloader-V1-rust):
//! kernel binder through servicemanager only. `rsbinder.rs` has the same names over rsbinder;
//! the unix-socket transport is a host feature and refuses here with a clear error.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use binder::binder_impl::{IBinderInternal, FIRST_CALL_TRANSACTION};
// ping_binder is an IBinder method (the vendor lint set builds with -D warnings).
use binder::IBinder;

pub use binder::{
    BinderFeatures, FromIBinder, Interface, ParcelFileDescriptor, SpIBinder as SIBinder, Status,
    StatusCode, Strong,
};
pub use vendor_dmabufloader::aidl::vendor::dmabufloader as aidl;

use aidl::IDmabufLoader::IDmabufLoader;

/// `Result` of an AIDL method.
pub type BinderResult<T> = binder::Result<T>;

/// Name of the binder crate, for logs and `getServiceInfo`.
pub const BINDER_CRATE: &str = "AOSP libbinder_rs";

/// A ServiceSpecificException carrying `code` and `message`.
pub fn service_specific(code: i32, message: &str) -> Status {
    Status::new_service_specific_error_str(code, Some(message))
}

/// The service-specific code of a failed call, if it was one.
pub fn service_specific_code(status: &Status) -> Option<i32> {
    (status.exception_code() == binder::ExceptionCode::SERVICE_SPECIFIC)
        .then(|| status.service_specific_error())
}

/// The message of a failed call.
pub fn status_message(status: &Status) -> String {
    status.get_description()
}

/// Uid of the process that made the binder call being handled.
pub fn calling_uid() -> u32 {
    binder::ThreadState::get_calling_uid()
}

/// Builds a local binder object: `new_binder!(BnFoo, value)`.
#[macro_export]
macro_rules! new_binder {
    ($bn:ty, $inner:expr) => {
        <$bn>::new_binder($inner, $crate::BinderFeatures::default())
    };
}

/// A registered death notification; dropping it unregisters (AOSP unlinks on drop).
pub struct DeathLink {
    _binder: SIBinder,
    _recipient: binder::DeathRecipient,
}

/// Calls `on_death` once when the process behind `binder` dies.
pub fn link_to_death(
    mut binder: SIBinder,
    on_death: impl Fn() + Send + Sync + 'static,
) -> Result<DeathLink> {
    let mut recipient = binder::DeathRecipient::new(on_death);
    binder
        .link_to_death(&mut recipient)
        .map_err(|e| anyhow!("link_to_death: {e:?}"))?;
    Ok(DeathLink {
        _binder: binder,
        _recipient: recipient,
    })
}

/// Keeps a server running (the binder thread pool lives as long as the process).
pub struct ServerHandle;

impl ServerHandle {
    /// Nothing to stop: a kernel-binder service stays registered until the process exits.
    pub fn stop(self) {}
}

/// Starts a pool of `threads` binder threads and registers `binder` as `name` with
/// servicemanager. The device is servicemanager's (/dev/binder for system, /dev/vndbinder is
/// not used by AIDL HALs), so `driver` is not used.
pub fn serve_kernel(
    _driver: &Path,
    threads: u32,
    name: &str,
    binder: SIBinder,
) -> Result<ServerHandle> {
    binder::ProcessState::set_thread_pool_max_thread_count(threads);
    binder::ProcessState::start_thread_pool();
    binder::add_service(name, binder)
        .map_err(|e| anyhow!("registering {name} with servicemanager: {e:?}"))?;
    Ok(ServerHandle)
}

fn host_transport_only(path: &Path) -> anyhow::Error {
    anyhow!(
        "unix-socket RPC ({}) is a host transport; on Android use kernel binder",
        path.display()
    )
}

/// Refused on Android: see [`serve_kernel`].
pub fn serve_unix(
    path: &Path,
    _threads: u32,
    _name: &str,
    _binder: SIBinder,
) -> Result<ServerHandle> {
    Err(host_transport_only(path))
}

/// A connection to a service.
pub struct Connection<T: ?Sized + FromIBinder> {
    pub service: Strong<T>,
}

impl<T: ?Sized + FromIBinder> Connection<T> {
    /// False once the proxy no longer answers a ping.
    pub fn is_alive(&self) -> bool {
        self.service.as_binder().ping_binder().is_ok()
    }
}

/// Connects to `name` through servicemanager, which starts a declared (VINTF) HAL on demand;
/// waitForService bounds its own wait, so `wait` is not used.
pub fn connect_kernel<T: ?Sized + FromIBinder>(
    _driver: Option<&Path>,
    name: &str,
    _wait: Duration,
) -> Result<Connection<T>> {
    binder::ProcessState::start_thread_pool();
    let service = binder::wait_for_interface::<T>(name)
        .map_err(|e| anyhow!("looking up {name} in servicemanager: {e:?}"))?;
    Ok(Connection { service })
}

/// Refused on Android: see [`connect_kernel`].
pub fn connect_unix<T: ?Sized + FromIBinder>(
    path: &Path,
    _name: &str,
    _connections: u32,
    _timeout: Option<Duration>,
) -> Result<Connection<T>> {
    Err(host_transport_only(path))
}

/// The instances of `descriptor` the device's VINTF manifest declares, sorted.
pub fn kernel_instances(_driver: Option<&Path>, descriptor: &str) -> Result<Vec<String>> {
    binder::ProcessState::start_thread_pool();
    let mut v = binder::get_declared_instances(descriptor)
        .map_err(|e| anyhow!("getDeclaredInstances({descriptor}): {e:?}"))?;
    v.sort();
    Ok(v)
}

/// Calls `loadFile` with a null ParcelFileDescriptor, for contract tests (see the rsbinder
/// half).
pub fn load_file_with_null_fd(loader: &Strong<dyn IDmabufLoader>) -> Result<Status> {
    let binder = loader.as_binder();
    // prepare_transact writes the interface token.
    let mut data = binder
        .prepare_transact()
        .map_err(|e| anyhow!("prepare: {e:?}"))?;
    data.write(&Option::<ParcelFileDescriptor>::None)
        .map_err(|e| anyhow!("write null fd: {e:?}"))?;
    match binder.submit_transact(FIRST_CALL_TRANSACTION, data, 0) {
        Ok(reply) => reply
            .read::<Status>()
            .map_err(|e| anyhow!("reply status: {e:?}")),
        Err(code) => Ok(Status::from(code)),
    }
}
