//! dmabuf_loader_client: the `dmabuf-loader` command (load, heaps, info, bench) and the
//! pieces it is made of, reusable by tests and tools.

pub mod bench;
pub mod bench_into;
pub mod cli;
pub mod echo;
mod progress;
mod rate;
pub mod session;
pub mod verify;
