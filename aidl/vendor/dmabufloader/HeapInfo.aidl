package vendor.dmabufloader;

import vendor.dmabufloader.BufferKind;

/** A buffer source this service can allocate from. */
@VintfStability
parcelable HeapInfo {
    /** Name to pass in LoadRequest.heapName. */
    String name;
    BufferKind kind = BufferKind.DMA_HEAP;
    /** The fds it yields are real dma-bufs. */
    boolean isDmaBuf;
    /** The service can read into its pages with O_DIRECT (no CPU copy). */
    boolean directIo;
}
