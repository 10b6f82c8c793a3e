"""glia.operator."""
