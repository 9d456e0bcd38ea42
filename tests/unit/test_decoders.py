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


def test_fast_tcpstate_decode_and_json_match_the_slow_paths():
    """The stream's hot path (struct.unpack_from, f-string JSON) says exactly
    what the ctypes mirror and json.dumps would."""
    import json

    from fakes import fake_env

    from pyprobe import registry
    from pyprobe.render import ndjson, tcpstate_json
    from pyprobe.structs import F_OWNER_KNOWN, TcpStateEvent

    ev = TcpStateEvent(
        ts_ns=5,
        skaddr=0xFFFF8881,
        delta_ns=2500000,
        pid=7,
        netns=4026531833,
        sport=80,
        dport=5555,
        family=10,
        oldstate=1,
        newstate=4,
        flags=F_OWNER_KNOWN,
        comm=b'cu"rl\\',
    )
    ev.saddr[15], ev.daddr[15] = 1, 2
    decoded = registry.create("tcpstates", env=fake_env()).decode(bytes(ev))
    assert decoded["saddr"] == "::1" and decoded["daddr"] == "::2"
    assert (decoded["comm"], decoded["owner_known"], decoded["ms"]) == ('cu"rl\\', True, None)
    assert decoded["oldstate"] == "ESTABLISHED" and decoded["newstate"] == "FIN_WAIT1"
    for name in (None, 'ns"x'):
        fast = tcpstate_json(decoded, name)
        assert json.loads(fast) == json.loads(ndjson({**decoded, "netns_name": name}))
