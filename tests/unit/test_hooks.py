"""Hook choice: the first usable hook in manifest order, each verdict with its reason."""

from pathlib import Path

from fakes import FakeBTF, fake_env

from pyprobe.core.hooks import choose, usable_points
from tests.support import registry


def tcpstates():
    return registry.manifests["tcpstates"]


def labels(choice):
    return [(v.hook.kind, v.usable) for v in choice.verdicts]


def test_tp_btf_preferred_with_btf_offsets():
    choice = choose(tcpstates(), fake_env())
    assert choice.hook.kind == "tp_btf"
    assert "-DBTF_DIRECT" in choice.hook.cflags
    assert choice.offsets.source == "btf"
    assert "-DOFF_NET_INUM=176" in choice.offsets.cflags
    assert "-DOFF_INET_SPORT=782" in choice.offsets.cflags
    assert labels(choice) == [
        ("tp_btf", True),
        ("raw_tracepoint", True),
        ("tracepoint", True),
        ("kprobe", False),
    ]
    assert "kprobes not available" in choice.verdicts[3].reason


def test_raw_tracepoint_where_the_kernel_refuses_tp_btf():
    choice = choose(tcpstates(), fake_env(tp_btf_loads=False))
    assert choice.hook.kind == "raw_tracepoint"
    assert "-DBTF_DIRECT" not in choice.hook.cflags
    assert choice.verdicts[0].reason == (
        "this kernel does not load a BTF-typed (tp_btf) program on inet_sock_set_state"
    )


def test_tp_btf_points_carry_their_btf_id_stream_helpers_too():
    env = fake_env(
        fake_btf=FakeBTF(
            __import__("fakes").TCPSTATES_FIELDS,
            {"btf_trace_inet_sock_set_state", "btf_trace_tcp_sendmsg_locked"},
        )
    )
    hook = choose(tcpstates(), env).hook
    ids = {p.target: p.btf_id for p in usable_points(hook, env, stream=True)}
    assert ids == {"inet_sock_set_state": 1000, "tcp_sendmsg_locked": 1001}
    assert [p.target for p in usable_points(hook, env, stream=False)] == ["inet_sock_set_state"]


def test_no_btf_mismatched_headers_falls_back_to_tracepoint_without_offsets():
    choice = choose(tcpstates(), fake_env(fake_btf=None))
    assert choice.hook.kind == "tracepoint"
    assert choice.offsets.source == "none"
    assert "no BTF and no headers matching" in choice.verdicts[0].reason or (
        "no raw tracepoint" in choice.verdicts[0].reason
    )


def test_no_btf_but_matching_headers_lets_compiler_compute_offsets():
    env = fake_env(fake_btf=None, headers_release="6.18.0-test", kprobes=True)
    choice = choose(tcpstates(), env)
    assert choice.offsets.source == "headers"
    assert "-DOFF_NET_INUM=__builtin_offsetof(struct net, ns.inum)" in choice.offsets.cflags
    assert "-DPYPROBE_OFFSETS_FROM_HEADERS" in choice.offsets.cflags


def test_tracefs_missing_names_the_fix():
    env = fake_env(tracefs=None, fake_btf=None)
    choice = choose(tcpstates(), env)
    assert choice.hook is None
    assert "mount -t tracefs" in choice.reason


def test_disabled_hooks_give_kprobe_fallback():
    disabled = frozenset({"tp_btf", "raw_tracepoint", "tracepoint"})
    env = fake_env(kprobes=True, disabled_hooks=disabled)
    choice = choose(tcpstates(), env)
    assert choice.hook.kind == "kprobe" and choice.hook.target == "tcp_set_state"
    assert choice.verdicts[0].reason == "disabled by PYPROBE_DISABLE_HOOKS"


def test_disable_by_label_and_missing_kernel_function():
    env = fake_env(
        kprobes=True,
        symbols=frozenset(),
        disabled_hooks=frozenset({"tp_btf", "raw_tracepoint:inet_sock_set_state"}),
    )
    choice = choose(tcpstates(), env)
    assert choice.hook.kind == "tracepoint"
    assert "no kernel function tcp_set_state" in choice.verdicts[3].reason


def test_struct_size_mismatch_in_btf_blocks_offset_hooks_only():
    fields = {"sock.sk_protocol": (532, 1)}  # a kernel where it is a byte (or a bitfield)
    env = fake_env(fake_btf=FakeBTF(fields, {"btf_trace_inet_sock_set_state"}))
    choice = choose(tcpstates(), env)
    assert choice.hook.kind == "tracepoint"
    assert "expected 2 bytes" in choice.verdicts[0].reason


def test_optional_offset_missing_is_absent_not_fatal():
    fields = {k: v for k, v in __import__("fakes").TCPSTATES_FIELDS.items() if k != "net.ns.inum"}
    env = fake_env(fake_btf=FakeBTF(fields, {"btf_trace_inet_sock_set_state"}))
    choice = choose(tcpstates(), env)
    assert choice.hook.kind == "tp_btf"
    assert choice.offsets.absent == {"OFF_NET_INUM"}


def test_manifest_program_pairs_by_stem():
    m = tcpstates()
    assert m.program.name == "tcpstates.bpf.c" and m.program.is_file()
    assert Path(m.path).stem == m.name


def test_a_point_of_a_feature_that_is_off_does_not_rule_its_hook_out():
    """queues' tracepoint hook on a kernel whose tcp:tcp_probe has no skaddr
    (6.1): usable without acks, ruled out with it, the field named."""
    tps = {"sock:sock_rcvqueue_full", "sock:sock_exceed_buf_limit", "tcp:tcp_probe"}
    env = fake_env(
        fake_btf=None,  # no raw tracepoints, no offsets from BTF: the tracepoint hook or none
        tracepoints=frozenset(tps),
        fields={"tcp:tcp_probe": {"srtt", "saddr", "daddr"}},
        headers_release="6.18.0-test",  # headers that match: the offsets it needs
    )
    manifest = registry.manifests["queues"]
    plain = choose(manifest, env, frozenset())
    assert plain.hook is not None and plain.hook.kind == "tracepoint"
    acks = choose(manifest, env, frozenset({"acks"}))
    assert acks.hook is None
    assert "tracepoint tcp:tcp_probe has no field skaddr here" in acks.verdicts[-1].reason
