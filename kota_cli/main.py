"""Root `kota` command: lazily dispatches to each component's click group."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from kota_cli.errors import KotaError

# name -> (module, attribute, one-line help). Order is the order of `kota --help`.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "cities": ("gateway.schema.cli", "cities", "List the ASCN member cities in the registry."),
    "quantities": ("gateway.schema.cli", "quantities", "List the quantity catalogue."),
    "sim": ("firmware_sim.cli", "group", "Simulated sensors and meters (byte-exact)."),
    "edge": ("edge.cli", "group", "The Raspberry Pi edge agent."),
    "gateway": ("gateway.cli", "group", "Normalise uplinks into the shared schema."),
    "devices": ("gateway.devices_cli", "group", "Provision devices, sites and credentials."),
    "export": ("gateway.export_cli", "group", "Export readings for other platforms (NGSI-LD)."),
    "ingest": ("ingest.cli", "group", "Write normalised readings into the database."),
    "db": ("storage.cli", "group", "Database migrations, status and Parquet archive."),
    "indicators": ("indicators.cli", "group", "M&E indicator batch jobs."),
    "aqi": ("indicators.aqi_cli", "command", "Compute one AQI sub-index in any ASEAN standard."),
    "dashboards": ("dashboards.cli", "group", "Grafana dashboards as code: build, check, push."),
    "demo": ("kota_cli.demo", "command", "Run the whole platform end to end on embedded defaults."),
    "bench": ("kota_cli.bench", "group", "Benchmarks: pipeline, edge, indicators, soak."),
}


KOTA_PACKAGES = {
    "kota_cli",
    "edge",
    "gateway",
    "ingest",
    "storage",
    "indicators",
    "dashboards",
    "firmware_sim",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr, help_text = SUBCOMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] in KOTA_PACKAGES:
                raise  # a bug in Kota itself, not a missing optional dependency
            return _unavailable(cmd_name, help_text, err)
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Show the static one-line help so `kota --help` imports nothing heavy.
        rows = [(name, help_text) for name, (_, _, help_text) in SUBCOMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, help_text: str, err: ModuleNotFoundError) -> click.Command:
    """A stand-in command that explains which extra to install."""

    def run(**_: Any) -> None:
        raise KotaError(
            f"`kota {name}` needs a package that is not installed ({err.name}); "
            "install the server extra: pip install 'kota-iot[server]'"
        )

    return click.Command(
        name,
        callback=run,
        help=help_text,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kota-iot", prog_name="kota")
def root() -> None:
    """Kota: sensor bytes to ASEAN Smart Cities indicators.

    \b
    Data flow: sim/edge -> MQTT -> gateway -> ingest -> db -> indicators -> dashboards.
    Every command has --help with an example.
    """


def cli() -> None:
    """Console-script entry point: one clear error line instead of a traceback."""
    try:
        result = root.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KotaError as err:
        click.echo(f"kota: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    # Without standalone mode click returns ctx.exit(code)'s code instead of exiting.
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    cli()
