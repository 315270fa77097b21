//! How a failed call reads: the service's ErrorCode (by its AIDL name) and message, or a
//! transport-level failure. The one table of ErrorCode names.

use std::fmt;

use crate::aidl::ErrorCode::ErrorCode;
use crate::{service_specific_code, status_message, BinderResult, Status};

/// The AIDL name of an ErrorCode value ("TOO_LARGE"), or "UNKNOWN(<n>)" for a code this
/// build does not know (the generated enum's `Debug` prints only the number).
pub fn error_code_name(code: i32) -> String {
    let name = match ErrorCode(code) {
        ErrorCode::BAD_FD => "BAD_FD",
        ErrorCode::PATH_ONLY_FD => "PATH_ONLY_FD",
        ErrorCode::NOT_READABLE => "NOT_READABLE",
        ErrorCode::UNSUPPORTED_FILE_TYPE => "UNSUPPORTED_FILE_TYPE",
        ErrorCode::INVALID_RANGE => "INVALID_RANGE",
        ErrorCode::TOO_LARGE => "TOO_LARGE",
        ErrorCode::UNKNOWN_HEAP => "UNKNOWN_HEAP",
        ErrorCode::ALLOCATION_FAILED => "ALLOCATION_FAILED",
        ErrorCode::IO_ERROR => "IO_ERROR",
        ErrorCode::FILE_CHANGED => "FILE_CHANGED",
        ErrorCode::CANCELLED => "CANCELLED",
        ErrorCode::TIMED_OUT => "TIMED_OUT",
        ErrorCode::BUSY => "BUSY",
        ErrorCode::PERMISSION_DENIED => "PERMISSION_DENIED",
        ErrorCode::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        ErrorCode::INTERNAL => "INTERNAL",
        _ => return format!("UNKNOWN({code})"),
    };
    name.to_string()
}

/// A failed call: the service's ErrorCode and message, or a transport-level failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// A ServiceSpecificException: `code` is an AIDL ErrorCode value.
    Service { code: i32, message: String },
    /// The call itself failed (dead service, bad parcel, another exception...).
    Binder(String),
}

/// What a binder call gave, with its failure read as a [`CallError`].
pub type CallResult<T> = Result<T, CallError>;

impl CallError {
    pub fn from_status(s: &Status) -> Self {
        match service_specific_code(s) {
            Some(code) => CallError::Service {
                code,
                message: status_message(s),
            },
            None => CallError::Binder(format!("{s:?}")),
        }
    }

    /// [`CallError::from_status`] of a call's result.
    pub fn check<T>(r: BinderResult<T>) -> CallResult<T> {
        r.map_err(|s| CallError::from_status(&s))
    }

    /// The ErrorCode, if the service gave one.
    pub fn code(&self) -> Option<i32> {
        match self {
            CallError::Service { code, .. } => Some(*code),
            CallError::Binder(_) => None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Service { code, message } => {
                write!(f, "{} ({code}): {message}", error_code_name(*code))
            }
            CallError::Binder(s) => write!(f, "binder call failed: {s}"),
        }
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_specific;

    #[test]
    fn every_code_of_the_aidl_enum_has_its_name() {
        let names: Vec<String> = (1..=16).map(error_code_name).collect();
        assert_eq!(names[0], "BAD_FD");
        assert_eq!(names[5], "TOO_LARGE");
        assert_eq!(names[15], "INTERNAL");
        assert!(names.iter().all(|n| !n.contains('(')), "{names:?}");
        assert_eq!(error_code_name(ErrorCode::FILE_CHANGED.0), "FILE_CHANGED");
        assert_eq!(error_code_name(0), "UNKNOWN(0)");
        assert_eq!(error_code_name(99), "UNKNOWN(99)");
        assert_eq!(error_code_name(-1), "UNKNOWN(-1)");
    }

    #[test]
    fn a_service_specific_status_reads_as_its_code_and_message() {
        let s = service_specific(ErrorCode::INVALID_RANGE.0, "offset 10 beyond end 5");
        let e = CallError::from_status(&s);
        assert_eq!(
            e,
            CallError::Service {
                code: 5,
                message: "offset 10 beyond end 5".into()
            }
        );
        assert_eq!(e.code(), Some(5));
        assert_eq!(e.to_string(), "INVALID_RANGE (5): offset 10 beyond end 5");
        let other = CallError::Binder("DeadObject".into());
        assert_eq!(other.code(), None);
        assert!(
            other.to_string().starts_with("binder call failed"),
            "{other}"
        );
    }
}
