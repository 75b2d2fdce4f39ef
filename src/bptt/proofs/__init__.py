"""Proofs: central-difference gradient checks, and the table over every cell."""

from .gradcheck import GradcheckResult, TensorCheck, gradcheck, numerical_derivatives

__all__ = ["GradcheckResult", "TensorCheck", "gradcheck", "numerical_derivatives"]
