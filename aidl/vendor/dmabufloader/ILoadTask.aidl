package vendor.dmabufloader;

/** A load started with loadAsync(). */
@VintfStability
interface ILoadTask {
    /**
     * Stops the load. The callback then receives onError(CANCELLED) unless the load had
     * already finished. Calling it again, or after the end, does nothing.
     */
    void cancel();
}
