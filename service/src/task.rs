//! Running loads: the registry every load (sync or async) is entered in, so shutdown can cancel
//! them; the worker thread of a `loadAsync` call; and its `ILoadTask` binder.
//!
//! An async load runs on its own thread. It reports progress (throttled) and exactly one of
//! onComplete/onError to the caller's callback. A death notification on the callback binder
//! cancels it, as does a callback call failing with a dead peer, so a client that dies mid-load
//! stops costing I/O at once and its buffer is freed as soon as the engine unwinds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dmabuf_loader::{CancelToken, ErrorKind, LoadControl, LoadError, Loader, Prepared};

use dmabuf_loader_binder::aidl::ILoadCallback::ILoadCallback;
use dmabuf_loader_binder::aidl::ILoadTask::{BnLoadTask, ILoadTask};
use dmabuf_loader_binder::{self as binder, error_code_name, BinderResult, Interface, Strong};

use crate::admission::Permit;
use crate::convert::result_to_aidl;
use crate::error::{error_code, error_message};

/// Minimum interval between two progress callbacks (the last one is always sent).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// Every load that is running, by id, with its cancel token.
#[derive(Debug, Default)]
pub struct TaskRegistry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, CancelToken>>,
    closed: AtomicBool,
}

/// A load's entry in the registry; removed on drop.
#[derive(Debug)]
pub struct TaskEntry {
    registry: Arc<TaskRegistry>,
    pub id: u64,
    pub cancel: CancelToken,
}

impl TaskRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(TaskRegistry::default())
    }

    /// Enters a new load; refused (BUSY) once the service is shutting down.
    pub fn register(self: &Arc<Self>) -> Result<TaskEntry, LoadError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return Err(LoadError::msg(
                ErrorKind::Busy,
                "the service is shutting down",
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let cancel = CancelToken::new();
        live.insert(id, cancel.clone());
        Ok(TaskEntry {
            registry: Arc::clone(self),
            id,
            cancel,
        })
    }

    /// Refuses new loads and cancels every running one; returns how many were cancelled.
    pub fn cancel_all(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        self.closed.store(true, Ordering::Release);
        for token in live.values() {
            token.cancel();
        }
        live.len()
    }

    pub fn running(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for TaskEntry {
    fn drop(&mut self) {
        self.registry
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The `ILoadTask` handed to the caller of `loadAsync`.
struct LoadTask {
    id: u64,
    cancel: CancelToken,
}

impl Interface for LoadTask {}

impl ILoadTask for LoadTask {
    fn cancel(&self) -> BinderResult<()> {
        if !self.cancel.is_cancelled() {
            log::info!(
                "task {}: cancel requested by uid {}",
                self.id,
                binder::calling_uid()
            );
        }
        self.cancel.cancel();
        Ok(())
    }
}

/// Everything an async load needs on its thread.
pub struct AsyncLoad {
    pub loader: Arc<Loader>,
    pub prepared: Prepared,
    pub permit: Permit,
    pub entry: TaskEntry,
    pub deadline: Option<Instant>,
    pub callback: Strong<dyn ILoadCallback>,
    /// For logs: who asked and for what.
    pub what: String,
}

/// Starts `load` on its own thread and returns its `ILoadTask`.
pub fn spawn(load: AsyncLoad) -> Result<Strong<dyn ILoadTask>, LoadError> {
    let id = load.entry.id;
    let cancel = load.entry.cancel.clone();
    let on_death = {
        let cancel = cancel.clone();
        move || {
            log::info!("task {id}: the client's callback died; cancelling its load");
            cancel.cancel();
        }
    };
    // Without a death notification a dead client's load would only stop at its next callback.
    let death = match binder::link_to_death(load.callback.as_binder(), on_death) {
        Ok(link) => Some(link),
        Err(e) => {
            log::warn!("task {id}: no death notification for the callback ({e:#}); a dead client is noticed at its next progress callback");
            None
        }
    };
    std::thread::Builder::new()
        .name(format!("dmabuf-load-{id}"))
        .spawn(move || {
            run(load);
            drop(death);
        })
        .map_err(|e| {
            LoadError::new(
                ErrorKind::Internal,
                anyhow::Error::new(e).context("starting the load thread"),
            )
        })?;
    Ok(dmabuf_loader_binder::new_binder!(
        BnLoadTask,
        LoadTask { id, cancel }
    ))
}

fn run(load: AsyncLoad) {
    let AsyncLoad {
        loader,
        prepared,
        permit,
        entry,
        deadline,
        callback,
        what,
    } = load;
    let id = entry.id;
    let total = prepared.data_len();
    log::info!("task {id}: loading {what}");

    let cancel = entry.cancel.clone();
    let last = Mutex::new(None::<Instant>);
    let progress = |done: u64, total: u64| {
        let now = Instant::now();
        {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if done < total && last.is_some_and(|t| now.duration_since(t) < PROGRESS_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        if let Err(status) = callback.onProgress(done as i64, total as i64) {
            log::info!("task {id}: progress callback failed ({status:?}); cancelling");
            cancel.cancel();
        }
    };
    let ctl = LoadControl {
        cancel: cancel.clone(),
        deadline,
        progress: Some(&progress),
    };
    let started = Instant::now();
    let outcome = loader.run(prepared, &ctl);
    // The load is over: give its share back before telling the client, so a client that
    // starts its next load the moment it hears of this one is not refused with BUSY.
    drop(permit);
    drop(entry);
    let delivered = match outcome {
        Ok(loaded) => {
            log::info!(
                "task {id}: loaded {} bytes from heap {} via {} in {:.1} ms",
                loaded.data_len,
                loaded.heap,
                loaded.io_path,
                started.elapsed().as_secs_f64() * 1e3
            );
            callback.onComplete(&result_to_aidl(loaded))
        }
        Err(err) => {
            let code = error_code(err.kind);
            log::info!(
                "task {id}: failed ({total}-byte request): {}: {}",
                error_code_name(code.0),
                error_message(&err)
            );
            callback.onError(code.0, &error_message(&err))
        }
    };
    if let Err(status) = delivered {
        log::info!("task {id}: the client did not take the result ({status:?}); buffer released");
    }
}
