"""Synthetic-share estimators: a supervised probe (PACC, EMQ) and unsupervised mixture-proportion
estimation (BBE), gathered with their guards by `estimate_fraction`."""

from detectors.base import FractionEstimate, ModelMismatch
from detectors.fraction import FractionReport, estimate_fraction
from detectors.probe import SupervisedProbe

__all__ = ["FractionEstimate", "FractionReport", "ModelMismatch", "SupervisedProbe", "estimate_fraction"]
