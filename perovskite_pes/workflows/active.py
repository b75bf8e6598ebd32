"""Active learning at temperature, the workflow half: one iteration's explore + select + store, its record.

No FireWorks here (the Firetask in :mod:`perovskite_pes.workflows.tasks` calls :func:`active_iteration`
and appends the labelling, retraining and next-iteration Fireworks). Every iteration's numbers go to
``$PES_HOME/campaigns/<campaign>/active/history.json`` (keyed by iteration, so a rerun of a killed
iteration replaces its record) with a convergence plot next to it; the campaign report includes both.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..utils import pyplot, save_figure
from . import steps
from .spec import validate_active

logger = logging.getLogger(__name__)

HISTORY = "history.json"


def history_path(campaign_dir: Path) -> Path:
    return Path(campaign_dir) / "active" / HISTORY


def load_history(campaign_dir: Path) -> dict:
    """``{iteration (str): record}`` of the campaign's active-learning loop (empty when none ran)."""
    p = history_path(campaign_dir)
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        logger.warning("cannot read %s (%s): the loop's history starts afresh", p, exc)
        return {}


def _save_history(campaign_dir: Path, history: dict) -> Path:
    p = history_path(campaign_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(history, indent=1))
    os.replace(tmp, p)
    return p


def labelled_by_loop(history: dict) -> int:
    """Calculations the loop has asked for so far (what counts against the budget)."""
    return sum(int(rec.get("n_to_label", 0)) for rec in history.values())


def active_iteration(
    store,
    model_path,
    settings: dict,
    iteration: int,
    calculator: dict,
    campaign: str,
    campaign_dir: Path,
    seed: int = 0,
    model_errors: dict | None = None,
    training_window: float | None = None,
) -> dict:
    """Explore with the committee at ``model_path``, select, store the selection; returns the iteration's record.

    ``settings``: the spec's ``active`` section (as a dict); ``model_errors``: the CV and test RMSE of
    the model explored with (for the record); ``training_window``: the training's
    ``max_energy_mev_per_fu`` (the data ``active.distance_margin`` measures distances on). The record
    says whether the loop stops (``stop``, ``reason``) and lists the configuration ids to label (``todo``).
    """
    from ..models import load_model
    from ..simulation.explore import explore, select

    t0 = time.perf_counter()
    history = load_history(campaign_dir)
    history.pop(str(iteration), None)
    h = steps.get_calculator_cached(calculator).settings_hash
    data = store.training_data(calculator=calculator["name"], settings_hash=h)
    previous = history.get(str(iteration - 1))
    if previous is not None and "labelled_errors" not in previous:
        # the model explored with in the last round, against the labels of the frames its MD chose
        previous["labelled_errors"] = labelled_errors(previous, data, training_window)
    spec = validate_active(settings)
    remaining = spec.budget - labelled_by_loop(history)
    spent = _spent(spec, remaining, iteration)
    if spent and not spec.final_exploration:
        # the loop stops whatever an exploration would find: skip it (it would only measure)
        return _record(history, campaign_dir, iteration, model_path, model_errors, len(data), spent)
    model = load_model(model_path)
    if not hasattr(model, "predict_uncertainty"):
        from ..simulation import SimulationError

        raise SimulationError(
            f"{model_path} holds a {type(model).__name__}, not a committee: the loop needs the "
            "spread of several models (training.options committee, or active.committee)"
        )
    candidates, runs = [], []
    for k, n in enumerate(spec.supercells or [settings.get("supercell", 2)]):
        c, r = explore(
            model,
            supercell=n,
            seed=seed + 7919 * iteration + 104729 * k,
            progress=steps.progress_enabled(),
            **spec.explore_kwargs(),
        )
        candidates += c
        runs += r
    t_explore = time.perf_counter() - t0
    known = [d["config"] for d in data]
    t1 = time.perf_counter()
    sel = select(
        model,
        candidates,
        *spec.trust_bounds(),
        max(1, min(spec.max_selected, remaining)),
        spec.uniqueness_tolerance,
        known=known,
        metric=spec.metric,
        min_distance=_distance_floors(data, spec.distance_margin, training_window),
    )
    t_select = time.perf_counter() - t1
    for c in sel.configurations:
        c.tags["iteration"] = int(iteration)
    uncertain = sel.fraction_uncertain()
    reason = spent
    if uncertain < spec.stop_fraction:
        reason = (
            f"converged: at every temperature less than {spec.stop_fraction:.0%} of the explored frames "
            f"lie above the lower trust bound (largest fraction {uncertain:.1%})"
        )
    # the selection is labelled only when the loop goes on (a last exploration measures, it does not label)
    saved = steps.store_configurations(store, sel.configurations, campaign, h) if reason is None else {"todo": []}
    if reason is None and not saved["todo"]:
        reason = "nothing new to label in the trust window"
    logger.info(
        "active iteration %d: %d candidates, %d in window, %d to label; %s",
        iteration,
        sel.n_candidates,
        sel.n_in_window,
        len(saved["todo"]),
        reason or "continue",
    )
    return _record(
        history,
        campaign_dir,
        iteration,
        model_path,
        model_errors,
        len(known),
        reason,
        runs=runs,
        selection=sel.to_dict(),
        todo=saved["todo"],
        wall_s={"explore": t_explore, "select": t_select},
    )


def _training_window(data: list[dict], window: float | None):
    """Indices of the store items (``training_data``) the training keeps and of those above its window
    (None without one), by the training's own rule."""
    import numpy as np

    from ..models.selection import energy_window

    energies = np.array([d["energy"] for d in data], dtype=float)
    return energy_window([d["config"] for d in data], energies, window)


def _distance_floors(data: list[dict], margin: float | None, window: float | None):
    """What ``select`` takes as ``min_distance``: the fixed floor without a margin, else the floors per
    pair of species of the training data inside the training window (frames beyond it train nothing)."""
    from ..simulation.explore import distance_floors
    from ..structure.sampling import DEFAULT_MIN_DISTANCE

    if margin is None or not data:
        return DEFAULT_MIN_DISTANCE
    kept, _ = _training_window(data, window)
    return distance_floors([data[i]["config"] for i in kept], margin)


def _spent(spec, remaining: int, iteration: int) -> str | None:
    """Why the loop stops whatever the exploration finds (budget, then iterations), or None."""
    if remaining <= 0:
        return f"budget of {spec.budget} calculations spent"
    if iteration > spec.iterations:
        return f"{spec.iterations} iterations done"
    return None


def _record(
    history,
    campaign_dir,
    iteration,
    model_path,
    model_errors,
    n_known,
    reason,
    runs=(),
    selection=None,
    todo=(),
    wall_s=None,
) -> dict:
    """Add the iteration's record to the history (file and convergence plot); returns the record."""
    record = {
        "iteration": int(iteration),
        "model": str(model_path),
        "model_errors": model_errors or {},
        "training_set": int(n_known),
        "runs": list(runs),
        "selection": selection or _not_explored(),
        "explored": selection is not None,
        "n_to_label": len(todo),
        "todo": list(todo),
        "stop": reason is not None,
        "reason": reason,
        "wall_s": wall_s or {},
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    history[str(iteration)] = record
    _save_history(campaign_dir, history)
    plot_history(history, history_path(campaign_dir).with_name("convergence.png"))
    return record


def _not_explored() -> dict:
    from ..simulation.explore import Selection

    return Selection().to_dict() | {"fraction_uncertain": None}


def labelled_errors(record: dict, data: list[dict], training_window: float | None = None) -> dict:
    """Errors of the model an iteration explored with on the frames it selected, now that they are labelled.

    The frames come from that model's own MD and are the ones its committee was least sure of, so these
    figures are a pessimistic measure of how far the model's MD strays from the calculator's PES
    (``data``: :meth:`~perovskite_pes.db.store.Store.training_data` items). Energies in meV/atom
    (RMS, mean signed error model - label), forces in eV/A; per temperature and overall. With a
    ``training_window`` (meV/f.u.), ``n_above_training_window`` counts the frames whose label lies
    above it: labels no training uses.
    """
    import numpy as np

    from ..models import load_model
    from ..models.reports import force_rmse, prediction_errors

    wanted = {str(i) for i in record.get("todo", [])}
    items = [d for d in data if str(d["config_id"]) in wanted]
    if not items:
        return {"n": 0}
    configs = [d["config"] for d in items]
    with_forces = all(d["forces"] is not None for d in items)
    de, df = prediction_errors(
        load_model(record["model"]),
        configs,
        [d["energy"] for d in items],
        [d["forces"] for d in items] if with_forces else None,
    )
    temps = np.array([float(c.tags.get("temperature_K", np.nan)) for c in configs])

    def stats(mask) -> dict:
        out = {
            "n": int(mask.sum()),
            "energy_rmse_mev_per_atom": float(np.sqrt(np.mean(de[mask] ** 2))),
            "energy_bias_mev_per_atom": float(np.mean(de[mask])),
        }
        fs = [f for f, m in zip(df or [], mask) if m]
        if fs:
            out["force_rmse_ev_per_a"] = force_rmse(fs)
        return out

    result = stats(np.ones(len(items), dtype=bool))
    if training_window is not None:
        _, above = _training_window(data, training_window)
        result["n_above_training_window"] = len(wanted & {str(data[i]["config_id"]) for i in above})
    result["per_temperature"] = {f"{t:g}": stats(temps == t) for t in sorted(set(temps[np.isfinite(temps)].tolist()))}
    return result


def plot_history(history: dict, path: Path) -> Path:
    """Convergence of the loop: fraction of uncertain frames per temperature, labels and errors per iteration."""
    plt = pyplot()

    its = sorted(int(k) for k in history)
    recs = [history[str(i)] for i in its]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    temps = sorted({t for r in recs for t in r["selection"]["per_temperature"]}, key=float)
    for t in temps:
        y = [r["selection"]["per_temperature"].get(t, {}).get("fraction_above_lower", float("nan")) for r in recs]
        axes[0].plot(its, y, marker="o", label=f"{t} K")
    axes[0].set_ylabel("fraction of frames above the lower bound")
    axes[0].set_yscale("symlog", linthresh=0.01)
    axes[1].bar(its, [r["n_to_label"] for r in recs], color="C2", label="labelled")
    above = [(r.get("labelled_errors") or {}).get("n_above_training_window") for r in recs]
    if any(n for n in above):
        axes[1].bar(its, [n or 0 for n in above], color="C3", label="above the training window")
    axes[1].set_ylabel("configurations labelled")
    errs = [(r.get("model_errors") or {}) for r in recs]
    axes[2].plot(its, [e.get("cv_rmse") for e in errs], marker="o", label="CV RMSE")
    axes[2].plot(its, [e.get("test_rmse") for e in errs], marker="s", label="test RMSE")
    if any(e.get("larger_test_rmse") is not None for e in errs):
        axes[2].plot(its, [e.get("larger_test_rmse") for e in errs], marker="v", label="test RMSE, larger cells")
    own = [(r.get("labelled_errors") or {}).get("energy_rmse_mev_per_atom") for r in recs]
    axes[2].plot(its, own, marker="^", label="RMSE on the MD frames it selected")
    axes[2].set_ylabel("meV/atom")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None
    fig.suptitle("active learning at temperature")
    return save_figure(fig, path, dpi=110)
