"""glia.lab: the local multi-cluster lab in network namespaces (``glia lab ...``).

Entry point :class:`glia.lab.lab.Lab`; naming and addressing rules in
:mod:`glia.lab.topology`.
"""
