"""City signal profiles: deterministic value sources for every simulated device.

A *value source* maps a time to readings::

    ValueSource = Callable[[float], Mapping[str, float]]
    # epoch seconds UTC -> {kota quantity name: value in the canonical unit of quantities.toml}

:func:`make_source` builds one for a city (UN/LOCODE), a device kind and a device id::

    src = make_source("THCNX", "pm", "cnx-pms-01", seed=42)
    src(1_772_000_000.0)   # {"pm2_5": 131.2, "pm10": 171.0, ..., "particles_0_3": 24921.0}

Determinism: every value is a pure function of (seed, city, device, kind, t). Randomness comes
from a 64-bit hash (BLAKE2b keys mixed by splitmix64) of (seed, city, device, quantity, time
bucket): no global state, no ``random`` module, and any t can be evaluated in any order (so
backfill and live runs agree). Autocorrelated noise is smoothed value noise over several time
scales. Cumulative registers (water_volume, active_energy_import) are closed-form integrals of
the same hourly profile that drives the flow/power readings, so they only grow (except at a
configured meter rollover, which is logged).

City parameters live in :data:`CITY_PROFILES` (a data table keyed by UN/LOCODE); cities not in
it get :data:`REGIONAL_DEFAULT`, adjusted by :data:`COUNTRY_DEFAULTS` (mains voltage/frequency,
traffic mix) and the time zone from ``gateway/schema/cities.csv``. See docs/simulator.md for
where the numbers come from (most are illustrative, not measurements).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

ValueSource = Callable[[float], Mapping[str, float]]

# --------------------------------------------------------------------------------------------
# Quantity sets per device kind
# --------------------------------------------------------------------------------------------

PM_QUANTITIES = (
    "pm1", "pm2_5", "pm10", "pm1_cf1", "pm2_5_cf1", "pm10_cf1",
    "particles_0_3", "particles_0_5", "particles_1_0", "particles_2_5", "particles_5_0",
    "particles_10",
)  # fmt: skip
TH_QUANTITIES = ("temperature", "relative_humidity")
GAS_QUANTITIES = ("no2", "o3", "so2", "co")
TRAFFIC_QUANTITIES = (
    "vehicle_count", "vehicle_count_motorcycle", "vehicle_count_car", "vehicle_count_heavy",
    "vehicle_speed", "lane_occupancy",
)  # fmt: skip
WATER_QUANTITIES = ("water_volume", "water_flow")
ENERGY_QUANTITIES = ("active_energy_import", "active_power", "voltage", "current", "frequency")
CUMULATIVE = frozenset({"water_volume", "active_energy_import"})

KIND_QUANTITIES: dict[str, tuple[str, ...]] = {
    "air": PM_QUANTITIES + TH_QUANTITIES + ("co2",) + GAS_QUANTITIES,
    "pm": PM_QUANTITIES,
    "co2": ("co2", *TH_QUANTITIES),
    "th": TH_QUANTITIES,
    "gas": GAS_QUANTITIES,
    "traffic_lane": TRAFFIC_QUANTITIES,
    "traffic": TRAFFIC_QUANTITIES,
    "water": WATER_QUANTITIES,
    "energy_1p": ENERGY_QUANTITIES,
    "energy_3p": ENERGY_QUANTITIES,
}
#: Kinds accepted by :func:`make_source`: ``traffic_lane:<n>`` is lane n of a counter (plain
#: keys and ``"<quantity>:lane<n>"`` keys); ``traffic:<n>`` is a whole n-lane counter (channel
#: keys ``"<quantity>:lane1"`` .. ``":lane<n>"``, plain keys = lane 1).
KINDS = (
    "air", "pm", "co2", "th", "gas", "traffic_lane:<n>", "traffic:<n>", "water", "energy_1p",
    "energy_3p",
)  # fmt: skip


def parse_kind(kind: str) -> tuple[str, int]:
    """Split ``traffic_lane:3`` into ("traffic_lane", 3); other kinds give (kind, 0).

    Raises ValueError naming the valid kinds.
    """
    base, _, arg = kind.partition(":")
    if base in ("traffic_lane", "traffic"):
        try:
            lane = int(arg)
        except ValueError:
            lane = 0
        if not 1 <= lane <= 99:
            raise ValueError(f"kind {kind!r}: write {base}:<n> with n in 1..99")
        return base, lane
    if arg or base not in KIND_QUANTITIES:
        raise ValueError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    return base, 0


def kind_quantities(kind: str) -> tuple[str, ...]:
    """The quantities a source of this kind returns."""
    return KIND_QUANTITIES[parse_kind(kind)[0]]


# --------------------------------------------------------------------------------------------
# City data table
# --------------------------------------------------------------------------------------------

Monthly = tuple[float, float, float, float, float, float, float, float, float, float, float, float]


@dataclass(frozen=True)
class CityProfile:
    """Signal parameters of one city. Monthly tuples run January..December."""

    locode: str
    name: str
    timezone: str
    #: PM2.5 scale (µg/m³); the month's typical level is pm25_base * pm25_monthly[m].
    pm25_base: float = 20.0
    pm25_monthly: Monthly = (1.3, 1.3, 1.2, 1.0, 0.8, 0.7, 0.7, 0.7, 0.8, 0.9, 1.1, 1.3)
    #: PM2.5 / PM10 mass ratio (fine fraction); smoke-dominated air is finer.
    pm_ratio: float = 0.65
    #: Transboundary haze episodes: months, chance per 4-day block, PM multiplier at the peak.
    haze_months: tuple[int, ...] = ()
    haze_prob: float = 0.0
    haze_factor: float = 1.0
    #: Monthly mean air temperature (°C) and mean daily range max-min (°C).
    temp_monthly: Monthly = (26.5, 27.5, 28.5, 29.5, 29.0, 28.5, 28.0, 28.0, 27.8, 27.5, 27.0, 26.3)
    temp_range: float = 8.0
    #: Monthly mean relative humidity (%).
    rh_monthly: Monthly = (72, 72, 72, 74, 77, 79, 80, 80, 82, 81, 77, 73)
    #: Weekday peak flow per lane (veh/h), free-flow speed (km/h), BPR alpha (TTI at
    #: peak ~ 1 + congestion), shift of the rush hours (h, negative = earlier).
    traffic_peak: float = 1100.0
    free_flow_kmh: float = 50.0
    congestion: float = 0.6
    rush_shift_h: float = 0.0
    #: Vehicle mix: share of motorcycles and of heavy vehicles (bus/lorry); rest are cars.
    share_motorcycle: float = 0.45
    share_heavy: float = 0.06
    #: Household water use (m³/day) and household electricity use (kWh/day, 1-phase meter).
    water_m3_day: float = 0.8
    energy_kwh_day: float = 8.0
    #: Commercial building on a 3-phase meter (kWh/day).
    energy3p_kwh_day: float = 450.0
    mains_v: float = 230.0
    mains_hz: float = 50.0
    source: str = "illustrative"


def _m(*v: float) -> Monthly:
    assert len(v) == 12
    return v  # type: ignore[return-value]


#: The regional default (a generic lowland South-East Asian city, tropical monsoon climate,
#: dry-season PM peak December-March). Used, with COUNTRY_DEFAULTS, for cities not listed.
REGIONAL_DEFAULT = CityProfile(locode="XXXXX", name="(regional default)", timezone="Asia/Bangkok")

#: Country-level adjustments for cities not in CITY_PROFILES: mains supply and vehicle mix.
COUNTRY_DEFAULTS: dict[str, dict[str, float | str]] = {
    "BN": {"timezone": "Asia/Brunei", "mains_v": 240.0, "share_motorcycle": 0.05},
    "KH": {"timezone": "Asia/Phnom_Penh", "share_motorcycle": 0.70},
    "ID": {"timezone": "Asia/Jakarta", "share_motorcycle": 0.75},
    "LA": {"timezone": "Asia/Vientiane", "share_motorcycle": 0.70},
    "MY": {"timezone": "Asia/Kuala_Lumpur", "mains_v": 240.0, "share_motorcycle": 0.25},
    "MM": {"timezone": "Asia/Yangon", "share_motorcycle": 0.55},
    "PH": {"timezone": "Asia/Manila", "mains_v": 220.0, "mains_hz": 60.0, "share_motorcycle": 0.40},
    "SG": {"timezone": "Asia/Singapore", "share_motorcycle": 0.15},
    "TH": {"timezone": "Asia/Bangkok", "share_motorcycle": 0.45},
    "VN": {"timezone": "Asia/Ho_Chi_Minh", "share_motorcycle": 0.85},
}

CITY_PROFILES: dict[str, CityProfile] = {
    p.locode: p
    for p in (
        CityProfile(
            "THBKK", "Bangkok", "Asia/Bangkok", pm25_base=22.0,
            pm25_monthly=_m(2.0, 1.8, 1.3, 0.9, 0.6, 0.5, 0.5, 0.5, 0.55, 0.7, 1.2, 1.7),
            temp_monthly=_m(27.0, 28.3, 29.5, 30.5, 30.0, 29.5, 29.0, 28.8, 28.3, 28.0, 27.5, 26.5),
            temp_range=8.0, rh_monthly=_m(67, 70, 70, 71, 75, 76, 77, 78, 81, 80, 73, 66),
            traffic_peak=1250, free_flow_kmh=45, congestion=1.0, share_motorcycle=0.45,
            water_m3_day=0.8, energy_kwh_day=9.0,
            source="PCD Air4Thai dry-season (Dec-Mar) PM2.5 episodes; levels illustrative",
        ),
        CityProfile(
            "THCNX", "Chiang Mai", "Asia/Bangkok", pm25_base=24.0,
            pm25_monthly=_m(1.6, 2.9, 5.2, 3.6, 1.0, 0.5, 0.45, 0.45, 0.5, 0.6, 0.9, 1.3),
            pm_ratio=0.8,
            temp_monthly=_m(21.5, 23.5, 27.0, 29.0, 28.5, 27.5, 27.0, 26.7, 26.5, 25.8, 24.0, 21.5),
            temp_range=11.0, rh_monthly=_m(65, 56, 52, 58, 70, 77, 79, 82, 82, 78, 74, 70),
            traffic_peak=950, free_flow_kmh=50, congestion=0.5, share_motorcycle=0.55,
            water_m3_day=0.7, energy_kwh_day=7.0,
            source="burning season mid-Jan to mid-Apr, daily means >100 µg/m³ in March "
            "(news reports citing Chiang Mai University / Air4Thai); levels illustrative",
        ),
        CityProfile(
            "VNHAN", "Hanoi", "Asia/Ho_Chi_Minh", pm25_base=38.0,
            pm25_monthly=_m(1.5, 1.2, 1.2, 0.9, 0.7, 0.55, 0.5, 0.5, 0.7, 1.1, 1.4, 1.6),
            temp_monthly=_m(16.5, 17.3, 20.0, 24.0, 27.7, 29.0, 29.2, 28.6, 27.5, 24.9, 21.5, 18.2),
            temp_range=6.0, rh_monthly=_m(78, 82, 85, 86, 80, 79, 80, 83, 80, 76, 75, 75),
            traffic_peak=1500, free_flow_kmh=40, congestion=0.9, share_motorcycle=0.85,
            share_heavy=0.04, water_m3_day=0.6, energy_kwh_day=7.0,
            source="winter (Oct-Mar) inversion-driven PM2.5 maxima; levels illustrative",
        ),
        CityProfile(
            "VNSGN", "Ho Chi Minh City", "Asia/Ho_Chi_Minh", pm25_base=22.0,
            pm25_monthly=_m(1.4, 1.4, 1.3, 1.1, 0.8, 0.7, 0.7, 0.7, 0.7, 0.8, 1.0, 1.3),
            temp_monthly=_m(26.0, 27.0, 28.0, 29.3, 28.8, 27.8, 27.5, 27.3, 27.0, 26.8, 26.7, 26.0),
            temp_range=8.0, rh_monthly=_m(72, 70, 70, 72, 79, 82, 83, 83, 85, 84, 80, 76),
            traffic_peak=1500, free_flow_kmh=40, congestion=0.9, rush_shift_h=-0.25,
            share_motorcycle=0.88, share_heavy=0.03, water_m3_day=0.65, energy_kwh_day=7.5,
        ),
        CityProfile(
            "IDJKT", "DKI Jakarta", "Asia/Jakarta", pm25_base=36.0,
            pm25_monthly=_m(0.7, 0.7, 0.8, 0.9, 1.1, 1.3, 1.35, 1.35, 1.2, 1.0, 0.8, 0.7),
            temp_monthly=_m(27.0, 27.0, 27.6, 28.0, 28.2, 27.9, 27.6, 28.0, 28.4, 28.5, 28.2, 27.7),
            temp_range=7.0, rh_monthly=_m(85, 85, 83, 82, 80, 78, 75, 73, 73, 75, 79, 82),
            traffic_peak=1400, free_flow_kmh=40, congestion=1.2, rush_shift_h=-0.75,
            share_motorcycle=0.75, share_heavy=0.05, water_m3_day=0.7, energy_kwh_day=5.5,
            mains_v=220.0,
            source="dry-season (Jun-Sep) PM2.5 maxima; levels illustrative",
        ),
        CityProfile(
            "SGSIN", "Singapore", "Asia/Singapore", pm25_base=14.0,
            pm25_monthly=_m(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 1.05, 0.95, 0.9),
            haze_months=(8, 9, 10), haze_prob=0.08, haze_factor=4.0,
            temp_monthly=_m(26.5, 27.1, 27.6, 28.0, 28.3, 28.3, 27.9, 27.9, 27.6, 27.6, 27.0, 26.4),
            temp_range=6.0, rh_monthly=_m(84, 80, 81, 83, 83, 81, 81, 81, 81, 83, 86, 86),
            traffic_peak=1600, free_flow_kmh=55, congestion=0.35, share_motorcycle=0.15,
            share_heavy=0.08, water_m3_day=0.55, energy_kwh_day=13.0,
            source="transboundary haze from Sumatra/Kalimantan fires, Aug-Oct in bad years; "
            "levels illustrative",
        ),
        CityProfile(
            "MYKUL", "Kuala Lumpur", "Asia/Kuala_Lumpur", pm25_base=18.0,
            pm25_monthly=_m(0.9, 0.9, 1.0, 0.9, 0.9, 1.0, 1.1, 1.15, 1.15, 1.0, 0.9, 0.85),
            haze_months=(7, 8, 9), haze_prob=0.07, haze_factor=3.5,
            temp_monthly=_m(27.2, 27.7, 28.1, 28.3, 28.4, 28.1, 27.7, 27.7, 27.5, 27.5, 27.2, 27.0),
            temp_range=8.0, rh_monthly=_m(80, 79, 81, 83, 82, 79, 78, 78, 80, 82, 84, 83),
            traffic_peak=1600, free_flow_kmh=55, congestion=0.8, share_motorcycle=0.25,
            water_m3_day=0.9, energy_kwh_day=9.0, mains_v=240.0,
        ),
        CityProfile(
            "PHMNL", "Manila", "Asia/Manila", pm25_base=18.0,
            pm25_monthly=_m(1.2, 1.2, 1.2, 1.15, 1.0, 0.85, 0.8, 0.8, 0.85, 0.95, 1.05, 1.15),
            temp_monthly=_m(26.6, 27.3, 28.5, 30.0, 30.3, 29.2, 28.2, 27.9, 27.9, 27.9, 27.6, 26.8),
            temp_range=7.0, rh_monthly=_m(73, 70, 67, 66, 71, 78, 82, 84, 83, 80, 78, 76),
            traffic_peak=1300, free_flow_kmh=40, congestion=1.2, rush_shift_h=-0.5,
            share_motorcycle=0.40, share_heavy=0.10, water_m3_day=0.7, energy_kwh_day=6.0,
            mains_v=220.0, mains_hz=60.0,
            source="Philippine mains 220 V / 60 Hz; PM levels illustrative",
        ),
        CityProfile(
            "KHPNH", "Phnom Penh", "Asia/Phnom_Penh", pm25_base=25.0,
            pm25_monthly=_m(1.6, 1.5, 1.3, 1.0, 0.7, 0.6, 0.55, 0.55, 0.6, 0.8, 1.2, 1.5),
            temp_monthly=_m(26.8, 28.0, 29.5, 30.5, 30.0, 29.5, 29.0, 29.0, 28.5, 28.0, 27.3, 26.5),
            temp_range=9.0, rh_monthly=_m(70, 69, 70, 72, 76, 78, 79, 80, 83, 82, 77, 72),
            traffic_peak=1100, free_flow_kmh=40, congestion=0.7, share_motorcycle=0.70,
            water_m3_day=0.6, energy_kwh_day=5.0,
        ),
        CityProfile(
            "LAVTE", "Vientiane", "Asia/Vientiane", pm25_base=20.0,
            pm25_monthly=_m(1.4, 2.0, 2.8, 2.0, 0.9, 0.5, 0.45, 0.45, 0.5, 0.7, 1.0, 1.2),
            pm_ratio=0.75,
            temp_monthly=_m(23.5, 25.7, 28.1, 29.5, 28.9, 28.6, 28.2, 27.7, 27.8, 27.2, 25.5, 23.5),
            temp_range=10.0, rh_monthly=_m(70, 68, 66, 70, 77, 81, 83, 85, 83, 78, 73, 71),
            traffic_peak=800, free_flow_kmh=45, congestion=0.4, share_motorcycle=0.70,
            water_m3_day=0.6, energy_kwh_day=5.5,
            source="regional biomass-burning season Feb-Apr; levels illustrative",
        ),
        CityProfile(
            "MMRGN", "Yangon", "Asia/Yangon", pm25_base=30.0,
            pm25_monthly=_m(1.6, 1.5, 1.3, 1.0, 0.7, 0.5, 0.45, 0.45, 0.5, 0.8, 1.2, 1.6),
            temp_monthly=_m(25.6, 27.0, 29.2, 30.8, 29.2, 27.5, 27.0, 26.9, 27.3, 27.8, 27.3, 25.6),
            temp_range=9.0, rh_monthly=_m(62, 64, 68, 70, 80, 88, 90, 90, 88, 84, 76, 68),
            traffic_peak=1100, free_flow_kmh=40, congestion=0.9,
            share_motorcycle=0.03, share_heavy=0.10, water_m3_day=0.5, energy_kwh_day=4.0,
            source="motorcycles banned in central Yangon; levels illustrative",
        ),
        CityProfile(
            "BNBWN", "Bandar Seri Begawan", "Asia/Brunei", pm25_base=8.0,
            pm25_monthly=_m(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.1, 1.1, 1.0, 1.0),
            haze_months=(8, 9, 10), haze_prob=0.06, haze_factor=4.0,
            temp_monthly=_m(26.8, 27.0, 27.5, 27.9, 28.0, 27.8, 27.5, 27.6, 27.5, 27.3, 27.1, 27.0),
            temp_range=7.0, rh_monthly=_m(84, 83, 82, 82, 82, 81, 80, 80, 81, 83, 85, 85),
            traffic_peak=900, free_flow_kmh=60, congestion=0.3, share_motorcycle=0.05,
            water_m3_day=1.0, energy_kwh_day=14.0, mains_v=240.0,
        ),
        CityProfile(
            "VNDAD", "Da Nang", "Asia/Ho_Chi_Minh", pm25_base=15.0,
            pm25_monthly=_m(1.4, 1.3, 1.2, 1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.9, 1.1, 1.3),
            temp_monthly=_m(21.8, 22.6, 24.2, 26.4, 28.3, 29.2, 29.1, 28.8, 27.2, 25.9, 24.7, 22.6),
            temp_range=6.0, rh_monthly=_m(85, 85, 85, 82, 78, 75, 74, 76, 82, 85, 86, 86),
            traffic_peak=900, free_flow_kmh=45, congestion=0.4, share_motorcycle=0.85,
            water_m3_day=0.6, energy_kwh_day=6.0,
        ),
    )
}  # fmt: skip


@cache
def _registry() -> dict[str, tuple[str, str, str]]:
    """locode -> (name, country, timezone) from gateway/schema/cities.csv, if available."""
    try:
        from gateway.schema.cities import load_cities

        return {c.locode: (c.name, c.country, c.timezone) for c in load_cities().values()}
    except Exception:  # registry absent or being edited: the built-in table still works
        return {}


@cache
def city_profile(locode: str) -> CityProfile:
    """Parameters for a city: the table entry, else the regional default for its country.

    Raises ValueError for a locode that is neither in the table, nor in cities.csv, nor of an
    ASEAN country.
    """
    code = locode.strip().upper()
    if code in CITY_PROFILES:
        return CITY_PROFILES[code]
    reg = _registry().get(code)
    country = reg[1] if reg else code[:2]
    if country not in COUNTRY_DEFAULTS:
        raise ValueError(
            f"unknown city {locode!r}: not in cities.csv and not an ASEAN UN/LOCODE "
            f"(known: {', '.join(sorted(CITY_PROFILES))}, ...)"
        )
    over = dict(COUNTRY_DEFAULTS[country])
    if reg:
        over["timezone"] = reg[2]
    return replace(
        REGIONAL_DEFAULT,
        locode=code,
        name=reg[0] if reg else code,
        source="regional default",
        **over,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# Deterministic noise
# --------------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_SQRT3 = math.sqrt(3.0)


def stream_key(*parts: object) -> int:
    """A 64-bit key for a named random stream (stable across runs and Python versions)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _mix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def uniform(key: int, i: int) -> float:
    """Uniform [0, 1) for element ``i`` of stream ``key``."""
    return (_mix(key ^ (i & _M64)) >> 11) * (1.0 / 9007199254740992.0)


def gauss(key: int, i: int) -> float:
    """Approximately standard normal (Irwin-Hall of four 16-bit uniforms)."""
    z = _mix(key ^ (i & _M64))
    s = (z & 0xFFFF) + ((z >> 16) & 0xFFFF) + ((z >> 32) & 0xFFFF) + (z >> 48)
    return (s * (1.0 / 65536.0) - 2.0) * _SQRT3


def smooth_noise(key: int, t: float, scale: float) -> float:
    """Autocorrelated noise: Gaussian values every ``scale`` seconds, smoothstep between."""
    x = t / scale
    i = math.floor(x)
    f = x - i
    f = f * f * (3.0 - 2.0 * f)
    a = gauss(key, i)
    return a + (gauss(key, i + 1) - a) * f


def _octaves(key: int, t: float, octaves: tuple[tuple[float, float], ...]) -> float:
    return sum(w * smooth_noise(key + k, t, s) for k, (s, w) in enumerate(octaves))


# --------------------------------------------------------------------------------------------
# Local time and shapes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalTime:
    hour: float  # fractional local hour 0..24
    weekday: int  # 0 = Monday
    month_pos: float  # fractional month index 0..12 (0 = 1 January)
    day: int  # local days since 1970-01-01
    sod: float  # local seconds of day


def local_time(t: float, zone: ZoneInfo) -> LocalTime:
    dt = datetime.fromtimestamp(t, zone)
    off = dt.utcoffset()
    ls = t + (off.total_seconds() if off else 0.0)
    day = math.floor(ls / 86400.0)
    sod = ls - day * 86400.0
    doy = dt.timetuple().tm_yday - 1 + sod / 86400.0
    year_len = 366.0 if (dt.year % 4 == 0 and dt.year % 100 != 0) or dt.year % 400 == 0 else 365.0
    return LocalTime(sod / 3600.0, dt.weekday(), doy / year_len * 12.0, day, sod)


def cyclic(values: tuple[float, ...], pos: float) -> float:
    """Linear interpolation in a cyclic table; value i sits at position i (+ 0.5 for months)."""
    n = len(values)
    i = math.floor(pos) % n
    f = pos - math.floor(pos)
    return values[i] + (values[(i + 1) % n] - values[i]) * f


def monthly(values: Monthly, lt: LocalTime) -> float:
    """A mid-month table value interpolated to the day."""
    return cyclic(values, lt.month_pos - 0.5)


# Diurnal PM multiplier (local hour): night inversion, morning rush, afternoon mixing.
PM_DIURNAL = (1.15, 1.15, 1.12, 1.10, 1.08, 1.10, 1.18, 1.28, 1.30, 1.15, 0.95, 0.82,
              0.75, 0.70, 0.68, 0.70, 0.78, 0.90, 1.05, 1.15, 1.20, 1.20, 1.18, 1.16)  # fmt: skip
# Traffic flow, fraction of the weekday peak, per local hour.
TRAFFIC_WEEKDAY = (0.10, 0.06, 0.05, 0.05, 0.08, 0.25, 0.60, 0.95, 1.00, 0.80, 0.65, 0.62,
                   0.65, 0.62, 0.63, 0.70, 0.85, 1.00, 0.95, 0.75, 0.55, 0.40, 0.28, 0.17)  # fmt: skip
TRAFFIC_SATURDAY = (0.15, 0.10, 0.07, 0.06, 0.07, 0.15, 0.28, 0.45, 0.60, 0.70, 0.75, 0.78,
                    0.78, 0.75, 0.73, 0.75, 0.80, 0.85, 0.85, 0.75, 0.65, 0.50, 0.35, 0.22)  # fmt: skip
# Household water use per local hour (relative): morning and evening peaks.
WATER_HOURLY = (0.010, 0.006, 0.005, 0.005, 0.010, 0.040, 0.085, 0.090, 0.070, 0.050, 0.045,
                0.045, 0.050, 0.040, 0.035, 0.035, 0.040, 0.055, 0.075, 0.080, 0.070, 0.050,
                0.030, 0.020)  # fmt: skip
# Household electricity per local hour: bedroom air-conditioning at night, evening peak.
HOUSE_HOURLY = (0.045, 0.042, 0.040, 0.038, 0.036, 0.035, 0.038, 0.040, 0.035, 0.030, 0.030,
                0.032, 0.035, 0.035, 0.035, 0.036, 0.040, 0.050, 0.060, 0.065, 0.065, 0.060,
                0.055, 0.050)  # fmt: skip
# Commercial building (3-phase) per local hour: opens 09-10, evening peak 18-21.
SHOP_HOURLY = (0.012, 0.011, 0.011, 0.011, 0.011, 0.012, 0.015, 0.025, 0.040, 0.055, 0.060,
               0.062, 0.064, 0.065, 0.065, 0.064, 0.063, 0.066, 0.070, 0.072, 0.068, 0.055,
               0.030, 0.018)  # fmt: skip


def temp_shape(hour: float) -> float:
    """-1 at 06:00 (minimum), +1 at 14:30 (maximum), cosine ramps between."""
    if 6.0 <= hour < 14.5:
        return -math.cos(math.pi * (hour - 6.0) / 8.5)
    return math.cos(math.pi * ((hour - 14.5) % 24.0) / 15.5)


def traffic_shape(lt: LocalTime, shift_h: float = 0.0) -> float:
    h = (lt.hour - shift_h) % 24.0
    if lt.weekday < 5:
        return cyclic(TRAFFIC_WEEKDAY, h)
    return cyclic(TRAFFIC_SATURDAY, h) * (1.0 if lt.weekday == 5 else 0.85)


# --------------------------------------------------------------------------------------------
# Faults and their log
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault (or meter event), as recorded in a :class:`FaultLog`."""

    t: float
    device_id: str
    kind: str  # stuck | drift | spike | outage | interruption | rollover | (MQTT: clock, duplicate)
    quantity: str
    detail: str = ""


class FaultLog:
    """Thread-safe append-only list of :class:`FaultEvent`; one may be shared by sources."""

    def __init__(self) -> None:
        self._events: list[FaultEvent] = []
        self._seen: set[tuple[object, ...]] = set()
        self._lock = threading.Lock()

    def record(self, event: FaultEvent, once_key: tuple[object, ...] | None = None) -> None:
        with self._lock:
            if once_key is not None:
                if once_key in self._seen:
                    return
                self._seen.add(once_key)
            self._events.append(event)

    @property
    def events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._events)

    def of_kind(self, kind: str) -> list[FaultEvent]:
        return [e for e in self.events if e.kind == kind]

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)


@dataclass(frozen=True)
class ValueFaults:
    """Value-level fault injection (all rates 0 = off). Seeded by the source's seed.

    - ``stuck_rate``: chance that a window of ``stuck_s`` seconds repeats its first value
      (flat-line), per quantity and window.
    - ``drift_rate``: chance that a window of ``drift_s`` drifts; the reading grows linearly
      to ``(1 + drift_frac)`` times the true value by the window's end.
    - ``spike_rate``: chance per sample (per whole second) of a reading ``spike_factor`` times
      the true value.
    - ``outage_rate`` (energy): chance per local day of a mains outage of up to
      ``outage_max_s`` seconds: voltage, current, power and frequency read 0, the register
      stops.
    - ``interruption_rate`` (water): chance per local day of a supply interruption of up
      to ``interruption_max_s`` seconds: flow 0, the register stops.
    - ``quantities``: restrict stuck/drift/spike to these quantities (default: all but the
      cumulative registers, which only ever see rollovers and outages).
    """

    stuck_rate: float = 0.0
    stuck_s: float = 3600.0
    drift_rate: float = 0.0
    drift_s: float = 86400.0
    drift_frac: float = 0.5
    spike_rate: float = 0.0
    spike_factor: float = 8.0
    outage_rate: float = 0.0
    outage_max_s: float = 4 * 3600.0
    interruption_rate: float = 0.0
    interruption_max_s: float = 8 * 3600.0
    quantities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("stuck_rate", "drift_rate", "spike_rate", "outage_rate", "interruption_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {v}")
        for name in ("stuck_s", "drift_s", "outage_max_s", "interruption_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    @property
    def any_value_faults(self) -> bool:
        return self.stuck_rate > 0 or self.drift_rate > 0 or self.spike_rate > 0


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------

#: Reference day for cumulative registers: local 2024-01-01 (registers start at
#: ``initial_register`` there and are integrated forwards or backwards from it).
_DAY0 = 19723


@dataclass
class _Meter:
    """Closed-form integral of an hourly consumption profile (water m³ or energy kWh)."""

    daily: Callable[[int], float]  # local day -> consumption that day (no outage)
    hourly: tuple[float, ...]
    key: int
    hour_sigma: float
    gap_rate: float
    gap_max_s: float
    gap_key: int
    _days: dict[int, tuple[list[float], tuple[float, float] | None]] = field(default_factory=dict)
    _prefix: dict[int, float] = field(default_factory=dict)

    def gap(self, day: int) -> tuple[float, float] | None:
        """Outage/interruption window (local seconds of day) on ``day``, if any."""
        if self.gap_rate <= 0 or uniform(self.gap_key, day) >= self.gap_rate:
            return None
        start = uniform(self.gap_key + 1, day) * 86400.0
        dur = 600.0 + uniform(self.gap_key + 2, day) * max(0.0, self.gap_max_s - 600.0)
        return start, min(86400.0, start + dur)

    def day(self, day: int) -> tuple[list[float], tuple[float, float] | None]:
        """Hourly amounts of a day (before removing the gap) and its gap."""
        got = self._days.get(day)
        if got is None:
            w = [
                self.hourly[h] * math.exp(self.hour_sigma * gauss(self.key, day * 24 + h))
                for h in range(24)
            ]
            total = sum(w)
            d = self.daily(day)
            got = ([d * x / total for x in w], self.gap(day))
            if len(self._days) > 64:
                self._days.clear()
            self._days[day] = got
        return got

    def integral(self, day: int, upto: float) -> float:
        """Consumption on ``day`` from local midnight to ``upto`` seconds, net of the gap."""
        amounts, gap = self.day(day)
        total = 0.0
        for h in range(24):
            a = h * 3600.0
            if a >= upto:
                break
            b = min(a + 3600.0, upto)
            length = b - a
            if gap is not None:
                length -= max(0.0, min(b, gap[1]) - max(a, gap[0]))
            total += amounts[h] * length / 3600.0
        return total

    def day_total(self, day: int) -> float:
        if self.gap(day) is None:
            return self.daily(day)
        return self.integral(day, 86400.0)

    def before(self, day: int) -> float:
        """Consumption from _DAY0 to the start of ``day`` (negative before _DAY0)."""
        prefix = self._prefix
        if not prefix:
            prefix[_DAY0] = 0.0
        got = prefix.get(day)
        if got is not None:
            return got
        hi = max(prefix)
        lo = min(prefix)
        if day > hi:
            acc = prefix[hi]
            for d in range(hi, day):
                acc += self.day_total(d)
                prefix[d + 1] = acc
        else:
            acc = prefix[lo]
            for d in range(lo - 1, day - 1, -1):
                acc -= self.day_total(d)
                prefix[d] = acc
        return prefix[day]

    def cumulative(self, lt: LocalTime) -> float:
        return self.before(lt.day) + self.integral(lt.day, lt.sod)

    def rate(self, lt: LocalTime) -> float:
        """Consumption per hour at this moment (0 inside the gap)."""
        amounts, gap = self.day(lt.day)
        if gap is not None and gap[0] <= lt.sod < gap[1]:
            return 0.0
        return amounts[min(23, int(lt.hour))]

    def in_gap(self, lt: LocalTime) -> tuple[float, float] | None:
        gap = self.day(lt.day)[1]
        return gap if gap is not None and gap[0] <= lt.sod < gap[1] else None


class ProfileSource:
    """A deterministic :data:`ValueSource` for one simulated device. Build with make_source."""

    def __init__(
        self,
        profile: CityProfile,
        kind: str,
        device_id: str,
        seed: int,
        faults: ValueFaults | None = None,
        *,
        interval_s: float = 60.0,
        rollover: float | None = None,
        initial_register: float | None = None,
        log: FaultLog | None = None,
    ) -> None:
        self.base_kind, self.lane = parse_kind(kind)
        self.kind = kind
        self.profile = profile
        self.city = profile.locode
        self.device_id = device_id
        self.seed = seed
        self.faults = faults
        self.interval_s = float(interval_s)
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if rollover is not None and rollover <= 0:
            raise ValueError("rollover must be > 0")
        self.rollover = rollover
        self.log = log if log is not None else FaultLog()
        self.quantities = KIND_QUANTITIES[self.base_kind]
        self.zone = ZoneInfo(profile.timezone)
        self._city_key = stream_key("kota-sim", seed, profile.locode)
        self._dev_key = stream_key("kota-sim", seed, profile.locode, device_id, kind)
        self._lock = threading.Lock()
        self._last_wraps: int | None = None
        self._meter: _Meter | None = None
        fr = faults or ValueFaults()
        if self.base_kind == "water":
            self._meter = self._make_meter(
                lambda day: profile.water_m3_day * self._day_factor(day, 0.15, 1.1),
                WATER_HOURLY, 0.25, fr.interruption_rate, fr.interruption_max_s,
            )  # fmt: skip
            default_reg = 50.0 + uniform(self._dev_key, -1) * 800.0
        elif self.base_kind in ("energy_1p", "energy_3p"):
            three = self.base_kind == "energy_3p"
            kwh = profile.energy3p_kwh_day if three else profile.energy_kwh_day
            weekend = 0.6 if three else 1.1
            self._meter = self._make_meter(
                lambda day: kwh * self._day_factor(day, 0.10, weekend) * self._heat_factor(day),
                SHOP_HOURLY if three else HOUSE_HOURLY, 0.15, fr.outage_rate, fr.outage_max_s,
            )  # fmt: skip
            default_reg = (20000.0 if three else 1000.0) + uniform(self._dev_key, -1) * 5000.0
        else:
            default_reg = 0.0
        if initial_register is None:
            initial_register = default_reg % rollover if rollover else default_reg
        self.initial_register = float(initial_register)

    # -- helpers ------------------------------------------------------------------------------

    def _make_meter(
        self,
        daily: Callable[[int], float],
        hourly: tuple[float, ...],
        sigma: float,
        gap_rate: float,
        gap_max: float,
    ) -> _Meter:
        return _Meter(daily, hourly, self._dev_key ^ 0x5EED, sigma, gap_rate, gap_max,
                      self._dev_key ^ 0x6A9)  # fmt: skip

    def _day_factor(self, day: int, sigma: float, weekend: float) -> float:
        wd = (day + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
        f = math.exp(sigma * gauss(self._dev_key ^ 0xDA1, day))
        return f * (weekend if wd >= 5 else 1.0)

    def _heat_factor(self, day: int) -> float:
        """More air-conditioning in hotter months."""
        p = self.profile
        lt = local_time(day * 86400.0 + 43200.0 - self._utc_offset(), self.zone)
        mean = sum(p.temp_monthly) / 12.0
        return max(0.6, 1.0 + 0.08 * (monthly(p.temp_monthly, lt) - mean))

    def _utc_offset(self) -> float:
        off = datetime.fromtimestamp(0, self.zone).utcoffset()
        return off.total_seconds() if off else 0.0

    # -- signals ------------------------------------------------------------------------------

    def _pm25(self, t: float, lt: LocalTime) -> float:
        p = self.profile
        level = p.pm25_base * monthly(p.pm25_monthly, lt) * cyclic(PM_DIURNAL, lt.hour)
        if lt.weekday == 6:
            level *= 0.92
        if p.haze_months:
            level *= 1.0 + self._haze(t)
        regional = _octaves(self._city_key ^ 0xA1, t, ((3 * 3600.0, 0.15), (86400.0, 0.25),
                                                       (5 * 86400.0, 0.35)))  # fmt: skip
        local = _octaves(self._dev_key ^ 0xA2, t, ((600.0, 0.08), (2 * 3600.0, 0.08)))
        return level * math.exp(regional + local)

    def _haze(self, t: float) -> float:
        """Haze episode strength (0 = none), smooth over 4-day blocks, same city-wide."""
        p = self.profile
        x = t / (4 * 86400.0)
        i = math.floor(x)
        f = x - i
        f = f * f * (3.0 - 2.0 * f)

        def strength(block: int) -> float:
            mid = local_time((block + 0.5) * 4 * 86400.0, self.zone)
            month = int(mid.month_pos) + 1
            if month in p.haze_months and uniform(self._city_key ^ 0x4A2E, block) < p.haze_prob:
                return (p.haze_factor - 1.0) * (0.6 + 0.4 * uniform(self._city_key ^ 0x4A2F, block))
            return 0.0

        a = strength(i)
        return a + (strength(i + 1) - a) * f

    def _pm(self, t: float, lt: LocalTime) -> dict[str, float]:
        pm25 = self._pm25(t, lt)
        k = self._dev_key
        pm1 = pm25 * 0.72 * math.exp(0.04 * smooth_noise(k ^ 0xB1, t, 900.0))
        pm10 = pm25 / self.profile.pm_ratio * math.exp(0.08 * smooth_noise(k ^ 0xB2, t, 1800.0))
        out = {"pm1": pm1, "pm2_5": pm25, "pm10": pm10}
        for q in ("pm1", "pm2_5", "pm10"):
            atm = out[q]
            # Plantower CF=1 equals ATM at low levels and ~1.5x it above ~100 µg/m³.
            out[q + "_cf1"] = atm if atm <= 30.0 else 30.0 + (atm - 30.0) * 1.5
        n03 = 175.0 * out["pm2_5_cf1"] * math.exp(0.05 * smooth_noise(k ^ 0xB3, t, 600.0))
        n05 = n03 * 0.29
        n10 = n05 * 0.17
        n25 = min(n10, 0.05 * n10 + 0.8 * max(0.0, out["pm10_cf1"] - out["pm2_5_cf1"]))
        n50 = n25 * 0.3
        n100 = n50 * 0.3
        for q, v in (
            ("particles_0_3", n03),
            ("particles_0_5", n05),
            ("particles_1_0", n10),
            ("particles_2_5", n25),
            ("particles_5_0", n50),
            ("particles_10", n100),
        ):
            out[q] = float(round(v))  # fmt: skip
        return out

    def _th(self, t: float, lt: LocalTime) -> dict[str, float]:
        p = self.profile
        shape = temp_shape(lt.hour)
        half = p.temp_range / 2.0
        temp = (
            monthly(p.temp_monthly, lt)
            + half * shape
            + 1.0 * smooth_noise(self._city_key ^ 0xC1, t, 86400.0)
            + 0.2 * smooth_noise(self._dev_key ^ 0xC2, t, 3600.0)
        )
        rh = (
            monthly(p.rh_monthly, lt)
            - 3.0 * half * shape
            + 4.0 * smooth_noise(self._city_key ^ 0xC3, t, 86400.0)
            + 1.0 * smooth_noise(self._dev_key ^ 0xC4, t, 3600.0)
        )
        return {"temperature": temp, "relative_humidity": min(100.0, max(15.0, rh))}

    def _co2_outdoor(self, t: float, lt: LocalTime) -> float:
        return (
            425.0
            + 35.0 * traffic_shape(lt, self.profile.rush_shift_h)
            + 25.0 * (cyclic(PM_DIURNAL, lt.hour) - 1.0)
            + 8.0 * smooth_noise(self._dev_key ^ 0xD1, t, 1800.0)
        )

    def _co2_indoor(self, t: float, lt: LocalTime) -> float:
        occupied = 0.0
        if lt.weekday < 5:
            h = lt.hour
            if 8.0 <= h < 18.0:
                occupied = min(1.0, (h - 8.0) / 1.5) * (0.6 if 12.0 <= h < 13.0 else 1.0)
            elif 18.0 <= h < 20.0:
                occupied = max(0.0, 1.0 - (h - 18.0) / 2.0) * 0.5
        noise = 40.0 * smooth_noise(self._dev_key ^ 0xD2, t, 1200.0)
        return max(400.0, 440.0 + 650.0 * occupied + noise)

    def _gas(self, t: float, lt: LocalTime) -> dict[str, float]:
        p = self.profile
        season = monthly(p.pm25_monthly, lt) ** 0.4
        traffic = traffic_shape(lt, p.rush_shift_h)
        k = self._dev_key
        n = smooth_noise
        no2 = (10.0 + 0.9 * p.pm25_base * traffic) * season * math.exp(0.25 * n(k ^ 0xE1, t, 7200))
        sun = max(0.0, math.sin(math.pi * (lt.hour - 6.5) / 12.0))
        o3 = max(
            2.0, (20.0 + 90.0 * sun * season - 0.3 * no2) * math.exp(0.2 * n(k ^ 0xE2, t, 7200))
        )
        so2 = 6.0 * season * math.exp(0.3 * n(k ^ 0xE3, t, 10800))
        co = (0.35 + 0.9 * traffic) * season * math.exp(0.2 * n(k ^ 0xE4, t, 3600))
        return {"no2": no2, "o3": o3, "so2": so2, "co": co}

    def _traffic(self, t: float, lt: LocalTime) -> dict[str, float]:
        if self.base_kind == "traffic_lane":
            one = self._lane(t, lt, self.lane)
            return {**one, **{f"{q}:lane{self.lane}": v for q, v in one.items()}}
        out: dict[str, float] = {}
        for lane in range(1, self.lane + 1):
            one = self._lane(t, lt, lane)
            if lane == 1:
                out.update(one)
            out.update({f"{q}:lane{lane}": v for q, v in one.items()})
        return out

    def _lane(self, t: float, lt: LocalTime, lane: int) -> dict[str, float]:
        p = self.profile
        k = self._dev_key if self.base_kind == "traffic_lane" else self._dev_key ^ (lane * 0x1F1F)
        bucket = math.floor(t / self.interval_s)
        lane_factor = 1.0 / (1.0 + 0.12 * (lane - 1))
        day_noise = math.exp(0.08 * gauss(k ^ 0xF0, lt.day))
        rate = p.traffic_peak * traffic_shape(lt, p.rush_shift_h) * lane_factor * day_noise
        rate *= math.exp(0.10 * smooth_noise(k ^ 0xF1, t, 900.0))
        expected = rate * self.interval_s / 3600.0
        count = max(0, round(expected + math.sqrt(expected) * gauss(k ^ 0xF2, bucket)))
        # Truck bans in daytime (Bangkok, Manila, ...): heavy share doubles at night.
        night = lt.hour < 5.0 or lt.hour >= 22.0
        sh = p.share_heavy * (2.0 if night else 1.0)
        sm = p.share_motorcycle * (1.0 - 0.05 * (lane - 1))
        moto = round(count * sm + math.sqrt(count * sm * (1 - sm)) * gauss(k ^ 0xF3, bucket))
        moto = min(count, max(0, moto))
        heavy = round(count * sh + math.sqrt(count * sh * (1 - sh)) * gauss(k ^ 0xF4, bucket))
        heavy = min(count - moto, max(0, heavy))
        car = count - moto - heavy
        capacity = p.traffic_peak * lane_factor
        x = rate / capacity
        speed = p.free_flow_kmh / (1.0 + p.congestion * x**4)
        speed *= math.exp(0.05 * gauss(k ^ 0xF5, bucket))
        length_m = 2.0 + (sm * 2.5 + sh * 12.0 + (1 - sm - sh) * 5.0)
        occupancy = min(98.0, rate * length_m / (speed * 1000.0) * 100.0)
        return {
            "vehicle_count": float(count),
            "vehicle_count_motorcycle": float(moto),
            "vehicle_count_car": float(car),
            "vehicle_count_heavy": float(heavy),
            "vehicle_speed": speed,
            "lane_occupancy": occupancy,
        }

    def _register(self, t: float, lt: LocalTime, q: str) -> float:
        assert self._meter is not None
        unwrapped = self.initial_register + self._meter.cumulative(lt)
        if not self.rollover:
            return unwrapped
        wraps = math.floor(unwrapped / self.rollover)
        with self._lock:
            last = self._last_wraps
            self._last_wraps = wraps
        if last is not None and wraps > last:
            self.log.record(
                FaultEvent(
                    t, self.device_id, "rollover", q, f"register wrapped at {self.rollover}"
                ),
                once_key=(self.device_id, "rollover", q, wraps),
            )
        return unwrapped - wraps * self.rollover

    def _water(self, t: float, lt: LocalTime) -> dict[str, float]:
        assert self._meter is not None
        gap = self._meter.in_gap(lt)
        if gap is not None:
            self.log.record(
                FaultEvent(t, self.device_id, "interruption", "water_flow",
                           f"supply interrupted {gap[1] - gap[0]:.0f} s"),
                once_key=(self.device_id, "interruption", lt.day),
            )  # fmt: skip
        flow = self._meter.rate(lt) * math.exp(0.03 * gauss(self._dev_key ^ 0x77, math.floor(t)))
        return {"water_volume": self._register(t, lt, "water_volume"), "water_flow": flow}

    def _energy(self, t: float, lt: LocalTime) -> dict[str, float]:
        assert self._meter is not None
        p = self.profile
        k = self._dev_key
        reg = self._register(t, lt, "active_energy_import")
        gap = self._meter.in_gap(lt)
        if gap is not None:
            self.log.record(
                FaultEvent(t, self.device_id, "outage", "voltage",
                           f"mains outage {gap[1] - gap[0]:.0f} s"),
                once_key=(self.device_id, "outage", lt.day),
            )  # fmt: skip
            dead = {"active_energy_import": reg, "active_power": 0.0, "voltage": 0.0,
                    "current": 0.0, "frequency": 0.0}  # fmt: skip
            if self.base_kind == "energy_3p":
                for i in (1, 2, 3):
                    dead.update({f"voltage:L{i}": 0.0, f"current:L{i}": 0.0,
                                 f"active_power:L{i}": 0.0})  # fmt: skip
            return dead
        three = self.base_kind == "energy_3p"
        watts = self._meter.rate(lt) * 1000.0 * math.exp(0.05 * smooth_noise(k ^ 0x91, t, 120.0))
        load = cyclic(HOUSE_HOURLY, lt.hour) / (1.0 / 24.0) - 1.0  # >0 in the evening peak
        volts = p.mains_v * (
            1.0
            + 0.015 * smooth_noise(self._city_key ^ 0x92, t, 6 * 3600.0)
            - 0.02 * load
            + 0.003 * smooth_noise(k ^ 0x93, t, 60.0)
        )
        pf = 0.90 if three else 0.92
        hz = p.mains_hz + 0.03 * smooth_noise(self._city_key ^ 0x94, t, 30.0)
        if not three:
            return {"active_energy_import": reg, "active_power": watts, "voltage": volts,
                    "current": watts / (volts * pf), "frequency": hz}  # fmt: skip
        # Three phases: per-phase keys "<quantity>:L1".."L3" (unbalanced load), plain keys are
        # the total power and the mean phase voltage/current.
        out = {"active_energy_import": reg, "active_power": watts, "frequency": hz}
        vs, cs = [], []
        for i, share in enumerate((0.36, 0.33, 0.31), start=1):
            v = volts * (1.0 + 0.004 * smooth_noise(k ^ (0x95 + i), t, 300.0))
            pw = watts * share
            out[f"voltage:L{i}"] = v
            out[f"active_power:L{i}"] = pw
            out[f"current:L{i}"] = pw / (v * pf)
            vs.append(v)
            cs.append(pw / (v * pf))
        out["voltage"] = sum(vs) / 3.0
        out["current"] = sum(cs) / 3.0
        return out

    def base_values(self, t: float) -> dict[str, float]:
        """Readings at ``t`` before value faults."""
        lt = local_time(t, self.zone)
        kind = self.base_kind
        if kind == "pm":
            return self._pm(t, lt)
        if kind == "th":
            return self._th(t, lt)
        if kind == "co2":
            return {"co2": self._co2_indoor(t, lt), **self._th(t, lt)}
        if kind == "gas":
            return self._gas(t, lt)
        if kind == "air":
            return {**self._pm(t, lt), **self._th(t, lt), "co2": self._co2_outdoor(t, lt),
                    **self._gas(t, lt)}  # fmt: skip
        if kind in ("traffic_lane", "traffic"):
            return self._traffic(t, lt)
        if kind == "water":
            return self._water(t, lt)
        return self._energy(t, lt)

    def _apply_faults(self, t: float, values: dict[str, float]) -> dict[str, float]:
        f = self.faults
        assert f is not None
        targets = f.quantities if f.quantities is not None else values.keys()
        for q in [q for q in targets if q in values and q not in CUMULATIVE]:
            qk = self._dev_key ^ stream_key(q)
            if f.stuck_rate > 0:
                b = math.floor(t / f.stuck_s)
                if uniform(qk ^ 0x57C, b) < f.stuck_rate:
                    t0 = b * f.stuck_s
                    values[q] = self.base_values(t0)[q]
                    self.log.record(
                        FaultEvent(t, self.device_id, "stuck", q,
                                   f"flat-lined {t0:.0f}..{t0 + f.stuck_s:.0f}"),
                        once_key=(self.device_id, "stuck", q, b),
                    )  # fmt: skip
                    continue
            if f.drift_rate > 0:
                b = math.floor(t / f.drift_s)
                if uniform(qk ^ 0xD21, b) < f.drift_rate:
                    progress = (t - b * f.drift_s) / f.drift_s
                    values[q] *= 1.0 + f.drift_frac * progress
                    self.log.record(
                        FaultEvent(t, self.device_id, "drift", q,
                                   f"drifting to x{1 + f.drift_frac:g} over {f.drift_s:.0f} s"),
                        once_key=(self.device_id, "drift", q, b),
                    )  # fmt: skip
            if f.spike_rate > 0 and uniform(qk ^ 0x5B1, math.floor(t)) < f.spike_rate:
                v = values[q]
                values[q] = v * f.spike_factor if v else f.spike_factor
                self.log.record(
                    FaultEvent(t, self.device_id, "spike", q, f"{v:.3g} -> {values[q]:.3g}"),
                    once_key=(self.device_id, "spike", q, math.floor(t)),
                )
        return values

    def __call__(self, t: float) -> dict[str, float]:
        values = self.base_values(t)
        if self.faults is not None and self.faults.any_value_faults:
            values = self._apply_faults(t, values)
        return values

    def __repr__(self) -> str:
        return f"ProfileSource({self.city!r}, {self.kind!r}, {self.device_id!r}, seed={self.seed})"


def make_source(
    city: str,
    kind: str,
    device_id: str,
    seed: int,
    faults: ValueFaults | None = None,
    *,
    interval_s: float = 60.0,
    rollover: float | None = None,
    initial_register: float | None = None,
    log: FaultLog | None = None,
) -> ProfileSource:
    """Build the value source of one simulated device.

    - ``city``: UN/LOCODE (e.g. "THBKK"); cities not in :data:`CITY_PROFILES` use the
      regional default with their country's mains/traffic mix and cities.csv time zone.
    - ``kind``: one of :data:`KINDS` (``traffic_lane:<n>`` = lane n of a counter).
    - ``faults``: value-level faults, outages and interruptions (None = a healthy device).
    - ``interval_s``: reporting interval of traffic counts (vehicles per interval).
    - ``rollover``: register wrap value for meters (e.g. 99999.9 kWh); wraps are logged.
    - ``initial_register``: meter register at local 2024-01-01 00:00 (default: seeded).
    - ``log``: a :class:`FaultLog` to share between sources (default: a new one, ``.log``).

    The same (seed, city, kind, device_id, t) always gives the same values.
    """
    return ProfileSource(
        city_profile(city), kind, device_id, seed, faults,
        interval_s=interval_s, rollover=rollover, initial_register=initial_register, log=log,
    )  # fmt: skip
