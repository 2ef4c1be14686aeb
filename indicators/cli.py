"""`kota indicators`: run the M&E indicator jobs and list the catalogue.

Owns the click group `group` (the root maps `kota indicators` to it). The database URL comes
from --database-url or $KOTA_DATABASE_URL; every user-fixable problem is one KotaError line.
May import: click, this package, `storage`, `kota_cli.errors`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from kota_cli.errors import KotaError


@click.group()
def group() -> None:
    """M&E indicator batch jobs (docs/indicators.md)."""


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
@click.option("--focal-area", default=None, help="Only indicators of this ASCN focal area.")
def list_cmd(as_json: bool, focal_area: str | None) -> None:
    """List the indicator catalogue (indicators/catalogue.toml).

    Example: kota indicators list --focal-area "Quality Environment"
    """
    from indicators.catalogue import as_rows

    rows = [r for r in as_rows() if focal_area is None or r["focal_area"] == focal_area]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        codes = " ".join(x for x in (r["iso37120"] and f"ISO37120:{r['iso37120']}",
                                     r["u4ssc"] and f"U4SSC:{r['u4ssc']}") if x)  # fmt: skip
        click.echo(f"{r['indicator']:<48} {r['unit']:<16} {r['focal_area']:<22} {codes}")


@group.command("run")
@click.option("--period", default=None, help="2025 (year), 2025-03 (month) or 2025-03-14 (day).")
@click.option(
    "--period-type",
    type=click.Choice(["year", "month", "day"]),
    default=None,
    help="Granularity of the rows (default: that of --period).",
)
@click.option("--from", "date_from", default=None, help="Start of a range (YYYY[-MM[-DD]]).")
@click.option("--to", "date_to", default=None, help="End of a range, included.")
@click.option("--cities", default=None, help="Comma-separated UN/LOCODEs (default: all).")
@click.option(
    "--from-parquet",
    "parquet_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Read the Parquet archive in DIR instead of the database.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("out/indicators"),
    show_default=True,
    help="Output directory.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "xlsx"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--baseline-year", type=int, default=None, help="Override targets.toml baseline_year."
)
@click.option("--database-url", default=None, help="PostgreSQL URL (else $KOTA_DATABASE_URL).")
@click.option("--no-db", is_flag=True, help="Write files only; do not upsert indicator_values.")
def run_cmd(
    period: str | None, period_type: str | None, date_from: str | None, date_to: str | None,
    cities: str | None, parquet_dir: Path | None, out_dir: Path, fmt: str,
    baseline_year: int | None, database_url: str | None, no_db: bool,
) -> None:  # fmt: skip
    """Compute the indicators, write the M&E table and upsert it into indicator_values.

    \b
    Examples:
      kota indicators run --period 2025 --period-type month --format xlsx --out out/
      kota indicators run --period 2025-03-14 --cities THBKK,VNHAN
      kota indicators run --period 2025 --from-parquet archive/ --format parquet --no-db
    Re-running is idempotent: the same rows are upserted with a new computed_at.
    """
    from gateway.schema import load_cities
    from indicators import me, periods, source

    try:
        span, ptype = periods.resolve(period, period_type, date_from, date_to)
    except ValueError as err:
        raise KotaError(str(err)) from None
    city_list = None
    if cities:
        city_list = [c.strip().upper() for c in cities.split(",") if c.strip()]
        unknown = sorted(set(city_list) - set(load_cities()))
        if unknown:
            raise KotaError(f"--cities: unknown city {', '.join(unknown)} (see `kota cities`)")
    url = database_url or os.environ.get("KOTA_DATABASE_URL", "").strip() or None
    if parquet_dir is not None:
        if not parquet_dir.is_dir():
            raise KotaError(f"--from-parquet: {parquet_dir} is not a directory")
        src = source.parquet_source(parquet_dir)
        label = f"parquet:{parquet_dir}"
    else:
        if url is None:
            raise KotaError("KOTA_DATABASE_URL: not set; give --database-url or --from-parquet DIR")
        src = source.database_source(url)
        label = "database"
    result = me.run(src, span, ptype, city_list, source_label=label, baseline_year=baseline_year)
    stem = f"indicators_{span.first.isoformat()}_{span.last.isoformat()}_{ptype}"
    paths = me.write_output(result, out_dir, fmt, stem)
    for p in paths:
        click.echo(f"wrote {p}")
    if no_db or url is None:
        click.echo(f"{result.table.height} rows; indicator_values not updated"
                   + (" (--no-db)" if no_db else " (no database URL)"))  # fmt: skip
        return
    n = me.upsert_values(url, result.table)
    click.echo(f"{result.table.height} rows; upserted {n} into indicator_values")
