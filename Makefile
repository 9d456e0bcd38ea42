# pyprobe: `make demo` and `make test` install what they need and need root;
# run as a normal user they re-run themselves through sudo where it exists.
VENV   := .venv
PYTEST := $(VENV)/bin/python -m pytest

# One shell line: re-exec this very target as root, or say how.
AS_ROOT = if [ "$$(id -u)" != 0 ]; then \
	if command -v sudo >/dev/null 2>&1; then exec sudo $(MAKE) --no-print-directory $@; fi; \
	echo "make $@ needs root: log in as root (this machine has no sudo) and run: make $@" >&2; \
	exit 2; fi

.PHONY: setup demo test test-unit test-faults soak vm-test vagrant-box vagrant-test bench check fmt deb image man

setup:
	@$(AS_ROOT); ./vagrant/provision.sh

demo:
	@$(AS_ROOT); ./vagrant/provision.sh && $(VENV)/bin/pyprobe demo

# pytest exit 5 ("no tests collected") is a failure here: nothing was proven.
# Then the VM suite: the kprobe fallbacks can only be attached in a VM whose
# kernel has kprobes (this kind of host has none).
test:
	@$(AS_ROOT); ./vagrant/provision.sh && { $(PYTEST) -ra; rc=$$?; \
	if [ $$rc = 5 ]; then echo "make test: no tests collected" >&2; exit 1; fi; \
	[ $$rc = 0 ] || exit $$rc; } && ./vagrant/qemu/run-tests.sh

# The kprobe fallbacks, proven in a qemu VM (TCG only) running Debian's kernel;
# the image is built once and cached in /var/cache/pyprobe-vm.
vm-test:
	@$(AS_ROOT); ./vagrant/provision.sh && ./vagrant/qemu/run-tests.sh

# Vagrant boxes for libvirt built here from Debian packages (debootstrap),
# cached in /var/cache/pyprobe-vagrant and registered with `vagrant box add`:
# pyprobe/bookworm (6.1) and pyprobe/bookworm-5.10. BOXES=bookworm: just one.
vagrant-box:
	@$(AS_ROOT); ./vagrant/vagrant-box.sh $(BOXES)

# The Vagrant path for real, on those boxes: libvirtd (and virtlogd) started
# here when nothing runs them, vagrant up under TCG (never KVM) on an isolated
# network, provision.sh, the tests inside (PYPROBE_VAGRANT_SUITE=vm|default|full),
# vagrant destroy; what it started is stopped. Not part of `make test`: it
# takes long (vagrant/README.md). MACHINES=bookworm: just one.
vagrant-test:
	@$(AS_ROOT); ./vagrant/vagrant-test.sh $(MACHINES)

# Side by side with the bcc tools and bpftrace; writes bench/RESULTS.md.
bench:
	@$(AS_ROOT); ./vagrant/provision.sh && $(VENV)/bin/python -m bench

# The hardening suite alone (also part of `make test`, its soak cut to 60 s).
test-faults:
	@$(AS_ROOT); ./vagrant/provision.sh && $(PYTEST) -ra -m faults tests/faults

# The 30-minute soak under mixed traffic (RSS drift, lost events, monotonic
# counters), then 200 rounds of the exporter stopped with clients in flight.
soak:
	@$(AS_ROOT); ./vagrant/provision.sh && PYPROBE_SOAK_SECONDS=1800 $(PYTEST) -ra -s tests/faults/test_soak.py \
	&& PYPROBE_SHUTDOWN_ROUNDS=200 $(PYTEST) -ra -s tests/faults/test_shutdown.py

test-unit:
	$(PYTEST) -ra tests/unit

# build/man/*.1: a manual page per command, from the command tree (pyprobe man).
man:
	rm -rf build/man && $(VENV)/bin/pyprobe man build/man >/dev/null

# dist/pyprobe_<version>_all.deb for Debian 12, from this checkout alone
# (contrib/debian/build.py: dpkg-deb, no network, no root), with the manual pages.
deb: man
	/usr/bin/python3 contrib/debian/build.py --out dist --man build/man

# The exporter's OCI image, localhost/pyprobe:<version>, built offline from the
# Debian archive with the package above (deploy/image/build.sh; cached in
# podman's storage: a second run with the same inputs does nothing).
image:
	@$(AS_ROOT); ./vagrant/provision.sh && ./deploy/image/build.sh

check:
	$(VENV)/bin/ruff check pyprobe tests bench contrib
	$(VENV)/bin/ruff format --check pyprobe tests bench contrib
	$(VENV)/bin/mypy pyprobe contrib/debian/build.py

fmt:
	$(VENV)/bin/ruff format pyprobe tests bench contrib
	$(VENV)/bin/ruff check --fix pyprobe tests bench contrib
