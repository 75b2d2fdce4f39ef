"""Proofs: central-difference gradient checks, the truncated objective, the diagnosis of a
learner's gradients, and gradients through time."""

from .diagnose import Diagnosis, TensorVerdict, diagnose
from .flow import gradient_reach, per_step_grads
from .gradcheck import GradcheckResult, TensorCheck, gradcheck, numerical_derivatives
from .truncation import truncated_objective, truncation_report

__all__ = [
    "Diagnosis", "GradcheckResult", "TensorCheck", "TensorVerdict", "diagnose", "gradcheck", "gradient_reach",
    "numerical_derivatives", "per_step_grads", "truncated_objective", "truncation_report",
]
