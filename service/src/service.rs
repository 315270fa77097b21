//! The `IDmabufLoader` implementation.
//!
//! Every method: check the caller, convert the request, let the engine validate the fd
//! (cheap, no allocation), admit the load against the shared budget, then run it. Failures
//! before the load starts are thrown as ServiceSpecificExceptions from the call itself (also
//! for `loadAsync`); failures after an async load started arrive at `ILoadCallback.onError`.
//! `loadInto`/`loadIntoAsync` (v2) take the same steps with the caller's own buffer as the
//! destination: the engine validates the target too, nothing is allocated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dmabuf_loader::{ErrorKind, LoadControl, LoadError, Loader};

use dmabuf_loader_binder::aidl::HeapInfo::HeapInfo;
use dmabuf_loader_binder::aidl::IDmabufLoader::{BnDmabufLoader, IDmabufLoader};
use dmabuf_loader_binder::aidl::ILoadCallback::ILoadCallback;
use dmabuf_loader_binder::aidl::ILoadTask::ILoadTask;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::aidl::ServiceInfo::ServiceInfo;
use dmabuf_loader_binder::{
    self as binder, borrow_pfd, BinderResult, Interface, ParcelFileDescriptor, Strong,
};

use crate::admission::{Admission, Permit};
use crate::config::ServiceConfig;
use crate::convert::{filled_to_aidl, heap_to_aidl, request_from_aidl, result_to_aidl};
use crate::error::OrBinderStatus;
use crate::task::{self, AsyncLoad, Job, TaskEntry, TaskRegistry};

/// The service state shared by every binder thread.
pub struct DmabufLoaderService {
    loader: Arc<Loader>,
    config: ServiceConfig,
    admission: Arc<Admission>,
    tasks: Arc<TaskRegistry>,
    /// Transport description for `getServiceInfo`, e.g. "unix socket /run/x.sock".
    transport: String,
}

/// Handle kept by `main` to shut the service down cleanly.
#[derive(Clone)]
pub struct ShutdownHandle {
    admission: Arc<Admission>,
    tasks: Arc<TaskRegistry>,
}

impl ShutdownHandle {
    /// Refuses new loads, cancels running ones and waits up to `timeout` for them to unwind.
    /// Returns true if every load ended in time.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let n = self.tasks.cancel_all();
        log::info!("shutting down: cancelled {n} running load(s)");
        self.admission.wait_idle(timeout)
    }
}

impl DmabufLoaderService {
    /// Probes the machine (heaps, kernel features) through the engine.
    pub fn new(config: ServiceConfig, transport: String) -> anyhow::Result<Self> {
        let engine_config = dmabuf_loader::Config {
            max_load_bytes: config.max_load_bytes,
            allowed_heaps: config.allowed_heaps.clone(),
            file_extent_devices: config.file_extent_devices.clone(),
            allow_block_devices: config.allow_block_devices,
            ..Default::default()
        };
        let loader = Loader::new(engine_config).context("starting the loader engine")?;
        let heaps: Vec<_> = loader
            .heaps()
            .iter()
            .map(|h| format!("{}({:?})", h.name, h.kind))
            .collect();
        log::info!(
            "engine ready: heaps [{}], io_uring {}, config {:?}",
            heaps.join(", "),
            loader.capabilities().io_uring,
            config
        );
        Ok(DmabufLoaderService {
            loader: Arc::new(loader),
            admission: Admission::new(config.max_bytes_in_flight, config.max_concurrent_loads),
            tasks: TaskRegistry::new(),
            config,
            transport,
        })
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            admission: Arc::clone(&self.admission),
            tasks: Arc::clone(&self.tasks),
        }
    }

    /// The binder object to publish.
    pub fn into_binder(self) -> Strong<dyn IDmabufLoader> {
        dmabuf_loader_binder::new_binder!(BnDmabufLoader, self)
    }

    fn check_caller(&self) -> Result<u32, LoadError> {
        let uid = binder::calling_uid();
        match &self.config.allowed_uids {
            Some(allowed) if !allowed.contains(&uid) => Err(LoadError::msg(
                ErrorKind::PermissionDenied,
                format!("uid {uid} is not allowed to use this service (allowed_uids)"),
            )),
            _ => Ok(uid),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.config.load_timeout.map(|t| Instant::now() + t)
    }

    /// Every check of a load, in the order each entry point takes them: the caller, the
    /// request and its source (engine `prepare`), a place in the admission budget (the buffer's
    /// bytes), a task entry (cancel, death). Nothing is allocated or read yet.
    fn admit(
        &self,
        fd: &ParcelFileDescriptor,
        req: &dmabuf_loader::LoadRequest,
    ) -> Result<Admitted<dmabuf_loader::Prepared>, LoadError> {
        let uid = self.check_caller()?;
        let prepared = self.loader.prepare(borrow_pfd(fd), req)?;
        let bytes = prepared.buffer_size();
        self.hold(uid, prepared, bytes)
    }

    /// The same for a load into the caller's buffer: the target and offset are checked by the
    /// engine too, and the budget counts the range's bytes (the service allocates nothing, but
    /// the I/O is the same).
    fn admit_into(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        target: &ParcelFileDescriptor,
        offset: i64,
    ) -> Result<Admitted<dmabuf_loader::PreparedInto>, LoadError> {
        let uid = self.check_caller()?;
        let req = request_from_aidl(request)?;
        let offset = target_offset(offset)?;
        let prepared =
            self.loader
                .prepare_into(borrow_pfd(fd), &req, borrow_pfd(target), offset)?;
        let bytes = prepared.data_len();
        self.hold(uid, prepared, bytes)
    }

    /// The last two steps of `admit`/`admit_into`: `bytes` of the admission budget, then a
    /// task entry.
    fn hold<P>(&self, uid: u32, prepared: P, bytes: u64) -> Result<Admitted<P>, LoadError> {
        let permit = self.admission.try_admit(uid, bytes)?;
        let entry = self.tasks.register()?;
        Ok(Admitted {
            uid,
            prepared,
            permit,
            entry,
        })
    }

    /// A synchronous load on the calling binder thread.
    fn load_sync(
        &self,
        fd: &ParcelFileDescriptor,
        req: &dmabuf_loader::LoadRequest,
    ) -> Result<dmabuf_loader::Loaded, LoadError> {
        let entered = Instant::now();
        let Admitted {
            uid,
            prepared,
            permit,
            entry,
        } = self.admit(fd, req)?;
        let what = describe(uid, &prepared);
        let ctl = LoadControl {
            cancel: entry.cancel.clone(),
            deadline: self.deadline(),
            progress: None,
        };
        let loaded = self.loader.run(prepared, &ctl)?;
        // Small loads log at debug: at info, one line per 4 KiB load was a measurable part of
        // its latency (a write(2) per call; logd on a device) and floods the log.
        let level = if loaded.data_len >= SMALL_LOAD_LOG {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "load {}: {what}: {} bytes via {} in {:.1} ms ({:.0} MiB/s; {:.3} ms in the call)",
            entry.id,
            loaded.data_len,
            loaded.io_path,
            loaded.total_time.as_secs_f64() * 1e3,
            loaded.data_len as f64 / (1 << 20) as f64 / loaded.total_time.as_secs_f64().max(1e-9),
            entered.elapsed().as_secs_f64() * 1e3
        );
        drop(permit);
        Ok(loaded)
    }
}

/// A load that passed every check and holds its place (see `admit`).
struct Admitted<P> {
    uid: u32,
    prepared: P,
    permit: Permit,
    entry: TaskEntry,
}

/// The caller's `targetOffset`, refused when negative.
fn target_offset(off: i64) -> Result<u64, LoadError> {
    u64::try_from(off).map_err(|_| {
        LoadError::msg(
            ErrorKind::InvalidRange,
            format!("targetOffset {off} is negative"),
        )
    })
}

/// Our dup of the caller's target, handed back in the result (the engine keeps none).
fn dup_target(target: &ParcelFileDescriptor) -> Result<std::os::fd::OwnedFd, LoadError> {
    borrow_pfd(target).try_clone_to_owned().map_err(|e| {
        LoadError::new(
            ErrorKind::Internal,
            anyhow::Error::new(e).context("dup of the target for the result"),
        )
    })
}

impl DmabufLoaderService {
    /// A synchronous load into the caller's buffer, on the calling binder thread.
    fn load_into_sync(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        target: &ParcelFileDescriptor,
        offset: i64,
    ) -> Result<LoadResult, LoadError> {
        let Admitted {
            uid,
            prepared,
            permit,
            entry,
        } = self.admit_into(fd, request, target, offset)?;
        let ctl = LoadControl {
            cancel: entry.cancel.clone(),
            deadline: self.deadline(),
            progress: None,
        };
        let exporter = prepared.exporter().to_string();
        let filled = self.loader.run_into(prepared, &ctl)?;
        log::info!(
            "load {}: uid {uid}: {} bytes into the caller's {exporter} buffer at {} via {} in {:.1} ms",
            entry.id,
            filled.data_len,
            filled.target_offset,
            filled.io_path,
            filled.total_time.as_secs_f64() * 1e3
        );
        drop(permit);
        Ok(filled_to_aidl(filled, dup_target(target)?))
    }
}

/// Loads smaller than this log at debug level, larger ones at info.
const SMALL_LOAD_LOG: u64 = 1 << 20;

/// "uid 1000 /data/x.bin (4096 bytes) -> heap system" for the per-load log line (not built
/// when no log line will be written; the path is the one the engine read when validating).
fn describe(uid: u32, p: &dmabuf_loader::Prepared) -> String {
    let level = if p.data_len() >= SMALL_LOAD_LOG {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    if !log::log_enabled!(level) {
        return String::new();
    }
    format!(
        "uid {uid} {} ({} bytes) -> heap {}",
        p.path(),
        p.data_len(),
        p.heap().name
    )
}

impl Interface for DmabufLoaderService {}

impl IDmabufLoader for DmabufLoaderService {
    fn loadFile(&self, fd: &ParcelFileDescriptor) -> BinderResult<ParcelFileDescriptor> {
        let loaded = self
            .load_sync(fd, &dmabuf_loader::LoadRequest::default())
            .or_status()?;
        Ok(ParcelFileDescriptor::new(loaded.fd))
    }

    fn load(&self, fd: &ParcelFileDescriptor, request: &LoadRequest) -> BinderResult<LoadResult> {
        let req = request_from_aidl(request).or_status()?;
        self.load_sync(fd, &req).map(result_to_aidl).or_status()
    }

    fn loadAsync(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        callback: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        let start = || -> Result<Strong<dyn ILoadTask>, LoadError> {
            let req = request_from_aidl(request)?;
            let Admitted {
                uid,
                prepared,
                permit,
                entry,
            } = self.admit(fd, &req)?;
            let what = describe(uid, &prepared);
            task::spawn(AsyncLoad {
                loader: Arc::clone(&self.loader),
                job: Job::Allocate(prepared),
                permit,
                entry,
                deadline: self.deadline(),
                callback: callback.clone(),
                what,
            })
        };
        start().or_status()
    }

    fn loadInto(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        target: &ParcelFileDescriptor,
        offset: i64,
    ) -> BinderResult<LoadResult> {
        self.load_into_sync(fd, request, target, offset).or_status()
    }

    fn loadIntoAsync(
        &self,
        fd: &ParcelFileDescriptor,
        request: &LoadRequest,
        target: &ParcelFileDescriptor,
        offset: i64,
        callback: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        let start = || -> Result<Strong<dyn ILoadTask>, LoadError> {
            let Admitted {
                uid,
                prepared,
                permit,
                entry,
            } = self.admit_into(fd, request, target, offset)?;
            // (`offset` passed admit_into: not negative.)
            let what = format!(
                "uid {uid}: {} bytes into the caller's {} buffer at {offset}",
                prepared.data_len(),
                prepared.exporter()
            );
            task::spawn(AsyncLoad {
                loader: Arc::clone(&self.loader),
                job: Job::Into {
                    prepared,
                    reply: dup_target(target)?,
                },
                permit,
                entry,
                deadline: self.deadline(),
                callback: callback.clone(),
                what,
            })
        };
        start().or_status()
    }

    fn getHeaps(&self) -> BinderResult<Vec<HeapInfo>> {
        self.check_caller().or_status()?;
        let allowed = |name: &str| {
            self.config
                .allowed_heaps
                .as_ref()
                .is_none_or(|a| a.iter().any(|h| h == name))
        };
        Ok(self
            .loader
            .heaps()
            .iter()
            .filter(|h| allowed(&h.name))
            .map(heap_to_aidl)
            .collect())
    }

    fn getServiceInfo(&self) -> BinderResult<ServiceInfo> {
        self.check_caller().or_status()?;
        let caps = self.loader.capabilities();
        Ok(ServiceInfo {
            implementation: format!(
                "dmabuf-loader {} ({}, {})",
                env!("CARGO_PKG_VERSION"),
                binder::BINDER_CRATE,
                self.transport
            ),
            kernelRelease: caps.kernel_release.clone(),
            ioUring: caps.io_uring,
            ioUringDmabufRegbuf: caps.io_uring_dmabuf_regbuf,
            cachestat: caps.cachestat,
            maxLoadBytes: i64::try_from(self.config.max_load_bytes).unwrap_or(i64::MAX),
        })
    }
}
