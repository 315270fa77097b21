#!/usr/bin/env bash
# The seed kernel (Linux 7.2.13 + the io_uring dma-buf read/write series v3; everything built
# in, binderfs instead of binder devices) as a kernel directory for make-initramfs.sh/boot.sh:
#   kernel/seed/vmlinuz -> ../shared/seed-kernel/bzImage (a link: never copied)
#   kernel/seed/modules/load-order (empty: no modules)
# Prints the directory on stdout; fails when the seed kernel is absent.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

img=$SEED_KERNEL_DIR/bzImage
[ -f "$img" ] || die "no seed kernel at $img"
kdir=$CACHE/kernel/seed
mkdir -p "$kdir/modules"
ln -sfn "$(cd "$(dirname "$img")" && pwd)/bzImage" "$kdir/vmlinuz"
: > "$kdir/modules/load-order"
[ -f "$SEED_KERNEL_DIR/config" ] && ln -sfn "$(cd "$SEED_KERNEL_DIR" && pwd)/config" "$kdir/config"
log "seed kernel: $img ($(grep -a -o -m1 '7\.[0-9]*\.[0-9]*-dmabuf-v[0-9]*' "$img" || echo 'version unknown'))"
echo "$kdir"
