"""The README's "Deployment on real hosts" section: its configs load through the real loaders.

Each YAML block of the section starts with a comment naming the file it is
(``# /etc/glia/agent.yaml``); the test loads it with that daemon's loader
(unknown keys are errors there), checks the values the daemons check at
start, and that the agent and operator agree and use the files and etcd users
that ``glia etcd bootstrap`` (the section's first step) creates.
"""

from __future__ import annotations

import re
import shlex
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glia.agent import config as agent_config
from glia.agent.config import AgentConfig, reserved_networks
from glia.cli.main import app
from glia.dns.server import Upstream
from glia.kvstore import rbac
from glia.operator import config as operator_config
from glia.operator.config import OperatorConfig
from glia.operator.daemon import cluster_record

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Deployment on real hosts"


def section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else None]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", section(), flags=re.S | re.M)


def configs(tmp_path: Path) -> tuple[AgentConfig, OperatorConfig]:
    loaders = {
        "/etc/glia/agent.yaml": agent_config.load,
        "/etc/glia/operator.yaml": operator_config.load,
    }
    loaded: dict[str, object] = {}
    for text in blocks("yaml"):
        first = text.splitlines()[0]
        name = first.removeprefix("# ").split(":")[0].strip()
        assert name in loaders, f"README YAML block does not start with a known file: {first!r}"
        path = tmp_path / Path(name).name
        path.write_text(text)
        loaded[name] = loaders[name](path)
    assert set(loaded) == set(loaders), "README lacks the agent's or the operator's config"
    agent, operator = loaded["/etc/glia/agent.yaml"], loaded["/etc/glia/operator.yaml"]
    assert isinstance(agent, AgentConfig) and isinstance(operator, OperatorConfig)
    return agent, operator


def test_agent_config_is_complete_and_valid(tmp_path: Path) -> None:
    agent, _ = configs(tmp_path)
    assert agent.service_cidr, "without service_cidr `glia apply` of a Service fails"
    assert agent.config_etcd is not None, "without config_etcd the agent serves no `glia apply`"
    IPv4Network(agent.service_cidr)
    IPv4Network(agent.pod_pool)
    reserved_networks(agent)  # node_networks parse
    for up in agent.dns_upstreams:
        Upstream.parse(up)
    assert agent.etcd.cert_file and agent.etcd.ca_file and agent.etcd.key_file
    assert all(url.startswith("https://") for url in agent.etcd.endpoints)


def test_operator_config_is_valid_and_agrees_with_the_agent(tmp_path: Path) -> None:
    agent, operator = configs(tmp_path)
    cluster_record(operator)  # what the operator checks at start
    assert (operator.cluster, operator.cluster_id) == (agent.cluster, agent.cluster_id)
    assert operator.pod_pool == agent.pod_pool
    assert operator.service_cidr == agent.service_cidr
    assert operator.etcd.endpoints == agent.etcd.endpoints


def _commands(*prefix: str) -> list[list[str]]:
    """The section's shell commands starting with ``prefix``, without the leading "glia"."""
    out = []
    for text in blocks("sh"):
        joined = re.sub(r"\\\n\s*", " ", text)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words[: len(prefix)] == list(prefix):
                out.append(words[1:])
    return out


def _bootstrap_commands() -> list[list[str]]:
    return _commands("glia", "etcd", "bootstrap")


@pytest.mark.parametrize("name", ["agent", "operator"])
def test_each_config_block_is_what_its_command_writes(tmp_path: Path, name: str) -> None:
    (args,) = _commands("glia", "config", name)
    path = args[args.index("--out") + 1]
    assert path == f"/etc/glia/{name}.yaml"
    out = tmp_path / f"{name}.yaml"
    args[args.index("--out") + 1] = str(out)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (block,) = [b for b in blocks("yaml") if b.startswith(f"# {path}:")]
    written = out.read_text()
    assert written == block.replace(f"# {path}:", f"# {out}:", 1), (
        f"README's {path} block is not what `glia config {name}` writes now:\n{written}"
    )
    # Run again: the same file, kept; a different one is refused without --force.
    assert CliRunner().invoke(app, args).exit_code == 0
    other = [*args, "--set", "log_level=debug"]
    r = CliRunner().invoke(app, other)
    assert r.exit_code == 1 and "--force" in r.output and out.read_text() == written
    assert CliRunner().invoke(app, [*other, "--force"]).exit_code == 0
    assert "log_level: debug" in out.read_text()


def test_bootstrap_makes_the_files_the_configs_name(tmp_path: Path) -> None:
    agent, operator = configs(tmp_path)
    commands = _bootstrap_commands()
    assert len(commands) == 2, "README: one offline bootstrap and one with --endpoint"
    offline = [a for a in commands if "--endpoint" not in a]
    assert len(offline) == 1
    args = offline[0]
    pki = Path(args[args.index("--out") + 1])
    assert "--cluster" in args and args[args.index("--cluster") + 1] == agent.cluster
    nodes = args[args.index("--nodes") + 1].split(",")
    assert agent.node in nodes
    out = tmp_path / "pki"
    args[args.index("--out") + 1] = str(out)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    cfg_etcd = agent.config_etcd
    assert cfg_etcd is not None
    for etcd, user in (
        (agent.etcd, rbac.agent_user(agent.node)),
        (cfg_etcd, rbac.CONFIG_USER),
        (operator.etcd, rbac.OPERATOR_USER),
    ):
        assert etcd.ca_file == str(pki / "ca.crt")
        assert etcd.cert_file == str(pki / f"{user}.crt")
        assert etcd.key_file == str(pki / f"{user}.key")
        assert (out / f"{user}.crt").is_file() and (out / f"{user}.key").is_file()
    assert (out / "etcd-server.crt").is_file()


@pytest.mark.parametrize("name", ["agent", "operator"])
def test_a_misspelt_key_in_the_readme_would_fail(tmp_path: Path, name: str) -> None:
    text = next(b for b in blocks("yaml") if b.startswith(f"# /etc/glia/{name}.yaml"))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("cluster_id:", "clusterid:"))
    loader = agent_config.load if name == "agent" else operator_config.load
    with pytest.raises(ValueError, match="clusterid"):
        loader(path)
