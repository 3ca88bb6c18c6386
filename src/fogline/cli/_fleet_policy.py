"""``fogline fleet policy set|show``: the fleet's default egress policy, through the controller.

A device's pipelines run under ``stricter(fleet default, their own privacy:)``:
the default is the least every device keeps back; a pipeline that tries to
loosen it is refused when it is checked (see docs/privacy/egress.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
import yaml
from rich.markup import escape

from fogline.cli._app import console
from fogline.cli._fleet import _CONTROLLER, _DATA, _JSON, _TOKEN, Api, _print_json, fleet
from fogline.security import read_policy

policy = typer.Typer(help="The fleet's default egress policy (privacy:).", no_args_is_help=True)
fleet.add_typer(policy, name="policy")


@policy.command("set")
def set_policy(
    file: Path | None = typer.Argument(
        None, help="A policy file (YAML or JSON, the keys of a pipeline's privacy: section)."
    ),
    clear: bool = typer.Option(False, "--clear", help="Remove the fleet default."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
) -> None:
    """Set the fleet default (checked here and by the controller); every device gets it."""
    if (file is None) == (not clear):
        raise typer.BadParameter("give a policy FILE, or --clear")
    body = None if file is None else read_policy(file).model_dump(mode="json", exclude_unset=True)
    Api(controller, token, data).call("PUT", "/api/privacy", {"policy": body})
    what = "cleared the fleet default" if body is None else "set the fleet default"
    console.print(f"[green]ok[/]: {what}; devices apply it to their pipelines", highlight=False)


@policy.command("show")
def show_policy(
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """The fleet default as the controller keeps it."""
    shown = Api(controller, token, data).call("GET", "/api/privacy")
    if as_json:
        _print_json(shown)
        return
    if shown.get("policy") is None:
        console.print("no fleet default: each pipeline's own privacy: applies", highlight=False)
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(shown["set_at"]))
    console.print(f"fleet default, set {when}:", highlight=False)
    text = yaml.safe_dump(shown["policy"], sort_keys=False, default_flow_style=None)
    console.print(escape(text.rstrip()), highlight=False)
