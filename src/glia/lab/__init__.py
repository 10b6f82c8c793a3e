"""glia.lab."""
