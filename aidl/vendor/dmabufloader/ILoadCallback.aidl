package vendor.dmabufloader;

import vendor.dmabufloader.LoadResult;

/** Receives the progress and the end of a loadAsync() call. */
@VintfStability
oneway interface ILoadCallback {
    /** bytesDone grows monotonically up to bytesTotal. */
    void onProgress(long bytesDone, long bytesTotal);
    /** The load succeeded; result.buffer holds the data. */
    void onComplete(in LoadResult result);
    /** The load failed; errorCode is an ErrorCode value. */
    void onError(int errorCode, String message);
}
