"""glia.datapath."""
