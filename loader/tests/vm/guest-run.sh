#!/bin/sh
# Guest half of loader/tests/vm/rig.sh: the loader integration tests on the rig kernel, then the
# io_uring-disabled test once more with kernel.io_uring_disabled=2.
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
mkdir -p /data/tmp/lt
export DMABUF_LOADER_TEST_DIR=/data/tmp/lt
. /rig/disks.env
export DMABUF_LOADER_EIO_FILE=/eio/$EIO_FILE DMABUF_LOADER_EIO_OFFSET=$EIO_FILE_OFFSET
ls -l /dev/udmabuf /dev/dma_heap/
/usr/bin/loader-tests --test-threads=1 --nocapture 2>&1
rc=$?
echo 2 > /proc/sys/kernel/io_uring_disabled
/usr/bin/loader-tests --test-threads=1 --nocapture io_uring_disabled 2>&1
rc2=$?
echo 0 > /proc/sys/kernel/io_uring_disabled
echo "RIG-INFO loader tests rc=$rc, io_uring-disabled pass rc=$rc2"
[ $rc = 0 ] && [ $rc2 = 0 ]
