//! Every binder-specific call of the VTS suite, in one place: finding instances, connecting,
//! wrapping fds, reading service-specific codes, making a callback object and the one raw
//! transaction (a null fd). The cases use only the names exported here.
//!
//! Two implementations with the same surface: rsbinder on Linux (kernel binder through its
//! service manager `rsb_hub`, or RPC binder over a unix socket), and AOSP's `binder` crate on
//! Android (built by Soong with `vendor.dmabufloader-V1-rust`; kernel binder only, instances
//! from `binder::get_declared_instances`).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{anyhow, Result};

pub use imp::*;

/// The interface descriptor; instances are registered as `<DESCRIPTOR>/<instance>`.
pub const DESCRIPTOR: &str = "vendor.dmabufloader.IDmabufLoader";

/// Where one instance of the interface lives.
#[derive(Clone, Debug)]
pub enum Target {
    /// Kernel binder: the full service-manager name (`<DESCRIPTOR>/<instance>`).
    Kernel { name: String },
    /// RPC binder over a unix socket; `service` is the name looked up in the server's
    /// directory (the session's root object is used if the server has no such name).
    Rpc { socket: PathBuf, service: String },
}

/// How a call failed, as far as the contract cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// A ServiceSpecificException with this code and message.
    ServiceSpecific(i32, String),
    /// Anything else (binder transport error, other exception).
    Other(String),
}

/// Wraps an fd for sending.
pub fn pfd(fd: impl Into<OwnedFd>) -> ParcelFileDescriptor {
    ParcelFileDescriptor::new(fd)
}

/// Borrows the fd inside a ParcelFileDescriptor (both crates implement AsRawFd for it).
pub fn fd(p: &ParcelFileDescriptor) -> BorrowedFd<'_> {
    // SAFETY: the fd is owned by `p`, which outlives the returned borrow.
    unsafe { BorrowedFd::borrow_raw(p.as_raw_fd()) }
}

/// Duplicates a received fd (a callback only borrows its arguments).
pub fn dup(p: &ParcelFileDescriptor) -> Result<OwnedFd> {
    fd(p)
        .try_clone_to_owned()
        .map_err(|e| anyhow!("dup of a received fd: {e}"))
}

/// The interface version and hash this suite was built against.
pub fn compiled_version() -> i32 {
    idl::VERSION
}
pub fn compiled_hash() -> &'static str {
    idl::HASH
}

// ---------------------------------------------------------------------------------------------
// rsbinder (Linux and every non-Android host)
// ---------------------------------------------------------------------------------------------
#[cfg(not(target_os = "android"))]
mod imp {
    use std::path::Path;
    use std::time::Duration;

    use anyhow::{anyhow, bail, Context, Result};
    use rsbinder::entry::{WireProfile, WireVersion};
    use rsbinder::{Parcel, StatusCode, FIRST_CALL_TRANSACTION};

    use super::{Failure, Target, DESCRIPTOR};

    pub use dmabuf_loader_aidl::vendor::dmabufloader::{
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
    pub use rsbinder::{BinderResult, Interface, ParcelFileDescriptor, Status, Strong};

    /// How long an RPC call may go unanswered before the session counts as broken. Generous:
    /// a 64 MiB load on a slow emulated disk must not trip it, but a hung service must not
    /// hang VTS.
    const RPC_TIMEOUT: Duration = Duration::from_secs(300);

    /// How long a kernel-binder instance may take to (re)appear in the service manager.
    const KERNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A live connection to one instance. Dropping it closes an RPC session (its callback
    /// threads keep it alive otherwise).
    pub struct Connection {
        pub loader: Strong<dyn IDmabufLoader>,
        client: Option<rsbinder::Client>,
    }

    impl Connection {
        /// False once an RPC session has ended (service gone, timeout) or a kernel proxy no
        /// longer answers a ping.
        pub fn is_alive(&self) -> bool {
            match &self.client {
                Some(c) => c.session().is_some_and(|s| !s.is_ended()),
                None => self.loader.as_binder().ping_binder().is_ok(),
            }
        }
    }

    impl Drop for Connection {
        fn drop(&mut self) {
            if let Some(s) = self.client.as_ref().and_then(|c| c.session()) {
                s.close_session();
            }
        }
    }

    /// Opens kernel binder (`device`, or rsbinder's default /dev/binderfs/binder, then
    /// /dev/binder) and starts this process's binder thread pool, which callbacks need.
    pub fn init_kernel(device: Option<&Path>) -> Result<()> {
        let uri = rsbinder::Uri::kernel();
        rsbinder::Client::open_with(uri, |o, _| o.driver = device.map(Path::to_path_buf))
            .map(drop)
            .map_err(|e| anyhow!("cannot open kernel binder ({device:?}): {e:?}"))
    }

    /// The instance names of IDmabufLoader known to the service manager: the declared ones
    /// (rsb_hub `[[service]]` declarations, the Linux stand-in for the VINTF manifest) and the
    /// registered ones (`listServices`, filtered by `<DESCRIPTOR>/`), deduplicated and sorted.
    /// [`init_kernel`] must have run.
    pub fn kernel_instances() -> Result<Vec<String>> {
        let mut out = Vec::new();
        match rsbinder::hub::try_get_declared_instances(DESCRIPTOR) {
            Ok(v) => out.extend(v),
            // A service manager without declarations (an older protocol) still lists.
            Err(e) => eprintln!(
                "note: getDeclaredInstances({DESCRIPTOR}) failed: {e:?}; using listServices only"
            ),
        }
        let listed = rsbinder::hub::try_list_services(rsbinder::hub::DUMP_FLAG_PRIORITY_ALL)
            .map_err(|e| anyhow!("listServices failed: {e:?}"))?;
        let prefix = format!("{DESCRIPTOR}/");
        out.extend(
            listed
                .iter()
                .filter_map(|n| n.strip_prefix(&prefix))
                .map(str::to_string),
        );
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Connects to one instance.
    pub fn connect(target: &Target) -> Result<Connection> {
        match target {
            Target::Kernel { name } => {
                // Bounded, unlike wait_for_interface: a declared instance that never comes up
                // (or is restarting after a crash) fails the case instead of hanging VTS.
                let deadline = std::time::Instant::now() + KERNEL_CONNECT_TIMEOUT;
                loop {
                    match rsbinder::hub::try_get_interface::<dyn IDmabufLoader>(name) {
                        Ok(Some(loader)) => {
                            return Ok(Connection {
                                loader,
                                client: None,
                            })
                        }
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100))
                        }
                        Ok(None) => bail!(
                            "{name} is not registered with the service manager (waited {KERNEL_CONNECT_TIMEOUT:?})"
                        ),
                        Err(e) => bail!("service manager lookup of {name} failed: {e:?}"),
                    }
                }
            }
            Target::Rpc { socket, service } => {
                let uri = rsbinder::Uri::from(rsbinder::Endpoint::unix(socket))
                    .with_wire(WireProfile::Android13Plus(WireVersion::MAX));
                let client = rsbinder::Client::open_with(uri, |o, _| {
                    // Fds travel as SCM_RIGHTS; one incoming connection carries the oneway
                    // ILoadCallback calls the service makes back to us.
                    o.fd_mode = Some(rsbinder::rpc::FileDescriptorTransportMode::Unix);
                    o.incoming_connections = Some(1);
                    // Calls from several threads run in parallel only over several
                    // connections (the server grants min(this, its thread count)).
                    o.outgoing_connections = Some(16);
                    o.timeout = Some(RPC_TIMEOUT);
                })
                .map_err(|e| {
                    anyhow!("cannot open an RPC session on {}: {e:?}", socket.display())
                })?;
                let session = client.session().context("RPC client without a session")?;
                let binder = match session.get_service(service) {
                    Ok(b) => b,
                    Err(StatusCode::NameNotFound) => session.get_root().map_err(|e| {
                        anyhow!(
                            "{} has neither a service named {service} nor a root object: {e:?}",
                            socket.display()
                        )
                    })?,
                    Err(e) => {
                        return Err(anyhow!(
                            "looking up {service} on {}: {e:?}",
                            socket.display()
                        ))
                    }
                };
                let loader = rsbinder::FromIBinder::try_from(binder).map_err(|e| {
                    anyhow!(
                        "the object on {} is not an {DESCRIPTOR}: {e:?}",
                        socket.display()
                    )
                })?;
                Ok(Connection {
                    loader,
                    client: Some(client),
                })
            }
        }
    }

    pub fn classify(s: &Status) -> Failure {
        if s.exception_code() == rsbinder::ExceptionCode::ServiceSpecific {
            Failure::ServiceSpecific(
                s.service_specific_error(),
                s.message().unwrap_or_default().to_string(),
            )
        } else {
            Failure::Other(format!("{s:?}"))
        }
    }

    /// Makes a binder object out of a callback implementation.
    pub fn new_callback<T: ILoadCallback + Sync + Send + 'static>(
        cb: T,
    ) -> Strong<dyn ILoadCallback> {
        BnLoadCallback::new_binder(cb)
    }

    /// Calls `loadFile` with a null ParcelFileDescriptor. The AIDL argument is non-nullable,
    /// so the generated proxy cannot send one; this writes the parcel by hand (interface
    /// token, then the null marker) as a buggy or hostile client could. Returns the reply's
    /// status.
    pub fn load_file_with_null_fd(loader: &Strong<dyn IDmabufLoader>) -> Result<Status> {
        let binder = loader.as_binder();
        let remote = binder
            .as_remote()
            .context("the loader is not a remote proxy")?;
        let mut data: Parcel = remote
            .prepare_transact(true)
            .map_err(|e| anyhow!("prepare: {e:?}"))?;
        data.write(&Option::<ParcelFileDescriptor>::None)
            .map_err(|e| anyhow!("write null fd: {e:?}"))?;
        // loadFile is the first method of IDmabufLoader.aidl.
        match remote.submit_transact(FIRST_CALL_TRANSACTION, &data, 0) {
            Ok(Some(mut reply)) => reply
                .read::<Status>()
                .map_err(|e| anyhow!("reply status: {e:?}")),
            Ok(None) => Err(anyhow!("two-way call got no reply")),
            // The transaction itself failed: report it as a transport status.
            Err(code) => Ok(Status::from(code)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AOSP `binder` crate (Android; Soong builds this with libbinder_rs and
// vendor.dmabufloader-V1-rust, see vts/Android.bp)
// ---------------------------------------------------------------------------------------------
#[cfg(target_os = "android")]
mod imp {
    use std::path::Path;

    use anyhow::{anyhow, bail, Result};
    use binder::binder_impl::{IBinderInternal, FIRST_CALL_TRANSACTION};
    // ping_binder is a method of IBinder.
    use binder::IBinder;

    use super::{Failure, Target, DESCRIPTOR};

    pub use binder::{Interface, ParcelFileDescriptor, Status, Strong};
    pub use vendor_dmabufloader::aidl::vendor::dmabufloader::{
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

    /// `Result` of an AIDL method.
    pub type BinderResult<T> = binder::Result<T>;

    pub struct Connection {
        pub loader: Strong<dyn IDmabufLoader>,
    }

    impl Connection {
        pub fn is_alive(&self) -> bool {
            self.loader.as_binder().ping_binder().is_ok()
        }
    }

    /// Starts the binder thread pool (callbacks arrive on it). The device is servicemanager's.
    pub fn init_kernel(_device: Option<&Path>) -> Result<()> {
        binder::ProcessState::start_thread_pool();
        Ok(())
    }

    /// The instances the device's VINTF manifest declares, as VTS does everywhere.
    pub fn kernel_instances() -> Result<Vec<String>> {
        let mut v = binder::get_declared_instances(DESCRIPTOR)
            .map_err(|e| anyhow!("getDeclaredInstances({DESCRIPTOR}): {e:?}"))?;
        v.sort();
        Ok(v)
    }

    pub fn connect(target: &Target) -> Result<Connection> {
        match target {
            Target::Kernel { name } => {
                let loader = binder::wait_for_interface::<dyn IDmabufLoader>(name)
                    .map_err(|e| anyhow!("servicemanager has no usable {name}: {e:?}"))?;
                Ok(Connection { loader })
            }
            Target::Rpc { socket, .. } => bail!(
                "RPC binder ({}) is the host transport; on Android the suite uses kernel binder",
                socket.display()
            ),
        }
    }

    pub fn classify(s: &Status) -> Failure {
        if s.exception_code() == binder::ExceptionCode::SERVICE_SPECIFIC {
            Failure::ServiceSpecific(s.service_specific_error(), s.get_description())
        } else {
            Failure::Other(s.get_description())
        }
    }

    pub fn new_callback<T: ILoadCallback + Sync + Send + 'static>(
        cb: T,
    ) -> Strong<dyn ILoadCallback> {
        BnLoadCallback::new_binder(cb, binder::BinderFeatures::default())
    }

    /// See the rsbinder version: loadFile with a hand-written null fd.
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
}
