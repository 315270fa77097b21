//! Where the service listens and how a client reaches it.
//!
//! - Kernel binder (the default wherever `/dev/binderfs/binder` or `/dev/binder` exists): the
//!   service registers `vendor.dmabufloader.IDmabufLoader/default` with the service manager
//!   (servicemanager on Android, `rsb_hub` on Linux) and serves on a binder thread pool.
//! - RPC binder on a unix socket (`--socket PATH`), for machines without kernel binder: the
//!   android-13+ wire, fds as SCM_RIGHTS, one worker thread per client connection, callbacks
//!   over a connection the client opens for them. The socket's file mode is the access control.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::backend::{self, Connection, FromIBinder, ServerHandle, Strong};

/// How long a kernel-binder client waits for the service to register.
pub const KERNEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Kernel binder devices, in the order they are tried.
pub const BINDER_DEVICES: [&str; 2] = ["/dev/binderfs/binder", "/dev/binder"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Kernel { driver: PathBuf },
    Unix { path: PathBuf },
}

impl Transport {
    /// `--socket` wins; else the given binder device; else the first one that exists.
    pub fn choose(socket: Option<&Path>, binder_device: Option<&Path>) -> Result<Transport> {
        if let Some(path) = socket {
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()?.join(path)
            };
            return Ok(Transport::Unix { path });
        }
        if let Some(d) = binder_device {
            return Ok(Transport::Kernel {
                driver: d.to_path_buf(),
            });
        }
        match BINDER_DEVICES.iter().map(Path::new).find(|p| p.exists()) {
            Some(d) => Ok(Transport::Kernel {
                driver: d.to_path_buf(),
            }),
            None => bail!(
                "this machine has no kernel binder ({}); use a unix socket: --socket PATH",
                BINDER_DEVICES.join(", ")
            ),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Kernel { driver } => format!("kernel binder {}", driver.display()),
            Transport::Unix { path } => format!("unix socket {}", path.display()),
        }
    }
}

/// Publishes `service` as `name` on `transport` with room for `threads` calls at once.
pub fn serve<T: ?Sized + FromIBinder>(
    transport: &Transport,
    name: &str,
    service: &Strong<T>,
    threads: u32,
) -> Result<ServerHandle> {
    match transport {
        Transport::Kernel { driver } => {
            backend::serve_kernel(driver, threads, name, service.as_binder())
        }
        Transport::Unix { path } => backend::serve_unix(path, threads, name, service.as_binder()),
    }
}

/// Connects to `name` on `transport`. `connections` bounds the calls this client can have in
/// flight at once over a socket (kernel binder has no such limit).
pub fn connect<T: ?Sized + FromIBinder>(
    transport: &Transport,
    name: &str,
    connections: u32,
) -> Result<Connection<T>> {
    match transport {
        Transport::Kernel { driver } => backend::connect_kernel(Some(driver), name, KERNEL_WAIT),
        Transport::Unix { path } => backend::connect_unix(path, name, connections, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_flag_wins_and_relative_paths_become_absolute() {
        let t =
            Transport::choose(Some(Path::new("x.sock")), Some(Path::new("/dev/binder"))).unwrap();
        match t {
            Transport::Unix { path } => assert!(path.is_absolute() && path.ends_with("x.sock")),
            other => panic!("{other:?}"),
        }
        let k = Transport::choose(None, Some(Path::new("/dev/vndbinder"))).unwrap();
        assert_eq!(
            k,
            Transport::Kernel {
                driver: "/dev/vndbinder".into()
            }
        );
    }

    #[test]
    fn without_binder_devices_the_error_says_what_to_do() {
        if BINDER_DEVICES.iter().any(|d| Path::new(d).exists()) {
            return; // a machine with binder picks it; covered by the VM rig
        }
        let err = Transport::choose(None, None).unwrap_err();
        assert!(format!("{err}").contains("--socket"), "{err}");
    }
}
