"""The fine-tuning report: ``report.json`` (every figure), ``report.md`` (for people), a plot.

The plot (``report.png``: accuracy of the current model and the candidate on
both sets, and the training curve) is drawn only when matplotlib is
installed; the report says so when it is not.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

__all__ = ["markdown", "write_reports"]


def write_reports(folder: Path, report: dict[str, Any]) -> None:
    """Write ``report.json``, ``report.md`` and, with matplotlib, ``report.png`` into ``folder``."""
    plot = _plot(folder / "report.png", report)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(report, plot))


def markdown(report: dict[str, Any], plot: bool = False) -> str:
    """The report as markdown: the verdict, both models on both sets, how it was trained."""
    gate, current, training = report["gate"], report["current"], report["training"]
    candidate = report["candidate"]
    title = f"{current['name']} {current['version']}"
    verdict = "passed" if report["passed"] else "FAILED"
    lines = [
        f"# Fine-tuning {title}: the gate {verdict}",
        "",
        gate["reason"][0].upper() + gate["reason"][1:] + ".",
        "",
    ]
    if candidate is not None:
        lines += [
            f"The candidate is {candidate['name']} {candidate['version']} "
            f"(model sha256 `{candidate['sha256'][:16]}…`), in this folder.",
            "",
        ]
    else:
        lines += ["No candidate model is kept: this folder holds the reports only.", ""]
    lines += [
        f"| accuracy | current {current['version']} | candidate | change |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in (("holdout", "held-out new data"), ("original", "original data")):
        old, new = gate[key]["current"], gate[key]["candidate"]
        items = report[key]["items"]
        lines.append(
            f"| {label} ({items} items) | {old:.2%} | {new:.2%} | {(new - old) * 100:+.2f} pts |"
        )
    lines += [
        "",
        f"The gate: at least {gate['min_gain'] * 100:.2f} points better on the held-out new data "
        f"(measured {gate['gain'] * 100:+.2f}), at most {gate['max_forgetting'] * 100:.2f} "
        f"points lost on the original data (measured {gate['forgetting'] * 100:+.2f}); both "
        "models run in ONNX Runtime.",
        "",
        "## Training",
        "",
        f"- {training['method']}",
        f"- {report['data']['items']} labelled items from `{report['data']['spec']}`, "
        f"{training['epochs']} epochs, batch {training['batch_size']}, learning rate "
        f"{training['learning_rate']}, L2 to the old weights {training['l2']}, seed "
        f"{training['seed']}; {training['seconds']:.1f} s",
    ]
    history = training["history"]
    if history:
        last = history[-1]
        lines.append(
            f"- last epoch: loss {last['loss']:.4f}, training accuracy {last['accuracy']:.2%}"
        )
    if report.get("replay"):
        lines.append(
            f"- with {report['replay']['items']} items of `{report['replay']['spec']}` replayed "
            "among them (so the candidate keeps what it knew)"
        )
    lines += ["", "## Data", ""]
    for key, label in (
        ("data", "trained on"),
        ("replay", "replayed"),
        ("holdout", "held out"),
        ("original", "original"),
    ):
        entry = report.get(key)
        if entry is None:
            continue
        lines.append(
            f"- {label}: `{entry['spec']}`, {entry['items']} items, sha256 `{entry['sha256'][:16]}…`"
        )
    lines.append(f"- current model: sha256 `{current['sha256'][:16]}…`")
    if plot:
        lines += ["", "![accuracy and training curve](report.png)"]
    return "\n".join(lines) + "\n"


def _plot(path: Path, report: dict[str, Any]) -> bool:
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gate, history = report["gate"], report["training"]["history"]
    figure, (bars, curve) = plt.subplots(1, 2, figsize=(9, 3.2))
    sets = ["held-out new", "original"]
    for offset, who in ((-0.2, "current"), (0.2, "candidate")):
        values = [100 * gate["holdout"][who], 100 * gate["original"][who]]
        bars.bar([i + offset for i in range(2)], values, width=0.4, label=who)
    bars.set_xticks(range(2), sets)
    bars.set_ylabel("accuracy (%)")
    bars.set_ylim(0, 100)
    bars.legend(loc="lower right")
    bars.set_title("passed" if report["passed"] else "failed the gate")
    epochs = [h["epoch"] for h in history]
    curve.plot(epochs, [h["loss"] for h in history], label="loss")
    curve.plot(epochs, [h["accuracy"] for h in history], label="training accuracy")
    curve.set_xlabel("epoch")
    curve.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True
