package vendor.dmabufloader;

/** The service's implementation and the kernel features it found at start-up. */
@VintfStability
parcelable ServiceInfo {
    /** Implementation version, e.g. "dmabuf-loader 0.1.0". */
    String implementation;
    /** uname release of the kernel. */
    String kernelRelease;
    boolean ioUring;
    /** io_uring can register a dma-buf as a fixed buffer (not in mainline as of 2026). */
    boolean ioUringDmabufRegbuf;
    /** cachestat(2) is available (page-cache aware path choice). */
    boolean cachestat;
    /** Largest load this service accepts, in bytes. */
    long maxLoadBytes;
}
