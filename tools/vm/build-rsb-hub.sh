#!/usr/bin/env bash
# Builds the rsbinder service manager (rsb_hub, plus rsb_service to query it) into the cache:
#   cargo install rsbinder-tools --version =0.12.0 --root cache/rsbinder-tools-0.12.0
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ -x "$RSB_ROOT/bin/rsb_hub" ] && [ -x "$RSB_ROOT/bin/rsb_service" ]; then
    log "rsb_hub: cached in $RSB_ROOT/bin"
    exit 0
fi
log "building rsbinder-tools $RSBINDER_TOOLS_VERSION (once; cached in $RSB_ROOT)"
# A private target dir: the install must not disturb (or be disturbed by) the project's builds.
# Its bin folder on PATH for the install, so cargo does not print "be sure to add ... to your
# PATH": the rig calls rsb_hub by its full path, nobody else does.
PATH="$RSB_ROOT/bin:$PATH" CARGO_TARGET_DIR=$CACHE/rsbinder-tools-build \
    cargo install --locked rsbinder-tools --version "=$RSBINDER_TOOLS_VERSION" --root "$RSB_ROOT" >&2
rm -rf "$CACHE/rsbinder-tools-build"
