"""Make a model fit the device: build variants, measure them, keep the best.

>>> from fogline.optimize import OptimizeOptions
>>> OptimizeOptions(max_accuracy_drop=0.5).objective
'latency'
"""

from fogline.data import Dataset, load_dataset
from fogline.optimize._compress import (
    PRUNE_METHODS,
    FitOptions,
    distill_plan,
    export,
    load_torch_factory,
    parse_prune,
    prune_plan,
)
from fogline.optimize._measure import Agreement, accuracy, agreement, measure_variant
from fogline.optimize._nas import (
    NasOptions,
    family_names,
    load_family,
    nas_finish,
    nas_search,
)
from fogline.optimize._nas_family import Family, Knobs
from fogline.optimize._nas_result import Candidate, NasResult, pareto_front
from fogline.optimize._report import Report, VariantResult
from fogline.optimize._search import NOT_SELECTED, OptimizeOptions, optimize
from fogline.optimize._variants import (
    CALIBRATION_METHODS,
    BuildContext,
    VariantPlan,
    has_vnni,
    quantized,
)

__all__ = [
    "CALIBRATION_METHODS",
    "NOT_SELECTED",
    "PRUNE_METHODS",
    "Agreement",
    "BuildContext",
    "Candidate",
    "Dataset",
    "Family",
    "FitOptions",
    "Knobs",
    "NasOptions",
    "NasResult",
    "OptimizeOptions",
    "Report",
    "VariantPlan",
    "VariantResult",
    "accuracy",
    "agreement",
    "distill_plan",
    "export",
    "family_names",
    "has_vnni",
    "load_dataset",
    "load_family",
    "load_torch_factory",
    "measure_variant",
    "nas_finish",
    "nas_search",
    "optimize",
    "pareto_front",
    "parse_prune",
    "prune_plan",
    "quantized",
]
