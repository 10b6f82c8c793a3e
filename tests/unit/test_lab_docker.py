"""What the lab runs for a node's dockerd (glia.lab.docker), without running it."""

from __future__ import annotations

import json
from pathlib import Path

from glia.kvstore.config import EtcdConfig
from glia.lab import topology
from glia.lab.configs import agent_config
from glia.lab.docker import (
    DOCKERD,
    RUN_FS,
    daemon_json,
    dockerd_args,
    holder_argv,
    holder_script,
    launch_argv,
    plugin_spec,
)


def _node() -> topology.NodeSpec:
    topo = topology.build("gliaunit", 1, 2, Path("/run/glia/lab-gliaunit"))
    return topo.nodes[0]


def test_dockerd_keeps_everything_under_the_node_dir() -> None:
    node = _node()
    args = dockerd_args(node, "/glia-lab-gliaunit-c1-n1")
    assert args[0] == DOCKERD == "/usr/sbin/dockerd"
    d = node.docker_dir
    for flag in ("data-root", "exec-root", "pidfile", "config-file"):
        (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{flag}=")]
        assert Path(value).is_relative_to(d), (flag, value)
    assert f"--host=unix://{d / 'docker.sock'}" in args
    for flag in ("--bridge=none", "--iptables=false", "--ip-masq=false", "--live-restore"):
        assert flag in args
    assert "--cgroup-parent=/glia-lab-gliaunit-c1-n1" in args


def test_dockerd_runs_in_the_node_netns_and_the_holders_mount_namespace() -> None:
    node = _node()
    argv = launch_argv(node, "/x", 4242)
    assert argv[:3] == ["nsenter", f"--net=/run/netns/{node.netns}", "--mount=/proc/4242/ns/mnt"]
    assert argv[3] == DOCKERD
    holder = holder_argv(node)
    assert holder[:2] == ["nsenter", f"--net=/run/netns/{node.netns}"]
    assert holder[2:6] == ["unshare", "--mount", "--propagation", "private"]
    assert f"mount --bind '{node.docker_dir / 'etc'}' /etc/docker" in holder[-1]


def test_plugin_spec_names_the_agents_socket() -> None:
    node = _node()
    assert plugin_spec(node) == f"unix://{node.dir / 'docker-plugin.sock'}\n"
    cfg = agent_config(node, EtcdConfig(), Path("/b"))
    assert cfg.docker_plugin_socket == str(node.docker_plugin_socket)
    assert cfg.docker_api_socket == str(node.docker_dir / "docker.sock")


def test_holder_gives_dockerd_its_own_run_docker_and_run_containerd() -> None:
    node = _node()
    script = holder_script(node)
    lines = script.splitlines()
    assert lines[0] == "set -e" and lines[-1] == "exec sleep infinity"
    # Filled outside /run (the lab dir may be under it), then moved onto /run.
    assert f"mount -t tmpfs -o mode=0755 {RUN_FS} /tmp" in lines
    assert 'case "$n" in docker|containerd) continue ;; esac' in script
    assert lines[-2] == "mount --move /tmp /run"
    assert holder_argv(node)[-1] == script
    # Nothing written outside the private namespace: no mkdir under the host's /run.
    assert "mkdir -p" not in script and "mkdir /run" not in script


def test_daemon_json_hands_the_nodes_dns_to_containers() -> None:
    node = _node()
    assert json.loads(daemon_json(node)) == {
        "dns": [str(node.ip)],
        "dns-search": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        "dns-opts": ["ndots:5"],
    }
