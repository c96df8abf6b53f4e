"""Which network programs a backend loads (bpf/net.bpf.h, bpf/net_vfs.bpf.h), and the argument
positions of the socket layer's functions, read from BTF.

Every backend loads the TCP state-change program (``sock:inet_sock_set_state``: connect
outcomes, listens). The tracepoint backend takes the rest from the socket syscalls' tracepoints.
The lsm and fentry backends take it from fentry/fexit programs on the socket layer's functions,
the kprobe backend from kprobe/kretprobe programs on the same functions: they see io_uring's and
32-bit processes' calls too. Where one of those functions is missing, split by the compiler, or
has a prototype this module does not know, the backend keeps the syscall tracepoints for the
network and a note says why: the network never costs a backend its file events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vigil.kernel.btf import Btf

SOCK = "struct sock *"


@dataclass(frozen=True)
class _Func:
    """A hooked function: its name, the program-name stem, and its (argument, types) to find."""

    func: str
    name: str
    args: tuple[tuple[str, tuple[str, ...]], ...]   # (setting suffix, accepted C types)
    returns: str = "int"


_ADDR = ("struct sockaddr *", "struct sockaddr_storage *", "struct __kernel_sockaddr_storage *")
_UDP = (("sk", (SOCK,)), ("msg", ("struct msghdr *",)))
FUNCS: tuple[_Func, ...] = (
    _Func("__sys_connect_file", "connect", (("file", ("struct file *",)), ("addr", _ADDR))),
    _Func("inet_bind", "inet_bind", (("sock", ("struct socket *",)), ("addr", _ADDR))),
    _Func("inet6_bind", "inet6_bind", (("sock", ("struct socket *",)), ("addr", _ADDR))),
    _Func("inet_csk_accept", "accept", (), returns=SOCK),
    _Func("udp_sendmsg", "udp_sendmsg", _UDP),
    _Func("udpv6_sendmsg", "udpv6_sendmsg", _UDP),
    _Func("udp_recvmsg", "udp_recvmsg", _UDP),
    _Func("udpv6_recvmsg", "udpv6_recvmsg", _UDP),
)
HOOKED = frozenset(f.func for f in FUNCS)


class NetHookUnsupported(Exception):
    """The socket layer's functions cannot be hooked here; the message says why."""


def positions(btf: Btf, max_index: int, ret_in_ctx: bool) -> dict[str, int]:
    """The pos_net_* / ret_net_* settings of bpf/net_vfs.bpf.h from the prototypes in ``btf``
    (``max_index``, ``ret_in_ctx``: as vigil.kernel.hooks.argument_positions)."""
    out: dict[str, int] = {}
    for f in FUNCS:
        try:
            params = btf.func_proto(f.func)
            ret = btf.func_return(f.func)
        except KeyError:
            raise NetHookUnsupported(f"{f.func} is not in the BTF in use ({btf.source})") \
                from None
        proto = ", ".join(f"{t} {n}" for n, t in params) or "void"
        if ret != f.returns and not (f.returns == "int" and ret in ("int", "long", "long int")):
            raise NetHookUnsupported(f"{f.func}({proto}) returns {ret}, expected {f.returns}")
        for suffix, types in f.args:
            pos = next((i for i, (_, t) in enumerate(params) if t in types), None)
            if pos is None:
                raise NetHookUnsupported(f"{f.func}({proto}): no {' or '.join(types)} argument")
            if pos > max_index:
                raise NetHookUnsupported(f"{f.func}({proto}): its {suffix} argument is beyond "
                                         "what the hook can read")
            out[f"pos_net_{f.name}_{suffix}"] = pos
        if ret_in_ctx and len(params) > max_index + 1:
            raise NetHookUnsupported(f"{f.func}({proto}): its result is beyond what the hook "
                                     "can read")
        out[f"ret_net_{f.name}"] = len(params)
    return out


def is_net(name: str) -> bool:
    return name.startswith("net_")


def _kind(section: str) -> str:
    return section.partition("/")[0]


@dataclass(frozen=True)
class NetPlan:
    programs: frozenset[str]
    rodata: dict[str, int]
    note: str | None = None   # why the syscall tracepoints serve the network here


def plan(backend: str, programs: Iterable[tuple[str, str]], btf: Btf | None,
         exists: Callable[[str], bool], clones: Callable[[set[str]], dict[str, set[str]]],
         max_index: int) -> NetPlan:
    """The network programs of ``backend`` ((name, section) pairs in, the chosen names out).
    ``exists``: whether the backend can attach to a function here; ``clones``: the functions
    among some that the compiler split (vigil.kernel.hooks.partial_clones)."""
    progs = [(n, s) for n, s in programs if is_net(n)]
    state = {n for n, s in progs if s.startswith("tracepoint/sock/")}
    syscalls = state | {n for n, s in progs if s.startswith("tracepoint/syscalls/")}
    if backend == "tracepoint":
        return NetPlan(frozenset(syscalls), {})
    kinds = ("fentry", "fexit") if backend in ("lsm", "fentry") else ("kprobe", "kretprobe")
    try:
        if btf is None:
            raise NetHookUnsupported("no BTF to read the socket functions' prototypes from")
        missing = sorted(f for f in HOOKED if not exists(f))
        if missing:
            raise NetHookUnsupported(f"{', '.join(missing)} cannot be hooked here")
        split = clones(set(HOOKED))
        if split:
            raise NetHookUnsupported("partly inlined here: " + ", ".join(
                f"{f} ({', '.join(sorted(c))})" for f, c in sorted(split.items())))
        rodata = positions(btf, max_index, ret_in_ctx=backend != "kprobe")
    except NetHookUnsupported as e:
        return NetPlan(frozenset(syscalls), {}, f"network through the socket syscalls' "
                                                f"tracepoints: {e}")
    chosen = state | {n for n, s in progs if _kind(s) in kinds}
    return NetPlan(frozenset(chosen), rodata)
