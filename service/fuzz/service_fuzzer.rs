//! Random-parcel fuzzer for vendor.dmabufloader.IDmabufLoader (Android only: built by Soong as
//! `vendor.dmabufloader-service_fuzzer`, see ../Android.bp; binder_random_parcel_rs and
//! libfuzzer_sys exist only in an AOSP tree).
//!
//! One service object lives for the whole fuzzing process, as it does on a device; each input is
//! a sequence of transactions with random codes, flags and parcel contents (fuzz_service).
//! The limits are small so that a well-formed request for a huge load fails with TOO_LARGE
//! instead of exhausting the fuzzing machine.

#![no_main]

use std::sync::OnceLock;

use binder::{SpIBinder, Strong};
use binder_random_parcel_rs::fuzz_service;
use dmabuf_loader_binder::aidl::IDmabufLoader::IDmabufLoader;
use dmabuf_loader_service::config::ServiceConfig;
use dmabuf_loader_service::DmabufLoaderService;
use libfuzzer_sys::fuzz_target;

fn service() -> &'static Strong<dyn IDmabufLoader> {
    static SERVICE: OnceLock<Strong<dyn IDmabufLoader>> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let config = ServiceConfig {
            max_load_bytes: 16 << 20,
            max_bytes_in_flight: 64 << 20,
            ..ServiceConfig::defaults()
        };
        DmabufLoaderService::new(config, "fuzz".to_string())
            .expect("the service starts on this device")
            .into_binder()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut binder: SpIBinder = service().as_binder();
    fuzz_service(&mut binder, data);
});
