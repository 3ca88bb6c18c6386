"""``fogline learn finetune``: fine-tune a model on captured hard examples, behind a gate.

Exit status: 0 when the candidate passed the gate (``--out`` is then a model
folder with its reports), :data:`GATE_FAILED` (3) when it did not (``--out``
holds the reports only), 2 for bad input (nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from fogline.cli._app import app, console, counted_progress, needs_extra
from fogline.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from fogline.data import Arrays
    from fogline.power import Deferral

learn = typer.Typer(
    help="Learning on this device: fine-tune a model on captured data, behind a gate.",
    no_args_is_help=True,
)
app.add_typer(learn, name="learn")

#: The exit status when the candidate was made but failed the gate.
GATE_FAILED = 3


@learn.command()
def finetune(
    model_dir: Path = typer.Argument(..., help="The model folder (model.onnx and fogline.yaml)."),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="Labelled training data: `fogline capture export`'s .npz (sealed with the device "
        "key, from $FOGLINE_DEVICE_KEY*, is opened in memory).",
    ),
    holdout: str | None = typer.Option(
        None,
        "--eval",
        "-e",
        help="Labelled held-out new data the candidate must do better on (default: a --holdout "
        "share of --data).",
    ),
    holdout_share: float = typer.Option(
        0.25,
        "--holdout",
        min=0.0,
        max=1.0,
        help="Without --eval: the share of --data (an .npz) held out for the gate, split by a "
        "seeded shuffle into DATA.train.npz and DATA.holdout.npz beside it.",
    ),
    original: str | None = typer.Option(
        None,
        "--original",
        help="The original evaluation data it must not forget (default: what the manifest's "
        "provenance or the release's canary set names).",
    ),
    replay: str | None = typer.Option(
        None,
        "--replay",
        help="Labelled data of the kind the model was trained on, mixed into training so it "
        "keeps what it knew.",
    ),
    layers: str = typer.Option(
        "last", help="last: re-fit the last layer (ONNX only); all: the whole network (PyTorch)."
    ),
    from_torch: str | None = typer.Option(
        None,
        "--from-torch",
        help="With --layers all: module:function returning the network the model was exported from.",
    ),
    epochs: int = typer.Option(20, min=1, help="Training epochs."),
    learning_rate: float | None = typer.Option(
        None, min=0.0, help="Adam learning rate (default 0.01 for last, 0.001 for all)."
    ),
    l2: float = typer.Option(
        1e-3, min=0.0, help="Pull towards the old weights (limits forgetting)."
    ),
    min_gain: float = typer.Option(
        0.02,
        min=0.0,
        max=1.0,
        help="The candidate must beat the current model on --eval by this much (0.02 = 2 points).",
    ),
    max_forgetting: float = typer.Option(
        0.01,
        min=0.0,
        max=1.0,
        help="...and may lose at most this much on --original (0.01 = 1 point).",
    ),
    min_holdout: int = typer.Option(
        20, min=1, help="The fewest held-out new items the gate's gain may rest on."
    ),
    seed: int = typer.Option(0, help="Seed of the shuffles (and of PyTorch)."),
    threads: int | None = typer.Option(
        None, min=1, help="CPU threads to train and evaluate with (default: every core)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="A new folder for the candidate and reports."
    ),
    defer: Path | None = typer.Option(
        None,
        "--defer",
        help="A deferral policy (YAML: mains, min_battery_percent, windows, carbon): wait until "
        "it allows before fine-tuning, saying why while it does not.",
    ),
) -> None:
    """Fine-tune MODEL_DIR on --data; keep the candidate only if it passes the gate.

    Exit status 0: passed, --out is a model folder (model.onnx, fogline.yaml
    with the next version and its provenance, report.json, report.md).
    3: failed the gate, --out holds the reports only. 2: bad input.
    """
    from fogline.monitor import FinetuneOptions, GateOptions
    from fogline.monitor import finetune as run_finetune
    from fogline.security import KeySource, SealedFiles

    if layers == "all":
        needs_extra("train", "torch")
    options = FinetuneOptions(
        layers=layers,
        epochs=epochs,
        learning_rate=learning_rate,
        l2=l2,
        seed=seed,
        torch_source=from_torch,
        threads=threads,
    )
    gate = GateOptions(min_gain=min_gain, max_forgetting=max_forgetting, min_items=min_holdout)
    deferral = None if defer is None else _deferral(defer)
    # the inputs are checked (and the split written) before any wait: a mistake shows at once
    if out.exists():
        raise ConfigError(f"{out}: already exists; give a new --out folder or remove it")
    if holdout is None:
        split = _split(Path(data), holdout_share, seed)
    else:
        split = _opened(data, "--data"), _opened(holdout, "--eval")
    if deferral is not None:
        _wait_for(deferral)
    what = "the last layer" if layers == "last" else "the whole network"
    with counted_progress(f"fine-tuning {what}: epoch") as progress:
        bar = progress.add_task("", total=epochs)

        def advance(epoch: int, total: int, loss: float, accuracy: float) -> None:
            progress.update(
                bar, completed=epoch, description=f"loss {loss:.4f}, training {accuracy:.2%}"
            )

        result = run_finetune(
            model_dir,
            split[0],
            split[1],
            out,
            original=original,
            replay=None if replay is None else _opened(replay, "--replay"),
            options=options,
            gate=gate,
            progress=advance,
            read=SealedFiles(KeySource()),  # a device's sealed release, opened in memory
        )
    verdict = result.verdict
    for label, (old, new) in (
        ("held-out new data", verdict.holdout),
        ("original data", verdict.original),
    ):
        console.print(
            f"{label:>18}: current {old:.2%}  candidate {new:.2%}  ({(new - old) * 100:+.2f} points)",
            highlight=False,
        )
    folder = escape(str(result.folder))
    if result.passed:
        candidate = result.report["candidate"]
        console.print(
            f"gate passed: {escape(verdict.reason)}\nwrote {candidate['name']} "
            f"{candidate['version']} to {folder} (model.onnx, fogline.yaml, report.json, report.md)",
            highlight=False,
            soft_wrap=True,
        )
        return
    console.print(
        f"gate FAILED: {escape(verdict.reason)}\nwrote the reports to {folder} "
        "(report.json, report.md); no candidate model is kept",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(GATE_FAILED)


def _deferral(policy_file: Path) -> Deferral:
    """The deferral policy in ``policy_file``; a bad one is a :class:`ConfigError`."""
    from fogline.power import Deferral, load_defer_policy

    return Deferral(load_defer_policy(policy_file))


def _wait_for(deferral: Deferral) -> None:
    """Wait until ``deferral`` allows, one line per new reason."""
    import time

    from fogline.power import Verdict

    def say(verdict: Verdict) -> None:
        stamp = time.strftime("%H:%M:%S")
        console.print(
            f"{stamp} fine-tune {escape(verdict.reason)}", highlight=False, soft_wrap=True
        )

    deferral.wait(say=say)


def _split(data: Path, share: float, seed: int) -> tuple[str | Arrays, str | Arrays]:
    """Split the .npz ``data`` into ``DATA.train.npz`` and ``DATA.holdout.npz`` beside it.

    A seeded shuffle, so the same data and seed give the same split; the two
    files are written atomically and named in the candidate's provenance. A
    sealed ``data`` is split in memory and nothing is written.
    """
    import io

    import numpy as np

    from fogline._files import atomic_write
    from fogline.data import Arrays

    if data.suffix != ".npz" or not data.is_file():
        raise ConfigError(
            f"--data {data}: without --eval the data is split, and that needs an .npz file "
            "(`fogline capture export`'s); give --eval HOLDOUT for other data"
        )
    arrays, sealed = _read_npz(data)
    if "labels" not in arrays:
        raise ConfigError(
            f"--data {data}: holds no labels; fine-tuning and the gate need the true class of "
            "each item (`fogline capture export --labelled-only` writes them)"
        )
    sizes = {len(a) if a.ndim else 0 for a in arrays.values()}
    items = sizes.pop() if len(sizes) == 1 else 0
    held = round(items * share)
    if held < 1 or held >= items:
        raise ConfigError(
            f"--data {data}: {items} labelled item(s) cannot be split {share:.0%} held out; "
            "export more labelled captures, or give --eval HOLDOUT"
        )
    order = np.random.default_rng(seed).permutation(items)
    parts: list[str | Arrays] = []
    for part, rows in (("train", order[held:]), ("holdout", order[:held])):
        chosen = {key: value[rows] for key, value in arrays.items()}
        if sealed:
            parts.append(Arrays(f"{data} (sealed, {part} part)", chosen))
            continue
        buffer = io.BytesIO()
        savez: Any = np.savez  # its stubs read **arrays as its own keyword options
        savez(buffer, **chosen)
        path = data.with_name(f"{data.stem}.{part}.npz")
        atomic_write(path, buffer.getvalue())
        parts.append(str(path))
    console.print(
        f"split {escape(str(data))}: {items - held} to train on ({escape(str(parts[0]))}), "
        f"{held} held out for the gate ({escape(str(parts[1]))})",
        highlight=False,
    )
    return parts[0], parts[1]


def _read_npz(path: Path, option: str = "--data") -> tuple[dict[str, np.ndarray], bool]:
    """An .npz's arrays and whether it was sealed (opened with the device key, in memory)."""
    import io
    import zipfile

    import numpy as np

    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from exc
    sealed = _is_sealed(blob)
    if sealed:
        from fogline.security import CAPTURES_PURPOSE, KeySource, unseal

        blob = unseal(blob, KeySource().load(), purpose=CAPTURES_PURPOSE)
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}, sealed
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{option} {path}: not a readable .npz file: {exc}") from exc


def _is_sealed(blob: bytes) -> bool:
    from fogline.security import is_sealed

    return is_sealed(blob)


def _opened(spec: str, option: str) -> str | Arrays:
    """``spec`` itself, or a sealed .npz's arrays opened in memory (never written in plain)."""
    from fogline.data import Arrays

    path = Path(spec)
    if not path.is_file():
        return spec
    with path.open("rb") as fh:
        head = fh.read(64)
    if not _is_sealed(head):
        return spec
    return Arrays(f"{spec} (sealed)", _read_npz(path, option)[0])
