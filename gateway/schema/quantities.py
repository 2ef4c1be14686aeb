"""The quantity catalogue, loaded from quantities.toml (the data file is the source of truth)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

Domain = Literal["air", "weather", "traffic", "water", "energy"]
Kind = Literal["instant", "interval", "cumulative"]


@dataclass(frozen=True, slots=True)
class Quantity:
    """One measurable quantity with its canonical unit, range and FIWARE mapping."""

    name: str
    domain: Domain
    kind: Kind
    ucum: str
    cefact: str
    label: str
    min: float
    max: float
    max_step: float
    flatline_n: int
    fiware_model: str
    fiware_attribute: str
    description: str
    note: str = ""


@cache
def load_quantities() -> dict[str, Quantity]:
    """Parse quantities.toml into Quantity records keyed by name."""
    text = resources.files("gateway.schema").joinpath("quantities.toml").read_text("utf-8")
    return {name: Quantity(name=name, **fields) for name, fields in tomllib.loads(text).items()}


QUANTITIES: dict[str, Quantity] = load_quantities()


def quantity(name: str) -> Quantity:
    """Look up a quantity; a clear KeyError names the valid ones."""
    try:
        return QUANTITIES[name]
    except KeyError:
        raise KeyError(f"unknown quantity {name!r}; known: {', '.join(QUANTITIES)}") from None
