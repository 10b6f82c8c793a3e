"""glia.service."""
