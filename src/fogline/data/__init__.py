"""Data sets for calibration, evaluation and training, and for replay in a pipeline.

One reader for every consumer: ``fogline optimize`` calibrates and
evaluates with it, and the pipeline's ``dataset`` source replays what it
reads, so a data set that feeds one feeds the other. A data set is written
as an ``.npz`` file, a folder of images, or a Python callable
``module:function``; whatever the source, :func:`load_dataset` returns a
:class:`Dataset` whose batches fit the model's signature, or raises
:class:`~fogline.errors.DataError` naming the file and the input.

>>> from fogline.data import Dataset
>>> import numpy as np
>>> Dataset("ones", ({"x": np.ones((3, 2), np.float32)},)).size
3
"""

from fogline.data._dataset import Dataset
from fogline.data._function import import_function
from fogline.data._load import Arrays, load_dataset

__all__ = ["Arrays", "Dataset", "import_function", "load_dataset"]
