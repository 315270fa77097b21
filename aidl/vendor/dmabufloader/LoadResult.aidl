package vendor.dmabufloader;

import vendor.dmabufloader.BufferKind;
import vendor.dmabufloader.ChecksumType;
import vendor.dmabufloader.IoPath;

/** A filled buffer and how it was filled. */
@VintfStability
parcelable LoadResult {
    /** The buffer; data starts at dataOffset (0 unless loadInto()). */
    ParcelFileDescriptor buffer;
    /** Bytes of file data in the buffer. */
    long dataLength;
    /**
     * Size of the buffer: dataLength rounded up to the page size, and at least one page (no
     * exporter makes a 0-byte dma-buf). Bytes past dataLength are zero. For loadInto(): the
     * target's size; bytes outside the loaded range are the caller's, untouched.
     */
    long bufferSize;
    /** Heap the buffer came from; for loadInto(), the target's exporter (e.g. "system"). */
    String heapName;
    BufferKind bufferKind = BufferKind.DMA_HEAP;
    IoPath ioPath = IoPath.NONE;
    /** Why that path was used (e.g. "filesystem refused O_DIRECT"). */
    String ioPathReason;
    /** Time to allocate the buffer, in nanoseconds (0 for loadInto(): nothing allocated). */
    long allocNanos;
    /** Time from request to filled buffer, in nanoseconds. */
    long totalNanos;
    ChecksumType checksumType = ChecksumType.NONE;
    /** The checksum, if checksumType is not NONE. */
    long checksum;
    /**
     * Since version 2. Where the data starts in buffer: 0 for load(), targetOffset for
     * loadInto(). A v1 service never sets it (0, which is also right for it).
     */
    long dataOffset = 0;
    /**
     * Since version 2. Page size of the buffer's memory in bytes (4096, or a huge page size
     * such as 2097152); 0 = unknown: a dma-heap or foreign exporter's choice the service cannot
     * see, or a v1 service.
     */
    long pageSize = 0;
}
