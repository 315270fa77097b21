/*
 * Loads file contents into dma-buf memory that accelerators can import.
 *
 * The service reads the file itself (io_uring, O_DIRECT into the buffer's pages where the
 * kernel allows it, a buffered copy otherwise), so the client never maps, copies or caches the
 * bytes. Every method that fails throws a ServiceSpecificException whose code is an ErrorCode
 * value and whose message says what was wrong with the request.
 */
package vendor.dmabufloader;

import vendor.dmabufloader.HeapInfo;
import vendor.dmabufloader.ILoadCallback;
import vendor.dmabufloader.ILoadTask;
import vendor.dmabufloader.LoadRequest;
import vendor.dmabufloader.LoadResult;
import vendor.dmabufloader.ServiceInfo;

@VintfStability
interface IDmabufLoader {
    /**
     * Loads the whole file behind `fd` into a new buffer from the default heap and returns the
     * buffer's fd (a dma-buf, unless getHeaps() says the default source is not one). The fd must
     * be open for reading on a regular file.
     */
    ParcelFileDescriptor loadFile(in ParcelFileDescriptor fd);

    /** Loads the range of `fd` that `request` names; the result says how it was done. */
    LoadResult load(in ParcelFileDescriptor fd, in LoadRequest request);

    /**
     * Starts the load in the background and returns at once. Refusals found before the load
     * starts (bad fd, range, heap, size or admission limits, permission) are thrown from this
     * call with their ErrorCode, and the callback then hears nothing. Otherwise the callback
     * receives progress, then exactly one of onComplete() or onError(). If the callback's
     * process dies, the load is cancelled and its memory released.
     */
    ILoadTask loadAsync(
            in ParcelFileDescriptor fd, in LoadRequest request, in ILoadCallback callback);

    /** The buffer sources this service can allocate from, default first. */
    HeapInfo[] getHeaps();

    /** What the service runs on and which kernel features it found. */
    ServiceInfo getServiceInfo();

    /**
     * Since version 2. Loads the range of `fd` that `request` names (offset, length, checksum)
     * into `target`, a buffer the caller owns, starting at byte `targetOffset` of it. No buffer
     * is allocated: loading into the same target again and again costs no allocation at all.
     *
     * `target` is untrusted like `fd`: it must be a dma-buf (on a host without any dma-buf
     * source, where getHeaps() lists only MEMFD, a memfd), open read-write (O_RDWR), not `fd`
     * itself, and `targetOffset + length` must lie inside it; anything else is refused before
     * a byte is written (NOT_A_DMABUF, TARGET_NOT_WRITABLE, TARGET_TOO_SMALL, INVALID_RANGE,
     * INVALID_ARGUMENT). `request.heapName` must be empty and `request.readOnly` false (the
     * buffer is the caller's, not the service's): INVALID_ARGUMENT otherwise. The service reads
     * into the target straight from storage where the kernel allows (an io_uring registered
     * dma-buf, O_DIRECT into a memfd's pages), else through its CPU mapping between
     * DMA_BUF_IOCTL_SYNC start and end; an exporter that allows neither is refused with
     * TARGET_NOT_MAPPABLE. The service keeps no reference to the target after the call.
     *
     * On success the result's `buffer` is a dup of `target` (so an async caller with many
     * buffers can tell which one completed), `dataOffset` is `targetOffset`, `bufferSize` the
     * target's size, `heapName` the exporter's name (e.g. "system", "udmabuf", "vgem"),
     * `allocNanos` 0. After any failure (including CANCELLED and TIMED_OUT) the bytes of the
     * target in [targetOffset, targetOffset + length) are unspecified (partly written); the
     * bytes outside that range are never touched.
     */
    LoadResult loadInto(in ParcelFileDescriptor fd, in LoadRequest request,
            in ParcelFileDescriptor target, long targetOffset);

    /**
     * Since version 2. loadInto() in the background, with the contract of loadAsync():
     * refusals found before the load starts (every target check of loadInto() included) are
     * thrown from this call and the callback hears nothing; otherwise it receives progress,
     * then exactly one of onComplete() (result as for loadInto()) or onError(). Cancelling
     * the task or the death of the callback's process stops the load; the target then holds
     * what loadInto() promises after a failure.
     */
    ILoadTask loadIntoAsync(in ParcelFileDescriptor fd, in LoadRequest request,
            in ParcelFileDescriptor target, long targetOffset, in ILoadCallback callback);
}
