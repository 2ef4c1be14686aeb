"""`kota aqi`: compute one AQI sub-index and print it as one JSON object.

Owns: the command-line surface of indicators.aqi (option parsing, JSON output, turning
bad ids into KotaError). May import: the standard library, click, kota_cli.errors and
the scalar engine (never polars, so the command works on an edge install).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import click

from indicators.aqi import catalogue, sub_index
from indicators.aqi.units import KOTA_UNIT
from kota_cli.errors import KotaError


@click.command(name="aqi")
@click.option("--standard", help="Standard id: us_epa, th_pcd, vn_aqi, sg_psi, my_api, id_ispu.")
@click.option("--pollutant", help="Pollutant id: pm2_5, pm10, o3, no2, so2, co.")
@click.option("--value", type=float, help="Concentration (in --unit).")
@click.option("--averaging", help="Averaging id: 1h, 8h, 24h, nowcast.")
@click.option(
    "--unit", default=None, help="ug/m3, mg/m3, ppb or ppm (default: Kota's unit, mg/m3 for CO)."
)
@click.option(
    "--list", "list_", is_flag=True, help="List standards with their pollutants and averagings."
)
def command(
    standard: str | None,
    pollutant: str | None,
    value: float | None,
    averaging: str | None,
    unit: str | None,
    list_: bool,
) -> None:
    """Compute one AQI sub-index in any ASEAN standard.

    \b
    Example:
      kota aqi --standard us_epa --pollutant pm2_5 --value 35.5 --averaging 24h
      kota aqi --list
    """
    if list_:
        click.echo(json.dumps({"standards": catalogue()}, ensure_ascii=False))
        return
    if standard is None or pollutant is None or value is None or averaging is None:
        raise KotaError(
            "--standard, --pollutant, --value and --averaging are all required (or use --list)"
        )
    try:
        result = sub_index(standard, pollutant, value, averaging, unit)
    except ValueError as err:
        raise KotaError(str(err)) from None
    payload = {
        "value": value if math.isfinite(value) else None,
        "unit": unit if unit is not None else KOTA_UNIT[pollutant],
        **asdict(result),
    }
    click.echo(json.dumps(payload, ensure_ascii=False))
