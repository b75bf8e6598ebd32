"""Automated retraining: when enough new data has arrived, train a new model and maybe activate it.

The model registry (:mod:`perovskite_pes.db`) records the calculations each model was trained
on. The number of *new* valid calculations of one calculator (same ``settings_hash``) is the
number of completed calculations minus those the active model saw. A :class:`RetrainPolicy`
says when that is enough (a count and/or a fraction of the old training set) and how much worse
(relative cross-validation RMSE) a new model may be and still be activated.

Nothing here imports FireWorks: the campaign Firetasks and ``pes retrain`` both call
:func:`retrain_decision` and :func:`train_and_register`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import PesError
from ..utils import jsonable

logger = logging.getLogger(__name__)


class RetrainError(PesError):
    """Retraining cannot proceed (no data, unknown calculator ...)."""


@dataclass(frozen=True)
class RetrainPolicy:
    """When to retrain and when to activate the retrained model.

    ``min_new_count``: at least this many new valid calculations since the active model;
    ``min_new_fraction``: new calculations at least this fraction of the active model's training
    set; ``require``: "any" threshold (of those set) or "all" of them; ``cv_tolerance``: the new
    model is activated only if its CV RMSE <= (1 + cv_tolerance) * the active model's CV RMSE.
    """

    min_new_count: int | None = 500
    min_new_fraction: float | None = 0.2
    require: str = "any"
    cv_tolerance: float = 0.05
    enabled: bool = True

    def __post_init__(self):
        if self.require not in ("any", "all"):
            raise RetrainError(f"retrain policy: require must be 'any' or 'all'; got {self.require!r}")
        if self.min_new_count is None and self.min_new_fraction is None:
            raise RetrainError("retrain policy: set min_new_count and/or min_new_fraction")
        if self.min_new_count is not None and self.min_new_count < 1:
            raise RetrainError(f"retrain policy: min_new_count must be >= 1; got {self.min_new_count}")
        if self.min_new_fraction is not None and not self.min_new_fraction > 0:
            raise RetrainError(f"retrain policy: min_new_fraction must be > 0; got {self.min_new_fraction}")
        if not self.cv_tolerance >= 0:
            raise RetrainError(f"retrain policy: cv_tolerance must be >= 0; got {self.cv_tolerance}")

    @classmethod
    def from_dict(cls, d: dict | None) -> RetrainPolicy:
        d = dict(d or {})
        known = {"min_new_count", "min_new_fraction", "require", "cv_tolerance", "enabled"}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def passes(self, n_new: int, n_trained: int) -> bool:
        """True when ``n_new`` new calculations (model trained on ``n_trained``) call for retraining."""
        if n_new <= 0:
            return False
        if n_trained == 0:
            # no model trained on this data yet: a fraction of nothing says nothing, only the count does
            return self.min_new_count is None or n_new >= self.min_new_count
        checks = []
        if self.min_new_count is not None:
            checks.append(n_new >= self.min_new_count)
        if self.min_new_fraction is not None:
            checks.append(n_new / n_trained >= self.min_new_fraction)
        return any(checks) if self.require == "any" else all(checks)

    def accepts(self, new_cv: float | None, old_cv: float | None) -> bool:
        """Should a model with CV RMSE ``new_cv`` replace the active one with ``old_cv``?"""
        if old_cv is None or not math.isfinite(old_cv):
            return True
        if new_cv is None or not math.isfinite(new_cv):
            return False
        return new_cv <= old_cv * (1.0 + self.cv_tolerance) + 1e-12


def _unseen_errors(model, active: dict, report: dict, configs, energies, calc_ids):
    """RMSEs (meV/atom) of the new ``model`` and of the active one on the configurations neither was
    fitted on (the new model's held-out test sets, of its own supercell and of the larger ones, less
    every calculation the active model was given), and their number; None when there are none (the
    data did not grow) or the active model cannot be loaded."""
    from ..models import ModelError, load_model

    seen = {str(c) for c in (active.get("calc_ids") or [])}
    held_out = list(report.get("test_indices") or []) + list((report.get("larger_test") or {}).get("indices") or [])
    test = [i for i in held_out if calc_ids[i] not in seen]
    if not test or not active.get("path"):
        return None
    try:
        old = load_model(active["path"])
    except (ModelError, OSError) as exc:
        logger.warning("cannot load the active model %s to compare on new data (%s)", active.get("path"), exc)
        return None
    sub = [configs[i] for i in test]
    e = np.asarray([energies[i] for i in test])
    n = np.asarray([c.reference.n_atoms for c in sub], float)

    def rmse(m) -> float:
        return float(np.sqrt(np.mean(((np.asarray(m.predict(sub)) - e) / n * 1000.0) ** 2)))

    return rmse(model), rmse(old), len(test)


def _activation(policy, model, active, new_cv, old_cv, report, configs, energies, calc_ids) -> tuple[bool, str]:
    """Activate the new model? When the data grew, both models are compared on the new configurations
    neither was fitted on (a CV RMSE on a set with new kinds of configurations is not comparable with
    one on the old set); otherwise by CV RMSE, within the policy's tolerance."""
    if active is None:
        return True, "no model was active"
    unseen = _unseen_errors(model, active, report, configs, energies, calc_ids)
    if unseen is not None:
        new, old, n = unseen
        ok = policy.accepts(new, old)
        verdict = "within" if ok else "worse than"
        return ok, (
            f"RMSE {new:.4g} meV/atom on the {n} new held-out configurations, {verdict} {policy.cv_tolerance:.0%} "
            f"of the active model's {old:.4g} on the same ones"
        )
    ok = policy.accepts(new_cv, old_cv)
    if ok:
        return True, f"CV RMSE {new_cv} within {policy.cv_tolerance:.0%} of the active model's {old_cv}"
    return False, f"CV RMSE {new_cv} worse than the active model's {old_cv} by more than {policy.cv_tolerance:.0%}"


@dataclass
class RetrainDecision:
    """Outcome of a retrain check (plain data; printed by ``pes retrain`` and stored in launches)."""

    retrain: bool
    reason: str
    calculator: str
    settings_hash: str | None
    n_total: int
    n_trained: int
    n_new: int
    active_model: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def _model_id(model: dict | None) -> str | None:
    if not model:
        return None
    for key in ("id", "_id", "model_id"):
        if model.get(key) is not None:
            return str(model[key])
    return None


def retrain_decision(
    store, calculator: str, settings_hash: str | None, policy: RetrainPolicy, mode: str = "policy"
) -> RetrainDecision:
    """Decide whether to retrain the model of ``calculator`` (data of ``settings_hash``).

    ``mode``: "policy" applies the policy's thresholds; "if_new" retrains whenever any new
    calculation arrived (the end of a campaign, ``pes retrain`` by hand); "force" always retrains
    when there is data at all.
    """
    if mode not in ("policy", "if_new", "force"):
        raise RetrainError(f"retrain mode must be 'policy', 'if_new' or 'force'; got {mode!r}")
    n_total = int(store.count_calculations(calculator=calculator, settings_hash=settings_hash, status="completed"))
    active = store.active_model(calculator=calculator)
    same_data = bool(active) and (settings_hash is None or active.get("settings_hash") == settings_hash)
    n_trained = len(active.get("calc_ids") or []) if same_data else 0
    n_new = max(0, n_total - n_trained)
    active_id = _model_id(active)
    args = dict(
        calculator=calculator,
        settings_hash=settings_hash,
        n_total=n_total,
        n_trained=n_trained,
        n_new=n_new,
        active_model=active_id,
    )
    if n_total == 0:
        return RetrainDecision(False, f"no completed {calculator} calculations stored: nothing to train on", **args)
    if mode == "force":
        return RetrainDecision(True, f"forced retraining on {n_total} calculations", **args)
    if n_new == 0:
        return RetrainDecision(
            False, f"no new {calculator} data since the active model {active_id} ({n_trained} calculations)", **args
        )
    since = f"since the active model {active_id}" if n_trained else "and no model trained on this data yet"
    if mode == "if_new":
        return RetrainDecision(True, f"{n_new} new calculations {since}", **args)
    if not policy.enabled:
        return RetrainDecision(False, "retraining is disabled by the policy", **args)
    grown = f"{n_new} new calculations {since}" + (f" (fraction {n_new / n_trained:.2f})" if n_trained else "")
    if policy.passes(n_new, n_trained):
        return RetrainDecision(True, f"{grown}: passes the retrain policy", **args)
    want = []
    if policy.min_new_count is not None:
        want.append(f"{policy.min_new_count} new")
    if policy.min_new_fraction is not None and n_trained:
        want.append(f"fraction {policy.min_new_fraction}")
    joiner = f" {policy.require} of " if len(want) > 1 else ""
    return RetrainDecision(False, f"{grown}: below the retrain policy ({joiner.join(want)})", **args)


# ----------------------------------------------------------------------------------- training
def cv_rmse(metrics: dict | None) -> float | None:
    """The cross-validation RMSE (meV/atom) recorded in a model's metrics (None when absent)."""
    if not metrics:
        return None
    value = metrics.get("cv_rmse")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def metrics_from_report(report: dict) -> dict:
    """The model-registry metrics of a ``train_and_select`` report (RMSEs in meV/atom)."""
    table = report.get("cv_table") or []
    best = min(table, key=lambda r: r.get("val_rmse_mean", math.inf)) if table else {}
    out = {
        "cv_rmse": best.get("val_rmse_mean"),
        "cv_rmse_std": best.get("val_rmse_std"),
        "test_rmse": report.get("test_rmse"),
        "train_rmse": report.get("train_rmse"),
        "test_rmse_low": report.get("test_rmse_low"),
        "best": report.get("best_label"),
        "n_train": report.get("n_train"),
        "n_test": report.get("n_test"),
        # left out above the energy window; of larger supercells trained on, and held out and scored
        "n_excluded": len(report.get("excluded_indices") or []) or None,
        "n_larger": len((report.get("larger_supercells") or {}).get("indices") or []) or None,
        "n_larger_test": (report.get("larger_test") or {}).get("n"),
        "larger_test_rmse": (report.get("larger_test") or {}).get("rmse_mev_per_atom"),
        "units": "meV/atom",
    }
    baselines = {}
    for name, m in (report.get("models") or {}).items():
        if name != "best" and isinstance(m, dict):
            baselines[name] = (m.get("test") or {}).get("rmse_mev_per_atom")
    if baselines:
        out["baseline_test_rmse"] = baselines
    if report.get("figures"):
        out["figures"] = report["figures"]
    c = report.get("committee")
    if c:
        out["committee"] = {
            "size": c["size"],
            "resample": c["resample"],
            "test_spread_rms": c["test_energy"]["rms_spread"],
            "test_spearman_energy": c["test_energy"]["spearman"],
        }
        if c.get("test_forces"):
            out["committee"].update(
                test_max_force_deviation_rms=c["test_forces"]["rms_spread"],
                test_spearman_forces=c["test_forces"]["spearman"],
            )
    return {k: v for k, v in out.items() if v is not None}


def models_dir(home=None) -> Path:
    from ..settings import Settings

    home = Path(home) if home is not None else Settings.load().home
    return home / "models"


def interpolation_paths(data: list[dict], min_points: int = 3) -> dict:
    """Energies along the campaign's interpolation paths (cf. the paper's Fig. 9), for the model report.

    Groups training items whose configuration is tagged ``method: interpolate`` by their ``path``,
    ordered by ``path_coordinate``.
    """
    groups: dict = {}
    ends: dict = {}
    for d in data:
        tags = d["config"].tags or {}
        if tags.get("method") == "interpolate" and tags.get("path") and tags.get("path_coordinate") is not None:
            groups.setdefault(str(tags["path"]), []).append((float(tags["path_coordinate"]), d))
        elif tags.get("method") == "tilt" and tags.get("tilt_system"):
            # the path's end points are the stored parents (the store keeps their tags, not the path's):
            # the relaxed tilt systems and the undistorted cubic cell
            g = str(tags["tilt_system"])
            if tags.get("relaxed") or g == "a0a0a0":
                ends.setdefault(g, d)
    out = {}
    for name, items in sorted(groups.items()):
        have = {round(x, 9) for x, _ in items}
        for k, node in enumerate(name.split("->")):
            if float(k) not in have and node in ends:
                items.append((float(k), ends[node]))
        if len(items) < min_points:
            continue
        items.sort(key=lambda t: t[0])
        x = [t[0] for t in items]
        out[name] = {
            "x": x,
            "configs": [d["config"] for _, d in items],
            "energies": [float(d["energy"]) for _, d in items],
            "xlabel": f"path coordinate ({name})",
            "zero": int(np.argmin(np.abs(np.array(x)))),
        }
    return out


def train_and_register(
    store,
    calculator: str,
    settings_hash: str | None,
    training: dict,
    policy: RetrainPolicy,
    name: str,
    workdir=None,
    provenance: dict | None = None,
    timings: dict | None = None,
) -> dict:
    """Train on every completed calculation of ``calculator``/``settings_hash`` and register the model.

    The model is activated when no model is active or when its CV RMSE is within the policy's
    tolerance of the active one. Returns a summary dict (model id, path, metrics, activated, why).
    ``timings`` (if given) receives the seconds spent loading data, training and registering.
    """
    from ..models import train_and_select, training_stresses

    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    data = store.training_data(calculator=calculator, settings_hash=settings_hash, status="completed")
    if not data:
        raise RetrainError(f"no completed {calculator} calculations to train on (settings {settings_hash})")
    hashes = {d.get("settings_hash") for d in data if d.get("settings_hash")}
    configs = [d["config"] for d in data]
    energies = [float(d["energy"]) for d in data]
    forces = [d.get("forces") for d in data]
    if any(f is None for f in forces):
        forces = None
    stresses = training_stresses(
        data, float((training.get("training") or {}).get("stress_weight") or 0) > 0, "training.stress_weight > 0"
    )
    calc_ids = [str(d["calc_id"]) for d in data]
    timings["load_data"] = timings.get("load_data", 0.0) + time.perf_counter() - t0

    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(workdir) if workdir is not None else models_dir() / f"{name}-{stamp}"
    base.mkdir(parents=True, exist_ok=True)
    settings = dict(training)
    if "paths" not in settings:
        paths = interpolation_paths(data)
        if paths:
            settings["paths"] = paths
    if "progress" not in settings:
        settings["progress"] = os.environ.get("PES_PROGRESS", "") not in ("", "0")
    t0 = time.perf_counter()
    model, report = train_and_select(configs, energies, forces, settings, str(base), stresses=stresses)
    timings["train"] = timings.get("train", 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    model_path = base / "model"
    if not (model_path / "model.json").exists():
        model.save(str(model_path))
    report = jsonable(report.to_dict() if hasattr(report, "to_dict") else report or {}, repr)  # a SelectionReport
    metrics = metrics_from_report(report)
    hyper = {"best": report.get("best"), "training_settings": jsonable(training, repr)}
    new_cv = cv_rmse(metrics)
    active = store.active_model(calculator=calculator)
    old_cv = cv_rmse((active or {}).get("metrics"))
    activate, why = _activation(policy, model, active, new_cv, old_cv, report, configs, energies, calc_ids)
    if provenance:
        metrics["provenance"] = jsonable(provenance, repr)
    if settings_hash is None and len(hashes) == 1:
        settings_hash = hashes.pop()
    model_id = store.register_model(
        name=name,
        path=str(model_path),
        calculator=calculator,
        settings_hash=settings_hash,
        metrics=metrics,
        hyperparameters=hyper,
        calc_ids=calc_ids,
        activate=activate,
    )
    store.flush()
    if not (base / "report.json").exists():
        (base / "report.json").write_text(json.dumps(report, indent=2, default=str))
    timings["register"] = timings.get("register", 0.0) + time.perf_counter() - t0
    logger.info(
        "model %s trained on %d %s calculations: %s (%s)",
        name,
        len(calc_ids),
        calculator,
        "activated" if activate else "registered, not activated",
        why,
    )
    return {
        "model_id": str(model_id),
        "name": name,
        "path": str(model_path),
        "workdir": str(base),
        "n_calculations": len(calc_ids),
        "cv_rmse": new_cv,
        "previous_cv_rmse": old_cv,
        "activated": bool(activate),
        "why": why,
        "metrics": metrics,
    }
