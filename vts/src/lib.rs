//! VTS suite for `vendor.dmabufloader.IDmabufLoader`: contract tests every implementation must
//! pass, run once per instance (service-manager instances on kernel binder, `--socket` paths on
//! RPC binder). The binary `VtsHalDmabufLoaderTargetTest` is the gtest-like front end.

pub mod binder;
pub mod cases;
/// The v2 cases (loadInto, loadIntoAsync); not in the v1 suite built from frozen v1.
#[cfg(not(aidl_v1))]
pub mod load_into;
pub mod os;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::binder::{Connection, Target};

/// One instance under test, connected on first use and reconnected if its session died (so
/// one crashing case does not fail all the following ones for a stale proxy).
pub struct Instance {
    /// The name tests are suffixed with: the instance name on kernel binder, the socket path on
    /// RPC.
    pub name: String,
    pub target: Target,
    conn: Mutex<Option<Arc<Connection>>>,
}

impl Instance {
    pub fn new(name: String, target: Target) -> Instance {
        Instance {
            name,
            target,
            conn: Mutex::new(None),
        }
    }

    pub fn connection(&self) -> Result<Arc<Connection>> {
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.as_ref() {
            if c.is_alive() {
                return Ok(c.clone());
            }
            eprintln!("note: connection to {} is dead; reconnecting", self.name);
        }
        let c = Arc::new(
            binder::connect(&self.target)
                .with_context(|| format!("connect to instance {}", self.name))?,
        );
        *g = Some(c.clone());
        Ok(c)
    }
}

/// State shared by all tests of a run: the scratch directory and the files generated in it
/// (a 64 MiB file is written once, not once per case).
pub struct Env {
    dir: tempfile::TempDir,
    files: Mutex<HashMap<(u64, u64), PathBuf>>,
}

/// Environment variable naming the directory for generated test files.
pub const TMPDIR_ENV: &str = "VTS_DMABUF_LOADER_TMPDIR";

/// Default parent of the scratch directory: /data/local/tmp on Android, the system temp dir
/// elsewhere.
pub fn default_tmp_parent() -> PathBuf {
    if cfg!(target_os = "android") {
        PathBuf::from("/data/local/tmp")
    } else {
        std::env::temp_dir()
    }
}

impl Env {
    pub fn new(parent: &Path) -> Result<Env> {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("vts-dmabuf-loader.")
            .tempdir_in(parent)
            .with_context(|| format!("create a scratch directory in {}", parent.display()))?;
        Ok(Env {
            dir,
            files: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file of `size` bytes of the `seed` pattern (see [`os::pattern_word`]), created once,
    /// dropped from the page cache each time it is handed out.
    pub fn pattern_file(&self, size: u64, seed: u64) -> Result<PathBuf> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let p = match files.get(&(size, seed)) {
            Some(p) => p.clone(),
            None => {
                let p = self.dir().join(format!("pattern-{size}-{seed}.bin"));
                os::write_pattern_file(&p, size, seed)?;
                files.insert((size, seed), p.clone());
                p
            }
        };
        // Every case starts cold, so a service's O_DIRECT paths get exercised, not only its
        // page-cache copies (the checks read the file back, which warms it again).
        os::drop_page_cache(&p)?;
        Ok(p)
    }

    /// A fresh path in the scratch directory for a one-off file.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}
