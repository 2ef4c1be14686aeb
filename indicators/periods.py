"""Period syntax and calendar arithmetic (local calendar days, months, years).

Owns: parsing `2025`, `2025-03`, `2025-03-14` and `--from/--to` ranges into a `Run` of whole
periods, the period containing a date, the previous period and the baseline period.
May import: the standard library only.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta

PERIOD_TYPES = ("day", "month", "year")
_YEAR = re.compile(r"^(\d{4})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class Span:
    """Local calendar days [first, last], both included."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def parse_period(text: str) -> tuple[Span, str]:
    """`2025` -> (the year, "year"); `2025-03` -> month; `2025-03-14` -> day."""
    text = text.strip()
    try:
        if m := _YEAR.match(text):
            y = int(m.group(1))
            return Span(date(y, 1, 1), date(y, 12, 31)), "year"
        if m := _MONTH.match(text):
            y, mo = int(m.group(1)), int(m.group(2))
            return Span(date(y, mo, 1), date(y, mo, calendar.monthrange(y, mo)[1])), "month"
        if m := _DAY.match(text):
            d = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            return Span(d, d), "day"
    except ValueError as err:
        raise ValueError(f"period {text!r}: {err}") from None
    raise ValueError(f"period {text!r}: expected YYYY, YYYY-MM or YYYY-MM-DD")


def period_start(d: date, period_type: str) -> date:
    if period_type == "day":
        return d
    if period_type == "month":
        return d.replace(day=1)
    if period_type == "year":
        return date(d.year, 1, 1)
    raise ValueError(f"unknown period type {period_type!r}; valid: {', '.join(PERIOD_TYPES)}")


def period_end(start: date, period_type: str) -> date:
    if period_type == "day":
        return start
    if period_type == "month":
        return start.replace(day=calendar.monthrange(start.year, start.month)[1])
    return date(start.year, 12, 31)


def previous_start(start: date, period_type: str) -> date:
    if period_type == "day":
        return start - timedelta(days=1)
    if period_type == "month":
        return (start - timedelta(days=1)).replace(day=1)
    return date(start.year - 1, 1, 1)


def expand(span: Span, period_type: str) -> Span:
    """The smallest span of whole `period_type` periods covering `span`."""
    first = period_start(span.first, period_type)
    return Span(first, period_end(period_start(span.last, period_type), period_type))


def resolve(
    period: str | None,
    period_type: str | None,
    date_from: str | None = None,
    date_to: str | None = None,
) -> tuple[Span, str]:
    """The span and period type of a run from the CLI options.

    `--period P` alone uses P's own granularity; `--period-type` may be finer (2025 by month).
    `--from A --to B` (each YYYY, YYYY-MM or YYYY-MM-DD) spans A's first day to B's last day.
    """
    if period and (date_from or date_to):
        raise ValueError("give either --period or --from/--to, not both")
    if period:
        span, natural = parse_period(period)
    elif date_from and date_to:
        first, natural = parse_period(date_from)
        last, _ = parse_period(date_to)
        span = Span(first.first, last.last)
        if span.last < span.first:
            raise ValueError(f"--to {date_to} is before --from {date_from}")
    else:
        raise ValueError("give --period (2025, 2025-03, 2025-03-14) or both --from and --to")
    ptype = period_type or natural
    if ptype not in PERIOD_TYPES:
        raise ValueError(f"unknown period type {ptype!r}; valid: {', '.join(PERIOD_TYPES)}")
    return expand(span, ptype), ptype
