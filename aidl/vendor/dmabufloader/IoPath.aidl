package vendor.dmabufloader;

/** How the bytes reached the buffer. */
@VintfStability
@Backing(type="int")
enum IoPath {
    /** io_uring O_DIRECT reads into registered (fixed) buffers: storage DMA into the pages. */
    DIRECT_REGISTERED = 0,
    /** io_uring O_DIRECT reads into the buffer's pages without buffer registration. */
    DIRECT = 1,
    /** io_uring reads through the page cache: one CPU copy. */
    BUFFERED = 2,
    /** Plain pread() through the page cache (io_uring unavailable): one CPU copy. */
    BUFFERED_SYNC = 3,
    /** io_uring reads into a registered dma-buf (kernels with the dmabuf regbuf uAPI). */
    DMABUF_REGISTERED = 4,
    /** Nothing was read (empty range). */
    NONE = 5,
}
