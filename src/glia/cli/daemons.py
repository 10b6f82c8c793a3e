"""``glia agent`` and ``glia operator``: run the long-lived processes."""

from __future__ import annotations

from pathlib import Path

import typer

from glia.model.codec import InvalidValue


def _fail(msg: str) -> None:
    typer.echo(msg, err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent(
        config: Path = typer.Option(..., "--config", "-c", help="Agent configuration file (YAML)."),
    ) -> None:
        """Run the node agent (datapath, endpoints, kvstore sync, API socket)."""
        from glia.agent import config as agent_config
        from glia.agent.process import run

        try:
            cfg = agent_config.load(config)
        except (OSError, InvalidValue) as e:
            _fail(f"glia agent: invalid configuration {config}: {e}")
            return
        run(cfg)

    @app.command("operator")
    def operator(
        config: Path = typer.Option(
            ..., "--config", "-c", help="Operator configuration file (YAML)."
        ),
    ) -> None:
        """Run the cluster operator (pod CIDRs, identity GC, heartbeat; leader-elected)."""
        from glia.operator import config as operator_config
        from glia.operator.daemon import cluster_record, run

        try:
            cfg = operator_config.load(config)
            cluster_record(cfg)  # what other clusters would refuse fails here, with the reason
        except (OSError, ValueError) as e:  # InvalidValue is a ValueError
            _fail(f"glia operator: invalid configuration {config}: {e}")
            return
        run(cfg)
