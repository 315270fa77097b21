//! dmabuf_loader: the binder-free core of the dmabuf-loader service.
//!
//! An untrusted file fd goes in; a buffer fd (a dma-buf wherever the machine has a source of
//! them) filled with the file's bytes comes out. See `engine` for the data path.

pub mod api;

pub use api::*;
