#!/bin/sh
# Keeps the loader service running, like init's "service ... class hal" does on Android:
# when it dies it is started again. Its pid is in /run/service.pid, its start count in
# /run/service.starts. Arguments: the service's command line.
n=0
while [ ! -e /run/supervisor.stop ]; do
    n=$((n + 1))
    echo "$n" > /run/service.starts
    "$@" &
    pid=$!
    echo "$pid" > /run/service.pid
    echo "RIG-INFO supervisor: started $1 as pid $pid (start #$n)"
    wait "$pid"
    rc=$?
    echo "RIG-INFO supervisor: pid $pid exited with status $rc"
    [ -e /run/supervisor.stop ] && break
    echo "RIG-INFO supervisor: restarting $1"
    sleep 0.2
done
