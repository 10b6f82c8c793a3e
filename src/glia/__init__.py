"""glia: container networking for Linux with an eBPF datapath and multi-cluster services."""

__version__ = "0.1.0"
