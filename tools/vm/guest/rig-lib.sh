# shellcheck shell=sh
# Helpers for the guest scripts (busybox sh). Every line the host parses starts with "RIG-".
#   RIG-STEP name        a check starts
#   RIG-PASS name ...    it passed        RIG-FAIL name reason   it failed
#   RIG-INFO key=value   facts for the report (heaps, I/O paths, VTS counts, timings)
#   RIG-DONE rc=N        the guest finished; N is the run's exit status

RIG_FAILS=${RIG_FAILS:-0}
RIG_PASSES=${RIG_PASSES:-0}
SERVICE_NAME=vendor.dmabufloader.IDmabufLoader/default

uptime_s() { cut -d' ' -f1 /proc/uptime; }
# Milliseconds since boot, for durations.
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

step() { echo "RIG-STEP $1 (t=$(uptime_s)s)"; }
pass() { RIG_PASSES=$((RIG_PASSES + 1)); echo "RIG-PASS $*"; }
fail() { RIG_FAILS=$((RIG_FAILS + 1)); echo "RIG-FAIL $*"; }
info() { echo "RIG-INFO $*"; }

# check NAME CMD...: runs CMD, passes when it exits 0.
check() {
    name=$1; shift
    step "$name"
    if "$@"; then pass "$name"; else fail "$name" "command failed: $*"; fi
}

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
    limit=$(( $1 * 10 )); shift
    i=0
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -ge "$limit" ] && return 1
        sleep 0.1
    done
}

# Which kernel the host booted (rig.kernel= on the command line): stock (Debian 6.12) or seed
# (7.2.13 + the io_uring dma-buf read/write series, where DMABUF_REGISTERED must be taken).
RIG_KERNEL=stock
for _arg in $(cat /proc/cmdline); do
    case "$_arg" in rig.kernel=*) RIG_KERNEL=${_arg#rig.kernel=} ;; esac
done
if [ "$RIG_KERNEL" = seed ]; then EXPECT_REGBUF=1; else EXPECT_REGBUF=0; fi

# nvme_by_serial SERIAL: /dev/nvmeXnY of the namespace whose controller has that serial.
nvme_by_serial() {
    for b in /sys/block/nvme*; do
        [ -e "$b/device/serial" ] || continue
        if [ "$(tr -d ' ' < "$b/device/serial")" = "$1" ]; then echo "/dev/${b##*/}"; return 0; fi
    done
    return 1
}

service_pid() { cat /run/service.pid 2>/dev/null; }
service_registered() { rsb_service check "$SERVICE_NAME" >/dev/null 2>&1; }
# Counts of what a leak would leave behind.
# bounded SECS CMD...: runs CMD for at most SECS seconds, like `timeout`, but a command that
# hangs is first shown (the kernel stack and wait channel of each of its threads, and the
# dma-buf state), so a hang in CI says where it hung; then it is killed. Exit status: CMD's, or
# 143 after a kill.
bounded() {
    local secs=$1 bpid bn bt
    shift
    "$@" &
    bpid=$!
    bn=0
    while kill -0 "$bpid" 2>/dev/null && [ "$bn" -lt "$((secs * 5))" ]; do sleep 0.2; bn=$((bn + 1)); done
    if kill -0 "$bpid" 2>/dev/null; then
        echo "RIG-HANG $1 still running after ${secs}s; its threads (comm, wchan, kernel stack):"
        for bt in /proc/$bpid/task/*; do
            echo "  -- ${bt##*/} $(cat "$bt/comm" 2>/dev/null) wchan=$(cat "$bt/wchan" 2>/dev/null)"
            sed 's/^/     /' "$bt/stack" 2>/dev/null
        done
        grep -E 'objects|unsignalled|token' /sys/kernel/debug/dma_buf/bufinfo 2>/dev/null | sed 's/^/  bufinfo: /'
        kill -TERM "$bpid" 2>/dev/null; sleep 1; kill -KILL "$bpid" 2>/dev/null
        wait "$bpid" 2>/dev/null
        return 143
    fi
    wait "$bpid"
}

fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# Every dma-buf alive in the system (the kernel's own list ends with "Total N objects, M bytes").
dmabuf_count() { awk '/^Total [0-9]+ objects/{print $2}' /sys/kernel/debug/dma_buf/bufinfo; }

# Where the injected faults are (written by make-disks.sh).
. /rig/disks.env
