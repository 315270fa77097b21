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
. "$(dirname "$0")/../tools/lib.sh"
cd "$REPO"

target=$(target_dir)
build_bins
service=$target/debug/dmabuf-loader-service
vts=$target/debug/VtsHalDmabufLoaderTargetTest

parent=${VTS_DMABUF_LOADER_TMPDIR:-$target/vts-host}
mkdir -p "$parent"
dir=$(mktemp -d "$parent/run.XXXXXX")
sock=$dir/loader.sock
log=$dir/service.log

# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
    kill_service
    rm -rf "$dir"
}
trap cleanup EXIT
# shellcheck disable=SC2086 # SERVICE_ARGS is a list of flags
start_service "$service" "$sock" "$log" ${SERVICE_ARGS:-} || { echo "run-host: the service did not start" >&2; exit 1; }
pid=$SERVICE_PID

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

src=0
stop_service || src=$?
if [ "$src" -ne 0 ]; then
    echo "run-host: FAIL: the service exited $src on SIGTERM; its log:" >&2
    cat "$log" >&2
    rc=1
fi
exit "$rc"
