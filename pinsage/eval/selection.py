"""Which methods are baselines, and which of them is *the* best baseline: one rule for the whole project.

* A baseline is every evaluated method that is not a PinSage variant. In one run's ``metrics.json``
  the only PinSage method is ``pinsage``; the experiments also exclude their model variants.
* The best baseline is the baseline with the highest **validation** MRR (in the experiments: the mean
  over seeds). It is chosen as settings are, on validation pairs; test figures are only reported.

Used by the run report, the model version description (``tasks/mlflow_ui.py``) and the experiments.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

MODEL = "pinsage"


def baseline_methods(methods: Iterable[str], exclude: Iterable[str] = (MODEL,)) -> list[str]:
    """The baselines among ``methods``, in their order: every method not named in ``exclude`` (the
    PinSage variants: ``pinsage`` in a run, the experiment's variants there)."""
    excluded = set(exclude)
    return [m for m in methods if m not in excluded]


def best_baseline(validation_mrr: Mapping[str, float], exclude: Iterable[str] = (MODEL,)) -> str | None:
    """The baseline with the highest validation MRR; the first in ``validation_mrr``'s order on ties;
    None when there is no baseline with a finite figure.

    Args:
        validation_mrr: method -> validation MRR (a run's, or the mean over an experiment's seeds).
        exclude: the PinSage variants (not baselines).
    """
    best, best_mrr = None, -math.inf
    for method in baseline_methods(validation_mrr, exclude):
        mrr = validation_mrr[method]
        if mrr is not None and math.isfinite(mrr) and mrr > best_mrr:
            best, best_mrr = method, mrr
    return best


def run_best_baseline(metrics: dict, model: str = MODEL) -> str | None:
    """The best baseline of one run's ``metrics.json``: by validation MRR (``metrics["validation"]``),
    among the methods with test figures too; None without validation figures or without a baseline."""
    valid = (metrics.get("validation") or {}).get("methods") or {}
    tested = metrics.get("methods") or {}
    return best_baseline({k: v["mrr"] for k, v in valid.items() if "mrr" in v and k in tested}, exclude=(model,))
