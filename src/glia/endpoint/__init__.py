"""glia.endpoint."""
