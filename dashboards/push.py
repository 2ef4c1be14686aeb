"""Upload the generated boards to a Grafana that does not use file provisioning."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException

from dashboards.build import render_all
from dashboards.panels import BOARDS
from kota_cli.errors import KotaError


@dataclass(frozen=True)
class PushResult:
    uid: str
    folder: str
    status: str


def _client(url: str, token: str) -> GrafanaApi:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KotaError(f"--url: expected http(s)://host[:port], got {url!r}")
    return GrafanaApi.from_url(url=url, credential=token)


def _folder_uid(api: GrafanaApi, title: str) -> str:
    uid = "kota-" + title.lower().replace(" ", "-")
    try:
        return str(api.folder.get_folder(uid)["uid"])
    except GrafanaException:
        return str(api.folder.create_folder(title, uid=uid)["uid"])


def push(url: str, token: str) -> list[PushResult]:
    """Create or overwrite every board by uid (idempotent), each in its folder."""
    api = _client(url, token)
    files = render_all()
    results = []
    try:
        for board in BOARDS:
            body = json.loads(next(t for p, t in files.items() if p.stem == board.uid))
            body.pop("id", None)
            folder = _folder_uid(api, board.folder)
            reply = api.dashboard.update_dashboard(
                {
                    "dashboard": body,
                    "folderUid": folder,
                    "overwrite": True,
                    "message": "kota dashboards push",
                }
            )
            results.append(PushResult(board.uid, board.folder, str(reply.get("status", "success"))))
    except GrafanaException as err:
        raise KotaError(f"Grafana at {url} refused the upload: {err}") from None
    except OSError as err:
        raise KotaError(f"cannot reach Grafana at {url}: {err}") from None
    return results
