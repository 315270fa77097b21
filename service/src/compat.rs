//! The one place where this crate differs between the two binder crates it builds against:
//! rsbinder (Linux, any host) and AOSP's `binder` crate (Android, built by Soong).
//!
//! Everything else in the service and the client uses only the names re-exported here, which
//! both crates provide with the same meaning: `Interface`, `Strong`, `ParcelFileDescriptor`,
//! `Status`, `StatusCode`, the generated AIDL module (`aidl`) and the few helpers below whose
//! spelling differs (service-specific errors, calling uid, death notification, binder
//! construction, publishing and connecting).

use std::os::fd::{AsRawFd, BorrowedFd};

// ---------------------------------------------------------------------------------------------
// rsbinder (Linux and every non-Android host)
// ---------------------------------------------------------------------------------------------
#[cfg(not(target_os = "android"))]
mod imp {
    use std::path::Path;
    use std::sync::Arc;

    use anyhow::{anyhow, Context};

    pub use dmabuf_loader_aidl::vendor::dmabufloader as aidl;
    use rsbinder::rpc::FileDescriptorTransportMode;
    pub use rsbinder::{
        ExceptionCode, IBinder, Interface, ParcelFileDescriptor, SIBinder, Status, StatusCode,
        Strong,
    };

    /// `Result` of an AIDL method (rsbinder calls it `BinderResult`, AOSP `binder::Result`).
    pub type BinderResult<T> = std::result::Result<T, Status>;

    /// Name of the binder crate, for logs and `getServiceInfo`.
    pub const BINDER_CRATE: &str = "rsbinder 0.12";

    /// A ServiceSpecificException carrying `code` and `message`.
    pub fn service_specific(code: i32, message: &str) -> Status {
        Status::new_service_specific_error(code, Some(message.to_string()))
    }

    /// The service-specific code of a failed call, if it was one.
    pub fn service_specific_code(status: &Status) -> Option<i32> {
        (status.exception_code() == ExceptionCode::ServiceSpecific)
            .then(|| status.service_specific_error())
    }

    /// The message of a failed call.
    pub fn status_message(status: &Status) -> String {
        status
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string())
    }

    /// Uid of the process that made the binder call being handled (kernel binder: from the
    /// driver; unix socket: SO_PEERCRED of the connection).
    pub fn calling_uid() -> u32 {
        rsbinder::get_calling_uid()
    }

    /// Builds a local binder object: `new_binder!(BnFoo, value)`.
    #[macro_export]
    macro_rules! new_binder {
        ($bn:ty, $inner:expr) => {
            <$bn>::new_binder($inner)
        };
    }

    struct Recipient<F: Fn() + Send + Sync>(F);
    impl<F: Fn() + Send + Sync> rsbinder::DeathRecipient for Recipient<F> {
        fn binder_died(&self, _who: &rsbinder::WIBinder) {
            (self.0)()
        }
    }

    /// A registered death notification; dropping it unregisters.
    pub struct DeathLink {
        binder: SIBinder,
        recipient: Arc<dyn rsbinder::DeathRecipient>,
    }

    impl Drop for DeathLink {
        fn drop(&mut self) {
            // Fails only when the binder is already dead, which unlinks by itself.
            let _ = self.binder.unlink_to_death(Arc::downgrade(&self.recipient));
        }
    }

    /// Calls `on_death` once when the process behind `binder` dies (RPC: its session ends).
    pub fn link_to_death(
        binder: SIBinder,
        on_death: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<DeathLink> {
        let recipient: Arc<dyn rsbinder::DeathRecipient> = Arc::new(Recipient(on_death));
        binder
            .link_to_death(Arc::downgrade(&recipient))
            .map_err(|e| anyhow!("link_to_death: {e:?}"))?;
        Ok(DeathLink { binder, recipient })
    }

    /// Kernel binder: opens `driver` with a pool of `threads` binder threads, registers
    /// `binder` as `name` with the service manager and starts the pool. Returns once served.
    pub fn serve_kernel(
        driver: &Path,
        threads: u32,
        name: &str,
        binder: SIBinder,
    ) -> anyhow::Result<ServerHandle> {
        let uri = rsbinder::Uri::new(
            rsbinder::entry::KernelEndpoint::default()
                .with_driver(driver)
                .with_threads(threads),
        );
        let guard = rsbinder::serve(uri)
            .map_err(|e| anyhow!("opening {}: {e:?}", driver.display()))?
            .add(name, binder)
            .map_err(|e| anyhow!("adding {name}: {e:?}"))?
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "registering {name} with the service manager on {}: {e:?}",
                    driver.display()
                )
            })?;
        Ok(ServerHandle { _guard: guard })
    }

    /// RPC binder on a unix socket at `path` (android-13+ wire, fds as SCM_RIGHTS): `binder`
    /// is published as `name`; each client connection gets its own worker thread, and a client
    /// may open up to `threads` connections. Returns once listening.
    pub fn serve_unix(
        path: &Path,
        threads: u32,
        name: &str,
        binder: SIBinder,
    ) -> anyhow::Result<ServerHandle> {
        let uri = rsbinder::Uri::new(rsbinder::Endpoint::unix(path)).with_wire(
            rsbinder::entry::WireProfile::Android13Plus(rsbinder::entry::WireVersion::MAX),
        );
        let guard = rsbinder::serve(uri)
            .map_err(|e| anyhow!("unix socket {}: {e:?}", path.display()))?
            .with(|o| {
                o.fd_modes = Some(vec![FileDescriptorTransportMode::Unix]);
                o.threads = Some(threads.max(1));
                // A client that stops reading its callbacks must not pin a worker forever.
                o.reply_timeout = Some(std::time::Duration::from_secs(30));
            })
            .add(name, binder)
            .map_err(|e| anyhow!("adding {name}: {e:?}"))?
            .spawn()
            .map_err(|e| anyhow!("listening on {}: {e:?}", path.display()))?;
        Ok(ServerHandle { _guard: guard })
    }

    /// Keeps a server running; dropping it stops an RPC server (closes every session).
    pub struct ServerHandle {
        _guard: rsbinder::ServerGuard,
    }

    /// A connection to the service; keeps the RPC session open and closes it on drop.
    pub struct Connection<T: ?Sized + rsbinder::FromIBinder> {
        pub service: Strong<T>,
        client: rsbinder::Client,
    }

    impl<T: ?Sized + rsbinder::FromIBinder> Drop for Connection<T> {
        fn drop(&mut self) {
            if let Some(session) = self.client.session() {
                session.close_session();
            }
        }
    }

    /// Connects to `name` on kernel binder through the service manager of `driver`
    /// (default: /dev/binderfs/binder, else /dev/binder). Waits up to `wait` for the service
    /// to register (a service starting at the same time as its first client).
    pub fn connect_kernel<T: ?Sized + rsbinder::FromIBinder>(
        driver: Option<&Path>,
        name: &str,
        wait: std::time::Duration,
    ) -> anyhow::Result<Connection<T>> {
        let mut kernel = rsbinder::entry::KernelEndpoint::default();
        if let Some(d) = driver {
            kernel = kernel.with_driver(d);
        }
        let client = rsbinder::Client::open(rsbinder::Uri::new(kernel))
            .map_err(|e| anyhow!("opening kernel binder: {e:?}"))?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match client.try_get::<T>(name) {
                Ok(Some(service)) => return Ok(Connection { service, client }),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Ok(None) => anyhow::bail!(
                    "{name} is not registered with the service manager (waited {wait:?}); \
                     is dmabuf-loader-service running?"
                ),
                Err(e) => anyhow::bail!("looking up {name} in the service manager: {e:?}"),
            }
        }
    }

    /// Connects to `name` over the unix socket `path`, with `connections` outgoing connections
    /// (calls in flight at once) and one incoming connection for callbacks and death notices.
    pub fn connect_unix<T: ?Sized + rsbinder::FromIBinder>(
        path: &Path,
        name: &str,
        connections: u32,
    ) -> anyhow::Result<Connection<T>> {
        let uri = rsbinder::Uri::new(rsbinder::Endpoint::unix(path)).with_wire(
            rsbinder::entry::WireProfile::Android13Plus(rsbinder::entry::WireVersion::MAX),
        );
        let client = rsbinder::Client::open_with(uri, |o, _| {
            o.fd_mode = Some(FileDescriptorTransportMode::Unix);
            o.outgoing_connections = Some(connections.max(1));
            o.incoming_connections = Some(1);
        })
        .map_err(|e| anyhow!("connecting to {}: {e:?}", path.display()))
        .with_context(|| format!("is dmabuf-loader-service listening on {}?", path.display()))?;
        let service = client
            .get::<T>(name)
            .map_err(|e| anyhow!("looking up {name} on {}: {e:?}", path.display()))?;
        Ok(Connection { service, client })
    }
}

// ---------------------------------------------------------------------------------------------
// AOSP `binder` crate (Android, built by Soong with `vendor.dmabufloader-V1-rust`)
// ---------------------------------------------------------------------------------------------
#[cfg(target_os = "android")]
mod imp {
    use std::path::Path;

    use anyhow::{anyhow, bail};

    pub use binder::{
        BinderFeatures, ExceptionCode, IBinder, Interface, ParcelFileDescriptor,
        SpIBinder as SIBinder, Status, StatusCode, Strong,
    };
    pub use vendor_dmabufloader::aidl::vendor::dmabufloader as aidl;

    pub type BinderResult<T> = binder::Result<T>;

    pub const BINDER_CRATE: &str = "AOSP libbinder_rs";

    pub fn service_specific(code: i32, message: &str) -> Status {
        Status::new_service_specific_error_str(code, Some(message))
    }

    pub fn service_specific_code(status: &Status) -> Option<i32> {
        (status.exception_code() == ExceptionCode::SERVICE_SPECIFIC)
            .then(|| status.service_specific_error())
    }

    pub fn status_message(status: &Status) -> String {
        status.get_description()
    }

    pub fn calling_uid() -> u32 {
        binder::ThreadState::get_calling_uid()
    }

    #[macro_export]
    macro_rules! new_binder {
        ($bn:ty, $inner:expr) => {
            <$bn>::new_binder($inner, $crate::compat::BinderFeatures::default())
        };
    }

    /// A registered death notification; dropping it unregisters (AOSP unlinks on drop).
    pub struct DeathLink {
        _binder: SIBinder,
        _recipient: binder::DeathRecipient,
    }

    pub fn link_to_death(
        mut binder: SIBinder,
        on_death: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<DeathLink> {
        let mut recipient = binder::DeathRecipient::new(on_death);
        binder
            .link_to_death(&mut recipient)
            .map_err(|e| anyhow!("link_to_death: {e:?}"))?;
        Ok(DeathLink {
            _binder: binder,
            _recipient: recipient,
        })
    }

    pub fn serve_kernel(
        _driver: &Path,
        threads: u32,
        name: &str,
        binder: SIBinder,
    ) -> anyhow::Result<ServerHandle> {
        binder::ProcessState::set_thread_pool_max_thread_count(threads);
        binder::ProcessState::start_thread_pool();
        binder::add_service(name, binder)
            .map_err(|e| anyhow!("registering {name} with servicemanager: {e:?}"))?;
        Ok(ServerHandle)
    }

    pub fn serve_unix(
        path: &Path,
        _threads: u32,
        _name: &str,
        _binder: SIBinder,
    ) -> anyhow::Result<ServerHandle> {
        bail!(
            "unix-socket RPC ({}) is a host transport; on Android use kernel binder",
            path.display()
        )
    }

    pub struct ServerHandle;

    pub struct Connection<T: ?Sized + binder::FromIBinder> {
        pub service: Strong<T>,
    }

    pub fn connect_kernel<T: ?Sized + binder::FromIBinder>(
        _driver: Option<&Path>,
        name: &str,
        _wait: std::time::Duration,
    ) -> anyhow::Result<Connection<T>> {
        binder::ProcessState::start_thread_pool();
        // servicemanager starts a declared (VINTF) HAL on demand; waitForService bounds itself.
        let service = binder::wait_for_interface::<T>(name)
            .map_err(|e| anyhow!("looking up {name} in servicemanager: {e:?}"))?;
        Ok(Connection { service })
    }

    pub fn connect_unix<T: ?Sized + binder::FromIBinder>(
        path: &Path,
        _name: &str,
        _connections: u32,
    ) -> anyhow::Result<Connection<T>> {
        bail!(
            "unix-socket RPC ({}) is a host transport; on Android use kernel binder",
            path.display()
        )
    }
}

pub use imp::*;

/// Borrows the fd inside a `ParcelFileDescriptor` (both crates implement `AsRawFd` for it).
pub fn borrow_pfd(pfd: &ParcelFileDescriptor) -> BorrowedFd<'_> {
    // SAFETY: the fd is owned by `pfd`, which outlives the returned borrow.
    unsafe { BorrowedFd::borrow_raw(pfd.as_raw_fd()) }
}
