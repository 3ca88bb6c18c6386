"""What a family of networks gives the architecture search (``fogline optimize --nas MODULE:FAMILY``).

A family is the user's factory: it builds a network from a few knobs (width
multiplier, depth, kernel size, input resolution), trains one briefly, and
scores one from its outputs. The search does the rest: it picks candidates
from :attr:`Family.space`, trains each with :meth:`Family.fit`, exports it to
ONNX with :meth:`Family.example_input`, measures its latency on this device
through the same :class:`~fogline.model.Engine` as every other variant (not
a FLOP count), and scores the exported model with :meth:`Family.score`, so
what is ranked is what would run.

Optional members, read with a default when a family lacks them (so a family
written against the four methods above keeps working):

* ``input_names`` / ``output_names`` (sequences of str): the names of the
  exported model's inputs and outputs, and the keys of the data sets'
  batches; default ``("input",)`` and ``("output",)``.
* ``prepare(data, knobs) -> Dataset``: the data as this candidate takes it
  (resized to its input resolution), used to time the candidate on real
  inputs and to calibrate and evaluate the chosen one in the variant search.
  Without it, inputs whose last two (spatial) dimensions differ from the
  candidate's are resized bilinearly; :meth:`fit` and :meth:`score` always
  get the data as given and resize it themselves.

PyTorch is needed to build and train (the ``train`` extra); this module does
not import it, so ``fogline.optimize`` still loads without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from fogline.data import Dataset
from fogline.model import Engine

#: Input and output names of a family that does not name them (see the module docstring).
DEFAULT_INPUT_NAMES: tuple[str, ...] = ("input",)
DEFAULT_OUTPUT_NAMES: tuple[str, ...] = ("output",)

#: One candidate's knobs: name → value, e.g. ``{"width": 16, "depth": 2, "kernel": 3}``.
Knobs = Mapping[str, int | float]


@runtime_checkable
class Family(Protocol):
    """A family of networks built from knobs, and how to train and score one of them.

    >>> from fogline.examples.digits_nas import family
    >>> isinstance(family, Family), family.metric, family.space["depth"]
    (True, 'accuracy', (1, 2))
    """

    #: Knob name → the values to try, e.g. ``{"width": (8, 16, 32), "kernel": (3, 5)}``.
    space: Mapping[str, Sequence[int | float]]
    #: What :meth:`score` returns, higher is better: ``"accuracy"``, ``"mAP@0.5"``.
    metric: str

    def build(self, knobs: Knobs) -> Any:
        """A new, untrained ``torch.nn.Module`` for these knobs."""
        ...

    def example_input(self, knobs: Knobs) -> Any:
        """One batch (a ``torch.Tensor``) at this candidate's input size, for the ONNX export."""
        ...

    def fit(self, model: Any, train: Dataset, knobs: Knobs, *, epochs: int, seed: int) -> None:
        """Train ``model`` in place for ``epochs`` passes over ``train`` (inputs resized as needed)."""
        ...

    def score(self, engine: Engine, data: Dataset, knobs: Knobs) -> float:
        """The metric of the exported candidate, run through ``engine`` on ``data``."""
        ...
