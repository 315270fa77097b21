/*
 * Loads file contents into dma-buf memory that accelerators can import.
 *
 * The service reads the file itself (io_uring, O_DIRECT into the buffer's pages where the
 * kernel allows it, a buffered copy otherwise), so the client never maps, copies or caches the
 * bytes. Every method that fails throws a ServiceSpecificException whose code is an ErrorCode
 * value and whose message says what was wrong with the request.
 */
///////////////////////////////////////////////////////////////////////////////
// THIS FILE IS IMMUTABLE. DO NOT EDIT IN ANY CASE.                          //
///////////////////////////////////////////////////////////////////////////////

// This file is a snapshot of an AIDL file. Do not edit it manually. There are
// two cases:
// 1). this is a frozen version file - do not edit this in any case.
// 2). this is a 'current' file. If you make a backwards compatible change to
//     the interface (from the latest frozen version), the build system will
//     prompt you to update this file with `m <name>-update-api`.
//
// You must not make a backward incompatible change to any AIDL file built
// with the aidl_interface module type with versions property set. The module
// type is used to build AIDL files in a way that they can be used across
// independently updatable components of the system. If a device is shipped
// with such a backward incompatible change, it has a high risk of breaking
// later when a module using the interface is updated, e.g., Mainline modules.

package vendor.dmabufloader;
@VintfStability
interface IDmabufLoader {
  ParcelFileDescriptor loadFile(in ParcelFileDescriptor fd);
  vendor.dmabufloader.LoadResult load(in ParcelFileDescriptor fd, in vendor.dmabufloader.LoadRequest request);
  vendor.dmabufloader.ILoadTask loadAsync(in ParcelFileDescriptor fd, in vendor.dmabufloader.LoadRequest request, in vendor.dmabufloader.ILoadCallback callback);
  vendor.dmabufloader.HeapInfo[] getHeaps();
  vendor.dmabufloader.ServiceInfo getServiceInfo();
  vendor.dmabufloader.LoadResult loadInto(in ParcelFileDescriptor fd, in vendor.dmabufloader.LoadRequest request, in ParcelFileDescriptor target, long targetOffset);
  vendor.dmabufloader.ILoadTask loadIntoAsync(in ParcelFileDescriptor fd, in vendor.dmabufloader.LoadRequest request, in ParcelFileDescriptor target, long targetOffset, in vendor.dmabufloader.ILoadCallback callback);
}
