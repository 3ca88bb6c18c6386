"""``fogline fleet …``: what the dashboard shows, from a terminal, through the controller's API."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fogline.cli._app import app, console, console_err
from fogline.cli._options import data_option
from fogline.errors import ConfigError, TransportError

fleet = typer.Typer(
    help="Devices, releases and rollouts of a fleet (talks to 'fogline controller').",
    no_args_is_help=True,
)
app.add_typer(fleet, name="fleet")
rollout = typer.Typer(help="Watch a rollout.", no_args_is_help=True)
fleet.add_typer(rollout, name="rollout")

_CONTROLLER = typer.Option(
    "http://127.0.0.1:8080", "--controller", envvar="FOGLINE_CONTROLLER", help="Controller URL."
)
_TOKEN = typer.Option(
    None, "--token", envvar="FOGLINE_TOKEN", help="Operator token (default: DATA/admin.token)."
)
_DATA = data_option()
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
#: The blob a damaged file is stored as: in 'fleet releases --json' and 'release verify', not the table.
_STORED_AS = re.compile(r" \(stored as [^)]*\)")


class Api:
    """A small client of the controller's JSON API; every failure becomes one clear error."""

    def __init__(self, url: str, token: str | None, data: Path) -> None:
        self.url = url.rstrip("/")
        if token is None:
            path = data / "admin.token"
            if path.exists():
                token = path.read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            response = httpx.request(
                method, self.url + path, json=body, headers=self.headers, timeout=30.0
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"controller {self.url}: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text[:200]}
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ConfigError(f"controller said {response.status_code}: {message or payload}")
        return payload


def _ago(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    seconds = max(0.0, time.time() - stamp)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value))


@fleet.command("devices")
def devices(
    group: str | None = typer.Option(None, help="Only this group."),
    wait: int = typer.Option(
        0, "--wait", min=0, help="First wait (up to --wait-timeout) until this many are online."
    ),
    wait_timeout: float = typer.Option(120.0, "--wait-timeout", min=1.0, help="Seconds."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """Every device: group, online, last seen, what each release runs and how it is."""
    api = Api(controller, token, data)
    path = "/api/devices" + (f"?group={group}" if group else "")
    rows = api.call("GET", path)
    if wait:
        deadline = time.monotonic() + wait_timeout
        with console_err.status("") as spinner:
            while (online := sum(bool(r["online"]) for r in rows)) < wait:
                if time.monotonic() > deadline:
                    raise TransportError(
                        f"{online} of the {wait} devices waited for are online after "
                        f"{wait_timeout:g} s; check the agents' logs (did 'fogline fleet token' "
                        "reach the controller?)"
                    )
                spinner.update(f"waiting for {wait} devices online: {online} so far")
                time.sleep(0.5)
                rows = api.call("GET", path)
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"{len(rows)} devices")
    for column in ("device", "group", "online", "last seen", "releases", "health"):
        table.add_column(column)
    for row in rows:
        state = row["state"] or {}
        releases = []
        for name, status in (state.get("releases") or {}).items():
            text = f"{name} {status.get('version') or '-'} {status['phase']}"
            if status.get("target") and status["target"] != status.get("version"):
                text += f" → {status['target']}"
            if status.get("error"):
                text += f" ({status['error']})"
            releases.append(text)
        table.add_row(
            row["id"],
            row["group"],
            "[green]yes[/]" if row["online"] else "[red]no[/]",
            _ago(row["last_seen"]),
            "\n".join(releases) or "-",
            state.get("health", "-"),
        )
    console.print(table)


@fleet.command("group")
def group_command(
    device: str = typer.Argument(..., help="The device."),
    group: str = typer.Argument(..., help="Its new group."),
    tag: list[str] | None = typer.Option(None, "--tag", help="Replace its tags with these."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
) -> None:
    """Move a device to another group (deployments target groups), optionally re-tag it."""
    body: dict[str, Any] = {"group": group}
    if tag:
        body["tags"] = tag
    row = Api(controller, token, data).call("PATCH", f"/api/devices/{device}", body)
    tags = ", ".join(row["tags"]) or "no tags"
    console.print(f"{row['id']}: group {row['group']}, {tags}", highlight=False)


@fleet.command("releases")
def releases(
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """The signed releases the controller serves."""
    rows = Api(controller, token, data).call("GET", "/api/releases")
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"{len(rows)} releases")
    for column in ("name", "version", "kind", "files", "size", "created", "expires", "check"):
        table.add_column(column)
    for row in rows:
        size = sum(int(f["length"]) for f in row.get("files", []))
        damaged = row.get("damaged")
        table.add_row(
            row["name"], row["version"], str(row.get("kind", "")), str(len(row.get("files", []))),
            f"{size / 1e6:.2f} MB", str(row.get("created", ""))[:19], str(row.get("expires", ""))[:19],
            f"[red]damaged: {escape(_STORED_AS.sub('', damaged))}[/]" if damaged else "[green]ok[/]",
        )  # fmt: skip
    console.print(table)


@fleet.command("token")
def token_command(
    group: str = typer.Option("default", help="The group the device joins."),
    tag: list[str] = typer.Option([], "--tag", help="Tags for the device."),
    ttl: float = typer.Option(86400.0, "--ttl", min=1.0, help="Seconds the token stays valid."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
) -> None:
    """A one-time enrolment token for one device (give it to 'fogline agent --token')."""
    made = Api(controller, token, data).call(
        "POST", "/api/tokens", {"group": group, "tags": tag, "ttl_seconds": ttl}
    )
    console.print(made["token"], highlight=False)


@fleet.command("deploy")
def deploy(
    release: str = typer.Argument(..., help="Release name."),
    version: str = typer.Argument(..., help="Release version."),
    group: str = typer.Option("default", help="The devices to roll it out to."),
    strategy: str = typer.Option("canary", help="all, canary or waves."),
    canary: str = typer.Option("1", help="Canary size: a count or a percentage like 10%."),
    waves: str = typer.Option("", help="For --strategy waves: sizes such as 10%,50%."),
    bake: float = typer.Option(
        60.0, "--bake", min=0.0, help="Seconds each wave is watched once it runs the release."
    ),
    timeout: float = typer.Option(
        600.0,
        "--timeout",
        min=1.0,
        help="Seconds a wave may take to converge, and to cover its bake with telemetry.",
    ),
    max_error_rate: float | None = typer.Option(0.05, "--max-error-rate", min=0.0, max=1.0),
    max_p99_ms: float | None = typer.Option(None, "--max-p99-ms", min=0.0),
    min_accuracy: float | None = typer.Option(
        None,
        "--min-accuracy",
        min=0.0,
        max=1.0,
        help="Each device of a wave must show at least this accuracy: live, on its own traffic "
        "from late labels (once --min-labelled items), else on the release's canary set.",
    ),
    min_labelled: int = typer.Option(
        100, "--min-labelled", min=1, help="Labelled items live accuracy must rest on to count."
    ),
    accept_estimate: bool = typer.Option(
        False,
        "--accept-estimate",
        help="Let the accuracy estimate (from confidence, not measured) decide --min-accuracy "
        "where a device has no measured figure; without it the wave waits for one.",
    ),
    no_drift_alarm: bool = typer.Option(
        False,
        "--no-drift-alarm",
        help="Roll back if any device of a wave reports a drift alarm on the new version.",
    ),
    require_telemetry: bool = typer.Option(
        True,
        "--require-telemetry/--no-require-telemetry",
        help="A wave passes its bake only on telemetry from every device on the new version, "
        "covering the bake; a silent device extends it by up to --timeout, then the rollout "
        "rolls back. --no-require-telemetry makes the bake a time alone.",
    ),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """Roll a release out to a group: canary first (or waves, or all), watched, rolled back on failure."""
    body = {
        "release": release,
        "version": version,
        "group": group,
        "strategy": {
            "kind": strategy,
            "canary": _size(canary),
            "waves": [_size(w) for w in waves.split(",") if w.strip()],
            "bake_seconds": bake,
            "timeout_seconds": timeout,
        },
        "criteria": {
            "max_error_rate": max_error_rate,
            "max_p99_ms": max_p99_ms,
            "min_accuracy": min_accuracy,
            "min_labelled": min_labelled,
            "accept_estimate": accept_estimate,
            "no_drift_alarm": no_drift_alarm,
            "require_telemetry": require_telemetry,
        },
    }
    made = Api(controller, token, data).call("POST", "/api/deployments", body)
    if as_json:
        _print_json(made)
        return
    _show(made)
    console.print(f"follow it: fogline fleet rollout status {made['id']} --watch", highlight=False)


def _size(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdigit() else text


def _show(d: dict[str, Any]) -> None:
    console.print(_describe(d))


def _describe(d: dict[str, Any], now: float | None = None) -> Group:
    """A deployment in a few lines: where it is, its criteria, its bake, why it stopped."""
    now = time.time() if now is None else now
    colour = {"running": "yellow", "succeeded": "green", "rolled-back": "red"}.get(d["status"], "")
    lines = [
        Text.from_markup(
            f"[bold]{d['id']}[/] {d['release']} {d['version']} → {d['group']}: "
            f"[{colour}]{d['status']}[/], wave {d['wave'] + 1} of {d['waves']} "
            f"({d['strategy']['kind']})"
        )
    ]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(d["counts"].items()))
    lines.append(Text(f"  devices: {counts}"))
    strategy = d["strategy"]
    lines.append(
        Text(
            f"  criteria: {d['criteria_text']}; bake {strategy['bake_seconds']:g} s, "
            f"timeout {strategy['timeout_seconds']:g} s"
        )
    )
    bake = d.get("bake")
    if d["status"] == "running" and bake:
        lines.append(Text(f"  bake: {_bake(bake, now)}"))
    lines += [Text(f"  {line}") for line in _gates(d.get("gates"))]
    if d.get("reason"):
        lines.append(Text(f"  reason: {d['reason']}"))
    return Group(*lines)


def _gates(gates: dict[str, Any] | None) -> list[str]:
    """The model's gates of the current wave: which accuracy figure each device is judged on."""
    if not gates:
        return []
    lines = []
    accuracy = gates.get("accuracy")
    if accuracy:
        used = [f["text"] for f in accuracy["used"]]
        lines += [f"accuracy: {text}" for text in used]
        lines += [f"accuracy: waiting for {text}" for text in accuracy["waiting"]]
    drift = gates.get("drift")
    if drift is not None:
        lines.append(f"drift: {drift['alarm'] or 'no alarm on the new version so far'}")
    return lines


def _bake(bake: dict[str, Any], now: float) -> str:
    left = bake["end"] - now
    if not bake["waiting"]:
        return "covered by every device's telemetry"
    heard = []
    for device in bake["waiting"]:
        last = bake["last_heard"].get(device)
        ago = max(0.0, now - last) if last is not None else None
        if device in bake["silent"]:
            since = "no report on it yet" if ago is None else f"last report {ago:.0f} s ago"
            heard.append(f"{device} (silent: {since})")
        else:
            heard.append(
                f"{device} ("
                + ("no report yet" if ago is None else f"last report {ago:.0f} s ago")
                + ")"
            )
    when = f"{left:.0f} s to go" if left > 0 else "waiting"
    return f"{when}; telemetry still needed from {', '.join(heard)}"


@rollout.command("status")
def status(
    deployment: str | None = typer.Argument(
        None, help="A deployment id (default: the running ones, else the latest)."
    ),
    show_all: bool = typer.Option(False, "--all", help="Every deployment ever made, oldest first."),
    watch: bool = typer.Option(False, "--watch", help="Redraw in place until it ends."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """Where a rollout is: its wave, device counts, criteria and bake, and why it stopped if it did."""
    api = Api(controller, token, data)

    def fetch() -> list[dict[str, Any]]:
        if deployment is not None:
            return [api.call("GET", f"/api/deployments/{deployment}")]
        rows: list[dict[str, Any]] = api.call("GET", "/api/deployments")
        if show_all:
            return rows
        current = [r for r in rows if r["status"] == "running"] or rows[-1:]
        # The list leaves out each one's bake progress; the single view has it.
        return [api.call("GET", f"/api/deployments/{r['id']}") for r in current]

    def render(rows: list[dict[str, Any]]) -> Group:
        if not rows:
            return Group(Text("no deployments yet: fogline fleet deploy NAME VERSION --group G"))
        return Group(*[_describe(row) for row in rows])

    rows = fetch()
    if as_json:
        _print_json(rows[0] if deployment is not None else rows)
        return
    if not watch or all(row["status"] != "running" for row in rows):
        console.print(render(rows))
        return
    # Redrawn in place while it runs (transient), then the final state printed once.
    with Live(render(rows), console=console, auto_refresh=False, transient=True) as live:
        while any(row["status"] == "running" for row in rows):
            time.sleep(1.0)
            rows = fetch() if deployment is not None or show_all else _refresh(api, rows)
            live.update(render(rows), refresh=True)
    console.print(render(rows))


def _refresh(api: Api, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same deployments again: a watch follows what it started with to their end."""
    return [api.call("GET", f"/api/deployments/{row['id']}") for row in rows]


@fleet.command("rollback")
def rollback(
    deployment: str = typer.Argument(..., help="The deployment to roll back."),
    reason: str = typer.Option("rolled back by the operator", help="Recorded with it."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
) -> None:
    """Put every device the deployment touched back on its previous release."""
    done = Api(controller, token, data).call(
        "POST", f"/api/deployments/{deployment}/rollback", {"reason": reason}
    )
    _show(done)
