//! Block devices: the BLKGETSIZE64 ioctl, and what sysfs says about the disk a device number
//! belongs to (partition start and length, the whole disk, its driver) for the extent route of
//! DMABUF_REGISTERED.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::{major, makedev, minor};

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// The size in bytes of the block device `fd` (BLKGETSIZE64).
pub fn size(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`, which is valid for the call.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// What drives a whole disk, as far as the extent route cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driver {
    /// An NVMe namespace on a PCIe controller (the one driver the io_uring dma-buf series
    /// implements tokens for).
    NvmePci,
    /// Anything else, in words (device-mapper, loop, virtio-blk, an NVMe multipath head...).
    Other(String),
}

/// The partition (or whole disk) behind a device number, and the whole disk it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpan {
    /// The whole disk's name (`nvme0n1`) and device number.
    pub disk: String,
    pub disk_dev: u64,
    pub driver: Driver,
    /// Where the partition starts on the disk and how long it is, in bytes (0 and the
    /// disk's size for a file system on the whole disk).
    pub start: u64,
    pub len: u64,
    /// The disk's logical block size (O_DIRECT alignment of offsets and lengths).
    pub logical_block: u64,
}

fn read_trim(p: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(p)?.trim().to_string())
}

fn read_u64(p: &Path) -> std::io::Result<u64> {
    let s = read_trim(p)?;
    s.parse()
        .map_err(|e| std::io::Error::other(format!("{}: {s:?}: {e}", p.display())))
}

/// Resolves `dev` (a file's st_dev) through `/sys/dev/block/MAJ:MIN`: the partition's `start`
/// and `size` (512-byte sectors, whatever the disk's block size), the whole disk above it.
pub fn disk_span(dev: u64) -> std::io::Result<DiskSpan> {
    disk_span_in(Path::new("/sys/dev/block"), dev)
}

fn disk_span_in(sys_dev_block: &Path, dev: u64) -> std::io::Result<DiskSpan> {
    let link = sys_dev_block.join(format!("{}:{}", major(dev), minor(dev)));
    let node: PathBuf = std::fs::canonicalize(&link)?;
    let (whole, start, sectors) = if node.join("partition").exists() {
        let parent = node
            .parent()
            .ok_or_else(|| std::io::Error::other("a partition without a disk"))?
            .to_path_buf();
        (
            parent,
            read_u64(&node.join("start"))?,
            read_u64(&node.join("size"))?,
        )
    } else {
        (node.clone(), 0, read_u64(&node.join("size"))?)
    };
    let disk = whole
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dev_text = read_trim(&whole.join("dev"))?;
    let disk_dev = dev_text
        .split_once(':')
        .and_then(|(a, b)| Some(makedev(a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| std::io::Error::other(format!("{disk}/dev: {dev_text:?}")))?;
    let driver = if whole.join("dm").exists() {
        let name = read_trim(&whole.join("dm/name")).unwrap_or_default();
        Driver::Other(format!(
            "device-mapper {disk} ({name}: dm-crypt, dm-default-key, dm-linear... remap or \
             encrypt the blocks)"
        ))
    } else if whole.join("loop").exists() {
        Driver::Other(format!("{disk} is a loop device"))
    } else if whole.join("md").exists() {
        Driver::Other(format!("{disk} is an md RAID device"))
    } else if disk.starts_with("nvme") {
        match read_trim(&whole.join("device/transport")) {
            Ok(t) if t == "pcie" => Driver::NvmePci,
            Ok(t) => Driver::Other(format!("{disk} is an NVMe namespace over {t}, not PCIe")),
            Err(_) => Driver::Other(format!(
                "{disk} is an NVMe multipath head or has no controller in sysfs"
            )),
        }
    } else {
        let drv = std::fs::read_link(whole.join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "no driver".into());
        Driver::Other(format!("{disk} is driven by {drv}, not nvme-pci"))
    };
    let logical_block = read_u64(&whole.join("queue/logical_block_size")).unwrap_or(512);
    Ok(DiskSpan {
        disk,
        disk_dev,
        driver,
        start: start * 512,
        len: sectors * 512,
        logical_block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys tree: a partition of an nvme-pci namespace, and a dm device.
    #[test]
    fn partitions_resolve_to_their_disk_and_driver() {
        let root = std::env::temp_dir().join(format!("blkdev-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let disk = root.join("devices/pci0000:00/nvme/nvme0/nvme0n1");
        let part = disk.join("nvme0n1p2");
        let ctrl = root.join("devices/pci0000:00/nvme/nvme0");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::create_dir_all(disk.join("queue")).unwrap();
        std::fs::create_dir_all(disk.join("device")).unwrap();
        let w = |p: PathBuf, s: &str| std::fs::write(p, s).unwrap();
        w(ctrl.join("transport"), "pcie\n");
        std::fs::remove_dir(disk.join("device")).unwrap();
        std::os::unix::fs::symlink(&ctrl, disk.join("device")).unwrap();
        w(disk.join("dev"), "259:0\n");
        w(disk.join("size"), "2097152\n");
        w(disk.join("queue/logical_block_size"), "4096\n");
        w(part.join("partition"), "2\n");
        w(part.join("start"), "2048\n");
        w(part.join("size"), "1024\n");
        let dm = root.join("devices/virtual/block/dm-0");
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        w(dm.join("dm/name"), "userdata\n");
        w(dm.join("dev"), "253:0\n");
        w(dm.join("size"), "8\n");
        let by_dev = root.join("dev/block");
        std::fs::create_dir_all(&by_dev).unwrap();
        std::os::unix::fs::symlink(&part, by_dev.join("259:1")).unwrap();
        std::os::unix::fs::symlink(&dm, by_dev.join("253:0")).unwrap();

        let s = disk_span_in(&by_dev, makedev(259, 1)).unwrap();
        assert_eq!(s.disk, "nvme0n1");
        assert_eq!(s.disk_dev, makedev(259, 0));
        assert_eq!(s.driver, Driver::NvmePci);
        assert_eq!(
            (s.start, s.len, s.logical_block),
            (2048 * 512, 1024 * 512, 4096)
        );
        let d = disk_span_in(&by_dev, makedev(253, 0)).unwrap();
        assert!(
            matches!(&d.driver, Driver::Other(w) if w.contains("device-mapper") && w.contains("userdata")),
            "{d:?}"
        );
        assert_eq!((d.start, d.len), (0, 8 * 512));
        assert!(disk_span_in(&by_dev, makedev(1, 99)).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
