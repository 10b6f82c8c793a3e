"""Identity-based network policy (CiliumNetworkPolicy at L3/L4): the pure core.

``manifest`` parses policies, ``evaluate`` judges one connection (``glia policy
trace``), ``engine`` computes each local endpoint's datapath entries
(``entries`` is their format and lookup), ``cidr`` numbers the prefixes CIDR
rules name. docs/policy.md describes the semantics and the entry format.
"""
