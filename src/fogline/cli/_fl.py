"""``fogline fl simulate``: federated rounds in one process, before trying them on the fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import app, console, counted_progress, needs_extra

if TYPE_CHECKING:
    from fogline.federated import RoundRecord

fl = typer.Typer(help="Federated learning: simulate rounds in one process.", no_args_is_help=True)
app.add_typer(fl, name="fl")

#: What ``fogline.federated`` needs (the ``federated`` extra).
FEDERATED_MODULES = ("cryptography", "Crypto", "dp_accounting")


def _malicious(text: str | None) -> tuple[float, str]:
    from fogline.errors import ConfigError

    if text is None:
        return 0.0, "sign-flip"
    fraction, colon, attack = text.partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = -1.0
    if not colon or not 0 <= value < 1 or attack not in ("sign-flip", "gaussian"):
        raise ConfigError(
            f"--malicious must be FRACTION:ATTACK with FRACTION in [0, 1) and ATTACK "
            f"sign-flip or gaussian, not {text!r}"
        )
    return value, attack


def _table(history: list[RoundRecord]) -> Table:
    table = Table(title="federated simulation")
    for column in ("round", "accuracy", "loss", "participants", "up KiB", "down KiB", "s", "ε"):
        table.add_column(column, justify="right")
    for r in history:
        table.add_row(
            str(r.round),
            f"{100 * r.accuracy:.2f} %",
            f"{r.loss:.4f}",
            str(r.participants),
            f"{r.bytes_up / 1024:.1f}",
            f"{r.bytes_down / 1024:.1f}",
            f"{r.seconds:.2f}",
            "-" if r.epsilon is None else f"{r.epsilon:.3f}",
        )
    return table


@fl.command("simulate")
def simulate(
    task: str = typer.Option(..., "--task", help="MODULE:FUNCTION returning the task's dict."),
    clients: int = typer.Option(..., "--clients", help="Number of simulated clients."),
    rounds: int = typer.Option(..., "--rounds", help="Number of rounds."),
    out: Path = typer.Option(..., "--out", help="Folder for history.json and model.onnx."),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg, fedprox, krum, ..."),
    split: str = typer.Option("iid", "--split", help="iid, dirichlet:ALPHA or shards:K."),
    local_epochs: int = typer.Option(1, "--local-epochs", help="Local epochs per round."),
    fraction: float = typer.Option(1.0, "--fraction", help="Fraction of clients per round."),
    secagg: bool = typer.Option(False, "--secagg", help="Aggregate through secure aggregation."),
    secagg_bits: int = typer.Option(
        16, "--secagg-bits", help="Bits per coordinate of secure aggregation's field (8 to 62)."
    ),
    dp_noise: float | None = typer.Option(None, "--dp-noise", help="Noise multiplier z."),
    dp_clip: float | None = typer.Option(None, "--dp-clip", help="L2 clip norm C of an update."),
    dp_mode: str = typer.Option(
        "central", "--dp-mode", help="central (server noise) or distributed (client noise)."
    ),
    epsilon_budget: float | None = typer.Option(
        None, "--epsilon-budget", help="Stop before a round would spend more ε than this."
    ),
    dropout: float = typer.Option(0.0, "--dropout", help="Chance a sampled client drops."),
    malicious: str | None = typer.Option(
        None, "--malicious", help="FRACTION:ATTACK, ATTACK sign-flip or gaussian."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, sampling and training."),
) -> None:
    """Split a task's data among clients and play federated rounds; writes history and model.

    With privacy, also DIR/privacy.json: the ε (at δ) the rounds played spent.
    """
    needs_extra("federated", *FEDERATED_MODULES)
    from fogline._files import atomic_write
    from fogline.federated import (
        SimulationConfig,
        SplitSpec,
        export_model,
        history_json,
        load_task,
    )
    from fogline.federated import simulate as run

    bad, attack = _malicious(malicious)
    config = SimulationConfig(
        clients=clients,
        rounds=rounds,
        strategy=strategy,
        split=SplitSpec.parse(split),
        local_epochs=local_epochs,
        fraction=fraction,
        secagg=secagg,
        secagg_bits=secagg_bits,
        dp_noise=dp_noise,
        dp_clip=dp_clip,
        dp_mode=dp_mode,  # type: ignore[arg-type]  # checked by the config
        epsilon_budget=epsilon_budget,
        dropout=dropout,
        malicious=bad,
        attack=attack,  # type: ignore[arg-type]  # checked by _malicious and the config
        seed=seed,
    )
    loaded = load_task(task)
    if loaded.model is not None:
        needs_extra("train", "torch")
    history: list[RoundRecord] = []
    with counted_progress("round") as progress:
        bar = progress.add_task("", total=rounds)

        def advance(record: RoundRecord) -> None:
            history.append(record)
            progress.update(bar, advance=1, description=f"accuracy {100 * record.accuracy:.2f} %")

        result = run(loaded, config, on_round=advance)
    console.print(_table(history))
    if result.stopped_at is not None and result.privacy is not None:
        console.print(
            f"stopped before round {result.stopped_at}: it would take ε above the budget "
            f"{epsilon_budget:g}; spent ε = {result.privacy.epsilon:.3f} (δ = "
            f"{result.privacy.delta:g}) in {result.privacy.rounds} rounds",
            highlight=False,
        )
    model = export_model(result, out)
    text = json.dumps(history_json(result.history), indent=2, allow_nan=False) + "\n"
    atomic_write(out / "history.json", text.encode())
    written = [out / "history.json", model]
    if result.privacy is not None:
        atomic_write(out / "privacy.json", (result.privacy.to_json() + "\n").encode())
        written.append(out / "privacy.json")
    console.print(
        f"wrote {', '.join(escape(str(p)) for p in written)} (with fogline.yaml)",
        highlight=False,
    )
