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

from . import steps

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
) -> dict:
    """Explore with the committee at ``model_path``, select, store the selection; returns the iteration's record.

    ``settings``: the spec's ``active`` section (as a dict); ``model_errors``: the CV and test RMSE of
    the model explored with (for the record). The record says whether the loop stops (``stop``,
    ``reason``) and lists the configuration ids to label (``todo``).
    """
    from ..models import load_model
    from ..simulation.explore import explore, select

    t0 = time.perf_counter()
    history = load_history(campaign_dir)
    history.pop(str(iteration), None)
    model = load_model(model_path)
    if not hasattr(model, "predict_uncertainty"):
        from ..simulation import SimulationError

        raise SimulationError(
            f"{model_path} holds a {type(model).__name__}, not a committee: the loop needs the "
            "spread of several models (training.options committee, or active.committee)"
        )
    kw = {
        k: settings[k]
        for k in ("temperatures", "starts", "strains", "steps", "equilibration", "sample_every", "timestep_fs")
    }
    kw["supercell"] = settings.get("supercell", 2)
    candidates, runs = explore(model, seed=seed + 7919 * iteration, progress=steps.progress_enabled(), **kw)
    t_explore = time.perf_counter() - t0
    h = steps.get_calculator_cached(calculator).settings_hash
    known = [d["config"] for d in store.training_data(calculator=calculator["name"], settings_hash=h)]
    remaining = int(settings["budget"]) - labelled_by_loop(history)
    t1 = time.perf_counter()
    sel = select(
        model,
        candidates,
        float(settings["lower"]),
        float(settings["upper"]),
        max(1, min(int(settings["max_selected"]), remaining)),
        float(settings["uniqueness_tolerance"]),
        known=known,
        metric=settings["metric"],
    )
    t_select = time.perf_counter() - t1
    for c in sel.configurations:
        c.tags["iteration"] = int(iteration)
    uncertain = sel.fraction_uncertain()
    reason = None
    if uncertain < float(settings["stop_fraction"]):
        reason = (
            f"converged: at every temperature less than {settings['stop_fraction']:.0%} of the explored frames "
            f"lie above the lower trust bound (largest fraction {uncertain:.1%})"
        )
    elif remaining <= 0:
        reason = f"budget of {settings['budget']} calculations spent"
    elif iteration > int(settings["iterations"]):
        reason = f"{settings['iterations']} iterations done"
    # the selection is labelled only when the loop goes on (a last exploration measures, it does not label)
    saved = steps.store_configurations(store, sel.configurations, campaign, h) if reason is None else {"todo": []}
    if reason is None and not saved["todo"]:
        reason = "nothing new to label in the trust window"
    record = {
        "iteration": int(iteration),
        "model": str(model_path),
        "model_errors": model_errors or {},
        "training_set": len(known),
        "runs": runs,
        "selection": sel.to_dict(),
        "n_to_label": len(saved["todo"]),
        "todo": saved["todo"],
        "stop": reason is not None,
        "reason": reason,
        "wall_s": {"explore": t_explore, "select": t_select},
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    history[str(iteration)] = record
    _save_history(campaign_dir, history)
    plot_history(history, history_path(campaign_dir).with_name("convergence.png"))
    logger.info(
        "active iteration %d: %d candidates, %d in window, %d to label; %s",
        iteration,
        sel.n_candidates,
        sel.n_in_window,
        len(saved["todo"]),
        reason or "continue",
    )
    return record


def plot_history(history: dict, path: Path) -> Path:
    """Convergence of the loop: fraction of uncertain frames per temperature, labels and errors per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = sorted(int(k) for k in history)
    recs = [history[str(i)] for i in its]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    temps = sorted({t for r in recs for t in r["selection"]["per_temperature"]}, key=float)
    for t in temps:
        y = [r["selection"]["per_temperature"].get(t, {}).get("fraction_above_lower", float("nan")) for r in recs]
        axes[0].plot(its, y, marker="o", label=f"{t} K")
    axes[0].set_ylabel("fraction of frames above the lower bound")
    axes[0].set_yscale("symlog", linthresh=0.01)
    axes[1].bar(its, [r["n_to_label"] for r in recs], color="C2")
    axes[1].set_ylabel("configurations labelled")
    errs = [(r.get("model_errors") or {}) for r in recs]
    axes[2].plot(its, [e.get("cv_rmse") for e in errs], marker="o", label="CV RMSE")
    axes[2].plot(its, [e.get("test_rmse") for e in errs], marker="s", label="test RMSE")
    axes[2].set_ylabel("meV/atom")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None
    fig.suptitle("active learning at temperature")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
