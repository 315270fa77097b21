//! LoadResult helpers every user needs: a copy that owns its buffer fd (a callback only
//! borrows its result), and the AIDL names of the enums in it (the generated `Debug` prints
//! only numbers).

use crate::aidl::{BufferKind::BufferKind, IoPath::IoPath, LoadResult::LoadResult};
use crate::{dup_pfd, ParcelFileDescriptor};

/// A copy of `r` with its own dup of the buffer fd.
pub fn clone_result(r: &LoadResult) -> std::io::Result<LoadResult> {
    let buffer = match &r.buffer {
        Some(pfd) => Some(ParcelFileDescriptor::new(dup_pfd(pfd)?)),
        None => None,
    };
    Ok(LoadResult {
        buffer,
        dataLength: r.dataLength,
        bufferSize: r.bufferSize,
        heapName: r.heapName.clone(),
        bufferKind: r.bufferKind,
        ioPath: r.ioPath,
        ioPathReason: r.ioPathReason.clone(),
        allocNanos: r.allocNanos,
        totalNanos: r.totalNanos,
        checksumType: r.checksumType,
        checksum: r.checksum,
    })
}

/// "DMA_HEAP", "UDMABUF", "MEMFD", or "UNKNOWN(<n>)".
pub fn buffer_kind_name(k: BufferKind) -> String {
    match k {
        BufferKind::DMA_HEAP => "DMA_HEAP".into(),
        BufferKind::UDMABUF => "UDMABUF".into(),
        BufferKind::MEMFD => "MEMFD".into(),
        other => format!("UNKNOWN({})", other.0),
    }
}

/// "DIRECT_REGISTERED", "BUFFERED", ..., or "UNKNOWN(<n>)".
pub fn io_path_name(p: IoPath) -> String {
    match p {
        IoPath::DIRECT_REGISTERED => "DIRECT_REGISTERED".into(),
        IoPath::DIRECT => "DIRECT".into(),
        IoPath::BUFFERED => "BUFFERED".into(),
        IoPath::BUFFERED_SYNC => "BUFFERED_SYNC".into(),
        IoPath::DMABUF_REGISTERED => "DMABUF_REGISTERED".into(),
        IoPath::NONE => "NONE".into(),
        other => format!("UNKNOWN({})", other.0),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::borrow_pfd;

    #[test]
    fn a_cloned_result_owns_another_fd_of_the_same_file() {
        let f = tempfile::tempfile().unwrap();
        let r = LoadResult {
            buffer: Some(ParcelFileDescriptor::new(f)),
            dataLength: 5,
            bufferSize: 4096,
            heapName: "system".into(),
            ioPath: IoPath::DIRECT,
            ioPathReason: "why".into(),
            checksum: 7,
            ..Default::default()
        };
        let c = clone_result(&r).unwrap();
        let ino = |p: &ParcelFileDescriptor| {
            std::fs::metadata(format!("/proc/self/fd/{}", borrow_pfd(p).as_raw_fd()))
        };
        {
            let (a, b) = (r.buffer.as_ref().unwrap(), c.buffer.as_ref().unwrap());
            assert_ne!(a.as_raw_fd(), b.as_raw_fd());
            assert_eq!(ino(a).unwrap().ino(), ino(b).unwrap().ino());
        }
        assert_eq!(
            (c.dataLength, c.bufferSize, c.heapName.as_str(), c.checksum),
            (5, 4096, "system", 7)
        );
        assert_eq!((c.ioPath, c.ioPathReason.as_str()), (IoPath::DIRECT, "why"));
        drop(r);
        // The copy's fd stays open after the original is gone.
        assert!(ino(c.buffer.as_ref().unwrap()).is_ok());
        let none = clone_result(&LoadResult::default()).unwrap();
        assert!(none.buffer.is_none());
    }

    #[test]
    fn names_are_the_aidl_constant_names() {
        assert_eq!(buffer_kind_name(BufferKind::UDMABUF), "UDMABUF");
        assert_eq!(buffer_kind_name(BufferKind(42)), "UNKNOWN(42)");
        assert_eq!(io_path_name(IoPath::DMABUF_REGISTERED), "DMABUF_REGISTERED");
        assert_eq!(io_path_name(IoPath(-3)), "UNKNOWN(-3)");
    }
}
