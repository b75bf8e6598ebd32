"""Model selection as in the paper (section III.C-E) and the ``train_and_select`` entry point.

1. 80/20 train/test split (seeded).
2. k-fold cross-validation (scikit-learn ``KFold``, 10 folds by default) on the training part
   over a grid of model type x cluster set x basis order x hidden layers x nodes; folds run in
   parallel with joblib (one torch thread per worker). Features are computed once per
   (cluster set, order) for the whole data set and shared by every setting and fold, unless a
   force term is trained (then the nets featurise by autograd in every step).
3. Table of mean and standard deviation of train and validation RMSE per setting (Fig. 7).
4. The best setting (lowest mean validation RMSE) is refitted on the whole training part and
   its test RMSE reported, with the pair-potential and linear-CE baselines fitted on the same
   split, per-kind errors (``config.tags["kind"]``), errors per energy bin and the figures.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..utils import field_path, first_error
from . import reports
from .base import (
    GradientLabels,
    ModelError,
    check_configurations,
    check_energies,
    check_forces,
    check_stresses,
    geometry,
    n_atoms_of,
)
from .committee import RESAMPLING, Committee, _attach_featurizer, _detach_featurizer
from .featurizers import build_featurizer, featurizer_from_recipe
from .linear import LinearCE
from .nets import DEFAULT_BATCH_SIZES, DEFAULT_EPOCHS, ClusterNet, SiteNet, supercell_groups
from .pair import PairPotential

logger = logging.getLogger(__name__)

MODEL_KINDS = ("cluster", "site", "linear", "pair")


# ------------------------------------------------------------------------------------ settings
class SettingsError(ModelError):
    """Selection settings that do not validate; the message is one line naming the setting."""


def _invalid(message: str):
    raise PydanticCustomError("selection_setting", "{message}", {"message": message})


def _as_list(value):
    """A scalar or a tuple given where a list of values is expected (the grid) becomes a list."""
    if value is None:
        return value
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _Section(BaseModel):
    """A nested group of selection settings: a mapping whose unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_default=False)
    _label: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if data is None:
            return {}
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                _invalid(f"unknown {cls._label} setting(s) {unknown}; known: {sorted(cls.model_fields)}")
        return data


class GridSettings(_Section):
    """Hyperparameter grid: every combination is cross-validated (one value or a list each)."""

    _label: ClassVar[str] = "grid"
    model: Annotated[list[str], BeforeValidator(_as_list)] = ["cluster", "site"]
    clusters: Annotated[list[Any], BeforeValidator(_as_list)] = ["7p+t+o"]
    max_order: Annotated[list[int], BeforeValidator(_as_list)] = [2]
    layers: Annotated[list[int], BeforeValidator(_as_list)] = [1]
    nodes: Annotated[list[int], BeforeValidator(_as_list)] = [8]


class NetTrainingSettings(_Section):
    """How the nets are trained (keyword arguments of :class:`ClusterNet` / :class:`SiteNet`)."""

    _label: ClassVar[str] = "training"
    #: Adam batch-size schedule and the epochs of each stage (one number: the same for every stage)
    batch_sizes: list[int] = list(DEFAULT_BATCH_SIZES)
    epochs: int | list[int] = list(DEFAULT_EPOCHS)
    learning_rate: float = 1e-3
    patience: int | None = 100
    validation_fraction: float = 0.1
    #: weight of the force term in the loss (0: energies only, as in the paper)
    force_weight: float = 0.0
    #: weight of the stress term in the loss (0: none); the cell's response (lattice parameters in NPT)
    stress_weight: float = 0.0
    #: per-configuration weights scale / (scale + energy per atom above the lowest), eV/atom (None: equal)
    energy_weight_scale: float | None = None
    #: per-configuration weights times (atoms / atoms of the smallest supercell) ** size_weight (0: equal)
    size_weight: float = 0.0
    weight_decay: float = 0.0
    lbfgs_iterations: int = 0
    linear_term: bool = False
    net_order: int | None = None


class BoundsSettings(_Section):
    """Linear CE and nets bounded below and rising outside the training window (models/bounds.py)."""

    _label: ClassVar[str] = "bounds"
    enabled: bool = True
    width: float = 1.0
    strength: float = 0.01
    offset: float = 0.0
    scale: float = 0.05

    @model_validator(mode="before")
    @classmethod
    def _none_is_off(cls, data):
        return {"enabled": False} if data is None else data


#: how a selection's committee is made: refitted on resamples (those of :class:`Committee`), or ``cv``:
#: the cross-validation's fold models of the selected setting, with no fit of their own
COMMITTEE_RESAMPLING = (*RESAMPLING, "cv")


class CommitteeSettings(_Section):
    """size >= 2: the selected setting is refitted as a committee of that many models (bootstrap
    resamples or folds of the training part, one seed each), or with ``resample: cv`` the
    cross-validation's ``n_folds`` fold models of it become the committee (size must equal ``n_folds``;
    no further fits); its spread is calibrated on the test set."""

    _label: ClassVar[str] = "committee"
    size: int = 0
    resample: str = "bootstrap"

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data):
        if data is not None and not isinstance(data, dict):
            _invalid(f"committee must be a mapping like {{size: 5, resample: bootstrap}}; got {data!r}")
        return data

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value):
        value = value or 0
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or int(value) != value
            or value < 0
            or value == 1
        ):
            _invalid(f"committee.size must be 0 (no committee) or an integer >= 2; got {value!r}")
        return int(value)

    @field_validator("resample")
    @classmethod
    def _resample(cls, value):
        if value not in COMMITTEE_RESAMPLING:
            _invalid(f"committee.resample must be one of {list(COMMITTEE_RESAMPLING)}; got {value!r}")
        return value


def _merged_with(defaults: dict):
    """Keyword-argument groups handed on unchanged: the given keys update the defaults."""

    def merge(value):
        return {**defaults, **value} if isinstance(value, dict) else value

    return BeforeValidator(merge)


class SelectionSettings(_Section):
    """Settings of :func:`train_and_select`; every default is here and only here.

    Built from a nested mapping with :meth:`from_input` (nested groups are merged with their
    defaults, unknown keys refused); :meth:`to_dict` gives the plain dict the selection steps read.
    """

    _label: ClassVar[str] = "selection"
    grid: GridSettings = GridSettings()
    metric: str = "lin"
    truncated: bool = False
    n_folds: int = 10
    test_fraction: float = 0.2
    #: share of the configurations of larger supercells held out and scored (``larger_test`` of the
    #: report); 0: every one of them trains the nets (they are scarce: docs/models.md); None: ``test_fraction``
    larger_test_fraction: float | None = 0.0
    seed: int = 0
    #: parallel workers for the cross-validation fits (None or 1: in this process)
    n_jobs: int | None = 2
    training: NetTrainingSettings = NetTrainingSettings()
    #: keyword arguments of LinearCE and PairPotential
    linear: Annotated[dict[str, Any], _merged_with({"method": "ridge"})] = {"method": "ridge"}
    pair: Annotated[dict[str, Any], _merged_with({"cutoff": 7.8, "n_gaussians": 24})] = {
        "cutoff": 7.8,
        "n_gaussians": 24,
    }
    reference_energy_per_fu: float | None = None
    bounds: BoundsSettings = BoundsSettings()
    committee: CommitteeSettings = CommitteeSettings()
    #: also fit the pair potential and the linear CE (and the best net) on the same split
    baselines: bool = True
    #: e.g. [0.1, 0.25, 0.5, 1.0]: fractions of the training part
    learning_curve: list[float] | None = None
    window_mev_per_fu: float = 125.0
    bin_mev_per_fu: float = 25.0
    #: train only on configurations within this many meV per formula unit of the lowest energy
    #: (None: all); the others are left out before the split and listed in the report
    max_energy_mev_per_fu: float | None = None
    plots: bool = True
    progress: bool = True
    #: path name -> {"x", "configs", "energies", "xlabel"[, "zero"]}: energies along paths (Fig. 9)
    paths: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if data is None:
            return {}
        if not isinstance(data, dict):
            _invalid(f"expected a mapping of selection settings; got {data!r}")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            _invalid(f"unknown selection setting {unknown[0]!r}; known: {sorted(cls.model_fields)}")
        return data

    @field_validator("max_energy_mev_per_fu", mode="before")
    @classmethod
    def _positive_window(cls, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            _invalid(
                "max_energy_mev_per_fu must be a positive number of meV per formula unit above the lowest "
                f"energy (or None for all configurations); got {value!r}"
            )
        return value

    @field_validator("larger_test_fraction", mode="before")
    @classmethod
    def _larger_fraction(cls, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1):
            _invalid(
                "larger_test_fraction must be a number in [0, 1) (0: every configuration of a larger supercell "
                f"trains the nets; None: as test_fraction); got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _committee_of_folds(self):
        c = self.committee
        if c.size and c.resample == "cv" and c.size != self.n_folds:
            _invalid(
                f"committee.size must equal n_folds ({self.n_folds}) with resample: cv (the committee is the "
                f"cross-validation's fold models); got {c.size}"
            )
        return self

    @classmethod
    def from_input(cls, settings) -> SelectionSettings:
        """Validated settings from a (partial, nested) mapping; raises :class:`SettingsError` (one line)."""
        if isinstance(settings, cls):
            return settings
        try:
            return cls.model_validate(settings or {})
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, "selection settings")) from None

    def to_dict(self) -> dict:
        """Plain nested dict (``paths`` only when given)."""
        out = self.model_dump(exclude={"paths"})
        if self.paths is not None:
            out["paths"] = self.paths
        return out


def _one_line(exc: ValidationError, what: str) -> str:
    """The first error of a pydantic ValidationError as ``what: dotted.path: message``."""
    loc, message, _err = first_error(exc, "selection_setting")
    path = field_path(*loc)
    if message.startswith(path + " "):  # the message names the setting itself
        path = ""
    return f"{what}: {path + ': ' if path else ''}{message}"


#: the defaults as a plain dict (read-only use; :class:`SelectionSettings` holds them)
DEFAULT_SETTINGS: dict = SelectionSettings().to_dict()


def merge_settings(settings: dict | None) -> dict:
    """Defaults updated by ``settings`` (nested groups merged with theirs), validated, as a plain dict."""
    return SelectionSettings.from_input(settings).to_dict()


def expand_grid(grid: dict) -> list[dict]:
    """All settings of the grid; linear models ignore layers/nodes and pair potentials everything."""

    def as_list(v):
        return list(v) if isinstance(v, (list, tuple)) else [v]

    models = as_list(grid.get("model", ["cluster"]))
    for m in models:
        if m not in MODEL_KINDS:
            raise ModelError(f"unknown model type {m!r} in the grid; expected one of {list(MODEL_KINDS)}")
    out, seen = [], set()
    for m, cl, order, layers, nodes in itertools.product(
        models,
        as_list(grid.get("clusters", ["7p+t+o"])),
        as_list(grid.get("max_order", [2])),
        as_list(grid.get("layers", [1])),
        as_list(grid.get("nodes", [8])),
    ):
        if m == "pair":
            s = {"model": "pair"}
        elif m == "linear":
            s = {"model": "linear", "clusters": cl, "max_order": int(order)}
        else:
            if int(layers) < 1 or int(nodes) < 1:
                raise ModelError(f"layers and nodes must be >= 1; got {layers} x {nodes}")
            s = {"model": m, "clusters": cl, "max_order": int(order), "layers": int(layers), "nodes": int(nodes)}
        key = json.dumps(s, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(s)
    if not out:
        raise ModelError("the hyperparameter grid is empty")
    return out


def setting_label(s: dict) -> str:
    if s["model"] == "pair":
        return "pair"
    cl = s["clusters"] if isinstance(s["clusters"], str) else "custom"
    if s["model"] == "linear":
        return f"linear {cl} o{s['max_order']}"
    return f"{s['model']} {cl} o{s['max_order']} {s['layers']}x{s['nodes']}"


def make_model(setting: dict, cfg: dict, seed: int | None = None, featurizer=None):
    """The estimator of one grid setting with the run's training/baseline settings."""
    seed = int(cfg["seed"] if seed is None else seed)
    e0 = cfg.get("reference_energy_per_fu")
    if setting["model"] == "pair":
        return PairPotential(reference_energy_per_fu=e0, **cfg.get("pair", {}))
    bounds = cfg.get("bounds") or {}
    common = dict(
        clusters=setting["clusters"],
        max_order=setting["max_order"],
        metric=cfg["metric"],
        truncated=cfg["truncated"],
        reference_energy_per_fu=e0,
        featurizer=featurizer,
        bounded=bool(bounds.get("enabled")),
        bound_width=bounds.get("width", 1.0),
        bound_strength=bounds.get("strength", 0.01),
        bound_offset=bounds.get("offset", 0.0),
        bound_scale=bounds.get("scale", 0.05),
    )
    if setting["model"] == "linear":
        return LinearCE(seed=seed, **common, **cfg.get("linear", {}))
    cls = ClusterNet if setting["model"] == "cluster" else SiteNet
    return cls(hidden_layers=(setting["nodes"],) * setting["layers"], seed=seed, **common, **cfg["training"])


def _feature_kind(setting: dict) -> str:
    return {"cluster": "cluster", "site": "site", "linear": "cluster", "pair": "pair"}[setting["model"]]


def _feature_key(setting: dict) -> str:
    if setting["model"] == "pair":
        return "pair"
    return json.dumps([setting["clusters"], setting["max_order"]], default=str)


class FeatureBank:
    """Raw features of every configuration, computed once per (cluster set, order) and kind."""

    def __init__(self, configs, cfg: dict, progress: bool = False):
        self.configs = configs
        self.reference = configs[0].reference
        self.cfg = cfg
        self.progress = progress
        self._featurizers: dict = {}
        self._features: dict = {}

    def featurizer(self, setting):
        if setting["model"] == "pair":
            return None
        key = _feature_key(setting)
        if key not in self._featurizers:
            self._featurizers[key] = build_featurizer(
                self.reference, setting["clusters"], setting["max_order"], self.cfg["metric"], self.cfg["truncated"]
            )
        return self._featurizers[key]

    def features(self, setting):
        """List of numpy arrays ``[n_configs, U, F]`` (or ``[n_configs, n_pair_features]`` for pairs)."""
        import torch

        kind = _feature_kind(setting)
        key = (_feature_key(setting), kind)
        if key in self._features:
            return self._features[key]
        if kind == "pair":
            model = make_model(setting, self.cfg)
            out = [model.relative_features(self.configs)]
        else:
            fz = self.featurizer(setting)
            chunks = []
            rng = range(0, len(self.configs), 512)
            if self.progress:
                from tqdm.auto import tqdm

                rng = tqdm(
                    rng,
                    desc=f"features {setting.get('clusters')} o{setting.get('max_order')} ({kind})",
                    unit="batch",
                    leave=False,
                )
            for s in rng:
                pos, lat = geometry(self.configs[s : s + 512])
                with torch.no_grad():
                    pos_t, lat_t = torch.as_tensor(pos), torch.as_tensor(lat)
                    cf = fz.cluster_features(pos_t, lat_t)
                    feats = cf if kind == "cluster" else fz.site_features(pos_t, lat_t, cf)
                chunks.append([x.numpy() for x in feats])
            out = [np.concatenate([c[g] for c in chunks]) for g in range(len(chunks[0]))]
        self._features[key] = out
        return out


def _fit_and_score(
    setting,
    cfg,
    featurizer,
    reference,
    feats,
    energies,
    n_atoms,
    train_idx,
    eval_sets,
    gradients=None,
    threads=1,
    seed=None,
    keep_model=False,
    committee=None,
    larger=None,
    configs=None,
):
    """Fit one setting on ``train_idx`` and return its energies on each of ``eval_sets`` (worker-safe).

    ``committee`` (``{"size": K, "resample": ...}``) fits a :class:`Committee` of the setting instead
    and also returns every member's energies (``member_predictions``, ``[K, n]`` per set). A net also
    trains on ``larger`` (:class:`LargerCells`), from the configurations ``configs``.
    """
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    sent_recipe = isinstance(featurizer, dict)
    if sent_recipe:  # a recipe sent to a worker process: rebuild once per process
        featurizer = featurizer_from_recipe(featurizer, reference)
    t0 = time.perf_counter()
    model = make_model(setting, cfg, seed=seed, featurizer=featurizer)
    if committee:
        model = Committee(
            model,
            size=committee["size"],
            resample=committee["resample"],
            seed=int(cfg["seed"] if seed is None else seed),
            n_jobs=int(cfg.get("n_jobs") or 1),
            featurizer=featurizer,
        )
    pair = setting["model"] == "pair"
    sub = functools.partial(_subset, feats, pair=pair)
    net = setting["model"] in ("cluster", "site")
    if larger is not None and net:  # a committee resamples each supercell on its own
        _fit_with_larger(model, configs, energies, train_idx, gradients, larger)
    elif pair and not committee:
        model.fit_arrays(reference, energies[train_idx], sub(train_idx))
    else:
        kw = gradients.subset(train_idx) if (gradients is not None and net) else {}
        model.fit_arrays(reference, energies[train_idx], sub(train_idx), featurizer=featurizer, **kw)
    out = {"fit_time": time.perf_counter() - t0, "predictions": []}
    for idx in eval_sets:
        out["predictions"].append(model.energies_from_features(sub(idx), reference))
        if committee:
            out.setdefault("member_predictions", []).append(model.member_energies_from_features(sub(idx), reference))
    if keep_model:
        out["model"] = _detach_featurizer(model) if sent_recipe and featurizer is not None else model
    return out


def _fit_with_larger(model, configs, energies, train_idx, gradients, larger: LargerCells) -> None:
    """Fit a net on the configurations ``train_idx`` together with every configuration of ``larger``."""
    f = st = None
    if gradients is not None and gradients.forces is not None:
        f = list(gradients.forces[train_idx]) + list(larger.forces)
    if gradients is not None and gradients.stresses is not None:
        st = np.concatenate([gradients.stresses[train_idx], larger.stresses])
    own = [configs[i] for i in train_idx]
    model.fit(own + larger.configs, np.concatenate([energies[train_idx], larger.energies]), f, stresses=st)


def _rmse_mev(pred, ref, n_atoms) -> float:
    return float(np.sqrt(np.mean(((pred - ref) / n_atoms) ** 2)) * 1000.0)


def cross_validate(
    bank: FeatureBank,
    grid: list[dict],
    energies,
    train_idx,
    cfg,
    gradients=None,
    progress=False,
    keep_models=False,
    larger=None,
) -> list[dict]:
    """k-fold CV of every grid setting on ``train_idx``; one row per setting (RMSE in meV/atom).

    ``gradients``: the :class:`GradientLabels` (forces, stresses) of the nets' force and stress terms;
    ``larger``: :class:`LargerCells` every net trains on in every fold as well.

    With ``keep_models`` each row also holds its fold models (``"models"``, in fold order, with the
    bank's featurizer), e.g. to make a committee of the selected setting without refitting it.
    """
    from joblib import Parallel, delayed
    from sklearn.model_selection import KFold

    n_folds = int(cfg["n_folds"])
    if n_folds < 2 or n_folds > len(train_idx):
        raise ModelError(
            f"n_folds must be between 2 and the number of training configurations ({len(train_idx)}); got {n_folds}"
        )
    folds = list(KFold(n_splits=n_folds, shuffle=True, random_state=int(cfg["seed"])).split(train_idx))
    n_atoms = n_atoms_of(bank.configs)
    ref = bank.reference
    n_jobs = int(cfg.get("n_jobs") or 1)
    jobs, meta = [], []
    for si, setting in enumerate(grid):
        fz = bank.featurizer(setting)
        if fz is not None and n_jobs != 1:
            fz = fz.to_dict()  # featurizers hold torch objects: workers rebuild them from the recipe
        feats = bank.features(setting)
        for tr, va in folds:
            tr_idx, va_idx = train_idx[tr], train_idx[va]
            jobs.append(
                delayed(_fit_and_score)(
                    setting,
                    cfg,
                    fz,
                    ref,
                    feats,
                    energies,
                    n_atoms,
                    tr_idx,
                    [tr_idx, va_idx],
                    gradients,
                    1,
                    keep_model=keep_models,
                    larger=larger,
                    configs=bank.configs if larger is not None else None,
                )
            )
            meta.append((si, tr_idx, va_idx))
    results = Parallel(n_jobs=n_jobs, backend="loky" if n_jobs != 1 else "sequential", return_as="generator")(jobs)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(jobs), desc="cross-validation fits", unit="fit")
    rows = [{"setting": s, "label": setting_label(s), "train": [], "val": [], "fit_time": []} for s in grid]
    for (si, tr_idx, va_idx), res in zip(meta, results):
        p_tr, p_va = res["predictions"]
        rows[si]["train"].append(_rmse_mev(p_tr, energies[tr_idx], n_atoms[tr_idx]))
        rows[si]["val"].append(_rmse_mev(p_va, energies[va_idx], n_atoms[va_idx]))
        rows[si]["fit_time"].append(res["fit_time"])
        if keep_models:
            _attach_featurizer(res["model"], bank.featurizer(grid[si]))
            rows[si].setdefault("models", []).append(res["model"])
    for r in rows:
        r.update(
            train_rmse_mean=float(np.mean(r["train"])),
            train_rmse_std=float(np.std(r["train"])),
            val_rmse_mean=float(np.mean(r["val"])),
            val_rmse_std=float(np.std(r["val"])),
            fit_time_mean=float(np.mean(r["fit_time"])),
            n_folds=len(r["val"]),
        )
    return rows


def _kinds(configs) -> list[str]:
    return [str(c.tags.get("kind", "other")) if isinstance(c.tags, dict) else "other" for c in configs]


class SelectionReport(BaseModel):
    """What :func:`train_and_select` found; RMSEs in meV/atom.

    Read it by attribute (``report.test_rmse``) or by key as the dict it used to be
    (``report["test_rmse"]``, ``report.get("committee")``, ``"paths" in report``: the optional
    parts are there only when the run made them). :meth:`to_dict` gives the JSON of ``report.json``.
    """

    model_config = ConfigDict(extra="forbid")

    n_configurations: int
    n_train: int
    n_test: int
    #: indices into the configurations given to :func:`train_and_select`
    train_indices: list[int]
    test_indices: list[int]
    #: configurations left out above ``max_energy_mev_per_fu`` (only with that setting)
    excluded_indices: list[int] | None = None
    #: configurations of larger supercells in every net's training set, never cross-validated (only
    #: when there are such): ``indices``, ``supercells`` (``{"n_atoms": count}``)
    larger_supercells: dict[str, Any] | None = None
    #: those held out of training (``larger_test_fraction``) and the selected model's errors on them:
    #: ``indices``, ``n``, ``rmse_mev_per_atom``, ``mean_error_mev_per_atom``, ``per_supercell`` (by
    #: atom count) and, with forces, ``force_rmse_ev_per_a`` (only when some were held out)
    larger_test: dict[str, Any] | None = None
    #: the merged settings the selection ran with (``paths`` by name only)
    settings: dict[str, Any]
    #: one row per grid setting: RMSE per fold and their mean and standard deviation, train and validation
    cv_table: list[dict[str, Any]]
    #: the selected grid setting (lowest mean validation RMSE) and its label
    best: dict[str, Any]
    best_label: str
    test_rmse: float | None
    train_rmse: float | None
    #: test RMSE of the configurations within ``window_mev_per_fu`` of the lowest energy
    test_rmse_low: float | None
    #: "best" and the baselines refitted on the same split ("pair", "linear", "best_net"): label,
    #: setting, train and test error statistics, test errors per configuration kind, fit time
    models: dict[str, dict[str, Any]]
    #: errors per energy bin above the lowest energy, train and test
    energy_bins: dict[str, Any]
    units: str
    #: the committee's spread against its test error (only with committee.size >= 2)
    committee: dict[str, Any] | None = None
    #: test RMSE against the number of training configurations (only with learning_curve)
    learning_curve: dict[str, Any] | None = None
    #: energies along the given paths, reference and models (only with paths)
    paths: dict[str, Any] | None = None
    wall_time: float | None = None
    #: where the model and the figures were written (only with a workdir)
    model_dir: str | None = None
    figures: dict[str, str] | None = None

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the parts this run made."""
        return _clean(self.model_dump(exclude_unset=True))

    # read access by key, as for the dict this report used to be
    def __getitem__(self, key: str):
        if key not in self.model_fields_set:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self.model_fields_set

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self.model_fields_set else default

    def keys(self) -> list[str]:
        return [k for k in type(self).model_fields if k in self.model_fields_set]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]


def training_stresses(data: list[dict], needed: bool, what: str = "stress_weight > 0"):
    """The stresses of training records (``stress`` of each), or None when ``needed`` is false.

    A stress term needs every record's stress: ``what`` names the setting that asked for it in the
    error, e.g. CP2K single points and VASP runs without ISIF >= 2 record none.
    """
    if not needed:
        return None
    stresses = [d.get("stress") for d in data]
    missing = sum(s is None for s in stresses)
    if missing:
        raise ModelError(
            f"{what} but {missing} of {len(stresses)} calculations have no stress; train without the stress term "
            "or recalculate them with stresses"
        )
    return stresses


@dataclass
class LargerCells:
    """Configurations of supercells larger than the selection's own, with their labels: every net of the
    selection trains on them as well (frames of MD in a 4x4x4 cell hold fluctuations a 2x2x2 cell
    cannot), in every fold, so the cross-validation's errors stay those of its own supercell; a share of
    them is held out (:func:`split_larger`) and scored on its own. ``indices``: their positions among
    the configurations given."""

    configs: list
    energies: np.ndarray
    forces: list | None
    stresses: np.ndarray | None
    indices: np.ndarray

    def summary(self) -> dict:
        sizes: dict = {}
        for c in self.configs:
            key = str(int(c.reference.n_atoms))  # atoms per configuration (a JSON key)
            sizes[key] = sizes.get(key, 0) + 1
        return {"indices": [int(i) for i in self.indices], "supercells": sizes}

    def subset(self, idx) -> LargerCells:
        idx = np.asarray(idx, dtype=int)
        return LargerCells(
            [self.configs[i] for i in idx],
            self.energies[idx],
            None if self.forces is None else [self.forces[i] for i in idx],
            None if self.stresses is None else self.stresses[idx],
            self.indices[idx],
        )

    def score(self, model) -> dict:
        """Errors of ``model`` on these configurations: energies per atom (meV/atom) overall and per
        supercell (by atom count), forces (eV/A) when the labels have them."""
        from .reports import force_rmse, prediction_errors

        n_atoms = np.array([c.reference.n_atoms for c in self.configs], dtype=float)
        de, df = prediction_errors(model, self.configs, self.energies, self.forces)

        def stats(mask) -> dict:
            return {
                "n": int(mask.sum()),
                "rmse_mev_per_atom": float(np.sqrt(np.mean(de[mask] ** 2))),
                "mean_error_mev_per_atom": float(np.mean(de[mask])),
            }

        out = {"indices": [int(i) for i in self.indices], **stats(np.ones(len(de), dtype=bool))}
        out["per_supercell"] = {f"{n:g}": stats(n_atoms == n) for n in sorted(set(n_atoms.tolist()))}
        if df is not None:
            out["force_rmse_ev_per_a"] = force_rmse(df)
        return out


def split_larger(larger: LargerCells | None, fraction: float, seed: int) -> tuple[LargerCells | None, ...]:
    """``larger`` as (trained on, held out): ``floor(fraction * n)`` configurations held out, seeded
    and shuffled like the split of the selection's own supercell, none when that is zero (too few)."""
    if larger is None:
        return None, None
    n = len(larger.configs)
    n_test = int(math.floor(float(fraction) * n + 1e-9))
    if n_test < 1:
        return larger, None
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(n), test_size=n_test, random_state=int(seed), shuffle=True)
    return larger.subset(np.sort(train)), larger.subset(np.sort(test))


def _check_inputs(configs, energies, forces, cfg: dict, stresses=None):
    """Configurations and energies as arrays (restricted to ``max_energy_mev_per_fu``), the grid, the
    :class:`GradientLabels` when the nets train a force or stress term (else None), the indices of the
    kept configurations among those given and of the left-out ones (None without a window), and the
    :class:`LargerCells` (None when every configuration is in the smallest supercell)."""
    configs = check_configurations(configs)
    e = check_energies(energies, len(configs))
    kept, left_out = energy_window(configs, e, cfg.get("max_energy_mev_per_fu"))
    if left_out is not None:
        configs, e = [configs[i] for i in kept], e[kept]
        forces, stresses = ([values[i] for i in kept] if values is not None else None for values in (forces, stresses))
    grid = expand_grid(cfg["grid"])
    nets = any(s["model"] in ("cluster", "site") for s in grid)
    use_f = nets and float(cfg["training"].get("force_weight") or 0) > 0
    use_s = nets and float(cfg["training"].get("stress_weight") or 0) > 0
    if use_f and forces is None:
        raise ModelError("training.force_weight > 0 needs forces for every configuration")
    if use_s and stresses is None:
        raise ModelError("training.stress_weight > 0 needs stresses for every configuration")
    groups = supercell_groups(configs)
    larger = None
    if len(groups) > 1:
        rest = np.sort(np.concatenate(groups[1:]))
        if not nets:
            raise ModelError(
                f"{len(rest)} configurations are in supercells larger than the smallest one: only the nets "
                "(cluster, site) train on several supercells; add one to the grid or leave them out"
            )
        larger = LargerCells(
            [configs[i] for i in rest],
            e[rest],
            check_forces([forces[i] for i in rest], [configs[i] for i in rest]) if use_f else None,
            check_stresses([stresses[i] for i in rest], len(rest)) if use_s else None,
            kept[rest],
        )
        own = groups[0]
        configs, e, kept = [configs[i] for i in own], e[own], kept[own]
        forces, stresses = ([values[i] for i in own] if values is not None else None for values in (forces, stresses))
    f = np.stack(check_forces(forces, configs)) if use_f else None
    st = check_stresses(stresses, len(configs)) if use_s else None
    if len(configs) < 10:
        raise ModelError(f"model selection needs at least 10 configurations; got {len(configs)}")
    gradients = None if f is None and st is None else GradientLabels(*geometry(configs), f, st)
    return configs, e, gradients, grid, kept, left_out, larger


def energy_window(configs, e, max_mev_per_fu):
    """Indices of the configurations within ``max_mev_per_fu`` (meV per formula unit) of the lowest energy
    per formula unit and of the others (None: no window, every configuration kept)."""
    everything = np.arange(len(configs))
    if max_mev_per_fu is None:
        return everything, None
    per_fu = e / (n_atoms_of(configs) / 5.0) * 1000.0
    keep = per_fu - per_fu.min() <= float(max_mev_per_fu)
    logger.info(
        "training window %.0f meV/f.u. above the lowest energy: %d of %d configurations kept",
        max_mev_per_fu,
        int(keep.sum()),
        keep.size,
    )
    return everything[keep], everything[~keep]


def split_train_test(n: int, test_fraction: float, seed: int):
    """Seeded, shuffled split of ``range(n)`` into sorted train and test indices."""
    from sklearn.model_selection import train_test_split

    tf = float(test_fraction)
    if not 0 < tf < 1:
        raise ModelError(f"test_fraction must be in (0, 1); got {tf}")
    train_idx, test_idx = train_test_split(np.arange(n), test_size=tf, random_state=int(seed), shuffle=True)
    return np.sort(train_idx), np.sort(test_idx)


def settings_to_refit(grid: list[dict], table: list[dict], best_i: int, baselines: bool) -> list[tuple[str, dict]]:
    """The selected setting and the baselines refitted on the same split: ``[(name, setting), ...]``."""
    best = grid[best_i]
    out = [("best", best)]
    if baselines:
        if best["model"] != "pair":
            out.append(("pair", {"model": "pair"}))
        if best["model"] != "linear":
            out.append(
                (
                    "linear",
                    {
                        "model": "linear",
                        "clusters": best.get("clusters", "7p+t+o"),
                        "max_order": best.get("max_order", 2),
                    },
                )
            )
    nets = [i for i, g in enumerate(grid) if g["model"] in ("cluster", "site")]
    if best["model"] not in ("cluster", "site") and nets:
        # a linear model or the pair potential won: still report the best net on the same split
        out.append(("best_net", grid[min(nets, key=lambda i: table[i]["val_rmse_mean"])]))
    return out


def _committee_of_folds(setting, cfg, bank, models, row, n_train: int) -> tuple[Committee, float]:
    """The cross-validation's fold models of ``setting`` as a committee (``resample: cv``) and their fit time.

    Member k is the model fitted without fold k; the committee's ``folds`` resampling with the
    selection's seed reproduces those splits, so its recorded samples are the members' training sets.
    """
    fz = bank.featurizer(setting)
    committee = Committee(
        make_model(setting, cfg, featurizer=fz),
        size=len(models),
        resample="folds",
        seed=int(cfg["seed"]),
        seeds=[int(cfg["seed"])] * len(models),
        n_jobs=int(cfg.get("n_jobs") or 1),
        featurizer=fz,
    )
    committee._set_members(models, bank.reference, fz)
    committee.samples_ = [idx.tolist() for idx in committee.samples(n_train)]
    return committee, float(np.sum(row["fit_time"]))


def _fits_of_prebuilt(setting, model, fit_time, bank, train_idx, test_idx) -> dict:
    """What :func:`_refit` records of a fit, for a committee that needs none: energies and member energies."""
    feats = bank.features(setting)
    pair = setting["model"] == "pair"
    sets = [_subset(feats, idx, pair) for idx in (train_idx, test_idx)]
    return {
        "setting": setting,
        "fit_time": fit_time,
        "predictions": [model.energies_from_features(x, bank.reference) for x in sets],
        "member_predictions": [model.member_energies_from_features(x, bank.reference) for x in sets],
        "model": model,
    }


def _subset(feats, idx, pair: bool):
    """The rows ``idx`` of a feature bank entry (one array for the pair potential, one per group otherwise)."""
    rows = [np.ascontiguousarray(x[idx]) for x in feats]
    return rows[0] if pair else rows


def _refit(to_fit, bank, e, gradients, train_idx, test_idx, cfg, committee, prebuilt=None, larger=None) -> dict:
    """Fit each named setting on the whole training part; predictions on train and test, and the model.

    ``prebuilt``: name -> (fitted model, fit time) used as it is (a committee of the CV's fold models).
    """
    n_atoms = n_atoms_of(bank.configs)
    fits = {}
    for name, setting in to_fit:
        if name in (prebuilt or {}):
            fits[name] = _fits_of_prebuilt(setting, *prebuilt[name], bank, train_idx, test_idx)
            continue
        res = _fit_and_score(
            setting,
            cfg,
            bank.featurizer(setting),
            bank.reference,
            bank.features(setting),
            e,
            n_atoms,
            train_idx,
            [train_idx, test_idx],
            gradients,
            threads=0,
            keep_model=True,
            committee=committee if name == "best" else None,
            larger=larger,
            configs=bank.configs if larger is not None else None,
        )
        fits[name] = {"setting": setting, **res}
    return fits


def _summarise_fits(fits, configs, e, train_idx, test_idx, cfg, committee) -> dict:
    """Error statistics of every refitted model: train, test, test per configuration kind."""
    n_atoms = n_atoms_of(configs)
    kinds = np.array(_kinds(configs))
    e_min_fu = float(np.min(e / (n_atoms / 5.0)))
    window = cfg["window_mev_per_fu"]
    summary = {}
    for name, res in fits.items():
        p_tr, p_te = res["predictions"]
        summary[name] = {
            "label": setting_label(res["setting"])
            + (f" (committee of {committee['size']})" if "member_predictions" in res else ""),
            "setting": res["setting"],
            "train": reports.error_stats(
                p_tr, e[train_idx], n_atoms[train_idx], e_min_per_fu=e_min_fu, window_mev_per_fu=window
            ),
            "test": reports.error_stats(
                p_te, e[test_idx], n_atoms[test_idx], e_min_per_fu=e_min_fu, window_mev_per_fu=window
            ),
            "test_per_kind": reports.per_kind_stats(
                p_te, e[test_idx], n_atoms[test_idx], kinds[test_idx], e_min_per_fu=e_min_fu
            ),
            "fit_time": res["fit_time"],
        }
    return summary


def _energy_bins(predictions, e, n_atoms, train_idx, test_idx, cfg) -> dict:
    p_tr, p_te = predictions
    e_min_fu = float(np.min(e / (n_atoms / 5.0)))
    bins, window = cfg["bin_mev_per_fu"], cfg["window_mev_per_fu"]
    return {
        "train": reports.binned_errors(p_tr, e[train_idx], n_atoms[train_idx], bins, window, e_min_fu),
        "test": reports.binned_errors(p_te, e[test_idx], n_atoms[test_idx], bins, window, e_min_fu),
    }


def _record_provenance(best, report: SelectionReport, committee, e_train_per_fu) -> None:
    """What the selected model carries about how it was chosen (saved with it), and the energy range
    of its training data (eV per formula unit), so that predictions outside it can be flagged."""
    best.provenance_ = {
        "selected_by": "k-fold cross-validation",
        "setting": report.best,
        "test_rmse_mev_per_atom": report.test_rmse,
        "train_rmse_mev_per_atom": report.train_rmse,
        "n_train": report.n_train,
        "training_energy_range_ev_per_fu": [float(np.min(e_train_per_fu)), float(np.max(e_train_per_fu))],
    }
    if committee:
        best.provenance_["committee"] = {
            **committee,
            "test_spearman_energy": report.committee["test_energy"]["spearman"],
        }


def _write_outputs(
    workdir,
    best,
    report: SelectionReport,
    parts: dict,
    e,
    predictions,
    train_idx,
    test_idx,
    n_atoms,
    table,
    best_i,
    plots,
) -> None:
    """The model under ``workdir/model``, the figures (drawn from the unrounded ``parts`` of the
    report: NaN where a bin is empty) and ``report.json``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    best.save(workdir / "model")
    report.model_dir = str(workdir / "model")
    if plots:
        report.figures = write_figures(workdir, parts, e, *predictions, train_idx, test_idx, n_atoms, table, best_i)
    (workdir / "report.json").write_text(json.dumps(report.to_dict(), indent=1))


def train_and_select(configs, energies, forces=None, settings: dict | None = None, workdir=None, stresses=None):
    """Cross-validated selection, refit and test evaluation; returns ``(best_model, report)``.

    ``forces`` (``(N, 3)`` eV/A per configuration) and ``stresses`` (Voigt 6-vectors, eV/A^3, ASE sign)
    are needed when ``training.force_weight`` or ``training.stress_weight`` is above zero.

    ``settings`` overrides the defaults of :class:`SelectionSettings` (``grid``, ``n_folds``,
    ``test_fraction``, ``seed``, ``n_jobs``, ``training``, ``baselines``, ``learning_curve``,
    ``paths``, ...). ``paths`` (optional) maps a path name to ``{"x": [...], "configs": [...],
    "energies": [...], "xlabel": str}`` with reference-calculator energies, drawn as in Fig. 9. With
    ``workdir``, the best model is saved to ``workdir/model`` and the report (``report.json``) and
    PNG figures are written there. The report is a :class:`SelectionReport` (read by attribute or
    by key); RMSEs are in meV/atom.
    """
    cfg = merge_settings(settings)
    configs, e, gradients, grid, kept, left_out, larger = _check_inputs(configs, energies, forces, cfg, stresses)
    committee = committee_settings(cfg)
    train_idx, test_idx = split_train_test(len(configs), cfg["test_fraction"], cfg["seed"])
    larger_fraction = cfg["test_fraction"] if cfg.get("larger_test_fraction") is None else cfg["larger_test_fraction"]
    larger, larger_test = split_larger(larger, larger_fraction, cfg["seed"])
    progress = bool(cfg.get("progress"))
    t0 = time.perf_counter()
    bank = FeatureBank(configs, cfg, progress=progress)
    n_atoms = n_atoms_of(configs)

    from_cv = bool(committee) and committee["resample"] == "cv"
    table = cross_validate(
        bank, grid, e, train_idx, cfg, gradients=gradients, progress=progress, keep_models=from_cv, larger=larger
    )
    best_i = int(np.argmin([r["val_rmse_mean"] for r in table]))
    fold_models = [r.pop("models", None) for r in table]  # the report's CV table holds no models
    to_fit = settings_to_refit(grid, table, best_i, cfg.get("baselines", True))
    prebuilt = {}
    if from_cv:
        best_row = table[best_i]
        prebuilt["best"] = _committee_of_folds(grid[best_i], cfg, bank, fold_models[best_i], best_row, len(train_idx))
    fits = _refit(to_fit, bank, e, gradients, train_idx, test_idx, cfg, committee, prebuilt, larger)
    summary = _summarise_fits(fits, configs, e, train_idx, test_idx, cfg, committee)
    best, predictions = fits["best"]["model"], fits["best"]["predictions"]

    parts = {
        "n_configurations": len(configs),
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "train_indices": kept[train_idx].tolist(),
        "test_indices": kept[test_idx].tolist(),
        "excluded_indices": None if left_out is None else left_out.tolist(),
        "larger_supercells": None if larger is None else larger.summary(),
        "settings": _json_settings(cfg),
        "cv_table": table,
        "best": grid[best_i],
        "best_label": setting_label(grid[best_i]),
        "test_rmse": summary["best"]["test"]["rmse_mev_per_atom"],
        "train_rmse": summary["best"]["train"]["rmse_mev_per_atom"],
        "test_rmse_low": summary["best"]["test"]["rmse_low_mev_per_atom"],
        "models": summary,
        "energy_bins": _energy_bins(predictions, e, n_atoms, train_idx, test_idx, cfg),
        "units": "RMSE in meV/atom; energy windows in meV per formula unit above the lowest energy",
    }
    if larger_test is not None:
        parts["larger_test"] = larger_test.score(best)
    if committee:
        parts["committee"] = {
            **committee_calibration(
                best,
                fits["best"]["member_predictions"][1],
                predictions[1],
                e[test_idx],
                n_atoms[test_idx],
                [configs[i] for i in test_idx],
                None if forces is None else [forces[kept[i]] for i in test_idx],  # forces: as given
            ),
            **committee,
        }
    if cfg.get("learning_curve"):
        parts["learning_curve"] = learning_curve(
            bank,
            e,
            train_idx,
            test_idx,
            cfg,
            [s for _, s in to_fit],
            cfg["learning_curve"],
            progress,
            gradients,
            larger,
        )
    if cfg.get("paths"):
        parts["paths"] = evaluate_paths(cfg["paths"], {summary[k]["label"]: fits[k]["model"] for k in fits})
    report = SelectionReport(**_clean(parts))
    _record_provenance(best, report, committee, (e / (n_atoms / 5.0))[train_idx])
    report.wall_time = time.perf_counter() - t0
    if workdir is not None:
        _write_outputs(
            workdir,
            best,
            report,
            parts,
            e,
            predictions,
            train_idx,
            test_idx,
            n_atoms,
            table,
            best_i,
            cfg.get("plots", True),
        )
    return best, report


def learning_curve(
    bank, energies, train_idx, test_idx, cfg, settings, fractions, progress=False, gradients=None, larger=None
) -> dict:
    """Test RMSE (meV/atom) of each setting refitted on growing, seeded subsets of the training part
    (the nets with every configuration of ``larger`` as well)."""
    rng = np.random.default_rng(int(cfg["seed"]))
    perm = rng.permutation(train_idx)
    n_atoms = n_atoms_of(bank.configs)
    out = {}
    sizes = sorted({max(5, int(round(float(fr) * len(train_idx)))) for fr in fractions})
    sizes = [s for s in sizes if s <= len(train_idx)]
    it = [(s, n) for s in settings for n in sizes]
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="learning curve", unit="fit", leave=False)
    for setting, size in it:
        sub = np.sort(perm[:size])
        res = _fit_and_score(
            setting,
            cfg,
            bank.featurizer(setting),
            bank.reference,
            bank.features(setting),
            energies,
            n_atoms,
            sub,
            [test_idx],
            gradients,
            threads=0,
            larger=larger,
            configs=bank.configs if larger is not None else None,
        )
        c = out.setdefault(setting_label(setting), {"n_train": [], "test_rmse": []})
        c["n_train"].append(int(size))
        c["test_rmse"].append(_rmse_mev(res["predictions"][0], energies[test_idx], n_atoms[test_idx]))
    return out


def evaluate_paths(paths: dict, models: dict) -> dict:
    """Energies (meV/f.u., relative to the path's reference value at x closest to 0) along paths."""
    out = {}
    for name, p in paths.items():
        cfgs = check_configurations(p["configs"], f"paths[{name!r}].configs")
        ref_e = check_energies(p["energies"], len(cfgs), f"paths[{name!r}].energies")
        x = np.asarray(p.get("x", np.arange(len(cfgs))), dtype=float)
        n_fu = n_atoms_of(cfgs) / 5.0
        zero = int(np.argmin(np.abs(x))) if p.get("zero") is None else int(p["zero"])
        entry = {
            "x": x.tolist(),
            "xlabel": p.get("xlabel", "path coordinate"),
            "reference": ((ref_e - ref_e[zero]) / n_fu * 1000).tolist(),
            "models": {},
            "rmse_mev_per_atom": {},
        }
        for label, m in models.items():
            pred = m.predict(cfgs)
            entry["models"][label] = ((pred - pred[zero]) / n_fu * 1000).tolist()
            entry["rmse_mev_per_atom"][label] = _rmse_mev(pred, ref_e, n_atoms_of(cfgs))
        out[name] = entry
    return out


def write_figures(workdir: Path, report, e, p_tr, p_te, train_idx, test_idx, n_atoms, table, best_i) -> dict:
    figs = {}
    figs["parity"] = str(
        reports.parity_plot(
            workdir / "parity.png",
            (e[train_idx], p_tr),
            (e[test_idx], p_te),
            n_atoms[train_idx],
            n_atoms[test_idx],
            title=report["best_label"],
        )
    )
    figs["energy_bins"] = str(
        reports.error_bins_plot(
            workdir / "energy_bins.png",
            report["energy_bins"]["train"],
            report["energy_bins"]["test"],
            report["train_rmse"],
            report["test_rmse"],
        )
    )
    figs["cv_grid"] = str(reports.cv_grid_plot(workdir / "cv_grid.png", table, best_i))
    if report.get("learning_curve"):
        figs["learning_curve"] = str(
            reports.learning_curve_plot(workdir / "learning_curve.png", report["learning_curve"])
        )
    if report.get("paths"):
        figs["paths"] = str(reports.path_plot(workdir / "paths.png", report["paths"]))
    if report.get("committee"):
        figs["calibration"] = str(
            reports.calibration_plot(workdir / "calibration.png", calibration_panels(report["committee"]))
        )
    return figs


def committee_settings(cfg: dict) -> dict | None:
    """The ``committee`` setting of merged settings (``{"size": K, "resample": ...}``), or None when it is off."""
    c = CommitteeSettings.model_validate(cfg.get("committee"))
    return {"size": c.size, "resample": c.resample} if c.size else None


def committee_calibration(model, member_energies, energies, reference_energies, n_atoms, configs, forces=None) -> dict:
    """A committee's spread against its error on held-out configurations (per configuration).

    Energies: spread and error in meV/atom. Forces (when the reference forces are known): the max
    force deviation against the largest force error over the atoms (eV/A). Each with its Spearman
    rank correlation and binned RMS error (:func:`reports.spread_calibration`); the per-configuration
    values are kept for the calibration plot.
    """
    spread = np.asarray(member_energies).std(axis=0) / n_atoms * 1000.0
    err = (np.asarray(energies) - np.asarray(reference_energies)) / n_atoms * 1000.0
    out = {
        "test_energy": {
            **reports.spread_calibration(spread, err),
            "spread": spread.tolist(),
            "error": err.tolist(),
            "units": "meV/atom",
        }
    }
    if forces is not None and all(f is not None for f in forces):
        u = model.predict_uncertainty(configs)
        f_err = np.array([np.linalg.norm(p - np.asarray(r), axis=1).max() for p, r in zip(u["forces"], forces)])
        dev = np.asarray(u["max_force_deviation"])
        out["test_forces"] = {
            **reports.spread_calibration(dev, f_err),
            "spread": dev.tolist(),
            "error": f_err.tolist(),
            "units": "eV/A (max over atoms)",
        }
    return out


def calibration_panels(calibration: dict) -> dict:
    """Panels for :func:`reports.calibration_plot` from :func:`committee_calibration`'s result."""
    panels = {"energy, meV/atom": (calibration["test_energy"]["spread"], calibration["test_energy"]["error"])}
    if calibration.get("test_forces"):
        panels["max force over atoms, eV/A"] = (
            calibration["test_forces"]["spread"],
            calibration["test_forces"]["error"],
        )
    return panels


def _json_settings(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k != "paths"}
    if cfg.get("paths"):
        out["paths"] = sorted(cfg["paths"])
    return out


def _clean(obj):
    """JSON-safe copy (numpy to lists, NaN to None, fitted models dropped; a setting's "model" kind stays)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items() if not (k == "model" and hasattr(v, "predict"))}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
