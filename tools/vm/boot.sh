#!/usr/bin/env bash
# Boots the guest under qemu (TCG: KVM is unusable on this workplace's nested machines) with
# four emulated NVMe disks, shows the serial console and keeps it in cache/logs/<mode>-<time>.log.
# Exits with the guest's status (the "RIG-DONE rc=N" line), or 1 when the guest never got there.
# Usage: boot.sh MODE KERNEL_DIR INITRAMFS
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mode=$1 kdir=$2 initrd=$3
[ "${VM_KERNEL:-stock}" = stock ] || mode_tag=-$VM_KERNEL
disks=$CACHE/disks
mkdir -p "$CACHE/logs"
logf=$CACHE/logs/$mode${mode_tag:-}-$(date -u +%Y%m%dT%H%M%SZ).log
ln -sfn "$(basename "$logf")" "$CACHE/logs/latest.log"
# Keep the 30 newest logs.
find "$CACHE/logs" -name '*.log' -type f -printf '%T@ %p\n' | sort -rn | tail -n +31 | cut -d' ' -f2- | xargs -r rm -f
# The guest bounds each of its steps; this only catches a hung guest.
timeout_s=${VM_TIMEOUT:-540}

qemu=(
    qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048
    -nodefaults -no-reboot -display none -serial stdio -monitor none
    -kernel "$kdir/vmlinuz" -initrd "$initrd"
    -append "console=ttyS0 panic=-1 loglevel=4 rig.mode=$mode rig.kernel=${VM_KERNEL:-stock}"
    # Test files; written by the tests, but snapshot=on throws the writes away at exit.
    -drive "if=none,id=data,format=raw,snapshot=on,file=$disks/data.img"
    -device "nvme,drive=data,serial=rigdata"
    # Reads of one sector fail with EIO (qemu's blkdebug driver; see disks/eio.blkdebug).
    -drive "if=none,id=eio,format=raw,readonly=on,file=blkdebug:$disks/eio.blkdebug:$disks/eio.img"
    -device "nvme,drive=eio,serial=rigeio"
    # Throttled, so a load from it is still running when the test kills the service.
    -drive "if=none,id=slow,format=raw,readonly=on,file=$disks/slow.img,throttling.bps-read=$SLOW_BPS"
    -device "nvme,drive=slow,serial=rigslow"
    # No file system: static bytes for raw block-device loads (the DMABUF_REGISTERED path).
    -drive "if=none,id=raw,format=raw,readonly=on,file=$disks/raw.img"
    -device "nvme,drive=raw,serial=rigraw"
)
log "booting ($mode): ${qemu[*]}"
log "serial log: $logf"
start=$(date +%s.%N)
set +e
if [ "$mode" = shell ]; then
    "${qemu[@]}" | tee "$logf"
else
    # No stdin (CI): the guest never waits for input.
    timeout --foreground "$timeout_s" "${qemu[@]}" < /dev/null 2>&1 | tee "$logf"
fi
qemu_rc=${PIPESTATUS[0]}
set -e
elapsed=$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || awk "BEGIN{print $(date +%s.%N) - $start}")
[ "$qemu_rc" -eq 124 ] && log "qemu killed after ${timeout_s}s (VM_TIMEOUT)"
[ "$qemu_rc" -ne 0 ] && [ "$qemu_rc" -ne 124 ] && log "qemu exited with status $qemu_rc"

done_line=$(grep -a '^RIG-DONE rc=' "$logf" | tail -n1 || true)
echo
log "---- summary ($mode, $(printf '%.1f' "$elapsed") s wall, log $logf) ----"
grep -a -E '^RIG-(INFO|FAIL|SUMMARY)' "$logf" | sed 's/\r$//' >&2 || true
if [ -z "$done_line" ]; then
    log "FAILED: the guest did not finish (no RIG-DONE line; see the log)"
    exit 1
fi
rc=$(echo "$done_line" | sed -E 's/^RIG-DONE rc=([0-9]+).*/\1/')
if [ "$rc" = 0 ]; then log "PASSED: $done_line"; else log "FAILED: $done_line"; fi
exit "$rc"
