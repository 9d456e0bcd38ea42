#!/usr/bin/env bash
# make vm-test: boot the cached Debian image under qemu with software
# emulation (TCG: never KVM, it crashed this kind of host), with this checkout
# on a second disk, and run tests/vm inside (the kprobe fallbacks, attached
# for real). Exit status: the tests'.
#   PYPROBE_VM_TESTS="tests/vm tests/kernel/test_tcpstates.py"  other test
#   paths (pytest's arguments) instead of tests/vm; PYPROBE_VM=1 either way.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
CACHE=${PYPROBE_VM_CACHE:-/var/cache/pyprobe-vm}
TIMEOUT=${PYPROBE_VM_TIMEOUT:-1200}
TESTS=${PYPROBE_VM_TESTS:-tests/vm}
log() { echo "vm-test: $*" >&2; }
# Already in a VM whose kernel has kprobes (a Vagrant box: `make test` inside
# it, vagrant/guest-test.sh full): the VM suite runs here, in this kernel,
# not in a qemu VM nested in this one.
if [ "${PYPROBE_VM_IN_PLACE:-}" = 1 ]; then
  [ -e /sys/kernel/tracing/kprobe_events ] || [ -e /sys/kernel/debug/tracing/kprobe_events ] || {
    echo "vm-test: PYPROBE_VM_IN_PLACE=1 but this kernel has no kprobes: unset it to boot the qemu VM" >&2
    exit 2
  }
  log "in place, kernel $(uname -r): $TESTS"
  cd "$PROJECT"
  # shellcheck disable=SC2086  # a list of paths
  PYPROBE_VM=1 exec .venv/bin/python -m pytest -p no:cacheprovider -ra $TESTS
fi
"$HERE/build-image.sh" "$CACHE"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The project disk: sources and tests only (no .venv, no .git).
mkdir "$work/project"
tar -C "$PROJECT" --exclude=.venv --exclude=.git --exclude='__pycache__' \
    --exclude='.pytest_cache' --exclude='.mypy_cache' --exclude='.ruff_cache' -cf - . \
  | tar -C "$work/project" -xf -
# What guest-run.sh runs (the kernel command line would do, but has no room
# to spare for a list of paths).
printf '%s\n' "$TESTS" >"$work/project/.vm-tests"
mkfs.ext4 -q -L pyprobe-project -d "$work/project" "$work/project.img" 256M
# The root disk: a throwaway copy, so every run starts from the cached image.
cp --sparse=always "$CACHE/rootfs.img" "$work/rootfs.img"

log "booting (TCG, 2 vCPUs) to run $TESTS: bcc compiles take about a minute each under emulation"
start=$(date +%s)
set +e
timeout "$TIMEOUT" qemu-system-x86_64 \
  -accel tcg -cpu qemu64 -smp 2 -m 2048 \
  -nographic -no-reboot -nic none \
  -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 panic=1 init=/sbin/pyprobe-vm-init quiet" \
  -drive file="$work/rootfs.img",format=raw,if=virtio \
  -drive file="$work/project.img",format=raw,if=virtio \
  </dev/null >"$work/console.log" 2>&1
qemu_rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
mkdir -p "$PROJECT/.vm"
cp "$work/console.log" "$PROJECT/.vm/console.log"
tr -d '\r' <"$work/console.log" | grep -v '^\[ *[0-9.]*\]' | tail -40
result=$(tr -d '\r' <"$work/console.log" | sed -n 's/^PYPROBE-VM-RESULT: \([0-9]*\).*/\1/p' | tail -1)
if [ -z "$result" ]; then
  log "no result after ${elapsed}s (qemu exit $qemu_rc); full console in .vm/console.log"
  exit 1
fi
log "tests exited $result after ${elapsed}s; console in .vm/console.log"
exit "$result"
