"""docker-compose.yml validates against the Compose specification's JSON Schema.

Docker's engine does not run here, so the file is validated, not run. The schema is the one
vendored by check-jsonschema (compose-spec.json from the compose-spec project).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_schema() -> dict:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    return json.loads(text)


def test_compose_file_is_valid() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.Draft7Validator(compose_schema()).validate(document)


def test_compose_has_the_whole_stack() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"mosquitto", "timescaledb", "grafana", "prometheus", "gateway", "simulator"} <= set(
        services
    )
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb")


def test_mounted_files_exist() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
