#!/bin/sh
# PID 1 of the test VM: mount, run the VM tests from the project disk, report,
# power off. Output goes to the serial console, which the host logs.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p /run/netns /mnt/project
ip link set lo up
mount /dev/vdb /mnt/project
echo "pyprobe-vm: kernel $(uname -r), kprobes: $(ls /sys/bus/event_source/devices/ | tr '\n' ' ')"
cd /mnt/project
PYTHONPATH=/mnt/project PYPROBE_VM=1 python3 -m pytest -p no:cacheprovider -q -rA tests/vm
echo "PYPROBE-VM-RESULT: $?"
sync
echo o > /proc/sysrq-trigger
sleep 10
