"""Which network programs each backend loads, and the socket functions' argument positions
from BTF prototypes (the shapes real kernels have had). A function missing, split by the
compiler or of an unknown shape gives the backend the socket syscalls' tracepoints for the
network, with a note: never a guess, never the loss of its file events."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_hooks import PROGRAMS, PROTOS_6_3, FakeBtf

from vigil.kernel import hooks, net_hooks
from vigil.kernel.btf import Btf
from vigil.kernel.hooks import Program

SK, MSG = "struct sock *", "struct msghdr *"
UDP = [("sk", SK), ("msg", MSG), ("len", "size_t")]
# 5.10: inet_csk_accept(sk, flags, err, kern); udp_recvmsg with noblock
NET_5_10 = {
    "__sys_connect_file": [("file", "struct file *"), ("address", "struct sockaddr_storage *"),
                           ("addrlen", "int"), ("file_flags", "int")],
    "inet_bind": [("sock", "struct socket *"), ("uaddr", "struct sockaddr *"), ("addr_len", "int")],
    "inet6_bind": [("sock", "struct socket *"), ("uaddr", "struct sockaddr *"),
                   ("addr_len", "int")],
    "inet_csk_accept": [("sk", SK), ("flags", "int"), ("err", "int *"), ("kern", "bool")],
    "udp_sendmsg": UDP,
    "udpv6_sendmsg": UDP,
    "udp_recvmsg": [*UDP, ("noblock", "int"), ("flags", "int"), ("addr_len", "int *")],
    "udpv6_recvmsg": [*UDP, ("noblock", "int"), ("flags", "int"), ("addr_len", "int *")],
}
# 6.12: accept takes a struct proto_accept_arg *, recvmsg lost noblock, the address type renamed
NET_6_12 = dict(NET_5_10,
                __sys_connect_file=[("file", "struct file *"),
                                    ("address", "struct __kernel_sockaddr_storage *"),
                                    ("addrlen", "int"), ("file_flags", "int")],
                inet_csk_accept=[("sk", SK), ("arg", "struct proto_accept_arg *")],
                udp_recvmsg=[*UDP, ("flags", "int"), ("addr_len", "int *")],
                udpv6_recvmsg=[*UDP, ("flags", "int"), ("addr_len", "int *")])
RETURNS = {"inet_csk_accept": SK}


def net_btf(net: dict[str, list[tuple[str, str]]], files: dict[str, list[tuple[str, str]]]
            = PROTOS_6_3, **more: list[tuple[str, str]]) -> FakeBtf:
    return FakeBtf({**files, **net, **more, "security_path_unlink": [("x", "struct dentry *")],
                    "__fput": [("f", "struct file *")]}, RETURNS)


def test_positions_5_10_and_6_12() -> None:
    old = net_hooks.positions(net_btf(NET_5_10), 5, ret_in_ctx=True)  # type: ignore[arg-type]
    new = net_hooks.positions(net_btf(NET_6_12), 5, ret_in_ctx=True)  # type: ignore[arg-type]
    assert (old["ret_net_accept"], new["ret_net_accept"]) == (4, 2)
    assert (old["ret_net_udp_recvmsg"], new["ret_net_udp_recvmsg"]) == (6, 5)
    for p in (old, new):
        assert (p["pos_net_connect_file"], p["pos_net_connect_addr"], p["ret_net_connect"]) == \
            (0, 1, 4)
        assert (p["pos_net_udp_sendmsg_sk"], p["pos_net_udp_sendmsg_msg"]) == (0, 1)
        assert (p["pos_net_inet6_bind_sock"], p["ret_net_inet6_bind"]) == (0, 3)


NET_PROGRAMS = [
    *PROGRAMS,
    Program("net_state", "tracepoint/sock/inet_sock_set_state"),
    Program("net_enter_connect", "tracepoint/syscalls/sys_enter_connect"),
    Program("net_exit_accept4", "tracepoint/syscalls/sys_exit_accept4"),
    Program("net_fe_connect", "fentry/__sys_connect_file"),
    Program("net_fx_connect", "fexit/__sys_connect_file"),
    Program("net_fx_accept", "fexit/inet_csk_accept"),
    Program("net_kp_connect", "kprobe/__sys_connect_file"),
    Program("net_kr_accept", "kretprobe/inet_csk_accept"),
]
SYSCALL_NET = {"net_state", "net_enter_connect", "net_exit_accept4"}


def net_of(plan: hooks.Plan) -> set[str]:
    return {p for p in plan.programs if p.startswith("net_")}


def test_each_backend_takes_its_own_network_programs() -> None:
    assert net_of(hooks.plan("tracepoint", NET_PROGRAMS, btf=None)) == SYSCALL_NET
    for backend in ("fentry", "lsm"):
        btf = net_btf(NET_6_12, bpf_lsm_path_unlink=[("x", "struct dentry *")])
        plan = hooks.plan(backend, NET_PROGRAMS, btf=btf)  # type: ignore[arg-type]
        assert net_of(plan) == {"net_state", "net_fe_connect", "net_fx_connect",
                                "net_fx_accept"}, backend
        assert plan.rodata["ret_net_accept"] == 2 and not plan.net_via_syscalls
    syms = frozenset({"vfs_unlink", "security_path_unlink", *net_hooks.HOOKED})
    plan = hooks.plan("kprobe", NET_PROGRAMS, btf=net_btf(NET_5_10),  # type: ignore[arg-type]
                      symbols=lambda: syms)
    assert net_of(plan) == {"net_state", "net_kp_connect", "net_kr_accept"}
    assert not any(b.startswith("network: accepts and UDP datagrams through io_uring")
                   for b in plan.blind_spots)


def test_a_missing_or_unknown_socket_function_keeps_the_syscall_tracepoints() -> None:
    no_v6 = {k: v for k, v in NET_6_12.items() if not k.startswith("udpv6")}
    plan = hooks.plan("fentry", NET_PROGRAMS, btf=net_btf(no_v6))  # type: ignore[arg-type]
    assert net_of(plan) == SYSCALL_NET and plan.net_via_syscalls
    assert any("udpv6_recvmsg" in n and "syscalls' tracepoints" in n for n in plan.notes)
    assert any("io_uring" in b for b in plan.blind_spots)
    odd = dict(NET_6_12, inet_bind=[("sk", SK), ("addr", "struct sockaddr *")])
    plan = hooks.plan("fentry", NET_PROGRAMS, btf=net_btf(odd))  # type: ignore[arg-type]
    assert net_of(plan) == SYSCALL_NET
    assert any("inet_bind(struct sock * sk" in n for n in plan.notes)
    # the file events are unaffected
    assert "fx_vfs_unlink" in plan.programs


def test_a_split_socket_function_keeps_the_syscall_tracepoints() -> None:
    syms = frozenset({"vfs_unlink", "security_path_unlink", *net_hooks.HOOKED,
                      "udp_recvmsg.isra.0", "udp_sendmsg.cold"})
    plan = hooks.plan("kprobe", NET_PROGRAMS, btf=net_btf(NET_6_12),  # type: ignore[arg-type]
                      symbols=lambda: syms)
    assert net_of(plan) == SYSCALL_NET
    assert any("udp_recvmsg (udp_recvmsg.isra.0)" in n for n in plan.notes)


def test_a_socket_function_result_past_a_kprobe_is_fine_but_arguments_are_not() -> None:
    # kretprobe reads the result from its register: the slot count does not matter
    many = dict(NET_6_12, udp_recvmsg=[("a", "int"), ("b", "int"), ("c", "int"), ("d", "int"),
                                       ("e", "int"), ("sk", SK), ("msg", MSG)])
    with pytest.raises(net_hooks.NetHookUnsupported, match="beyond"):
        net_hooks.positions(net_btf(many), 4, ret_in_ctx=False)  # type: ignore[arg-type]
    kp = net_hooks.positions(net_btf(NET_5_10), 4, ret_in_ctx=False)  # type: ignore[arg-type]
    assert kp["ret_net_udp_recvmsg"] == 6


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").is_file(), reason="no kernel BTF")
def test_running_kernel_socket_prototypes_are_known() -> None:
    with Btf.parse("/sys/kernel/btf/vmlinux") as btf:
        p = net_hooks.positions(btf, 5, ret_in_ctx=True)
        udp = btf.func_proto("udp_sendmsg")
    assert udp[p["pos_net_udp_sendmsg_msg"]] == ("msg", MSG)
