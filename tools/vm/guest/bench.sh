#!/bin/sh
# The rig's bench (tools/vm/vm bench; VM_KERNEL=seed for DMABUF_REGISTERED), in the guest: first
# bench-service.sh (kernel-binder latency, concurrency, udmabuf with huge pages), then, on the
# seed kernel, into the system heap by BUFFERED vs DMABUF_REGISTERED and into a udmabuf by
# DIRECT_REGISTERED vs DMABUF_REGISTERED, interleaved with the order rotated each round, for a
# raw NVMe range (bench_raw_range_paths) and for a regular file on the NVMe ext4 disk, where
# DMABUF_REGISTERED is the extent route (bench_file_paths; tests/dmabuf_registered.rs). TCG
# makes every absolute figure slow: compare the ratios and the CPU.
. /rig/rig-lib.sh

# The service over kernel binder: latency pinned, N loads at once, udmabuf with huge pages.
. /rig/bench-service.sh

if [ "$RIG_KERNEL" != seed ]; then
    # Both compare against DMABUF_REGISTERED, which only the seed kernel has.
    info "bench: DMABUF_REGISTERED bench skipped on the $RIG_KERNEL kernel (VM_KERNEL=seed runs it)"
else
    step bench
    raw_dev=$(nvme_by_serial rigraw)
    mkdir -p /data/tmp/bench
    DMABUF_LOADER_EXPECT_DMABUF_REGBUF=$EXPECT_REGBUF DMABUF_LOADER_TEST_NVME=$raw_dev \
        DMABUF_LOADER_TEST_DIR=/data/tmp/bench DMABUF_LOADER_TEST_EXTENT_DEVICE=$(findfs LABEL=rigdata) \
        DMABUF_LOADER_BENCH_ROUNDS=${RIG_BENCH_ROUNDS:-5} \
        timeout 500 dmabuf-loader-regbuf-tests bench_raw_range_paths bench_file_paths --ignored \
        --nocapture --test-threads=1 > /tmp/bench.out 2>&1
    rc=$?
    cat /tmp/bench.out
    info "bench: guest cpus=$(nproc) kernel=$(uname -r)"
    grep '^BENCH-SUMMARY' /tmp/bench.out | sed 's/^BENCH-SUMMARY /RIG-INFO bench: /'
    if [ "$rc" -eq 0 ] && [ "$(grep -c '^BENCH-SUMMARY' /tmp/bench.out)" -eq 8 ]; then pass bench
    else fail bench "exit $rc, $(grep -c '^BENCH-SUMMARY' /tmp/bench.out) of 8 summaries"; fi
fi
echo "RIG-SUMMARY bench pass=$RIG_PASSES fail=$RIG_FAILS"
[ "$RIG_FAILS" -eq 0 ]
