"""`kota dashboards`: build, check and push the Grafana boards."""

from __future__ import annotations

import click

from kota_cli.errors import KotaError


@click.group(name="dashboards")
def group() -> None:
    """Grafana dashboards as code (grafana-foundation-sdk).

    The generated JSON is committed under dashboards/provisioning/ for Grafana file
    provisioning; `check` fails when it is stale.
    """


@group.command()
def build() -> None:
    """Regenerate dashboards/provisioning/dashboards/**.json from dashboards/panels.py."""
    from dashboards.build import write_all

    for path in write_all():
        click.echo(str(path))


@group.command()
def check() -> None:
    """Fail when the committed dashboard JSON differs from what the code generates."""
    from dashboards.build import stale_files

    stale = stale_files()
    if stale:
        raise KotaError(
            f"stale dashboard JSON ({', '.join(p.name for p in stale)}): run `kota dashboards build`"
        )
    click.echo("dashboards up to date")


@group.command()
@click.option(
    "--url",
    required=True,
    envvar="KOTA_GRAFANA_URL",
    help="Grafana base URL, e.g. https://grafana.city.example",
)
@click.option(
    "--token",
    required=True,
    envvar="KOTA_GRAFANA_TOKEN",
    help="Service-account token (or KOTA_GRAFANA_TOKEN).",
)
def push(url: str, token: str) -> None:
    """Upload every board through the HTTP API, overwriting by uid (idempotent).

    Example: KOTA_GRAFANA_TOKEN=glsa_... kota dashboards push --url http://localhost:3000
    """
    from dashboards.push import push as do_push

    for result in do_push(url, token):
        click.echo(f"{result.folder}/{result.uid}: {result.status}")
