"""``fogline fl start | status | stop``: federated runs across the fleet, through the controller's API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fogline.cli._app import console
from fogline.cli._fl import fl
from fogline.cli._fleet import _CONTROLLER, _DATA, _JSON, _TOKEN, Api, _print_json

#: Run statuses after which nothing changes any more.
ENDED = ("finished", "stopped", "failed", "gate-failed")


@fl.command("start")
def start(
    task: str = typer.Option(
        ..., "--task", help="module:function of the model and the validation set (its 'test')."
    ),
    release: str = typer.Option(..., "--release", help="The model release the run ends in."),
    group: str = typer.Option("default", "--group", help="The devices that train."),
    rounds: int = typer.Option(10, "--rounds", min=1),
    strategy: str = typer.Option("fedavg", "--strategy"),
    min_clients: int = typer.Option(2, "--min-clients", min=1, help="Updates a round needs."),
    fraction: float = typer.Option(1.0, "--fraction", min=0.0, max=1.0, help="Sampled a round."),
    deadline: float = typer.Option(60.0, "--deadline", min=0.001, help="Seconds a round waits."),
    local_epochs: int = typer.Option(1, "--local-epochs", min=1),
    dp_noise: float | None = typer.Option(None, "--dp-noise", min=0.0, help="Noise multiplier."),
    dp_clip: float | None = typer.Option(None, "--dp-clip", min=0.0, help="Clipping norm."),
    dp_delta: float = typer.Option(1e-5, "--dp-delta"),
    epsilon_budget: float | None = typer.Option(None, "--epsilon-budget", min=0.0),
    secagg: bool = typer.Option(
        False, "--secagg", help="Secure aggregation: the controller learns only the sum."
    ),
    secagg_bits: int = typer.Option(16, "--secagg-bits", min=8, max=62),
    asynchronous: bool = typer.Option(
        False, "--async", help="Fold updates that arrive after their round into the next one."
    ),
    max_staleness: int = typer.Option(3, "--max-staleness", min=1),
    secagg_clip: float = typer.Option(8.0, "--secagg-clip", min=0.0),
    max_drop: float = typer.Option(
        0.01,
        "--max-drop",
        min=0.0,
        max=1.0,
        help="The gate: at most this much below the newest release's validation accuracy.",
    ),
    min_accuracy: float | None = typer.Option(None, "--min-accuracy", min=0.0, max=1.0),
    version: str | None = typer.Option(None, "--version", help="Default: the next minor."),
    then: str | None = typer.Option(None, "--then", help="canary: deploy what passed the gate."),
    canary_min_accuracy: float | None = typer.Option(
        None,
        "--canary-min-accuracy",
        min=0.0,
        max=1.0,
        help="The canary's rollout rolls back below this accuracy on its canary set.",
    ),
    canary_bake: float = typer.Option(30.0, "--canary-bake", min=0.0),
    seed: int | None = typer.Option(None, "--seed"),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """Start a federated run: rounds on the group's learners, a gate, a signed release, a canary."""
    body = {
        "task": task, "release": release, "group": group, "rounds": rounds,
        "strategy": strategy, "min_clients": min_clients, "fraction": fraction,
        "deadline": deadline, "local_epochs": local_epochs, "dp_noise": dp_noise,
        "dp_clip": dp_clip, "dp_delta": dp_delta, "epsilon_budget": epsilon_budget,
        "secagg": secagg, "secagg_bits": secagg_bits, "secagg_clip": secagg_clip,
        "asynchronous": asynchronous, "max_staleness": max_staleness,
        "max_drop": max_drop, "min_accuracy": min_accuracy, "version": version, "then": then,
        "canary_min_accuracy": canary_min_accuracy, "canary_bake": canary_bake, "seed": seed,
    }  # fmt: skip
    made = Api(controller, token, data).call("POST", "/api/fl/runs", body)
    if as_json:
        _print_json(made)
        return
    console.print(_describe(made))
    console.print(f"follow it: fogline fl status {made['id']} --watch", highlight=False)


@fl.command("status")
def status(
    run: str | None = typer.Argument(None, help="A run id (default: the newest)."),
    watch: bool = typer.Option(False, "--watch", help="Redraw in place until the run ends."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """A run's rounds: participants, accuracy and loss, bytes, ε; and how it ended."""
    api = Api(controller, token, data)

    def fetch() -> dict[str, Any] | None:
        run_id = run
        if run_id is None:
            rows: list[dict[str, Any]] = api.call("GET", "/api/fl/runs")
            if not rows:
                return None
            run_id = rows[-1]["id"]
        found: dict[str, Any] = api.call("GET", f"/api/fl/runs/{run_id}")
        return found

    found = fetch()
    if found is None:
        console.print("no federated runs yet: fogline fl start --task M:F --release NAME")
        return
    if as_json:
        _print_json(found)
        return
    if not watch or found["status"] in ENDED:
        console.print(_describe(found))
        return
    with Live(_describe(found), console=console, auto_refresh=False, transient=True) as live:
        while found is not None and found["status"] not in ENDED:
            time.sleep(1.0)
            found = fetch()
            if found is not None:
                live.update(_describe(found), refresh=True)
    if found is not None:
        console.print(_describe(found))


@fl.command("stop")
def stop(
    run: str = typer.Argument(..., help="The run id."),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
) -> None:
    """Stop a run after its open round (the model so far is kept, nothing is released)."""
    done = Api(controller, token, data).call("POST", f"/api/fl/runs/{run}/stop")
    console.print(f"run {escape(done['id'])}: {done['status']} ({escape(done['reason'] or '')})")


def _describe(run: dict[str, Any]) -> Group:
    spec = run["spec"]
    head = Text.assemble(
        (f"run {run['id']}", "bold"),
        f"  {run['status']}  round {run['round']}/{spec['rounds']}  ",
        f"task {spec['task']} → release {spec['release']}  group {spec['group']}  ",
        f"{spec['strategy']}"
        + (" + secure aggregation" if spec.get("secagg") else "")
        + (" (async)" if spec.get("asynchronous") else ""),
    )
    parts: list[Any] = [head]
    if run.get("waiting"):
        parts.append(Text(f"waiting: {run['waiting']}", style="yellow"))
    table = Table(show_edge=False, pad_edge=False)
    for column in ("round", "status", "participants", "accuracy", "loss", "up", "down", "ε"):
        table.add_column(column, justify="right" if column != "status" else "left")
    for r in run.get("rounds", [])[-20:]:
        table.add_row(
            str(r["round"]),
            r["status"] + (f" ({r['reason']})" if r.get("reason") else ""),
            f"{r['participants']}/{len(r['sampled'])}",
            "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%",
            "-" if r["loss"] is None else f"{r['loss']:.4f}",
            _bytes(r["bytes_up"]),
            _bytes(r["bytes_down"]),
            "-" if r["epsilon"] is None else f"{r['epsilon']:.3g}",
        )
    if run.get("rounds"):
        parts.append(table)
    current = run.get("current")
    if current and current["status"] == "open":
        left = max(0.0, current["deadline"] - time.time())
        answered = {u["device"]: u["status"] for u in current["updates"]}
        waiting = [d for d in current["sampled"] if d not in answered]
        stage = f" (secure aggregation: {current['stage']})" if spec.get("secagg") else ""
        parts.append(
            Text(
                f"round {current['round']} open{stage}, {left:.0f} s to its deadline: "
                f"{sum(s == 'accepted' for s in answered.values())} update(s) in, "
                f"waiting for {', '.join(waiting) or 'nobody'}"
            )
        )
    result = run.get("result") or {}
    gate = result.get("gate")
    if gate:
        mark = "passed" if gate["passed"] else "FAILED"
        parts.append(Text(f"gate {mark}: {gate.get('reason', '')}"))
    if result.get("released"):
        parts.append(Text(f"release {spec['release']} {result.get('version')} signed"))
    if result.get("deployment"):
        parts.append(Text(f"canary: fogline fleet rollout status {result['deployment']} --watch"))
    if run.get("reason") and run["status"] in ENDED:
        parts.append(Text(f"{run['status']}: {run['reason']}"))
    return Group(*parts)


def _bytes(n: int) -> str:
    if n < 10_000:
        return f"{n} B"
    return f"{n / 1000:.1f} kB" if n < 10_000_000 else f"{n / 1e6:.1f} MB"
