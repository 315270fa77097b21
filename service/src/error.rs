//! The one place that maps engine and service failures to binder statuses.
//!
//! Every failure a caller can act on becomes a ServiceSpecificException whose code is an AIDL
//! `ErrorCode` value (one per `ErrorKind` of the core engine, 1:1) and whose message is the
//! error's context chain. Nothing else in the service builds a `Status`.

use dmabuf_loader::{ErrorKind, LoadError};

use dmabuf_loader_binder::aidl::ErrorCode::ErrorCode;
use dmabuf_loader_binder::{error_code_name, service_specific, Status};

/// The AIDL code for an engine error kind.
pub fn error_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::BadFd => ErrorCode::BAD_FD,
        ErrorKind::PathOnlyFd => ErrorCode::PATH_ONLY_FD,
        ErrorKind::NotReadable => ErrorCode::NOT_READABLE,
        ErrorKind::UnsupportedFileType => ErrorCode::UNSUPPORTED_FILE_TYPE,
        ErrorKind::InvalidRange => ErrorCode::INVALID_RANGE,
        ErrorKind::TooLarge => ErrorCode::TOO_LARGE,
        ErrorKind::UnknownHeap => ErrorCode::UNKNOWN_HEAP,
        ErrorKind::AllocationFailed => ErrorCode::ALLOCATION_FAILED,
        ErrorKind::Io => ErrorCode::IO_ERROR,
        ErrorKind::FileChanged => ErrorCode::FILE_CHANGED,
        ErrorKind::Cancelled => ErrorCode::CANCELLED,
        ErrorKind::TimedOut => ErrorCode::TIMED_OUT,
        ErrorKind::Busy => ErrorCode::BUSY,
        ErrorKind::PermissionDenied => ErrorCode::PERMISSION_DENIED,
        ErrorKind::InvalidArgument => ErrorCode::INVALID_ARGUMENT,
        ErrorKind::Internal => ErrorCode::INTERNAL,
    }
}

/// The engine error kind for an AIDL code (`None` for a code this build does not know).
pub fn error_kind(code: i32) -> Option<ErrorKind> {
    ALL_KINDS.iter().copied().find(|k| error_code(*k).0 == code)
}

/// Every engine error kind, in AIDL code order.
pub const ALL_KINDS: [ErrorKind; 16] = [
    ErrorKind::BadFd,
    ErrorKind::PathOnlyFd,
    ErrorKind::NotReadable,
    ErrorKind::UnsupportedFileType,
    ErrorKind::InvalidRange,
    ErrorKind::TooLarge,
    ErrorKind::UnknownHeap,
    ErrorKind::AllocationFailed,
    ErrorKind::Io,
    ErrorKind::FileChanged,
    ErrorKind::Cancelled,
    ErrorKind::TimedOut,
    ErrorKind::Busy,
    ErrorKind::PermissionDenied,
    ErrorKind::InvalidArgument,
    ErrorKind::Internal,
];

/// The message sent with a failure: the whole context chain, on one line.
pub fn error_message(err: &LoadError) -> String {
    format!("{:#}", err.source)
}

/// The binder status for a failed load. Logged here, once, with the caller's view of it.
pub fn to_status(err: &LoadError) -> Status {
    let code = error_code(err.kind);
    let name = error_code_name(code.0);
    let message = error_message(err);
    match err.kind {
        ErrorKind::Internal | ErrorKind::Io | ErrorKind::AllocationFailed => {
            log::warn!("load failed: {name}: {message}")
        }
        _ => log::info!("load refused: {name}: {message}"),
    }
    service_specific(code.0, &message)
}

/// Result of a service-side step, converted to a binder result at the AIDL boundary.
pub trait OrBinderStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrBinderStatus<T> for Result<T, LoadError> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(|e| to_status(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_code_matching_the_aidl_order() {
        let codes: Vec<i32> = ALL_KINDS.iter().map(|k| error_code(*k).0).collect();
        assert_eq!(codes, (1..=16).collect::<Vec<_>>());
        for k in ALL_KINDS {
            assert_eq!(error_kind(error_code(k).0), Some(k));
        }
        assert_eq!(error_kind(0), None);
        assert_eq!(error_kind(17), None);
        for k in ALL_KINDS {
            let name = error_code_name(error_code(k).0);
            assert!(!name.contains('('), "{k:?} has no AIDL name: {name}");
        }
    }

    #[test]
    fn status_carries_code_and_context_chain() {
        let err = LoadError::new(
            ErrorKind::InvalidRange,
            anyhow::anyhow!("offset 10 beyond end 5").context("checking the range"),
        );
        let status = to_status(&err);
        assert_eq!(
            dmabuf_loader_binder::service_specific_code(&status),
            Some(5)
        );
        let msg = dmabuf_loader_binder::status_message(&status);
        assert!(
            msg.contains("checking the range") && msg.contains("offset 10"),
            "{msg}"
        );
    }
}
