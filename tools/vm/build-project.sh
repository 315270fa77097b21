#!/usr/bin/env bash
# Builds the project's guest binaries in release mode (they run in the guest as they run on the
# host: dynamically linked against glibc, whose libraries the initramfs copies from the host).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

args=()
for p in "${PROJECT_PACKAGES[@]}"; do args+=(-p "$p"); done
log "cargo build --release ${args[*]} (target dir $TARGET_DIR)"
(cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --locked "${args[@]}" >&2)
for b in "${PROJECT_BINARIES[@]}"; do
    [ -x "$TARGET_DIR/release/$b" ] || die "cargo built no $b (is its crate still a placeholder?)"
done
