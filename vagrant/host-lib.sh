# shellcheck shell=bash disable=SC2034  # (used by the scripts that source it)
# Sourced by vagrant/vagrant-box.sh and vagrant/vagrant-test.sh: what the
# host needs for Vagrant on libvirt, installed from Debian when missing.

PV_CACHE=${PYPROBE_VAGRANT_CACHE:-/var/cache/pyprobe-vagrant}
PV_BOXES_ALL=(bookworm bookworm-5.10)
# Vagrant machine (vagrant/Vagrantfile) -> local box it runs
declare -A PV_MACHINE_BOX=([bookworm]=bookworm [oldkernel]=bookworm-5.10)

pv_die2() { echo "$PV_TAG: $*" >&2; exit 2; }

pv_need_root() {
  [ "$(id -u)" = 0 ] || pv_die2 "needs root (libvirt's system instance, loop devices): run it as root"
}

# Free GB on the filesystem holding $1 (created if missing).
pv_free_gb() {
  mkdir -p "$1"
  echo $(( $(df -Pk "$1" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
}

# apt-get install what is missing. Where no service manager runs, the
# packages' own start-up scripts are kept from starting daemons (a
# policy-rc.d for the duration, only when none exists): this script starts
# and stops what it needs itself.
pv_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "$PV_TAG: installing ${missing[*]}" >&2
  local guard=""
  if [ ! -d /run/systemd/system ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  local rc=0
  { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ -z "$guard" ] || rm -f "$guard"
  [ "$rc" = 0 ] || pv_die2 "could not install ${missing[*]} (apt-get exit $rc): install them by hand (apt-get install ${missing[*]})"
}
