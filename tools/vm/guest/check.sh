#!/bin/sh
# The rig's self-check: the kernel features the project exists for are present in the guest.
# Needs nothing from the project; test.sh runs it first.
. /rig/rig-lib.sh

check dev-binder test -c /dev/binder
check dev-hwbinder test -c /dev/hwbinder
check dev-vndbinder test -c /dev/vndbinder
if [ "$RIG_KERNEL" = seed ]; then
    check binderfs-mounted sh -c 'grep -q " /dev/binderfs binder " /proc/mounts && [ "$(readlink /dev/binder)" = /dev/binderfs/binder ]'
else
    check binderfs-link test "$(readlink /dev/binderfs/binder)" = /dev/binder
fi
check dev-dma-heap-system test -c /dev/dma_heap/system
check dev-udmabuf test -c /dev/udmabuf
check dev-nvme0n1 test -b /dev/nvme0n1
check dev-nvme-raw test -b "$(nvme_by_serial rigraw)"
check io-uring-enabled sh -c '[ ! -e /proc/sys/kernel/io_uring_disabled ] || [ "$(cat /proc/sys/kernel/io_uring_disabled)" = 0 ]'
check rsb_hub-lists rsb_service list
info "dma-heaps: $(ls /dev/dma_heap | tr '\n' ' ')"
info "nvme: $(ls /sys/class/nvme | tr '\n' ' ')"

# The injected fault is real: reading the bad sector of the raw device fails, its neighbours don't.
# qemu's NVMe controller reports blkdebug's EIO as "Unrecovered Read Error", which Linux turns into
# BLK_STS_MEDIUM: O_DIRECT readers see ENODATA ("No data available"), page-cache readers EIO.
eio_dev=$(findfs LABEL=rigeio)
check blkdebug-good-sector dd if="$eio_dev" of=/dev/null bs=512 skip=$((EIO_SECTOR - 8)) count=8 iflag=direct
step blkdebug-bad-sector-eio
if out=$(dd if="$eio_dev" of=/dev/null bs=512 skip="$EIO_SECTOR" count=1 iflag=direct 2>&1); then
    fail blkdebug-bad-sector-eio "sector $EIO_SECTOR read without error"
else
    case "$out" in
        *"No data available"* | *"I/O error"*) pass blkdebug-bad-sector-eio "sector $EIO_SECTOR: $out" ;;
        *) fail blkdebug-bad-sector-eio "unexpected: $out" ;;
    esac
fi

# The slow disk is slow (qemu read throttle): 4 MiB take at least 0.3 s, so a load of
# $SLOW_FILE is still running when the test kills the service.
step slow-disk-throttled
t0=$(now_ms)
dd if="/slow/$SLOW_FILE" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
dt=$(( $(now_ms) - t0 ))
if [ "$dt" -ge 300 ]; then pass slow-disk-throttled "4 MiB in ${dt} ms"
else fail slow-disk-throttled "4 MiB in ${dt} ms: not throttled"; fi

echo "RIG-SUMMARY check pass=$RIG_PASSES fail=$RIG_FAILS"
[ "$RIG_FAILS" -eq 0 ]
