#!/usr/bin/env bash
# Runs the VTS suite on this host against the real service binary on a unix socket (RPC
# binder), the way an operator would: builds dmabuf-loader-service and
# VtsHalDmabufLoaderTargetTest, starts the service, runs the suite (extra arguments go to it:
# filters, --list, --exact ...), then checks that the service holds no more fds than before the
# suite and that it exits 0 on SIGTERM.
#
#   vts/run-host.sh                  the whole suite
#   vts/run-host.sh async.           only the async cases
#   SERVICE_ARGS="--max-concurrent-loads 8" vts/run-host.sh
#
# Scratch files go under $VTS_DMABUF_LOADER_TMPDIR (default: target/vts-host, on the same
# disk as the build, not a tmpfs /tmp). `cargo test -p vts_hal_dmabuf_loader` runs the same
# suite against the service library in-process (vts/tests/host.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --quiet -p dmabuf_loader_service -p vts_hal_dmabuf_loader
service=$target/debug/dmabuf-loader-service
vts=$target/debug/VtsHalDmabufLoaderTargetTest

parent=${VTS_DMABUF_LOADER_TMPDIR:-$target/vts-host}
mkdir -p "$parent"
dir=$(mktemp -d "$parent/run.XXXXXX")
sock=$dir/loader.sock
log=$dir/service.log

# shellcheck disable=SC2086 # SERVICE_ARGS is a list of flags
"$service" --socket "$sock" ${SERVICE_ARGS:-} > "$log" 2>&1 &
pid=$!
# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
    kill "$pid" 2> /dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

for _ in $(seq 100); do
    [ -S "$sock" ] && break
    kill -0 "$pid" 2> /dev/null || { cat "$log"; echo "run-host: the service exited at start" >&2; exit 1; }
    sleep 0.1
done
[ -S "$sock" ] || { cat "$log"; echo "run-host: no socket at $sock after 10 s" >&2; exit 1; }

fds() { find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
before=$(fds)
rc=0
"$vts" --socket "$sock" --tmpdir "$dir" "$@" || rc=$?

# The suite's sessions end when it exits; the service notices asynchronously.
after=$(fds)
for _ in $(seq 50); do
    [ "$after" -le "$before" ] && break
    sleep 0.1
    after=$(fds)
done
echo "run-host: service fds before the suite $before, after $after"
if [ "$after" -gt "$before" ]; then
    echo "run-host: FAIL: the service kept $((after - before)) fds after the suite" >&2
    rc=1
fi

kill -TERM "$pid"
src=0
wait "$pid" || src=$?
if [ "$src" -ne 0 ]; then
    echo "run-host: FAIL: the service exited $src on SIGTERM; its log:" >&2
    cat "$log" >&2
    rc=1
fi
exit "$rc"
