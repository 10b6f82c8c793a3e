"""Docker libnetwork remote network and IPAM driver (docs/docker.md)."""
