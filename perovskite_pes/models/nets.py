"""Neural-net energy models on invariant cluster basis functions.

* :class:`ClusterNet` (Eq. 13): one MLP per cluster orbit, evaluated on the basis functions
  ``phi_m`` of every cluster of the orbit and summed.
* :class:`SiteNet` (Eqs. 15-16): one MLP per site orbit (A, B, X), evaluated on the site
  correlation functions ``g^i`` of every site of the orbit and summed.

Both use tanh hidden layers and standardise their inputs with the training set's mean and
standard deviation (per orbit and basis function; the scaler is saved with the model). The
energy is measured from the reference crystal: every MLP's output at the undistorted
reference is subtracted, so ``E(reference) = n_cells * e0`` exactly, and

    E = n_cells * e0 + s * sum_orbits sum_units [N_orbit(x_unit) - N_orbit(x_reference)]

with a fixed output scale ``s`` set from the spread of the training energies. ``e0`` (energy of
one primitive cell of the reference) is given or trained with the weights.

``bounded=True`` keeps the energy bounded below and rising outside the training data: the MLPs see
each input through a smooth clamp to its training range and a quadratic wall rises outside it
(:mod:`perovskite_pes.models.bounds`); the site net has that wall on every cluster's own features
too, since a site's averaged features miss one short bond among long ones. Inside the training
window nothing changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .base import (
    EnergyModel,
    ModelError,
    check_configurations,
    check_energies,
    check_forces,
    check_stresses,
    geometry,
    strain_handles,
    stress_from_gradient,
)
from .bounds import BoundedInputs
from .featurizers import FeaturizerFamily, build_featurizer, featurizer_for_load, reference_of
from .training import TrainingHistory, adam_schedule, lbfgs_refine, module_state, split_validation

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (2, 10, 100, 1000)
DEFAULT_EPOCHS = (20, 50, 200, 1000)


def _torch():
    import torch

    return torch


def build_mlps(n_inputs: list[int], hidden_layers, linear: bool = False, mask=None):
    """One tanh MLP (``n_in -> hidden... -> 1``) per orbit, evaluated together
    (:class:`~perovskite_pes.models.mlp.OrbitMLPs`).

    ``mask`` (per orbit, one 0/1 per input) limits what the MLPs see; the linear term sees every input.
    """
    from .mlp import OrbitMLPs

    return OrbitMLPs(n_inputs, hidden_layers, linear, mask)


def pack(feats, n_features: int):
    """Concatenate per-orbit features ``[B, U_g, F_g]`` to ``[B, U, n_features]`` (zero-padded)."""
    torch = _torch()
    f = torch.nn.functional
    return torch.cat([f.pad(x, (0, n_features - x.shape[-1])) for x in feats], dim=1)


def unit_groups(feats) -> torch.Tensor:  # noqa: F821
    torch = _torch()
    return torch.cat([torch.full((x.shape[1],), g, dtype=torch.long) for g, x in enumerate(feats)])


def orbit_sum(mlps, feats, anchors):
    """``sum_g sum_u [N_g(x_gu) - N_g(a_g)]`` for standardised features ``feats[g]`` ``[B, U_g, F_g]``."""
    torch = _torch()
    if sum(x.shape[1] for x in feats) == 0:
        raise ModelError("the featurizer produced no features: every orbit is empty")
    f = mlps.n_features
    counts = torch.tensor([float(x.shape[1]) for x in feats], dtype=torch.float64)
    a = torch.stack([torch.nn.functional.pad(v, (0, f - v.shape[-1])) for v in anchors])
    if feats[0].shape[0] * sum(x.shape[1] for x in feats) > 4096:
        return mlps.grouped(feats, counts, a)
    return mlps(pack(feats, f), unit_groups(feats), counts, a)


class _NeuralModel(BoundedInputs, EnergyModel):
    """Shared implementation of the cluster- and site-based nets (scikit-learn style)."""

    feature_kind = ""  # "cluster" or "site"

    def __init__(
        self,
        clusters="7p+t+o",
        max_order: int = 2,
        metric: str = "lin",
        truncated: bool = False,
        hidden_layers=(8,),
        batch_sizes=DEFAULT_BATCH_SIZES,
        epochs=DEFAULT_EPOCHS,
        learning_rate=1e-3,
        patience: int | None = 100,
        validation_fraction: float = 0.1,
        force_weight: float = 0.0,
        stress_weight: float = 0.0,
        energy_weight_scale: float | None = None,
        size_weight: float = 0.0,
        weight_decay: float = 0.0,
        lbfgs_iterations: int = 0,
        linear_term: bool = False,
        net_order: int | None = None,
        reference_energy_per_fu: float | None = None,
        seed: int = 0,
        verbose: bool = False,
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
        self.hidden_layers = hidden_layers
        self.batch_sizes = batch_sizes
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.force_weight = force_weight
        self.stress_weight = stress_weight
        self.energy_weight_scale = energy_weight_scale
        self.size_weight = size_weight
        self.weight_decay = weight_decay
        self.lbfgs_iterations = lbfgs_iterations
        self.linear_term = linear_term
        self.net_order = net_order
        self.reference_energy_per_fu = reference_energy_per_fu
        self.seed = seed
        self.verbose = verbose
        self.featurizer = featurizer
        self.bounded = bounded
        self.bound_width = bound_width
        self.bound_strength = bound_strength
        self.bound_offset = bound_offset
        self.bound_scale = bound_scale

    # ------------------------------------------------------------------ features
    def _raw(self, featurizer, positions, lattice):
        if self.feature_kind == "cluster":
            return list(featurizer.cluster_features(positions, lattice))
        return list(featurizer.site_features(positions, lattice))

    def _cluster_grads(self, featurizer, raw_grads):
        """Derivatives of a scalar by the cluster features from those by the net's inputs (of :meth:`_raw`)."""
        if self.feature_kind == "cluster":
            return list(raw_grads)
        return featurizer.site_features_adjoint(raw_grads)

    def _n_inputs(self, featurizer) -> list[int]:
        if self.feature_kind == "cluster":
            return [int(n) for n in featurizer.n_functions]
        return [int(n) for n in featurizer.n_site_features]

    def _input_mask(self, featurizer):
        """Per group, which inputs the MLPs see (degree <= ``net_order``); None: all of them."""
        if self.net_order is None:
            return None
        degrees = featurizer.degrees if self.feature_kind == "cluster" else featurizer.site_degrees
        top = max((d for row in degrees for d in row), default=0)
        if int(self.net_order) != self.net_order or not 1 <= int(self.net_order) <= top:
            raise ModelError(f"net_order must be an integer from 1 to the basis order ({top}); got {self.net_order!r}")
        return [[1.0 if d <= int(self.net_order) else 0.0 for d in row] for row in degrees]

    def _group_names(self, featurizer) -> list[str]:
        return list(featurizer.orbit_names if self.feature_kind == "cluster" else featurizer.site_orbit_names)

    def _standardise(self, raw):
        return [(x - m) / s for x, m, s in zip(raw, self.scaler_mean_, self.scaler_std_)]

    def _check_hyperparameters(self):
        hl = self.hidden_layers
        if isinstance(hl, (int, np.integer)):
            hl = (int(hl),)
        try:
            hl = tuple(int(h) for h in hl)
        except TypeError:
            raise ModelError(
                f"hidden_layers must be a list of layer widths, e.g. [8] or [16, 16]; got {self.hidden_layers!r}"
            ) from None
        if not hl or min(hl) < 1:
            raise ModelError(f"hidden_layers needs at least one layer of >= 1 node; got {self.hidden_layers!r}")
        if self.force_weight < 0:
            raise ModelError(f"force_weight must be >= 0; got {self.force_weight}")
        if self.stress_weight < 0:
            raise ModelError(f"stress_weight must be >= 0; got {self.stress_weight}")
        ews = self.energy_weight_scale
        if ews is not None and not (isinstance(ews, (int, float)) and np.isfinite(ews) and ews > 0):
            raise ModelError(
                f"energy_weight_scale must be a positive energy per atom in eV (e.g. 0.05) or None; got {ews!r}"
            )
        sw = self.size_weight
        if not (isinstance(sw, (int, float)) and np.isfinite(sw) and sw >= 0):
            raise ModelError(
                f"size_weight must be a power >= 0 (0: every configuration counts the same, 1: in proportion "
                f"to its cells); got {sw!r}"
            )
        return hl

    def _prepare_featurizer(self, reference):
        if self.featurizer is not None:
            fz = self.featurizer
            if reference_of(fz) != reference:
                fz = FeaturizerFamily(fz)(reference)
        else:
            fz = build_featurizer(reference, self.clusters, self.max_order, self.metric, self.truncated)
        return fz

    # ------------------------------------------------------------------ fit
    def fit(self, configs, energies, forces=None, features=None, stresses=None):
        """Train on total energies (eV) and, when ``force_weight > 0``, forces (eV/A); when
        ``stress_weight > 0``, stresses (``[B, 6]`` eV/A^3, Voigt, ASE sign, as ``compute`` gives).

        The configurations may come from several supercells of one reference crystal (e.g. 2x2x2
        enumerations with frames of 4x4x4 MD: the larger cell holds the long-wavelength
        fluctuations a 2x2x2 cell cannot); every configuration then counts once in the loss,
        whatever its size, and the model keeps the smallest supercell as its reference.
        ``features`` may pass precomputed raw features (:meth:`precompute`) of exactly these
        configurations (one supercell only) to skip featurisation.
        """
        configs = check_configurations(configs)
        e = check_energies(energies, len(configs))
        use_forces = self.force_weight > 0
        if use_forces and forces is None:
            raise ModelError("force_weight > 0 needs the forces of the training configurations")
        use_stress = self.stress_weight > 0
        if use_stress and stresses is None:
            raise ModelError("stress_weight > 0 needs the stresses of the training configurations")
        f = check_forces(forces, configs) if use_forces else None
        st = check_stresses(stresses, len(configs)) if use_stress else None
        groups = supercell_groups(configs)
        if len(groups) > 1 and features is not None:
            raise ModelError(
                "precomputed features need configurations of one supercell; got "
                + ", ".join(str(configs[idx[0]].reference.matrix.tolist()) for idx in groups)
            )
        fz = self._prepare_featurizer(configs[groups[0][0]].reference)
        family = FeaturizerFamily(fz)
        blocks = []
        for idx in groups:
            sub = [configs[i] for i in idx]
            ref = sub[0].reference
            fz_b = family(ref)
            # the cluster wall of a bounded site net needs the geometry too
            pos, lat = geometry(sub) if (use_forces or use_stress or self._wants_cluster_wall()) else (None, None)
            raw = features if features is not None else self.precompute(sub, fz_b)
            blocks.append(
                _Block(
                    ref,
                    e[idx],
                    raw,
                    pos,
                    lat,
                    None if f is None else np.stack([f[i] for i in idx]),
                    None if st is None else st[idx],
                    fz_b,
                )
            )
        return self._fit_blocks(blocks, fz)

    def fit_arrays(
        self, reference, energies, features, positions=None, lattice=None, forces=None, featurizer=None, stresses=None
    ):
        """Train from arrays: raw features (list per orbit, ``[B, U, F]``), energies ``[B]`` (eV) and,
        for the force term, positions ``[B, N, 3]``, lattices ``[B, 3, 3]`` and forces ``[B, N, 3]``;
        for the stress term, the positions, lattices and stresses ``[B, 6]`` (eV/A^3, Voigt, ASE sign).
        All in the one supercell ``reference`` (:meth:`fit` takes configurations of several).
        """
        fz = featurizer if featurizer is not None else self._prepare_featurizer(reference)
        block = _Block(reference, energies, features, positions, lattice, forces, stresses, fz)
        return self._fit_blocks([block], fz)

    def _fit_blocks(self, blocks: list[_Block], fz):
        """Train on the configurations of one or more supercells (one :class:`_Block` each).

        The steps: check the inputs and set the featurizer; fit the input scaler (and the feature
        window when bounded) on the units of all configurations; scale the targets; build the MLPs;
        minimise the loss (:class:`_Objective` per supercell) with the Adam schedule and optional
        L-BFGS; keep the result.
        """
        torch = _torch()
        hidden = self._check_hyperparameters()
        use_forces = self.force_weight > 0
        use_stress = self.stress_weight > 0
        for b in blocks:
            b.check(use_forces, use_stress)
        reference = blocks[0].reference
        n_inputs = self._set_featurizer(reference, fz, blocks[0].raw, len(blocks[0].energies))
        for b in blocks[1:]:
            self._check_raw(b.raw, n_inputs, len(b.energies))
        units = _all_units([b.raw for b in blocks])
        self._set_scaler(*_feature_scaler(units))
        self._fit_window(units, fz)
        self._fit_cluster_wall(_training_cluster_features(blocks) if self._wants_cluster_wall() else None, fz)
        targets = _EnergyTargets.of_blocks(blocks, self.reference_energy_per_fu)
        self.output_scale_ = targets[0].scale / targets[0].units_per_cell
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            self.mlps_ = build_mlps(n_inputs, hidden, bool(self.linear_term), self._input_mask(fz))
        offset = torch.zeros((), dtype=torch.float64, requires_grad=self.reference_energy_per_fu is None)
        e_all = np.concatenate([b.energies for b in blocks])
        n_atoms = np.concatenate([np.full(len(b.energies), b.reference.n_atoms, dtype=float) for b in blocks])
        train_idx, val_idx = split_validation(len(e_all), float(self.validation_fraction), int(self.seed))
        weights = configuration_weights(e_all, n_atoms, self.energy_weight_scale, train_idx, self.size_weight)
        parts, start = [], 0
        for b, t in zip(blocks, targets):
            stop = start + len(b.energies)
            local = slice(start, stop)
            b_train = train_idx[(train_idx >= start) & (train_idx < stop)] - start
            b_val = val_idx[(val_idx >= start) & (val_idx < stop)] - start
            parts.append(
                _Objective(
                    self.mlps_,
                    self._standardise(b.raw),
                    self._anchors(),
                    t,
                    offset,
                    b_train,
                    b_val,
                    self._standardise,
                    self._force_data(b, np.concatenate([b_train, b_val])) if (use_forces or use_stress) else None,
                    float(self.weight_decay),
                    None if weights is None else weights[local],
                )
            )
            start = stop
        objective = parts[0] if len(parts) == 1 else _MixedObjective(parts, train_idx, val_idx)
        params = list(self.mlps_.parameters()) + ([offset] if offset.requires_grad else [])
        if self.linear_term:
            # staged: the linear term is the ridge solution (a linear CE on the same inputs) and
            # stays fixed while the MLPs learn the remaining, non-linear part of the energy
            self._init_linear_term(parts, offset)
            params = [p for p in params if p is not self.mlps_.linear]
        logger.info(
            "training a %s on %d configurations (%d for validation%s), %d parameters%s",
            type(self).__name__,
            len(e_all),
            len(val_idx),
            "".join(f"; {len(b.energies)} of {b.reference.n_atoms} atoms" for b in blocks if len(blocks) > 1),
            sum(p.numel() for p in params),
            (f", force weight {self.force_weight}" if use_forces else "")
            + (f", stress weight {self.stress_weight}" if use_stress else ""),
        )
        self.history_: TrainingHistory = self._minimise(params, objective, offset)
        self.e0_ = float(targets[0].e0_init + targets[0].scale * float(offset.detach()))
        self._freeze()
        return self

    def _force_data(self, block: _Block, order=None) -> _ForceData:
        return _ForceData(
            block.positions,
            block.lattice,
            block.forces if self.force_weight > 0 else None,
            self.force_weight,
            block.featurizer,
            self._raw,
            stresses=block.stresses if self.stress_weight > 0 else None,
            stress_weight=self.stress_weight,
            raw=block.raw,
            cluster_grads=self._cluster_grads,
            order=order,
        )

    def _set_featurizer(self, reference, fz, raw, n_configs: int) -> list[int]:
        """Keep the training supercell and featurizer; check the raw features against them."""
        self.reference_ = reference
        self.featurizer_ = fz
        self._family = FeaturizerFamily(fz)
        n_inputs = self._n_inputs(fz)
        self._check_raw(raw, n_inputs, n_configs)
        return n_inputs

    @staticmethod
    def _check_raw(raw, n_inputs: list[int], n_configs: int) -> None:
        if (
            len(raw) != len(n_inputs)
            or any(x.shape[0] != n_configs for x in raw)
            or any(x.shape[-1] != n for x, n in zip(raw, n_inputs))
        ):
            raise ModelError("precomputed features do not match the configurations and the featurizer")

    def _minimise(self, params, objective: _Objective, offset) -> TrainingHistory:
        """Adam through the batch-size schedule, then (``lbfgs_iterations``) L-BFGS; best state kept."""
        torch = _torch()
        validation = objective.validation if objective.has_validation else None
        get_state, set_state = module_state(list(self.mlps_.parameters()) + [offset])
        hist = adam_schedule(
            params,
            objective.step,
            validation,
            objective.n_train,
            batch_sizes=self.batch_sizes,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            patience=self.patience,
            seed=int(self.seed),
            get_state=get_state,
            set_state=set_state,
            progress=bool(self.verbose),
        )
        if int(self.lbfgs_iterations or 0) > 0:
            everything = torch.arange(objective.n_train)
            lbfgs_refine(
                params,
                lambda: objective.step(everything),
                validation,
                int(self.lbfgs_iterations),
                hist,
                get_state,
                set_state,
                progress=bool(self.verbose),
            )
        return hist

    def _freeze(self) -> None:
        """Evaluation mode, no gradients on the weights (a fitted or loaded net is not trained further)."""
        self.mlps_.eval()
        for p in self.mlps_.parameters():
            p.requires_grad_(False)

    def _init_linear_term(self, parts: list[_Objective], offset):
        """Set the linear term to the ridge solution (a linear CE on the same inputs) over the
        configurations of every supercell."""
        torch = _torch()
        from sklearn.linear_model import RidgeCV

        from .pair import _ridge

        f = self.mlps_.n_features
        rows, targets = [], []
        for part in parts:
            cols = []
            for x, a in zip(part.features, part.anchors):
                d = (x - a).sum(1) * part.norm  # [B, F_g]
                cols.append(torch.nn.functional.pad(d, (0, f - d.shape[-1])))
            rows.append(torch.stack(cols, dim=1).reshape(len(part.target), -1).numpy())  # [B, G * F]
            targets.append(part.target.numpy())
        e0 = None if offset.requires_grad else 0.0
        design, target = np.concatenate(rows), np.concatenate(targets)
        coef, intercept, _alpha = _ridge(design, target, np.logspace(-8, 2, 21), e0, RidgeCV)
        with torch.no_grad():
            self.mlps_.linear.copy_(torch.as_tensor(coef).reshape(len(parts[0].features), f))
            if offset.requires_grad:
                offset.fill_(float(intercept))

    # ------------------------------------------------------------------ energy
    def _set_scaler(self, mean, std):
        torch = _torch()
        self.scaler_mean_ = [torch.as_tensor(m, dtype=torch.float64) for m in mean]
        self.scaler_std_ = [torch.as_tensor(s, dtype=torch.float64) for s in std]

    def _anchors(self):
        return [(-m / s) for m, s in zip(self.scaler_mean_, self.scaler_std_)]

    def _energy(self, positions, lattice, reference):
        fz = self._family(reference)
        if (
            self.feature_kind == "site"
            and self.net_order is not None
            and self.mlps_.linear is not None
            and hasattr(fz, "site_feature_sums")
            and getattr(self, "window_", None) is None
        ):
            return reference.n_cells * self.e0_ + self.output_scale_ * self._split_sum(fz, positions, lattice)
        if getattr(self, "cluster_window_", None) is not None:  # site features and cluster walls from one pass
            cf = fz.cluster_features(positions, lattice)
            raw = list(fz.site_features(positions, lattice, cf))
            return self._energy_from_features(raw, reference) + self._cluster_wall_total(cf)
        return self._energy_from_features(self._features(positions, lattice, reference), reference)

    def _features(self, positions, lattice, reference):
        return self._raw(self._family(reference), positions, lattice)

    def _energy_from_features(self, raw, reference):
        inputs, wall = self._bounded(raw)
        x = self._standardise(inputs)
        return reference.n_cells * self.e0_ + self.output_scale_ * orbit_sum(self.mlps_, x, self._anchors()) + wall

    def _split_sum(self, fz, positions, lattice):
        """``orbit_sum`` of a site net with ``net_order``, without the site features the MLPs do not see.

        The MLPs get the site features of degree <= net_order only; the linear term needs only the
        sum over sites, ``sum_u v.(x_u - a) = v.(G / std)`` with ``G`` the summed raw site features
        (``Featurizer.site_feature_sums``, straight from the cluster features). Same value as the
        general path (tested); much less work for large cells.
        """
        cf = fz.cluster_features(positions, lattice)
        low = fz.site_features(positions, lattice, cf, max_degree=int(self.net_order))
        sums = fz.site_feature_sums(cf)
        mlps = self.mlps_
        total = 0.0
        for g, (x, G) in enumerate(zip(low, sums)):
            n_in = G.shape[-1]
            keep = mlps.keep[g]
            mean, std = self.scaler_mean_[g], self.scaler_std_[g]
            xs = (x - mean[keep]) / std[keep]
            a = (-mean[keep] / std[keep])[None, None, :]
            if x.shape[1]:
                total = total + mlps.mlp_inputs(g, xs).sum(1) - x.shape[1] * mlps.mlp_inputs(g, a)[0, 0]
            total = total + (G / std) @ mlps.linear[g, :n_in]
        return total

    def unit_energies(self, group: int, raw):
        self._check_fitted()
        inputs, wall = self._bounded_unit(group, raw)
        x = (inputs - self.scaler_mean_[group]) / self.scaler_std_[group]
        out = self.mlps_._mlp_group(group, x)
        if self.mlps_.linear is not None:
            out = out + x @ self.mlps_.linear[group, : x.shape[-1]]
        return self.output_scale_ * out + wall

    @property
    def orbit_names(self) -> list[str]:
        self._check_fitted()
        return self._group_names(self.featurizer_)

    # ------------------------------------------------------------------ persistence
    def _hyperparameters(self) -> dict:
        hl = self.hidden_layers
        return {
            "clusters": self.clusters,
            "max_order": int(self.max_order),
            "metric": self.metric,
            "truncated": bool(self.truncated),
            "hidden_layers": [int(hl)] if isinstance(hl, (int, np.integer)) else [int(h) for h in hl],
            "batch_sizes": [int(b) for b in self.batch_sizes],
            "epochs": int(self.epochs) if isinstance(self.epochs, (int, np.integer)) else [int(x) for x in self.epochs],
            "learning_rate": (
                float(self.learning_rate)
                if isinstance(self.learning_rate, (int, float, np.floating))
                else [float(x) for x in self.learning_rate]
            ),
            "patience": None if self.patience is None else int(self.patience),
            "validation_fraction": float(self.validation_fraction),
            "force_weight": float(self.force_weight),
            "stress_weight": float(self.stress_weight),
            "energy_weight_scale": None if self.energy_weight_scale is None else float(self.energy_weight_scale),
            "size_weight": float(self.size_weight),
            "weight_decay": float(self.weight_decay),
            "lbfgs_iterations": int(self.lbfgs_iterations or 0),
            "linear_term": bool(self.linear_term),
            "net_order": None if self.net_order is None else int(self.net_order),
            "reference_energy_per_fu": self.reference_energy_per_fu,
            "seed": int(self.seed),
            **self._bound_params(),
        }

    def _state_for_save(self, directory: Path) -> dict:
        torch = _torch()
        torch.save(self.mlps_.state_dict(), directory / "weights.pt")
        return {
            "featurizer": self.featurizer_.to_dict(),
            "n_inputs": self._n_inputs(self.featurizer_),
            "orbit_names": self._group_names(self.featurizer_),
            "scaler": {"mean": [m.tolist() for m in self.scaler_mean_], "std": [s.tolist() for s in self.scaler_std_]},
            "output_scale": float(self.output_scale_),
            "history": getattr(self, "history_", TrainingHistory()).to_dict(),
            "window": self._window_state(),
            "cluster_window": self._cluster_window_state(),
        }

    def _set_state(self, state: dict, directory: Path) -> None:
        torch = _torch()
        recipe = state["featurizer"]
        fz = featurizer_for_load(recipe, self.featurizer, directory)
        n_inputs = self._n_inputs(fz)
        if n_inputs != list(state["n_inputs"]):
            raise ModelError(
                f"{directory}: featurizer rebuilt with inputs {n_inputs}, model expects {state['n_inputs']}"
            )
        self.featurizer_ = fz
        self._family = FeaturizerFamily(fz)
        self._set_scaler(state["scaler"]["mean"], state["scaler"]["std"])
        self.output_scale_ = float(state["output_scale"])
        self._load_window(state, n_inputs, directory)
        self.mlps_ = build_mlps(n_inputs, self._check_hyperparameters(), bool(self.linear_term), self._input_mask(fz))
        weights = directory / "weights.pt"
        if not weights.is_file():
            raise ModelError(f"{directory}: weights.pt is missing")
        try:
            sd = torch.load(weights, weights_only=True, map_location="cpu")
        except Exception as exc:  # torch raises several types for corrupt/unsafe files
            raise ModelError(f"{weights}: cannot read the weights safely: {exc}") from None
        self.mlps_.load_state_dict(sd)
        self._freeze()
        self.history_ = TrainingHistory()
        h = state.get("history") or {}
        for k in ("stage", "batch_size", "train_loss", "val_loss"):
            setattr(self.history_, k, list(h.get(k, [])))
        self.history_.best_epoch = int(h.get("best_epoch", -1))


def _intercept(x: np.ndarray, y: np.ndarray) -> float:
    """Intercept of a lightly regularised linear fit of ``y`` on ``x`` (start value of e0)."""
    from sklearn.linear_model import RidgeCV

    scale = x.std(0)
    scale[scale < 1e-12] = 1.0
    xs = (x - x.mean(0)) / scale
    reg = RidgeCV(alphas=np.logspace(-6, 2, 9)).fit(xs, y)
    return float(reg.intercept_ - (reg.coef_ / scale) @ x.mean(0))


def _feature_scaler(raw):
    """Mean and standard deviation per orbit and function over all units of all configurations."""
    torch = _torch()
    mean, std = [], []
    for x in raw:
        flat = x.reshape(-1, x.shape[-1])
        m = flat.mean(0) if flat.shape[0] else torch.zeros(x.shape[-1], dtype=torch.float64)
        s = flat.std(0) if flat.shape[0] > 1 else torch.ones(x.shape[-1], dtype=torch.float64)
        mean.append(m)
        std.append(torch.where(s > 1e-12, s, torch.ones_like(s)))
    return mean, std


class _EnergyTargets:
    """The training energies of one supercell as the nets learn them: per primitive cell, less ``e0``,
    in units of their spread (``e0`` and the spread are set from the configurations of every supercell)."""

    def __init__(self, target, e0_init: float, scale: float, units_per_cell: float, n_cells: float):
        self.target = target
        self.e0_init = e0_init
        self.scale = scale
        self.units_per_cell = units_per_cell
        self.n_cells = n_cells

    @classmethod
    def of_blocks(cls, blocks: list[_Block], reference_energy_per_fu) -> list[_EnergyTargets]:
        torch = _torch()
        ncells = [float(b.reference.n_cells) for b in blocks]
        y = np.concatenate([b.energies / n for b, n in zip(blocks, ncells)])
        if reference_energy_per_fu is None:
            summed = np.concatenate(
                [np.concatenate([x.sum(1).numpy() / n for x in b.raw], axis=1) for b, n in zip(blocks, ncells)]
            )
            e0_init = _intercept(summed, y)
        else:
            e0_init = float(reference_energy_per_fu)
        sy = float(np.sqrt(np.mean((y - e0_init) ** 2)))
        sy = sy if sy > 1e-8 else 1e-3
        out = []
        for b, n in zip(blocks, ncells):
            units_per_cell = sum(x.shape[1] for x in b.raw) / n
            out.append(cls(torch.as_tensor((b.energies / n - e0_init) / sy), e0_init, sy, units_per_cell, n))
        return out


def _training_cluster_features(blocks, batch_size: int = 256):
    """Cluster features (list per orbit of ``[1, units, F]``) of every training configuration of
    ``blocks`` for the site net's cluster wall; None when a block has no geometry."""
    torch = _torch()
    if any(b.positions is None or b.lattice is None for b in blocks):
        return None
    chunks = []  # per batch, per orbit: [units, F]
    for b in blocks:
        pos = torch.as_tensor(np.asarray(b.positions, dtype=float))
        lat = torch.as_tensor(np.asarray(b.lattice, dtype=float))
        for s in range(0, len(pos), batch_size):
            with torch.no_grad():
                cf = b.featurizer.cluster_features(pos[s : s + batch_size], lat[s : s + batch_size])
            chunks.append([x.reshape(-1, x.shape[-1]) for x in cf])
    return [torch.cat([c[o] for c in chunks])[None] for o in range(len(chunks[0]))]


class _Block:
    """Training data of one supercell: its reference, energies ``[B]`` (eV), raw features (per orbit
    ``[B, U, F]``), the featurizer of that supercell and, for the gradient terms, positions, lattices,
    forces and stresses (None when not trained on)."""

    def __init__(self, reference, energies, raw, positions, lattice, forces, stresses, featurizer):
        torch = _torch()
        self.reference = reference
        self.energies = np.asarray(energies, dtype=float)
        self.raw = [
            torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64) for x in raw
        ]
        self.positions, self.lattice, self.forces, self.stresses = positions, lattice, forces, stresses
        self.featurizer = featurizer

    def check(self, use_forces: bool, use_stress: bool) -> None:
        if use_forces and (self.forces is None or self.positions is None or self.lattice is None):
            raise ModelError("force_weight > 0 needs positions, lattices and forces of the training configurations")
        if use_stress and (self.stresses is None or self.positions is None or self.lattice is None):
            raise ModelError("stress_weight > 0 needs positions, lattices and stresses of the training configurations")


def supercell_groups(configs) -> list[np.ndarray]:
    """Indices of the configurations of each supercell, the smallest supercell first.

    Every configuration must be a supercell of one reference crystal (same species and lattice
    parameter); a ModelError names the two crystals otherwise.
    """
    by_ref: dict = {}
    for i, c in enumerate(configs):
        by_ref.setdefault(c.reference, []).append(i)
    refs = list(by_ref)
    for r in refs[1:]:
        if r.perovskite != refs[0].perovskite:
            p0, p1 = refs[0].perovskite, r.perovskite
            raise ModelError(
                "training configurations must be supercells of one reference crystal; got "
                f"{p0.formula} (a = {p0.lattice_parameter} A) and {p1.formula} (a = {p1.lattice_parameter} A)"
            )
    groups = sorted(by_ref.values(), key=lambda idx: configs[idx[0]].reference.n_atoms)
    return [np.asarray(g) for g in groups]


def _all_units(raws):
    """The units of every configuration of every supercell as one batch: per orbit ``[1, sum U, F]``."""
    torch = _torch()
    return [torch.cat([x.reshape(1, -1, x.shape[-1]) for x in per_orbit], dim=1) for per_orbit in zip(*raws)]


def configuration_weights(energies, n_atoms, scale: float | None, train_idx=None, size_power: float = 0.0):
    """Per-configuration loss weights: ``scale / (scale + dE)`` (favour low energies), with ``dE`` the
    energy per atom (eV; ``n_atoms`` one number or one per configuration) above the lowest training
    configuration, times ``(n_atoms / smallest n_atoms) ** size_power`` (favour larger supercells),
    normalised to mean 1 over ``train_idx`` (all when None); None when neither applies (every
    configuration counts the same).

    A configuration ``scale`` per atom above the lowest weighs half as much, one ten times as high a
    tenth: the fit spends its capacity where thermal motion goes and still sees the shape of the
    landscape far above it. The loss takes each configuration's energy per cell and its mean force
    error once, whatever its size; with ``size_power`` 1 a 4x4x4 frame, which holds eight times the
    environments of a 2x2x2 one and averages their errors, counts eight times as much.

    >>> [round(float(w), 3) for w in configuration_weights([0.0, 4.0, 40.0], 40, 0.1)]
    [1.886, 0.943, 0.171]
    >>> [round(float(w), 3) for w in configuration_weights([0.0, 0.0], [40, 320], None, size_power=1)]
    [0.222, 1.778]
    """
    size_power = float(size_power or 0.0)
    if scale is None and size_power == 0.0:
        return None
    e = np.asarray(energies, dtype=float) / np.asarray(n_atoms, dtype=float)
    idx = np.arange(len(e)) if train_idx is None else np.asarray(train_idx)
    w = np.ones(len(e))
    if scale is not None:
        w = float(scale) / (float(scale) + np.maximum(e - e[idx].min(), 0.0))
    if size_power:
        atoms = np.broadcast_to(np.asarray(n_atoms, dtype=float), e.shape)
        w = w * (atoms / atoms.min()) ** size_power
    return w / w[idx].mean()


#: largest linearisation of the training features of one supercell kept per fit (bytes); above it they are
#: computed again from the positions at every evaluation of the loss
LINEARISATION_MAX_BYTES = 3 * 2**30


class _ForceData:
    """Geometry, forces and stresses of the training configurations for the gradient terms of the loss
    (either may be None: that term is left out). Each is scaled by its root mean square.

    With ``cluster_grads`` (the chain rule from the net's inputs to the cluster features) and a
    featurizer that can, the cluster features are linearised once in the pair distances at the
    training geometries (:class:`~perovskite_pes.descriptors.featurizer.ClusterLinearisation`): the
    forces and stresses are then the derivatives of the energy by the net's inputs ``raw`` (fixed)
    carried through the stored Jacobians (:meth:`gradients`), the same numbers as autograd through the
    featurizer, without evaluating the descriptors or a graph through them at every step
    (``benchmarks/bench_models.py --loss``). Otherwise the features are computed from the positions
    at every evaluation (:meth:`features`).
    """

    def __init__(
        self,
        positions,
        lattice,
        forces,
        weight: float,
        featurizer,
        raw_features,
        stresses=None,
        stress_weight=0.0,
        raw=None,
        cluster_grads=None,
        order=None,
    ):
        torch = _torch()
        self.positions = torch.as_tensor(np.asarray(positions, dtype=float))
        self.lattice = torch.as_tensor(np.asarray(lattice, dtype=float))
        self.forces = None if forces is None else torch.as_tensor(np.asarray(forces, dtype=float))
        self.stresses = None if stresses is None else torch.as_tensor(np.asarray(stresses, dtype=float))
        self.scale = _rms_scale(self.forces)
        self.stress_scale = _rms_scale(self.stresses)
        self.weight = float(weight)
        self.stress_weight = float(stress_weight)
        self.featurizer = featurizer
        self.raw_features = raw_features
        self.raw = raw
        self.cluster_grads = cluster_grads
        self.linear = None
        n = len(self.positions)
        if raw is not None and cluster_grads is not None and hasattr(featurizer, "cluster_linearisation") and n:
            need = featurizer.linearisation_nbytes(n)
            if need <= LINEARISATION_MAX_BYTES:
                # stored in ``order`` (training configurations first): a full training batch is a view
                order = torch.arange(n) if order is None else torch.as_tensor(np.asarray(order), dtype=torch.long)
                self.rows = torch.empty_like(order)
                self.rows[order] = torch.arange(n)
                self.linear = featurizer.cluster_linearisation(self.positions[order], self.lattice[order])
            else:
                logger.info(
                    "training features of %d configurations not linearised (%.1f GB > %.1f GB): computed at every step",
                    n,
                    need / 1e9,
                    LINEARISATION_MAX_BYTES / 1e9,
                )

    def features(self, positions, lattice):
        """The net's raw inputs at ``positions``/``lattice`` (differentiable), from the featurizer."""
        return self.raw_features(self.featurizer, positions, lattice)

    def gradients(self, idx, raw_grads, strain: bool):
        """Derivatives of the energy by the positions and (with ``strain``) the strain of configurations
        ``idx`` at their training geometry, from its derivatives by the net's inputs (linearised only)."""
        torch = _torch()
        rows = self.rows[torch.as_tensor(idx, dtype=torch.long)]
        return self.linear.gradients(rows, self.cluster_grads(self.featurizer, raw_grads), strain)


def _rms_scale(values) -> float:
    if values is None:
        return 1.0
    s = float((values**2).mean().sqrt())
    return s if s > 1e-8 else 1.0


class _Objective:
    """The loss a net minimises: mean squared error of the scaled energies (Eq. 18) on a batch of the
    training configurations, plus ``force_weight`` times that of the scaled forces and ``stress_weight``
    times that of the scaled stresses (each scaled by its root mean square), plus an L2
    penalty on the MLP weight matrices (``weight_decay``); and the same loss on the validation set."""

    def __init__(
        self,
        mlps,
        features,
        anchors,
        targets: _EnergyTargets,
        offset,
        train_idx,
        val_idx,
        standardise,
        forces: _ForceData | None = None,
        weight_decay: float = 0.0,
        weights=None,
    ):
        torch = _torch()
        self.mlps = mlps
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=float))
        self.features = features
        self.anchors = anchors
        self.target = targets.target
        self.targets = targets
        self.offset = offset
        self.norm = 1.0 / (targets.units_per_cell * targets.n_cells)
        self.train_idx = torch.as_tensor(train_idx)
        self.val_idx = torch.as_tensor(val_idx)
        self.standardise = standardise
        self.forces = forces
        self.weight_decay = weight_decay
        # L2 penalty on the weight matrices only (not biases, not the linear term), so that it acts
        # in the L-BFGS refinement as well and pulls the nets towards the linear model
        self._penalised = list(mlps.weights) + [mlps.w_out]
        self._n_penalised = float(sum(w.numel() for w in self._penalised))

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def has_validation(self) -> bool:
        return len(self.val_idx) > 0

    def _scaled_energy(self, features):
        return self.offset + self.norm * orbit_sum(self.mlps, features, self.anchors)

    def _weighted_mean(self, squared, idx):
        """Mean of squared errors ``[B, ...]``: of all elements, or of each configuration's mean weighted
        by its weight when weights are set (the same number when every weight is 1)."""
        if self.weights is None:
            return squared.mean()
        per_config = squared.reshape(squared.shape[0], -1).mean(dim=1)
        return (self.weights[idx] * per_config).mean()

    def _energy_loss(self, idx):
        pred = self._scaled_energy([x[idx] for x in self.features])
        return self._weighted_mean((pred - self.target[idx]) ** 2, idx)

    def _energy_and_gradients(self, idx, create_graph: bool):
        """Scaled energies of configurations ``idx`` and their derivatives by the positions and (when
        training on stresses) the strain."""
        torch = _torch()
        fd = self.forces
        strain = fd.stresses is not None
        if fd.linear is not None:  # through the net's inputs and the stored linearisation
            inputs = [x[idx].requires_grad_(True) for x in fd.raw]
            pred = self._scaled_energy(self.standardise(inputs))
            raw_grads = torch.autograd.grad(pred.sum(), inputs, create_graph=create_graph)
            return pred, fd.gradients(idx, raw_grads, strain)
        if strain:  # energy of the deformed cell, differentiated at zero strain
            pos, eps, (x, cell) = strain_handles(fd.positions[idx], fd.lattice[idx])
            leaves = [pos, eps]
        else:
            pos = fd.positions[idx].clone().requires_grad_(True)
            x, cell, leaves = pos, fd.lattice[idx], [pos]
        pred = self._scaled_energy(self.standardise(fd.features(x, cell)))
        return pred, torch.autograd.grad(pred.sum(), leaves, create_graph=create_graph)

    def _energy_and_force_loss(self, idx, create_graph: bool):
        fd = self.forces
        lat = fd.lattice[idx]
        pred, grads = self._energy_and_gradients(idx, create_graph)
        to_ev = self.targets.n_cells * self.targets.scale  # d(total energy) / d(scaled energy)
        loss = self._weighted_mean((pred - self.target[idx]) ** 2, idx)
        if fd.forces is not None:
            ferr = ((-to_ev * grads[0] - fd.forces[idx]) / fd.scale) ** 2
            loss = loss + fd.weight * self._weighted_mean(ferr, idx)
        if fd.stresses is not None:
            spred = stress_from_gradient(to_ev * grads[1], lat)
            serr = ((spred - fd.stresses[idx]) / fd.stress_scale) ** 2
            loss = loss + fd.stress_weight * self._weighted_mean(serr, idx)
        return loss

    def penalty(self):
        if self.weight_decay <= 0:
            return 0.0
        return self.weight_decay * sum((w**2).sum() for w in self._penalised) / self._n_penalised

    def data_loss(self, idx, training: bool = True):
        """Loss of the configurations ``idx`` without the penalty (no graph kept when not ``training``)."""
        torch = _torch()
        if self.forces is not None:
            loss = self._energy_and_force_loss(idx, training)
            return loss if training else loss.detach()
        if training:
            return self._energy_loss(idx)
        with torch.no_grad():
            return self._energy_loss(idx)

    def step(self, batch):
        """Training loss of the batch ``batch`` (positions in the training set), with the penalty."""
        return self.data_loss(self.train_idx[batch]) + self.penalty()

    def validation(self) -> float:
        """Loss on the validation configurations (no penalty)."""
        return float(self.data_loss(self.val_idx, training=False))


class _MixedObjective:
    """The loss over configurations of several supercells, one :class:`_Objective` (``parts``) per
    supercell: the mean over a batch's configurations, each counting once whatever its size.

    ``train_idx`` and ``val_idx`` index the configurations of all parts in order.
    """

    def __init__(self, parts: list[_Objective], train_idx, val_idx):
        self.parts = parts
        stops = np.cumsum([len(p.target) for p in parts])
        self._starts = np.concatenate([[0], stops[:-1]])
        self._stops = stops
        self._train = np.asarray(train_idx)
        self._val = np.asarray(val_idx)

    @property
    def n_train(self) -> int:
        return len(self._train)

    @property
    def has_validation(self) -> bool:
        return len(self._val) > 0

    def _loss(self, idx: np.ndarray, training: bool):
        torch = _torch()
        part_of = np.searchsorted(self._stops, idx, side="right")
        total = 0.0
        for k, part in enumerate(self.parts):
            local = idx[part_of == k] - self._starts[k]
            if len(local):
                total = total + len(local) * part.data_loss(torch.as_tensor(local), training)
        return total / len(idx)

    def step(self, batch):
        """Training loss of the batch ``batch`` (positions in the training set), with the penalty."""
        return self._loss(self._train[np.asarray(batch)], True) + self.parts[0].penalty()

    def validation(self) -> float:
        """Loss on the validation configurations (no penalty)."""
        return float(self._loss(self._val, False))


class ClusterNet(_NeuralModel):
    """Cluster-based net, Eq. (13): ``E = E0 + sum_orbits sum_clusters N_orbit(phi(cluster))``."""

    model_type = "cluster"
    feature_kind = "cluster"
    unit_kind = "cluster"


class SiteNet(_NeuralModel):
    """Site-based net, Eqs. (15)-(16): ``E = E0 + sum_sites N_site_orbit(g(site))``."""

    model_type = "site"
    feature_kind = "site"
    unit_kind = "site"
