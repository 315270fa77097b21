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

# The core engine's own integration tests (loader/tests/*.rs), to run them on the guest's real
# dma-heap, udmabuf and NVMe too. cargo names test executables by hash: take the path it reports.
targs=()
for t in "${CORE_TEST_TARGETS[@]}"; do targs+=(--test "$t"); done
log "cargo test --release -p dmabuf_loader ${targs[*]} --no-run"
json=$(cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo test --release --locked -p dmabuf_loader \
        "${targs[@]}" --no-run --message-format=json-render-diagnostics | grep '"kind":\["test"\]')
mkdir -p "$CACHE/bin"
for i in "${!CORE_TEST_TARGETS[@]}"; do
    t=${CORE_TEST_TARGETS[$i]}
    exe=$(echo "$json" | grep "\"name\":\"$t\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
    [ -n "$exe" ] && [ -x "$exe" ] || die "cargo reported no executable for dmabuf_loader's test '$t'"
    cp "$exe" "$CACHE/bin/${CORE_TEST_BINARIES[$i]}"
done
