"""The client trainers: numpy softmax and torch, their loss goes down, FedProx pulls toward the global weights."""

from __future__ import annotations

import numpy as np
import torch

from fogline.examples import digits_split
from fogline.federated import SoftmaxTrainer, TorchTrainer, load_weights, weights_from_module
from fogline.federated.strategy import Weights


def digits(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    X, y = digits_split("train")
    return X[:n], y[:n]


def distance(a: Weights, b: Weights) -> float:
    return float(np.linalg.norm(a.vector() - b.vector()))


def test_the_numpy_trainer_lowers_the_loss() -> None:
    trainer = SoftmaxTrainer(lr=0.5, batch_size=16, epochs=2)
    start = SoftmaxTrainer.initial_weights(64, 10)
    before = trainer.evaluate(start, digits())
    update = trainer.fit("c1", start, digits(), {}, np.random.default_rng(0))
    after = trainer.evaluate(update.weights, digits())
    assert update.num_examples == 300 and update.client == "c1"
    assert after.loss < 0.5 * before.loss and after.accuracy > 0.8


def test_the_numpy_trainer_takes_epochs_from_the_round_config() -> None:
    trainer = SoftmaxTrainer(lr=0.5, epochs=1)
    start = SoftmaxTrainer.initial_weights(64, 10)
    one = trainer.fit("c", start, digits(), {}, np.random.default_rng(0))
    three = trainer.fit("c", start, digits(), {"epochs": 3}, np.random.default_rng(0))
    assert (
        trainer.evaluate(three.weights, digits()).loss
        < trainer.evaluate(one.weights, digits()).loss
    )


def test_fedprox_mu_keeps_the_numpy_trainer_closer_to_the_global_weights() -> None:
    trainer = SoftmaxTrainer(lr=0.5, epochs=3)
    start = SoftmaxTrainer.initial_weights(64, 10)
    free = trainer.fit("c", start, digits(), {}, np.random.default_rng(0))
    held = trainer.fit("c", start, digits(), {"mu": 1.0}, np.random.default_rng(0))
    assert distance(held.weights, start) < 0.8 * distance(free.weights, start)


def mlp() -> object:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    )


def test_state_dict_round_trips_through_weights() -> None:
    module = mlp()
    weights = weights_from_module(module)
    assert list(weights) == ["1.weight", "1.bias", "3.weight", "3.bias"]
    other = mlp()
    load_weights(other, weights.like(weights.vector() + 1.0))
    assert np.allclose(weights_from_module(other).vector(), weights.vector() + 1.0)


def test_the_torch_trainer_lowers_the_loss_and_fedprox_pulls_toward_the_global_weights() -> None:
    trainer = TorchTrainer(mlp(), lr=0.5, batch_size=16, epochs=5)
    start = trainer.initial_weights()
    before = trainer.evaluate(start, digits())
    free = trainer.fit("c", start, digits(), {}, np.random.default_rng(0))
    assert trainer.evaluate(free.weights, digits()).loss < 0.5 * before.loss
    held = trainer.fit("c", start, digits(), {"mu": 1.0}, np.random.default_rng(0))
    assert distance(held.weights, start) < 0.8 * distance(free.weights, start)
    assert held.num_examples == 300
