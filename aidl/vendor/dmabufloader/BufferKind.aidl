package vendor.dmabufloader;

/** Where a buffer's memory comes from. */
@VintfStability
@Backing(type="int")
enum BufferKind {
    /** A dma-heap (/dev/dma_heap/<name>): a real dma-buf. */
    DMA_HEAP = 0,
    /** A memfd turned into a dma-buf with /dev/udmabuf: a real dma-buf. */
    UDMABUF = 1,
    /** A plain memfd: NOT a dma-buf. Only on hosts with neither dma-heaps nor udmabuf. */
    MEMFD = 2,
    /**
     * Since version 2. A dma-buf from another exporter (a GPU, camera or NPU driver, vgem):
     * only ever a loadInto() target, the service never allocates one.
     */
    DMA_BUF = 3,
}
