//! dmabuf_loader_service: the `vendor.dmabufloader.IDmabufLoader` binder service.
//!
//! A library of focused modules (the binary `dmabuf-loader-service` only parses flags and
//! wires them together):
//! - [`service`]: the AIDL implementation; [`task`]: async loads, cancellation, client death;
//! - [`error`]: the one mapping from engine errors to binder statuses;
//! - [`config`]: limits and policy; [`admission`]: the shared bytes/concurrency budget;
//! - [`convert`]: AIDL <-> engine types.
//!
//! Everything binder-specific (rsbinder on Linux, AOSP's `binder` crate on Android; the
//! transports; the ErrorCode names) comes from the shared `dmabuf_loader_binder` crate.

pub mod admission;
pub mod config;
pub mod convert;
pub mod error;
pub mod service;
pub mod task;

pub use service::{DmabufLoaderService, ShutdownHandle};
