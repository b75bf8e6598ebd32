"""Linear anharmonic cluster expansion, Eqs. (1)-(2).

    E = n_cells e0 + sum_orbits sum_m V_m sum_{clusters of the orbit} phi_m(Q^cluster)

The invariant polynomials ``phi_m`` vanish at the reference, so ``E(reference) = n_cells e0``.
The ECIs ``V_m`` are fitted per primitive cell with scikit-learn (``RidgeCV`` or ``LassoCV``
on standardised orbit sums); forces and stress come by autograd through the descriptors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .base import EnergyModel, ModelError, check_configurations, check_energies
from .bounds import BoundedInputs
from .featurizers import FeaturizerFamily, build_featurizer, featurizer_for_load, reference_of
from .pair import _ridge

logger = logging.getLogger(__name__)


class LinearCE(BoundedInputs, EnergyModel):
    """Linear cluster expansion on the same invariant features as the nets (the baseline they must beat).

    Parameters
    ----------
    clusters, max_order, metric, truncated:
        Descriptor basis (see :class:`perovskite_pes.descriptors.Featurizer`).
    method:
        ``"ridge"`` (``RidgeCV``, efficient leave-one-out over ``alphas``) or ``"lasso"`` (``LassoCV``).
    alphas:
        Regularisation strengths tried (default: a log grid).
    cv:
        Folds of ``LassoCV``.
    reference_energy_per_fu:
        Energy of one primitive cell of the reference; fitted (intercept) when None.
    bounded, bound_width, bound_strength, bound_offset, bound_scale:
        Keep the energy bounded below and rising outside the training data: the ECIs see each
        basis function through a smooth clamp to its training range and a wall rises on the
        degree-1 functions outside it (:class:`perovskite_pes.models.bounds.FeatureWindow`).
        Identity inside the training window, so the fitted ECIs are the same.
    """

    model_type = "linear"

    def __init__(
        self,
        clusters="7p+t+o",
        max_order: int = 2,
        metric: str = "lin",
        truncated: bool = False,
        method: str = "ridge",
        alphas=None,
        cv: int = 5,
        reference_energy_per_fu: float | None = None,
        seed: int = 0,
        featurizer=None,
        bounded: bool = False,
        bound_width: float = 1.0,
        bound_strength: float = 0.01,
        bound_offset: float = 0.0,
        bound_scale: float | None = 0.05,
    ):
        self.clusters = clusters
        self.max_order = max_order
        self.metric = metric
        self.truncated = truncated
        self.method = method
        self.alphas = alphas
        self.cv = cv
        self.reference_energy_per_fu = reference_energy_per_fu
        self.seed = seed
        self.featurizer = featurizer
        self.bounded = bounded
        self.bound_width = bound_width
        self.bound_strength = bound_strength
        self.bound_offset = bound_offset
        self.bound_scale = bound_scale

    def _prepare_featurizer(self, reference):
        if self.featurizer is not None:
            fz = self.featurizer
            return fz if reference_of(fz) == reference else FeaturizerFamily(fz)(reference)
        return build_featurizer(reference, self.clusters, self.max_order, self.metric, self.truncated)

    @staticmethod
    def orbit_sums(raw) -> torch.Tensor:  # noqa: F821
        """Concatenate ``sum over clusters`` of each orbit's basis functions: ``[B, sum n_functions]``."""
        import torch

        return torch.cat([x.sum(1) for x in raw], dim=1)

    def design_matrix(self, configs, featurizer=None, batch_size: int = 256) -> np.ndarray:
        """Orbit sums of the basis functions per primitive cell, ``[B, n_ecis]``."""
        import torch

        from .base import geometry, group_by_reference

        configs = check_configurations(configs)
        blocks = []
        for ref, idx in group_by_reference(configs).items():
            if featurizer is not None and reference_of(featurizer) == ref:
                fz = featurizer
            else:
                fz = self._prepare_featurizer(ref)
            for s in range(0, len(idx), batch_size):
                sel = idx[s : s + batch_size]
                pos, lat = geometry([configs[k] for k in sel])
                with torch.no_grad():
                    x = self.orbit_sums(fz.cluster_features(torch.as_tensor(pos), torch.as_tensor(lat)))
                blocks.append((sel, x.numpy() / ref.n_cells))
        mat = np.empty((len(configs), blocks[0][1].shape[1]))
        for sel, x in blocks:
            mat[sel] = x
        return mat

    def fit(self, configs, energies, forces=None, features=None):
        """Fit the ECIs to total energies (eV); forces are not used (Eq. 2 is fitted to energies).

        ``features`` may pass precomputed raw cluster features of these configurations (one supercell).
        """
        configs = check_configurations(configs)
        e = check_energies(energies, len(configs))
        ref = configs[0].reference
        fz = self._prepare_featurizer(ref)
        if features is not None or self.bounded:
            if any(c.reference != ref for c in configs):
                raise ModelError("precomputed features and bounded=True need all configurations in one supercell")
            return self.fit_arrays(
                ref, e, features if features is not None else self.precompute(configs, fz), featurizer=fz
            )
        x = self.design_matrix(configs, fz)
        ncell = np.array([c.reference.n_cells for c in configs], dtype=float)
        self.reference_ = ref
        self.window_ = None
        return self._fit_design(fz, x, e / ncell)

    def fit_arrays(self, reference, energies, features, featurizer=None):
        """Fit from raw cluster features (list per orbit of ``[B, U, F]``) of configurations of ``reference``."""
        import torch

        fz = featurizer if featurizer is not None else self._prepare_featurizer(reference)
        raw = [
            torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
            for x in features
        ]
        x = self.orbit_sums(raw).numpy() / reference.n_cells
        self.reference_ = reference
        self._fit_window(raw, fz)
        return self._fit_design(fz, x, np.asarray(energies, dtype=float) / reference.n_cells)

    def _fit_design(self, fz, x, y):
        if self.method not in ("ridge", "lasso"):
            raise ModelError(f"LinearCE method must be 'ridge' or 'lasso'; got {self.method!r}")
        self.featurizer_ = fz
        self._family = FeaturizerFamily(fz)
        if self.method == "ridge":
            from sklearn.linear_model import RidgeCV

            alphas = np.logspace(-10, 2, 25) if self.alphas is None else np.asarray(self.alphas, dtype=float)
            self.coef_, self.e0_, self.alpha_ = _ridge(x, y, alphas, self.reference_energy_per_fu, RidgeCV)
        else:
            self.coef_, self.e0_, self.alpha_ = self._lasso(x, y)
        self.n_functions_ = [int(n) for n in fz.n_functions]
        logger.info(
            "LinearCE (%s): %d ECIs fitted to %d configurations, alpha %.3g, e0 %.6f eV per cell",
            self.method,
            len(self.coef_),
            len(y),
            self.alpha_,
            self.e0_,
        )
        return self

    def _lasso(self, x, y):
        from sklearn.linear_model import LassoCV
        from sklearn.model_selection import KFold

        scale = x.std(0)
        scale[scale < 1e-12] = 1.0
        folds = KFold(n_splits=min(int(self.cv), len(y)), shuffle=True, random_state=int(self.seed))
        kw = dict(cv=folds, max_iter=100000, tol=1e-6)
        if self.alphas is not None:
            kw["alphas"] = np.asarray(self.alphas, dtype=float)
        if self.reference_energy_per_fu is None:
            mean = x.mean(0)
            reg = LassoCV(fit_intercept=True, **kw).fit((x - mean) / scale, y)
            coef = reg.coef_ / scale
            return coef, float(reg.intercept_ - coef @ mean), float(reg.alpha_)
        e0 = float(self.reference_energy_per_fu)
        reg = LassoCV(fit_intercept=False, **kw).fit(x / scale, y - e0)
        return reg.coef_ / scale, e0, float(reg.alpha_)

    feature_kind = "cluster"

    def _features(self, positions, lattice, reference):
        return list(self._family(reference).cluster_features(positions, lattice))

    def _energy_from_features(self, raw, reference):
        import torch

        inputs, wall = self._bounded(raw)
        x = self.orbit_sums(inputs)
        return reference.n_cells * self.e0_ + x @ torch.as_tensor(self.coef_, dtype=x.dtype) + wall

    unit_kind = "cluster"

    def unit_energies(self, group: int, raw):
        import torch

        self._check_fitted()
        k = sum(self.n_functions_[:group])
        coef = torch.as_tensor(self.coef_[k : k + self.n_functions_[group]], dtype=raw.dtype)
        inputs, wall = self._bounded_unit(group, raw)
        return inputs @ coef + wall

    @property
    def ecis(self) -> dict:
        """ECIs per cluster orbit (eV per unit of the basis function)."""
        self._check_fitted()
        out, k = {}, 0
        for name, n in zip(self.featurizer_.orbit_names, self.n_functions_):
            out[name] = self.coef_[k : k + n].tolist()
            k += n
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the columns of :meth:`design_matrix` (and of ``coef_``): ``"<orbit>/phi<m>_d<degree>"``."""
        self._check_fitted()
        fz = self.featurizer_
        if hasattr(fz, "feature_names"):
            names = fz.feature_names()
        else:
            names = [[f"{orbit}/phi{m}" for m in range(n)] for orbit, n in zip(fz.orbit_names, self.n_functions_)]
        return np.array([n for orbit in names for n in orbit], dtype=object)

    # ------------------------------------------------------------------ persistence
    def _hyperparameters(self) -> dict:
        return {
            "clusters": self.clusters,
            "max_order": int(self.max_order),
            "metric": self.metric,
            "truncated": bool(self.truncated),
            "method": self.method,
            "alphas": None if self.alphas is None else [float(a) for a in self.alphas],
            "cv": int(self.cv),
            "reference_energy_per_fu": self.reference_energy_per_fu,
            "seed": int(self.seed),
            **self._bound_params(),
        }

    def _state(self) -> dict:
        return {
            "featurizer": self.featurizer_.to_dict(),
            "n_functions": list(self.n_functions_),
            "coef": np.asarray(self.coef_).tolist(),
            "alpha": float(self.alpha_),
            "window": self._window_state(),
        }

    def _set_state(self, state: dict, directory: Path) -> None:
        recipe = state["featurizer"]
        fz = featurizer_for_load(recipe, self.featurizer, directory)
        self.featurizer_ = fz
        self._family = FeaturizerFamily(fz)
        self.n_functions_ = [int(n) for n in fz.n_functions]
        if self.n_functions_ != list(state["n_functions"]):
            raise ModelError(
                f"{directory}: featurizer rebuilt with {self.n_functions_} functions, "
                f"model expects {state['n_functions']}"
            )
        self.coef_ = np.asarray(state["coef"], dtype=float)
        self.alpha_ = float(state["alpha"])
        self._load_window(state, self.n_functions_, directory)
