//! Fixtures the loader's integration tests share (each test file is its own crate and uses a
//! subset, hence the allow).
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use dmabuf_loader::{Config, Loader};

static LOCK: Mutex<()> = Mutex::new(());

/// Every test takes this lock: the fd-leak checks count /proc/self/fd, which must not change
/// under them.
pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch directory on a disk file system (O_DIRECT capable), not tmpfs; removed when the
/// test drops it.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("DMABUF_LOADER_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-scratch")
        });
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: every byte differs from its neighbours and from other offsets.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut f = File::create(&p).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
    p
}

pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub fn loader_with(f: impl FnOnce(&mut Config)) -> Loader {
    let mut c = Config::default();
    f(&mut c);
    Loader::new(c).unwrap()
}
