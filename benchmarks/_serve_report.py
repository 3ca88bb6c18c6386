"""bench_serve.py's rows and report: the table, the targets' verdicts, and why BentoML has no row.

Split from bench_serve.py (which runs the servers and the load); the output is unchanged.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass(frozen=True)
class Target:
    """One server row: where to send, which model, over which load."""

    url: str
    model: str
    protocol: str  # "http" or "grpc"


@dataclass
class Cell:
    rate: float
    p50: float
    p99: float
    requests: int


BENTOML_WHY = (
    "its HTTP API takes JSON or multipart bodies, not the OIP binary tensor extension that this "
    "tritonclient load generator speaks (its pickle format is refused from outside clients), and "
    "one 3x224x224 FP32 image as a JSON list is over 1 MB of text per request, which on these 2 "
    "cores would measure JSON parsing rather than serving"
)


def bentoml_line(args: Namespace) -> str:
    """Why BentoML has no row: whether it can be fetched here, and why it is not driven."""
    if args.no_bentoml:
        return "BentoML: not measured (--no-bentoml)"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, "bentoml"],
                check=True,
                capture_output=True,
                timeout=120,
            )
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
            return f"BentoML: not measured (pip could not fetch it here: {type(exc).__name__})"
        wheels = sorted(p.name for p in Path(tmp).glob("bentoml-*"))
    version = wheels[0].split("-")[1] if wheels else "?"
    fetched = f"bentoml {version} is fetched from the registry here (and installs)"
    return f"BentoML: not measured ({fetched}, but {BENTOML_WHY})"


def report(
    cells: dict[tuple[str, int], list[Cell]],
    targets: dict[str, Target],
    args: Namespace,
    bare1: str,
    bare_full: str,
    floor: str,
) -> str:
    def median(name: str, concurrency: int, field: str) -> float:
        return statistics.median(getattr(c, field) for c in cells[(name, concurrency)])

    header = [
        "| server | load | concurrency | req/s | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    print()
    print("\n".join(header))
    table = []
    for name, target in targets.items():
        for concurrency in args.concurrency:
            rate, p50, p99 = (median(name, concurrency, f) for f in ("rate", "p50", "p99"))
            spread = [c.rate for c in cells[(name, concurrency)]]
            row = (
                f"| {name} | {target.protocol} | {concurrency} | {rate:.1f} | {p50:.2f} | "
                f"{p99:.2f} |"
            )
            table.append(row)
            print(f"{row}  (req/s range {min(spread):.1f}..{max(spread):.1f})")
    lines = [*header, *table]

    # The targets: each fogline row against each rival on the same load.
    for protocol, want in (("http", 1.1), ("grpc", 1.0)):
        ours = [n for n, t in targets.items() if t.protocol == protocol and n.startswith("fogline")]
        rivals = [n for n, t in targets.items() if t.protocol == protocol and n not in ours]
        for rival in rivals:
            wanted = want if rival.startswith("naive") or rival.startswith("MLServer") else None
            for concurrency in args.concurrency:
                theirs, their_p99 = (
                    median(rival, concurrency, "rate"),
                    median(rival, concurrency, "p99"),
                )
                for name in ours:
                    rate, p99 = median(name, concurrency, "rate"), median(name, concurrency, "p99")
                    ratio = rate / theirs
                    goal = (
                        ""
                        if wanted is None
                        else f" (target >= {wanted:g}x: {verdict(ratio >= wanted)})"
                    )
                    p99_goal = (
                        "" if wanted is None else f" (target lower: {verdict(p99 < their_p99)})"
                    )
                    lines.append(
                        f"{protocol} c={concurrency} {name} vs {rival}: {rate:.1f} vs {theirs:.1f} "
                        f"req/s = {ratio:.2f}x{goal}; p99 {p99:.1f} vs {their_p99:.1f} ms{p99_goal}"
                    )
    if (bare_full, 32) in cells:
        naive = next(n for n in targets if n.startswith("naive"))
        full_rate, naive_rate = median(bare_full, 32, "rate"), median(naive, 32, "rate")
        lines.append(
            f"in-process reference, {args.threads} threads: bare session.run batch "
            f"{args.max_batch}, one batch at a time, {full_rate:.1f} items/s = "
            f"{full_rate / naive_rate:.2f}x the naive server's c=32 rate: what batching alone "
            "buys on these cores, with no server work at all"
        )
    if (bare1, 1) in cells:
        b1_rate, b1_p50 = median(bare1, 1, "rate"), median(bare1, 1, "p50")
        floor_p50 = median(floor, 1, "p50")
        lines.append(
            f"in-process reference, {args.threads} threads: bare session.run batch 1 p50 "
            f"{b1_p50:.2f} ms ({b1_rate:.1f} items/s)"
        )
        lines.append(
            f"c=1 floor (uvloop + httptools, no framework, no model, a canned answer): p50 "
            f"round trip {floor_p50:.2f} ms, p99 {median(floor, 1, 'p99'):.2f} ms: "
            "what this client and loopback cost before any server work"
        )
        for name, target in targets.items():
            if target.protocol != "http":
                continue
            # The difference within each round (adjacent cells), then the median over rounds.
            extras = [
                served.p50 - bare.p50
                for served, bare in zip(cells[(name, 1)], cells[(bare1, 1)], strict=True)
            ]
            extra = statistics.median(extras)
            bound = 1.5 * floor_p50
            target_text = (
                f" (target <= 1.5x the floor = {bound:.2f} ms: {verdict(extra <= bound)})"
                if name.startswith("fogline")
                else ""
            )
            lines.append(
                f"c=1 {name}: p50 round trip {median(name, 1, 'p50'):.2f} ms, bare run p50 "
                f"{b1_p50:.2f} ms; added {extra:+.2f} ms (median of per-round differences)"
                f"{target_text}"
            )
    return "\n".join(lines)
