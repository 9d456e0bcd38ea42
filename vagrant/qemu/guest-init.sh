#!/bin/sh
# PID 1 of the test VM, baked into the cached image: mount the basics and the
# project disk, then run the project's own guest-run.sh (so changing what runs
# in the VM needs no new image). Power off whatever happens.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /mnt/project
mount /dev/vdb /mnt/project && sh /mnt/project/vagrant/qemu/guest-run.sh
sync
echo o > /proc/sysrq-trigger
sleep 10
