//! Conversions between the AIDL parcelables/enums and the core engine's types. (Display names
//! and copies of an AIDL result, which clients need too, are in `dmabuf_loader_binder`.)

use dmabuf_loader as core;
use dmabuf_loader::{ErrorKind, LoadError};

use dmabuf_loader_binder::aidl::{
    BufferKind::BufferKind, ChecksumType::ChecksumType, HeapInfo::HeapInfo, IoPath::IoPath,
    LoadRequest::LoadRequest, LoadResult::LoadResult,
};
use dmabuf_loader_binder::ParcelFileDescriptor;

/// The engine request for an AIDL request; refuses negative ranges and unknown enum values.
pub fn request_from_aidl(r: &LoadRequest) -> Result<core::LoadRequest, LoadError> {
    if r.offset < 0 {
        return Err(LoadError::msg(
            ErrorKind::InvalidRange,
            format!("offset {} is negative", r.offset),
        ));
    }
    let length = match r.length {
        -1 => None,
        n if n < 0 => {
            return Err(LoadError::msg(
                ErrorKind::InvalidRange,
                format!("length {n} is negative (use -1 for \"to the end of the file\")"),
            ))
        }
        n => Some(n as u64),
    };
    let checksum = match r.checksum {
        ChecksumType::NONE => core::ChecksumType::None,
        ChecksumType::XXH3_64 => core::ChecksumType::Xxh3_64,
        other => {
            return Err(LoadError::msg(
                ErrorKind::InvalidArgument,
                format!("unknown checksum type {}", other.0),
            ))
        }
    };
    Ok(core::LoadRequest {
        heap: (!r.heapName.is_empty()).then(|| r.heapName.clone()),
        offset: r.offset as u64,
        length,
        read_only: r.readOnly,
        checksum,
        name: None,
    })
}

pub fn buffer_kind_to_aidl(k: core::BufferKind) -> BufferKind {
    match k {
        core::BufferKind::DmaHeap => BufferKind::DMA_HEAP,
        core::BufferKind::Udmabuf => BufferKind::UDMABUF,
        core::BufferKind::Memfd => BufferKind::MEMFD,
    }
}

pub fn io_path_to_aidl(p: core::IoPath) -> IoPath {
    match p {
        core::IoPath::DirectRegistered => IoPath::DIRECT_REGISTERED,
        core::IoPath::Direct => IoPath::DIRECT,
        core::IoPath::Buffered => IoPath::BUFFERED,
        core::IoPath::BufferedSync => IoPath::BUFFERED_SYNC,
        core::IoPath::DmabufRegistered => IoPath::DMABUF_REGISTERED,
        core::IoPath::None => IoPath::NONE,
    }
}

pub fn heap_to_aidl(h: &core::HeapInfo) -> HeapInfo {
    HeapInfo {
        name: h.name.clone(),
        kind: buffer_kind_to_aidl(h.kind),
        isDmaBuf: h.is_dmabuf,
        directIo: h.direct_io,
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The AIDL result for a filled buffer; the buffer fd moves into it.
pub fn result_to_aidl(l: core::Loaded) -> LoadResult {
    let (checksum_type, checksum) = match l.checksum {
        Some((core::ChecksumType::Xxh3_64, v)) => (ChecksumType::XXH3_64, v as i64),
        _ => (ChecksumType::NONE, 0),
    };
    LoadResult {
        buffer: Some(ParcelFileDescriptor::new(l.fd)),
        dataLength: l.data_len as i64,
        bufferSize: l.buffer_size as i64,
        heapName: l.heap,
        bufferKind: buffer_kind_to_aidl(l.kind),
        ioPath: io_path_to_aidl(l.io_path),
        ioPathReason: l.io_path_reason,
        allocNanos: nanos(l.alloc_time),
        totalNanos: nanos(l.total_time),
        checksumType: checksum_type,
        checksum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_of_each_io_path() {
        use dmabuf_loader::IoPath as P;
        for p in [
            P::DirectRegistered,
            P::Direct,
            P::Buffered,
            P::BufferedSync,
            P::DmabufRegistered,
            P::None,
        ] {
            assert_eq!(
                dmabuf_loader_binder::io_path_name(io_path_to_aidl(p)),
                p.to_string()
            );
        }
    }

    #[test]
    fn request_defaults_mean_whole_file_default_heap() {
        let r = request_from_aidl(&LoadRequest::default()).unwrap();
        assert_eq!(
            (r.heap, r.offset, r.length, r.read_only),
            (None, 0, None, false)
        );
        assert_eq!(r.checksum, core::ChecksumType::None);
    }

    #[test]
    fn bad_requests_get_specific_kinds() {
        let neg = LoadRequest {
            offset: -1,
            ..Default::default()
        };
        assert_eq!(
            request_from_aidl(&neg).unwrap_err().kind,
            ErrorKind::InvalidRange
        );
        let neg_len = LoadRequest {
            length: -2,
            ..Default::default()
        };
        assert_eq!(
            request_from_aidl(&neg_len).unwrap_err().kind,
            ErrorKind::InvalidRange
        );
        let ck = LoadRequest {
            checksum: ChecksumType(9),
            ..Default::default()
        };
        assert_eq!(
            request_from_aidl(&ck).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        let ok = LoadRequest {
            heapName: "system".into(),
            offset: 5,
            length: 7,
            readOnly: true,
            checksum: ChecksumType::XXH3_64,
        };
        let r = request_from_aidl(&ok).unwrap();
        assert_eq!(
            (r.heap.as_deref(), r.offset, r.length),
            (Some("system"), 5, Some(7))
        );
        assert!(r.read_only);
    }
}
