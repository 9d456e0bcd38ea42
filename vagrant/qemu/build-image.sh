#!/usr/bin/env bash
# Build (once; cached) a Debian bookworm root filesystem image for the VM
# tests: Debian's cloud kernel (kprobes on, matching headers, BTF), bcc from
# python3-bpfcc, and pyprobe's Python dependencies from Debian; bpftool, which
# tests/conftest.py counts programs with (tests/kernel, run by PYPROBE_VM_TESTS);
# libpcap and nftables, for trace's filter and its tests.
#   vagrant/qemu/build-image.sh [CACHE_DIR]   -> CACHE_DIR/rootfs.img, vmlinuz, initrd.img
set -euo pipefail
CACHE=${1:-/var/cache/pyprobe-vm}
STAMP="$CACHE/image-v4.done"  # v2: init runs guest-run.sh; v3: bpftool; v4: libpcap, nft
log() { echo "vm-image: $*" >&2; }
if [ -f "$STAMP" ]; then log "cached: $CACHE"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "vm-image: needs root" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
need=()
for p in debootstrap qemu-system-x86 e2fsprogs; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"
ROOT="$CACHE/root"
rm -rf "$ROOT"
# debootstrap itself gets the set known to configure cleanly; the rest is
# installed with apt inside the tree (with /proc and /dev mounted).
BASE=linux-image-cloud-amd64,linux-headers-cloud-amd64,python3-bpfcc,iproute2,kmod,procps
MORE="python3-click python3-rich python3-pyroute2 python3-prometheus-client python3-yaml
      python3-bcrypt python3-pytest iputils-ping ethtool bpftool libpcap0.8 nftables"
log "debootstrap bookworm from $MIRROR (a few minutes)"
start=$(date +%s)
debootstrap --variant=minbase --include="$BASE" bookworm "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
trap 'umount "$ROOT/proc" "$ROOT/dev" 2>/dev/null || true' EXIT
chroot "$ROOT" apt-get install -y -qq --no-install-recommends $MORE >>"$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
chroot "$ROOT" apt-get clean
umount "$ROOT/proc" "$ROOT/dev"
trap - EXIT
# The guest's init: mount what bcc and the tests need, run them, power off.
install -m 0755 "$(dirname "$0")/guest-init.sh" "$ROOT/sbin/pyprobe-vm-init"
echo pyprobe-vm > "$ROOT/etc/hostname"
cp "$ROOT"/boot/vmlinuz-* "$CACHE/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$CACHE/initrd.img"
rm -f "$CACHE/rootfs.img"
mkfs.ext4 -q -L pyprobe-root -d "$ROOT" "$CACHE/rootfs.img" 3G
rm -rf "$ROOT"
touch "$STAMP"
log "built in $(( $(date +%s) - start ))s: $CACHE/rootfs.img"
