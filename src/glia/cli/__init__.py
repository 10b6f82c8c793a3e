"""glia.cli."""
