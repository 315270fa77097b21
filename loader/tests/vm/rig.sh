#!/usr/bin/env bash
# Runs dmabuf_loader's integration tests (loader/tests/load.rs) on the tools/vm rig's real
# Linux 6.12 kernel, where /dev/udmabuf, /dev/dma_heap/system, NVMe and an EIO-injecting disk
# exist: every provider, every path, a real device error, and a second pass with
# kernel.io_uring_disabled=2. Uses the rig's own scripts for the kernel, disks and base
# initramfs, and appends a cpio with the test binary and guest-run.sh (the kernel unpacks
# concatenated archives in order). Exit status: 0 only if both passes succeeded.
#
#   loader/tests/vm/rig.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
vm=$repo/tools/vm
# shellcheck source=/dev/null
. "$vm/lib.sh"

"$vm/setup-host.sh"
kdir=$("$vm/fetch-kernel.sh")
"$vm/build-rsb-hub.sh"
"$vm/make-disks.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/loader-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
bin=$(cd "$repo" && cargo test -p dmabuf_loader --release --test load --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | tail -n1 | cut -d'"' -f4)
[ -x "$bin" ] || die "no test binary from cargo"
mkdir -p "$work/root/usr/bin" "$work/root/rig"
strip --strip-debug -o "$work/root/usr/bin/loader-tests" "$bin"
install -m 0755 "$here/guest-run.sh" "$work/root/rig/run.sh"
"$vm/make-initramfs.sh" "$kdir" "$work/base.cpio" --allow-missing-project
(cd "$work/root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) > "$work/extra.cpio"
cat "$work/base.cpio" "$work/extra.cpio" > "$work/initramfs.cpio"
"$vm/boot.sh" run "$kdir" "$work/initramfs.cpio"
