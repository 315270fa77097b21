package vendor.dmabufloader;

import vendor.dmabufloader.BufferKind;
import vendor.dmabufloader.ChecksumType;
import vendor.dmabufloader.IoPath;

/** A filled buffer and how it was filled. */
@VintfStability
parcelable LoadResult {
    /** The buffer; data starts at offset 0. */
    ParcelFileDescriptor buffer;
    /** Bytes of file data in the buffer. */
    long dataLength;
    /**
     * Size of the buffer: dataLength rounded up to the page size, and at least one page (no
     * exporter makes a 0-byte dma-buf). Bytes past dataLength are zero.
     */
    long bufferSize;
    /** Heap the buffer came from. */
    String heapName;
    BufferKind bufferKind = BufferKind.DMA_HEAP;
    IoPath ioPath = IoPath.NONE;
    /** Why that path was used (e.g. "filesystem refused O_DIRECT"). */
    String ioPathReason;
    /** Time to allocate the buffer, in nanoseconds. */
    long allocNanos;
    /** Time from request to filled buffer, in nanoseconds. */
    long totalNanos;
    ChecksumType checksumType = ChecksumType.NONE;
    /** The checksum, if checksumType is not NONE. */
    long checksum;
}
