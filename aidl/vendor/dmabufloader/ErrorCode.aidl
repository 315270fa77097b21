package vendor.dmabufloader;

/**
 * Service-specific error codes. Every failed call throws a ServiceSpecificException with one
 * of these codes; the exception message gives the details.
 */
@VintfStability
@Backing(type="int")
enum ErrorCode {
    /**
     * The fd is null, closed or otherwise not usable (for loadInto(): the source or the
     * target; the message says which).
     */
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
    /**
     * Since version 2. The loadInto() target is not a dma-buf (a regular file, pipe, socket...;
     * on a host without dma-bufs, not a memfd either). UNSUPPORTED_FILE_TYPE would blame the
     * source.
     */
    NOT_A_DMABUF = 17,
    /** Since version 2. targetOffset + length is past the end of the loadInto() target. */
    TARGET_TOO_SMALL = 18,
    /**
     * Since version 2. The loadInto() target is not open read-write (O_RDONLY, O_PATH) or is
     * sealed against writing. NOT_READABLE would blame the source.
     */
    TARGET_NOT_WRITABLE = 19,
    /**
     * Since version 2. The target's exporter lets the service neither map it for the CPU (mmap)
     * nor register it with io_uring for the source: nothing could write into it.
     */
    TARGET_NOT_MAPPABLE = 20,
}
