"""``glia lab ...``: the local multi-cluster lab (up, down, status, exec, run, demo).

Registered on the top-level app by :mod:`glia.cli.main`. A thin shell over
:class:`glia.lab.lab.Lab`: it parses options, shows progress with rich, and
turns :class:`~glia.lab.lab.LabError` into a message and exit code 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from glia.lab import demo as lab_demo
from glia.lab import topology
from glia.lab.lab import Lab, LabAlreadyUp, LabError
from glia.lab.podman import PodmanError
from glia.lab.state import StateError

app = typer.Typer(
    name="lab",
    help="Local multi-cluster lab in network namespaces (etcd, agents, podman containers).",
    no_args_is_help=True,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

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
    clusters: Annotated[int, typer.Option("--clusters", "-c", help="Clusters (c1..cN).")] = 1,
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Nodes per cluster.")] = 2,
    recreate: Annotated[bool, typer.Option(help="Tear down a running lab first.")] = False,
    agents: Annotated[
        bool, typer.Option(help="Start operators and agents (--no-agents: infrastructure only).")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for healthy agents.")] = 90.0,
    name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Build the lab: namespaces, underlay, etcd per cluster, podman per node, daemons."""
    lab = _open(name, lab_dir, clusters=clusters, nodes=nodes)
    try:
        built = lab.up(agents=agents, recreate=recreate, timeout=timeout)
    except LabAlreadyUp as e:
        _fail(str(e))
    except (LabError, PodmanError) as e:
        _fail(str(e), f"The lab is left as it is for its logs; `{_down_cmd(lab)}` removes it.")
    except KeyboardInterrupt:
        err_console.print(Text(f"interrupted; `{_down_cmd(lab)}` removes what was built"))
        raise typer.Exit(130) from None
    if not built:
        console.print("Use [bold]--recreate[/] to rebuild it.")
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
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Clusters, nodes, processes and containers of the lab."""
    if output not in ("table", "json"):
        _fail(f"--output {output!r}: choose table or json")
    lab = _open(name, lab_dir)
    try:
        data = lab.status()
    except LabError as e:
        _fail(str(e))
    if output == "json":
        print(json.dumps(data, indent=2))
        return
    if not data["exists"]:
        console.print(f"lab {lab.name!r} is not up (`glia lab up` builds it)")
        raise typer.Exit(1)
    _print_status(data)


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
        argv, env = lab.exec_argv(target, command, tty=tty)
    except (LabError, topology.TopologyError) as e:
        _fail(str(e))
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        _fail(f"cannot run {argv[0]}: {e}")


@app.command(context_settings=_PASSTHROUGH)
def run(
    target: Annotated[str, typer.Argument(help="CLUSTER/NODE to run on.")],
    container: Annotated[str, typer.Option("--name", help="Container name.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command, after --.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Label k=v (repeatable).")] = None,
    image: Annotated[str, typer.Option(help="Image.")] = topology.IMAGE,
    lab_name: NameOpt = None,
    lab_dir: DirOpt = None,
) -> None:
    """Start a container (default: busybox httpd on port 80 answering its name)."""
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
    console.print(f"{c.name}\t{c.ip or '-'}\t{c.node}\t{c.id[:12]}")


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


def _print_summary(lab: Lab) -> None:
    data = lab.status()
    _print_status(data)
    env = "" if lab.name == topology.DEFAULT_LAB else f"GLIA_LAB_NAME={lab.name} "
    first = data["clusters"][0]["nodes"][0]["ref"]
    console.print("\n[bold]Try:[/]")
    for line in (
        f"{env}glia lab run {first} --name glia-web --label app=web",
        f"{env}glia lab exec {first} -- ip -br addr",
        f"{env}glia lab exec {first}/glia-web -- wget -qO- http://127.0.0.1/",
        f"GLIA_LAB_DIR={lab.dir} glia status --node {first}",
        f"{env}glia lab status",
        f"{env}glia lab down",
    ):
        console.print(f"  {line}")


def _alive(proc: dict[str, Any]) -> str:
    if proc["pid"] is None:
        return "[dim]-[/]"
    return f"[green]up[/] {proc['pid']}" if proc["alive"] else f"[red]dead[/] {proc['pid']}"


def _print_status(data: dict[str, Any]) -> None:
    state = "[green]up[/]" if data["up"] else "[yellow]not (fully) up[/]"
    console.print(f"lab [bold]{data['lab']}[/] {state}, dir {data['dir']}")
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
    console.print(clusters)
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
                n["ref"],
                n["netns"] if n["netns_exists"] else f"[red]{n['netns']} (missing)[/]",
                n["ip"],
                _alive(n["agent"]),
                "[green]yes[/]" if n["agent"].get("healthy") else "no",
                ctrs or "-",
            )
    console.print(nodes)
    for c in data["clusters"]:
        console.print(Text(f"{c['name']}: etcd log {c['etcd']['log'] or '-'}", style="dim"))
        if c["operator"]["log"]:
            console.print(Text(f"{c['name']}: operator log {c['operator']['log']}", style="dim"))
        for n in c["nodes"]:
            console.print(Text(f"{n['ref']}: agent socket {n['socket']}", style="dim"))
            if n["agent"]["log"]:
                console.print(Text(f"{n['ref']}: agent log {n['agent']['log']}", style="dim"))
