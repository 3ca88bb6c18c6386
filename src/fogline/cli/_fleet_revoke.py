"""``fogline fleet revoke DEVICE``: a lost or stolen device reads no later release.

Through the controller's ``POST /api/devices/{id}/revoke``: the device is
left out of every encrypted release's key document from now on (those
already written are re-wrapped without it), its MQTT login is removed when
the controller keeps the broker's password file, and it cannot enrol again
under its id. What it already installed stays readable to it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fogline.cli._app import console
from fogline.cli._fleet import _CONTROLLER, _DATA, _JSON, _TOKEN, Api, _print_json, fleet


@fleet.command("revoke")
def revoke(
    device: str = typer.Argument(..., help="The device to revoke."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """Revoke DEVICE: no key to later encrypted releases, no MQTT login, no new enrolment."""
    done = Api(controller, token, data).call("POST", f"/api/devices/{device}/revoke")
    if as_json:
        _print_json(done)
        return
    name = escape(done["device_id"])
    console.print(
        f"{name}: {'already revoked' if done['already'] else '[bold]revoked[/]'}", highlight=False
    )
    login = "removed" if done["login_removed"] else "not kept by this controller (none removed)"
    console.print(f"  MQTT login: {login}", highlight=False)
    rewrapped = ", ".join(done["rewrapped"]) or "none needed a change"
    console.print(
        f"  encrypted releases re-wrapped without it: {escape(rewrapped)}", highlight=False
    )
