"""The client trainer: one small interface, a numpy softmax trainer and a PyTorch one.

A :class:`ClientTrainer` takes the global :class:`~fogline.federated.strategy.Weights`,
the client's own ``(X, y)`` and the round's configuration from the strategy
(``epochs`` to override the local epochs, ``mu`` for FedProx's proximal term)
and returns an :class:`~fogline.federated.strategy.Update` carrying how many
examples it trained on. :meth:`ClientTrainer.evaluate` gives loss and accuracy
of some weights on a labelled set, for the server-side evaluation.

* :class:`SoftmaxTrainer` is plain numpy: multinomial logistic regression
  (``W`` of shape ``(features, classes)`` and ``b``), so a device without torch
  can still take part.
* :class:`TorchTrainer` trains a ``torch.nn.Module`` with SGD on the CPU
  (the ``train`` extra, imported when the trainer is made). Its weights are
  the module's floating-point ``state_dict`` entries, converted by
  :func:`weights_from_module` and :func:`load_weights`.

Both are synchronous and CPU-bound; each call trains one client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fogline.errors import ConfigError, DataError
from fogline.federated.strategy import Update, Weights, proximal_gradient
from fogline.model import require

__all__ = [
    "ClientTrainer",
    "Evaluation",
    "SoftmaxTrainer",
    "TorchTrainer",
    "load_weights",
    "weights_from_module",
]

Data = tuple[npt.NDArray[Any], npt.NDArray[Any]]


@dataclass(frozen=True)
class Evaluation:
    """Mean cross-entropy loss and accuracy (0..1) of some weights on a labelled set."""

    loss: float
    accuracy: float


def _check_data(data: Data) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    X, y = np.asarray(data[0]), np.asarray(data[1])
    if X.ndim < 2 or y.ndim != 1 or len(X) != len(y) or len(y) == 0:
        raise DataError(
            f"training data must be X of shape (n, ...) and y of shape (n,) with n >= 1, "
            f"not {X.shape} and {y.shape}"
        )
    if y.dtype.kind not in "iu":
        raise DataError(f"labels must be integers, not {y.dtype}")
    return X, y.astype(np.int64)


class ClientTrainer(ABC):
    """Local training on one client's data; subclasses implement :meth:`fit` and :meth:`evaluate`."""

    def __init__(self, *, lr: float = 0.1, batch_size: int = 32, epochs: int = 1) -> None:
        if not (np.isfinite(lr) and lr > 0):
            raise ConfigError(f"the learning rate must be a positive number, not {lr!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"the batch size must be a positive integer, not {batch_size!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"local epochs must be a positive integer, not {epochs!r}")
        self.lr = float(lr)
        self.batch_size = batch_size
        self.epochs = epochs

    @abstractmethod
    def fit(
        self,
        client: str,
        weights: Weights,
        data: Data,
        config: Mapping[str, Any],
        rng: np.random.Generator,
    ) -> Update:
        """Train from ``weights`` on ``data`` for the configured epochs; the client's update."""

    @abstractmethod
    def evaluate(self, weights: Weights, data: Data) -> Evaluation:
        """Loss and accuracy of ``weights`` on ``data``."""

    def _round_settings(self, config: Mapping[str, Any]) -> tuple[int, float]:
        epochs = int(config.get("epochs", self.epochs))
        mu = float(config.get("mu", 0.0))
        if epochs < 1 or not mu >= 0:
            raise ConfigError(f"round config: epochs {epochs} and mu {mu} must be >= 1 and >= 0")
        return epochs, mu

    def _batches(self, n: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
        order = rng.permutation(n)
        return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]


def _softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


class SoftmaxTrainer(ClientTrainer):
    """Softmax (multinomial logistic) regression in numpy: weights ``W`` (features, classes) and ``b``.

    Inputs are flattened to ``(n, features)``. Mini-batch SGD on the mean
    cross-entropy, plus FedProx's ``mu * (w - w_global)`` when the round asks.

    >>> trainer = SoftmaxTrainer(lr=0.5, batch_size=4)
    >>> X, y = np.eye(4, dtype=np.float32), np.array([0, 1, 0, 1])
    >>> start = SoftmaxTrainer.initial_weights(features=4, classes=2)
    >>> update = trainer.fit("dev-1", start, (X, y), {}, np.random.default_rng(0))
    >>> update.num_examples, trainer.evaluate(update.weights, (X, y)).accuracy
    (4, 1.0)
    """

    @staticmethod
    def initial_weights(features: int, classes: int) -> Weights:
        """Zero weights for ``features`` inputs and ``classes`` outputs."""
        return Weights(
            {"W": np.zeros((features, classes), np.float32), "b": np.zeros(classes, np.float32)}
        )

    @staticmethod
    def check_weights(weights: Weights) -> None:
        """Raise :class:`ConfigError` unless ``weights`` are ``W`` (features, classes) and ``b`` (classes,)."""
        if list(weights) != ["W", "b"]:
            raise ConfigError(f"softmax weights are 'W' and 'b', not {list(weights)}")
        W, b = weights["W"], weights["b"]
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ConfigError(
                f"softmax weights need W of shape (features, classes) and b of shape (classes,), "
                f"not {W.shape} and {b.shape}"
            )

    def _inputs(self, weights: Weights, X: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        flat = X.reshape(len(X), -1).astype(np.float64)
        if flat.shape[1] != weights["W"].shape[0]:
            raise DataError(
                f"inputs have {flat.shape[1]} features, W expects {weights['W'].shape[0]}"
            )
        return flat

    def fit(
        self,
        client: str,
        weights: Weights,
        data: Data,
        config: Mapping[str, Any],
        rng: np.random.Generator,
    ) -> Update:
        self.check_weights(weights)
        X, y = _check_data(data)
        inputs = self._inputs(weights, X)
        epochs, mu = self._round_settings(config)
        W = weights["W"].astype(np.float64)
        b = weights["b"].astype(np.float64)
        for _ in range(epochs):
            for idx in self._batches(len(y), rng):
                p = _softmax(inputs[idx] @ W + b)
                p[np.arange(len(idx)), y[idx]] -= 1.0
                grad = Weights({"W": inputs[idx].T @ p / len(idx), "b": p.mean(axis=0)})
                if mu:
                    now = Weights({"W": W, "b": b})
                    prox = proximal_gradient(now, weights, mu)
                    grad = grad.like(grad.vector() + prox.vector())
                W = W - self.lr * grad["W"]
                b = b - self.lr * grad["b"]
        trained = Weights({"W": W.astype(weights["W"].dtype), "b": b.astype(weights["b"].dtype)})
        return Update(client, trained, len(y))

    def evaluate(self, weights: Weights, data: Data) -> Evaluation:
        self.check_weights(weights)
        X, y = _check_data(data)
        p = _softmax(self._inputs(weights, X) @ weights["W"].astype(np.float64) + weights["b"])
        loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
        return Evaluation(loss, float((p.argmax(axis=1) == y).mean()))


def weights_from_module(module: Any) -> Weights:
    """The floating-point entries of ``module.state_dict()`` as :class:`Weights` (numpy copies)."""
    arrays = {
        name: tensor.detach().cpu().numpy().copy()
        for name, tensor in module.state_dict().items()
        if tensor.is_floating_point()
    }
    if not arrays:
        raise ConfigError(f"{type(module).__name__} has no floating-point parameters to train")
    return Weights(arrays)


def load_weights(module: Any, weights: Weights) -> None:
    """Copy ``weights`` into ``module``'s matching ``state_dict`` entries (names and shapes must agree)."""
    import torch

    state = module.state_dict()
    expected = [n for n, t in state.items() if t.is_floating_point()]
    if list(weights) != expected:
        raise ConfigError(f"weights {list(weights)} do not match the module's {expected}")
    for name, array in weights.items():
        if tuple(state[name].shape) != array.shape:
            raise ConfigError(
                f"tensor {name!r} has shape {array.shape}, the module {tuple(state[name].shape)}"
            )
        state[name] = torch.from_numpy(np.array(array, copy=True)).to(state[name].dtype)
    module.load_state_dict(state)


class TorchTrainer(ClientTrainer):
    """SGD on a ``torch.nn.Module`` (the ``train`` extra), with cross-entropy on integer labels.

    ``module`` is the one network every client trains in turn: its weights are
    loaded from the global ones before each :meth:`fit`. FedProx's term is
    added as ``mu/2 * ||w - w_global||²`` to the loss when the round has ``mu``.
    """

    def __init__(
        self, module: Any, *, lr: float = 0.05, batch_size: int = 32, epochs: int = 1
    ) -> None:
        require("torch", "train")
        import torch

        if not isinstance(module, torch.nn.Module):
            raise ConfigError(
                f"a torch trainer needs a torch.nn.Module, not {type(module).__name__}"
            )
        super().__init__(lr=lr, batch_size=batch_size, epochs=epochs)
        self.module = module

    def initial_weights(self) -> Weights:
        """The module's weights as they are now."""
        return weights_from_module(self.module)

    def fit(
        self,
        client: str,
        weights: Weights,
        data: Data,
        config: Mapping[str, Any],
        rng: np.random.Generator,
    ) -> Update:
        import torch

        X, y = _check_data(data)
        epochs, mu = self._round_settings(config)
        load_weights(self.module, weights)
        inputs, labels = torch.from_numpy(np.ascontiguousarray(X, np.float32)), torch.from_numpy(y)
        params = dict(self.module.named_parameters())
        anchors = {n: torch.from_numpy(np.array(weights[n])) for n in params if n in weights}
        optimizer = torch.optim.SGD(self.module.parameters(), lr=self.lr)
        self.module.train()
        for _ in range(epochs):
            for idx in self._batches(len(y), rng):
                index = torch.from_numpy(idx)
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.module(inputs[index]), labels[index])
                if mu:
                    prox = sum(((params[n] - a) ** 2).sum() for n, a in anchors.items())
                    loss = loss + 0.5 * mu * prox
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
        return Update(client, weights_from_module(self.module), len(y))

    def evaluate(self, weights: Weights, data: Data) -> Evaluation:
        import torch

        X, y = _check_data(data)
        load_weights(self.module, weights)
        self.module.eval()
        with torch.no_grad():
            logits = self.module(torch.from_numpy(np.ascontiguousarray(X, np.float32)))
            labels = torch.from_numpy(y)
            loss = float(torch.nn.functional.cross_entropy(logits, labels))
            accuracy = float((logits.argmax(dim=1) == labels).float().mean())
        return Evaluation(loss, accuracy)
