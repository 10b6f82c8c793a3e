"""What dockerd's ``/etc/docker/daemon.json`` says so Docker containers use glia's DNS (pure).

Docker containers on a user-defined network get Docker's embedded DNS
(``nameserver 127.0.0.11``): it answers the network's container names itself
and forwards every other name to dockerd's ``dns`` servers (sent from the
container's own network namespace). Naming the node's IP there, where the agent
serves DNS (docs/dns.md), and the search list and ``ndots`` podman pods get
from glia-cni's result, lets Docker containers resolve glia Services like pods
do while Docker's container names keep working. Used by the lab
(:mod:`glia.lab.docker`); docs/docker.md shows it as an operator writes it.
"""

from __future__ import annotations

from typing import Any

from glia.endpoint.cni_result import DNS_OPTIONS, search_domains

# Docker containers have no namespace when dockerd starts them (their labels
# move the glia endpoint later): the search list is the default namespace's.
DEFAULT_NAMESPACE = "default"


def daemon_dns(node_ip: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The ``daemon.json`` keys (``--dns``, ``--dns-search``, ``--dns-opt``) for ``node_ip``."""
    return {
        "dns": [node_ip],
        "dns-search": search_domains(namespace),
        "dns-opts": list(DNS_OPTIONS),
    }
