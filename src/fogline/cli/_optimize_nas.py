"""``fogline optimize --nas``: the architecture search's table, then the usual variant search."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from fogline.cli._app import console, counted_progress
from fogline.cli._optimize import _loose_signature, print_report, with_bar
from fogline.optimize import (
    NasOptions,
    NasResult,
    OptimizeOptions,
    Report,
    family_names,
    load_dataset,
    load_family,
    nas_finish,
    nas_search,
)


def run_nas(
    spec: str, train: str, evaluation: str, out: Path, search: NasOptions, options: OptimizeOptions
) -> Report:
    """Search the family with a counted bar, print its table, then the usual variant search.

    The candidates are ranked on a part of ``train`` held out for it; ``evaluation``
    judges only the chosen network and its variants.
    """
    family = load_family(spec)
    signature = _loose_signature(family_names(family)[0])
    train_data, eval_data = load_dataset(train, signature), load_dataset(evaluation, signature)
    with counted_progress("candidate") as bar:
        task = bar.add_task("building", total=None)

        def on_candidate(label: str, done: int, total: int) -> None:
            bar.update(task, description=escape(label), completed=done, total=total)

        result = nas_search(
            family, train_data, None, search, options, name=spec, progress=on_candidate
        )
    console.print(nas_table(result))
    if options.name is None:
        options.name = spec.partition(":")[2]
    report = with_bar(
        lambda step: nas_finish(family, result, train_data, eval_data, out, options, step)
    )
    chosen = result.chosen
    assert chosen is not None and result.final_metric is not None
    console.print(
        f"chosen {chosen.label}: {result.metric} {result.final_metric:.4g} on the eval data after "
        f"{result.final_epochs} epochs; search {result.search_seconds:.0f} s"
    )
    print_report(report, out)
    return report


def nas_table(result: NasResult) -> Table:
    """Every candidate, fastest first: knobs, latency, metric, on the front or not."""
    table = Table(title=f"architecture search: {escape(result.describe())}")
    for column in (
        "candidate",
        "params",
        f"p50 ms b{result.batch}",
        f"val {result.metric}",
        "front",
    ):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    table.add_column("verdict")
    for c in sorted(result.candidates, key=lambda c: (not c.ok, c.latency_ms)):
        if not c.ok:
            table.add_row(c.label, "", "", "", "", f"[red]failed: {escape(c.error or '')}[/]")
            continue
        if c.chosen:
            verdict = "[bold green]chosen[/]"
        elif c.within_budget:
            verdict = "inside the budget"
        else:
            verdict = f"[dim]over {result.budget_ms:g} ms[/]"
        table.add_row(
            c.label,
            f"{c.params:,}",
            f"{c.latency_ms:.4f}",
            f"{c.metric:.4g}",  # accuracy in % or mAP in [0, 1]: four figures either way
            "●" if c.on_front else "",
            verdict,
        )
    return table
