"""Common machinery of the energy models: batching, autograd forces and stress, save/load.

Every model computes the *total* energy of a batch of deformed copies of one reference
supercell as a differentiable torch function of the cartesian positions (``[B, N, 3]``,
sites in the reference order, not wrapped back into the cell) and the lattice rows
(``[B, 3, 3]``). Forces are ``-dE/dx`` and the stress is ``(1/V) dE/d(strain)`` with the
strain applied homogeneously as ``x (I + e)``, ``L (I + e)`` (ASE's sign convention, Voigt
order xx, yy, zz, yz, xz, xy), both by autograd.

Energies are measured from the reference crystal: ``E = n_cells * e0 + E_model`` where
``e0`` is the energy of one primitive (5-atom) cell of the undistorted reference, given by the
user (``reference_energy_per_fu``) or fitted.

A saved model is a directory holding ``model.json`` (model type, hyperparameters, descriptor
recipe, feature scaler, ``e0``, provenance) and, for the nets, ``weights.pt`` (a torch state
dict read with ``weights_only=True``). Nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PesError
from ..structure import Configuration, ReferenceSupercell
from ..utils import jsonable

RECIPE_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 1
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))

logger = logging.getLogger(__name__)


class ModelError(PesError, ValueError):
    """Invalid model input, hyperparameter or saved-model directory."""


class NotFittedError(ModelError):
    """The model is used before ``fit`` (or ``load``)."""


# ---------------------------------------------------------------------------------------- data
def check_configurations(configs, what: str = "configs") -> list[Configuration]:
    """Validate a non-empty sequence of :class:`Configuration`."""
    if isinstance(configs, Configuration):
        configs = [configs]
    try:
        configs = list(configs)
    except TypeError:
        raise ModelError(f"{what} must be a list of Configuration objects; got {type(configs).__name__}") from None
    if not configs:
        raise ModelError(f"{what} is empty: at least one Configuration is needed")
    for k, c in enumerate(configs):
        if not isinstance(c, Configuration):
            raise ModelError(f"{what}[{k}] is a {type(c).__name__}, expected a perovskite_pes Configuration")
    return configs


def check_energies(energies, n: int, what: str = "energies") -> np.ndarray:
    e = np.asarray(energies, dtype=float).reshape(-1)
    if e.shape != (n,):
        raise ModelError(f"{what} must hold one total energy (eV) per configuration: expected {n}, got {e.size}")
    if not np.all(np.isfinite(e)):
        raise ModelError(f"{what} contain NaN or infinite values")
    return e


def check_forces(forces, configs, what: str = "forces") -> list[np.ndarray] | None:
    if forces is None:
        return None
    if len(forces) != len(configs):
        raise ModelError(
            f"{what} must hold one (N, 3) array per configuration: expected {len(configs)}, got {len(forces)}"
        )
    out = []
    for k, (f, c) in enumerate(zip(forces, configs)):
        f = np.asarray(f, dtype=float)
        if f.shape != (c.reference.n_atoms, 3):
            raise ModelError(f"{what}[{k}] has shape {f.shape}; expected ({c.reference.n_atoms}, 3) eV/Angstrom")
        if not np.all(np.isfinite(f)):
            raise ModelError(f"{what}[{k}] contains NaN or infinite values")
        out.append(f)
    return out


@dataclass
class GradientLabels:
    """Geometry with the forces and stresses the nets' force and stress terms train on (either None)."""

    positions: np.ndarray
    lattice: np.ndarray
    forces: np.ndarray | None = None
    stresses: np.ndarray | None = None

    def subset(self, idx) -> dict:
        """Keyword arguments of ``fit_arrays`` for the configurations ``idx``."""
        return {
            "positions": self.positions[idx],
            "lattice": self.lattice[idx],
            "forces": None if self.forces is None else self.forces[idx],
            "stresses": None if self.stresses is None else self.stresses[idx],
        }


def check_stresses(stresses, n: int) -> np.ndarray | None:
    """Stresses ``[n, 6]`` (eV/A^3, Voigt xx yy zz yz xz xy, ASE sign) as an array, checked."""
    if stresses is None:
        return None
    if len(stresses) != n or any(s is None for s in stresses):
        missing = sum(s is None for s in stresses)
        raise ModelError(
            f"stresses must hold one Voigt 6-vector (eV/Angstrom^3) per configuration: expected {n}, got "
            f"{len(stresses)}" + (f" ({missing} missing)" if missing else "")
        )
    out = np.asarray([np.asarray(s, dtype=float).reshape(-1) for s in stresses], dtype=float)
    if out.shape != (n, 6):
        raise ModelError(f"stresses must have shape ({n}, 6) (Voigt, eV/Angstrom^3); got {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ModelError("stresses contain NaN or infinite values")
    return out


def group_by_reference(configs: list[Configuration]) -> dict[ReferenceSupercell, list[int]]:
    """Indices of the configurations, grouped by their reference supercell (first-seen order)."""
    groups: dict[ReferenceSupercell, list[int]] = {}
    for k, c in enumerate(configs):
        groups.setdefault(c.reference, []).append(k)
    return groups


def geometry(configs: list[Configuration]):
    """Stacked positions ``[B, N, 3]`` and lattices ``[B, 3, 3]`` (float64 numpy) of configs of one reference."""
    pos = np.stack([c.positions for c in configs])
    lat = np.stack([c.lattice for c in configs])
    return pos, lat


def n_atoms_of(configs: list[Configuration]) -> np.ndarray:
    return np.array([c.reference.n_atoms for c in configs], dtype=float)


def unwrap_positions(reference: ReferenceSupercell, positions, lattice) -> np.ndarray:
    """Shift each site by whole lattice vectors so that it sits next to its reference site.

    ``positions`` (N, 3) cartesian in the deformed cell ``lattice`` (rows). Used for structures
    that were wrapped back into the cell (MD codes do this); the energy does not change.
    """
    positions = np.asarray(positions, dtype=float)
    lattice = np.asarray(lattice, dtype=float)
    frac = positions @ np.linalg.inv(lattice)
    shift = np.round(frac - reference.frac_coords())
    return (frac - shift) @ lattice


def strain_handles(pos, lat):
    """Leaf tensors for forces and stress: ``(positions, strain, (deformed positions, deformed lattice))``.

    The energy of the deformed geometry ``x (I + e)``, ``L (I + e)`` at ``e = 0`` differentiated by
    the positions gives minus the forces, by ``e`` the volume times the stress.
    """
    import torch

    pos = pos.clone().requires_grad_(True)
    eps = torch.zeros(pos.shape[0], 3, 3, dtype=torch.float64, requires_grad=True)
    deform = torch.eye(3, dtype=torch.float64) + eps
    return pos, eps, (pos @ deform, lat @ deform)


def stress_from_gradient(g_eps, lat):
    """Voigt stress ``[B, 6]`` (eV/A^3, ASE sign) from ``dE/d(strain)`` ``[B, 3, 3]`` (None: zero)."""
    import torch

    vol = torch.linalg.det(lat).abs()
    g = g_eps if g_eps is not None else torch.zeros(lat.shape, dtype=torch.float64)
    sig = 0.5 * (g + g.transpose(1, 2)) / vol[:, None, None]
    return torch.stack([sig[:, i, j] for i, j in VOIGT], dim=1)


# ---------------------------------------------------------------------------------------- model
class EnergyModel:
    """Base class: subclasses implement ``_energy`` and the (de)serialisation hooks.

    The models are scikit-learn estimators: the constructor only stores its arguments (the
    hyperparameters, listed by :meth:`get_params`), :meth:`fit` does the work and sets the learned
    attributes, whose names end in ``_`` (``e0_``, ``coef_``, ``mlps_``, ``featurizer_``, ...), and
    :func:`sklearn.base.clone` gives an unfitted copy with the same hyperparameters.
    """

    model_type: str = ""

    # ----------------------------------------------------------------- subclass hooks
    def _hyperparameters(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    #: what the model's inputs are: "cluster" (cluster features), "site" (site features), "pair"
    #: (pair-potential features); models with the same kind and featurizer can share one featurisation
    feature_kind: str = ""

    def _features(self, positions, lattice, reference: ReferenceSupercell):  # pragma: no cover - abstract
        """Differentiable input features of a batch (what :meth:`_energy_from_features` takes)."""
        raise NotImplementedError

    def _energy_from_features(self, raw, reference: ReferenceSupercell):  # pragma: no cover - abstract
        """Total energies ``[B]`` (eV, torch, differentiable) from :meth:`_features` of ``reference``."""
        raise NotImplementedError

    def _energy(self, positions, lattice, reference: ReferenceSupercell):
        return self._energy_from_features(self._features(positions, lattice, reference), reference)

    def precompute(self, configs, featurizer=None, batch_size: int = 256):
        """Input features of configurations of one supercell, without gradients (to fit or score from).

        Cluster/site models: a list per orbit of ``[B, U, F]`` tensors from ``featurizer`` (default:
        the model's own recipe); the pair potential: its relative features ``[B, n_features]``.
        """
        import torch

        configs = check_configurations(configs)
        if self.feature_kind == "pair":
            return self.relative_features(configs, batch_size)
        fz = featurizer if featurizer is not None else self._prepare_featurizer(configs[0].reference)
        chunks = []
        for s in range(0, len(configs), batch_size):
            pos, lat = (torch.as_tensor(x) for x in geometry(configs[s : s + batch_size]))
            with torch.no_grad():
                x = fz.cluster_features(pos, lat) if self.feature_kind == "cluster" else fz.site_features(pos, lat)
            chunks.append([t.detach() for t in x])
        return [torch.cat([c[g] for c in chunks]) for g in range(len(chunks[0]))]

    def energies_from_features(self, raw, reference: ReferenceSupercell) -> np.ndarray:
        """Total energies (eV, numpy) from precomputed features (list per orbit of ``[B, U, F]``, or a
        pair-feature matrix), as model selection computes them once for every fold and setting."""
        import torch

        self._check_fitted()
        if isinstance(raw, (list, tuple)):
            raw = [
                torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
                for x in raw
            ]
        with torch.no_grad():
            return self._energy_from_features(raw, reference).numpy()

    def _state(self) -> dict:  # pragma: no cover - abstract
        """Learned state as JSON-able data (the nets also write a torch state dict)."""
        raise NotImplementedError

    def _set_state(self, state: dict, directory: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ----------------------------------------------------------------- common API
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "e0_", None) is not None

    def __sklearn_is_fitted__(self) -> bool:
        return self.is_fitted

    def __sklearn_tags__(self):
        """A regressor of total energies whose inputs are configurations, not a 2-d array."""
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(
            estimator_type="regressor",
            target_tags=TargetTags(required=True),
            regressor_tags=RegressorTags(),
            non_deterministic=False,
            input_tags=InputTags(two_d_array=False),
            no_validation=True,
        )

    def _check_fitted(self):
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load a saved model first")

    # ----------------------------------------------------------------- scikit-learn estimator API
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's arguments (the hyperparameters), sorted."""
        sig = inspect.signature(cls.__init__)
        names = [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict:
        """The hyperparameters as given to the constructor (``deep``: with those of nested estimators
        as ``name__param``), what :func:`sklearn.base.clone` rebuilds the model from.

        :meth:`hyperparameters` gives them normalised to JSON types, as saved in ``model.json``.
        """
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set hyperparameters (``name`` or, for a nested estimator, ``name__param``); returns self."""
        if not params:
            return self
        valid = self._get_param_names()
        nested: dict[str, dict] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ModelError(f"{type(self).__name__} has no hyperparameter {name!r}; valid: {', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            inner = getattr(self, name)
            if not hasattr(inner, "set_params"):
                raise ModelError(f"{type(self).__name__}.{name} is not an estimator; cannot set {sorted(sub_params)}")
            inner.set_params(**sub_params)
        return self

    def __sklearn_clone__(self):
        """An unfitted copy with the same hyperparameters (:func:`sklearn.base.clone`).

        Hyperparameters are deep-copied as scikit-learn does, except a given featurizer: it is an
        immutable descriptor basis, shared (as a :class:`Committee` shares it among its members).
        """
        params = {}
        for name, value in self.get_params(deep=False).items():
            if name == "featurizer":
                params[name] = value
            elif hasattr(value, "get_params") and not isinstance(value, type):
                from sklearn.base import clone

                params[name] = clone(value, safe=False)
            else:
                params[name] = copy.deepcopy(value)
        return type(self)(**params)

    def hyperparameters(self) -> dict:
        """The hyperparameters normalised to JSON types, as ``model.json`` stores them (no featurizer)."""
        return self._hyperparameters()

    def __repr__(self) -> str:
        """``ClusterNet(hidden_layers=(16,), max_order=4)``: the hyperparameters that differ from the defaults."""
        sig = inspect.signature(type(self).__init__)
        short = reprlib.Repr()
        short.maxstring, short.maxother, short.maxlist, short.maxtuple, short.maxdict = 40, 60, 6, 6, 4
        parts = []
        for name in self._get_param_names():
            value = getattr(self, name, None)
            default = sig.parameters[name].default
            if _same_value(value, default):
                continue
            parts.append(f"{name}={short.repr(value)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # ----------------------------------------------------------------- locality (cluster-based models)
    #: what the energy is a sum over: "cluster" (one term per cluster), "site" (one per site), or "" (neither)
    unit_kind: str = ""

    def featurizer_for(self, reference: ReferenceSupercell):
        """The descriptor featurizer of this model on ``reference`` (any supercell of the training one)."""
        self._check_fitted()
        family = getattr(self, "_family", None)
        if family is None:
            raise ModelError(f"{type(self).__name__} is not built on cluster descriptors")
        return family(reference)

    def unit_energies(self, group: int, raw):
        """Energy terms (eV, torch ``[..., U]``) of units of orbit ``group`` from their raw features ``[..., U, F]``.

        The total energy is a constant plus the sum of these terms over all units (clusters of
        every cluster orbit for ``unit_kind == "cluster"``, sites of every site orbit for
        ``"site"``), so a local change costs only the terms of the units it touches.
        """
        raise ModelError(f"{type(self).__name__} is not a sum of cluster or site terms")

    def compute(
        self, positions, lattice, reference: ReferenceSupercell, forces: bool = True, stress: bool = True
    ) -> dict:
        """Energies ``[B]`` (eV), forces ``[B, N, 3]`` (eV/A), stress ``[B, 6]`` (eV/A^3, Voigt, ASE sign).

        ``positions`` ``[B, N, 3]`` (or ``[N, 3]``) cartesian, sites in ``reference`` order and not
        wrapped; ``lattice`` ``[B, 3, 3]`` (or ``[3, 3]``) rows. Returns numpy arrays.
        """
        import torch

        pos, lat, single = self._batch_input(positions, lattice, reference)
        out = {}
        if not forces and not stress:
            with torch.no_grad():
                e = self._energy(pos, lat, reference)
            out["energy"] = e.numpy()
        else:
            pos, eps, deformed = strain_handles(pos, lat)
            e = self._energy(*deformed, reference)
            g_pos, g_eps = torch.autograd.grad(e.sum(), [pos, eps], allow_unused=True)
            out["energy"] = e.detach().numpy()
            if forces:
                out["forces"] = (-g_pos).numpy() if g_pos is not None else np.zeros(tuple(pos.shape))
            if stress:
                out["stress"] = stress_from_gradient(g_eps, lat).numpy()
        if single:
            out = {k: v[0] for k, v in out.items()}
        return out

    def _batch_input(self, positions, lattice, reference: ReferenceSupercell):
        """Checked torch float64 positions ``[B, N, 3]`` and lattices ``[B, 3, 3]``, and whether one was given."""
        import torch

        self._check_fitted()
        pos = torch.as_tensor(np.asarray(positions, dtype=float), dtype=torch.float64)
        lat = torch.as_tensor(np.asarray(lattice, dtype=float), dtype=torch.float64)
        single = pos.dim() == 2
        if single:
            pos, lat = pos[None], lat[None]
        if pos.shape[1:] != (reference.n_atoms, 3) or lat.shape != (pos.shape[0], 3, 3):
            raise ModelError(
                f"positions must be [B, {reference.n_atoms}, 3] and lattice [B, 3, 3] for this reference; "
                f"got {tuple(pos.shape)} and {tuple(lat.shape)}"
            )
        return pos, lat, single

    def _batches(self, configs, batch_size):
        configs = check_configurations(configs)
        for ref, idx in group_by_reference(configs).items():
            for s in range(0, len(idx), batch_size):
                sel = idx[s : s + batch_size]
                pos, lat = geometry([configs[k] for k in sel])
                yield ref, sel, pos, lat

    def predict(self, configs, batch_size: int = 256) -> np.ndarray:
        """Total energies (eV) of the configurations."""
        configs = check_configurations(configs)
        out = np.empty(len(configs))
        for ref, sel, pos, lat in self._batches(configs, batch_size):
            out[sel] = self.compute(pos, lat, ref, forces=False, stress=False)["energy"]
        return out

    def predict_all(self, configs, batch_size: int = 64) -> dict:
        """Energies (array), forces (list of (N, 3) arrays) and stresses (array [B, 6])."""
        configs = check_configurations(configs)
        energy = np.empty(len(configs))
        forces: list = [None] * len(configs)
        stress = np.empty((len(configs), 6))
        for ref, sel, pos, lat in self._batches(configs, batch_size):
            r = self.compute(pos, lat, ref)
            energy[sel] = r["energy"]
            stress[sel] = r["stress"]
            for j, k in enumerate(sel):
                forces[k] = r["forces"][j]
        return {"energy": energy, "forces": forces, "stress": stress}

    def predict_forces(self, configs, batch_size: int = 64):
        """Forces (eV/A): an array ``[B, N, 3]`` when all configurations share one supercell, else a list."""
        f = self.predict_all(configs, batch_size)["forces"]
        shapes = {x.shape for x in f}
        return np.stack(f) if len(shapes) == 1 else f

    def predict_stress(self, configs, batch_size: int = 64) -> np.ndarray:
        return self.predict_all(configs, batch_size)["stress"]

    def rmse(self, configs, energies, per_atom: bool = True) -> float:
        """Root-mean-square energy error (eV/atom when ``per_atom``, else eV per configuration)."""
        configs = check_configurations(configs)
        e = check_energies(energies, len(configs))
        err = self.predict(configs) - e
        if per_atom:
            err = err / n_atoms_of(configs)
        return float(np.sqrt(np.mean(err**2)))

    # ----------------------------------------------------------------- persistence
    def save(self, directory) -> Path:
        """Write the model to ``directory`` (created): ``model.json`` plus, for nets, ``weights.pt``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from .. import __version__

        recipe = {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "package_version": __version__,
            "hyperparameters": jsonable(self._hyperparameters()),
            "e0_per_fu": float(self.e0_),
            "reference": self.reference_.to_dict() if getattr(self, "reference_", None) is not None else None,
            "state": jsonable(self._state_for_save(directory)),
            "provenance": jsonable(getattr(self, "provenance_", {}) or {}),
        }
        tmp = directory / (RECIPE_FILE + ".tmp")
        tmp.write_text(json.dumps(recipe, indent=1))
        os.replace(tmp, directory / RECIPE_FILE)
        return directory

    def _state_for_save(self, directory: Path) -> dict:
        return self._state()

    @classmethod
    def load(cls, directory, **options):
        model = load_model(directory, **options)
        if cls is not EnergyModel and not isinstance(model, cls):
            raise ModelError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def _same_value(value, default) -> bool:
    """Whether a hyperparameter equals its default (values numpy cannot compare count as different)."""
    if value is default:
        return True
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        value, default = tuple(value), tuple(default)  # a loaded model has lists where the defaults are tuples
    elif type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except (ValueError, TypeError):
        return False


def read_recipe(directory) -> dict:
    directory = Path(directory)
    f = directory / RECIPE_FILE
    if not f.is_file():
        raise ModelError(f"{directory} is not a saved model directory: {RECIPE_FILE} is missing")
    try:
        recipe = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{f} is not valid JSON: {exc}") from None
    if recipe.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{f} has model format version {recipe.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    return recipe


def load_model(directory, featurizer=None) -> EnergyModel:
    """Rebuild any saved model from its directory (never unpickles).

    ``featurizer``: an already built featurizer with the saved recipe, to skip rebuilding the
    descriptor basis (it is checked against the recipe).
    """
    from . import MODEL_TYPES

    recipe = read_recipe(directory)
    kind = recipe.get("model_type")
    if kind not in MODEL_TYPES:
        raise ModelError(f"{directory}: unknown model type {kind!r}; expected one of {sorted(MODEL_TYPES)}")
    cls = MODEL_TYPES[kind]
    try:
        model = cls(**recipe["hyperparameters"])
    except TypeError as exc:
        raise ModelError(f"{directory}: hyperparameters do not fit a {cls.__name__}: {exc}") from None
    if featurizer is not None:
        if not hasattr(model, "featurizer"):
            raise ModelError(f"a {cls.__name__} takes no featurizer")
        model.featurizer = featurizer
    model.e0_ = float(recipe["e0_per_fu"])
    model.reference_ = ReferenceSupercell.from_dict(recipe["reference"]) if recipe.get("reference") else None
    model.provenance_ = dict(recipe.get("provenance") or {})
    model._set_state(recipe["state"], Path(directory))
    logger.debug("loaded a %s from %s", cls.__name__, directory)
    return model
