"""Projector: forecast how a training mixture goes MAD if reused generation after generation.

- `closed_forms`: the fresh loop's limit and MAD's effective sample size (eq. 4) in d dims;
- `standins`: the reference's PCA subspace and the generative stand-ins (gaussian, gmm, categorical);
- `loops`: the loop models as a Monte Carlo, and the scoring of each generation;
- `forecast`: a loop against its real-only baseline, the MAD horizon, admissibility;
- `inputs`: p and lambda measured from an audit, and the synthetic part described by what it is;
- `calibration`: the forecast's band widened by its error against real self-consuming loops.
"""

from audit.projector.closed_forms import FrechetForecast, SqrtDeficit, fresh_fixed_point, fresh_limit
from audit.projector.forecast import (Forecast, admissibility, check_stand_in, mad_horizon, measure_separation,
                                      project)
from audit.projector.inputs import inputs_from_audit, inputs_meaning, synthetic_scores
from audit.projector.loops import LOOPS, METRICS, evolve, simulate
from audit.projector.standins import (MODELS, CategoricalStandIn, GaussianStandIn, MixtureStandIn, ReferenceSpace,
                                      make_stand_in, sample_stats, space_problem)

__all__ = ["FrechetForecast", "SqrtDeficit", "fresh_fixed_point", "fresh_limit", "Forecast",
           "admissibility", "check_stand_in", "mad_horizon", "measure_separation", "project", "inputs_from_audit", "inputs_meaning",
           "synthetic_scores",
           "LOOPS", "METRICS", "evolve", "simulate", "MODELS", "CategoricalStandIn", "GaussianStandIn",
           "MixtureStandIn", "ReferenceSpace", "make_stand_in", "sample_stats", "space_problem"]
