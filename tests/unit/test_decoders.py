import socket

from pyprobe import decoders


def test_tcp_states_match_kernel_numbers():
    # include/net/tcp_states.h
    assert decoders.tcp_state(1) == "ESTABLISHED"
    assert decoders.tcp_state(6) == "TIME_WAIT"
    assert decoders.tcp_state(7) == "CLOSE"
    assert decoders.tcp_state(10) == "LISTEN"
    assert decoders.tcp_state(12) == "NEW_SYN_RECV"
    assert decoders.tcp_state(13) == "UNKNOWN_13"
    assert len(decoders.TCP_STATES) == 12


def test_addresses_and_endpoints():
    v4 = bytes([10, 231, 0, 1]) + bytes(12)
    assert decoders.inet_addr(socket.AF_INET, v4) == "10.231.0.1"
    v6 = bytes(15) + b"\x01"
    assert decoders.inet_addr(socket.AF_INET6, v6) == "::1"
    assert decoders.endpoint(socket.AF_INET6, v6, 443) == "[::1]:443"
    assert decoders.endpoint(socket.AF_INET, v4, 8080) == "10.231.0.1:8080"
    assert decoders.inet_addr(99, v4) == "?"
