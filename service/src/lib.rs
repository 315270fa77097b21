//! dmabuf_loader_service: the `vendor.dmabufloader.IDmabufLoader` binder service.
//!
//! A library of focused modules (the binary `dmabuf-loader-service` only parses flags and
//! wires them together):
//! - [`compat`]: the only code that differs between rsbinder (Linux) and AOSP's `binder` crate;
//! - [`service`]: the AIDL implementation; [`task`]: async loads, cancellation, client death;
//! - [`error`]: the one mapping from engine errors to binder statuses;
//! - [`config`]: limits and policy; [`admission`]: the shared bytes/concurrency budget;
//! - [`transport`]: kernel binder or RPC binder on a unix socket;
//! - [`convert`]: AIDL <-> engine types.

pub mod admission;
pub mod compat;
pub mod config;
pub mod convert;
pub mod error;
pub mod service;
pub mod task;
pub mod transport;

pub use service::{DmabufLoaderService, ShutdownHandle};
pub use transport::{Transport, SERVICE_NAME};
