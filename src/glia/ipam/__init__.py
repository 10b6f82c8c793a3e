"""glia.ipam."""
