"""Proofs: central-difference gradient checks, the truncated objective, the diagnosis of a
learner's gradients and of their own functions, and gradients through time."""

from .check import check
from .diagnose import Diagnosis, ForwardVerdict, TensorVerdict, diagnose
from .flow import gradient_reach, per_step_grads
from .gradcheck import GradcheckResult, TensorCheck, gradcheck, numerical_derivatives
from .truncation import truncated_objective, truncation_report

__all__ = [
    "Diagnosis", "ForwardVerdict", "GradcheckResult", "TensorCheck", "TensorVerdict", "check", "diagnose", "gradcheck",
    "gradient_reach",
    "numerical_derivatives", "per_step_grads", "truncated_objective", "truncation_report",
]
