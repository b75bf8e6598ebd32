"""A committee of energy models: the mean predicts, the spread says where the model does not know.

K members of one model kind (cluster net, site net, linear CE or pair potential, with the same
hyperparameters) are trained on resamples of the training data, each with its own seed:

* ``resample="bootstrap"``: n configurations drawn with replacement (scikit-learn ``resample``);
* ``resample="folds"``: member k leaves out fold k of a seeded ``KFold`` split into K folds;
* ``resample="none"``: every member sees all the data (only the seeds differ).

The members share one featurizer, built once, and one featurisation per batch. The committee is
an :class:`~perovskite_pes.models.EnergyModel` like any other: its energy is the members' mean,
forces and stress are derivatives of that mean by autograd, it saves to a directory (members in
``member_00``, ``member_01``, ... subfolders) and :func:`~perovskite_pes.models.load_model`
rebuilds it, and it evaluates any supercell of the reference.

Its spread (:meth:`Committee.compute` with ``spread=True``, :meth:`Committee.predict_uncertainty`):

* ``energy_std`` -- standard deviation of the members' total energies (eV, per configuration);
* ``forces_std`` -- per atom, ``sqrt(<|F_k,i - <F_i>|^2>_k)`` (eV/A);
* ``max_force_deviation`` -- per configuration, the largest ``forces_std`` over the atoms, the
  quantity DP-GEN selects candidate structures by;
* ``stress_std`` -- standard deviation of the members' stresses (eV/A^3, Voigt).

Averages over members are plain means (no ``K - 1`` correction), as DP-GEN defines them.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np

from .base import (
    EnergyModel,
    GradientLabels,
    ModelError,
    check_configurations,
    check_energies,
    check_forces,
    check_stresses,
    geometry,
    load_model,
    strain_handles,
    stress_from_gradient,
)
from .featurizers import FeaturizerFamily, featurizer_from_recipe

logger = logging.getLogger(__name__)

RESAMPLING = ("bootstrap", "folds", "none")
MEMBER_KINDS = ("cluster", "site", "linear", "pair")


def _member_dir(k: int) -> str:
    return f"member_{k:02d}"


def _accepts(cls, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


class Committee(EnergyModel):
    """K models of one kind trained on resamples; energy = their mean, uncertainty = their spread.

    Parameters
    ----------
    model:
        The member kind, ``"cluster"``, ``"site"``, ``"linear"`` or ``"pair"``, or an unfitted model
        whose kind and hyperparameters the members take (its seed and featurizer aside).
    params:
        Member hyperparameters (updating those of ``model`` when it is a model), e.g.
        ``{"clusters": "7p+t+o", "max_order": 2, "hidden_layers": [8]}``.
    size:
        Number of members K (>= 2).
    resample:
        ``"bootstrap"`` (default), ``"folds"`` or ``"none"`` (see the module docstring).
    seed:
        Seed of the resampling; member k gets seed ``seed + k`` unless ``seeds`` lists them.
    seeds:
        One seed per member (equal seeds and ``resample="none"`` give identical members).
    n_jobs:
        Members trained in parallel (joblib processes, one torch thread each); 1: one after the other.
    featurizer:
        An already built featurizer with the members' descriptor recipe (skips building it).

    Example
    -------
    >>> committee = Committee("cluster", {"clusters": "7p+t+o"}, size=5).fit(configs, energies)  # doctest: +SKIP
    >>> r = committee.compute(positions, lattice, reference, spread=True)                        # doctest: +SKIP
    >>> r["energy"], r["energy_std"], r["max_force_deviation"]                                   # doctest: +SKIP
    """

    model_type = "committee"

    def __init__(
        self,
        model="cluster",
        params=None,
        size: int = 5,
        resample: str = "bootstrap",
        seed: int = 0,
        seeds=None,
        n_jobs: int = 1,
        featurizer=None,
    ):
        self.model = model
        self.params = params
        self.size = size
        self.resample = resample
        self.seed = seed
        self.seeds = seeds
        self.n_jobs = n_jobs
        self.featurizer = featurizer

    # ------------------------------------------------------------------ recipe
    def _recipe(self) -> tuple[str, dict]:
        """(member kind, member hyperparameters without seed and featurizer)."""
        from . import MODEL_TYPES

        if isinstance(self.model, EnergyModel):
            kind, params = self.model.model_type, dict(self.model.get_params(deep=False))
        elif isinstance(self.model, str):
            kind, params = self.model, {}
        else:
            raise ModelError(
                f"Committee model must be a model kind {list(MEMBER_KINDS)} or an unfitted model; "
                f"got {type(self.model).__name__}"
            )
        if kind not in MEMBER_KINDS:
            raise ModelError(f"Committee members must be one of {list(MEMBER_KINDS)}; got {kind!r}")
        if self.params is not None and not isinstance(self.params, dict):
            raise ModelError(
                f"Committee params must be a mapping of member hyperparameters; got {type(self.params).__name__}"
            )
        params.update(self.params or {})
        params.pop("seed", None)
        params.pop("featurizer", None)
        cls = MODEL_TYPES[kind]
        unknown = [k for k in params if not _accepts(cls, k)]
        if unknown:
            raise ModelError(f"{cls.__name__} has no hyperparameter(s) {unknown}")
        return kind, params

    def _member_seeds(self) -> list[int]:
        size = self._size()
        if self.seeds is None:
            return [int(self.seed) + k for k in range(size)]
        seeds = [int(s) for s in self.seeds]
        if len(seeds) != size:
            raise ModelError(f"seeds must give one seed per member ({size}); got {len(seeds)}")
        return seeds

    def _size(self) -> int:
        if int(self.size) != self.size or int(self.size) < 2:
            raise ModelError(f"Committee size must be an integer >= 2; got {self.size!r}")
        return int(self.size)

    def make_member(self, k: int, featurizer=None) -> EnergyModel:
        """The unfitted member k (its seed, the shared featurizer)."""
        kind, params = self._recipe()
        return _build_member(kind, params, self._member_seeds()[k], featurizer)

    def samples(self, n: int) -> list[np.ndarray]:
        """Training indices of each member for a training set of ``n`` configurations (seeded)."""
        from sklearn.model_selection import KFold
        from sklearn.utils import resample

        size = self._size()
        if self.resample not in RESAMPLING:
            raise ModelError(f"resample must be one of {list(RESAMPLING)}; got {self.resample!r}")
        if self.resample == "none":
            return [np.arange(n) for _ in range(size)]
        if self.resample == "folds":
            if size > n:
                raise ModelError(f"resample='folds' needs at least as many configurations as members ({size}); got {n}")
            folds = KFold(n_splits=size, shuffle=True, random_state=int(self.seed)).split(np.arange(n))
            return [np.sort(train) for train, _ in folds]
        return [
            np.sort(resample(np.arange(n), replace=True, n_samples=n, random_state=s)) for s in self._member_seeds()
        ]

    # ------------------------------------------------------------------ fit
    def fit(self, configs, energies, forces=None, stresses=None):
        """Train the K members on resamples of the configurations (total energies in eV; forces in eV/A
        and stresses in eV/A^3 when the members train those terms).

        Net members (cluster, site) may train on configurations of several supercells of the reference
        (e.g. 2x2x2 enumerations with 4x4x4 MD frames): each supercell is then resampled on its own
        (a bootstrap draw or a fold per supercell), so that every member sees every supercell.
        """
        configs = check_configurations(configs)
        e = check_energies(energies, len(configs))
        if len({c.reference for c in configs}) != 1:
            return self._fit_supercells(configs, e, forces, stresses)
        ref = configs[0].reference
        template = self.make_member(0, self.featurizer)
        fz = template._prepare_featurizer(ref) if template.feature_kind != "pair" else None
        feats = template.precompute(configs, fz)
        kw = {}
        if float(getattr(template, "force_weight", 0.0) or 0.0) > 0:
            if forces is None:
                raise ModelError("the members train a force term (force_weight > 0): pass the forces")
            kw["forces"] = np.stack(check_forces(forces, configs))
        if float(getattr(template, "stress_weight", 0.0) or 0.0) > 0:
            if stresses is None:
                raise ModelError("the members train a stress term (stress_weight > 0): pass the stresses")
            kw["stresses"] = check_stresses(stresses, len(configs))
        if kw:
            kw["positions"], kw["lattice"] = geometry(configs)
        return self.fit_arrays(ref, e, feats, featurizer=fz, **kw)

    def _fit_supercells(self, configs, e, forces, stresses):
        """:meth:`fit` on configurations of several supercells (net members only), resampled per supercell."""
        from .nets import supercell_groups

        kind, _params = self._recipe()
        if kind not in ("cluster", "site"):
            raise ModelError(
                f"a committee of {kind} models trains on configurations of one supercell; got "
                f"{len({c.reference for c in configs})} supercells (cluster and site nets train on several)"
            )
        groups = supercell_groups(configs)
        per_group = [self.samples(len(g)) for g in groups]
        samples = [np.sort(np.concatenate([g[s[k]] for g, s in zip(groups, per_group)])) for k in range(self._size())]
        ref = configs[groups[0][0]].reference
        featurizer = self.make_member(0, self.featurizer)._prepare_featurizer(ref)
        f = None if forces is None else check_forces(forces, configs)
        st = None if stresses is None else check_stresses(stresses, len(configs))
        logger.info(
            "training a committee of %d %s models (%s resampling per supercell) on %d configurations of %d supercells",
            len(samples),
            kind,
            self.resample,
            len(configs),
            len(groups),
        )
        return self._train_members(
            _fit_member_on_configs,
            lambda idx: (
                [configs[i] for i in idx],
                e[idx],
                None if f is None else [f[i] for i in idx],
                None if st is None else st[idx],
                ref,
            ),
            samples,
            ref,
            featurizer,
        )

    def fit_arrays(
        self, reference, energies, features, positions=None, lattice=None, forces=None, featurizer=None, stresses=None
    ):
        """Train from precomputed features (:meth:`EnergyModel.precompute` of the member kind) of
        configurations of ``reference``; positions, lattices and forces (stresses) for a force (stress)
        term."""
        e = np.asarray(energies, dtype=float)
        n = len(e)
        kind, _params = self._recipe()
        samples = self.samples(n)
        if kind == "pair":
            featurizer = None
        elif featurizer is None:
            featurizer = self.make_member(0, self.featurizer)._prepare_featurizer(reference)
        feats = np.asarray(features) if kind == "pair" else [np.asarray(x) for x in features]
        geo = (
            None
            if forces is None and stresses is None
            else GradientLabels(
                np.asarray(positions),
                np.asarray(lattice),
                None if forces is None else np.asarray(forces),
                None if stresses is None else np.asarray(stresses),
            )
        )
        logger.info(
            "training a committee of %d %s models (%s resampling) on %d configurations",
            len(samples),
            kind,
            self.resample,
            n,
        )
        return self._train_members(
            _fit_member, lambda idx: (idx, reference, e, feats, geo), samples, reference, featurizer
        )

    def _train_members(self, fit_one, data_of, samples, reference, featurizer):
        """Fit one member per training sample, ``fit_one(kind and hyperparameters, seed, *data_of(idx),
        featurizer, worker)``, in joblib worker processes when ``n_jobs != 1`` (the featurizer sent as
        its recipe and re-attached after); keep them as the committee's members."""
        from joblib import Parallel, delayed

        n_jobs = int(self.n_jobs or 1)
        parallel = n_jobs != 1 and len(samples) > 1
        recipe = featurizer.to_dict() if (parallel and featurizer is not None) else featurizer
        spec = self._recipe()
        jobs = [
            delayed(fit_one)(spec, seed, *data_of(idx), recipe, parallel)
            for seed, idx in zip(self._member_seeds(), samples)
        ]
        members = Parallel(n_jobs=n_jobs if parallel else 1, backend="loky" if parallel else "sequential")(jobs)
        for m in members:
            _attach_featurizer(m, featurizer)
        self._set_members(members, reference, featurizer)
        self.samples_ = [s.tolist() for s in samples]
        return self

    def _set_members(self, members, reference, featurizer):
        self.members_: list[EnergyModel] = list(members)
        self.reference_ = reference
        self.featurizer_ = featurizer
        self._family = FeaturizerFamily(featurizer) if featurizer is not None else None
        self.e0_ = float(np.mean([m.e0_ for m in members]))

    # ------------------------------------------------------------------ energy
    @property
    def feature_kind(self) -> str:  # type: ignore[override]
        return self.members_[0].feature_kind if self.is_fitted else ""

    @property
    def unit_kind(self) -> str:  # type: ignore[override]
        """Members that are sums of cluster (site) terms make a committee that is one as well."""
        if not self.is_fitted:
            return ""
        kinds = {m.unit_kind for m in self.members_}
        return kinds.pop() if len(kinds) == 1 else ""

    def unit_energies(self, group: int, raw):
        self._check_fitted()
        if not self.unit_kind:
            return super().unit_energies(group, raw)
        return sum(m.unit_energies(group, raw) for m in self.members_) / len(self.members_)

    def _features(self, positions, lattice, reference):
        return self.members_[0]._features(positions, lattice, reference)

    def _member_energies(self, raw, reference):
        """Energies of every member ``[K, B]`` (torch, differentiable) from shared features."""
        import torch

        return torch.stack([m._energy_from_features(raw, reference) for m in self.members_])

    def _energy_from_features(self, raw, reference):
        return _mean_and_deviation(self._member_energies(raw, reference))[0]

    def member_energies_from_features(self, raw, reference) -> np.ndarray:
        """Every member's energies ``[K, B]`` (eV, numpy) from precomputed features."""
        return np.stack([m.energies_from_features(raw, reference) for m in self.members_])

    def compute(
        self, positions, lattice, reference, forces: bool = True, stress: bool = True, spread: bool = False
    ) -> dict:
        """The committee mean like :meth:`EnergyModel.compute`; with ``spread`` also its spread.

        ``spread=True`` adds ``energy_std`` ``[B]`` (eV), ``member_energies`` ``[B, K]`` and, with
        forces, ``forces_std`` ``[B, N]`` and ``max_force_deviation`` ``[B]`` (eV/A), with stress
        ``stress_std`` ``[B, 6]``. Forces and stress are those of the mean energy.
        """
        if not spread:
            return super().compute(positions, lattice, reference, forces=forces, stress=stress)
        import torch

        pos, lat, single = self._batch_input(positions, lattice, reference)
        k = len(self.members_)
        out = {}
        if not forces and not stress:
            with torch.no_grad():
                ek = self._member_energies(self._features(pos, lat, reference), reference)
        else:
            pos, eps, deformed = strain_handles(pos, lat)
            ek = self._member_energies(self._features(*deformed, reference), reference)
            f_k, s_k = [], []
            for j in range(k):
                g_pos, g_eps = torch.autograd.grad(ek[j].sum(), [pos, eps], retain_graph=j < k - 1, allow_unused=True)
                f_k.append(-g_pos if g_pos is not None else torch.zeros_like(pos))
                s_k.append(stress_from_gradient(g_eps, lat))
            if forces:
                f_mean, f_dev = _mean_and_deviation(torch.stack(f_k).detach())  # [B, N, 3] each
                dev = torch.sqrt((f_dev**2).sum(-1))  # [B, N]
                out["forces"] = f_mean.numpy()
                out["forces_std"] = dev.numpy()
                out["max_force_deviation"] = dev.max(dim=1).values.numpy()
            if stress:
                s_mean, s_dev = _mean_and_deviation(torch.stack(s_k).detach())
                out["stress"] = s_mean.numpy()
                out["stress_std"] = s_dev.numpy()
            ek = ek.detach()
        e_mean, e_dev = _mean_and_deviation(ek)
        out["energy"] = e_mean.numpy()
        out["energy_std"] = e_dev.numpy()
        out["member_energies"] = ek.T.contiguous().numpy()
        if single:
            out = {key: v[0] for key, v in out.items()}
        return out

    def compute_spread(self, positions, lattice, reference) -> dict:
        """:meth:`compute` with forces, stress and the spread (``energy_std``, ``forces_std``,
        ``max_force_deviation``)."""
        return self.compute(positions, lattice, reference, forces=True, stress=True, spread=True)

    def predict_uncertainty(self, configs, forces: bool = True, batch_size: int = 64) -> dict:
        """Mean and spread for a list of configurations (any supercells).

        Returns ``energy``, ``energy_std`` (eV, arrays ``[B]``), ``member_energies`` ``[B, K]`` and,
        with ``forces``, ``forces`` and ``forces_std`` (lists of ``(N, 3)`` and ``(N,)`` arrays),
        ``max_force_deviation`` ``[B]`` (eV/A), ``stress`` and ``stress_std`` ``[B, 6]``.
        """
        configs = check_configurations(configs)
        self._check_fitted()
        n, k = len(configs), len(self.members_)
        out = {"energy": np.empty(n), "energy_std": np.empty(n), "member_energies": np.empty((n, k))}
        if forces:
            out.update(
                forces=[None] * n,
                forces_std=[None] * n,
                max_force_deviation=np.empty(n),
                stress=np.empty((n, 6)),
                stress_std=np.empty((n, 6)),
            )
        for ref, sel, pos, lat in self._batches(configs, batch_size):
            r = self.compute(pos, lat, ref, forces=forces, stress=forces, spread=True)
            for key, value in r.items():
                if isinstance(out[key], list):
                    for j, i in enumerate(sel):
                        out[key][i] = value[j]
                else:
                    out[key][sel] = value
        return out

    # ------------------------------------------------------------------ persistence
    def _hyperparameters(self) -> dict:
        kind, params = self._recipe()
        # every member hyperparameter, normalised by the member class (JSON types, defaults filled in)
        full = _build_member(kind, params, 0, None).hyperparameters()
        full.pop("seed", None)
        return {
            "model": kind,
            "params": full,
            "size": self._size(),
            "resample": self.resample,
            "seed": int(self.seed),
            "seeds": None if self.seeds is None else [int(s) for s in self.seeds],
            "n_jobs": int(self.n_jobs or 1),
        }

    def _state_for_save(self, directory: Path) -> dict:
        names = []
        for k, m in enumerate(self.members_):
            names.append(_member_dir(k))
            m.save(directory / names[-1])
        return {
            "members": names,
            "member_type": self.members_[0].model_type,
            "featurizer": None if self.featurizer_ is None else self.featurizer_.to_dict(),
            "samples": getattr(self, "samples_", None),
        }

    def _set_state(self, state: dict, directory: Path) -> None:
        names = state.get("members") or []
        if len(names) != self._size():
            raise ModelError(f"{directory}: the committee lists {len(names)} members; its size is {self.size}")
        fz = self.featurizer
        if fz is None and state.get("featurizer") is not None:
            fz = featurizer_from_recipe(state["featurizer"])
        members = []
        for name in names:
            sub = Path(directory) / name
            if not sub.is_dir():
                raise ModelError(f"{directory}: member folder {name} is missing")
            m = load_model(sub, featurizer=fz)
            if m.model_type != state.get("member_type"):
                raise ModelError(
                    f"{sub} holds a {m.model_type} model; the committee's members are {state.get('member_type')}"
                )
            members.append(m)
        self._set_members(members, members[0].reference_, fz)
        self.samples_ = state.get("samples")


def _mean_and_deviation(x):
    """Mean and root-mean-square deviation over the first (member) axis, shifted by member 0 so that
    identical members give exactly their value and exactly zero spread."""
    d = x - x[0]
    m = d.mean(0)
    return x[0] + m, ((d - m) ** 2).mean(0).sqrt()


def _attach_featurizer(member: EnergyModel, featurizer) -> None:
    """Give a member trained in a worker process the parent's featurizer object (shared by all)."""
    if featurizer is None:
        return
    member.featurizer = featurizer
    member.featurizer_ = featurizer
    member._family = FeaturizerFamily(featurizer)


def _detach_featurizer(model: EnergyModel) -> EnergyModel:
    """Drop the featurizer of a model trained in a worker process before it is sent back through pickle:
    the parent re-attaches its own (:func:`_attach_featurizer`)."""
    model.featurizer = model.featurizer_ = model._family = None
    return model


def _build_member(kind: str, params: dict, seed: int, featurizer):
    from . import MODEL_TYPES

    cls = MODEL_TYPES[kind]
    kw = dict(params)
    if _accepts(cls, "seed"):
        kw["seed"] = int(seed)
    if _accepts(cls, "featurizer"):
        kw["featurizer"] = featurizer
    return cls(**kw)


def _fit_member_on_configs(spec: tuple, seed: int, configs, energies, forces, stresses, reference, featurizer, worker):
    """Fit one net member on configurations of several supercells (:meth:`Committee._fit_supercells`)."""
    import torch

    if worker:
        torch.set_num_threads(1)
        if isinstance(featurizer, dict):
            featurizer = featurizer_from_recipe(featurizer, reference)
    member = _build_member(*spec, seed, featurizer)
    member.fit(configs, energies, forces, stresses=stresses)
    if worker:
        _detach_featurizer(member)
    return member


def _fit_member(spec: tuple, seed: int, idx, reference, energies, feats, geo, featurizer, worker: bool):
    """Fit one member (kind and hyperparameters ``spec``) on the configurations ``idx`` (in a joblib
    worker when ``worker``: one torch thread, the featurizer rebuilt from its recipe)."""
    import torch

    if worker:
        torch.set_num_threads(1)
        if isinstance(featurizer, dict):
            featurizer = featurizer_from_recipe(featurizer, reference)
    member = _build_member(*spec, seed, featurizer)
    e = energies[idx]
    if member.feature_kind == "pair":
        member.fit_arrays(reference, e, feats[idx])
    elif member.model_type == "linear":
        member.fit_arrays(reference, e, [x[idx] for x in feats], featurizer=featurizer)
    else:
        kw = geo.subset(idx) if geo is not None else {}
        member.fit_arrays(
            reference, e, [torch.from_numpy(np.ascontiguousarray(x[idx])) for x in feats], featurizer=featurizer, **kw
        )
    if worker and featurizer is not None:
        _detach_featurizer(member)
    return member
