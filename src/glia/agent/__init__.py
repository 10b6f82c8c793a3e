"""glia.agent."""
