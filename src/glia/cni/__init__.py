"""glia.cni."""
