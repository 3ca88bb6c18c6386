"""Converters: PyTorch and scikit-learn models exported to ONNX compute what the originals do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from fogline.errors import ModelFormatError
from fogline.model import Engine, load_engine, load_onnx, sklearn_to_onnx, torch_to_onnx

# --- PyTorch ---------------------------------------------------------------------------------


class SmallNet(torch.nn.Module):
    """Conv → ReLU → Flatten → Linear on 8x8 single-channel images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.relu = torch.nn.ReLU()
        self.flatten = torch.nn.Flatten()
        self.linear = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(self.relu(self.conv(x))))


class DataDependent(torch.nn.Module):
    """Branches on a tensor's value, which ``torch.export`` cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


@pytest.fixture(scope="module")
def small_net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture(scope="module")
def small_net_onnx(small_net: SmallNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torch") / "small.onnx"
    return torch_to_onnx(
        small_net, torch.randn(2, 1, 8, 8), path, input_names=("pixels",), output_names=("logits",)
    )


def test_torch_export_has_a_symbolic_batch_dim(small_net_onnx: Path):
    # Execute
    model = load_onnx(small_net_onnx)

    # Assert
    (graph_input,) = model.graph.input
    first, *rest = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "pixels"
    assert first.dim_param == "batch"
    assert [d.dim_value for d in rest] == [1, 8, 8]
    assert [o.name for o in model.graph.output] == ["logits"]


@pytest.mark.parametrize("batch", [1, 7])
def test_torch_export_computes_what_torch_does(
    batch: int, small_net: SmallNet, small_net_onnx: Path, eval_pixels: np.ndarray
):
    # Prepare
    pixels = eval_pixels[:batch]
    engine = load_engine(small_net_onnx)

    # Execute
    ours = engine.run({"pixels": pixels})["logits"]
    with torch.no_grad():
        theirs = small_net(torch.from_numpy(pixels)).numpy()

    # Assert
    assert ours.shape == (batch, 10)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_torch_export_failure_is_a_model_format_error_and_leaves_nothing(tmp_path: Path):
    # Execute
    with pytest.raises(ModelFormatError, match="DataDependent"):
        torch_to_onnx(DataDependent(), torch.randn(2, 3), tmp_path / "bad.onnx")

    # Assert
    assert list(tmp_path.iterdir()) == []


# --- scikit-learn ----------------------------------------------------------------------------

CLASSIFIERS = {
    "logistic_regression": lambda: LogisticRegression(max_iter=2000),
    "random_forest": lambda: RandomForestClassifier(n_estimators=25, random_state=0),
}


@pytest.fixture(scope="module", params=CLASSIFIERS, ids=CLASSIFIERS)
def fitted(
    request: pytest.FixtureRequest,
    train_split: tuple[np.ndarray, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[object, Engine]:
    """A classifier fitted on the flattened digits, and the engine running its export."""
    features, labels = train_split
    # Two OpenBLAS copies (numpy's, scipy's) and OpenMP spinning against each other make the
    # lbfgs fit take seconds on a small machine; one thread does it in milliseconds.
    with threadpool_limits(limits=1):
        estimator = CLASSIFIERS[request.param]().fit(features, labels)
    path = tmp_path_factory.mktemp("sklearn") / f"{request.param}.onnx"
    return estimator, load_engine(sklearn_to_onnx(estimator, 64, path))


@pytest.fixture(scope="module")
def eval_features(eval_pixels: np.ndarray) -> np.ndarray:
    return eval_pixels.reshape(len(eval_pixels), -1)


def test_sklearn_export_has_plain_tensor_outputs(fitted: tuple[object, Engine]):
    _, engine = fitted
    signature = engine.signature
    assert signature.input_names == ("input",)
    assert signature.inputs[0].shape == (None, 64)
    assert signature.output_names == ("label", "probabilities")
    assert signature.outputs[1].dtype == "float32"


def test_sklearn_export_gives_the_same_probabilities(
    fitted: tuple[object, Engine], eval_features: np.ndarray
):
    # Prepare
    estimator, engine = fitted

    # Execute
    probabilities = engine.run({"input": eval_features})["probabilities"]

    # Assert
    np.testing.assert_allclose(
        probabilities, estimator.predict_proba(eval_features), rtol=0, atol=1e-4
    )


def test_sklearn_export_gives_the_same_labels(
    fitted: tuple[object, Engine], eval_features: np.ndarray
):
    # Prepare: a forest's vote can tie (e.g. 7/25 for two classes); sklearn takes the first
    # tied class, ONNX Runtime whichever its float32 sum puts ahead, so a tie has no one answer.
    estimator, engine = fitted
    expected = estimator.predict(eval_features)
    probabilities = estimator.predict_proba(eval_features)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 1e-4

    # Execute
    labels = engine.run({"input": eval_features})["label"]

    # Assert
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(labels[clear], expected[clear])
    for row in np.flatnonzero(~clear):
        tied = np.flatnonzero(probabilities[row] >= probabilities[row].max() - 1e-4)
        assert labels[row] in estimator.classes_[tied]


def test_sklearn_export_failure_is_a_model_format_error_and_leaves_nothing(tmp_path: Path):
    with pytest.raises(ModelFormatError, match="LogisticRegression"):
        sklearn_to_onnx(LogisticRegression(), 64, tmp_path / "unfitted.onnx")
    assert list(tmp_path.iterdir()) == []


def test_sklearn_export_writes_a_checked_model(fitted: tuple[object, Engine], tmp_path: Path):
    estimator, _ = fitted
    path = sklearn_to_onnx(estimator, 64, tmp_path / "model.onnx", input_name="features")
    onnx.checker.check_model(str(path))
    assert [i.name for i in load_onnx(path).graph.input] == ["features"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
