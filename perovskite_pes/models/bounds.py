"""Keeping a fitted model physical outside its training data (``bounded=True``).

A model fitted to polynomials of cluster deformations extrapolates like a polynomial: once atoms
leave the window the training data covered, its energy can fall without bound (MD then runs
away). :class:`FeatureWindow` fixes this on the model's own inputs, per orbit and basis function:

* the training range ``[lo, hi]`` of every input feature over all units (clusters or sites) of
  all training configurations, widened to contain the reference (0);
* **clamp**: the learned part of the energy sees each feature through a smooth clamp that is the
  identity inside ``[lo, hi]`` and saturates within ``width`` (in training standard deviations)
  outside, ``hi + w tanh((x - hi) / w)``: the learned energy stays bounded whatever the geometry;
* **wall**: a penalty per unit, zero inside the window and rising outside it,
  ``strength * sum_f z_f^2 / (1 + z_f)^(2 - 2/k_f)`` with ``z = excess / s`` (``excess`` the distance
  of the feature beyond ``lo`` or ``hi``, ``s`` its training standard deviation, ``k`` its degree
  in the deformations): quadratic in ``z`` at the edge (continuous forces) and, far out,
  quadratic in the displacement whatever the degree of the feature (``z ~ t^k``), so the energy
  rises as a bond is compressed or stretched beyond anything seen, or an atom leaves its cage,
  without the stiffness of a high power.

Inside the training window both are exactly the identity and zero, so the fit on the training
configurations is unchanged (the baseline subtracted from the targets is exactly zero there) and
the model's accuracy inside its data is unchanged; both act per unit, so the energy stays a sum
of cluster (site) terms and local Monte Carlo moves stay exact. Every invariant of the basis is a
monotonic function of each pair distance near the window's edge, so compressing one pair below
its shortest training distance moves its features further out and the energy rises.
"""

from __future__ import annotations

import numpy as np

from .base import ModelError


def _torch():
    import torch

    return torch


class FeatureWindow:
    """Training window of a model's input features per orbit: smooth clamp and quadratic wall.

    ``lo``, ``hi``, ``scale``: per orbit, one value per feature (training min, max and standard
    deviation); ``degrees``: per orbit, the degree of each feature in the deformations (1 when not
    known); ``width``: clamp width in standard deviations; ``strength``: the wall's scale (eV; a
    degree-1 feature one standard deviation outside costs ``strength``).
    """

    def __init__(self, lo, hi, scale, degrees=None, width: float = 1.0, strength: float = 0.1):
        torch = _torch()
        if not (float(width) > 0 and float(strength) >= 0):
            raise ModelError(f"bound_width must be > 0 and bound_strength >= 0; got {width} and {strength}")
        self.lo = [torch.as_tensor(np.asarray(v, dtype=float)) for v in lo]
        self.hi = [torch.as_tensor(np.asarray(v, dtype=float)) for v in hi]
        self.scale = [torch.as_tensor(np.asarray(v, dtype=float)) for v in scale]
        if degrees is None:
            degrees = [np.ones(len(v)) for v in self.lo]
        self.degrees = [torch.as_tensor(np.maximum(np.asarray(d, dtype=float), 1.0)) for d in degrees]
        if [len(d) for d in self.degrees] != [len(v) for v in self.lo]:
            raise ModelError("feature degrees must give one degree per feature of every orbit")
        self.width = float(width)
        self.strength = float(strength)

    @classmethod
    def from_features(cls, raw, degrees=None, width: float = 1.0, strength: float = 0.1) -> "FeatureWindow":
        """The window of training features ``raw`` (list per orbit of ``[B, U, F]``)."""
        torch = _torch()
        lo, hi, scale = [], [], []
        for x in raw:
            x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[0] == 0:
                zero = torch.zeros(x.shape[-1], dtype=torch.float64)
                lo.append(zero), hi.append(zero), scale.append(torch.ones_like(zero))
                continue
            lo.append(torch.minimum(flat.min(0).values, torch.zeros(())))
            hi.append(torch.maximum(flat.max(0).values, torch.zeros(())))
            s = flat.std(0) if flat.shape[0] > 1 else torch.zeros(x.shape[-1], dtype=torch.float64)
            rng = hi[-1] - lo[-1]
            # a feature that never varied: fall back to its range, then to 1
            s = torch.where(s > 1e-12, s, torch.where(rng > 1e-12, rng, torch.ones_like(rng)))
            scale.append(s)
        return cls(lo, hi, scale, degrees, width, strength)

    def clamp(self, group: int, x):
        """Features of orbit ``group`` (``[..., F]``) smoothly clamped into the (widened) window."""
        torch = _torch()
        lo, hi = self.lo[group], self.hi[group]
        w = self.width * self.scale[group]
        above = hi + w * torch.tanh((x - hi) / w)
        below = lo - w * torch.tanh((lo - x) / w)
        return torch.where(x > hi, above, torch.where(x < lo, below, x))

    def penalty(self, group: int, x):
        """Wall energy (eV) of every unit of orbit ``group``: ``[...]`` for features ``[..., F]``."""
        torch = _torch()
        z = (torch.relu(x - self.hi[group]) + torch.relu(self.lo[group] - x)) / self.scale[group]
        return self.strength * (z**2 / (1 + z) ** (2 - 2 / self.degrees[group])).sum(-1)

    def apply(self, raw):
        """(clamped features, wall energy ``[B]``) of a batch (list per orbit of ``[B, U, F]``)."""
        clamped = [self.clamp(g, x) for g, x in enumerate(raw)]
        wall = sum(self.penalty(g, x).sum(-1) for g, x in enumerate(raw))
        return clamped, wall

    def to_dict(self) -> dict:
        return {
            "lo": [v.tolist() for v in self.lo],
            "hi": [v.tolist() for v in self.hi],
            "scale": [v.tolist() for v in self.scale],
            "degrees": [v.tolist() for v in self.degrees],
            "width": self.width,
            "strength": self.strength,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureWindow":
        return cls(d["lo"], d["hi"], d["scale"], d.get("degrees"), d["width"], d["strength"])

    def check(self, n_inputs: list[int], where) -> None:
        if [len(v) for v in self.lo] != [int(n) for n in n_inputs]:
            raise ModelError(f"{where}: the saved feature window has {[len(v) for v in self.lo]} inputs per orbit; the model has {n_inputs}")


class BoundedInputs:
    """Mixin of the cluster-descriptor models: the ``bounded`` option on their input features.

    Hyperparameters ``bounded``, ``bound_width``, ``bound_strength`` (set by the model's
    constructor); learned ``window_`` (a :class:`FeatureWindow`, or None when not bounded).
    """

    def _fit_window(self, raw, featurizer) -> None:
        if not self.bounded:
            self.window_ = None
            return
        site = getattr(self, "feature_kind", "cluster") == "site"
        degrees = getattr(featurizer, "site_degrees" if site else "degrees", None)
        self.window_ = FeatureWindow.from_features(raw, degrees, self.bound_width, self.bound_strength)

    def _bounded(self, raw):
        """(inputs of the learned part, wall energy ``[B]`` or 0) for a batch of raw features."""
        window = getattr(self, "window_", None)
        return (raw, 0.0) if window is None else window.apply(raw)

    def _bounded_unit(self, group: int, raw):
        """(inputs of the learned part, wall energy per unit or 0) for units of one orbit."""
        window = getattr(self, "window_", None)
        return (raw, 0.0) if window is None else (window.clamp(group, raw), window.penalty(group, raw))

    def _bound_params(self) -> dict:
        return {"bounded": bool(self.bounded), "bound_width": float(self.bound_width), "bound_strength": float(self.bound_strength)}

    def _window_state(self) -> dict | None:
        window = getattr(self, "window_", None)
        return None if window is None else window.to_dict()

    def _load_window(self, state: dict, n_inputs, directory) -> None:
        """The saved window (models saved before the option have none and load unbounded)."""
        d = state.get("window")
        self.window_ = None if d is None else FeatureWindow.from_dict(d)
        if self.window_ is not None:
            self.window_.check(n_inputs, directory)
