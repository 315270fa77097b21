//! The latency baseline: an `IDmabufLoader` whose `loadFile` does no work at all - it returns
//! a dup of the fd it was given. A call to it is "a bare binder call passing one fd each way",
//! through the same transport, in another process, as a real `loadFile`.
//!
//! `dmabuf-loader` starts it as a child (`dmabuf-loader __bench-echo ...`) for `bench
//! --latency`; the child serves until its stdin is closed (the parent exiting closes it).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{bail, Context, Result};
use dmabuf_loader_binder::aidl::ErrorCode::ErrorCode;
use dmabuf_loader_binder::aidl::HeapInfo::HeapInfo;
use dmabuf_loader_binder::aidl::IDmabufLoader::{BnDmabufLoader, IDmabufLoader};
use dmabuf_loader_binder::aidl::ILoadCallback::ILoadCallback;
use dmabuf_loader_binder::aidl::ILoadTask::ILoadTask;
use dmabuf_loader_binder::aidl::LoadRequest::LoadRequest;
use dmabuf_loader_binder::aidl::LoadResult::LoadResult;
use dmabuf_loader_binder::aidl::ServiceInfo::ServiceInfo;
use dmabuf_loader_binder::{
    self as binder, dup_pfd, BinderResult, Connection, Interface, ParcelFileDescriptor, Strong,
    Transport,
};

/// Name the echo service registers under on kernel binder.
pub const ECHO_NAME: &str = "vendor.dmabufloader.IDmabufLoader/bench-echo";

struct Echo;

impl Interface for Echo {}

fn unsupported<T>() -> BinderResult<T> {
    Err(binder::service_specific(
        ErrorCode::INTERNAL.0,
        "the latency baseline only implements loadFile",
    ))
}

impl IDmabufLoader for Echo {
    fn loadFile(&self, fd: &ParcelFileDescriptor) -> BinderResult<ParcelFileDescriptor> {
        let dup = dup_pfd(fd)
            .map_err(|e| binder::service_specific(ErrorCode::INTERNAL.0, &format!("dup: {e}")))?;
        Ok(ParcelFileDescriptor::new(dup))
    }
    fn load(&self, _: &ParcelFileDescriptor, _: &LoadRequest) -> BinderResult<LoadResult> {
        unsupported()
    }
    fn loadAsync(
        &self,
        _: &ParcelFileDescriptor,
        _: &LoadRequest,
        _: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        unsupported()
    }
    fn loadInto(
        &self,
        _: &ParcelFileDescriptor,
        _: &LoadRequest,
        _: &ParcelFileDescriptor,
        _: i64,
    ) -> BinderResult<LoadResult> {
        unsupported()
    }
    fn loadIntoAsync(
        &self,
        _: &ParcelFileDescriptor,
        _: &LoadRequest,
        _: &ParcelFileDescriptor,
        _: i64,
        _: &Strong<dyn ILoadCallback>,
    ) -> BinderResult<Strong<dyn ILoadTask>> {
        unsupported()
    }
    fn getHeaps(&self) -> BinderResult<Vec<HeapInfo>> {
        unsupported()
    }
    fn getServiceInfo(&self) -> BinderResult<ServiceInfo> {
        unsupported()
    }
}

/// Child side: serve the echo on `transport`, print "ready", serve until stdin closes.
pub fn serve_child(transport: &Transport) -> Result<()> {
    let echo = dmabuf_loader_binder::new_binder!(BnDmabufLoader, Echo);
    let _server = binder::serve(transport, ECHO_NAME, &echo, 2)?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}

/// Parent side: the running echo child and a connection to it.
pub struct EchoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pub conn: Connection<dyn IDmabufLoader>,
    _dir: Option<tempfile::TempDir>,
}

impl EchoServer {
    /// Starts the echo next to the real service: on a socket in a temp dir when `like` is a
    /// socket, else on the same binder device under [`ECHO_NAME`].
    pub fn start(like: &Transport) -> Result<EchoServer> {
        let (dir, transport) = match like {
            Transport::Unix { .. } => {
                let dir = tempfile::tempdir().context("temp dir for the echo socket")?;
                let path: PathBuf = dir.path().join("echo.sock");
                (Some(dir), Transport::Unix { path })
            }
            Transport::Kernel { driver } => (
                None,
                Transport::Kernel {
                    driver: driver.clone(),
                },
            ),
        };
        let exe = std::env::current_exe().context("locating dmabuf-loader")?;
        let mut cmd = Command::new(exe);
        match &transport {
            Transport::Unix { path } => cmd.args(["--socket".as_ref(), path.as_os_str()]),
            Transport::Kernel { driver } => {
                cmd.args(["--binder-device".as_ref(), driver.as_os_str()])
            }
        };
        let mut child = cmd
            .arg("__bench-echo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the echo baseline")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("echo stdout")?).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the echo baseline did not start");
        }
        let stdin = child.stdin.take();
        let conn = binder::connect(&transport, ECHO_NAME, 1)?;
        Ok(EchoServer {
            child,
            stdin,
            conn,
            _dir: dir,
        })
    }
}

impl EchoServer {
    /// The echo server's process id (to pin it next to the service).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
