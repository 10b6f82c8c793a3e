"""Verdict reasons and directions: the Python side of bpf/include/drop.h.

STABLE API shared with the BPF programs: the numbers index the metrics map and
appear in ring-buffer events. A test compares these enums with the compiled
objects' BTF. Used by glia.datapath.nodemaps (metrics), glia.datapath.events and
the CLI (`glia monitor`, `glia bpf metrics`).
"""

from __future__ import annotations

import enum

# Metrics map rows reserved per direction (GLIA_REASON_MAX in drop.h).
REASON_MAX = 64


class Reason(enum.IntEnum):
    """enum glia_reason; C names are GLIA_REASON_<name> or GLIA_<name>."""

    FORWARDED = 0
    TO_STACK = 1
    DROP_INVALID_SOURCE = 2
    DROP_UNKNOWN_L3 = 3
    DROP_INVALID_PACKET = 4
    DROP_NO_ENDPOINT = 5
    DROP_REDIRECT_FAILED = 6
    DROP_TTL_EXCEEDED = 7
    DROP_POLICY = 8
    DROP_NO_SERVICE = 9  # no ready backend: refused with a TCP RST or ICMP unreachable
    DROP_NAT_FAILED = 10
    SOCK_XLATE = 11  # a socket's VIP:port rewritten to a backend at connect/sendmsg
    DROP_UNKNOWN_NODE = 12  # overlay: the outer (VXLAN) source is not a node of the mesh
    DROP_SOURCE_NOT_OF_NODE = 13  # overlay: the inner source is not an IP of the sending node
    DROP_IDENTITY_NOT_OF_NODE = 14  # overlay: the VNI names an identity its node cannot send
    DROP_OVERLAY_PORT = 15  # a pod's UDP to the VXLAN port, handed to the node stack
    DROP_WRONG_PORT = 16  # the stack sent a packet for one endpoint out of another's veth

    @property
    def is_drop(self) -> bool:
        return self.name.startswith("DROP_")

    @property
    def label(self) -> str:
        """Short name for people: 'invalid-source', 'forwarded'."""
        return self.name.removeprefix("DROP_").lower().replace("_", "-")


class Direction(enum.IntEnum):
    """enum glia_direction, from the endpoint's point of view."""

    INGRESS = 0  # towards an endpoint (from_overlay)
    EGRESS = 1  # leaving an endpoint (from_endpoint)

    @property
    def label(self) -> str:
        return self.name.lower()


class PolicyMatch(enum.IntEnum):
    """enum glia_policy_match (bpf/include/policy.h): how a policy verdict was reached."""

    NONE = 0  # no entry: default deny
    L3 = 1  # the peer's entry for every port
    L4 = 2  # the peer's entry for this protocol and port
    ANY_L3 = 3  # the any-peer entry for every port
    ANY_L4 = 4  # the any-peer entry for this protocol and port
    NOT_ENFORCED = 5  # the endpoint is open in this direction
    HAIRPIN = 6  # an endpoint reaching itself through a Service

    @property
    def label(self) -> str:
        return {
            PolicyMatch.NONE: "default-deny",
            PolicyMatch.L3: "L3-only",
            PolicyMatch.L4: "L3-L4",
            PolicyMatch.ANY_L3: "all",
            PolicyMatch.ANY_L4: "L4-only",
            PolicyMatch.NOT_ENFORCED: "not-enforced",
            PolicyMatch.HAIRPIN: "hairpin",
        }[self]


class ObsPoint(enum.IntEnum):
    """enum glia_obs_point (bpf/include/events.h): where a trace event was taken."""

    NONE = 0
    TO_ENDPOINT = 1
    TO_OVERLAY = 2
    TO_STACK = 3
    TO_NETDEV = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


def reason_c_name(reason: Reason) -> str:
    """The enumerator's name in drop.h."""
    if reason.is_drop:
        return f"GLIA_{reason.name}"
    return f"GLIA_REASON_{reason.name}"


def direction_c_name(direction: Direction) -> str:
    return f"GLIA_DIR_{direction.name}"
