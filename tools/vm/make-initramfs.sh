#!/usr/bin/env bash
# Assembles the guest's initramfs (an uncompressed newc cpio; rebuilt every run, it takes a second):
#   /bin/busybox (static) + applet links    /init and /rig/*  (tools/vm/guest)
#   /lib/modules/*.ko + load-order           /etc/rsbinder/hub.d (rsb_hub policy)
#   /usr/bin: rsb_hub, rsb_service, the project's binaries (debug info stripped)
#   the glibc libraries and loader those binaries need, copied from the host as ldd lists them
#   /rig/disks.env (where the injected fault is)
# Usage: make-initramfs.sh KERNEL_DIR OUTPUT [--allow-missing-project]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=$1 out=$2 allow_missing=${3:-}
root=$(mktemp -d "$CACHE/initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc,proc,sys,dev,tmp,run,data,eio,slow,rig}

cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp "$VM_DIR/guest/init" "$root/init"
cp "$VM_DIR"/guest/*.sh "$root/rig/"
cp "$CACHE/disks/disks.env" "$root/rig/disks.env"
[ -n "${VM_RUN_SCRIPT:-}" ] && cp "$VM_RUN_SCRIPT" "$root/rig/run.sh"
mkdir -p "$root/etc/rsbinder/hub.d"
cp "$VM_DIR"/guest/hub.d/*.toml "$root/etc/rsbinder/hub.d/"
chmod 0755 "$root/init" "$root"/rig/*.sh
chmod -R go-w "$root/etc"
# The seed kernel has everything built in: an empty load-order and no .ko files.
cp "$kdir/modules/load-order" "$root/lib/modules/"
find "$kdir/modules" -maxdepth 1 -name '*.ko' -exec cp {} "$root/lib/modules/" \;
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

# Executables and, through ldd, every shared library they load (plus the dynamic loader).
bins=("$RSB_ROOT/bin/rsb_hub" "$RSB_ROOT/bin/rsb_service")
for b in "${PROJECT_BINARIES[@]}"; do
    if [ -x "$TARGET_DIR/release/$b" ]; then bins+=("$TARGET_DIR/release/$b")
    elif [ "$allow_missing" = --allow-missing-project ]; then log "initramfs: no $b (check mode)"
    else die "missing $TARGET_DIR/release/$b"; fi
done
for t in "${CORE_TEST_BINARIES[@]}"; do
    # Whenever built (test mode builds them; `vm run` scripts may use them, as the project's
    # binaries above).
    if [ -x "$CACHE/bin/$t" ]; then
        bins+=("$CACHE/bin/$t")
    fi
done
for b in "${bins[@]}"; do
    strip --strip-debug -o "$root/usr/bin/$(basename "$b")" "$b"
    ldd "$b" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
        dest=$root$lib
        [ -e "$dest" ] && continue
        mkdir -p "$(dirname "$dest")"
        cp -L "$lib" "$dest"
    done
done
# The loader's canonical path (the PT_INTERP of x86-64 binaries) must exist in the guest.
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "ldd listed no /lib64/ld-linux-x86-64.so.2"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) > "$out.tmp"
mv "$out.tmp" "$out"
log "initramfs: $out ($(du -h "$out" | cut -f1); $(printf '%s ' "${bins[@]##*/}"))"
