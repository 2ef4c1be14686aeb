"""City signal profiles, clocks and backfill: determinism and the expected shapes over a year."""

from __future__ import annotations

import itertools
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from firmware_sim.backfill import default_device_id, generate
from firmware_sim.clock import Clock, RealClock, VirtualClock
from firmware_sim.profiles import (
    CITY_PROFILES,
    KIND_QUANTITIES,
    FaultLog,
    ValueFaults,
    city_profile,
    kind_quantities,
    make_source,
)
from gateway.schema.quantities import QUANTITIES

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
T1 = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
ALL_KINDS = ["air", "pm", "co2", "th", "gas", "traffic_lane:2", "traffic:3", "water",
             "energy_1p", "energy_3p"]  # fmt: skip


@pytest.fixture(scope="module")
def cnx_year() -> list[tuple[float, str, dict[str, float]]]:
    """One simulated year of hourly values for Chiang Mai, every main kind."""
    kinds = ["air", "traffic_lane:1", "water", "energy_1p", "energy_3p"]
    start = time.perf_counter()
    rows = list(generate("THCNX", kinds, T0, T1, 3600.0, seed=7))
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"a year of hourly values took {elapsed:.1f} s"
    assert len(rows) == 8760 * len(kinds)
    return rows


def _by_device(rows, suffix):
    return [(t, v) for t, d, v in rows if d.endswith(suffix)]


# -- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_same_values(kind: str) -> None:
    a = make_source("THBKK", kind, "dev-1", seed=3)
    b = make_source("THBKK", kind, "dev-1", seed=3)
    times = [T0 + i * 977.0 for i in range(50)]
    # evaluation order does not matter: b is queried backwards
    va = [a(t) for t in times]
    vb = [b(t) for t in reversed(times)][::-1]
    assert va == vb


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_different_seed_or_device_different_values(kind: str) -> None:
    times = [T0 + 40 * 86400 + i * 3600.0 for i in range(24)]
    a = [make_source("THBKK", kind, "dev-1", seed=3)(t) for t in times]
    b = [make_source("THBKK", kind, "dev-1", seed=4)(t) for t in times]
    c = [make_source("THBKK", kind, "dev-2", seed=3)(t) for t in times]
    assert a != b
    assert a != c


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_quantities_are_known_and_in_range(kind: str) -> None:
    src = make_source("VNHAN", kind, "dev", seed=1)
    for i in range(0, 24 * 30, 5):
        values = src(T0 + i * 3600.0)
        for key, v in values.items():
            q = key.partition(":")[0]
            assert q in QUANTITIES, key
            assert QUANTITIES[q].min <= v <= QUANTITIES[q].max, (key, v)
        assert set(kind_quantities(kind)) <= set(values)


def test_every_table_city_and_a_regional_default_city() -> None:
    for code in CITY_PROFILES:
        assert make_source(code, "air", "d", 1)(T0)["pm2_5"] > 0
    # Khon Kaen is in cities.csv but not in the table: regional default, its own zone.
    p = city_profile("THKKC")
    assert p.source == "regional default" and p.timezone == "Asia/Bangkok"
    assert city_profile("PHDVO").mains_hz == 60.0  # country default: Philippines 60 Hz
    with pytest.raises(ValueError, match="unknown city"):
        city_profile("FRPAR")
    with pytest.raises(ValueError, match="unknown kind"):
        make_source("THBKK", "pms9000", "d", 1)
    with pytest.raises(ValueError):
        make_source("THBKK", "traffic_lane:0", "d", 1)


def test_sources_share_city_weather_but_not_device_noise() -> None:
    a = make_source("THBKK", "pm", "a", seed=1)
    b = make_source("THBKK", "pm", "b", seed=1)
    xs = [T0 + i * 3600.0 for i in range(24 * 60)]
    pa = [a(t)["pm2_5"] for t in xs]
    pb = [b(t)["pm2_5"] for t in xs]
    assert pa != pb
    assert statistics.correlation(pa, pb) > 0.8  # one city, one regional PM signal


# -- the shapes of a simulated year -----------------------------------------------------------


def test_chiang_mai_burning_season(cnx_year) -> None:
    zone = ZoneInfo("Asia/Bangkok")
    by_month: dict[int, list[float]] = defaultdict(list)
    daily: dict[tuple[int, int], list[float]] = defaultdict(list)
    for t, v in _by_device(cnx_year, "-air"):
        local = datetime.fromtimestamp(t, zone)
        by_month[local.month].append(v["pm2_5"])
        daily[(local.month, local.day)].append(v["pm2_5"])
    march, august = statistics.mean(by_month[3]), statistics.mean(by_month[8])
    assert march > 2 * august
    assert march > 80
    over_100 = [k for k, vals in daily.items() if statistics.mean(vals) > 100]
    assert over_100 and all(m in (1, 2, 3, 4, 5) for m, _ in over_100)  # Jan-May only


def test_particle_counts_consistent_with_mass(cnx_year) -> None:
    for _, v in _by_device(cnx_year, "-air")[::97]:
        counts = [v[q] for q in ("particles_0_3", "particles_0_5", "particles_1_0",
                                 "particles_2_5", "particles_5_0", "particles_10")]  # fmt: skip
        assert counts == sorted(counts, reverse=True)
        assert v["pm1"] <= v["pm2_5"] <= v["pm10"]
        assert v["pm2_5_cf1"] >= v["pm2_5"]


def test_weekday_rush_hour_traffic(cnx_year) -> None:
    zone = ZoneInfo("Asia/Bangkok")
    counts: dict[int, list[float]] = defaultdict(list)
    speeds: dict[int, list[float]] = defaultdict(list)
    weekend8: list[float] = []
    for t, v in _by_device(cnx_year, "-traffic_lane-1"):
        local = datetime.fromtimestamp(t, zone)
        assert (
            v["vehicle_count_motorcycle"] + v["vehicle_count_car"] + v["vehicle_count_heavy"]
            == v["vehicle_count"]
        )
        if local.weekday() < 5:
            counts[local.hour].append(v["vehicle_count"])
            speeds[local.hour].append(v["vehicle_speed"])
        elif local.hour == 8:
            weekend8.append(v["vehicle_count"])
    c8, c3 = statistics.mean(counts[8]), statistics.mean(counts[3])
    assert c8 > 3 * c3
    assert statistics.mean(weekend8) < c8
    # speed falls when volume is high: Travel Time Index = free-flow speed / peak speed > 1
    tti = statistics.mean(speeds[3]) / statistics.mean(speeds[8])
    assert tti > 1.2


def test_motorcycles_dominate_in_vietnam_not_in_yangon() -> None:
    def share(city: str) -> float:
        src = make_source(city, "traffic_lane:1", "c", seed=1, interval_s=900)
        vals = [src(T0 + i * 900.0) for i in range(96 * 7)]
        total = sum(v["vehicle_count"] for v in vals)
        return sum(v["vehicle_count_motorcycle"] for v in vals) / total

    assert share("VNHAN") > 0.75
    assert share("IDJKT") > 0.6
    assert share("MMRGN") < 0.1


def test_daily_temperature_max_in_the_afternoon(cnx_year) -> None:
    zone = ZoneInfo("Asia/Bangkok")
    days: dict[tuple[int, int], list[tuple[float, int]]] = defaultdict(list)
    for t, v in _by_device(cnx_year, "-air"):
        local = datetime.fromtimestamp(t, zone)
        days[(local.month, local.day)].append((v["temperature"], local.hour))
    max_hours = [max(vals)[1] for vals in days.values() if len(vals) == 24]
    afternoon = sum(12 <= h <= 17 for h in max_hours)
    assert afternoon >= 0.9 * len(max_hours)
    min_hours = [min(vals)[1] for vals in days.values() if len(vals) == 24]
    assert sum(3 <= h <= 8 for h in min_hours) >= 0.8 * len(min_hours)


def test_meter_totals_never_decrease(cnx_year) -> None:
    for suffix, q in (("-water", "water_volume"), ("-energy_1p", "active_energy_import"),
                      ("-energy_3p", "active_energy_import")):  # fmt: skip
        series = [v[q] for _, v in _by_device(cnx_year, suffix)]
        assert all(b >= a for a, b in itertools.pairwise(series)), suffix
        assert series[-1] > series[0]


def test_flow_matches_the_register() -> None:
    src = make_source("THBKK", "water", "w", seed=5)
    step = 60.0
    xs = [T0 + i * step for i in range(24 * 60)]
    vals = [src(t) for t in xs]
    integrated = sum(v["water_flow"] * step / 3600.0 for v in vals[:-1])
    delta = vals[-1]["water_volume"] - vals[0]["water_volume"]
    assert delta == pytest.approx(integrated, rel=0.05)
    assert 0.2 < delta < 3.0  # a household day, m³


def test_energy_daily_profile_and_mains() -> None:
    bkk = make_source("THBKK", "energy_1p", "m", seed=2)
    mnl = make_source("PHMNL", "energy_1p", "m", seed=2)
    v = bkk(T0 + 3600 * 12)
    assert 215 < v["voltage"] < 245 and 49.8 < v["frequency"] < 50.2
    assert v["current"] == pytest.approx(v["active_power"] / (v["voltage"] * 0.92))
    w = mnl(T0 + 3600 * 12)
    assert 205 < w["voltage"] < 235 and 59.8 < w["frequency"] < 60.2
    # evening peak (19:00-21:00 local) above the 09:00-11:00 trough, over a month
    zone = ZoneInfo("Asia/Bangkok")
    eve, morning = [], []
    for i in range(24 * 30):
        t = T0 + i * 3600.0 + 1800.0
        h = datetime.fromtimestamp(t, zone).hour
        if h in (19, 20):
            eve.append(bkk(t)["active_power"])
        elif h in (9, 10):
            morning.append(bkk(t)["active_power"])
    assert statistics.mean(eve) > 1.5 * statistics.mean(morning)
    three = make_source("THBKK", "energy_3p", "m3", seed=2)(T0 + 3600 * 12)
    assert sum(three[f"active_power:L{i}"] for i in (1, 2, 3)) == pytest.approx(
        three["active_power"]
    )


# -- faults -----------------------------------------------------------------------------------


def test_rollover_wraps_and_is_logged() -> None:
    log = FaultLog()
    src = make_source("THBKK", "energy_1p", "roll", seed=1, rollover=99999.9,
                      initial_register=99990.0, log=log)  # fmt: skip
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    series = [
        (start + i * 600.0, src(start + i * 600.0)["active_energy_import"]) for i in range(500)
    ]
    drops = [t for (_, a), (t, b) in itertools.pairwise(series) if b < a]
    rollovers = log.of_kind("rollover")
    assert len(drops) == 1 and [e.t for e in rollovers] == drops
    assert min(v for _, v in series) >= 0.0 and max(v for _, v in series) < 99999.9


def test_outages_and_interruptions() -> None:
    log = FaultLog()
    faults = ValueFaults(outage_rate=0.5, interruption_rate=0.5)
    energy = make_source("THBKK", "energy_1p", "e", 9, faults, log=log)
    water = make_source("THBKK", "water", "w", 9, faults, log=log)
    e_vals = [energy(T0 + i * 300.0) for i in range(288 * 10)]
    w_vals = [water(T0 + i * 300.0) for i in range(288 * 10)]
    dead = [v for v in e_vals if v["voltage"] == 0.0]
    assert dead and all(v["active_power"] == 0 and v["current"] == 0 for v in dead)
    assert any(v["water_flow"] == 0.0 for v in w_vals)
    assert log.of_kind("outage") and log.of_kind("interruption")
    # registers stand still during a gap and never go backwards
    for vals, q in ((e_vals, "active_energy_import"), (w_vals, "water_volume")):
        seq = [v[q] for v in vals]
        assert all(b >= a for a, b in itertools.pairwise(seq))


def test_value_faults_are_seeded_and_logged() -> None:
    faults = ValueFaults(stuck_rate=0.1, stuck_s=3600, drift_rate=0.1, spike_rate=0.01)
    log_a, log_b = FaultLog(), FaultLog()
    a = make_source("SGSIN", "th", "f", 11, faults, log=log_a)
    b = make_source("SGSIN", "th", "f", 11, faults, log=log_b)
    clean = make_source("SGSIN", "th", "f", 11)
    xs = [T0 + i * 60.0 for i in range(60 * 24 * 3)]
    va = [a(t) for t in xs]
    assert va == [b(t) for t in xs]
    assert [(e.kind, e.quantity, e.t) for e in log_a.events] == [
        (e.kind, e.quantity, e.t) for e in log_b.events
    ]
    kinds = {e.kind for e in log_a.events}
    assert {"stuck", "drift", "spike"} <= kinds
    # a stuck hour repeats one value; a spike is far off the clean value
    stuck = log_a.of_kind("stuck")[0]
    window = [v[stuck.quantity] for t, v in zip(xs, va, strict=True)
              if t // 3600 == stuck.t // 3600]  # fmt: skip
    assert len(set(window)) == 1
    spike = log_a.of_kind("spike")[0]
    faulty = a(spike.t)[spike.quantity]
    assert faulty == pytest.approx(8.0 * clean(spike.t)[spike.quantity]) or spike.quantity in {
        e.quantity for e in log_a.events if e.kind in ("drift", "stuck")
    }


def test_value_faults_validate_rates() -> None:
    with pytest.raises(ValueError, match="spike_rate"):
        ValueFaults(spike_rate=2.0)


# -- clocks and backfill ----------------------------------------------------------------------


def test_clocks() -> None:
    real, virtual = RealClock(), VirtualClock(T0, step=60.0)
    assert isinstance(real, Clock) and isinstance(virtual, Clock)
    assert abs(real.now() - time.time()) < 1.0
    assert virtual.now() == T0
    assert virtual.tick() == T0 + 60.0
    start = time.perf_counter()
    virtual.sleep(86400.0 * 30)
    assert time.perf_counter() - start < 0.1
    assert virtual.now() == T0 + 60.0 + 86400.0 * 30
    with pytest.raises(ValueError):
        virtual.advance(-1.0)
    with pytest.raises(ValueError):
        VirtualClock(T0, step=0)


def test_backfill_matches_live_sources_and_drives_a_clock() -> None:
    clock = VirtualClock(T0, 900.0)
    rows = list(generate("VNHAN", {"han-pm": "pm"}, T0, T0 + 86400.0, 900.0, 5, clock=clock))
    assert len(rows) == 96 and rows[0][0] == T0 and rows[-1][0] == T0 + 86400.0 - 900.0
    assert clock.now() == rows[-1][0]
    live = make_source("VNHAN", "pm", "han-pm", 5)
    for t, dev, values in rows[::10]:
        assert dev == "han-pm" and values == live(t)
    assert default_device_id("THCNX", "traffic_lane:1") == "sim-thcnx-traffic_lane-1"
    assert set(KIND_QUANTITIES) >= {"air", "water", "energy_1p"}
    with pytest.raises(ValueError):
        list(generate("VNHAN", ["pm"], T0, T0 - 1, 60.0, 1))
