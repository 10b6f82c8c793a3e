"""DNS for pods, served by the agent: Service and container names (docs/dns.md)."""
