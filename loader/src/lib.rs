//! dmabuf_loader: the binder-free core of the dmabuf-loader service.
//!
//! An untrusted file fd goes in; a buffer fd (a dma-buf wherever the machine has a source of
//! them) filled with the file's bytes comes out. The public surface is what a user needs: the
//! request/result/error types and capabilities (`api.rs`), [`Loader`] and [`Prepared`], and a
//! few safe helpers ([`BufferView`], [`Loader::allocate`], [`device_read`], the size parser
//! [`size`]). Everything else is private: start reading at `engine.rs` for the data path;
//! `source.rs` validates the fd and owns its identity (readlink, reopen, same-inode check),
//! `buffer/` holds the providers, `uring.rs` the io_uring read loop, `sys/` every `unsafe`
//! line. `target.rs` fills a buffer the caller already owns ([`Loader::load_into`], AIDL v2
//! `loadInto`) through the same readers.

mod api;
mod buffer;
mod engine;
mod limit;
mod loader;
pub mod size;
mod source;
mod sys;
mod target;
mod uring;
mod view;

pub use api::*;
pub use buffer::memory::meminfo_bytes;
pub use buffer::pages::{hugetlb_pools, shmem_thp_sizes, HugePages, HugetlbPool};
pub use buffer::udmabuf::size_limit as udmabuf_size_limit;
pub use engine::SMALL_RANGE;
pub use limit::{device_read, page_cache_bytes};
pub use loader::{Loader, Prepared, PreparedInto};
pub use source::SourceError;
pub use sys::statx::{dio_align, DioAlign};
pub use target::TargetError;
pub use view::{begin_cpu_read, end_cpu_read, BufferView, MappedBuffer};
