"""Evaluation, in order of dependence: predictions (used by training), pure error and calibration
metrics, the same metrics added up over a stream of predictions (:mod:`pbcgnn.evaluation.running`),
then the checkpoint-driven report (:mod:`pbcgnn.evaluation.report`, ``pbcgnn eval``) and
its plots, which this package does not import: training never loads them."""
from __future__ import annotations

from .metrics import calibration_metrics, error_metrics, prediction_metrics
from .predict import Predictions, predict

__all__ = ["Predictions", "predict", "error_metrics", "prediction_metrics", "calibration_metrics"]
