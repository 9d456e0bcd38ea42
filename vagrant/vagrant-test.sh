#!/usr/bin/env bash
# make vagrant-test: the Vagrant path, for real, on the boxes `make vagrant-box`
# built. For each machine, one after the other: `vagrant up` (libvirt, TCG:
# <domain type='qemu'>, never KVM; an isolated network, host <-> VM only),
# provisioner "setup" (vagrant/provision.sh, what `make setup` runs),
# provisioner "test" (vagrant/guest-test.sh), `vagrant destroy`. libvirtd and
# virtlogd are started when nothing else runs them (no service manager here),
# and whatever this script started is stopped on the way out, failure and
# Ctrl-C included: domains, the network (and its dnsmasq), the storage pool,
# the daemons.
#
#   vagrant/vagrant-test.sh [MACHINE...]   bookworm, oldkernel (default: both)
#   PYPROBE_VAGRANT_SUITE=vm|default|full  what runs inside (vagrant/guest-test.sh;
#                                          default: vm)
#   PYPROBE_VAGRANT_CPUS=2 PYPROBE_VAGRANT_MEMORY=2048
#   PYPROBE_VAGRANT_TEST_TIMEOUT=seconds   per machine, for the tests (default:
#                                          2 h; full: 12 h)
# Logs: $PYPROBE_VAGRANT_CACHE/logs (default /var/cache/pyprobe-vagrant/logs).
# Exit: 0 when every machine passed, 1 when one failed, 2 for what a user
# must fix first (one line: no box, no libvirt, no space, KVM asked for).
# shellcheck disable=SC2317  # cleanup() and its helpers run from the traps
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/.." && pwd)
PV_TAG=vagrant-test
# shellcheck source=vagrant/host-lib.sh
. "$HERE/host-lib.sh"
log() { echo "$PV_TAG: $*" >&2; }

# --- what a user must fix first: one line, exit 2 -------------------------
accel=${PYPROBE_VAGRANT_ACCEL:-tcg}
[ "$accel" = tcg ] || pv_die2 "PYPROBE_VAGRANT_ACCEL=$accel: make vagrant-test runs on software emulation only (KVM crashed this kind of host); unset PYPROBE_VAGRANT_ACCEL (on a laptop with KVM: cd vagrant && PYPROBE_VAGRANT_ACCEL=kvm vagrant up)"
pv_need_root
SUITE=${PYPROBE_VAGRANT_SUITE:-vm}
case "$SUITE" in vm|default|full) ;; *) pv_die2 "PYPROBE_VAGRANT_SUITE=$SUITE: use vm, default or full" ;; esac
machines=("$@")
[ ${#machines[@]} -gt 0 ] || machines=(bookworm oldkernel)
for m in "${machines[@]}"; do
  [ -n "${PV_MACHINE_BOX[$m]:-}" ] || pv_die2 "unknown machine '$m': bookworm or oldkernel"
  b=${PV_MACHINE_BOX[$m]}
  { [ -f "$PV_CACHE/boxes/$b.json" ] && [ -f "$PV_CACHE/boxes/$b.box" ]; } ||
    pv_die2 "no box pyprobe/$b in $PV_CACHE/boxes: build it first with make vagrant-box"
done
cpus=${PYPROBE_VAGRANT_CPUS:-2}
memory=${PYPROBE_VAGRANT_MEMORY:-2048}
[[ "$cpus" =~ ^[12]$ ]] || pv_die2 "PYPROBE_VAGRANT_CPUS=$cpus: 1 or 2 (emulated vCPUs share this host's cores)"
free=$(pv_free_gb "$PV_CACHE")
[ "$free" -ge 6 ] || pv_die2 "only ${free} GB free under $PV_CACHE, a run needs 6 GB (the boxes' disks in the storage pool): free some space or set PYPROBE_VAGRANT_CACHE"
avail_mb=$(( $(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) / 1024 ))
[ "$avail_mb" -ge $(( memory + 512 )) ] || pv_die2 "only ${avail_mb} MB of memory available, a ${memory} MB VM needs $(( memory + 512 )): set PYPROBE_VAGRANT_MEMORY lower or stop something"
case "$SUITE" in full) test_timeout=${PYPROBE_VAGRANT_TEST_TIMEOUT:-43200} ;; *) test_timeout=${PYPROBE_VAGRANT_TEST_TIMEOUT:-7200} ;; esac

pv_install vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 \
  qemu-utils dnsmasq-base iptables rsync openssh-client python3-pip
vagrant plugin list 2>/dev/null | grep vagrant-libvirt >/dev/null ||
  pv_die2 "vagrant has no vagrant-libvirt plugin: apt-get install vagrant-libvirt"

mkdir -p "$PV_CACHE/logs" "$PV_CACHE/pool"
# One run at a time: two would share the network, the daemons and the machines.
exec 9>"$PV_CACHE/vagrant-test.lock"
flock -n 9 || pv_die2 "another make vagrant-test is running (lock $PV_CACHE/vagrant-test.lock): wait for it or stop it"
export VAGRANT_CWD="$HERE" PYPROBE_VAGRANT_CACHE="$PV_CACHE" PYPROBE_VAGRANT_ACCEL=tcg
export PYPROBE_VAGRANT_SUITE="$SUITE" PYPROBE_VAGRANT_CPUS="$cpus" PYPROBE_VAGRANT_MEMORY="$memory"
export VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1 LIBVIRT_DEFAULT_URI=qemu:///system
NET=pyprobe-vagrant
POOL=pyprobe-vagrant

# --- the way out: runs on success, failure, Ctrl-C --------------------------
started_libvirtd=""
started_virtlogd=""
created_pool=""
attempted=()
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() {  # pid name: TERM, then KILL after 30 s
  local pid=$1 name=$2
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do alive "$pid" || { log "stopped $name (pid $pid)"; return 0; }; sleep 0.5; done
  log "$name (pid $pid) still running after 30 s: KILL"
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? m d pid
  trap '' INT TERM
  set +e
  for m in "${attempted[@]}"; do
    timeout 600 vagrant destroy -f "$m" >>"$PV_CACHE/logs/$m-destroy.log" 2>&1
  done
  if virsh uri >/dev/null 2>&1; then
    for m in "${attempted[@]}"; do
      d="pyprobe-$m"
      if virsh dominfo "$d" >/dev/null 2>&1; then
        log "domain $d left by vagrant: removing it"
        virsh destroy "$d" >/dev/null 2>&1
        virsh undefine "$d" --remove-all-storage >/dev/null 2>&1 || virsh undefine "$d" >/dev/null 2>&1
      fi
    done
    if virsh net-info "$NET" >/dev/null 2>&1; then
      virsh net-destroy "$NET" >/dev/null 2>&1
      virsh net-undefine "$NET" >/dev/null 2>&1
    fi
    # The pool is transient; a libvirtd started here brings it back from
    # /run at its next start unless it is stopped now (its volumes stay).
    [ -z "$created_pool$started_libvirtd" ] || virsh pool-destroy "$POOL" >/dev/null 2>&1
  fi
  # The network's dnsmasq, should libvirt have left it behind (it gets 5 s).
  pid=$(cat "/run/libvirt/network/$NET.pid" 2>/dev/null)
  for _ in $(seq 10); do alive "$pid" || break; sleep 0.5; done
  if alive "$pid"; then
    log "dnsmasq of $NET (pid $pid) still running after the network was removed: stopping it"
    kill -TERM "$pid"
  fi
  [ -z "$started_libvirtd" ] || stop_pid "$started_libvirtd" libvirtd
  # A domain the stopped libvirtd still had (vagrant interrupted while it
  # started one): its qemu outlives the daemon, so it is stopped here.
  if [ -n "$started_libvirtd" ]; then
    for pid in $(pgrep -f "^/usr/bin/qemu-system-x86_64 -name guest=pyprobe-" || true); do
      stop_pid "$pid" "qemu of a pyprobe domain"
    done
  fi
  [ -z "$started_virtlogd" ] || stop_pid "$started_virtlogd" virtlogd
  local left
  left=$(pgrep -a -f "qemu-system-x86_64 .*guest=pyprobe-|dnsmasq .*/$NET.conf" || true)
  [ -z "$started_libvirtd" ] || left+=$(pgrep -a -x libvirtd || true)
  if [ -n "$left" ]; then log "still running after cleanup:"; echo "$left" >&2; [ "$rc" != 0 ] || rc=1
  else log "nothing left running (domains, $NET and its dnsmasq$([ -n "$started_libvirtd" ] && echo ", libvirtd, virtlogd"))"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted: cleaning up"; exit 130' INT
trap 'log "terminated: cleaning up"; exit 143' TERM

# --- libvirt, started here when no service manager runs it ------------------
if ! virsh uri >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl start libvirtd.service virtlogd.service ||
      pv_die2 "systemctl start libvirtd failed: see journalctl -u libvirtd"
  else
    pid=$(cat /run/virtlogd.pid 2>/dev/null || true)
    if ! alive "$pid"; then
      virtlogd -d 9>&- || pv_die2 "virtlogd -d failed: is libvirt-daemon-system installed?"
      started_virtlogd=$(cat /run/virtlogd.pid)
    fi
    # In a mount namespace of its own where /dev/kvm is /dev/null: neither
    # libvirtd's capability probes nor any qemu it starts can open KVM, even
    # by mistake (a domain of type kvm then fails to start).
    unshare --mount --propagation private sh -c \
      '[ ! -e /dev/kvm ] || mount --bind /dev/null /dev/kvm || exit 3; exec libvirtd -d' 9>&- ||
      pv_die2 "libvirtd -d failed: is libvirt-daemon-system installed? (run libvirtd in the foreground to see why)"
    for _ in $(seq 60); do virsh uri >/dev/null 2>&1 && break; sleep 0.5; done
    started_libvirtd=$(cat /run/libvirtd.pid 2>/dev/null || true)
    log "started libvirtd (pid $started_libvirtd) and virtlogd (pid ${started_virtlogd:-already running}): no service manager here"
  fi
  virsh uri >/dev/null 2>&1 || pv_die2 "libvirtd does not answer on qemu:///system: check /var/log/libvirt/libvirtd.log"
  # A daemon started here starts its autostart networks too: none may route
  # anywhere from here, so any but ours are stopped again.
  if [ -n "$started_libvirtd" ]; then
    for n in $(virsh net-list --name); do
      [ "$n" = "$NET" ] && continue
      log "libvirtd autostarted network $n: stopping it (only $NET, isolated, is used)"
      virsh net-destroy "$n" >/dev/null
    done
  fi
fi
# (read whole: grep -q may close the pipe first, and pipefail counts virsh's SIGPIPE)
caps=$(virsh capabilities 2>/dev/null || true)
grep -q "<domain type='qemu'" <<<"$caps" ||
  pv_die2 "libvirt offers no <domain type='qemu'> (TCG): apt-get install qemu-system-x86"
if ! virsh pool-info "$POOL" >/dev/null 2>&1; then
  # Transient: gone with the daemon; its volumes (the uploaded box images)
  # stay in $PV_CACHE/pool for the next run.
  virsh pool-create-as "$POOL" dir --target "$PV_CACHE/pool" >/dev/null
  created_pool=1
fi
virsh pool-refresh "$POOL" >/dev/null
# Box images of older builds, uploaded by earlier runs: only the current
# version of each box stays in the pool.
for b in "${PV_BOXES_ALL[@]}"; do
  version=$(sed -n 's/.*"version": "\([^"]*\)".*/\1/p' "$PV_CACHE/boxes/$b.json" 2>/dev/null || true)
  for vol in $(virsh vol-list "$POOL" | awk 'NR>2 {print $1}' | grep "^pyprobe-VAGRANTSLASH-${b}_vagrant_box_image_" || true); do
    [[ "$vol" == *"_image_${version}_"* ]] || { virsh vol-delete --pool "$POOL" "$vol" >/dev/null && log "deleted old box image $vol"; }
  done
done

# --- the VM's Python wheels (no index reachable from inside) ----------------
wheels="$PV_CACHE/wheels"
mkdir -p "$wheels"
mapfile -t reqs < <(/usr/bin/python3 - "$PROJECT/pyproject.toml" <<'EOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))
for r in p["build-system"]["requires"] + p["project"]["dependencies"]:
    print(r.split(";")[0].strip() if "python_version < '3.11'" in r else r)
for extra in p["project"].get("optional-dependencies", {}).values():
    print(*extra, sep="\n")
print("editables")
EOF
)
if /usr/bin/python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
     --dest "$wheels" "${reqs[@]}" >"$PV_CACHE/logs/wheels.log" 2>&1; then
  log "wheels for the VMs' pip: $(find "$wheels" -name '*.whl' | wc -l) in $wheels"
elif [ -n "$(find "$wheels" -name '*.whl' -print -quit)" ]; then
  log "could not refresh the wheels (see $PV_CACHE/logs/wheels.log): using the $(find "$wheels" -name '*.whl' | wc -l) cached"
else
  pv_die2 "no wheels for pip inside the VMs and PyPI unreachable (see $PV_CACHE/logs/wheels.log): run once where PyPI is reachable"
fi

# --- each machine: up, setup, test, destroy ---------------------------------
summary=()
failed=0
phase() {  # machine phase timeout cmd... -> time in $phase_s, status in $phase_rc
  local m=$1 ph=$2 to=$3 t0
  shift 3
  t0=$(date +%s)
  set +e
  timeout -k 60 "$to" "$@" 2>&1 | tee "$PV_CACHE/logs/$m-$ph.log" | sed -u "s/^/  [$m $ph] /" >&2
  phase_rc=${PIPESTATUS[0]}
  set -e
  phase_s=$(( $(date +%s) - t0 ))
  log "$m: $ph exit $phase_rc after ${phase_s}s"
}
for m in "${machines[@]}"; do
  attempted+=("$m")
  : >"$PV_CACHE/logs/$m-console.log"
  log "$m: vagrant up (box pyprobe/${PV_MACHINE_BOX[$m]}, TCG, $cpus vCPUs, ${memory} MB)"
  phase "$m" up 3600 vagrant up "$m" --provider libvirt --no-provision
  up_s=$phase_s up_rc=$phase_rc
  setup_s=- test_s=- kernel=- boot="" result="not run"
  if [ "$up_rc" = 0 ]; then
    domtype=$(virsh dumpxml "pyprobe-$m" | sed -n "s/^<domain type='\([a-z]*\)'.*/\1/p")
    log "$m: domain pyprobe-$m is <domain type='$domtype'>"
    [ "$domtype" = qemu ] || { log "$m: not TCG: stopping"; exit 1; }
    # What a user would type first, and how long the guest took to boot.
    boot=$(timeout 300 vagrant ssh "$m" -c 'uname -r; systemd-analyze | head -n1' 2>/dev/null |
           tr -d '\r' | paste -sd' ' - | sed 's/ *$//' || true)
    log "$m: vagrant ssh -c 'uname -r; systemd-analyze': ${boot:-no answer}"
    phase "$m" setup 7200 vagrant provision "$m" --provision-with setup
    setup_s=$phase_s
    if [ "$phase_rc" = 0 ]; then
      phase "$m" test "$test_timeout" vagrant provision "$m" --provision-with test
      test_s=$phase_s
      line=$(grep -a 'PYPROBE-VAGRANT-RESULT:' "$PV_CACHE/logs/$m-test.log" | tail -n1 || true)
      kernel=$(sed -n 's/.*kernel=\([^ ]*\).*/\1/p' <<<"$line")
      # pytest's last line, behind vagrant's "    MACHINE: " prefix
      result=$(grep -aoE '[0-9]+ (passed|failed)[^=]* in [0-9.]+s' "$PV_CACHE/logs/$m-test.log" | paste -sd';' - || true)
      [ "$phase_rc" = 0 ] || { failed=1; result="FAILED (exit $phase_rc): ${result:-no pytest summary}"; }
    else
      failed=1; result="setup FAILED (exit $phase_rc)"
    fi
  else
    failed=1; result="vagrant up FAILED (exit $up_rc)"
  fi
  phase "$m" destroy 600 vagrant destroy -f "$m"
  summary+=("$m (pyprobe/${PV_MACHINE_BOX[$m]}, kernel $kernel): up ${up_s}s (${boot:-boot time unknown}), setup ${setup_s}s, tests ${test_s}s [$SUITE]: $result")
done
log "summary ($(date -u +%Y-%m-%dT%H:%MZ), suite $SUITE):"
printf '  %s\n' "${summary[@]}" | tee "$PV_CACHE/logs/summary.txt" >&2
exit "$failed"
