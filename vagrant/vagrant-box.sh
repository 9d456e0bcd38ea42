#!/usr/bin/env bash
# make vagrant-box: build the local libvirt boxes (vagrant/box/build-box.sh)
# into the cache when missing or built by another recipe, and register them
# with `vagrant box add` (pyprobe/bookworm, pyprobe/bookworm-5.10).
#
#   vagrant/vagrant-box.sh [BOX...]     default: every box
#   PYPROBE_VAGRANT_REBUILD=1           rebuild even when cached
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PV_TAG=vagrant-box
# shellcheck source=vagrant/host-lib.sh
. "$HERE/host-lib.sh"
pv_need_root

boxes=("$@")
[ ${#boxes[@]} -gt 0 ] || boxes=("${PV_BOXES_ALL[@]}")
for b in "${boxes[@]}"; do
  [[ " ${PV_BOXES_ALL[*]} " == *" $b "* ]] || pv_die2 "unknown box '$b': ${PV_BOXES_ALL[*]}"
done
pv_install vagrant vagrant-libvirt debootstrap qemu-utils e2fsprogs fdisk

# A box is rebuilt when the recipe changes: the build script and the package
# list provision.sh installs (both end up inside the box).
recipe=$(cat "$HERE/box/build-box.sh" <(sed -n '/^PKGS=(/,/)/p' "$HERE/provision.sh") | sha256sum | cut -c1-16)
for b in "${boxes[@]}"; do
  box="$PV_CACHE/boxes/$b.box"
  if [ "${PYPROBE_VAGRANT_REBUILD:-}" != 1 ] && [ -f "$box" ] && [ -f "$PV_CACHE/boxes/$b.json" ] &&
     [ "$(cat "$PV_CACHE/boxes/$b.recipe" 2>/dev/null)" = "$recipe" ]; then
    echo "$PV_TAG: $b cached: $box ($(du -h "$box" | cut -f1), kernel $(cat "$PV_CACHE/boxes/$b.kernel"))" >&2
  else
    rm -f "$PV_CACHE/boxes/$b.recipe"
    "$HERE/box/build-box.sh" "$b"
    echo "$recipe" >"$PV_CACHE/boxes/$b.recipe"
  fi
  version=$(sed -n 's/.*"version": "\([^"]*\)".*/\1/p' "$PV_CACHE/boxes/$b.json")
  if vagrant box list --machine-readable 2>/dev/null | grep "box-version,$version\$" >/dev/null &&
     vagrant box list 2>/dev/null | grep "^pyprobe/$b .*$version" >/dev/null; then
    echo "$PV_TAG: pyprobe/$b $version already added" >&2
    continue
  fi
  # One version of each box: the one just built.
  vagrant box remove "pyprobe/$b" --all --force >/dev/null 2>&1 || true
  vagrant box add --provider libvirt "$PV_CACHE/boxes/$b.json" >&2
  echo "$PV_TAG: added pyprobe/$b $version" >&2
done
vagrant box list | grep '^pyprobe/' >&2 || true
