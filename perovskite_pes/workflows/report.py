"""Campaign report: what ran, how long each stage took, the data, the model and its plots.

Written under ``$PES_HOME/campaigns/<campaign>/``: ``report.json`` (with the relaxed tilt systems in
order of energy), ``energies.png`` (distribution of
the calculated energies per formula unit above the lowest, cf. the paper's Fig. 6a) and
``stages.png`` (wall time per stage), and it lists the model's own plots (parity, error per energy
bin, ...) from the training directory.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..utils import pyplot, save_figure

logger = logging.getLogger(__name__)

STAGES = ("relax", "enumerate", "calculate", "store", "load_data", "featurise", "train", "register")


def stage_timings(lpad, name: str) -> dict:
    """Seconds per stage summed over the campaign's launches, plus FireWorks' share.

    Each Firetask records its own timings (``stored_data.timings``); the launch's run time minus
    the time inside the tasks is what the Firework machinery (checkout, state updates, store
    flushes of the LaunchPad) cost.
    """
    from .status import campaign_fw_ids

    fws = list(
        lpad.fireworks.find(
            {"fw_id": {"$in": campaign_fw_ids(lpad, name)}}, {"fw_id": 1, "launches": 1, "spec.pes_kind": 1}
        )
    )
    lids = sorted({lid for fw in fws for lid in (fw.get("launches") or [])})
    out = {s: 0.0 for s in STAGES}
    per_kind: dict = {}
    launch_total = 0.0
    for launch in lpad.launches.find(
        {"launch_id": {"$in": lids}}, {"action.stored_data": 1, "state_history": 1, "runtime_secs": 1, "fw_id": 1}
    ):
        sd = ((launch.get("action") or {}).get("stored_data")) or {}
        timings = sd.get("timings") or {}
        inside = 0.0
        for k, v in timings.items():
            if isinstance(v, (int, float)):
                out[k] = out.get(k, 0.0) + float(v)
                inside += float(v)
        runtime = launch.get("runtime_secs")
        if runtime is None:
            runtime = _runtime(launch.get("state_history") or [])
        launch_total += float(runtime or 0.0)
        kind = next(
            (fw.get("spec", {}).get("pes_kind", "other") for fw in fws if launch.get("fw_id") == fw["fw_id"]), "other"
        )
        per_kind[kind] = per_kind.get(kind, 0.0) + float(runtime or 0.0)
    inside_total = sum(out.values())
    out = {k: v for k, v in out.items() if v > 0 or k in ("enumerate", "calculate", "store", "train")}
    return {"stages": out, "launch_seconds": launch_total, "task_seconds": inside_total, "per_kind": per_kind}


def relaxed_parents(lpad, store, name: str) -> list[dict]:
    """The campaign's relaxed tilt systems and cubic reference, lowest energy per formula unit first.

    From the relaxation Fireworks' own records (a relaxation found in the store is listed too): Glazer
    symbol, configuration id, space group of the stored parent, energy per formula unit (eV) and above
    the lowest parent (meV/f.u.), and the symmetry-breaking drift its projection removed (A).
    """
    from .status import campaign_fw_ids

    fws = lpad.fireworks.find(
        {"fw_id": {"$in": campaign_fw_ids(lpad, name)}, "spec.pes_kind": {"$in": ["relax_tilt", "relax_reference"]}},
        {"launches": 1},
    )
    lids = sorted({lid for fw in fws for lid in (fw.get("launches") or [])})
    rows: dict = {}
    for launch in lpad.launches.find({"launch_id": {"$in": lids}, "state": "COMPLETED"}, {"action.stored_data": 1}):
        sd = ((launch.get("action") or {}).get("stored_data")) or {}
        cubic = (sd.get("reference") or {}).get("energy_per_cell")
        if cubic is not None and "a0a0a0" not in rows:  # the relaxed cubic primitive cell, its own calculation
            rows["a0a0a0"] = {
                "glazer": "a0a0a0",
                "config_id": None,
                "space_group": "Pm-3m (221)",
                "energy_per_fu": float(cubic),
                "symmetry_removed": None,
            }
        if sd.get("glazer") and sd.get("energy") is not None and sd["glazer"] not in rows:
            n_cells = store.get_configuration(sd["config_id"]).reference.n_cells
            rows[sd["glazer"]] = {
                "glazer": sd["glazer"],
                "config_id": sd["config_id"],
                "space_group": sd.get("space_group"),
                "energy_per_fu": float(sd["energy"]) / n_cells,
                "symmetry_removed": sd.get("symmetry_removed"),
            }
    out = sorted(rows.values(), key=lambda r: r["energy_per_fu"])
    for r in out:
        r["above_lowest_meV_per_fu"] = 1000.0 * (r["energy_per_fu"] - out[0]["energy_per_fu"])
    return out


def _runtime(history: list) -> float | None:
    from datetime import datetime

    start = next((h.get("created_on") for h in history if h.get("state") == "RUNNING"), None)
    end = next((h.get("created_on") for h in history if h.get("state") in ("COMPLETED", "FIZZLED")), None)
    if not (start and end):
        return None
    try:
        parse = datetime.fromisoformat
        return (parse(str(end)) - parse(str(start))).total_seconds()
    except ValueError:
        logger.debug("launch timestamps %r and %r are not ISO times: no run time", start, end)
        return None


def _plot_energies(energies_per_fu, path: Path, title: str) -> None:
    import numpy as np

    plt = pyplot()

    e = np.asarray(energies_per_fu, float)
    e = (e - e.min()) * 1000.0
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(e, bins=min(60, max(10, len(e) // 10)), color="tab:blue", alpha=0.8)
    ax.set_xlabel("energy above the lowest (meV / formula unit)")
    ax.set_ylabel("configurations")
    ax.set_title(title)
    save_figure(fig, path)


def _plot_stages(stages: dict, fireworks_share: float, path: Path, title: str) -> None:
    plt = pyplot()

    labels = list(stages) + ["FireWorks"]
    values = list(stages.values()) + [max(0.0, fireworks_share)]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.barh(labels, values, color="tab:orange")
    ax.set_xlabel("wall time (s)")
    ax.set_title(title)
    save_figure(fig, path)


def write_report(
    name: str,
    lpad=None,
    calculator: str | None = None,
    settings_hash: str | None = None,
    model: dict | None = None,
    store=None,
    simulation: dict | None = None,
    fw_id: int | None = None,
) -> dict:
    """Write the report files of campaign ``name``; returns ``{"path", "plots", "report"}``."""
    from ..db import get_store
    from .status import campaign_dir, campaign_status

    store = store or get_store()
    lpad = lpad or store.get_launchpad()
    out_dir = campaign_dir(name, store.settings.home)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = campaign_status(name, lpad=lpad, store=store, finishing=fw_id)
    timings = stage_timings(lpad, name)
    plots = []

    data = store.training_data(calculator=calculator, settings_hash=settings_hash) if calculator else []
    if data:
        energies = [d["energy"] / d["config"].reference.n_cells for d in data]
        p = out_dir / "energies.png"
        _plot_energies(energies, p, f"{name}: {len(energies)} {calculator} energies")
        plots.append(str(p))
    p = out_dir / "stages.png"
    _plot_stages(timings["stages"], timings["launch_seconds"] - timings["task_seconds"], p, f"{name}: time per stage")
    plots.append(str(p))

    active = store.active_model(calculator=calculator) if calculator else None
    model_dirs = []
    for m in (model or {}, active or {}):
        for key in ("workdir", "path"):
            if m.get(key):
                d = Path(m[key])
                model_dirs.append(d if key == "workdir" else d.parent)
    for d in dict.fromkeys(model_dirs):
        if d.is_dir():
            plots += sorted(str(p) for p in d.rglob("*.png"))
    report = {
        "campaign": name,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "status": status,
        "timings": timings,
        "model": model,
        "active_model": status["active_models"].get(calculator) if calculator else None,
        "simulation": simulation,
        "parents": relaxed_parents(lpad, store, name),
        "active": _active_summary(out_dir),
        "plots": list(dict.fromkeys(plots + ([simulation["plot"]] if simulation and simulation.get("plot") else []))),
    }
    conv = out_dir / "active" / "convergence.png"
    if conv.exists():
        report["plots"].append(str(conv))
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    logger.info("campaign %s: report written to %s", name, path)
    return {"path": str(path), "plots": report["plots"], "report": report}


def _active_summary(out_dir: Path) -> list | None:
    """Per iteration of the active-learning loop: candidates, selected, fraction uncertain, errors, times."""
    from .active import load_history

    history = load_history(out_dir)
    if not history:
        return None
    rows = []
    for key in sorted(history, key=int):
        r = history[key]
        sel = r["selection"]
        rows.append(
            {
                "iteration": r["iteration"],
                "candidates": sel["n_candidates"],
                "in_window": sel["n_in_window"],
                "too_close": sel.get("n_too_close", 0),
                "selected": r["n_to_label"],
                "fraction_uncertain": sel["fraction_uncertain"],
                "per_temperature": {t: v["fraction_above_lower"] for t, v in sel["per_temperature"].items()},
                **(
                    {"per_supercell": {c: v["fraction_above_lower"] for c, v in sel["per_supercell"].items()}}
                    if sel.get("per_supercell")
                    else {}
                ),
                "model_errors": r.get("model_errors"),
                "labelled_errors": r.get("labelled_errors"),
                "explored": r.get("explored", True),
                "blowups": sum(1 for run in r["runs"] if run["blowup"]),
                "wall_s": r["wall_s"],
                "stop": r["stop"],
                "reason": r["reason"],
            }
        )
    return rows
