//! dmabuf_loader: the binder-free core of the dmabuf-loader service.
//!
//! An untrusted file fd goes in; a buffer fd (a dma-buf wherever the machine has a source of
//! them) filled with the file's bytes comes out. Start reading at [`engine`] for the data
//! path; [`source`] validates the fd, `buffer/` holds the providers, `uring` the io_uring
//! read loop, `sys/` every `unsafe` line. `target` fills a buffer the caller already owns
//! ([`Loader::load_into`], AIDL v2 `loadInto`) through the same readers.

pub mod api;
pub mod bench;
pub mod buffer;
pub mod engine;
mod loader;
pub mod source;
pub mod sys;
mod target;
mod uring;

pub use api::*;
pub use loader::{Loader, Prepared, PreparedInto};
pub use target::TargetError;
