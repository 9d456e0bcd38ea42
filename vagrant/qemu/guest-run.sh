#!/bin/sh
# Inside the test VM (started by guest-init.sh): what bcc and the tests need,
# then tests/vm (whose kprobe modules disable the tracepoint hooks, so the
# kprobe fallbacks are the ones attached), or the paths in .vm-tests. The
# result line is what run-tests.sh looks for.
mountpoint -q /run || mount -t tmpfs tmpfs /run
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns
ip link set lo up
echo "pyprobe-vm: kernel $(uname -r), event sources: $(ls /sys/bus/event_source/devices/ | tr '\n' ' ')"
cd /mnt/project || exit 1
# The paths run-tests.sh was given (PYPROBE_VM_TESTS), tests/vm by default.
TESTS=tests/vm
[ -s .vm-tests ] && TESTS=$(cat .vm-tests)
echo "pyprobe-vm: running $TESTS"
# shellcheck disable=SC2086  # a list of paths
PYTHONPATH=/mnt/project PYPROBE_VM=1 python3 -m pytest -p no:cacheprovider -q -rA $TESTS
rc=$?
echo "PYPROBE-VM-RESULT: $rc"
exit $rc
