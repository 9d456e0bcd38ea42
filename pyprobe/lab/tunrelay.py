"""The tun lab's tunnel: a VPN in a few lines, as the notes draw TUN. In each
of h1 and h2, a thread holds the namespace's tun0 open and relays: what the
kernel routes into tun0 is read here as an IP packet and sent as one UDP
datagram to the other host's eth0; what arrives on that UDP port is written
back into tun0, and the kernel receives it as if from a wire. Run by
`pyprobe lab up -t tun` as its own process (python -m pyprobe.lab.tunrelay
NS:LOCAL:PEER ...), stopped by `lab down`."""

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
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
PORT = 4000  # the tunnel's UDP port on each host's eth0


def open_tun(name: str) -> int:
    """The calling thread's namespace's tun device `name`, opened (it exists:
    the lab made it persistent over netlink)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def relay(local: str, peer: str, ready: threading.Barrier) -> None:
    """In the thread's namespace: tun0 <-> UDP to the peer, forever."""
    try:
        tun = open_tun("tun0")
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
    ends = [arg.split(":") for arg in argv]
    ready = threading.Barrier(len(ends) + 1, timeout=5)
    for netns, local, peer in ends:
        start_in_netns(NETNS_RUN_DIR / netns, functools.partial(relay, local, peer, ready))
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        sys.exit(1)  # an end could not open its tun0 or its port
    print("ready", flush=True)  # the lab waits for this line before it returns
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main(sys.argv[1:])
