#!/usr/bin/env bash
# make image: pyprobe's OCI image, built offline from the Debian archive.
#
#   deploy/image/build.sh            -> localhost/pyprobe:<version> in podman's storage
#
# Two layers, each cached in podman's storage under a key of its inputs:
#   localhost/pyprobe-base:<key>  debootstrap --variant=minbase bookworm plus the
#                                 Debian packages the .deb depends on (bcc from
#                                 python3-bpfcc), no recommends, no docs, man
#                                 pages or locales; the user the exporter becomes
#   localhost/pyprobe:<version>   the package `make deb` builds, installed with
#                                 dpkg (so the image's paths are the .deb's), and
#                                 the program cache warmed for this host's kernel
# A run whose inputs (the .deb's bytes, the base's key, this script, the kernel
# the cache is warmed for) match the image's label io.pyprobe.image.inputs
# does nothing; a changed .deb rebuilds only the top layer (seconds).
#
# Kernel headers are not in the image: bcc compiles against the node's own
# (/lib/modules/$(uname -r)/build and the /usr/src it links to, mounted
# read-only from the host: `make setup` puts them there, the DaemonSet mounts
# them). Headers baked in would be one Debian kernel's (~70 MB more), right
# for no node in particular; pyprobe takes struct offsets from BTF either way.
#
# Warming the program cache loads each program into the kernel (the kernel
# verifies it; pyprobe/core/compile.py), so it needs BPF privileges at build
# time: it runs `pyprobe compile` chrooted into the image's tree, as root,
# with the host's /proc, /sys, /dev and headers mounted. Where that fails (no
# headers, no BPF), the image is still built: the first start compiles.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
CACHE=${PYPROBE_IMAGE_CACHE:-/var/cache/pyprobe-image}
NAME=${PYPROBE_IMAGE_NAME:-localhost/pyprobe}
SUITE=bookworm
BASE_FORMAT=2          # bump when the base's recipe below changes
USER_ID=9977           # the exporter's user after --drop-privileges: pyprobe, 9977:9977
log() { echo "image: $*" >&2; }
die() { echo "image: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, and BPF to warm the program cache)"
for tool in buildah podman debootstrap dpkg-deb chroot; do
  command -v "$tool" >/dev/null || die "$tool missing: run make setup"
done
mkdir -p "$CACHE"
# One build at a time (another worktree's `make test` may build too).
exec 9>"$CACHE/lock"
flock 9

work=$(mktemp -d /var/tmp/pyprobe-image.XXXXXX)
mounts=()
ctr=""
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  [ -z "$ctr" ] || { buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true; }
  rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s)

# -- the package ----------------------------------------------------------------
deb=$(/usr/bin/python3 "$PROJECT/contrib/debian/build.py" --out "$work/deb") || exit $?
version=$(dpkg-deb -f "$deb" Version)
# Depends without versions or alternatives: the base installs them, dpkg -i then finds them there.
mapfile -t depends < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/[|(].*//; s/ //g' | grep . | sort -u)

base_key=$(printf '%s\n' "$BASE_FORMAT" "$SUITE" "$USER_ID" "${depends[@]}" | sha256sum | cut -c1-16)
BASE="localhost/pyprobe-base:$base_key"
IMAGE="$NAME:$version"
# What the top layer is made of: the package's bytes (make deb is reproducible),
# the base, this script, and the kernel the program cache is warmed for.
inputs=$( { sha256sum <"$deb"; echo "$base_key"; sha256sum <"$0"; uname -r; uname -v;
            nproc --all; cat /sys/devices/system/cpu/possible 2>/dev/null; } | sha256sum | cut -c1-16)

label() { podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null || true; }
if [ "$(label "$IMAGE" io.pyprobe.image.inputs)" = "$inputs" ]; then
  log "cached: $IMAGE (inputs $inputs)"
  exit 0
fi

# -- the base layer ---------------------------------------------------------------
build_base() {
  local root="$work/base" mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "debootstrap --variant=minbase $SUITE from $mirror (a few minutes; log in $CACHE/debootstrap.log)"
  debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # What dpkg and apt install from here on: no docs (but the copyrights), man
  # pages, info, locales; no recommends.
  cat >"$root/etc/dpkg/dpkg.cfg.d/01-pyprobe-slim" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/01-pyprobe-slim"
  mount -t proc proc "$root/proc"; mounts+=("$root/proc")
  log "installing ${depends[*]}"
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
    "${depends[@]}" >>"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  chroot "$root" groupadd --system --gid "$USER_ID" -K SYS_GID_MAX="$USER_ID" pyprobe
  chroot "$root" useradd --system --uid "$USER_ID" --gid "$USER_ID" -K SYS_UID_MAX="$USER_ID" \
    --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pyprobe
  chroot "$root" apt-get clean
  umount "$root/proc"; unset 'mounts[-1]'
  # What debootstrap installed before the exclusions, and what apt leaves.
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,info,lintian,linda}/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
    "$root"/var/log/* "$root"/dev/* "$root"/tmp/* "$root"/var/tmp/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  # No set-user-ID or set-group-ID programs (su, mount, passwd...): nothing in
  # the image can give back what --drop-privileges gave up.
  find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
  # Built once and kept: the same tree, whoever builds it.
  tar -C "$root" --numeric-owner -cf "$work/base.tar" .
  rm -rf "$root"
  local c
  c=$(buildah from scratch)
  buildah add --quiet "$c" "$work/base.tar" / >/dev/null
  buildah config --label io.pyprobe.image.base="$base_key" "$c"
  buildah commit --quiet --rm "$c" "$BASE" >/dev/null
  rm -f "$work/base.tar"
}

if podman image exists "$BASE"; then
  log "base cached: $BASE"
else
  build_base
  # Bases of earlier recipes are not used any more.
  podman images --format '{{.Repository}}:{{.Tag}}' localhost/pyprobe-base \
    | grep -vx "$BASE" | xargs -r podman rmi >/dev/null 2>&1 || true
  log "base built: $BASE"
fi

# -- the top layer: the package, the warmed cache ------------------------------------
ctr=$(buildah from --pull-never "$BASE")
mnt=$(buildah mount "$ctr")
install -m 0644 "$deb" "$mnt/tmp/pyprobe.deb"
mount -t proc proc "$mnt/proc"; mounts+=("$mnt/proc")
# postinst byte-compiles the package and makes /var/cache/pyprobe (root's,
# 0700); it does not compile in a chroot.
chroot "$mnt" dpkg -i /tmp/pyprobe.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; exit 1; }
rm -f "$mnt/tmp/pyprobe.deb"

warm() {
  local krel build
  krel=$(uname -r)
  build=/lib/modules/$krel/build
  if [ ! -e "$build/include" ]; then
    log "no kernel headers at $build: the program cache is left empty (the first start compiles)"
    return 0
  fi
  mount --rbind /sys "$mnt/sys"; mount --make-rslave "$mnt/sys"; mounts+=("$mnt/sys")
  mount --bind /dev "$mnt/dev"; mounts+=("$mnt/dev")
  mkdir -p "$mnt/lib/modules" "$mnt/usr/src"
  mount --bind -o ro /lib/modules "$mnt/lib/modules"; mounts+=("$mnt/lib/modules")
  mount --bind -o ro /usr/src "$mnt/usr/src"; mounts+=("$mnt/usr/src")
  local out
  if out=$(chroot "$mnt" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/pyprobe compile 2>&1); then
    log "program cache warmed for $krel: $(grep -c ' compiled ' <<<"$out") compiled"
  else
    log "could not warm every program (what is missing compiles at start):"
    sed 's/^/image:   /' <<<"$out" >&2
  fi
  for _ in 1 2 3 4; do umount -l "${mounts[-1]}"; unset 'mounts[-1]'; done
}
warm
umount "$mnt/proc"; unset 'mounts[-1]'
rm -rf "$mnt"/tmp/* "$mnt"/var/log/*
buildah umount "$ctr" >/dev/null

# Root at start (attaching needs CAP_BPF, CAP_PERFMON, setns...), then the
# exporter becomes pyprobe with no capabilities (--drop-privileges) before it
# serves. Arguments replace the whole CMD: keep --drop-privileges in them.
buildah config \
  --entrypoint '["/usr/bin/pyprobe", "export"]' \
  --cmd '--web.listen-address=:9977 --drop-privileges=pyprobe' \
  --user 0:0 --workingdir / --port 9977/tcp \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env PYTHONDONTWRITEBYTECODE=1 \
  --label org.opencontainers.image.title=pyprobe \
  --label org.opencontainers.image.description="pyprobe export: eBPF network metrics for Prometheus" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label io.pyprobe.image.base="$base_key" \
  --label io.pyprobe.image.inputs="$inputs" \
  --label io.pyprobe.image.warmed-for="$(uname -r)" \
  "$ctr"
old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
buildah commit --quiet --rm "$ctr" "$IMAGE" >/dev/null
ctr=""
# The image this one replaces, unless something else still names it.
if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  podman rmi "$old" >/dev/null 2>&1 || true
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in $(( $(date +%s) - start ))s: $(( size / 1000000 )) MB (inputs $inputs)"
