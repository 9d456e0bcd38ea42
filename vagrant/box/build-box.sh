#!/usr/bin/env bash
# Build one libvirt Vagrant box from Debian packages (debootstrap, as the qemu
# runner does), into the cache, and register it with `vagrant box add`.
#
#   vagrant/box/build-box.sh bookworm        Debian 12, its 6.1 cloud kernel
#   vagrant/box/build-box.sh bookworm-5.10   Debian 12 userland, Debian 11's 5.10
#                                            cloud kernel (Debian 11's own Python,
#                                            3.9, is older than pyprobe's 3.10)
#
# The box: a qcow2 disk (MBR, one ext4 partition, GRUB on the serial console),
# systemd, systemd-networkd (DHCP), sshd (host keys made at first boot), rsync,
# sudo, the vagrant user with Vagrant's insecure key (Vagrant replaces it at
# the first `vagrant up`), and everything vagrant/provision.sh installs, so
# provisioning in a VM with no way out installs nothing from the network.
#
# Output in $PYPROBE_VAGRANT_CACHE (default /var/cache/pyprobe-vagrant):
#   boxes/NAME.box    metadata.json + Vagrantfile + box.img (qcow2), a tar
#   boxes/NAME.json   the catalog `vagrant box add` reads (name pyprobe/NAME, version)
#   boxes/NAME.build.log
# Exit 2 with one line for what a user must fix (not root, no disk space).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
NAME=${1:-}
CACHE=${PYPROBE_VAGRANT_CACHE:-/var/cache/pyprobe-vagrant}
SIZE_GB=10          # the box's virtual disk; the qcow2 holds what is used (~2 GB)
NEED_FREE_GB=8      # the raw image while building (sparse) + the tree + the qcow2
log() { echo "vagrant-box[$NAME]: $*" >&2; }
die2() { echo "vagrant-box: $*" >&2; exit 2; }

case "$NAME" in
  bookworm) KERNEL_FROM=bookworm ;;
  bookworm-5.10) KERNEL_FROM=bullseye ;;
  *) die2 "unknown box '$NAME': build bookworm or bookworm-5.10" ;;
esac
[ "$(id -u)" = 0 ] || die2 "needs root (debootstrap, loop devices): run make vagrant-box as root"
mkdir -p "$CACHE/boxes"
free_gb=$(( $(df -Pk "$CACHE" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
[ "$free_gb" -ge "$NEED_FREE_GB" ] || \
  die2 "only ${free_gb} GB free under $CACHE, a box build needs ${NEED_FREE_GB} GB: free some space or set PYPROBE_VAGRANT_CACHE to a bigger disk"
[ -e /dev/loop-control ] || die2 "no loop devices (/dev/loop-control): load the loop module (modprobe loop)"

export DEBIAN_FRONTEND=noninteractive
need=()
for p in debootstrap qemu-utils e2fsprogs fdisk mount; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Vagrant's insecure public key, from the vagrant package when installed.
PUBKEY=""
for k in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub; do [ -f "$k" ] && PUBKEY=$k; done
[ -n "$PUBKEY" ] || die2 "no Vagrant insecure key found: apt-get install vagrant (make vagrant-box installs it)"

MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${MIRROR%/debian}/debian-security
# What provision.sh installs (its PKGS list), so provisioning offline finds it all.
mapfile -t PROVISION_PKGS < <(sed -n '/^PKGS=(/,/)/p' "$PROJECT/vagrant/provision.sh" \
  | tr -d '()' | sed 's/^PKGS=//' | tr ' ' '\n' | grep -E '^[a-z0-9.+-]+$')
[ ${#PROVISION_PKGS[@]} -ge 5 ] || { log "could not read PKGS from vagrant/provision.sh"; exit 1; }

work="$CACHE/build-$NAME"
mnt="$work/mnt"
raw="$work/disk.raw"
loop=""
cleanup() {
  set +e
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then
    for m in dev/pts dev proc sys run; do mountpoint -q "$mnt/$m" && umount -l "$mnt/$m"; done
    umount "$mnt"
  fi
  [ -n "${uuid_link:-}" ] && rm -f "$uuid_link"
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$work"
mkdir -p "$mnt"
buildlog="$CACHE/boxes/$NAME.build.log"
: >"$buildlog"
start=$(date +%s)

log "disk: ${SIZE_GB} GB (sparse), MBR, one ext4 partition"
truncate -s "${SIZE_GB}G" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw" >>"$buildlog"
loop=$(losetup -P --show -f "$raw")
part="${loop}p1"
# A kernel without MSDOS partition support reads no table: add it by hand.
sleep 0.2
[ -b "$part" ] || partx -a "$loop" >>"$buildlog" 2>&1 || true
for _ in $(seq 50); do [ -b "$part" ] && break; sleep 0.1; done
[ -b "$part" ] || { log "no partition device $part after losetup -P"; exit 1; }
mkfs.ext4 -q -L pyprobe-root "$part"
uuid=$(blkid -s UUID -o value "$part")
mount "$part" "$mnt"

log "debootstrap bookworm from $MIRROR (several minutes)"
debootstrap --variant=minbase --include=systemd-sysv,apt-utils,ca-certificates \
  bookworm "$mnt" "$MIRROR" >>"$buildlog" 2>&1 || { tail -20 "$buildlog" >&2; exit 1; }

mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
mount --bind /dev "$mnt/dev"
mount --bind /dev/pts "$mnt/dev/pts"
mount -t tmpfs tmpfs "$mnt/run"
# Nothing starts services inside the tree while packages install.
printf '#!/bin/sh\nexit 101\n' >"$mnt/usr/sbin/policy-rc.d"
chmod 0755 "$mnt/usr/sbin/policy-rc.d"
in_root() { chroot "$mnt" env LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

cat >"$mnt/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
EOF
KERNEL_PKGS=(linux-image-cloud-amd64 linux-headers-cloud-amd64)
if [ "$KERNEL_FROM" = bullseye ]; then
  # Debian 11's kernel only: its packages are candidates only where bookworm
  # has none (the kernel, its headers, and the gcc-10 those depend on). From
  # the last point release (bullseye), not bullseye-security: the mirror
  # here lists 5.10.262 in bullseye-security but serves 404 for its files.
  cat >>"$mnt/etc/apt/sources.list" <<EOF
deb $MIRROR bullseye main
EOF
  cat >"$mnt/etc/apt/preferences.d/bullseye-kernel" <<EOF
Package: *
Pin: release n=bullseye
Pin-Priority: 100
EOF
  KERNEL_PKGS=(linux-image-cloud-amd64/bullseye linux-headers-cloud-amd64/bullseye)
fi
BOX_PKGS=(grub-pc udev dbus kmod openssh-server sudo rsync make iproute2 less
          "${PROVISION_PKGS[@]}")
log "installing the kernel ($KERNEL_FROM), GRUB, sshd, rsync and provision.sh's packages: ${PROVISION_PKGS[*]}"
in_root apt-get update -qq >>"$buildlog" 2>&1
in_root apt-get install -y -q --no-install-recommends "${KERNEL_PKGS[@]}" "${BOX_PKGS[@]}" >>"$buildlog" 2>&1 \
  || { tail -30 "$buildlog" >&2; exit 1; }
KREL=""
for d in "$mnt"/lib/modules/*/; do KREL=$(basename "$d"); done
# (build is an absolute link into the tree's /usr/src: look from inside)
in_root test -e "/lib/modules/$KREL/build/include" || { log "no headers for $KREL in the box"; exit 1; }
log "kernel $KREL with its headers"

# Boot: GRUB on the first disk; the kernel on the serial console too (the
# console log libvirt keeps), root by UUID.
cat >"$mnt/etc/default/grub.d/pyprobe.cfg" <<'EOF'
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX_DEFAULT="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
EOF
# grub-mkconfig writes root=UUID=… only when /dev/disk/by-uuid has it (udev's job).
mkdir -p /dev/disk/by-uuid
uuid_link=/dev/disk/by-uuid/$uuid
[ -e "$uuid_link" ] || ln -s "$part" "$uuid_link"
in_root grub-install --target=i386-pc --modules="part_msdos ext2" "$loop" >>"$buildlog" 2>&1 \
  || { tail -20 "$buildlog" >&2; exit 1; }
in_root update-grub >>"$buildlog" 2>&1 || { tail -20 "$buildlog" >&2; exit 1; }
grep -q "root=UUID=$uuid" "$mnt/boot/grub/grub.cfg" || { log "grub.cfg does not boot root=UUID=$uuid"; exit 1; }
# The install device GRUB's package would update on upgrades: none (no debconf prompt).
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$mnt/etc/fstab"

# Network: DHCP on the first NIC (the isolated libvirt network's dnsmasq).
cat >"$mnt/etc/systemd/network/50-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
echo pyprobe >"$mnt/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 pyprobe\n::1 localhost ip6-localhost ip6-loopback\n' >"$mnt/etc/hosts"
in_root systemctl enable systemd-networkd >>"$buildlog" 2>&1
# Quiet and quick under emulation: no timers waking apt or man-db, no
# prometheus server (the tests start their own), no wait for "online".
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
            prometheus.service systemd-networkd-wait-online.service; do
  in_root systemctl disable "$unit" >>"$buildlog" 2>&1 || true
done
in_root systemctl mask systemd-networkd-wait-online.service >>"$buildlog" 2>&1 || true

# sshd: host keys made at first boot (each VM its own), no DNS lookups.
rm -f "$mnt"/etc/ssh/ssh_host_*
cat >"$mnt/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys on first boot
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable ssh-host-keys.service ssh.service >>"$buildlog" 2>&1
printf 'UseDNS no\n' >"$mnt/etc/ssh/sshd_config.d/vagrant.conf"

# The vagrant user: password vagrant, sudo without one, Vagrant's insecure key.
in_root useradd -m -s /bin/bash -U vagrant
echo 'vagrant:vagrant' | in_root chpasswd
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"$mnt/etc/sudoers.d/vagrant"
chmod 0440 "$mnt/etc/sudoers.d/vagrant"
install -d -m 0700 "$mnt/home/vagrant/.ssh"
install -m 0600 "$PUBKEY" "$mnt/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh

# Every VM its own machine-id (systemd makes one at first boot).
: >"$mnt/etc/machine-id"
rm -f "$mnt/var/lib/dbus/machine-id"
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$mnt/etc/pyprobe-vagrant-box" <<EOF
box=pyprobe/$NAME
kernel=$KREL
kernel_from=$KERNEL_FROM
built=$built_at
EOF

in_root apt-get clean
rm -f "$mnt/usr/sbin/policy-rc.d"
rm -rf "$mnt"/tmp/* "$mnt"/var/log/*.log
for m in dev/pts dev proc sys run; do umount -l "$mnt/$m"; done
fstrim "$mnt" >/dev/null 2>&1 || true
umount "$mnt"
rm -f "$uuid_link"; uuid_link=""
e2fsck -fy "$part" >>"$buildlog" 2>&1 || true
losetup -d "$loop"; loop=""

log "qcow2"
boxdir="$work/box"
mkdir -p "$boxdir"
qemu-img convert -O qcow2 "$raw" "$boxdir/box.img"
rm -f "$raw"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$SIZE_GB" >"$boxdir/metadata.json"
# The box's own defaults; the project's Vagrantfile sets the same and more.
cat >"$boxdir/Vagrantfile" <<'EOF'
# pyprobe box, built by vagrant/box/build-box.sh. Software emulation (TCG)
# by default: this kind of host must never use KVM.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
    libvirt.disk_bus = "virtio"
  end
end
EOF
version="0.$(date -u +%Y%m%d.%H%M%S)"
tmpbox="$CACHE/boxes/.$NAME.box.tmp"
tar -C "$boxdir" -cf "$tmpbox" metadata.json Vagrantfile box.img
mv -f "$tmpbox" "$CACHE/boxes/$NAME.box"
sum=$(sha256sum "$CACHE/boxes/$NAME.box" | cut -d' ' -f1)
cat >"$CACHE/boxes/$NAME.json" <<EOF
{
  "name": "pyprobe/$NAME",
  "description": "Debian 12 (bookworm) with kernel $KREL, for pyprobe's tests; built $built_at",
  "versions": [{
    "version": "$version",
    "providers": [{
      "name": "libvirt",
      "url": "file://$CACHE/boxes/$NAME.box",
      "checksum_type": "sha256",
      "checksum": "$sum"
    }]
  }]
}
EOF
echo "$KREL" >"$CACHE/boxes/$NAME.kernel"
size=$(du -h "$CACHE/boxes/$NAME.box" | cut -f1)
log "built in $(( $(date +%s) - start ))s: $CACHE/boxes/$NAME.box ($size, kernel $KREL, version $version)"
