//! vendor.dmabufloader version 1 as frozen (Soong's `vendor.dmabufloader-V1-rust`), under the
//! crate name `dmabuf_loader_aidl_v1` so that libdmabuf_loader_binder can link it next to
//! -V2-rust (both are crate `vendor_dmabufloader`). Android only; on a host the v1 bindings
//! are `dmabuf_loader_aidl::v1`.
pub use vendor_dmabufloader::*;
