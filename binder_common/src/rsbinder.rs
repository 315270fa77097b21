//! The rsbinder half (Linux and every non-Android host): kernel binder through rsbinder's
//! service manager `rsb_hub`, or RPC binder on a unix socket (android-13+ wire, fds as
//! SCM_RIGHTS). `aosp.rs` has the same names over AOSP's `binder` crate.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rsbinder::entry::{KernelEndpoint, WireProfile, WireVersion};
use rsbinder::rpc::FileDescriptorTransportMode;

pub use dmabuf_loader_aidl::vendor::dmabufloader as aidl;
pub use rsbinder::{
    FromIBinder, Interface, ParcelFileDescriptor, SIBinder, Status, StatusCode, Strong,
};

use aidl::IDmabufLoader::IDmabufLoader;

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
    (status.exception_code() == rsbinder::ExceptionCode::ServiceSpecific)
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
) -> Result<DeathLink> {
    let recipient: Arc<dyn rsbinder::DeathRecipient> = Arc::new(Recipient(on_death));
    binder
        .link_to_death(Arc::downgrade(&recipient))
        .map_err(|e| anyhow!("link_to_death: {e:?}"))?;
    Ok(DeathLink { binder, recipient })
}

/// The wire of every unix-socket session: android-13+, which has callbacks and death notices.
fn unix_uri(path: &Path) -> rsbinder::Uri {
    rsbinder::Uri::new(rsbinder::Endpoint::unix(path))
        .with_wire(WireProfile::Android13Plus(WireVersion::MAX))
}

/// Keeps a server running; dropping it stops an RPC server (closes every session).
pub struct ServerHandle {
    _guard: rsbinder::ServerGuard,
}

impl ServerHandle {
    /// Stops serving now: an RPC server closes its socket and every session.
    pub fn stop(self) {}
}

/// Kernel binder: opens `driver` with a pool of `threads` binder threads, registers `binder`
/// as `name` with the service manager and starts the pool. Returns once served.
pub fn serve_kernel(
    driver: &Path,
    threads: u32,
    name: &str,
    binder: SIBinder,
) -> Result<ServerHandle> {
    let uri = rsbinder::Uri::new(
        KernelEndpoint::default()
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

/// RPC binder on a unix socket at `path` (android-13+ wire, fds as SCM_RIGHTS): `binder` is
/// published as `name`; each client connection gets its own worker thread, and a client may
/// open up to `threads` connections. Returns once listening.
pub fn serve_unix(path: &Path, threads: u32, name: &str, binder: SIBinder) -> Result<ServerHandle> {
    let guard = rsbinder::serve(unix_uri(path))
        .map_err(|e| anyhow!("unix socket {}: {e:?}", path.display()))?
        .with(|o| {
            o.fd_modes = Some(vec![FileDescriptorTransportMode::Unix]);
            o.threads = Some(threads.max(1));
            // A client that stops reading its callbacks must not pin a worker forever.
            o.reply_timeout = Some(Duration::from_secs(30));
        })
        .add(name, binder)
        .map_err(|e| anyhow!("adding {name}: {e:?}"))?
        .spawn()
        .map_err(|e| anyhow!("listening on {}: {e:?}", path.display()))?;
    Ok(ServerHandle { _guard: guard })
}

/// A connection to a service; keeps an RPC session open and closes it on drop.
pub struct Connection<T: ?Sized + FromIBinder> {
    pub service: Strong<T>,
    client: rsbinder::Client,
}

impl<T: ?Sized + FromIBinder> Connection<T> {
    /// False once an RPC session has ended (service gone, timeout) or a kernel proxy no
    /// longer answers a ping.
    pub fn is_alive(&self) -> bool {
        match self.client.session() {
            Some(s) => !s.is_ended(),
            None => self.service.as_binder().ping_binder().is_ok(),
        }
    }
}

impl<T: ?Sized + FromIBinder> Drop for Connection<T> {
    fn drop(&mut self) {
        if let Some(session) = self.client.session() {
            session.close_session();
        }
    }
}

/// Opens kernel binder: `driver`, or rsbinder's default (/dev/binderfs/binder, else
/// /dev/binder), and starts this process's binder thread pool (callbacks arrive on it).
fn open_kernel(driver: Option<&Path>) -> Result<rsbinder::Client> {
    let mut kernel = KernelEndpoint::default();
    if let Some(d) = driver {
        kernel = kernel.with_driver(d);
    }
    rsbinder::Client::open(rsbinder::Uri::new(kernel))
        .map_err(|e| anyhow!("opening kernel binder ({driver:?}): {e:?}"))
}

/// Connects to `name` on kernel binder through the service manager of `driver`. Waits up to
/// `wait` for the service to register (a service starting at the same time as its first
/// client, or restarting after a crash), then fails instead of hanging.
pub fn connect_kernel<T: ?Sized + FromIBinder>(
    driver: Option<&Path>,
    name: &str,
    wait: Duration,
) -> Result<Connection<T>> {
    let client = open_kernel(driver)?;
    let deadline = Instant::now() + wait;
    loop {
        match client.try_get::<T>(name) {
            Ok(Some(service)) => return Ok(Connection { service, client }),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => bail!(
                "{name} is not registered with the service manager (waited {wait:?}); \
                 is dmabuf-loader-service running?"
            ),
            Err(e) => bail!("looking up {name} in the service manager: {e:?}"),
        }
    }
}

/// Connects to `name` over the unix socket `path`, with `connections` outgoing connections
/// (calls in flight at once: the server grants min(this, its threads)) and one incoming
/// connection for callbacks and death notices. A call unanswered for `timeout` (if any) ends
/// the session. An empty `name` means the session's root object (for servers that publish
/// one object and no names). RPC proxies carry no descriptor, so a root object is taken on
/// trust: its first call fails if it is another interface.
pub fn connect_unix<T: ?Sized + FromIBinder>(
    path: &Path,
    name: &str,
    connections: u32,
    timeout: Option<Duration>,
) -> Result<Connection<T>> {
    let client = rsbinder::Client::open_with(unix_uri(path), |o, _| {
        o.fd_mode = Some(FileDescriptorTransportMode::Unix);
        o.outgoing_connections = Some(connections.max(1));
        o.incoming_connections = Some(1);
        o.timeout = timeout;
    })
    .map_err(|e| anyhow!("connecting to {}: {e:?}", path.display()))
    .with_context(|| format!("is dmabuf-loader-service listening on {}?", path.display()))?;
    let service = if name.is_empty() {
        let session = client.session().context("RPC client without a session")?;
        let root = session
            .get_root()
            .map_err(|e| anyhow!("{} has no root object: {e:?}", path.display()))?;
        FromIBinder::try_from(root).map_err(|e| {
            anyhow!(
                "the root object on {} is not the interface asked for: {e:?}",
                path.display()
            )
        })?
    } else {
        match client.try_get::<T>(name) {
            Ok(Some(s)) => s,
            Ok(None) => bail!("{} publishes no service named {name}", path.display()),
            Err(e) => bail!("looking up {name} on {}: {e:?}", path.display()),
        }
    };
    Ok(Connection { service, client })
}

/// The instance names of `descriptor` known to the service manager of `driver`: the
/// declared ones (rsb_hub `[[service]]` declarations, the Linux stand-in for the VINTF
/// manifest) and the registered ones (`listServices`, filtered by `<descriptor>/`),
/// deduplicated and sorted.
pub fn kernel_instances(driver: Option<&Path>, descriptor: &str) -> Result<Vec<String>> {
    let _client = open_kernel(driver)?;
    let mut out = Vec::new();
    match rsbinder::hub::try_get_declared_instances(descriptor) {
        Ok(v) => out.extend(v),
        // A service manager without declarations (an older protocol) still lists.
        Err(e) => eprintln!(
            "note: getDeclaredInstances({descriptor}) failed: {e:?}; using listServices only"
        ),
    }
    let listed = rsbinder::hub::try_list_services(rsbinder::hub::DUMP_FLAG_PRIORITY_ALL)
        .map_err(|e| anyhow!("listServices failed: {e:?}"))?;
    let prefix = format!("{descriptor}/");
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

/// Calls `loadFile` with a null ParcelFileDescriptor, for contract tests. The AIDL argument
/// is non-nullable, so the generated proxy cannot send one; this writes the parcel by hand
/// (interface token, then the null marker) as a buggy or hostile client could. Returns the
/// reply's status.
pub fn load_file_with_null_fd(loader: &Strong<dyn IDmabufLoader>) -> Result<Status> {
    let binder = loader.as_binder();
    let remote = binder
        .as_remote()
        .context("the loader is not a remote proxy")?;
    let mut data: rsbinder::Parcel = remote
        .prepare_transact(true)
        .map_err(|e| anyhow!("prepare: {e:?}"))?;
    data.write(&Option::<ParcelFileDescriptor>::None)
        .map_err(|e| anyhow!("write null fd: {e:?}"))?;
    // loadFile is the first method of IDmabufLoader.aidl.
    match remote.submit_transact(rsbinder::FIRST_CALL_TRANSACTION, &data, 0) {
        Ok(Some(mut reply)) => reply
            .read::<Status>()
            .map_err(|e| anyhow!("reply status: {e:?}")),
        Ok(None) => Err(anyhow!("two-way call got no reply")),
        // The transaction itself failed: report it as a transport status.
        Err(code) => Ok(Status::from(code)),
    }
}
