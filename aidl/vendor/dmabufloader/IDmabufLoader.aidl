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
}
