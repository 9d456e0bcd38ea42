"""The tun and tap labs' tunnel: a VPN in a few lines, as the notes draw TUN
and TAP. In each of h1 and h2, a thread holds the namespace's tun0 (or tap0)
open and relays: what the kernel sends into the device is read here, an IP
packet from tun0 or an Ethernet frame from tap0 (ARP included), and sent as
one UDP datagram to the other host's eth0; what arrives on that UDP port is
written back into the device, and the kernel receives it as if from a wire.
Run by `pyprobe lab up -t tun|tap` as its own process (python -m
pyprobe.lab.tunrelay MODE NS:LOCAL:PEER ...), stopped by `lab down`."""

from __future__ import annotations

import fcntl
import functools
import os
import select
import signal
import socket
import struct
import sys
import threading

from ..netns.namespaces import NETNS_RUN_DIR, start_in_netns

TUNSETIFF = 0x400454CA
IFF_NO_PI = 0x1000  # packets and frames alone, without a protocol-information header
MODES = {"tun": 0x0001, "tap": 0x0002}  # IFF_TUN (layer 3), IFF_TAP (layer 2)
PORT = 4000  # the tunnel's UDP port on each host's eth0


def device(mode: str) -> str:
    return f"{mode}0"


def open_tun(name: str, mode: str = "tun") -> int:
    """The calling thread's namespace's tun or tap device `name`, opened (it
    exists: the lab made it persistent over netlink, in this mode)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), MODES[mode] | IFF_NO_PI))
    return fd


def relay(mode: str, local: str, peer: str, ready: threading.Barrier) -> None:
    """In the thread's namespace: tun0 or tap0 <-> UDP to the peer, forever."""
    try:
        tun = open_tun(device(mode), mode)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((local, PORT))
    except OSError:
        ready.abort()  # the main thread stops waiting: the process ends, the lab says why
        raise
    ready.wait()
    while True:
        readable, _, _ = select.select([tun, udp.fileno()], [], [])
        if tun in readable:
            udp.sendto(os.read(tun, 65535), (peer, PORT))
        if udp.fileno() in readable:
            os.write(tun, udp.recv(65535))


def main(argv: list[str]) -> None:
    mode, ends = argv[0], [arg.split(":") for arg in argv[1:]]
    ready = threading.Barrier(len(ends) + 1, timeout=5)
    for netns, local, peer in ends:
        start_in_netns(NETNS_RUN_DIR / netns, functools.partial(relay, mode, local, peer, ready))
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        sys.exit(1)  # an end could not open its device or its port
    print("ready", flush=True)  # the lab waits for this line before it returns
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main(sys.argv[1:])
