"""The few rtnetlink requests an endpoint veth needs, packed by hand.

Used by :mod:`glia.datapath.netlink` for creating, addressing and deleting
endpoint veths: the CNI ADD/DEL path, where pyroute2 spent ~0.3 ms of Python
per request (an ADD made 14 of them) on work the kernel does in microseconds.
Requests that do not depend on each other go in one ``send`` and are
acknowledged one by one. Everything else (VXLAN device, link dumps) stays on
pyroute2.

A socket belongs to the network namespace of the thread that opened it, like
any netlink socket. Failures are :class:`RtnlError`, an ``OSError`` carrying the
kernel's errno and the step that failed.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from types import TracebackType

NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH = 20, 24, 28
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4  # what pyroute2 and ``ip route`` use: the route is an administrator's
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_ERR = struct.Struct("=i")
_ADD = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
_TIMEOUT = 5.0  # the kernel answers at once; never hang an ADD on a lost reply


class RtnlError(OSError):
    def __init__(self, code: int, step: str) -> None:
        super().__init__(code, f"{step}: {os.strerror(code)}")
        self.step = step


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _name(value: str) -> bytes:
    return value.encode() + b"\0"


def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _mac(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def _ip4(value: str) -> bytes:
    return ipaddress.IPv4Address(value).packed


class Msg:
    """One request: its type, flags, body and what it does (for errors)."""

    __slots__ = ("body", "flags", "step", "type")

    def __init__(self, type_: int, flags: int, body: bytes, step: str) -> None:
        self.type, self.flags, self.body, self.step = type_, flags, body, step


def new_veth(
    host: str, peer: str, *, peer_netns_fd: int, mtu: int, host_mac: str, peer_mac: str
) -> Msg:
    """A veth pair: ``host`` here, ``peer`` created directly in the other namespace."""
    peer_info = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join(
        [
            _attr(IFLA_IFNAME, _name(peer)),
            _attr(IFLA_NET_NS_FD, _u32(peer_netns_fd)),
            _attr(IFLA_MTU, _u32(mtu)),
            _attr(IFLA_ADDRESS, _mac(peer_mac)),
        ]
    )
    linkinfo = _attr(IFLA_INFO_KIND, b"veth") + _attr(
        IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info)
    )
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join(
        [
            _attr(IFLA_IFNAME, _name(host)),
            _attr(IFLA_MTU, _u32(mtu)),
            _attr(IFLA_ADDRESS, _mac(host_mac)),
            _attr(IFLA_LINKINFO, linkinfo),
        ]
    )
    return Msg(RTM_NEWLINK, _ADD, body, f"creating veth {host} <-> {peer}")


def link_up(index: int, name: str) -> Msg:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    return Msg(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, body, f"bringing {name} up")


def add_address(index: int, ip: str, prefixlen: int, name: str) -> Msg:
    body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += _attr(IFA_LOCAL, _ip4(ip)) + _attr(IFA_ADDRESS, _ip4(ip))
    return Msg(RTM_NEWADDR, _ADD, body, f"adding {ip}/{prefixlen} to {name}")


def replace_route(
    dst: str,
    dst_len: int,
    oif: int,
    *,
    scope: int,
    gateway: str | None = None,
    onlink: bool = False,
) -> Msg:
    """``dst``/``dst_len`` (0.0.0.0/0: the default route) out of ``oif``, in the main table."""
    flags = RTNH_F_ONLINK if onlink else 0
    body = _RTMSG.pack(
        socket.AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, flags
    )
    if dst_len:
        body += _attr(RTA_DST, _ip4(dst))
    if gateway is not None:
        body += _attr(RTA_GATEWAY, _ip4(gateway))
    body += _attr(RTA_OIF, _u32(oif))
    via = f" via {gateway}" if gateway else ""
    return Msg(RTM_NEWROUTE, _REPLACE, body, f"route {dst}/{dst_len}{via}")


def replace_neighbour(index: int, ip: str, mac: str) -> Msg:
    """A permanent neighbour entry ``ip`` -> ``mac`` on ``index``: no ARP."""
    body = _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0)
    body += _attr(NDA_DST, _ip4(ip)) + _attr(NDA_LLADDR, _mac(mac))
    return Msg(RTM_NEWNEIGH, _REPLACE, body, f"neighbour {ip} -> {mac}")


class Rtnl:
    """A NETLINK_ROUTE socket in the calling thread's network namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            self._sock.bind((0, 0))
            self._sock.settimeout(_TIMEOUT)
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _pack(self, msg: Msg) -> tuple[int, bytes]:
        self._seq += 1
        return self._seq, _HDR.pack(
            _HDR.size + len(msg.body), msg.type, msg.flags, self._seq, 0
        ) + msg.body

    def run(self, msgs: Sequence[Msg]) -> None:
        """Send ``msgs`` at once; raise the first failure (by order) once all answered."""
        packed = [self._pack(m) for m in msgs]
        steps = {seq: m.step for (seq, _), m in zip(packed, msgs, strict=True)}
        self._sock.send(b"".join(data for _, data in packed))
        errors: dict[int, int] = {}
        while steps.keys() - errors.keys():
            for kind, seq, payload in self._recv():
                if kind == NLMSG_ERROR and seq in steps:
                    errors[seq] = -_ERR.unpack_from(payload)[0]
        for seq, code in sorted(errors.items()):
            if code:
                raise RtnlError(code, steps[seq])

    def link_index(self, name: str) -> int | None:
        """The ifindex of ``name`` here, None if there is no such link."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name))
        seq, data = self._pack(Msg(RTM_GETLINK, NLM_F_REQUEST, body, f"looking up {name}"))
        self._sock.send(data)
        while True:
            for kind, got, payload in self._recv():
                if got != seq:
                    continue
                if kind == RTM_NEWLINK:
                    return int(_IFINFO.unpack_from(payload)[2])
                if kind == NLMSG_ERROR:
                    code = -_ERR.unpack_from(payload)[0]
                    if code in (errno.ENODEV, 0):
                        return None
                    raise RtnlError(code, f"looking up {name}")

    def delete_link(self, name: str) -> bool:
        """Delete ``name`` (a veth takes its peer along); False if it was not there."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name))
        try:
            self.run([Msg(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, body, f"deleting {name}")])
        except RtnlError as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        return True

    def _recv(self) -> list[tuple[int, int, bytes]]:
        data = self._sock.recv(65536)
        out = []
        offset = 0
        while offset + _HDR.size <= len(data):
            length, kind, _flags, seq, _pid = _HDR.unpack_from(data, offset)
            if length < _HDR.size:
                break
            out.append((kind, seq, data[offset + _HDR.size : offset + length]))
            offset += (length + 3) & ~3
        return out
