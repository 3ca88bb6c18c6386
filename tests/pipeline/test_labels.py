"""Item ids and late labels in a real pipeline: the digits model in ONNX Runtime, a real store."""

from __future__ import annotations

import json
from pathlib import Path

from fogline.pipeline import Pipeline, load_spec, plan
from support.digits_pipeline import digits_spec, write_spec


def run_to_end(path: Path, max_items: int | None = None) -> Pipeline:
    checked = plan(load_spec(path))
    pipeline = Pipeline(checked)
    try:
        pipeline.run(max_items=max_items)
    finally:
        checked.model.engine.close()
    return pipeline


def test_every_result_names_its_item_by_the_id_the_data_carried_or_one_the_run_made(
    tmp_path: Path,
) -> None:
    # Prepare: a data set (ids name#index), a CSV with an id column, a CSV without one
    rows = ["id,t," + ",".join(f"p{i}" for i in range(64))]
    rows += [f"meter-{n},{n * 0.01},{','.join(['0.5'] * 64)}" for n in range(3)]
    (tmp_path / "with.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "without.csv").write_text(
        "\n".join([",".join(f"p{i}" for i in range(64)), ",".join(["0.1"] * 64)]) + "\n"
    )
    sources = [
        {"type": "dataset", "name": "digits", "function": "fogline.examples:digits_eval",
         "max_items": 3},
        {"type": "csv", "name": "meter", "path": "with.csv", "id_column": "id",
         "time_column": "t", "speed": 0},
        {"type": "csv", "name": "bare", "path": "without.csv"},
    ]  # fmt: skip
    path = write_spec(
        tmp_path, digits_spec(sources=sources, preprocess=[{"type": "reshape", "shape": [1, 8, 8]}])
    )

    # Execute
    pipeline = run_to_end(path)
    assert pipeline.store is not None
    with pipeline.store as store:
        results = [record.result for record in store.query()]
        pending = store.pending()

    # Assert
    ids = {(r.source, r.sequence): r.item_id for r in results}
    assert [ids[("digits", n)] for n in range(3)] == [
        f"fogline.examples:digits_eval#{n}" for n in range(3)
    ]
    assert [ids[("meter", n)] for n in range(3)] == ["meter-0", "meter-1", "meter-2"]
    assert ids[("bare", 0)] == f"{pipeline.run_id}-bare-0"
    assert len(pipeline.run_id) == 8 and pending == []
    assert json.loads(json.dumps(results[0].to_dict()))["item_id"] == results[0].item_id
