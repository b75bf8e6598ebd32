"""Pair deformation metrics (paper section II.A.1).

All vanish at the reference distance d~ and have slope 1/d~ there:
    lin   f = d/d~ - 1
    quad  f = (d^2/d~^2 - 1) / 2          (Eq. 3; the paper's denominator typo is d~^2)
    log   f = ln(d/d~)
    inv   f = (1 - d~^2/d^2) / 2
Every function here takes the squared ratio r2 = d^2/d~^2, so ``quad`` never needs a square
root; they work on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import numpy as np

from .errors import DescriptorError

METRICS = ("lin", "quad", "log", "inv")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise DescriptorError(f"unknown deformation metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def metric_from_ratio2(r2, metric: str):
    """f(d) from r2 = (d / d~)^2, elementwise (numpy or torch)."""
    if metric == "quad":
        return 0.5 * (r2 - 1.0)
    if metric == "lin":
        return r2**0.5 - 1.0
    if metric == "log":
        if _is_torch(r2):
            import torch

            return 0.5 * torch.log(r2)
        return 0.5 * np.log(r2)
    if metric == "inv":
        return 0.5 * (1.0 - 1.0 / r2)
    raise DescriptorError(f"unknown deformation metric {metric!r}; expected one of {', '.join(METRICS)}")


def ratio_from_metric(f, metric: str) -> np.ndarray:
    """Inverse: d / d~ from f (numpy). Raises where f is outside the metric's range."""
    f = np.asarray(f, dtype=float)
    if metric == "lin":
        r = 1.0 + f
    elif metric == "quad":
        r2 = 1.0 + 2.0 * f
        if np.any(r2 <= 0):
            raise DescriptorError("quad metric values below -1/2 do not correspond to a distance")
        r = np.sqrt(r2)
    elif metric == "log":
        r = np.exp(f)
    elif metric == "inv":
        den = 1.0 - 2.0 * f
        if np.any(den <= 0):
            raise DescriptorError("inv metric values at or above 1/2 do not correspond to a distance")
        r = 1.0 / np.sqrt(den)
    else:
        raise DescriptorError(f"unknown deformation metric {metric!r}; expected one of {', '.join(METRICS)}")
    if np.any(r <= 0):
        raise DescriptorError("metric values correspond to non-positive distances")
    return r
