//! A connection to the service and the calls the command line makes through it.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use dmabuf_loader_binder::aidl::IDmabufLoader::IDmabufLoader;
use dmabuf_loader_binder::aidl::ILoadCallback::{BnLoadCallback, ILoadCallback};
use dmabuf_loader_binder::aidl::ILoadTask::ILoadTask;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::{
    self as binder, clone_result, BinderResult, Connection, Interface, ParcelFileDescriptor,
    Strong, Transport, SERVICE_NAME,
};
pub use dmabuf_loader_binder::{CallError, CallResult};

fn call<T>(r: BinderResult<T>) -> CallResult<T> {
    CallError::check(r)
}

/// An open connection to dmabuf-loader-service.
pub struct Session {
    conn: Connection<dyn IDmabufLoader>,
    pub transport: Transport,
}

impl Session {
    /// Connects over `transport`; `connections` = calls this client may have in flight at
    /// once over a socket.
    pub fn connect(transport: Transport, connections: u32) -> Result<Session> {
        let conn = binder::connect(&transport, SERVICE_NAME, connections)
            .with_context(|| format!("connecting to the service over {}", transport.describe()))?;
        Ok(Session { conn, transport })
    }

    pub fn proxy(&self) -> &Strong<dyn IDmabufLoader> {
        &self.conn.service
    }

    pub fn load_file(&self, file: impl AsFd) -> Result<CallResult<OwnedFd>> {
        let pfd = pfd_of(file)?;
        Ok(call(self.proxy().loadFile(&pfd)).map(OwnedFd::from))
    }

    pub fn load(&self, file: impl AsFd, req: &LoadRequest) -> Result<CallResult<LoadResult>> {
        let pfd = pfd_of(file)?;
        Ok(call(self.proxy().load(&pfd, req)))
    }

    /// Starts an async load; events arrive on the returned receiver.
    pub fn load_async(&self, file: impl AsFd, req: &LoadRequest) -> Result<CallResult<AsyncLoad>> {
        let pfd = pfd_of(file)?;
        let (tx, rx) = mpsc::channel();
        let on_death = Mutex::new(tx.clone());
        let callback =
            dmabuf_loader_binder::new_binder!(BnLoadCallback, Callback { tx: Mutex::new(tx) });
        let task = match call(self.proxy().loadAsync(&pfd, req, &callback)) {
            Ok(task) => task,
            Err(e) => return Ok(Err(e)),
        };
        // If the service dies mid-load no callback will ever come: without this the client
        // would wait for its whole timeout. Kernel binder reports the death of the task's
        // process; the waiter gets a dead-object error at once.
        let death = binder::link_to_death(task.as_binder(), move || {
            let _ = on_death
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(Event::Error(CallError::Binder(
                    "DeadObject: the service died during the async load".into(),
                )));
        })
        .context("asking for the service's death notification")?;
        Ok(Ok(AsyncLoad {
            task,
            events: rx,
            _callback: callback,
            _death: death,
        }))
    }
}

/// `ParcelFileDescriptor` holding a dup of `file` (the caller keeps its own fd).
pub fn pfd_of(file: impl AsFd) -> Result<ParcelFileDescriptor> {
    Ok(ParcelFileDescriptor::new(
        file.as_fd()
            .try_clone_to_owned()
            .context("dup of the file fd")?,
    ))
}

/// What the service reports about an async load.
#[derive(Debug)]
pub enum Event {
    Progress { done: u64, total: u64 },
    Complete(LoadResult),
    Error(CallError),
}

struct Callback {
    tx: Mutex<mpsc::Sender<Event>>,
}

impl Callback {
    fn send(&self, e: Event) {
        // The receiver is gone only when the client stopped waiting; nothing left to tell.
        let _ = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(e);
    }
}

impl Interface for Callback {}

impl ILoadCallback for Callback {
    fn onProgress(&self, done: i64, total: i64) -> BinderResult<()> {
        self.send(Event::Progress {
            done: done.max(0) as u64,
            total: total.max(0) as u64,
        });
        Ok(())
    }
    fn onComplete(&self, result: &LoadResult) -> BinderResult<()> {
        match clone_result(result) {
            Ok(r) => self.send(Event::Complete(r)),
            Err(e) => self.send(Event::Error(CallError::Binder(format!(
                "keeping the buffer fd: {e}"
            )))),
        }
        Ok(())
    }
    fn onError(&self, code: i32, message: &str) -> BinderResult<()> {
        self.send(Event::Error(CallError::Service {
            code,
            message: message.to_string(),
        }));
        Ok(())
    }
}

/// A running async load.
pub struct AsyncLoad {
    pub task: Strong<dyn ILoadTask>,
    pub events: mpsc::Receiver<Event>,
    _callback: Strong<dyn ILoadCallback>,
    /// Turns the service's death into an `Event::Error`; dropping it unregisters.
    _death: binder::DeathLink,
}

impl AsyncLoad {
    pub fn cancel(&self) -> CallResult<()> {
        call(self.task.cancel())
    }

    /// Waits for the end, calling `progress` on each progress event; `None` on timeout.
    pub fn wait(
        &self,
        timeout: Duration,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<CallResult<LoadResult>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Progress { done, total }) => progress(done, total),
                Ok(Event::Complete(r)) => return Ok(Ok(r)),
                Ok(Event::Error(e)) => return Ok(Err(e)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(anyhow!("no result from the service within {timeout:?}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(anyhow!("the callback was dropped without a result"))
                }
            }
        }
    }
}
