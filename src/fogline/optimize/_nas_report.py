"""The architecture search's part of ``report.html``: every candidate and the Pareto plot."""

from __future__ import annotations

import html

from fogline.optimize._nas_result import NasResult
from fogline.optimize._svg import svg_of


def pareto_svg(result: NasResult) -> str:
    """The metric against measured latency: every candidate, the front, the budget, the choice."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p><em>Install matplotlib to see the Pareto plot.</em></p>"
    ok = [c for c in result.candidates if c.ok]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    others = [c for c in ok if not c.on_front]
    ax.scatter(
        [c.latency_ms for c in others],
        [float(c.metric or 0.0) for c in others],
        s=28,
        color="tab:gray",
        alpha=0.7,
        label="candidate",
        zorder=2,
    )
    front = result.front
    ax.plot(
        [c.latency_ms for c in front],
        [float(c.metric or 0.0) for c in front],
        "o-",
        drawstyle="steps-post",
        color="tab:blue",
        label="Pareto front",
        zorder=3,
    )
    for index, c in enumerate(front):  # labels staggered: front points sit close together
        ax.annotate(
            "/".join(f"{v:g}" for v in c.knobs.values()),
            (c.latency_ms, float(c.metric or 0.0)),
            textcoords="offset points",
            xytext=(6, -12 if index % 2 else 4),
            fontsize=7,
        )
    chosen = result.chosen
    if chosen is not None:
        ax.scatter(
            [chosen.latency_ms],
            [float(chosen.metric or 0.0)],
            s=110,
            facecolors="none",
            edgecolors="tab:green",
            linewidths=2,
            label="chosen",
            zorder=4,
        )
    ax.axvline(result.budget_ms, color="tab:red", ls="--", lw=1, label="latency budget")
    ax.set_xscale("log")
    ax.margins(x=0.12)
    ax.set_xlabel(f"latency p50 at batch {result.batch} (ms, log scale), measured here")
    ax.set_title("front labelled " + "/".join(result.candidates[0].knobs), fontsize=9)
    ax.set_ylabel(f"{result.metric} after {result.epochs} epoch(s)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    return svg_of(fig)


def nas_html(result: NasResult) -> str:
    """The search section of the report: what was searched, the plot, and every candidate."""
    heads = ["knobs", "params", f"p50 ms b{result.batch}", result.metric, "front", "verdict"]
    rows = []
    for c in sorted(result.candidates, key=lambda c: (not c.ok, c.latency_ms)):
        if not c.ok:
            verdict = f"failed: {c.error}"
        elif c.chosen:
            verdict = "chosen"
        elif not c.within_budget:
            verdict = "over the budget"
        else:
            verdict = "inside the budget"
        cells = [
            c.label + (" ★" if c.chosen else ""),
            f"{c.params:,}",
            f"{c.latency_ms:.4f}" if c.ok else "",
            f"{c.metric:.2f}" if c.metric is not None else "",
            "yes" if c.on_front else "",
            verdict,
        ]
        cls = "sel" if c.chosen else ("bad" if not c.ok else "")
        rows.append(
            f'<tr class="{cls}">'
            + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells)
            + "</tr>"
        )
    chosen = result.chosen
    final = (
        ""
        if chosen is None or result.final_metric is None
        else f" Trained for {result.final_epochs} epochs, the chosen network scored "
        f"{result.metric} {result.final_metric:.2f} on the eval data; it is the "
        "ort-fp32 baseline of the variants above."
    )
    return f"""<h2>Architecture search</h2>
<p>Family <code>{html.escape(result.family)}</code>: {html.escape(result.describe())};
latency budget {result.budget_ms:g} ms; {result.search_seconds:.0f} s.
Chosen: <b>{html.escape(chosen.label if chosen else "none")}</b>.{html.escape(final)}</p>
{pareto_svg(result)}
<table><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in heads)}</tr>{"".join(rows)}</table>
"""
