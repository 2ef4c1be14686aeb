"""edge.toml validation: the whole file up front, one line naming file and field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge.bench import SyntheticDriver
from edge.cli import sample_config_text
from edge.config import PASSWORD_ENV, load_config, parse_config
from kota_cli.errors import ConfigError

GOOD = """
[agent]
id = "pi-bkk-01"
city = "THBKK"
site = "bkk-sukhumvit"
state_dir = "state"

[uplink]
url = "mqtt://broker.example.org"
"""

SYNTH = """
[[devices]]
driver = "python:edge.bench:build_synthetic"
kind = "synthetic"
device_id = "{id}"
"""


def write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_config_has_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.agent.state_dir == (tmp_path / "state").resolve()
    assert (config.uplink.host, config.uplink.port, config.uplink.tls) == (
        "broker.example.org",
        1883,
        False,
    )
    assert config.uplink.batch_max_readings == 500 and config.uplink.batch_max_age_s == 5
    assert config.uplink.client_id == "kota-edge-pi-bkk-01"
    assert config.uplink.session_expiry_s == 7 * 86_400
    assert config.outbox.path == config.agent.state_dir / "outbox.sqlite"
    assert config.outbox.sync == "normal" and config.metrics.port == 9110
    assert config.devices == ()


def test_mqtts_defaults_to_8883_and_python_driver_loads(tmp_path: Path) -> None:
    text = GOOD.replace("mqtt://broker.example.org", "mqtts://broker.example.org") + SYNTH.format(
        id="syn-1"
    )
    config = load_config(write(tmp_path, text))
    assert config.uplink.port == 8883 and config.uplink.tls
    assert isinstance(config.devices[0].driver, SyntheticDriver)
    assert config.devices[0].kind == "synthetic"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("mqtt://broker.example.org", "http://broker.example.org"),
            "uplink.url: scheme 'http' not supported (use mqtt:// or mqtts://)",
        ),
        (("mqtt://broker.example.org", "mqtt://"), "uplink.url: no host"),
        (
            ("mqtt://broker.example.org", "mqtt://u:p@broker.example.org"),
            "uplink.url: credentials in the URL",
        ),
        (
            ("mqtt://broker.example.org", "mqtt://b.example.org:99999"),
            "uplink.url: Port out of range",
        ),
        (('city = "THBKK"', 'city = "XXBKK"'), "agent.city: 'XXBKK' is not an ASCN city"),
        (('id = "pi-bkk-01"', 'id = "pi bkk/01"'), "agent.id: 'pi bkk/01' is not a valid id"),
        (('site = "bkk-sukhumvit"', ""), "agent.site: required"),
        (
            ('url = "mqtt://broker.example.org"', 'url = "mqtt://b"\nbach_max_readings = 10'),
            "uplink.bach_max_readings: unknown key (did you mean 'batch_max_readings'?)",
        ),
        (
            ('url = "mqtt://broker.example.org"', 'url = "mqtt://b"\nbatch_max_readings = 0'),
            "uplink.batch_max_readings: 0 out of range",
        ),
        (
            ('url = "mqtt://broker.example.org"', 'url = "mqtt://b"\nkeepalive = "60"'),
            "uplink.keepalive: expected an integer, got '60'",
        ),
        (
            ('url = "mqtt://broker.example.org"', 'url = "mqtt://b"\npassword = "hunter2"'),
            "uplink.password: inline passwords are not allowed",
        ),
        (
            (
                'url = "mqtt://broker.example.org"',
                'url = "mqtt://b"\npassword_file = "nope"\nusername = "u"',
            ),
            "uplink.password_file: cannot read",
        ),
        (
            ('url = "mqtt://broker.example.org"', 'url = "mqtt://b"\nca_file = "ca.crt"'),
            "uplink.ca_file: file not found",
        ),
        (
            ("[uplink]", '[outbox]\nsync = "sometimes"\n\n[uplink]'),
            "outbox.sync: 'sometimes' not one of normal, full",
        ),
        (("[uplink]", "[metrics]\nport = 70000\n\n[uplink]"), "metrics.port: 70000 out of range"),
        (
            ("[uplink]", '[agnet]\nid = "x"\n\n[uplink]'),
            "agnet: unknown key (did you mean 'agent'?)",
        ),
    ],
)
def test_bad_config_names_file_and_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert message in text, text


def test_invalid_toml_and_missing_file_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"edge.toml: invalid TOML: .*line 2"):
        load_config(write(tmp_path, "[agent]\nid = \n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")


def test_password_from_file_or_env_never_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    text = GOOD.replace(
        'url = "mqtt://broker.example.org"',
        'url = "mqtt://b"\nusername = "u"\npassword_file = "pw"',
    )
    config = load_config(write(tmp_path, text))
    assert config.uplink.password == "s3cret"
    assert "s3cret" not in repr(config)
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    text = GOOD.replace('url = "mqtt://broker.example.org"', 'url = "mqtt://b"\nusername = "u"')
    assert load_config(write(tmp_path, text)).uplink.password == "from-env"


def test_device_errors_are_prefixed_with_their_index(tmp_path: Path) -> None:
    cases = [
        (
            SYNTH.format(id="a") + SYNTH.format(id="b").replace("kind", "rate_hz = -1\nkind"),
            "devices[1].rate_hz: must be a number",
        ),
        (
            SYNTH.format(id="a") + SYNTH.format(id="a"),
            "devices[1].device_id: 'a' already used by devices[0]",
        ),
        (
            SYNTH.format(id="a").replace("kind", "colour = 1\nkind"),
            "devices[0].colour: unknown option",
        ),
        (
            '[[devices]]\nkind = "no-such-driver"\n',
            "devices[0].kind: unknown driver kind 'no-such-driver'",
        ),
        (
            '[[devices]]\ndriver = "python:edge.nope:x"\n',
            "devices[0].driver: kind 'python:edge.nope:x': cannot import",
        ),
        ("[[devices]]\nport = 1\n", "devices[0].kind: required"),
        ("[devices]\nkind = 1\n", "devices: must be an array of tables"),
    ]
    for devices, message in cases:
        path = write(tmp_path, GOOD + devices)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value) == f"{path}: {message}" or message in str(err.value), str(err.value)


def test_disabled_device_is_validated_but_not_run(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, GOOD + SYNTH.format(id="a").replace("kind", "enabled = false\nkind"))
    )
    assert config.devices[0].enabled is False


def test_sample_config_is_valid_toml_with_every_driver(tmp_path: Path) -> None:
    from edge.drivers import REGISTRY

    text = sample_config_text()
    data = tomllib.loads(text)
    assert {"agent", "uplink", "outbox", "metrics"} <= set(data)
    kinds = {d.get("kind") for d in data.get("devices", [])}
    assert set(REGISTRY) <= kinds
    # the agent sections validate as printed (the password file is site-specific)
    data["uplink"].pop("password_file")
    config = parse_config({k: v for k, v in data.items() if k != "devices"}, tmp_path / "edge.toml")
    assert config.agent.city == "THBKK"


def test_example_config_validates(tmp_path: Path) -> None:
    """edge/examples/edge.toml parses and names only registered drivers."""
    from edge.drivers import REGISTRY

    example = Path(__file__).resolve().parents[2] / "edge" / "examples" / "edge.toml"
    data = tomllib.loads(example.read_text())
    kinds = {d["kind"] for d in data["devices"]}
    missing = kinds - set(REGISTRY)
    assert not missing, f"example uses unregistered drivers: {sorted(missing)}"
    data["uplink"].pop("password_file", None)
    data["uplink"].pop("ca_file", None)
    config = parse_config(data, tmp_path / "edge.toml")
    assert len(config.devices) == len(data["devices"])
