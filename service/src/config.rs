//! Service limits and policy: command-line flags over a base that depends on the platform.
//!
//! On Android the base is system properties, the platform's way to tune a HAL:
//! `persist.vendor.dmabufloader.<key>` (settable at run time, survives reboots) over
//! `ro.vendor.dmabufloader.<key>` (the device's build.prop), read through AOSP's
//! `rustutils::system_properties`; e.g. `ro.vendor.dmabufloader.max_load_bytes=4G`,
//! `ro.vendor.dmabufloader.allowed_uids=1047,1000`. On a Linux host it is an optional TOML
//! file (`--config FILE`; toml has no vendor variant in AOSP):
//!
//! ```toml
//! # /vendor/etc/dmabuf-loader.toml (every key optional)
//! max_load_bytes = "4G"          # largest single load (TOO_LARGE above it)
//! max_bytes_in_flight = "8G"     # buffers being filled at once, all clients (BUSY above it)
//! max_concurrent_loads = 16      # loads running at once, all clients (BUSY above it)
//! allowed_heaps = ["system", "udmabuf"]   # UNKNOWN_HEAP for any other
//! allowed_uids = [1047, 1000]    # PERMISSION_DENIED for any other caller
//! load_timeout_ms = 60000        # TIMED_OUT past it (default 600000; 0 = no deadline)
//! # NVMe namespaces whose blocks the service may read directly for files on them
//! # (DMABUF_REGISTERED's extent route, docs/dmabuf-registered.md). Default: none. Only a
//! # namespace dedicated to what clients may read anyway, never one holding userdata.
//! file_extent_devices = ["/dev/block/by-name/models"]
//! # Block devices (e.g. a read-only partition of weights) as sources. Default: false, a
//! # block device fd is UNSUPPORTED_FILE_TYPE. The client must already hold a readable fd.
//! allow_block_devices = true
//! ```
//! The keys are the same everywhere, sizes take suffixes everywhere ([`dmabuf_loader::size`]);
//! a flag given on the command line wins over the same key in the file or property.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A load still running after this is cancelled with TIMED_OUT and its memory freed: a
/// stalled device (or a hung network file system behind the fd) must not hold a share of the
/// budget forever. Ten minutes is far beyond any healthy load (16 GiB at 100 MiB/s takes under
/// three); `load_timeout_ms = 0` disables the deadline.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Resolved limits and policy of a running service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Largest single load accepted.
    pub max_load_bytes: u64,
    /// Sum of the buffer sizes of the loads running at once, across all clients.
    pub max_bytes_in_flight: u64,
    /// Loads running at once, across all clients (sync and async).
    pub max_concurrent_loads: u32,
    /// Heaps callers may name; `None` = every heap the engine found.
    pub allowed_heaps: Option<Vec<String>>,
    /// Callers (binder calling uid) allowed to use the service; `None` = everyone the
    /// transport lets in (SELinux on Android, socket permissions on a host).
    pub allowed_uids: Option<Vec<u32>>,
    /// Deadline of one load, from the moment it starts running.
    pub load_timeout: Option<Duration>,
    /// NVMe namespaces the engine may read files' blocks from directly (the extent route of
    /// DMABUF_REGISTERED); empty = never.
    pub file_extent_devices: Vec<PathBuf>,
    /// Whether a block device fd is a source (the client opened it, so it may read it).
    pub allow_block_devices: bool,
}

impl ServiceConfig {
    /// Defaults for this machine: at most half of the RAM being loaded at any time, one load
    /// at most that big, sixteen loads at once. The byte budget is what bounds memory; the
    /// count only bounds each load's fixed cost (a binder thread, an io_uring, a populate
    /// helper: 0.1-1.2 MiB of service RSS per load in flight, issue 16). At four, eight
    /// 128 MiB loads at once got four BUSY answers while the disk had room for all of them.
    pub fn defaults() -> Self {
        let half_ram = mem_total_bytes().map(|m| m / 2).unwrap_or(4 << 30);
        ServiceConfig {
            max_load_bytes: half_ram,
            max_bytes_in_flight: half_ram,
            max_concurrent_loads: 16,
            allowed_heaps: None,
            allowed_uids: None,
            load_timeout: Some(DEFAULT_LOAD_TIMEOUT),
            file_extent_devices: Vec::new(),
            allow_block_devices: false,
        }
    }

    /// Checks the limits make sense together.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrent_loads == 0 {
            bail!("max_concurrent_loads must be at least 1");
        }
        if self.max_load_bytes == 0 {
            bail!("max_load_bytes must be at least 1");
        }
        if self.max_load_bytes > self.max_bytes_in_flight {
            bail!(
                "max_load_bytes ({}) exceeds max_bytes_in_flight ({}): such a load could never \
                 be admitted",
                self.max_load_bytes,
                self.max_bytes_in_flight
            );
        }
        if self.allowed_heaps.as_ref().is_some_and(|h| h.is_empty()) {
            bail!("allowed_heaps is empty: no load could succeed");
        }
        if self.allowed_uids.as_ref().is_some_and(|u| u.is_empty()) {
            bail!("allowed_uids is empty: no caller could use the service");
        }
        if let Some(p) = self.file_extent_devices.iter().find(|p| !p.is_absolute()) {
            bail!(
                "file_extent_devices: {} is not an absolute device path",
                p.display()
            );
        }
        Ok(())
    }
}

/// The same keys as the file, all optional: flags and file are merged key by key.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    /// Largest single load, in bytes (suffixes K, M, G, KiB... accepted).
    #[arg(long, value_parser = parse_bytes)]
    #[serde(default, deserialize_with = "de_bytes")]
    pub max_load_bytes: Option<u64>,
    /// Bytes being loaded at once across all clients; a load over it gets BUSY.
    #[arg(long, value_parser = parse_bytes)]
    #[serde(default, deserialize_with = "de_bytes")]
    pub max_bytes_in_flight: Option<u64>,
    /// Loads running at once across all clients; one more gets BUSY.
    #[arg(long)]
    pub max_concurrent_loads: Option<u32>,
    /// Comma-separated heaps callers may use (default: all found).
    #[arg(long, value_delimiter = ',')]
    pub allowed_heaps: Option<Vec<String>>,
    /// Comma-separated caller uids allowed (default: any caller).
    #[arg(long, value_delimiter = ',')]
    pub allowed_uids: Option<Vec<u32>>,
    /// Deadline of one load in milliseconds; past it the load fails with TIMED_OUT
    /// (default 600000, i.e. 10 minutes; 0 = no deadline).
    #[arg(long)]
    pub load_timeout_ms: Option<u64>,
    /// Comma-separated NVMe namespace device nodes (whole namespaces) from which the
    /// service may read a regular file's blocks directly, for DMABUF_REGISTERED's extent
    /// route (default: none). Only namespaces that hold nothing a client could not read
    /// through its own files: never userdata.
    #[arg(long, value_delimiter = ',')]
    pub file_extent_devices: Option<Vec<PathBuf>>,
    /// Accept block devices (whole disks, partitions) as sources: `true` or `false`
    /// (default false: a block device fd gets UNSUPPORTED_FILE_TYPE). The client's fd is what
    /// grants the right to read, as for files; the service never opens a device by name for it.
    #[arg(long, value_name = "true|false")]
    pub allow_block_devices: Option<bool>,
}

impl ConfigOverrides {
    /// Parses a TOML config file.
    #[cfg(not(target_os = "android"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// The keys set as system properties: `persist.vendor.dmabufloader.<key>` over
    /// `ro.vendor.dmabufloader.<key>`.
    #[cfg(target_os = "android")]
    pub fn from_properties() -> Result<Self> {
        Self::from_lookup(|key| {
            for prefix in ["persist.vendor.dmabufloader.", "ro.vendor.dmabufloader."] {
                let name = format!("{prefix}{key}");
                let value = rustutils::system_properties::read(&name)
                    .with_context(|| format!("reading system property {name}"))?;
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    return Ok(Some((name, v)));
                }
            }
            Ok(None)
        })
    }

    /// Reads every key through `lookup`, which returns where a key was found (for messages)
    /// and its text. Text forms: sizes with suffixes, integers, comma-separated lists.
    pub fn from_lookup(
        mut lookup: impl FnMut(&str) -> Result<Option<(String, String)>>,
    ) -> Result<Self> {
        fn parsed<T>(
            found: Option<(String, String)>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>> {
            found
                .map(|(name, text)| parse(text.trim()).map_err(|e| anyhow::anyhow!("{name}: {e}")))
                .transpose()
        }
        fn number<T: std::str::FromStr>(s: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            s.parse()
                .map_err(|e| format!("{s:?} is not a number ({e})"))
        }
        fn boolean(s: &str) -> Result<bool, String> {
            match s {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("{s:?} is not true or false")),
            }
        }
        fn list<T>(s: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
            s.split(',').map(|x| item(x.trim())).collect()
        }
        Ok(ConfigOverrides {
            max_load_bytes: parsed(lookup("max_load_bytes")?, parse_bytes)?,
            max_bytes_in_flight: parsed(lookup("max_bytes_in_flight")?, parse_bytes)?,
            max_concurrent_loads: parsed(lookup("max_concurrent_loads")?, number)?,
            allowed_heaps: parsed(lookup("allowed_heaps")?, |s| list(s, |h| Ok(h.to_string())))?,
            allowed_uids: parsed(lookup("allowed_uids")?, |s| list(s, number))?,
            load_timeout_ms: parsed(lookup("load_timeout_ms")?, number)?,
            file_extent_devices: parsed(lookup("file_extent_devices")?, |s| {
                list(s, |p| {
                    if p.starts_with('/') {
                        Ok(PathBuf::from(p))
                    } else {
                        Err(format!("{p:?} is not an absolute device path"))
                    }
                })
            })?,
            allow_block_devices: parsed(lookup("allow_block_devices")?, boolean)?,
        })
    }

    /// `self` where set, else `under`.
    pub fn over(self, under: ConfigOverrides) -> ConfigOverrides {
        ConfigOverrides {
            max_load_bytes: self.max_load_bytes.or(under.max_load_bytes),
            max_bytes_in_flight: self.max_bytes_in_flight.or(under.max_bytes_in_flight),
            max_concurrent_loads: self.max_concurrent_loads.or(under.max_concurrent_loads),
            allowed_heaps: self.allowed_heaps.or(under.allowed_heaps),
            allowed_uids: self.allowed_uids.or(under.allowed_uids),
            load_timeout_ms: self.load_timeout_ms.or(under.load_timeout_ms),
            file_extent_devices: self.file_extent_devices.or(under.file_extent_devices),
            allow_block_devices: self.allow_block_devices.or(under.allow_block_devices),
        }
    }

    /// Applies the set keys to the defaults and validates the result. If only
    /// `max_load_bytes` is raised, the in-flight budget follows it (and vice versa for a
    /// lowered budget), so a single flag never produces a contradiction.
    pub fn resolve(self) -> Result<ServiceConfig> {
        let d = ServiceConfig::defaults();
        let (max_load_bytes, max_bytes_in_flight) =
            match (self.max_load_bytes, self.max_bytes_in_flight) {
                (Some(l), Some(f)) => (l, f),
                (Some(l), None) => (l, d.max_bytes_in_flight.max(l)),
                (None, Some(f)) => (d.max_load_bytes.min(f), f),
                (None, None) => (d.max_load_bytes, d.max_bytes_in_flight),
            };
        let c = ServiceConfig {
            max_load_bytes,
            max_bytes_in_flight,
            max_concurrent_loads: self.max_concurrent_loads.unwrap_or(d.max_concurrent_loads),
            allowed_heaps: self.allowed_heaps,
            allowed_uids: self.allowed_uids,
            load_timeout: match self.load_timeout_ms {
                None => d.load_timeout,
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
            },
            file_extent_devices: self.file_extent_devices.unwrap_or_default(),
            allow_block_devices: self.allow_block_devices.unwrap_or(d.allow_block_devices),
        };
        c.validate()?;
        Ok(c)
    }
}

/// Flags + optional file (Linux) -> resolved config.
#[cfg(not(target_os = "android"))]
pub fn load(flags: ConfigOverrides, file: Option<&PathBuf>) -> Result<ServiceConfig> {
    let from_file = match file {
        Some(p) => ConfigOverrides::from_file(p)?,
        None => ConfigOverrides::default(),
    };
    flags.over(from_file).resolve()
}

/// Flags + system properties (Android) -> resolved config. A config file is a Linux-host
/// feature; on a device the properties hold the same keys.
#[cfg(target_os = "android")]
pub fn load(flags: ConfigOverrides, file: Option<&PathBuf>) -> Result<ServiceConfig> {
    if let Some(p) = file {
        bail!(
            "--config {}: config files are for Linux hosts; on Android set \
             ro.vendor.dmabufloader.<key> (or persist.vendor.dmabufloader.<key>)",
            p.display()
        );
    }
    flags.over(ConfigOverrides::from_properties()?).resolve()
}

/// "4G", "512MiB", "4096" -> bytes ([`dmabuf_loader::size`], binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    dmabuf_loader::size::parse(s)
        .map_err(|e| format!("{s:?} is not a size ({e}); use e.g. 4096, 64M, 2G"))
}

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Int(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => parse_bytes(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

fn mem_total_bytes() -> Option<u64> {
    dmabuf_loader::meminfo_bytes("MemTotal").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1G").unwrap_err().contains("negative"));
    }

    #[test]
    fn file_keys_parse_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "max_load_bytes = \"1G\"\nmax_bytes_in_flight = 3221225472\n\
             max_concurrent_loads = 2\nallowed_heaps = [\"memfd\"]\nallowed_uids = [0, 1000]\n\
             load_timeout_ms = 500\nfile_extent_devices = [\"/dev/nvme1n1\"]\n\
             allow_block_devices = true\n",
        )
        .unwrap();
        let flags = ConfigOverrides {
            max_concurrent_loads: Some(7),
            ..Default::default()
        };
        let c = load(flags, Some(&p)).unwrap();
        assert_eq!(c.max_load_bytes, 1 << 30);
        assert_eq!(c.max_bytes_in_flight, 3 << 30);
        assert_eq!(c.max_concurrent_loads, 7);
        assert_eq!(c.allowed_heaps, Some(vec!["memfd".to_string()]));
        assert_eq!(c.allowed_uids, Some(vec![0, 1000]));
        assert_eq!(c.load_timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.file_extent_devices, vec![PathBuf::from("/dev/nvme1n1")]);
        assert!(c.allow_block_devices);
        // Off by default.
        let d = ConfigOverrides::default().resolve().unwrap();
        assert!(d.file_extent_devices.is_empty());
        assert!(!d.allow_block_devices);
    }

    #[test]
    fn property_text_parses_like_the_file() {
        let props = [
            ("max_load_bytes", "1.5G"),
            ("max_concurrent_loads", "3"),
            ("allowed_heaps", "system, udmabuf"),
            ("allowed_uids", "1047,1000"),
            ("load_timeout_ms", "0"),
            (
                "file_extent_devices",
                "/dev/block/by-name/models, /dev/nvme1n1",
            ),
            ("allow_block_devices", "1"),
        ];
        let lookup = |key: &str| {
            Ok(props
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(k, v)| (format!("ro.vendor.dmabufloader.{k}"), v.to_string())))
        };
        let o = ConfigOverrides::from_lookup(lookup).unwrap();
        assert_eq!(o.max_load_bytes, Some(3 << 29));
        assert_eq!(o.max_bytes_in_flight, None);
        assert_eq!(o.max_concurrent_loads, Some(3));
        assert_eq!(
            o.allowed_heaps,
            Some(vec!["system".to_string(), "udmabuf".to_string()])
        );
        assert_eq!(o.allowed_uids, Some(vec![1047, 1000]));
        assert_eq!(
            o.file_extent_devices,
            Some(vec![
                PathBuf::from("/dev/block/by-name/models"),
                PathBuf::from("/dev/nvme1n1")
            ])
        );
        assert_eq!(o.allow_block_devices, Some(true));
        assert_eq!(o.resolve().unwrap().load_timeout, None);
        let yes = |key: &str| {
            Ok((key == "allow_block_devices").then(|| {
                (
                    "ro.vendor.dmabufloader.allow_block_devices".into(),
                    "yes".into(),
                )
            }))
        };
        let err = ConfigOverrides::from_lookup(yes).unwrap_err().to_string();
        assert!(
            err.contains("allow_block_devices") && err.contains("true or false"),
            "{err}"
        );
        let relative = |key: &str| {
            Ok((key == "file_extent_devices").then(|| {
                (
                    "ro.vendor.dmabufloader.file_extent_devices".into(),
                    "nvme0n1".into(),
                )
            }))
        };
        let err = ConfigOverrides::from_lookup(relative)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");

        let bad = |key: &str| {
            Ok((key == "allowed_uids").then(|| {
                (
                    "persist.vendor.dmabufloader.allowed_uids".into(),
                    "1000,x".into(),
                )
            }))
        };
        let err = ConfigOverrides::from_lookup(bad).unwrap_err().to_string();
        assert!(
            err.contains("persist.vendor.dmabufloader.allowed_uids"),
            "{err}"
        );
        let neg = |key: &str| {
            Ok((key == "max_load_bytes")
                .then(|| ("ro.vendor.dmabufloader.max_load_bytes".into(), "-4G".into())))
        };
        let err = ConfigOverrides::from_lookup(neg).unwrap_err().to_string();
        assert!(err.contains("negative"), "{err}");
    }

    #[test]
    fn unknown_keys_and_contradictions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "max_loads = 3\n").unwrap();
        let err = load(ConfigOverrides::default(), Some(&p)).unwrap_err();
        assert!(format!("{err:#}").contains("max_loads"), "{err:#}");

        let bad = ConfigOverrides {
            max_load_bytes: Some(2 << 30),
            max_bytes_in_flight: Some(1 << 30),
            ..Default::default()
        };
        assert!(bad.resolve().is_err());
        let zero = ConfigOverrides {
            max_concurrent_loads: Some(0),
            ..Default::default()
        };
        assert!(zero.resolve().is_err());
        // One flag alone never contradicts the defaults.
        let big = ConfigOverrides {
            max_load_bytes: Some(1 << 50),
            ..Default::default()
        };
        assert_eq!(big.resolve().unwrap().max_bytes_in_flight, 1 << 50);
        let small = ConfigOverrides {
            max_bytes_in_flight: Some(4096),
            ..Default::default()
        };
        assert_eq!(small.resolve().unwrap().max_load_bytes, 4096);
    }

    #[test]
    fn loads_have_a_deadline_by_default_and_zero_disables_it() {
        let d = ConfigOverrides::default().resolve().unwrap();
        assert_eq!(d.load_timeout, Some(DEFAULT_LOAD_TIMEOUT));
        let off = ConfigOverrides {
            load_timeout_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(off.resolve().unwrap().load_timeout, None);
        let short = ConfigOverrides {
            load_timeout_ms: Some(1500),
            ..Default::default()
        };
        assert_eq!(
            short.resolve().unwrap().load_timeout,
            Some(Duration::from_millis(1500))
        );
    }
}
