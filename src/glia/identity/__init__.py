"""glia.identity."""
