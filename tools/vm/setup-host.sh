#!/usr/bin/env bash
# Installs the host packages the rig needs (Debian/Ubuntu). Does nothing when all are present.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# command -> Debian package providing it
declare -A NEED=(
    [qemu-system-x86_64]=qemu-system-x86
    [/bin/busybox]=busybox-static
    [mkfs.ext4]=e2fsprogs
    [debugfs]=e2fsprogs
    [xz]=xz-utils
    [cpio]=cpio
    [depmod]=kmod
    [dpkg-deb]=dpkg
    [apt-get]=apt
    [strip]=binutils
    [ldd]=libc-bin
    [flock]=util-linux
)
missing=()
for cmd in "${!NEED[@]}"; do
    if [ "${cmd:0:1}" = / ]; then [ -x "$cmd" ] && continue
    else PATH=$PATH:/sbin:/usr/sbin command -v "$cmd" >/dev/null && continue; fi
    missing+=("${NEED[$cmd]}")
done
# busybox must be the static build: it runs in a guest without libc (ldd fails on static ELFs).
if [ -x /bin/busybox ] && ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi
if [ ${#missing[@]} -eq 0 ]; then
    log "host packages: all present"
    exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
log "installing host packages: ${missing[*]}"
as_root apt-get update -q
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
