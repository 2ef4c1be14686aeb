"""Quality flags: a bit set on every reading. Flags mark, they never delete.

Documented for operators and analysts in docs/quality-flags.md; the bit values are part of
the stored data, so never renumber them.
"""

from enum import IntFlag


class QualityFlag(IntFlag):
    """Bits of `readings.flags`."""

    OUT_OF_RANGE = 1  # outside the quantity's plausible physical range
    SPIKE = 2  # changed faster than the quantity's max_step per minute
    FLATLINE = 4  # the same value flatline_n times in a row (stuck sensor)
    CLOCK_SUSPECT = 8  # the device or edge clock looked unset or skewed
    CALIBRATED = 16  # a calibration (gain/offset) was applied; raw_value holds the input
    DERIVED = 32  # computed from other readings (e.g. humidity-corrected PM2.5)
    DEVICE_WARNING = 64  # the device itself reported a problem (warm-up, status bits)
    LATE = 128  # arrived more than an hour after it was observed (drained outbox)

    @classmethod
    def describe(cls, bits: int) -> list[str]:
        """Names of the flags set in `bits`, lowest bit first."""
        return [flag.name or "" for flag in cls if bits & flag]
