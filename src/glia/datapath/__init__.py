"""glia.datapath: the node's eBPF datapath, seen from Python.

- ``loader.Datapath``: load the programs of bpf/ (from_endpoint, to_endpoint,
  from_overlay, from_netdev, the socket LB) with their maps pinned per node,
  configure, attach (tc clsact, cgroup links), close; ``unpin``.
- ``maps``: the generic ``BPFMap`` (batch lookup, update and delete), checked
  against its spec.
- ``nodemaps``: typed handles on the node's maps (endpoints, ipcache, metrics,
  config).
- ``lbmaps``, ``lbtypes``: the lb4 service maps (``Datapath.lb``) and their
  plain values, written by glia.service.lbsync from glia.service.lbplan's plan.
- ``ct``: the service conntrack map (``Datapath.ct``): listing and GC.
- ``structs``: ctypes mirrors of the C structs (checked against BTF).
- ``mapspecs``: the pinned maps' specs (name, type, key, value, size).
- ``addrs``: IPv4 addresses, ports and MACs as the maps hold them.
- ``drop``: verdict reasons and directions shared with C.
- ``events``: the ring-buffer reader behind ``glia monitor``.
- ``netlink``: endpoint veths and the VXLAN device (pyroute2).
- ``netns``: run a function in another network namespace (per thread).
- ``tc``, ``libbpf``, ``testrun``: the layers underneath.

Everything here is I/O at the edge of the agent; the control plane decides what
goes into the maps and calls these from the node's network namespace.
"""
