package vendor.dmabufloader;

/** Checksum over the loaded bytes (the data range only, not the page padding). */
@VintfStability
@Backing(type="int")
enum ChecksumType {
    NONE = 0,
    /** XXH3 64-bit, seed 0. */
    XXH3_64 = 1,
}
