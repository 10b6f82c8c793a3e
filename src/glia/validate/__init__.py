"""Validation of everything read from the kvstore, one pure module per kind of record.

Every record an agent or the operator reads from etcd is untrusted input, its
own cluster's included: any node's credentials may have written it. Each
module here turns a key and its raw value into a model object, or raises
:class:`~glia.validate.errors.Rejected` with a reason a person can act on.
Checks are of shape (JSON, types: :mod:`glia.model.codec`), of the key (the
value names the same cluster, node, IP as its key) and of meaning (addresses
inside the pod pool and inside the CIDR of the node that owns them, identities
inside the cluster's range, frontends inside the service CIDR, backends on
nodes that exist). Callers count and report rejections with
:class:`~glia.validate.rejects.RejectLog`; one bad record never stops the
others.

No I/O here: tested exhaustively in tests/unit/test_validate_*.py.
"""
