# shellcheck shell=bash
# Shared settings and helpers for the tools/vm scripts. Sourced, never run.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$VM_DIR/../.." && pwd)
CACHE=${VM_CACHE:-$VM_DIR/cache}
# Where cargo puts the project's release binaries (honours the caller's CARGO_TARGET_DIR).
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

# The stock kernel the rig boots, pinned: package, exact version and the suite that has it (a
# newer upload changes what the rig proves, so it is a deliberate edit here, never apt's newest).
# Debian keeps only the newest upload in a security suite: when this one is superseded,
# fetch-kernel.sh says so and the pin is moved (the cached .deb keeps working meanwhile).
KERNEL_PKG=${VM_KERNEL_PKG:-linux-image-6.12.107+deb12-amd64-unsigned}
KERNEL_PKG_VERSION=${VM_KERNEL_PKG_VERSION:-6.12.107-1~deb12u1}
KERNEL_SUITE=${VM_KERNEL_SUITE:-bookworm-security}
KERNEL_SUITE_URI=${VM_KERNEL_SUITE_URI:-http://deb.debian.org/debian-security}
# The seed kernel (Linux 7.2.13 + the io_uring dma-buf read/write series v3, everything built
# in, binderfs): a prebuilt test input next to the repository, never part of it.
SEED_KERNEL_DIR=${VM_SEED_KERNEL_DIR:-$REPO/../shared/seed-kernel}
# Modules the guest loads, in addition to their dependencies (resolved from modules.dep).
# vgem (DRM, PRIME import and dumb-buffer export) and vivid (V4L2 capture with
# V4L2_MEMORY_DMABUF) are the importer check's real drivers (tools/importers).
GUEST_MODULES=(binder_linux nvme ext4 crc32c_generic loop vgem vivid)

RSBINDER_TOOLS_VERSION=0.12.0
RSB_ROOT=$CACHE/rsbinder-tools-$RSBINDER_TOOLS_VERSION

# The project's binaries that go into the guest: cargo package -> binary.
PROJECT_PACKAGES=(dmabuf_loader_service dmabuf_loader_client vts_hal_dmabuf_loader dmabuf_loader_soak dmabuf_loader_importers)
PROJECT_BINARIES=(dmabuf-loader-service dmabuf-loader VtsHalDmabufLoaderTargetTest dmabuf-loader-soak dmabuf-loader-importers)
# The core engine's integration tests (loader/tests/<target>.rs), copied out of cargo's deps
# dir into cache/bin under these names: cargo test target -> guest binary.
CORE_TEST_TARGETS=(load into dmabuf_registered)
CORE_TEST_BINARIES=(dmabuf-loader-core-tests dmabuf-loader-into-tests dmabuf-loader-regbuf-tests)

log() { printf '[vm %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Runs a command as root (directly, or through sudo when we are not root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root for: $*"; fi
}

# A short content hash of files, to key caches on the scripts that produce them.
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# Read throttle of the "slow" disk (bytes/s): slow-24M.bin then takes ~3 s to load.
SLOW_BPS=$((8 << 20))
