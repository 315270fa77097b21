# OEM AID for vendor.dmabufloader-service (its init .rc runs it as user/group
# vendor_dmabufloader). Add this file to the device's TARGET_FS_CONFIG_GEN. Vendor AIDs must be
# named AID_VENDOR_* and lie in an OEM range (2900-2999, 5000-5999); pick a value no other
# entry of the device uses.
[AID_VENDOR_DMABUFLOADER]
value: 2990
