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

# The core engine's own integration tests (loader/tests/load.rs), to run them on the guest's
# real dma-heap and udmabuf too. cargo names test executables by hash: take the path it reports.
log "cargo test --release -p dmabuf_loader --test load --no-run"
exe=$(cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo test --release --locked -p dmabuf_loader \
        --test load --no-run --message-format=json-render-diagnostics \
    | grep '"kind":\["test"\]' | grep '"name":"load"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -n "$exe" ] && [ -x "$exe" ] || die "cargo reported no executable for dmabuf_loader's test 'load'"
mkdir -p "$CACHE/bin"
cp "$exe" "$CACHE/bin/$CORE_TESTS"
