"""glia.policy."""
