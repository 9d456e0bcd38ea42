import socket

from pyprobe.kernel import names


def test_tcp_states_match_kernel_numbers():
    # include/net/tcp_states.h
    assert names.tcp_state(1) == "ESTABLISHED"
    assert names.tcp_state(6) == "TIME_WAIT"
    assert names.tcp_state(7) == "CLOSE"
    assert names.tcp_state(10) == "LISTEN"
    assert names.tcp_state(12) == "NEW_SYN_RECV"
    assert names.tcp_state(13) == "UNKNOWN_13"
    assert len(names.TCP_STATES) == 12


def test_addresses_and_endpoints():
    v4 = bytes([10, 231, 0, 1]) + bytes(12)
    assert names.inet_addr(socket.AF_INET, v4) == "10.231.0.1"
    v6 = bytes(15) + b"\x01"
    assert names.inet_addr(socket.AF_INET6, v6) == "::1"
    assert names.endpoint(socket.AF_INET6, v6, 443) == "[::1]:443"
    assert names.endpoint(socket.AF_INET, v4, 8080) == "10.231.0.1:8080"
    assert names.inet_addr(99, v4) == "?"


def test_fast_tcpstate_decode_and_json_match_the_slow_paths():
    """The stream's hot path (struct.unpack_from, f-string JSON) says exactly
    what the ctypes mirror and json.dumps would."""
    import json

    from fakes import fake_env

    from pyprobe.core.events import header
    from pyprobe.core.text import json_line as ndjson
    from pyprobe.core.text import quoted
    from tests.support import registry

    TcpStateEvent = header().layout("tcpstate_event").ctype
    F_OWNER_KNOWN = header().constant("F_OWNER_KNOWN")
    _EVENT = header().layout("tcpstate_event").record
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
    probe = registry.create("tcpstates", env=fake_env())
    row = (_EVENT.size, *_EVENT.unpack_from(bytes(ev)))
    for name in (None, 'ns"x'):
        fast = probe.json_lines([row], lambda ns, name=name: quoted(name))
        assert json.loads(fast) == json.loads(ndjson({**decoded, "netns_name": name}))


def test_stream_json_from_rows_says_what_the_decoded_path_says():
    """`tcpstates -j`'s row path (TcpStates.json_lines, no dict in between)
    says, line for line, what json.dumps of decode_row's dict says:
    both families, a comm and a namespace name needing escapes, a state out
    of range, with and without the delta and the known owner."""
    import json

    from fakes import fake_env

    from pyprobe.core.events import header
    from pyprobe.core.text import json_line as ndjson
    from pyprobe.core.text import quoted
    from tests.support import registry

    c = header().constants
    F_OWNER_KNOWN, F_DELTA_KNOWN = c["F_OWNER_KNOWN"], c["F_DELTA_KNOWN"]
    F_LIFE_KNOWN, F_BYTES_KNOWN = c["F_LIFE_KNOWN"], c["F_BYTES_KNOWN"]
    _EVENT = header().layout("tcpstate_event").record
    probe = registry.create("tcpstates", env=fake_env())
    v4 = lambda a: socket.inet_aton(a) + bytes(12)  # noqa: E731
    v6 = lambda a: socket.inet_pton(socket.AF_INET6, a)  # noqa: E731
    rows = [
        (_EVENT.size, *r)
        for r in (
            (
                5,
                0xFFFF8881,
                2_500_000,
                1_234_567_890,  # life_ns
                100_001,  # rx_bytes
                (1 << 64) - 1,  # tx_bytes
                42,  # cgroup
                7,
                4026531833,
                v4("10.0.0.1"),
                v4("10.0.0.2"),
                80,
                5555,
                2,
                1,
                4,
                F_OWNER_KNOWN | F_DELTA_KNOWN | F_LIFE_KNOWN | F_BYTES_KNOWN,
                b"curl" + bytes(12),
            ),
            (
                123_456_789_012,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                v6("fe80::1"),
                v6("::1"),
                0,
                443,
                10,
                0,
                250,
                0,
                b'cu"rl\\\x01' + bytes(9),
            ),
            (
                7,
                1,
                999,
                999,
                5,
                6,
                0,
                1 << 31,
                4026532000,
                v4("127.0.0.1"),
                v4("127.0.0.1"),
                65535,
                1,
                2,
                2,
                1,
                F_DELTA_KNOWN | F_LIFE_KNOWN,  # bytes not read: not a CLOSE
                bytes(16),
            ),
        )
    ]
    names = {4026531833: 'ns"x', 4026532000: "lab"}
    fast = probe.json_lines(rows, lambda ns: quoted(names.get(ns)))
    slow = [ndjson({**probe.decode_row(r), "netns_name": names.get(r[9])}) for r in rows]
    assert [json.loads(line) for line in fast.splitlines()] == [json.loads(x) for x in slow]
    # time and ms as exact decimals of their nanoseconds
    assert '"ms":2.500000,' in fast and '"ms":0.000999,' in fast
    assert '"life_ms":1234.567890,"rx_bytes":100001,"tx_bytes":18446744073709551615,' in fast
    assert '"life_ms":0.000999,"rx_bytes":null,"tx_bytes":null,' in fast
    assert '"life_ms":null,"rx_bytes":null,"tx_bytes":null,' in fast
    assert fast.count("\n") == 3 and '"newstate":"UNKNOWN_250"' in fast
