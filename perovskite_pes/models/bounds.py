"""Keeping a fitted model physical outside its training data (``bounded=True``).

A model fitted to polynomials of cluster deformations extrapolates like a polynomial: once atoms
leave the window the training data covered, its energy can fall without bound (MD then runs
away). :class:`FeatureWindow` fixes this on the model's own inputs, per orbit and basis function,
from the training range ``[lo, hi]`` of every input feature over all units (clusters or sites) of
all training configurations (widened to contain the reference, 0), with ``r = hi - lo``:

* **clamp**: the learned part of the energy sees each feature through a smooth clamp that is the
  identity inside ``[lo, hi]`` and saturates within ``w = width * r`` outside it,
  ``hi + w tanh((x - hi) / w)``: whatever the geometry, the learned energy stays within what it
  takes on a slightly widened training window, and directions the training data never excited
  (``r = 0``) stay at their training value;
* **wall**: on the degree-1 features (the totally symmetric deformation of each cluster: for a
  pair, its relative bond-length change in the chosen metric), zero inside the window and rising
  quadratically outside, ``strength * (excess / scale - offset)^2`` per unit (``excess`` the
  distance of the feature beyond ``lo`` or ``hi``; ``scale`` in feature units, 0.05 = 5 % of a
  bond length by default, or the training range ``r`` when None): the energy rises as a bond is
  compressed below its shortest training length or stretched beyond its longest, or an atom
  leaves its cage. Higher-degree features get no wall: in thermal configurations they leave
  their (often tiny) training ranges by far.

Inside the training window both are exactly the identity and zero, so the fit on the training
configurations is unchanged (the baseline subtracted from the targets is exactly zero there) and
the model's accuracy inside its data is unchanged; both act per unit, so the energy stays a sum
of cluster (site) terms and local Monte Carlo moves stay exact. The defaults were chosen on the
quickstart campaign's data (docs/models.md, "Bounded models").
"""

from __future__ import annotations

import warnings

import numpy as np

from .base import ModelError


def _torch():
    import torch

    return torch


class FeatureWindow:
    """Training window of a model's input features per orbit: smooth clamp and a wall beyond it.

    ``lo``, ``hi``: per orbit, one value per feature (training minimum and maximum); ``degrees``:
    per orbit, each feature's degree in the deformations (the wall acts on degree 1; without
    degrees every feature counts as degree 1); ``width``: clamp width in training ranges;
    ``strength``: wall energy (eV) of a unit one ``scale`` beyond the wall's start; ``offset``:
    where the wall starts, in ``scale`` units beyond the window; ``scale``: the wall's length
    scale in feature units (None: each feature's training range).
    """

    #: ranges below this (features the training set never moved) pin the clamp; a range-scaled
    #: wall never drops below WALL_SCALE (the features are dimensionless deformations of order 0.01-0.1)
    TINY = 1e-12
    WALL_SCALE = 1e-3

    def __init__(
        self, lo, hi, degrees=None, width: float = 1.0, strength: float = 0.01, offset: float = 0.0, scale=0.05
    ):
        torch = _torch()
        if scale is not None and not float(scale) > 0:
            raise ModelError(f"bound_scale must be > 0 (or None: the training range); got {scale}")
        self.wall_scale = None if scale is None else float(scale)
        if not (float(width) > 0 and float(strength) >= 0 and float(offset) >= 0):
            raise ModelError(
                f"bound_width must be > 0, bound_strength and bound_offset >= 0; got {width}, {strength} and {offset}"
            )
        self.lo = [torch.as_tensor(np.asarray(v, dtype=float)) for v in lo]
        self.hi = [torch.as_tensor(np.asarray(v, dtype=float)) for v in hi]
        if degrees is None:
            degrees = [np.ones(len(v)) for v in self.lo]
        self.degrees = [torch.as_tensor(np.asarray(d, dtype=float)) for d in degrees]
        if [len(d) for d in self.degrees] != [len(v) for v in self.lo]:
            raise ModelError("feature degrees must give one degree per feature of every orbit")
        self.width = float(width)
        self.strength = float(strength)
        self.offset = float(offset)
        self._range = [torch.clamp(high - low, min=self.TINY) for low, high in zip(self.lo, self.hi)]
        self._wall = [(d <= 1).to(torch.float64) for d in self.degrees]

    @classmethod
    def from_features(
        cls, raw, degrees=None, width: float = 1.0, strength: float = 0.01, offset: float = 0.0, scale=0.05
    ) -> FeatureWindow:
        """The window of training features ``raw`` (list per orbit of ``[B, U, F]``)."""
        torch = _torch()
        lo, hi = [], []
        for x in raw:
            x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
            flat = x.reshape(-1, x.shape[-1])
            zero = torch.zeros(x.shape[-1], dtype=torch.float64)
            lo.append(torch.minimum(flat.min(0).values, zero) if flat.shape[0] else zero)
            hi.append(torch.maximum(flat.max(0).values, zero) if flat.shape[0] else zero)
        return cls(lo, hi, degrees, width, strength, offset, scale)

    def clamp(self, group: int, x):
        """Features of orbit ``group`` (``[..., F]``) smoothly clamped into the (widened) window."""
        torch = _torch()
        lo, hi = self.lo[group], self.hi[group]
        w = self.width * self._range[group]
        above = hi + w * torch.tanh((x - hi) / w)
        below = lo - w * torch.tanh((lo - x) / w)
        return torch.where(x > hi, above, torch.where(x < lo, below, x))

    def penalty(self, group: int, x):
        """Wall energy (eV) of every unit of orbit ``group``: ``[...]`` for features ``[..., F]``."""
        torch = _torch()
        if self.wall_scale is None:
            r = torch.clamp(self._range[group], min=self.WALL_SCALE)
        else:
            r = self.wall_scale
        excess = torch.relu(x - self.hi[group]) + torch.relu(self.lo[group] - x)
        z = torch.relu(excess / r - self.offset)
        return self.strength * (self._wall[group] * z**2).sum(-1)

    def wall(self, raw):
        """Wall energy ``[B]`` of a batch (list per orbit of ``[B, U, F]``), summed over its units."""
        return sum(self.penalty(g, x).sum(-1) for g, x in enumerate(raw))

    def apply(self, raw):
        """(clamped features, wall energy ``[B]``) of a batch (list per orbit of ``[B, U, F]``)."""
        return [self.clamp(g, x) for g, x in enumerate(raw)], self.wall(raw)

    def to_dict(self) -> dict:
        return {
            "lo": [v.tolist() for v in self.lo],
            "hi": [v.tolist() for v in self.hi],
            "degrees": [v.tolist() for v in self.degrees],
            "width": self.width,
            "strength": self.strength,
            "offset": self.offset,
            "scale": self.wall_scale,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureWindow:
        return cls(d["lo"], d["hi"], d.get("degrees"), d["width"], d["strength"], d.get("offset", 0.0), d.get("scale"))

    def check(self, n_inputs: list[int], where) -> None:
        if [len(v) for v in self.lo] != [int(n) for n in n_inputs]:
            raise ModelError(
                f"{where}: the saved feature window has {[len(v) for v in self.lo]} inputs per orbit; "
                f"the model has {n_inputs}"
            )


class BoundedInputs:
    """Mixin of the cluster-descriptor models: the ``bounded`` option on their input features.

    Hyperparameters ``bounded``, ``bound_width``, ``bound_strength``, ``bound_offset``, ``bound_scale``
    (set by the model's constructor, see :class:`FeatureWindow`); learned ``window_`` (a
    :class:`FeatureWindow`, or None when not bounded).
    """

    def _fit_window(self, raw, featurizer) -> None:
        if not self.bounded:
            self.window_ = None
            return
        site = getattr(self, "feature_kind", "cluster") == "site"
        degrees = getattr(featurizer, "site_degrees" if site else "degrees", None)
        self.window_ = FeatureWindow.from_features(
            raw, degrees, self.bound_width, self.bound_strength, self.bound_offset, self.bound_scale
        )

    def _wants_cluster_wall(self) -> bool:
        """Bounded models on site inputs also wall each cluster (:meth:`_fit_cluster_wall`)."""
        return bool(self.bounded) and getattr(self, "feature_kind", "cluster") == "site"

    def _fit_cluster_wall(self, cluster_features, featurizer) -> None:
        """Site inputs only: a wall on every cluster's own degree-1 features as well (``cluster_window_``).

        A site feature averages its clusters' functions, so one bond compressed while the site's
        other bonds stretch (an off-centred Pb against one Br) barely moves it and the site wall
        never rises. The cluster wall sees each pair (triplet, octahedron) on its own, as a cluster
        model's wall does. ``cluster_features``: list per orbit of ``[B, U, F]`` of the training
        configurations (None: no geometry to compute them from, no cluster wall).
        """
        self.cluster_window_ = None
        if self._wants_cluster_wall() and cluster_features is not None:
            self.cluster_window_ = FeatureWindow.from_features(
                cluster_features,
                featurizer.degrees,
                self.bound_width,
                self.bound_strength,
                self.bound_offset,
                self.bound_scale,
            )

    def cluster_wall(self, orbit: int, features):
        """Cluster-wall energy (eV) of each cluster of ``orbit`` (features ``[..., F]``); 0 without one."""
        window = getattr(self, "cluster_window_", None)
        return 0.0 if window is None else window.penalty(orbit, features)

    def _cluster_wall_total(self, cluster_features):
        """Sum of the cluster walls of a batch (list per orbit of ``[B, U, F]``): ``[B]`` or 0."""
        window = getattr(self, "cluster_window_", None)
        return 0.0 if window is None else window.wall(cluster_features)

    def _bounded(self, raw):
        """(inputs of the learned part, wall energy ``[B]`` or 0) for a batch of raw features."""
        window = getattr(self, "window_", None)
        return (raw, 0.0) if window is None else window.apply(raw)

    def _bounded_unit(self, group: int, raw):
        """(inputs of the learned part, wall energy per unit or 0) for units of one orbit."""
        window = getattr(self, "window_", None)
        return (raw, 0.0) if window is None else (window.clamp(group, raw), window.penalty(group, raw))

    def _bound_params(self) -> dict:
        return {
            "bounded": bool(self.bounded),
            "bound_width": float(self.bound_width),
            "bound_strength": float(self.bound_strength),
            "bound_offset": float(self.bound_offset),
            "bound_scale": None if self.bound_scale is None else float(self.bound_scale),
        }

    def _window_state(self) -> dict | None:
        window = getattr(self, "window_", None)
        return None if window is None else window.to_dict()

    def _cluster_window_state(self) -> dict | None:
        window = getattr(self, "cluster_window_", None)
        return None if window is None else window.to_dict()

    def _load_window(self, state: dict, n_inputs, directory) -> None:
        """The saved window (models saved before the option have none and load unbounded)."""
        d = state.get("window")
        if d is None and self.bounded:
            warnings.warn(
                f"{directory}: the model says bounded=True but holds no feature window (saved before "
                "bounded models existed?); it is evaluated unbounded",
                RuntimeWarning,
                stacklevel=3,
            )
        self.window_ = None if d is None else FeatureWindow.from_dict(d)
        c = state.get("cluster_window")  # site nets saved before the cluster wall have none
        self.cluster_window_ = None if c is None else FeatureWindow.from_dict(c)
        if self.window_ is not None:
            self.window_.check(n_inputs, directory)
