#!/usr/bin/env bash
# pyprobe set-up: what `make setup` runs, and what the Vagrant boxes provision
# with. Root, idempotent, safe to re-run. Installs Debian packages, makes
# kernel headers available to bcc, mounts tracefs, builds .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'setup: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup: needs root (run: sudo make setup, or make setup as root)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
KREL=$(uname -r)
ARCH=$(dpkg --print-architecture)

# Debian packages. bcc comes from python3-bpfcc (never PyPI's unrelated "bcc").
# prometheus (promtool too) runs in the end-to-end tests, started by them;
# openssl makes their test certificates. The deployed form (make image,
# tests/deploy): debootstrap and buildah build the image, podman runs it and
# plays the Kubernetes manifests, with runc (deploy/podman/containers.conf says
# why not crun) and catatonit (the pause process of podman's pods); its tests
# also use nftables (loss inside a container's netns) and prometheus. umoci is
# not needed: buildah commits the image straight into podman's storage.
PKGS=(python3-bpfcc bpfcc-tools bpftool iproute2 python3-venv python3-pip
      procps iputils-ping nftables iperf3 ethtool gcc libc6-dev
      prometheus openssl libpcap0.8
      podman buildah runc catatonit debootstrap)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
apt_updated=0
apt_update() { [ "$apt_updated" = 1 ] || { apt-get update -qq; apt_updated=1; }; }
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_update
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the prometheus service on install where systemd runs; the
  # tests start their own on a free port, so keep the machine quiet.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# Kernel headers: bcc compiles against /lib/modules/$KREL/build. Prefer the
# exact package; otherwise the distro's nearest headers, linked in. Those are
# used to compile only: pyprobe reads kernel struct offsets from BTF.
BUILD=/lib/modules/$KREL/build
if [ ! -e "$BUILD/include" ]; then
  apt_update
  if apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; then
    log "installing linux-headers-$KREL"
    apt-get install -y -qq "linux-headers-$KREL" >/dev/null
  else
    flavour="linux-headers-cloud-$ARCH"
    apt-cache show "$flavour" >/dev/null 2>&1 || flavour="linux-headers-$ARCH"
    dpkg -s "$flavour" >/dev/null 2>&1 || apt-get install -y -qq "$flavour" >/dev/null
    dir=$(ls -d /usr/src/linux-headers-*-"${flavour#linux-headers-}" 2>/dev/null | sort -V | tail -n1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
    [ -n "$dir" ] && [ -n "$common" ] || { echo "setup: no kernel headers found under /usr/src" >&2; exit 2; }
    mkdir -p "/lib/modules/$KREL"
    ln -sfn "$dir" "$BUILD"
    ln -sfn "$common" "/lib/modules/$KREL/source"
    log "NOTE: no linux-headers-$KREL in the archive; linked $(basename "$dir") for bcc to compile with."
    log "      Its struct layouts are not this kernel's: pyprobe takes offsets from BTF instead."
  fi
fi

# tracefs (tracepoints) and debugfs (bcc looks there first) when missing.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || log "could not mount tracefs"
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true

# The venv sees Debian's bcc through --system-site-packages.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.pyprobe-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing pyprobe into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
# The programs (the exporter's, the streams'), compiled for this kernel now
# (`pyprobe compile`, pyprobe/core/compile.py): a first start loads them (the
# exporter ~0.6 s) instead of compiling (~2-3 s). Not fatal: whatever is
# missing compiles at start. PYPROBE_SETUP_COMPILE=0 skips it: under software
# emulation (the Vagrant boxes here) each compile takes tens of seconds, and
# the tests run with the program cache off anyway.
if [ "${PYPROBE_SETUP_COMPILE:-1}" = 0 ]; then
  log "not compiling the programs ahead (PYPROBE_SETUP_COMPILE=0): they compile at first start"
elif out=$(.venv/bin/pyprobe compile 2>&1); then
  log "programs compiled for $KREL: $(grep -c . <<<"$out") in the program cache"
else
  log "could not compile every program ahead (what is missing compiles at start):"
  sed 's/^/setup:   /' <<<"$out" >&2
fi
log "ready: $(.venv/bin/pyprobe --version)"
