"""glia.clustermesh."""
