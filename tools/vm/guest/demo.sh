#!/bin/sh
. /rig/rig-lib.sh
echo "RIG-FAIL demo not wired in yet"
exit 1
