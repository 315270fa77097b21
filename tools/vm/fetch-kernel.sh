#!/usr/bin/env bash
# Fetches Debian's 6.12 kernel package with `apt-get download` and extracts, into the cache:
#   kernel/<version>/vmlinuz
#   kernel/<version>/modules/*.ko      (decompressed: busybox insmod cannot read .ko.xz)
#   kernel/<version>/modules/load-order (dependencies first)
# Prints the kernel directory on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

find_pkg() {
    apt-cache search --names-only "$KERNEL_PKG_REGEX" | awk '{print $1}' | sort -V | tail -n1
}

pkg=$(find_pkg)
if [ -z "$pkg" ]; then
    # Older bookworm snapshots carry 6.12 only in bookworm-backports: add it, say so, retry.
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "no 6.12 kernel package in apt and no VERSION_CODENAME to add backports"
    src=/etc/apt/sources.list.d/dmabuf-loader-vm-backports.sources
    log "no package matching $KERNEL_PKG_REGEX: adding $codename-backports in $src"
    as_root tee "$src" >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    as_root apt-get update -q >&2
    pkg=$(find_pkg)
    [ -n "$pkg" ] || die "still no package matching $KERNEL_PKG_REGEX after adding backports"
fi
kver=${pkg#linux-image-}
kver=${kver%-unsigned}
kdir=$CACHE/kernel/$kver
stamp=$kdir/.done-$(echo "${GUEST_MODULES[*]}" | hash_of "$0" -)
if [ -f "$stamp" ]; then
    log "kernel $kver: cached in $kdir"
    echo "$kdir"
    exit 0
fi

log "kernel package: $pkg ($(apt-cache policy "$pkg" | awk '/Candidate/{print $2}'))"
mkdir -p "$CACHE/debs"
deb=$(ls "$CACHE"/debs/"${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$deb" ]; then
    # apt-get download writes to the current directory.
    (cd "$CACHE/debs" && apt-get download "$pkg" >&2)
    deb=$(ls "$CACHE"/debs/"${pkg}"_*.deb | sort -V | tail -n1)
fi
log "extracting $deb"
rm -rf "$kdir"
mkdir -p "$kdir/modules"
tree=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$tree"' EXIT
dpkg-deb -x "$deb" "$tree"
cp "$tree/boot/vmlinuz-$kver" "$kdir/vmlinuz"
cp "$tree/boot/config-$kver" "$kdir/config"
# The package ships no modules.dep (the postinst runs depmod): generate it in the scratch tree.
PATH=$PATH:/sbin:/usr/sbin depmod -b "$tree" "$kver"
moddir=$tree/lib/modules/$kver

# modules.dep lines: "kernel/path/a.ko.xz: kernel/path/dep1.ko.xz kernel/path/dep2.ko.xz"
declare -A PATH_OF DEPS_OF SEEN
while IFS= read -r line; do
    file=${line%%:*}
    name=$(basename "$file"); name=${name%%.ko*}; name=${name//-/_}
    PATH_OF[$name]=$file
    DEPS_OF[$name]=${line#*:}
done < "$moddir/modules.dep"

order=()
visit() {
    local name=${1//-/_} dep dname
    [ -n "${SEEN[$name]:-}" ] && return
    [ -n "${PATH_OF[$name]:-}" ] || die "module $name is not in $kver (built in? check config)"
    SEEN[$name]=1
    for dep in ${DEPS_OF[$name]}; do
        dname=$(basename "$dep"); dname=${dname%%.ko*}
        visit "$dname"
    done
    order+=("$name")
}
for m in "${GUEST_MODULES[@]}"; do visit "$m"; done

for name in "${order[@]}"; do
    src=$moddir/${PATH_OF[$name]}
    case "$src" in
        *.ko.xz) xz -dc "$src" > "$kdir/modules/$name.ko" ;;
        *.ko) cp "$src" "$kdir/modules/$name.ko" ;;
        *) die "unexpected module file $src" ;;
    esac
    echo "$name" >> "$kdir/modules/load-order"
done
log "kernel $kver: vmlinuz + modules (${order[*]})"
touch "$stamp"
echo "$kdir"
