//! Checks on a returned buffer: is it a real dma-buf (fdinfo `exp_name`), and does it hold
//! exactly the file's bytes (read-only mapping compared with the file, padding zero).

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use dmabuf_loader::{begin_cpu_read, end_cpu_read, BufferView};

/// The dma-buf exporter of `fd` ("system", "udmabuf"...), from /proc/self/fdinfo; `None`
/// when the fd is not a dma-buf.
pub fn dmabuf_exporter(fd: BorrowedFd<'_>) -> Result<Option<String>> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let info = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("exp_name:"))
        .map(|v| v.trim().to_string()))
}

/// What `verify` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub data_len: u64,
    pub padding: u64,
    pub xxh3: u64,
}

/// Maps `buffer` read-only and checks its first `data_len` bytes equal `file[offset..]` and
/// the rest up to `buffer_size` is zero. Brackets the CPU reads with DMA_BUF_IOCTL_SYNC when
/// the buffer is a dma-buf.
pub fn verify(
    buffer: BorrowedFd<'_>,
    buffer_size: u64,
    data_len: u64,
    file: &File,
    offset: u64,
) -> Result<Verified> {
    if data_len > buffer_size {
        bail!("the service reported {data_len} data bytes in a {buffer_size}-byte buffer");
    }
    let actual = nix::sys::stat::fstat(buffer.as_raw_fd())
        .context("fstat of the buffer")?
        .st_size as u64;
    if actual != 0 && actual < buffer_size {
        bail!("the buffer is {actual} bytes, the service said {buffer_size}");
    }
    if buffer_size == 0 {
        return Ok(Verified {
            data_len: 0,
            padding: 0,
            xxh3: twox_hash::XxHash3_64::oneshot(&[]),
        });
    }
    let is_dmabuf = dmabuf_exporter(buffer)?.is_some();
    let map =
        BufferView::map(buffer, buffer_size as usize).context("mapping the buffer read-only")?;
    if is_dmabuf {
        begin_cpu_read(buffer)?;
    }
    let result = compare(map.as_slice(), data_len as usize, file, offset);
    if is_dmabuf {
        end_cpu_read(buffer)?;
    }
    result
}

fn compare(mem: &[u8], data_len: usize, file: &File, offset: u64) -> Result<Verified> {
    const CHUNK: usize = 4 << 20;
    let mut buf = vec![0u8; CHUNK.min(data_len.max(1))];
    let mut done = 0usize;
    while done < data_len {
        let n = (data_len - done).min(buf.len());
        file.read_exact_at(&mut buf[..n], offset + done as u64)
            .with_context(|| format!("reading the file at {}", offset + done as u64))?;
        if mem[done..done + n] != buf[..n] {
            let i = (0..n).find(|&i| mem[done + i] != buf[i]).unwrap_or(0);
            bail!(
                "MISMATCH at byte {} of the buffer: file has {:#04x}, buffer has {:#04x}",
                done + i,
                buf[i],
                mem[done + i]
            );
        }
        done += n;
    }
    let padding = &mem[data_len..];
    if let Some(i) = padding.iter().position(|&b| b != 0) {
        bail!(
            "padding byte {} (after the data) is {:#04x}, not zero",
            data_len + i,
            padding[i]
        );
    }
    Ok(Verified {
        data_len: data_len as u64,
        padding: padding.len() as u64,
        xxh3: twox_hash::XxHash3_64::oneshot(&mem[..data_len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn memfd_with(bytes: &[u8], size: u64) -> File {
        let fd = nix::sys::memfd::memfd_create(
            c"verify-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        let mut f = File::from(fd);
        f.write_all(bytes).unwrap();
        f.set_len(size).unwrap();
        f
    }

    #[test]
    fn equal_contents_and_zero_padding_pass() {
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(b"0123456789").unwrap();
        let buf = memfd_with(b"3456789", 4096);
        let v = verify(buf.as_fd(), 4096, 7, &src, 3).unwrap();
        assert_eq!((v.data_len, v.padding), (7, 4089));
        assert_eq!(v.xxh3, twox_hash::XxHash3_64::oneshot(b"3456789"));
        assert_eq!(
            dmabuf_exporter(buf.as_fd()).unwrap(),
            None,
            "a memfd is not a dma-buf"
        );
    }

    #[test]
    fn a_wrong_byte_or_dirty_padding_fails() {
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(b"abcdef").unwrap();
        let bad = memfd_with(b"abcXef", 4096);
        let e = verify(bad.as_fd(), 4096, 6, &src, 0).unwrap_err();
        assert!(format!("{e}").contains("MISMATCH at byte 3"), "{e}");
        let dirty = memfd_with(b"abcdef\x01", 4096);
        let e = verify(dirty.as_fd(), 4096, 6, &src, 0).unwrap_err();
        assert!(format!("{e}").contains("padding byte 6"), "{e}");
    }
}
