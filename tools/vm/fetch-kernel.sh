#!/usr/bin/env bash
# Fetches the pinned Debian 6.12 kernel package (lib.sh: KERNEL_PKG, KERNEL_PKG_VERSION,
# KERNEL_SUITE) with `apt-get download` and extracts, into the cache:
#   kernel/<version>/vmlinuz
#   kernel/<version>/modules/*.ko      (decompressed: busybox insmod cannot read .ko.xz)
#   kernel/<version>/modules/load-order (dependencies first)
# Prints the kernel directory on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

pkg=$KERNEL_PKG ver=$KERNEL_PKG_VERSION
kver=${pkg#linux-image-}
kver=${kver%-unsigned}
kdir=$CACHE/kernel/$kver
stamp=$kdir/.done-$(echo "$ver ${GUEST_MODULES[*]}" | hash_of "$0" -)
if [ -f "$stamp" ]; then
    log "kernel $kver ($pkg $ver): cached in $kdir"
    echo "$kdir"
    exit 0
fi

have_pinned() { apt-cache show "$pkg=$ver" >/dev/null 2>&1; }

mkdir -p "$CACHE/debs"
# apt-get download names the file <pkg>_<version with ':' as %3a>_<arch>.deb.
deb=$CACHE/debs/${pkg}_${ver//:/%3a}_amd64.deb
if [ ! -f "$deb" ]; then
    if ! have_pinned; then
        # Not in this host's apt lists (e.g. a Debian 13 host, or a bookworm one without the
        # security suite): add exactly that suite, at priority 1 so it never upgrades the host.
        src=/etc/apt/sources.list.d/dmabuf-loader-vm-kernel.sources
        pref=/etc/apt/preferences.d/dmabuf-loader-vm-kernel
        log "$pkg=$ver is not in apt: adding $KERNEL_SUITE ($KERNEL_SUITE_URI) in $src, pinned to priority 1 in $pref"
        as_root tee "$src" >/dev/null <<SRC
Types: deb
URIs: $KERNEL_SUITE_URI
Suites: $KERNEL_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        as_root tee "$pref" >/dev/null <<PREF
Package: *
Pin: release n=$KERNEL_SUITE
Pin-Priority: 1
PREF
        as_root apt-get update -q >&2
        have_pinned || die "$pkg=$ver is not offered by $KERNEL_SUITE any more (superseded by a newer upload?): move the pin in tools/vm/lib.sh (KERNEL_PKG, KERNEL_PKG_VERSION) after checking the rig on the new one"
    fi
    log "kernel package: $pkg=$ver ($KERNEL_SUITE)"
    # apt-get download writes to the current directory. The cache is not the _apt user's to
    # enter, so apt would warn "Download is performed unsandboxed as root" for the file; say
    # root here, so the rig is quiet when run on its own too (tools/vm/demo, tools/vm/test),
    # not only under tools/test's APT_CONFIG (tools/lib.sh, export_quiet_apt).
    (cd "$CACHE/debs" && apt-get -o APT::Sandbox::User=root download "$pkg=$ver" >&2)
fi
[ -f "$deb" ] || die "apt-get download left no $deb"
got="$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
[ "$got" = "$pkg $ver" ] || die "$deb is '$got', not the pinned '$pkg $ver'"
log "extracting $deb"
rm -rf "$kdir"
mkdir -p "$kdir/modules"
tree=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$tree"' EXIT
dpkg-deb -x "$deb" "$tree"
cp "$tree/boot/vmlinuz-$kver" "$kdir/vmlinuz"
cp "$tree/boot/config-$kver" "$kdir/config"
# Bookworm's packages keep modules in lib/modules, trixie's (merged /usr) in usr/lib/modules.
# depmod -b looks where its own kmod was built to look (bookworm: lib/, trixie: usr/lib/): give
# it both by linking the missing one to the other, then use whichever holds the tree.
if [ -d "$tree/usr/lib/modules/$kver" ] && [ ! -e "$tree/lib/modules" ]; then
    mkdir -p "$tree/lib" && ln -s ../usr/lib/modules "$tree/lib/modules"
elif [ -d "$tree/lib/modules/$kver" ] && [ ! -e "$tree/usr/lib/modules" ]; then
    mkdir -p "$tree/usr/lib" && ln -s ../../lib/modules "$tree/usr/lib/modules"
fi
moddir=$tree/lib/modules/$kver
[ -d "$moddir" ] || die "$deb has neither lib/modules/$kver nor usr/lib/modules/$kver"
# The package ships no modules.dep (the postinst runs depmod): generate it in the scratch tree.
PATH=$PATH:/sbin:/usr/sbin depmod -b "$tree" "$kver"
[ -f "$moddir/modules.dep" ] || die "depmod wrote no modules.dep under $moddir"

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
