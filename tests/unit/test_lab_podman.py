"""Podman configuration of a lab node (glia.lab.podman renderers): pure, no podman."""

from __future__ import annotations

import tomllib
from pathlib import Path

from glia.lab import podman, topology


def _node() -> topology.NodeSpec:
    return topology.build("gliat", 1, 2, Path("/run/glia/lab-gliat")).node("c1", "n2")


def test_containers_conf() -> None:
    node = _node()
    plugin_dirs = [Path("/run/glia/lab-gliat/cni-bin"), Path("/usr/lib/cni")]
    conf = tomllib.loads(podman.render_containers_conf(node, plugin_dirs))
    assert conf["containers"]["default_ulimits"] == ["nofile=20000:20000", "nproc=32768:32768"]
    engine = conf["engine"]
    assert engine["cgroup_manager"] == "cgroupfs"
    assert engine["runtime"] == "runc"
    assert engine["events_logger"] == "file"
    # Per-node locks: the default SHM lock table is shared machine-wide.
    assert engine["lock_type"] == "file"
    assert Path(engine["tmp_dir"]).is_relative_to(node.dir)
    assert engine["hooks_dir"] == [str(node.dir / "hooks.d")]
    net = conf["network"]
    assert net["network_backend"] == "cni"
    assert net["network_config_dir"] == str(node.cni_config_dir)
    assert net["cni_plugin_dirs"] == [str(d) for d in plugin_dirs]
    assert net["default_network"] == "glia"


def test_storage_conf_is_under_the_node_dir() -> None:
    node = _node()
    conf = tomllib.loads(podman.render_storage_conf(node))["storage"]
    assert conf["driver"] == "overlay"
    assert Path(conf["graphroot"]).is_relative_to(node.dir)
    assert Path(conf["runroot"]).is_relative_to(node.dir)
    assert conf["graphroot"] != conf["runroot"]


def test_nodes_share_nothing() -> None:
    topo = topology.build("gliat", 1, 2, Path("/run/glia/lab-gliat"))
    a, b = topo.nodes
    confs = [(podman.render_containers_conf(n, []), podman.render_storage_conf(n)) for n in (a, b)]
    assert confs[0] != confs[1]
    assert str(a.dir) not in "".join(confs[1])


def test_quotes_in_paths_stay_valid_toml() -> None:
    topo = topology.build("gliat", 1, 1, Path('/tmp/glia "odd" dir'))
    conf = tomllib.loads(podman.render_storage_conf(topo.nodes[0]))
    assert conf["storage"]["graphroot"].startswith('/tmp/glia "odd" dir/')


def test_default_command_serves_the_name() -> None:
    argv = podman.default_command("glia-web1")
    assert argv[:2] == ["sh", "-c"]
    assert "echo glia-web1 > /www/index.html" in argv[2]
    assert "httpd -f -p 80" in argv[2]


def test_cgroup_hook_runs_the_console_script_for_every_container() -> None:
    node = _node()
    exe = Path("/src/.venv/bin/glia-oci-hook")
    cgroup = Path("/sys/fs/cgroup/unified/glia-lab-gliat-c1-n2")
    hook = podman.render_cgroup_hook(node, exe, cgroup)
    assert hook == {
        "version": "1.0.0",
        "hook": {
            "path": "/src/.venv/bin/glia-oci-hook",
            "args": [
                "glia-oci-hook",
                "--cgroup",
                "/sys/fs/cgroup/unified/glia-lab-gliat-c1-n2",
                "--log",
                "/run/glia/lab-gliat/nodes/c1-n2/oci-hook.log",
            ],
        },
        "when": {"always": True},
        "stages": ["createRuntime"],
    }


def test_cgroup_parent_is_the_node_cgroup_from_the_hierarchy_root() -> None:
    assert podman.cgroup_parent(_node()) == "/glia-lab-gliat-c1-n2"


def test_containers_get_ndots_and_the_rest_of_dns_from_the_cni_result() -> None:
    # dns_servers or dns_searches would make podman drop the CNI result's
    # per-namespace search list (glia.endpoint.cni_result); it ignores its options.
    conf = tomllib.loads(podman.render_containers_conf(_node(), []))["containers"]
    assert conf["dns_options"] == ["ndots:5"]
    assert "dns_servers" not in conf and "dns_searches" not in conf


def test_a_container_has_the_address_of_whichever_glia_network_it_is_on() -> None:
    pm = podman.NodePodman(_node())

    def inspected(networks: dict[str, object]) -> podman.Container:
        data = {"Name": "web", "Id": "c0ffee", "NetworkSettings": {"Networks": networks}}
        return pm._container(data)

    assert inspected({"glia": {"IPAddress": "10.1.0.5"}}).ip == "10.1.0.5"
    assert inspected({podman.CHAINED_NETWORK: {"IPAddress": "10.1.0.194"}}).ip == "10.1.0.194"
    assert inspected({podman.BRIDGE_NETWORK: {"IPAddress": "10.1.0.226"}}).ip == "10.1.0.226"
    assert inspected({"other": {"IPAddress": "10.9.0.1"}}).ip is None
