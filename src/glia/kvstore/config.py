"""How to reach one cluster's etcd."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """Client settings for one etcd cluster.

    Authentication is by client certificate only: etcd maps the certificate's CN
    to the etcd user, which survives etcd restarts (password tokens do not).
    """

    endpoints: list[str] = field(default_factory=lambda: ["https://127.0.0.1:2379"])
    """The etcd members' client URLs (https), tried in order."""
    ca_file: str | None = None
    """PEM file of the CA that signed the etcd server's certificate."""
    cert_file: str | None = None
    """PEM client certificate; its CN is the etcd user."""
    key_file: str | None = None
    """PEM private key of `cert_file`."""
    dial_timeout: float = 5.0
    """Seconds to wait for a connection to an etcd member."""
