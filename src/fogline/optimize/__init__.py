"""Make a model fit the device: build variants, measure them, keep the best.

>>> from fogline.optimize import OptimizeOptions
>>> OptimizeOptions(max_accuracy_drop=0.5).objective
'latency'
"""

from fogline.optimize._data import Dataset, load_dataset
from fogline.optimize._measure import Agreement, accuracy, agreement
from fogline.optimize._report import Report, VariantResult
from fogline.optimize._search import OptimizeOptions, optimize
from fogline.optimize._variants import CALIBRATION_METHODS, has_vnni

__all__ = [
    "CALIBRATION_METHODS",
    "Agreement",
    "Dataset",
    "OptimizeOptions",
    "Report",
    "VariantResult",
    "accuracy",
    "agreement",
    "has_vnni",
    "load_dataset",
    "optimize",
]
