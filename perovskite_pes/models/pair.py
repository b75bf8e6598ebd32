"""Pair-potential baseline: ridge regression on Gaussian radial functions of each species pair.

    E = n_cells e0 + sum_t sum_k w_tk [G_tk(x) - G_tk(reference)],
    G_tk = 1/2 sum_{i != j, images} [type(i, j) = t] exp(-(d_ij - mu_k)^2 / (2 s^2)) f_c(d_ij)

with a cosine cutoff f_c (zero beyond ``cutoff``, 7.8 A by default) and the Gaussian centres
``mu_k`` evenly spaced between ``r_min`` and ``cutoff``. Pairs are listed once per reference
supercell with explicit periodic images (``ase.neighborlist``) within ``cutoff + skin``, so the
energy is a smooth torch function of positions and lattice and forces/stress come by autograd.
The weights are fitted per primitive cell with scikit-learn's ``RidgeCV`` (energies only) on the
centred, unscaled features.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..structure import ReferenceSupercell
from .base import EnergyModel, ModelError, check_configurations, check_energies, geometry, group_by_reference

logger = logging.getLogger(__name__)

SUBLATTICE_INDEX = {"A": 0, "B": 1, "X": 2}
PAIR_TYPES = ("AA", "AB", "AX", "BB", "BX", "XX")


def _pair_type(a: int, b: int) -> int:
    a, b = min(a, b), max(a, b)
    return PAIR_TYPES.index("ABX"[a] + "ABX"[b])


class PairList:
    """Fixed list of site pairs (i, j, image shift S) of a reference supercell within a radius."""

    def __init__(self, reference: ReferenceSupercell, radius: float):
        from ase import Atoms
        from ase.neighborlist import neighbor_list

        atoms = Atoms(symbols=reference.species, positions=reference.positions, cell=reference.lattice, pbc=True)
        i, j, shift = neighbor_list("ijS", atoms, radius)
        lab = np.array([SUBLATTICE_INDEX[s] for s in reference.sublattice])
        self.i = i.astype(np.int64)
        self.j = j.astype(np.int64)
        self.shift = shift.astype(float)
        self.types = np.array([_pair_type(a, b) for a, b in zip(lab[i], lab[j])], dtype=np.int64)
        self.radius = radius

    def distances(self, positions, lattice):
        """Torch distances ``[B, P]`` for positions ``[B, N, 3]`` and lattices ``[B, 3, 3]``."""
        import torch

        s = torch.as_tensor(self.shift, dtype=positions.dtype)
        vec = positions[:, self.j] - positions[:, self.i] + torch.einsum("pk,bkl->bpl", s, lattice)
        return torch.sqrt((vec**2).sum(-1))


class PairPotential(EnergyModel):
    """Ridge-regressed pair potential on Gaussian radial functions per species pair (a baseline).

    Parameters
    ----------
    cutoff:
        Radial cutoff (Angstrom).
    n_gaussians, r_min, width:
        ``n_gaussians`` centres evenly spaced on ``[r_min, cutoff]``; Gaussian width (default: the spacing).
    skin:
        Pairs are listed on the reference supercell out to ``cutoff + skin``. None (default): the skin
        grows with the configurations evaluated (the pair list is rebuilt when a batch needs more), so
        strongly tilted cells work without tuning. A number fixes it; configurations whose pair
        distances may have changed by more than a fixed skin are refused. The features do not depend
        on the skin, only on whether it is large enough.
    alphas:
        Ridge penalties tried by ``RidgeCV`` (features standardised first).
    reference_energy_per_fu:
        Energy (eV) of one primitive cell of the undistorted reference; fitted when None.
    """

    model_type = "pair"

    def __init__(
        self,
        cutoff: float = 7.8,
        n_gaussians: int = 24,
        r_min: float = 2.4,
        width: float | None = None,
        skin: float | None = None,
        alphas=None,
        reference_energy_per_fu: float | None = None,
    ):
        self.cutoff = cutoff
        self.n_gaussians = n_gaussians
        self.r_min = r_min
        self.width = width
        self.skin = skin
        self.alphas = alphas
        self.reference_energy_per_fu = reference_energy_per_fu

    # pair lists and reference features per supercell: caches built on first use, emptied when a
    # hyperparameter they depend on changes (set_params or plain assignment)
    def _cache(self, name: str) -> dict:
        key = (self.cutoff, self.n_gaussians, self.r_min, self.width, self.skin)
        caches = self.__dict__.setdefault("_caches", {})
        if caches.get("key") != key:
            caches.clear()
            caches["key"] = key
        return caches.setdefault(name, {})

    @property
    def _pairs(self) -> dict:
        return self._cache("pairs")

    @property
    def _g_ref(self) -> dict:
        return self._cache("reference_features")

    # ---------------------------------------------------------------- features
    def _check_params(self):
        if not (
            self.cutoff > 0
            and self.n_gaussians >= 1
            and 0 <= self.r_min < self.cutoff
            and (self.skin is None or self.skin >= 0)
        ):
            raise ModelError(
                "PairPotential needs cutoff > r_min >= 0, n_gaussians >= 1 and skin >= 0 (or None); got "
                f"cutoff={self.cutoff}, r_min={self.r_min}, n_gaussians={self.n_gaussians}, skin={self.skin}"
            )

    @property
    def centres(self) -> np.ndarray:
        return np.linspace(self.r_min, self.cutoff, int(self.n_gaussians))

    @property
    def gaussian_width(self) -> float:
        if self.width is not None:
            return float(self.width)
        c = self.centres
        return float(c[1] - c[0]) if len(c) > 1 else float(self.cutoff - self.r_min) / 2

    @property
    def n_features(self) -> int:
        return len(PAIR_TYPES) * int(self.n_gaussians)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the pair features' columns (:meth:`features`, ``coef_``): ``"<pair type>/g<k>@<centre> A"``."""
        return np.array([f"{t}/g{k}@{mu:.2f} A" for t in PAIR_TYPES for k, mu in enumerate(self.centres)], dtype=object)

    def _pair_list(self, reference: ReferenceSupercell, needed: float) -> PairList:
        """The pair list of ``reference`` out to ``cutoff + skin``; with the automatic skin it is
        rebuilt (with room to spare) when a batch needs more than the cached one covers."""
        cached = self._pairs.get(reference)
        if self.skin is not None:
            skin = float(self.skin)
        elif cached is not None and cached[0] >= needed:
            skin = cached[0]
        else:
            skin = max(1.0, 1.25 * needed)
        if cached is None or cached[0] != skin:
            if cached is not None:
                logger.debug(
                    "pair list of the %d-atom supercell rebuilt with skin %.2f A (was %.2f A)",
                    reference.n_atoms,
                    skin,
                    cached[0],
                )
            self._pairs[reference] = (skin, PairList(reference, self.cutoff + skin))
        return self._pairs[reference][1]

    def _needed_skin(self, reference, positions, lattice) -> float:
        """Skin that covers every pair of the batch; a fixed skin that is too small is refused."""
        import torch

        with torch.no_grad():
            l0inv = torch.as_tensor(np.linalg.inv(reference.lattice), dtype=torch.float64)
            f = l0inv @ lattice  # L = L0 F (F may include a rigid rotation)
            undeformed = positions @ torch.linalg.inv(f)
            u = undeformed - torch.as_tensor(reference.positions, dtype=torch.float64)
            # |u_i - u_j| is at most the diameter of the displacement cloud (rigid translations drop out)
            spread = torch.stack([torch.cdist(x, x).max() for x in u])
            sv = torch.linalg.svdvals(f)  # |w F| lies between the extreme singular values times |w|
            smax, e = sv.max(dim=1).values, (sv - 1).abs().max(dim=1).values
        if float(e.max()) >= 0.5:
            k = int(e.argmax())
            raise ModelError(
                f"configuration {k} is strained by {100 * float(e[k]):.0f} % relative to the reference; "
                "the pair potential handles distortions of the reference, not other crystals"
            )
        if self.skin is not None:
            bound = spread * smax + (self.cutoff + float(self.skin)) * e
            k = int(bound.argmax())
            if float(bound[k]) > float(self.skin):
                raise ModelError(
                    f"configuration {k} is too far from the reference for the pair list: pair distances may change "
                    f"by up to {float(bound[k]):.2f} A (relative displacements up to {float(spread[k]):.2f} A) "
                    "but skin is "
                    f"{self.skin} A; use a larger skin or skin=None (automatic)"
                )
            return float(self.skin)
        # skin >= spread * smax + (cutoff + skin) * e  <=>  skin >= (spread * smax + cutoff * e) / (1 - e)
        return float(((spread * smax + self.cutoff * e) / (1 - e)).max())

    def features(self, positions, lattice, reference: ReferenceSupercell):
        """Pair features ``G`` ``[B, 6 * n_gaussians]`` (torch, differentiable)."""
        import torch

        pl = self._pair_list(reference, self._needed_skin(reference, positions, lattice))
        d = pl.distances(positions, lattice)  # [B, P]
        mu = torch.as_tensor(self.centres, dtype=d.dtype)
        fc = torch.where(d < self.cutoff, 0.5 * (torch.cos(np.pi * d / self.cutoff) + 1.0), torch.zeros_like(d))
        g = torch.exp(-0.5 * ((d[..., None] - mu) / self.gaussian_width) ** 2) * fc[..., None]  # [B, P, K]
        out = torch.zeros(d.shape[0], len(PAIR_TYPES), len(mu), dtype=d.dtype)
        out = out.index_add(1, torch.as_tensor(pl.types), 0.5 * g)
        return out.reshape(d.shape[0], -1)

    def _reference_features(self, reference: ReferenceSupercell):
        import torch

        if reference not in self._g_ref:
            pos = torch.as_tensor(reference.positions[None], dtype=torch.float64)
            lat = torch.as_tensor(reference.lattice[None], dtype=torch.float64)
            with torch.no_grad():
                self._g_ref[reference] = self.features(pos, lat, reference)[0]
        return self._g_ref[reference]

    def relative_features(self, configs, batch_size: int = 64) -> np.ndarray:
        """``G(x) - G(reference)`` per configuration (numpy ``[B, n_features]``)."""
        import torch

        configs = check_configurations(configs)
        out = np.empty((len(configs), self.n_features))
        for ref, idx in group_by_reference(configs).items():
            g0 = self._reference_features(ref)
            for s in range(0, len(idx), batch_size):
                sel = idx[s : s + batch_size]
                pos, lat = geometry([configs[k] for k in sel])
                with torch.no_grad():
                    g = self.features(torch.as_tensor(pos), torch.as_tensor(lat), ref)
                out[sel] = (g - g0).numpy()
        return out

    # ---------------------------------------------------------------- fit / energy
    def fit(self, configs, energies, forces=None, features=None):
        """Fit the weights to total energies (eV) by ridge regression per primitive cell (forces unused).

        ``features`` may pass :meth:`relative_features` of these configurations.
        """
        configs = check_configurations(configs)
        e = check_energies(energies, len(configs))
        x = self.relative_features(configs) if features is None else np.asarray(features, dtype=float)
        ncell = np.array([c.reference.n_cells for c in configs], dtype=float)
        self.reference_ = configs[0].reference
        return self._fit_design(x / ncell[:, None], e / ncell)

    def fit_arrays(self, reference, energies, features):
        """Fit from :meth:`relative_features` ``[B, n_features]`` of configurations of ``reference``."""
        n = reference.n_cells
        self.reference_ = reference
        return self._fit_design(np.asarray(features, dtype=float) / n, np.asarray(energies, dtype=float) / n)

    def _fit_design(self, x, y):
        from sklearn.linear_model import RidgeCV

        self._check_params()
        if x.shape[1] != self.n_features:
            raise ModelError(f"pair features have {x.shape[1]} columns; expected {self.n_features}")
        alphas = np.logspace(-12, 2, 29) if self.alphas is None else np.asarray(self.alphas, dtype=float)
        # unscaled features: Gaussians that the training set barely samples stay small instead of being
        # blown up by standardisation (which extrapolates wildly on smaller training sets)
        self.coef_, self.e0_, self.alpha_ = _ridge(
            x, y, alphas, self.reference_energy_per_fu, RidgeCV, standardize=False
        )
        logger.info(
            "PairPotential: %d weights fitted to %d configurations, alpha %.3g", len(self.coef_), len(y), self.alpha_
        )
        return self

    feature_kind = "pair"

    def _features(self, positions, lattice, reference):
        return self.features(positions, lattice, reference) - self._reference_features(reference)

    def _energy_from_features(self, features, reference):
        import torch

        g = torch.as_tensor(features, dtype=torch.float64)
        return reference.n_cells * self.e0_ + g @ torch.as_tensor(self.coef_, dtype=g.dtype)

    # ---------------------------------------------------------------- persistence
    def _hyperparameters(self) -> dict:
        return {
            "cutoff": self.cutoff,
            "n_gaussians": self.n_gaussians,
            "r_min": self.r_min,
            "width": self.width,
            "skin": self.skin,
            "alphas": None if self.alphas is None else [float(a) for a in self.alphas],
            "reference_energy_per_fu": self.reference_energy_per_fu,
        }

    def _state(self) -> dict:
        return {"coef": np.asarray(self.coef_).tolist(), "alpha": float(self.alpha_)}

    def _set_state(self, state: dict, directory: Path) -> None:
        coef = np.asarray(state["coef"], dtype=float)
        if coef.shape != (self.n_features,):
            raise ModelError(f"{directory}: pair potential has {coef.size} weights, expected {self.n_features}")
        self.coef_ = coef
        self.alpha_ = float(state["alpha"])


def _ridge(x, y, alphas, e0, ridge_cls, standardize: bool = True):
    """Ridge fit (features standardised or only centred); returns (weights in feature units, e0 per cell, alpha).

    Features that (almost) do not vary over the training set get weight zero: standardising them
    would turn rounding noise into huge values on configurations outside the training range.
    """
    scale = x.std(axis=0)
    keep = scale > 1e-6 * max(float(scale.max()), 1e-300)
    coef = np.zeros(x.shape[1])
    xs = x[:, keep]
    sk = scale[keep] if standardize else np.ones(int(keep.sum()))
    if e0 is None:
        mean = xs.mean(axis=0)
        reg = ridge_cls(alphas=alphas, fit_intercept=True).fit((xs - mean) / sk, y)
        coef[keep] = reg.coef_ / sk
        intercept = float(reg.intercept_ - coef[keep] @ mean)
    else:
        reg = ridge_cls(alphas=alphas, fit_intercept=False).fit(xs / sk, y - float(e0))
        coef[keep] = reg.coef_ / sk
        intercept = float(e0)
    return coef, intercept, float(getattr(reg, "alpha_", np.nan))
