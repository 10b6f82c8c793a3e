"""``glia lab ...``: the local multi-cluster lab (up, down, status, restart, exec, run, demo).

Registered on the top-level app by :mod:`glia.cli.main`. A thin shell over
:class:`glia.lab.lab.Lab`: it parses options, shows progress with rich, and
turns :class:`~glia.lab.lab.LabError` into a message and exit code 1. The
hidden ``glia lab supervise`` is the lab's supervisor process
(:mod:`glia.lab.supervisor`), started by ``up``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from glia.cli import output
from glia.lab import demo as lab_demo
from glia.lab import docker as lab_docker
from glia.lab import netns, supervisor, topology
from glia.lab.lab import Lab, LabAlreadyUp, LabError
from glia.lab.podman import PodmanError
from glia.lab.state import StateError
from glia.lab.topology import IMAGE

app = typer.Typer(
    name="lab",
    help="Local multi-cluster lab in network namespaces (etcd, agents, podman containers).",
    no_args_is_help=True,
)
# soft_wrap: a line is never broken at the console's width (80 in a pipe), so the
# commands, paths and errors printed here can be copied and grepped whole.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

NameOpt = Annotated[
    str | None,
    typer.Option("--lab", help="Lab name: 'glia' + up to 8 [a-z0-9] (env GLIA_LAB_NAME)."),
]
DirOpt = Annotated[
    Path | None,
    typer.Option("--dir", help="Lab directory (env GLIA_LAB_DIR; default /run/glia/lab)."),
]
_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


class RichReporter:
    def step(self, text: str) -> None:
        console.print(Text.assemble(("==> ", "bold cyan"), text))

    def note(self, text: str) -> None:
        console.print(Text("    " + text, style="dim"))


def register(app_: typer.Typer) -> None:
    """Add ``glia lab`` to the top-level app."""
    app_.add_typer(app, name="lab")


def _fail(msg: str, hint: str | None = None) -> NoReturn:
    err_console.print(Text.assemble(("error: ", "bold red"), msg))
    if hint:
        err_console.print(Text(hint))
    raise typer.Exit(1)


def _open(name: str | None, lab_dir: Path | None, **kwargs: Any) -> Lab:
    try:
        return Lab.open(name, lab_dir, reporter=RichReporter(), **kwargs)
    except (topology.TopologyError, StateError) as e:
        _fail(str(e))


@app.command()
def up(
    clusters: Annotated[
        int | None,
        typer.Option("--clusters", "-c", help="Clusters (c1..cN); default: as built, else 1."),
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option("--nodes", "-n", help="Nodes per cluster; default: as built, else 2."),
    ] = None,
    recreate: Annotated[
        bool, typer.Option(help="Remove the lab (containers and all) and build it anew.")
    ] = False,
    agents: Annotated[
        bool | None,
        typer.Option(
            help="Start operators and agents (--no-agents: infrastructure only); "
            "default: as built, else with agents."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for healthy agents.")] = 90.0,
    name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Build the lab: namespaces, underlay, etcd per cluster, podman per node, daemons.

    On a lab that exists in the same shape it only starts again what is down
    (daemons, the supervisor) and keeps containers, etcd data and Services;
    --recreate is the only way to wipe it.
    """
    lab = _open(name, lab_dir, clusters=clusters, nodes=nodes)
    try:
        st = lab.state()
    except LabError:
        st = None
    if agents is None:
        agents = st.agents if st is not None else True
    repairing = st is not None and st.complete and not recreate
    try:
        built = lab.up(agents=agents, recreate=recreate, timeout=timeout)
    except LabAlreadyUp as e:
        _fail(str(e))
    except (LabError, PodmanError) as e:
        if repairing:
            _fail(str(e), f"Nothing else was changed; `{_status_cmd(lab)}` shows what is down.")
        _fail(str(e), f"The lab is left as it is for its logs; `{_down_cmd(lab)}` removes it.")
    except KeyboardInterrupt:
        err_console.print(Text(f"interrupted; `{_down_cmd(lab)}` removes what was built"))
        raise typer.Exit(130) from None
    if not built:
        console.print("Use [bold]--recreate[/] to rebuild it (removing its containers).")
    _print_summary(lab)


@app.command()
def down(name: NameOpt = None, lab_dir: DirOpt = None) -> None:
    """Remove everything the lab made (also after a crash; fine when nothing is up)."""
    lab = _open(name, lab_dir)
    console.print(f"[bold cyan]==>[/] removing lab {lab.name!r}")
    report = lab.down()
    if report.empty:
        console.print(f"lab {lab.name!r}: nothing to remove")
    else:
        for what, items in (
            ("containers", report.containers),
            ("processes", report.processes),
            ("namespaces", report.namespaces),
            ("paths", report.paths),
        ):
            if items:
                console.print(f"removed {len(items)} {what}: {', '.join(items)}")
    for problem in report.problems:
        err_console.print(Text.assemble(("warning: ", "yellow"), problem))
    if report.problems:
        raise typer.Exit(1)


@app.command()
def status(
    out: output.OutputOption = output.OutputFormat.table,
    name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Clusters, nodes, daemons (with the supervisor's restarts) and containers.

    Exits 1 when the lab is not (fully) up, in every output format.
    """
    lab = _open(name, lab_dir)
    try:
        data = lab.status()
    except LabError as e:
        _fail(str(e))
    if not output.print_structured(data, out) and data["exists"]:
        _print_status(data)
    if not data["up"]:
        if data["exists"]:
            err_console.print(Text(f"lab {lab.name!r} is not fully up", style="bold red"))
        else:
            err_console.print(f"lab {lab.name!r} is not up (`{_up_cmd(lab)}` builds it)")
        raise typer.Exit(1)


@app.command()
def restart(
    target: Annotated[
        str, typer.Argument(help="CLUSTER/NODE (its agent), or CLUSTER with --operator/--etcd.")
    ],
    operator: Annotated[bool, typer.Option("--operator", help="The cluster's operator.")] = False,
    etcd: Annotated[bool, typer.Option("--etcd", help="The cluster's etcd (data kept).")] = False,
    name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Restart one daemon (SIGTERM, start, wait until it answers); nothing else is touched."""
    if operator and etcd:
        _fail("--operator and --etcd: restart one daemon at a time")
    lab = _open(name, lab_dir)
    try:
        st = lab.state()
    except LabError as e:
        _fail(str(e))
    if st is None or not st.complete:
        _fail(f"lab {lab.name!r} is not up (`{_up_cmd(lab)}` builds it)")
    try:
        if operator or etcd:
            if "/" in target:
                _fail(f"{target!r}: --operator and --etcd take a CLUSTER (e.g. c1), not a node")
            cluster = lab.topo.cluster(target).name
            if operator:
                if not st.agents:
                    _fail(f"lab {lab.name!r} runs without agents and operators (--no-agents)")
                rec = lab.restart_operator(cluster)
            else:
                rec = lab.restart_etcd(cluster)
        else:
            if "/" not in target:
                _fail(
                    f"{target!r} is a cluster: name a node (e.g. {target}/n1) for its agent, "
                    "or add --operator or --etcd"
                )
            if not st.agents:
                _fail(f"lab {lab.name!r} runs without agents (--no-agents)")
            rec = lab.restart_agent(target)
    except (LabError, topology.TopologyError) as e:
        _fail(str(e))
    console.print(f"{rec.name}: running, pid {rec.pid}, log {rec.log}")


@app.command("supervise", hidden=True)
def supervise(
    lab_name: Annotated[str, typer.Option("--lab", help="Lab name.")],
    state_file: Annotated[Path, typer.Option("--state", help="The lab's state.json.")],
) -> None:
    """The lab's supervisor (started by `glia lab up`; ended by `glia lab down`)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise typer.Exit(supervisor.run(lab_name, state_file, stop))


@app.command("exec", context_settings=_PASSTHROUGH)
def exec_(
    target: Annotated[str, typer.Argument(help="CLUSTER/NODE or CLUSTER/NODE/CONTAINER.")],
    command: Annotated[list[str], typer.Argument(help="Command, after --.")],
    name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Run a command in a node's namespace or in a container; exit with its code."""
    lab = _open(name, lab_dir)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        argv, env = lab.exec_argv(target, command, tty=tty, check_container=True)
    except (LabError, topology.TopologyError) as e:
        _fail(str(e))
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        _fail(f"cannot run {argv[0]}: {e}")


@app.command(context_settings=_PASSTHROUGH)
def docker(
    node: Annotated[str, typer.Argument(help="CLUSTER/NODE.")],
    command: Annotated[list[str] | None, typer.Argument(help="docker arguments, after --.")] = None,
    name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Run docker against the node's dockerd; without arguments, show how to reach it.

    The dockerd starts on first use, with network "glia" and the lab image (docs/docker.md)."""
    lab = _open(name, lab_dir)
    try:
        spec = lab.topo.node(*node.split("/", 1)) if node.count("/") == 1 else None
    except topology.TopologyError as e:
        _fail(str(e))
    if spec is None:
        _fail(f"{node!r}: expected CLUSTER/NODE, e.g. c1/n1")
    dk = lab_docker.NodeDocker(spec)
    try:
        dk.start(lab.topo.rootfs_dir)
    except (lab_docker.DockerError, OSError) as e:
        _fail(str(e), "is docker.io installed? (scripts/setup.sh)")
    argv = [lab_docker.DOCKER, "-H", f"unix://{dk.socket}", *(command or [])]
    if not command:
        console.print(f"dockerd of {spec.ref} is up: {' '.join(argv)} ...")
        console.print(f"  e.g. run -d --network {lab_docker.NETWORK} --label app=web {IMAGE}")
        return
    os.execve(argv[0], argv, dk.env())


@app.command(context_settings=_PASSTHROUGH)
def run(
    target: Annotated[str, typer.Argument(help="CLUSTER/NODE to run on.")],
    container: Annotated[str, typer.Option("--name", help="Container name.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command, after --.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Label k=v (repeatable).")] = None,
    image: Annotated[str, typer.Option(help="Image.")] = topology.IMAGE,
    out: output.OutputOption = output.OutputFormat.table,
    lab_name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Start a container (default: busybox httpd on port 80 answering its name).

    A name in use on that node is refused; the container holding it is left alone.
    """
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--label {item!r}: expected key=value")
        labels[key] = value
    lab = _open(lab_name, lab_dir)
    try:
        c = lab.run_container(target, container, labels=labels, image=image, command=command)
    except (LabError, topology.TopologyError) as e:
        _fail(str(e))
    data = dataclasses.asdict(c)
    if not output.print_structured(data, out):
        output.print_table(output.build_table([data], _RUN_COLUMNS))


_RUN_COLUMNS = (
    output.Column("NAME", "name"),
    output.Column("IP", "ip"),
    output.Column("NODE", "node"),
    output.Column("ID", lambda row: str(row["id"])[:12]),
    output.Column("STATE", "state"),
    output.Column("LABELS", "labels"),
)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Leave the demo lab up afterwards.")] = False,
    name: Annotated[str, typer.Option("--lab", help="Lab name of the demo.")] = lab_demo.DEMO_LAB,
) -> None:
    """Bring a 2-node lab up, show containers talking across nodes, show state, tear down."""
    code = lab_demo.run(console, name=name, keep=keep)
    raise typer.Exit(code)


def _down_cmd(lab: Lab) -> str:
    extra = "" if lab.name == topology.DEFAULT_LAB else f" --lab {lab.name}"
    return f"glia lab down{extra}"


def _status_cmd(lab: Lab) -> str:
    extra = "" if lab.name == topology.DEFAULT_LAB else f" --lab {lab.name}"
    return f"glia lab status{extra}"


def _up_cmd(lab: Lab) -> str:
    extra = "" if lab.name == topology.DEFAULT_LAB else f" --lab {lab.name}"
    return f"glia lab up{extra}"


def _print_summary(lab: Lab) -> None:
    data = lab.status()
    _print_status(data)
    env = "" if lab.name == topology.DEFAULT_LAB else f"GLIA_LAB_NAME={lab.name} "
    node = data["clusters"][0]["nodes"][0]
    first = node["ref"]
    podman = " ".join(f"{k}={v}" for k, v in node["podman_env"].items())
    console.print("\n[bold]Try:[/]")
    for line in (
        f"{env}glia lab run {first} --name glia-web --label app=web",
        f"{env}glia lab exec {first} -- ip -br addr",
        f"{env}glia lab exec {first}/glia-web -- wget -qO- http://127.0.0.1/",
        f"GLIA_LAB_DIR={lab.dir} glia status --node {first}",
        f"{podman} nsenter --net={netns.NETNS_DIR / node['netns']} podman ps",
        f"{env}glia lab status",
        f"{env}glia lab down",
    ):
        console.print(f"  {line}")


_STATE_STYLE = {"running": "green", "paused": "yellow", "stopped": "yellow", "dead": "red"}


def _alive(proc: dict[str, Any]) -> str:
    """A daemon's cell: its state and PID, and the supervisor's restarts of it."""
    if proc["pid"] is None:
        return "[red]missing[/]" if proc.get("state") == "missing" else "[dim]-[/]"
    state = proc.get("state") or ("running" if proc["alive"] else "dead")
    cell = f"[{_STATE_STYLE.get(state, 'white')}]{state}[/] {proc['pid']}"
    if proc.get("restarts"):
        cell += f" [dim]({proc['restarts']} restart{'s' if proc['restarts'] != 1 else ''})[/]"
    return cell


def _print_status(data: dict[str, Any]) -> None:
    state = "[green]up[/]" if data["up"] else "[yellow]not (fully) up[/]"
    console.print(f"lab [bold]{data['lab']}[/] {state}, dir {data['dir']}")
    sup = data["supervisor"]
    console.print(
        "supervisor "
        + (f"[green]running[/] {sup['pid']}" if sup["alive"] else "[red]not running[/]")
        + (f", log {sup['log']}" if sup["log"] else "")
    )
    clusters = Table("cluster", "pod pool", "service CIDR", "etcd", "etcd pid", "operator")
    for c in data["clusters"]:
        clusters.add_row(
            f"{c['name']} (id {c['id']})",
            c["pod_pool"],
            c["service_cidr"],
            c["etcd"]["endpoint"],
            _alive(c["etcd"]),
            _alive(c["operator"]),
        )
    output.print_table(clusters, console)
    nodes = Table("node", "namespace", "IP", "agent", "healthy", "containers")
    for c in data["clusters"]:
        for n in c["nodes"]:
            ctrs = "\n".join(
                f"{x['name']} {x.get('ip') or '-'} ({x.get('state')})"
                if "error" not in x
                else x["error"]
                for x in n["containers"]
            )
            nodes.add_row(
                n["ref"] + (" (host setup)" if n.get("setup") == "host" else ""),
                n["netns"] if n["netns_exists"] else f"[red]{n['netns']} (missing)[/]",
                n["ip"],
                _alive(n["agent"]),
                "[green]yes[/]" if n["agent"].get("healthy") else "no",
                ctrs or "-",
            )
    output.print_table(nodes, console)
    w = data.get("world")
    if w:
        ns = w["netns"] if w["netns_exists"] else f"[red]{w['netns']} (missing)[/]"
        http = (
            f"[green]running[/] {w['pid']}" if w["state"] == "running" else f"[red]{w['state']}[/]"
        )
        console.print(f"world {ns} {w['ip']} (via {w['underlay_ip']}): {w['url']} {http}")
    for c in data["clusters"]:
        console.print(Text(f"{c['name']}: etcd log {c['etcd']['log'] or '-'}", style="dim"))
        if c["operator"]["log"]:
            console.print(Text(f"{c['name']}: operator log {c['operator']['log']}", style="dim"))
        for n in c["nodes"]:
            console.print(Text(f"{n['ref']}: agent socket {n['socket']}", style="dim"))
            if n["agent"]["log"]:
                console.print(Text(f"{n['ref']}: agent log {n['agent']['log']}", style="dim"))
    for line in data["problems"]:
        err_console.print(Text.assemble(("problem: ", "bold red"), line))
