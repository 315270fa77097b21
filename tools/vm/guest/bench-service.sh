#!/bin/sh
# The service half of the rig's bench (issue 16), over kernel binder against the supervised
# service: 4 KiB loadFile latency vs a bare one-fd binder call with client, echo server and
# service pinned to one CPU (`bench --latency --pin`); N slices of one file loaded at once vs
# one load of them all (`bench --concurrent`), with the service's RSS growth per load in
# flight; and whether udmabuf takes hugetlb and shmem-THP memfds (the page size a udmabuf load
# reports with a hugetlb pool, then with shmem THP, then with neither). TCG makes absolute
# times meaningless: read the ratios and the page sizes. Sourced by bench.sh.
. /rig/rig-lib.sh

svc=$(service_pid)
mkdir -p /data/tmp
CONC_N=${RIG_BENCH_CONCURRENT:-8}
# The rig's /data is 1 GiB and the guest has 2 GiB: 8 x 64 MiB, not the host's 8 x 128 MiB.
CONC_MIB=${RIG_BENCH_CONCURRENT_MIB:-64}
head -c 4096 /dev/urandom > /data/tmp/bench-4k.bin
head -c $((CONC_N * CONC_MIB << 20)) /dev/zero | tr '\0' 'x' > /data/tmp/bench-conc.bin 2>/dev/null \
    || dd if=/dev/zero of=/data/tmp/bench-conc.bin bs=1M count=$((CONC_N * CONC_MIB)) 2>/dev/null
sync

step bench-latency
if dmabuf-loader bench /data/tmp/bench-4k.bin --latency --pin --service-pid "$svc" \
        --iterations "${RIG_BENCH_LATENCY_ITERATIONS:-1000}" > /tmp/lat.out 2>&1; then
    cat /tmp/lat.out
    info "bench-latency: $(grep -E 'p50 / bare|pinned|CPU' /tmp/lat.out | tr '\n' ' ')"
    pass bench-latency
else cat /tmp/lat.out; fail bench-latency "exit $?"; fi

step bench-concurrent
if dmabuf-loader bench /data/tmp/bench-conc.bin --concurrent "$CONC_N" --rounds "${RIG_BENCH_ROUNDS:-3}" \
        --service-pid "$svc" > /tmp/conc.out 2>&1; then
    cat /tmp/conc.out
    info "bench-concurrent: $(grep -E 'aggregate|RSS|refused' /tmp/conc.out | tr '\n' ' ')"
    pass bench-concurrent
else cat /tmp/conc.out; fail bench-concurrent "exit $?"; fi

# udmabuf_pages LABEL: one udmabuf load of a 64 MiB file, its page size and path.
udmabuf_pages() {
    sync; echo 3 > /proc/sys/vm/drop_caches
    if dmabuf-loader load /data/tmp/bench-conc.bin --length $((64 << 20)) --heap udmabuf --verify --json \
            > /tmp/udma.out 2>&1; then
        ps=$(sed -n 's/.*"page_size": *\([0-9]*\).*/\1/p' /tmp/udma.out | head -n1)
        path=$(sed -n 's/.*"io_path": *"\([^"]*\)".*/\1/p' /tmp/udma.out | head -n1)
        verified=$(sed -n 's/.*"verified": *\([a-z]*\).*/\1/p' /tmp/udma.out | head -n1)
        info "udmabuf-pages: $1: page_size=$ps path=$path verified=$verified"
        [ "$verified" = true ]
    else
        cat /tmp/udma.out
        info "udmabuf-pages: $1: load failed: $(tr '\n' ' ' < /tmp/udma.out | cut -c1-200)"
        return 1
    fi
}
step bench-udmabuf-pages
thp=/sys/kernel/mm/transparent_hugepage/shmem_enabled
thp_was=$(sed 's/.*\[\(.*\)\].*/\1/' "$thp" 2>/dev/null)
ok=1
echo 64 > /proc/sys/vm/nr_hugepages
info "udmabuf-pages: hugetlb pool $(cat /proc/sys/vm/nr_hugepages) x 2 MiB, shmem THP $thp_was"
udmabuf_pages "hugetlb pool" || ok=0
echo 0 > /proc/sys/vm/nr_hugepages
if [ -w "$thp" ]; then
    echo advise > "$thp"
    udmabuf_pages "shmem THP advise" || ok=0
    echo "$thp_was" > "$thp"
else info "udmabuf-pages: no $thp"; fi
udmabuf_pages "4 KiB" || ok=0
if [ "$ok" = 1 ]; then pass bench-udmabuf-pages; else fail bench-udmabuf-pages "a udmabuf load failed"; fi
rm -f /data/tmp/bench-4k.bin /data/tmp/bench-conc.bin
