"""Security identities: numbers inside the writer's range, bounded label sets.

Used for ipcache entries and endpoint records (the number they carry) and for
the identity allocator's master keys (``identities/v2/<cluster>/id/<n>``).
"""

from __future__ import annotations

from glia.kvstore import keys
from glia.model.identity import MAX_LOCAL, MIN_LOCAL, Identity, ReservedIdentity
from glia.validate.bounds import ClusterBounds
from glia.validate.common import decode, key_parts
from glia.validate.errors import Rejected

# Reserved identities an endpoint may carry: INIT until its labels are known.
ENDPOINT_RESERVED = frozenset({int(ReservedIdentity.INIT)})

MAX_LABELS = 128
MAX_LABEL_KEY = 320  # a DNS-subdomain prefix (253) + "/" + a name (63), with room
MAX_LABEL_VALUE = 1024


def cluster_range(cluster_id: int) -> tuple[int, int]:
    """Lowest and highest identity a cluster may allocate."""
    return cluster_id << 16 | MIN_LOCAL, cluster_id << 16 | MAX_LOCAL


def check_number(
    value: object, bounds: ClusterBounds, what: str, reserved: frozenset[int] = ENDPOINT_RESERVED
) -> int:
    """An identity ``bounds``' cluster may use: one of its own or an allowed reserved one."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected(f"{what} must be an integer, got {type(value).__name__}")
    if value in reserved:
        return value
    lo, hi = cluster_range(bounds.cluster_id)
    if not lo <= value <= hi:
        raise Rejected(
            f"{what} {value} is outside cluster {bounds.cluster}'s range {lo}..{hi}"
            + (f" (or reserved {sorted(reserved)})" if reserved else "")
        )
    return value


def check_labels(labels: dict[str, str], what: str) -> None:
    if len(labels) > MAX_LABELS:
        raise Rejected(f"{what} has {len(labels)} labels; at most {MAX_LABELS}")
    for k, v in labels.items():
        if not k or len(k) > MAX_LABEL_KEY:
            raise Rejected(f"{what}: label key of {len(k)} characters (1..{MAX_LABEL_KEY})")
        if len(v) > MAX_LABEL_VALUE:
            raise Rejected(f"{what}: label {k!r} has a value of {len(v)} characters")


def check_identity(key: str, raw: bytes, bounds: ClusterBounds) -> Identity:
    """The master key ``identities/v2/<cluster>/id/<n>``: the number matches the key."""
    _, kind, number = key_parts(key, keys.IDENTITIES, 3, bounds)
    if kind != "id":
        raise Rejected("not an identity master key")
    ident = decode(Identity, raw)
    if str(ident.id) != number:
        raise Rejected(f"id {ident.id} does not match its key ({number})")
    check_number(ident.id, bounds, "id", reserved=frozenset())
    check_labels(ident.labels, f"identity {ident.id}")
    return ident
