package vendor.dmabufloader;

/**
 * Service-specific error codes. Every failed call throws a ServiceSpecificException with one
 * of these codes; the exception message gives the details.
 */
@VintfStability
@Backing(type="int")
enum ErrorCode {
    /** The fd is null, closed or otherwise not usable. */
    BAD_FD = 1,
    /** The fd is an O_PATH fd: it grants no right to read. */
    PATH_ONLY_FD = 2,
    /** The fd was not opened for reading (e.g. O_WRONLY). */
    NOT_READABLE = 3,
    /** The fd is not a regular file (pipe, socket, directory, device...). */
    UNSUPPORTED_FILE_TYPE = 4,
    /** offset/length do not lie inside the file, or are negative. */
    INVALID_RANGE = 5,
    /** The request is larger than the per-load limit of this service. */
    TOO_LARGE = 6,
    /** The requested heap does not exist or is not allowed. */
    UNKNOWN_HEAP = 7,
    /** The heap could not provide a buffer of that size. */
    ALLOCATION_FAILED = 8,
    /** The storage reported an error while reading. */
    IO_ERROR = 9,
    /** The file changed size while it was loaded (truncated). */
    FILE_CHANGED = 10,
    /** The load was cancelled by the client. */
    CANCELLED = 11,
    /** The load did not finish within the service's deadline. */
    TIMED_OUT = 12,
    /** The service is at its limit of concurrent loads or bytes in flight. */
    BUSY = 13,
    /** The caller is not allowed to use this service. */
    PERMISSION_DENIED = 14,
    /** A request field is malformed (e.g. unknown checksum type). */
    INVALID_ARGUMENT = 15,
    /** A failure inside the service that is not the caller's fault. */
    INTERNAL = 16,
}
