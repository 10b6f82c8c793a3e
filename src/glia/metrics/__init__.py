"""Prometheus metrics of the agent and the operator (docs/metrics.md).

:mod:`glia.metrics.recorders` counts events on hot paths without prometheus_client
(no locks, no allocation per event); :mod:`glia.metrics.families` turns what
they hold into metric families at scrape time; :mod:`glia.metrics.http` serves
a registry's exposition over HTTP. The daemons' collectors live beside them:
:mod:`glia.agent.metrics`, :mod:`glia.operator.metrics`.
"""
