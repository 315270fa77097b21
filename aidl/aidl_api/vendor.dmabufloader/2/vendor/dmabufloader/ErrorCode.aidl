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
@Backing(type="int") @VintfStability
enum ErrorCode {
  BAD_FD = 1,
  PATH_ONLY_FD = 2,
  NOT_READABLE = 3,
  UNSUPPORTED_FILE_TYPE = 4,
  INVALID_RANGE = 5,
  TOO_LARGE = 6,
  UNKNOWN_HEAP = 7,
  ALLOCATION_FAILED = 8,
  IO_ERROR = 9,
  FILE_CHANGED = 10,
  CANCELLED = 11,
  TIMED_OUT = 12,
  BUSY = 13,
  PERMISSION_DENIED = 14,
  INVALID_ARGUMENT = 15,
  INTERNAL = 16,
  NOT_A_DMABUF = 17,
  TARGET_TOO_SMALL = 18,
  TARGET_NOT_WRITABLE = 19,
  TARGET_NOT_MAPPABLE = 20,
}
