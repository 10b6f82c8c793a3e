"""One lab node set up the way README's "Deployment on real hosts" tells an operator.

The lab writes its other nodes' files itself; this node (the first cluster's
last, :attr:`glia.lab.topology.Topology.host_setup_node`) gets them only
from the documented commands, each run as the ``glia`` of the lab's own
installation (the wheel's, in ``tests/integration/test_wheel_install.py``)
inside the node's network namespace, output in ``<node>/host-setup.log``:

1. the cluster's CA is put into ``<node>/pki`` as ``ca.crt``/``ca.key`` (the
   README's "an existing CA can sign instead"), then ``glia etcd bootstrap
   --cluster C --nodes ... --out <node>/pki --endpoint URL`` issues the node's
   certificates and (again, it is idempotent) the cluster's users and roles;
2. ``glia config agent`` writes ``<node>/agent.yaml`` from the node's facts and
   ``--set`` for what the lab sets beyond them (its own paths, podman's
   environment, the mesh directory): :func:`config_agent_args` derives those
   from the config the lab gives its other nodes, and the file written is
   checked to be that config but for the certificate paths, so the node
   behaves like the others;
3. ``glia cni install`` puts the plugin and the ``glia`` network into the
   node's CNI directories (its podman looks there: :mod:`glia.lab.podman`);
4. ``glia systemd units --agent-config <node>/agent.yaml`` writes the units,
   and the lab starts the agent with the ``ExecStart`` command line of
   ``glia-agent.service`` (:func:`agent_argv`): what systemd would run.

``glia-cni`` of this node is a copy of the fast path, as on a host (the other
nodes link it, so a rebuilt one counts at once).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from glia.agent.config import AgentConfig
from glia.agent.config import load as load_agent_config
from glia.deploy import systemd
from glia.kvstore.config import EtcdConfig
from glia.lab import netns
from glia.lab.errors import LabError
from glia.lab.topology import ClusterSpec, NodeSpec
from glia.model import codec

# The facts `glia config agent` takes as options; every other key goes in with --set.
_FACTS = {
    "cluster",
    "cluster_id",
    "node",
    "node_ip",
    "etcd",
    "config_etcd",
    "pod_pool",
    "service_cidr",
    "node_networks",
}
STEP_TIMEOUT = 60.0


def pki_dir(n: NodeSpec) -> Path:
    return n.dir / "pki"


def cni_bin_dir(n: NodeSpec) -> Path:
    return n.dir / "cni" / "bin"


def units_dir(n: NodeSpec) -> Path:
    return n.dir / "systemd"


def log_file(n: NodeSpec) -> Path:
    return n.dir / "host-setup.log"


def _defaults() -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(AgentConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return json.loads(json.dumps(out, default=codec.to_dict))  # type: ignore[no-any-return]


def config_agent_args(cfg: AgentConfig, pki: Path, out: Path) -> list[str]:
    """``glia config agent`` arguments that write ``cfg`` with ``pki``'s certificates to ``out``.

    Values go in as JSON (which YAML reads as written), so a path is never taken
    for a number or a boolean.
    """
    args = ["config", "agent", "--cluster", cfg.cluster, "--cluster-id", str(cfg.cluster_id)]
    args += ["--node", cfg.node, "--node-ip", cfg.node_ip]
    for url in cfg.etcd.endpoints:
        args += ["--etcd", url]
    args += ["--pki", str(pki), "--pod-pool", cfg.pod_pool, "--service-cidr", cfg.service_cidr]
    for net in cfg.node_networks:
        args += ["--node-network", net]
    if cfg.config_etcd is None:
        args.append("--no-apply")
    defaults = _defaults()
    for key, value in codec.to_dict(cfg).items():
        if key in _FACTS or value == defaults.get(key):
            continue
        if isinstance(value, dict):
            args += [a for k, v in value.items() for a in ("--set", f"{key}.{k}={json.dumps(v)}")]
        else:
            args += ["--set", f"{key}={json.dumps(value)}"]
    return [*args, "--out", str(out), "--force"]


def differences(written: AgentConfig, wanted: AgentConfig, pki: Path) -> list[str]:
    """What ``written`` has other than ``wanted``, certificate paths aside (they are
    ``pki``'s: checked here too)."""
    problems = []
    for what, mine, theirs in (
        ("etcd", written.etcd, wanted.etcd),
        ("config_etcd", written.config_etcd, wanted.config_etcd),
    ):
        if (mine is None) != (theirs is None):
            problems.append(f"{what}: {mine} instead of {theirs}")
        elif mine is not None and theirs is not None:
            if mine.endpoints != theirs.endpoints:
                problems.append(f"{what}.endpoints: {mine.endpoints} instead of {theirs.endpoints}")
            if mine.ca_file != str(pki / "ca.crt") or not str(mine.cert_file).startswith(f"{pki}/"):
                problems.append(f"{what}: certificates {mine.cert_file} not from {pki}")
    plain = EtcdConfig()
    mine_d = codec.to_dict(dataclasses.replace(written, etcd=plain, config_etcd=None))
    want_d = codec.to_dict(dataclasses.replace(wanted, etcd=plain, config_etcd=None))
    problems += [
        f"{k}: {mine_d[k]!r} instead of {want_d[k]!r}" for k in want_d if mine_d[k] != want_d[k]
    ]
    return problems


def agent_argv(n: NodeSpec) -> list[str]:
    """The agent's command line: ``ExecStart`` of the node's ``glia-agent.service``."""
    unit = units_dir(n) / "glia-agent.service"
    try:
        return systemd.exec_start(unit.read_text())
    except (OSError, ValueError) as e:
        raise LabError(f"{n.ref}: cannot read the agent's unit {unit}: {e}") from None


class HostSetup:
    """Runs the README's steps for node ``n`` with the ``glia`` executable ``glia``."""

    def __init__(self, n: NodeSpec, cluster: ClusterSpec, glia: Path, ca: tuple[Path, Path]):
        self.n = n
        self.cluster = cluster
        self.glia = glia
        self.ca = ca  # the cluster's CA certificate and key

    def run(self, wanted: AgentConfig) -> list[str]:
        """Every step, in order; returns the commands run. LabError names a failed step."""
        n, pki = self.n, pki_dir(self.n)
        pki.mkdir(parents=True, exist_ok=True)
        for src, name in zip(self.ca, ("ca.crt", "ca.key"), strict=True):
            shutil.copyfile(src, pki / name)
        (pki / "ca.key").chmod(0o600)
        done = []
        nodes = ",".join(m.name for m in self.cluster.nodes)
        endpoints = [a for url in wanted.etcd.endpoints for a in ("--endpoint", url)]
        done.append(
            self._glia(
                [
                    "etcd",
                    "bootstrap",
                    "--cluster",
                    n.cluster,
                    "--nodes",
                    nodes,
                    "--out",
                    str(pki),
                    *endpoints,
                ]
            )
        )
        done.append(self._glia(config_agent_args(wanted, pki, n.agent_config)))
        try:
            written = load_agent_config(n.agent_config)
        except (OSError, ValueError) as e:
            raise LabError(
                f"{n.ref}: `glia config agent` wrote a file that does not load: {e}"
            ) from None
        problems = differences(written, wanted, pki)
        if problems:
            raise LabError(
                f"{n.ref}: `glia config agent` wrote another config than the lab's: "
                + "; ".join(problems)
            )
        done.append(
            self._glia(
                [
                    *("cni", "install", "--bin-dir", str(cni_bin_dir(n))),
                    *("--conf-dir", str(n.cni_config_dir), "--agent-socket", str(n.socket)),
                    *("--mtu", str(wanted.mtu), "--force"),
                ]
            )
        )
        done.append(self.units())
        return done

    def units(self) -> str:
        """Step 4 alone: ``glia systemd units`` for the node's config (a config written
        by other means, as tests do, still starts the agent as its unit says)."""
        text = self._glia(
            [
                *("systemd", "units", "--out", str(units_dir(self.n))),
                *("--agent-config", str(self.n.agent_config)),
            ]
        )
        agent_argv(self.n)  # readable, one ExecStart
        return text

    def _glia(self, args: Sequence[str]) -> str:
        argv = netns.nsenter_argv(self.n.netns, [str(self.glia), *args])
        text = " ".join(["glia", *args])
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise LabError(
                f"{self.n.ref}: `{text}` did not finish in {STEP_TIMEOUT:.0f} s"
            ) from None
        with log_file(self.n).open("a") as log:
            log.write(f"$ {text}\n{p.stdout}{p.stderr}(exit {p.returncode})\n")
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            raise LabError(f"{self.n.ref}: `{text}` failed: {' '.join(tail)}")
        return text
