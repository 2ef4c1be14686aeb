"""Registry of the six standards, keyed by id.

Owns: the id -> `Standard` mapping and id validation with one-line errors.
May import: the standard library and this package's model and standards modules.
"""

from __future__ import annotations

from indicators.aqi.model import AVERAGINGS, POLLUTANTS, Standard
from indicators.aqi.standards import id_ispu, my_api, sg_psi, th_pcd, us_epa, vn_aqi

STANDARDS: dict[str, Standard] = {
    s.id: s
    for s in (
        us_epa.STANDARD,
        th_pcd.STANDARD,
        vn_aqi.STANDARD,
        sg_psi.STANDARD,
        my_api.STANDARD,
        id_ispu.STANDARD,
    )
}


def get_standard(standard_id: str) -> Standard:
    """The standard with this id, or ValueError listing the valid ids."""
    try:
        return STANDARDS[standard_id]
    except KeyError:
        raise ValueError(
            f"unknown standard {standard_id!r}; valid standards: {', '.join(STANDARDS)}"
        ) from None


def check_pollutant(pollutant: str) -> str:
    if pollutant not in POLLUTANTS:
        raise ValueError(
            f"unknown pollutant {pollutant!r}; valid pollutants: {', '.join(POLLUTANTS)}"
        )
    return pollutant


def check_averaging(averaging: str) -> str:
    if averaging not in AVERAGINGS:
        raise ValueError(
            f"unknown averaging {averaging!r}; valid averagings: {', '.join(AVERAGINGS)}"
        )
    return averaging


def catalogue() -> list[dict[str, object]]:
    """Every standard with its pollutants and their averagings (for `kota aqi --list`)."""
    return [
        {
            "id": s.id,
            "name": s.name,
            "source": s.source,
            "pollutants": {p: list(s.averagings(p)) for p in POLLUTANTS if s.averagings(p)},
        }
        for s in STANDARDS.values()
    ]
