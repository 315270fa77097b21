# shellcheck shell=bash
# Shell shared by the project's tools (tools/demo, tools/fuzz, tools/soak/run, tools/test,
# tools/install-deps, vts/run-host.sh). Sourced, never run: `. "$REPO/tools/lib.sh"`.
# The qemu rig (tools/vm/) has its own tools/vm/lib.sh.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# target_dir: where cargo puts this workspace's builds. Asks cargo, so it honours
# CARGO_TARGET_DIR and a `build.target-dir` in a .cargo/config.toml alike.
# (python3 reads the JSON; without it, sed does, which is right for any path without a quote.)
target_dir() {
    local meta
    meta=$(cargo metadata --format-version 1 --no-deps --manifest-path "$REPO/Cargo.toml") || return
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta"
    else
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' <<<"$meta"
    fi
}

# build_bins [cargo flags...]: builds every binary of the workspace (e.g. `build_bins --release`).
# Always the whole workspace, never `-p` a few packages: cargo unifies dependency features
# over the packages it is asked to build, so `-p dmabuf_loader_service` builds rsbinder, the
# AIDL bindings and everything above them a second time with other features (about 4 minutes
# and a few hundred MiB on this machine), while `--workspace` reuses what `cargo test
# --workspace` built.
build_bins() {
    (cd "$REPO" && cargo build --quiet --locked --workspace --bins "$@")
}

# quiet_apt: apt-get with the noise a scripted run does not need. APT_CONFIG points at a file
# that sets APT::Sandbox::User "root": `apt-get download` into a folder the _apt user cannot
# enter (tools/vm/cache) otherwise warns "Download is performed unsandboxed as root" on every
# file. apt reads APT_CONFIG in addition to /etc/apt, so every apt-get below (ours and the
# rig's) gets it once this is exported.
export_quiet_apt() {
    [[ -n ${DMABUF_APT_CONFIG:-} && -f $DMABUF_APT_CONFIG ]] && return 0
    DMABUF_APT_CONFIG=$(mktemp "${TMPDIR:-/tmp}/dmabuf-loader-apt.XXXXXX")
    printf 'APT::Sandbox::User "root";\n' >"$DMABUF_APT_CONFIG"
    export DMABUF_APT_CONFIG APT_CONFIG=$DMABUF_APT_CONFIG
}

# start_service BIN SOCKET LOG [service flags...]: starts BIN (dmabuf-loader-service) on the
# unix socket SOCKET, its stdout and stderr into LOG, and waits until the socket exists
# (SERVICE_START_SECS, default 10). Sets SERVICE_PID. On failure prints the log, says why on
# stderr and returns 1 (the service is not left running).
start_service() {
    local bin=$1 sock=$2 log=$3
    shift 3
    "$bin" --socket "$sock" "$@" >"$log" 2>&1 &
    SERVICE_PID=$!
    local tries=$((${SERVICE_START_SECS:-10} * 20))
    while ((tries-- > 0)); do
        [[ -S $sock ]] && return 0
        if ! kill -0 "$SERVICE_PID" 2>/dev/null; then
            cat "$log" >&2
            echo "the service exited at start (its log is above)" >&2
            SERVICE_PID=
            return 1
        fi
        sleep 0.05
    done
    cat "$log" >&2
    echo "the service did not listen on $sock within ${SERVICE_START_SECS:-10} s (its log is above)" >&2
    kill_service
    return 1
}

# stop_service: SIGTERM to the service start_service started, then waits; returns its exit
# status (0 = it shut down cleanly).
stop_service() {
    [[ -n ${SERVICE_PID:-} ]] || return 0
    local pid=$SERVICE_PID rc=0
    SERVICE_PID=
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || rc=$?
    return "$rc"
}

# kill_service: for EXIT traps; stops the service if it still runs, quietly, whatever its status.
kill_service() {
    stop_service 2>/dev/null || true
}
