//! The suite's view of binder: the interface's names, where an instance lives ([`Target`]) and
//! how to reach it. Everything binder-crate-specific (rsbinder on Linux, AOSP's `binder` on
//! Android) is in the shared `dmabuf_loader_binder` crate; the cases use only the names here.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

pub use dmabuf_loader_binder::aidl::{
    BufferKind::BufferKind,
    ChecksumType::ChecksumType,
    ErrorCode::ErrorCode,
    HeapInfo::HeapInfo,
    IDmabufLoader::{self as idl, IDmabufLoader},
    ILoadCallback::{BnLoadCallback, ILoadCallback},
    ILoadTask::ILoadTask,
    IoPath::IoPath,
    LoadRequest::LoadRequest,
    LoadResult::LoadResult,
    ServiceInfo::ServiceInfo,
};
pub use dmabuf_loader_binder::{
    borrow_pfd as fd, clone_result, error_code_name, load_file_with_null_fd, BinderResult,
    CallError, Interface, ParcelFileDescriptor, Status, Strong, DESCRIPTOR,
};

/// A live connection to one instance. Dropping it closes an RPC session (its callback
/// threads keep it alive otherwise).
pub type Connection = dmabuf_loader_binder::Connection<dyn IDmabufLoader>;

/// How long an RPC call may go unanswered before the session counts as broken. Generous: a
/// 64 MiB load on a slow emulated disk must not trip it, but a hung service must not hang VTS.
const RPC_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a kernel-binder instance may take to (re)appear in the service manager: a
/// declared instance that never comes up (or is restarting after a crash) fails the case
/// instead of hanging VTS.
const KERNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls from several threads run in parallel over RPC only over several connections (the
/// server grants min(this, its thread count)).
const RPC_CONNECTIONS: u32 = 16;

/// Where one instance of the interface lives.
#[derive(Clone, Debug)]
pub enum Target {
    /// Kernel binder: the full service-manager name (`<DESCRIPTOR>/<instance>`), on `driver`
    /// (default: /dev/binderfs/binder, else /dev/binder; on Android servicemanager's).
    Kernel {
        name: String,
        driver: Option<PathBuf>,
    },
    /// RPC binder over a unix socket; `service` is the name looked up in the server's
    /// directory (the session's root object is used if the server has no such name).
    Rpc { socket: PathBuf, service: String },
}

/// Connects to one instance.
pub fn connect(target: &Target) -> Result<Connection> {
    match target {
        Target::Kernel { name, driver } => {
            dmabuf_loader_binder::connect_kernel(driver.as_deref(), name, KERNEL_CONNECT_TIMEOUT)
        }
        Target::Rpc { socket, service } => {
            let open = |name: &str| {
                dmabuf_loader_binder::connect_unix(socket, name, RPC_CONNECTIONS, Some(RPC_TIMEOUT))
            };
            // An implementation that publishes one root object and no names is tested too.
            open(service).or_else(|by_name| {
                open("").with_context(|| format!("{by_name:#}; trying the root object instead"))
            })
        }
    }
}

/// The instance names of IDmabufLoader on kernel binder `driver`: on Android those the VINTF
/// manifest declares, as VTS does everywhere; on Linux rsb_hub's declared and registered ones.
pub fn kernel_instances(driver: Option<&std::path::Path>) -> Result<Vec<String>> {
    dmabuf_loader_binder::kernel_instances(driver, DESCRIPTOR)
}

/// Wraps an fd for sending.
pub fn pfd(fd: impl Into<OwnedFd>) -> ParcelFileDescriptor {
    ParcelFileDescriptor::new(fd)
}

/// Makes a binder object out of a callback implementation.
pub fn new_callback<T: ILoadCallback + Sync + Send + 'static>(cb: T) -> Strong<dyn ILoadCallback> {
    dmabuf_loader_binder::new_binder!(BnLoadCallback, cb)
}

/// The interface version and hash this suite was built against.
pub fn compiled_version() -> i32 {
    idl::VERSION
}
pub fn compiled_hash() -> &'static str {
    idl::HASH
}
