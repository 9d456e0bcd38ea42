#!/usr/bin/env bash
# Inside a Vagrant VM (provisioner "test"), after provisioner "setup"
# (vagrant/provision.sh): run the tests on this VM's kernel.
#
#   vagrant/guest-test.sh vm        tests/vm: the kprobe fallbacks attached
#                                   for real, and the hooks this kernel picks
#   vagrant/guest-test.sh default   tests/unit, tests/vm and $PYPROBE_VAGRANT_KERNEL_TESTS
#                                   (tests/kernel/test_tcpstates.py: the state
#                                   machine against the kernel's own counters,
#                                   every hook variant through the verifier)
#   vagrant/guest-test.sh full      `make test`, whole; its VM suite runs here,
#                                   in this VM's kernel (PYPROBE_VM_IN_PLACE=1)
#                                   instead of a qemu VM inside this one
#
# Under software emulation each bcc compile takes tens of seconds, and the
# whole `make test` compiles hundreds of programs: see vagrant/README.md for
# how long each suite takes. The last line says what ran and how it ended.
set -euo pipefail
SUITE=${1:-vm}
cd "$(dirname "$0")/.."
KERNEL_TESTS=${PYPROBE_VAGRANT_KERNEL_TESTS:-tests/kernel/test_tcpstates.py}
echo "guest-test: $(tr '\n' ' ' </etc/pyprobe-vagrant-box 2>/dev/null)running kernel $(uname -r), suite $SUITE"
start=$(date +%s)
set +e
case "$SUITE" in
  vm)
    PYPROBE_VM=1 .venv/bin/python -m pytest -p no:cacheprovider -ra tests/vm
    ;;
  default)
    # shellcheck disable=SC2086  # a list of paths
    PYPROBE_VM=1 .venv/bin/python -m pytest -p no:cacheprovider -ra --durations=15 \
      tests/unit tests/vm $KERNEL_TESTS
    ;;
  full)
    # A test's wait for a child to start (tests/support.py) is 60 s here, minutes
    # under TCG (an exporter compiles every probe); past it the test fails.
    PYPROBE_TEST_START_WITHIN=${PYPROBE_TEST_START_WITHIN:-900} PYPROBE_VM_IN_PLACE=1 make test
    ;;
  *)
    echo "guest-test: unknown suite '$SUITE': vm, default or full" >&2
    exit 2
    ;;
esac
rc=$?
set -e
echo "PYPROBE-VAGRANT-RESULT: suite=$SUITE kernel=$(uname -r) rc=$rc seconds=$(( $(date +%s) - start ))"
exit "$rc"
