"""Encryption at rest: the bundled digits pipeline with its store encrypted (SQLCipher) against plain.

- The digits example (``fogline.examples``' ``digits/pipeline.yaml``: raw digits
  → normalize → the digits model → classify → rules → a JSON-lines review
  sink, every result stored and queued in the outbox, delivered to a JSON-lines
  file), run as fast as it goes (its ``rate`` removed) for a fixed number of
  items; plain and ``store: {encrypt: true}`` runs interleaved (A B, B A, ...),
  each in a fresh folder; items/s per setting (median) and the loss against
  the target "at most 10 % lost".
- The store alone: ``ResultStore.add()`` rows a second, plain against
  encrypted, in batches of 32 (what the pipeline's writer groups) and of 1
  (one fsync per row: the worst case), interleaved the same way.

Runs in temporary folders on this machine's disk; both settings pay the same
fsyncs (WAL, ``synchronous=FULL``), so the difference is SQLCipher's page
encryption and HMAC.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fogline.examples import digits_model_path
from fogline.pipeline import Pipeline, parse_spec, plan
from fogline.security import KEY_ENV, DeviceKey, KeySource
from fogline.store import Result, ResultStore

TARGET_LOSS = 10.0  # per cent, the target


def _example() -> tuple[dict[str, Any], Path]:
    folder = digits_model_path().parent
    data = yaml.safe_load((folder / "pipeline.yaml").read_text())
    data["sources"][0].pop("rate", None)  # as fast as it goes: throughput, not pacing
    return data, folder


def _interleaved(calls: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    for index in range(rounds):
        for name, call in order if index % 2 == 0 else reversed(order):
            values[name].append(call())
            print(f"   round {index + 1}/{rounds} {name}: {values[name][-1]:,.0f}/s", flush=True)
    return values


def _spread(values: list[float]) -> str:
    return f"median of {len(values)}, {min(values):,.0f}..{max(values):,.0f}"


def _pipeline(work: Path, items: int, rounds: int, key: DeviceKey) -> list[str]:
    data, base = _example()

    def run(encrypt: bool) -> float:
        out = Path(tempfile.mkdtemp(dir=work))
        spec = parse_spec({**data, "store": {**data["store"], "encrypt": encrypt}}, base=base,
                          outputs=out)  # fmt: skip
        # The key as the environment would hand it over ($FOGLINE_DEVICE_KEY).
        checked = plan(spec, keys=KeySource(environ={KEY_ENV: key.hex()}))
        try:
            runner = Pipeline(checked)
            try:
                snap = runner.run(max_items=items)
            finally:
                runner.close()
        finally:
            checked.model.engine.close()
        processed = sum(per.get("processed", 0) for per in snap.counts.values())
        if processed != items:
            raise SystemExit(f"the digits pipeline processed {processed} of {items} items")
        return snap.throughput

    run(False)  # warm-up: model, imports, page cache
    rates = _interleaved({"plain": lambda: run(False), "encrypted": lambda: run(True)}, rounds)
    plain, encrypted = (statistics.median(rates[k]) for k in ("plain", "encrypted"))
    loss = 100 * (plain - encrypted) / plain
    verdict = "met" if loss <= TARGET_LOSS else "NOT met"
    print(f"   plain      {plain:,.0f} items/s ({_spread(rates['plain'])})")
    print(f"   encrypted  {encrypted:,.0f} items/s ({_spread(rates['encrypted'])})")
    return [
        f"digits pipeline (bundled example, {items:,} items, store + outbox): encrypted store "
        f"{encrypted:,.0f} items/s vs plain {plain:,.0f} items/s = {loss:.1f}% lost "
        f"(target at most {TARGET_LOSS:.0f}% lost: {verdict})"
    ]


def _adds(work: Path, rows: int, batch: int, rounds: int, key: DeviceKey) -> str:
    results = [
        Result("cam0", i, 1.0 + i, "digits", "3", {"label": str(i % 10), "score": 0.93}, sync=True)
        for i in range(batch)
    ]

    def run(encrypt: bool) -> float:
        with ResultStore(Path(tempfile.mkdtemp(dir=work)) / "r.db",
                         key=key if encrypt else None) as store:  # fmt: skip
            started = time.perf_counter()
            for _ in range(rows // batch):
                store.add(results)
            return rows / (time.perf_counter() - started)

    rates = _interleaved({"plain": lambda: run(False), "encrypted": lambda: run(True)}, rounds)
    plain, encrypted = (statistics.median(rates[k]) for k in ("plain", "encrypted"))
    return (
        f"ResultStore.add(), batches of {batch}, {rows:,} rows (each queued in the outbox): "
        f"encrypted {encrypted:,.0f} rows/s vs plain {plain:,.0f} rows/s = "
        f"{100 * (plain - encrypted) / plain:.1f}% lost"
    )


def run(quick: bool) -> list[str]:
    items, rounds = (3_000, 2) if quick else (30_000, 6)
    print(
        f"\nStore encryption (SQLCipher 4, AES-256 + HMAC-SHA512 per page): the digits example, "
        f"{items:,} items a run, {rounds} runs per setting, interleaved"
    )
    key = DeviceKey.generate()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        lines = _pipeline(work, items, rounds, key)
        print("   the store alone: ResultStore.add()")
        lines.append(_adds(work, 1_600 if quick else 16_000, 32, rounds, key))
        lines.append(_adds(work, 100 if quick else 1_000, 1, rounds, key))
    for line in lines:
        print(f"   {line}")
    return lines
