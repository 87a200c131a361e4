"""Pure tensor functions for second-order pooling (batched; any float dtype)."""

from gmsop.ops import sqrtm
from gmsop.ops.balance import across_processes, cv_squared, importance, load_estimate
from gmsop.ops.bilinear import bilinear, count_sketch, random_sketch, signed_sqrt_l2, tensor_sketch
from gmsop.ops.covariance import covariance
from gmsop.ops.eig import matrix_power, mpncov
from gmsop.ops.isqrt_cov import Side, choose_side, isqrt_covariance
from gmsop.ops.precision import float32_math
from gmsop.ops.sqrtm import Backward, isqrt, newton_schulz, trace, trace_normalise
from gmsop.ops.triu import triu_dim, triu_vectorise

__all__ = [
    "Backward",
    "Side",
    "sqrtm",
    "bilinear",
    "choose_side",
    "count_sketch",
    "random_sketch",
    "signed_sqrt_l2",
    "tensor_sketch",
    "covariance",
    "across_processes",
    "cv_squared",
    "importance",
    "load_estimate",
    "float32_math",
    "isqrt",
    "isqrt_covariance",
    "matrix_power",
    "mpncov",
    "newton_schulz",
    "trace",
    "trace_normalise",
    "triu_dim",
    "triu_vectorise",
]
