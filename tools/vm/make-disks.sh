#!/usr/bin/env bash
# Creates the guest's disks (cached; rebuilt when this script changes):
#   disks/data.img   1 GiB ext4 "rigdata" with generated test files; the guest mounts it
#                    read-write, but qemu runs it with snapshot=on so every boot starts clean.
#   disks/eio.img    64 MiB ext4 "rigeio" holding eio-8M.bin; qemu serves it through
#                    blkdebug (disks/eio.blkdebug) which fails reads of one sector in the
#                    middle of that file with EIO.
#   disks/slow.img   64 MiB ext4 "rigslow" holding slow-24M.bin; qemu throttles reads of this
#                    disk (SLOW_BPS) so a load takes seconds and a SIGKILL lands mid-load.
#   disks/raw.img    64 MiB of random bytes, no file system ("rigraw"): raw NVMe range loads.
#   disks/disks.env  where the fault is, for the guest (EIO_FILE, EIO_FILE_OFFSET, EIO_SECTOR).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export PATH=$PATH:/sbin:/usr/sbin

dir=$CACHE/disks
stamp=$dir/.done-$(hash_of "$0")
if [ -f "$stamp" ]; then
    log "disks: cached in $dir"
    exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
stage=$(mktemp -d "$CACHE/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# --- data disk -----------------------------------------------------------------------------
mkdir -p "$stage/data/files" "$stage/data/tmp"
head -c $((32 << 20)) /dev/urandom > "$stage/data/files/demo-32M.bin"
head -c $((8 << 20)) /dev/urandom > "$stage/data/files/smoke-8M.bin"
head -c 4097 /dev/urandom > "$stage/data/files/small-4097.bin"
: > "$stage/data/files/empty.bin"
(cd "$stage/data/files" && sha256sum ./*.bin > SHA256SUMS)
mkfs.ext4 -q -F -b 4096 -L rigdata -E root_owner=0:0 -d "$stage/data" "$dir/data.img" 1G >&2
log "data disk: $(ls "$stage/data/files" | tr '\n' ' ')"

# --- EIO disk -------------------------------------------------------------------------------
mkdir -p "$stage/eio"
eio_size=$((8 << 20))
head -c "$eio_size" /dev/urandom > "$stage/eio/eio-8M.bin"
mkfs.ext4 -q -F -b 4096 -L rigeio -E root_owner=0:0 -d "$stage/eio" "$dir/eio.img" 64M >&2
# Physical block of the file's middle block, from the filesystem's own extent map.
mid_lblk=$((eio_size / 4096 / 2))
pblk=$(debugfs -R "bmap /eio-8M.bin $mid_lblk" "$dir/eio.img" 2>/dev/null | tr -d '[:space:]')
[[ "$pblk" =~ ^[0-9]+$ ]] && [ "$pblk" -gt 0 ] || die "debugfs bmap gave '$pblk'"
sector=$((pblk * 8))
# Check: the bytes at that sector on the image are the file's bytes at that offset.
cmp <(dd if="$dir/eio.img" bs=512 skip="$sector" count=8 status=none) \
    <(dd if="$stage/eio/eio-8M.bin" bs=4096 skip="$mid_lblk" count=1 status=none) \
    || die "layout check failed: sector $sector does not hold block $mid_lblk of eio-8M.bin"
cat > "$dir/eio.blkdebug" <<CONF
# Every read touching sector $sector (file eio-8M.bin, byte $((mid_lblk * 4096))) fails: EIO.
[inject-error]
event = "read_aio"
errno = "5"
sector = "$sector"
once = "off"
CONF
cat > "$dir/disks.env" <<ENV
EIO_FILE=eio-8M.bin
EIO_FILE_SIZE=$eio_size
EIO_FILE_OFFSET=$((mid_lblk * 4096))
EIO_SECTOR=$sector
ENV
# --- slow disk ------------------------------------------------------------------------------
mkdir -p "$stage/slow"
head -c $((24 << 20)) /dev/urandom > "$stage/slow/slow-24M.bin"
mkfs.ext4 -q -F -b 4096 -L rigslow -E root_owner=0:0 -d "$stage/slow" "$dir/slow.img" 64M >&2
echo "SLOW_FILE=slow-24M.bin" >> "$dir/disks.env"

# --- raw disk ---------------------------------------------------------------------------------
head -c $((64 << 20)) /dev/urandom > "$dir/raw.img"
echo "RAW_SERIAL=rigraw" >> "$dir/disks.env"

log "eio disk: eio-8M.bin block $mid_lblk -> fs block $pblk -> sector $sector fails with EIO"
touch "$stamp"
