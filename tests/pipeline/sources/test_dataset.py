"""The dataset source: .npz files and Python functions, through fogline.data.load_dataset."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fogline.errors import ConfigError
from fogline.pipeline.sources import DatasetSpec


def test_npz_x_and_y_replay_item_by_item_with_labels(tmp_path: Path, reader) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(12, dtype=np.float32).reshape(3, 2, 2), y=np.array([7, 8, 9]))
    spec = DatasetSpec(path=path)

    items = reader(spec.build("data"), 10)

    assert spec.output().shape == (2, 2) and spec.output().dtype == "float32"
    assert [i.meta["label"] for i in items] == ["7", "8", "9"]
    assert items[1].data.tolist() == [[4, 5], [6, 7]]
    assert items[2].meta["position"] == "d.npz#2"


def test_function_returning_x_or_x_and_y(tmp_path: Path, monkeypatch, reader) -> None:
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "def only_x():\n    return np.ones((2, 5), np.uint8)\n"
        "def pairs():\n    return np.zeros((4, 3), np.float32), np.array(['a', 'b', 'c', 'd'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    only_x = reader(DatasetSpec(function="mydata:only_x").build("data"), 10)
    pairs = reader(DatasetSpec(function="mydata:pairs").build("data"), 10)

    assert len(only_x) == 2 and "label" not in only_x[0].meta and only_x[0].data.shape == (5,)
    assert [i.meta["label"] for i in pairs] == ["a", "b", "c", "d"]


def test_the_digits_example_replays_with_the_models_input_shape(reader) -> None:
    spec = DatasetSpec(function="fogline.examples:digits_eval")

    items = reader(spec.build("digits"), 3)

    assert spec.output().shape == (1, 8, 8) and spec.output().dtype == "float32"
    assert items[0].data.shape == (1, 8, 8) and items[0].meta["label"].isdigit()


def test_items_are_copies_so_stages_cannot_change_the_data_set(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 3), np.float32))
    spec = DatasetSpec(path=path, loop=True)
    stream = spec.build("data").read(threading.Event())

    first = next(stream)
    first.data[:] = 5  # type: ignore[union-attr]
    next(stream)
    again = next(stream)

    assert again.data.tolist() == [0, 0, 0]  # type: ignore[union-attr]


def test_bad_data_sets_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros((2, 3)), b=np.zeros((2, 3)))

    with pytest.raises(ConfigError, match="holds arrays a, b"):
        DatasetSpec(path=path).output()
    with pytest.raises(ValidationError, match="either `path`"):
        DatasetSpec()
    with pytest.raises(ValidationError, match="module:function"):
        DatasetSpec(function="not a function")
    with pytest.raises(ConfigError, match="cannot import"):
        DatasetSpec(function="fogline.examples:nothing_here").output()
