#!/bin/sh
# Inside the test VM (started by guest-init.sh): what bcc and the tests need,
# then tests/vm with every tracepoint hook disabled, so the kprobe fallbacks
# are the ones attached. The result line is what run-tests.sh looks for.
mountpoint -q /run || mount -t tmpfs tmpfs /run
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns
ip link set lo up
echo "pyprobe-vm: kernel $(uname -r), event sources: $(ls /sys/bus/event_source/devices/ | tr '\n' ' ')"
cd /mnt/project || exit 1
PYTHONPATH=/mnt/project PYPROBE_VM=1 python3 -m pytest -p no:cacheprovider -q -rA tests/vm
rc=$?
echo "PYPROBE-VM-RESULT: $rc"
exit $rc
