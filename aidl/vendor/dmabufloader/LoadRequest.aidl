package vendor.dmabufloader;

import vendor.dmabufloader.ChecksumType;

/** What to load and where to put it. */
@VintfStability
parcelable LoadRequest {
    /** Heap name from getHeaps(); empty selects the default. */
    String heapName = "";
    /** First byte of the file to load. Any value; need not be aligned. */
    long offset = 0;
    /** Bytes to load; -1 loads to the end of the file. */
    long length = -1;
    /**
     * The returned fd is read-only: it cannot be mapped writable. Only heaps whose buffers can
     * be handed out read-only honour it (the memfd source); dma-heap and udmabuf exports are
     * always read-write, so there it fails with INVALID_ARGUMENT rather than hand out a
     * writable buffer.
     */
    boolean readOnly = false;
    /** Checksum to compute over the loaded bytes. */
    ChecksumType checksum = ChecksumType.NONE;
}
