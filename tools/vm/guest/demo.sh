#!/bin/sh
# The rig's demo (tools/vm/demo), in the guest: one file loaded through the service into a real
# system-heap dma-buf, then into a udmabuf, each cold (page cache dropped), verified against the
# file; the client prints the heap, the I/O path and the throughput of each.
. /rig/rig-lib.sh

file=/data/files/demo-32M.bin
echo
echo "=== dmabuf-loader demo on Linux $(uname -r) (qemu TCG: absolute speeds are the emulator's) ==="
dmabuf-loader heaps
for heap in system udmabuf; do
    echo
    echo "--- $file -> heap '$heap' (cold) ---"
    sync; echo 3 > /proc/sys/vm/drop_caches
    if dmabuf-loader load "$file" --heap "$heap" --verify; then
        pass "demo-$heap"
    else
        fail "demo-$heap" "client exit $?"
    fi
done
echo
echo "RIG-SUMMARY demo pass=$RIG_PASSES fail=$RIG_FAILS"
[ "$RIG_FAILS" -eq 0 ]
