"""`kota cities` and `kota quantities`: print the shared registries as tables."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gateway.schema.cities import RegistryError, load_cities
from gateway.schema.quantities import QUANTITIES
from kota_cli.errors import KotaError


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Plain aligned text table (no dependency, readable over SSH on a Pi)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


@click.command()
@click.option(
    "--registry",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Another cities.csv to validate and list (default: the shipped registry).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line instead of a table."
)
def cities(registry: Path | None, as_json: bool) -> None:
    """List the ASCN member cities: UN/LOCODE, time zone, population.

    Example: kota cities --json | jq .locode
    """
    try:
        registry_cities = load_cities(registry)
    except RegistryError as err:
        raise KotaError(str(err)) from None
    if as_json:
        for city in registry_cities.values():
            click.echo(json.dumps({f: getattr(city, f) for f in city.__slots__}))
        return
    rows = [
        [
            c.locode,
            c.name,
            c.country,
            c.timezone,
            f"{c.population:,}",
            str(c.population_year),
            str(c.joined),
        ]
        for c in registry_cities.values()
    ]
    print_table(["LOCODE", "City", "CC", "Time zone", "Population", "Year", "Joined"], rows)
    click.echo(f"\n{len(rows)} cities")


@click.command()
@click.option("--domain", type=click.Choice(["air", "weather", "traffic", "water", "energy"]))
def quantities(domain: str | None) -> None:
    """List the quantity catalogue: canonical units (UCUM, UN/CEFACT), range, FIWARE mapping.

    Example: kota quantities --domain air
    """
    rows = [
        [
            q.name,
            q.domain,
            q.kind,
            q.ucum,
            q.cefact or "-",
            f"{q.min:g}..{q.max:g}",
            f"{q.fiware_model}.{q.fiware_attribute}",
        ]
        for q in QUANTITIES.values()
        if domain in (None, q.domain)
    ]
    print_table(["Quantity", "Domain", "Kind", "UCUM", "CEFACT", "Range", "FIWARE"], rows)
