"""Submit, run, inspect and repair campaigns on the LaunchPad of :func:`perovskite_pes.db.get_launchpad`.

    spec = load_spec("workflows/quickstart.yaml")   # validated: a malformed spec never gets here
    submit_campaign(spec)                           # adds the workflow (once)
    run_campaign(spec)                              # submit + run every Firework locally
    campaign_status("quickstart")                   # Fireworks by state, failures, data, model
    rerun_failed("quickstart")                      # lost runs and FIZZLED Fireworks run again
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import PesError
from .spec import CampaignSpec
from ..utils import environment

class CampaignError(PesError):
    """A campaign cannot be submitted, run or repaired as asked."""


def _store():
    from ..db import get_store

    return get_store()


def campaign_dir(name: str, home=None) -> Path:
    from ..settings import Settings

    home = Path(home) if home is not None else Settings.load().home
    return home / "campaigns" / name


def check_calculator(spec: CampaignSpec):
    """Construct the campaign's calculator: unknown or invalid settings are rejected before submission."""
    from .steps import get_calculator_cached

    return get_calculator_cached({"name": spec.calculator.name, "settings": dict(spec.calculator.settings)})


def check_training(spec: CampaignSpec) -> None:
    """Let the models layer reject training settings it cannot use, before anything is submitted."""
    if not spec.training.enabled:
        return
    from ..models.selection import expand_grid, merge_settings
    from .spec import SpecError

    try:
        expand_grid(merge_settings(spec.training_settings())["grid"])
    except PesError as exc:
        raise SpecError(f"campaign spec: training: {exc}") from None


def existing_workflows(lpad, name: str, spec_hash: str | None = None) -> list[dict]:
    q = {"metadata.campaign": name}
    if spec_hash is not None:
        q["metadata.spec_hash"] = spec_hash
    return list(lpad.workflows.find(q, {"nodes": 1, "state": 1, "metadata.spec_hash": 1, "name": 1}))


def submit_campaign(spec: CampaignSpec, lpad=None, force: bool = False) -> dict:
    """Add the campaign's workflow to the LaunchPad, unless the same spec was already submitted.

    ``force`` adds it again anyway: its Fireworks then find their duplicates (DupeFinder) and every
    configuration that already has a calculation with these settings is skipped, so nothing is
    computed twice.
    """
    from ..calculators import check_submit
    from .builder import build_workflow, spec_hash

    check_calculator(spec)
    check_submit(spec.calculator.name, dict(spec.calculator.settings))  # e.g. VASP without vasp_cmd or POTCARs
    check_training(spec)
    lpad = lpad or _store().get_launchpad()
    h = spec_hash(spec)
    found = existing_workflows(lpad, spec.name, h)
    if found and not force:
        return {"campaign": spec.name, "submitted": False, "n_fireworks": 0,
                "reason": f"campaign {spec.name!r} with this spec is already on the LaunchPad "
                          f"(workflow of fw_ids {min(found[0]['nodes'])}..{max(found[0]['nodes'])}, "
                          f"state {found[0].get('state')}); nothing added",
                "fw_ids": sorted(found[0]["nodes"])}
    wf = build_workflow(spec)
    mapping = lpad.add_wf(wf)
    return {"campaign": spec.name, "submitted": True, "n_fireworks": len(wf.fws),
            "reason": "added to the LaunchPad", "fw_ids": sorted(mapping.values())}


# ----------------------------------------------------------------------------------- running
def campaign_fw_ids(lpad, name: str | None) -> list[int]:
    """Ids of the Fireworks in the campaign's workflows (all campaigns when ``name`` is None).

    Membership is by workflow, not by ``spec.campaign``: a Firework that found its duplicate in an
    overlapping campaign brings that campaign's dynamic children into this workflow.
    """
    q = {"metadata.campaign": name} if name else {"metadata.campaign": {"$exists": True}}
    ids: set[int] = set()
    for wf in lpad.workflows.find(q, {"nodes": 1}):
        ids.update(int(i) for i in wf.get("nodes") or [])
    return sorted(ids)


def local_fworker(lpad, name: str | None):
    """A worker that runs every category, restricted to one campaign's Fireworks (all campaigns when None)."""
    from fireworks import FWorker

    return FWorker(name="pes-local", category="", query={"fw_id": {"$in": campaign_fw_ids(lpad, name)}})


class _BelowWarning:
    """Logging filter: drop FireWorks' per-rocket INFO lines while progress bars show the state."""

    @staticmethod
    def filter(record) -> bool:
        return record.levelno >= 30


@contextmanager
def quiet_fireworks(enabled: bool = True):
    import logging

    loggers = [logging.getLogger(n) for n in ("rocket.launcher", "launchpad")] if enabled else []
    for lg in loggers:
        lg.addFilter(_BelowWarning)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(_BelowWarning)


def _counts(lpad, name: str | None) -> dict:
    out: dict = {}
    for d in lpad.fireworks.find({"fw_id": {"$in": campaign_fw_ids(lpad, name)}}, {"state": 1}):
        out[d["state"]] = out.get(d["state"], 0) + 1
    return out


def recover_lost_runs(lpad, name: str | None, expiration_secs: float) -> dict:
    """Mark RUNNING Fireworks whose worker stopped pinging for ``expiration_secs`` as lost and rerun them."""
    query = {"fw_id": {"$in": campaign_fw_ids(lpad, name)}}
    lost_launches, lost_fws, inconsistent = lpad.detect_lostruns(
        expiration_secs=expiration_secs, rerun=True, refresh=True, query=query)
    return {"lost_launches": list(lost_launches), "lost_fireworks": list(lost_fws), "inconsistent": list(inconsistent)}


def run_campaign(spec: CampaignSpec, progress: bool = True, max_fireworks: int | None = None,
                 force_submit: bool = False, stream=None, quiet: bool = True) -> dict:
    """Submit the campaign (once) and run its Fireworks in this process until none is left to run.

    On the embedded store no other process can be running Fireworks (the store is locked), so
    Fireworks left RUNNING by a killed earlier run are recovered and rerun first.
    """
    from fireworks.core.rocket_launcher import rapidfire
    from tqdm.auto import tqdm

    store = _store()
    lpad = store.get_launchpad()
    submitted = submit_campaign(spec, lpad=lpad, force=force_submit)
    recovered = recover_lost_runs(lpad, spec.name, 0) if store.embedded else None
    launch_dir = campaign_dir(spec.name, store.settings.home) / "launches"
    launch_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_launched = 0
    cwd = os.getcwd()
    counts = _counts(lpad, spec.name)
    # enumerations and the retraining/active-learning loop add Fireworks as they run, so the total grows:
    # show what is known so far and the elapsed time, no ETA (it would mislead)
    bar = tqdm(total=sum(counts.values()), desc=f"campaign {spec.name}", unit="fw", disable=not progress,
               file=stream, initial=counts.get("COMPLETED", 0) + counts.get("FIZZLED", 0),
               bar_format="{desc}: {n_fmt}/{total_fmt} Fireworks known so far done [{elapsed}] {postfix}")
    try:
        with environment(PES_PROGRESS=1 if progress else 0), quiet_fireworks(quiet):
            while True:
                # membership is re-read every time: enumerations add batches, and a Firework that
                # found its duplicate (FireWorks checks while looking for work) may add the
                # duplicate's batches to this workflow
                n_ids = len(campaign_fw_ids(lpad, spec.name))
                fworker = local_fworker(lpad, spec.name)
                if not lpad.run_exists(fworker):
                    if len(campaign_fw_ids(lpad, spec.name)) == n_ids:
                        break
                    continue
                if max_fireworks is not None and n_launched >= max_fireworks:
                    break
                nxt = lpad.fireworks.find_one({"state": "READY", **fworker.query}, {"name": 1},
                                              sort=[("spec._priority", -1)])  # FireWorks' own order
                if nxt:
                    bar.set_postfix_str(str(nxt.get("name", "")).split(": ", 1)[-1][:40])
                rapidfire(lpad, fworker, m_dir=str(launch_dir), nlaunches=1, max_loops=1, sleep_time=0.1,
                          strm_lvl="ERROR")
                n_launched += 1
                counts = _counts(lpad, spec.name)
                bar.total = sum(counts.values())
                bar.n = counts.get("COMPLETED", 0) + counts.get("FIZZLED", 0)
                bar.refresh()
    finally:
        os.chdir(cwd)
        bar.close()
        store.flush()
    status = campaign_status(spec.name, lpad=lpad)
    status.update(submitted=submitted, recovered=recovered, wall_time=time.perf_counter() - t0,
                  n_launched=n_launched)
    return status


# ----------------------------------------------------------------------------------- status
def _reason(fw: dict, launches: dict) -> str:
    """The last line of the exception of a Firework's most recent launch."""
    for lid in reversed(fw.get("launches") or []):
        launch = launches.get(lid)
        if not launch:
            continue
        action = launch.get("action") or {}
        exc = (action.get("stored_data") or {}).get("_exception") or {}
        tb = exc.get("_stacktrace")
        if tb:
            lines = [ln for ln in str(tb).strip().splitlines() if ln.strip()]
            return lines[-1].strip() if lines else "unknown error"
        if launch.get("state") == "FIZZLED":
            return "FIZZLED without an exception (lost run marked fizzled, or killed worker)"
    return "no launch recorded"


def campaign_names(lpad) -> list[str]:
    return sorted({d.get("metadata", {}).get("campaign") for d in lpad.workflows.find({"metadata.campaign": {"$exists": True}}, {"metadata.campaign": 1})} - {None})


def campaign_status(name: str | None = None, lpad=None, store=None, finishing: int | None = None) -> dict:
    """Fireworks by state and kind, failures with reasons, data counts and the active model(s).

    ``finishing``: the id of a Firework that is running the call and completes with it (the report
    writing this status): it counts as COMPLETED, so a finished campaign's report says complete.
    """
    store = store or _store()
    lpad = lpad or store.get_launchpad()
    names = [name] if name else campaign_names(lpad)
    if name and name not in campaign_names(lpad):
        raise CampaignError(f"no campaign named {name!r} on the LaunchPad; known: {campaign_names(lpad) or 'none'}")
    ids = sorted({i for n in names for i in campaign_fw_ids(lpad, n)})
    fws = list(lpad.fireworks.find({"fw_id": {"$in": ids}}, {"fw_id": 1, "name": 1, "state": 1, "launches": 1, "spec.pes_kind": 1,
                                       "spec.campaign": 1}))
    by_state: dict = {}
    by_kind: dict = {}
    for fw in fws:
        if finishing is not None and fw["fw_id"] == finishing and fw["state"] == "RUNNING":
            fw["state"] = "COMPLETED"
        by_state[fw["state"]] = by_state.get(fw["state"], 0) + 1
        kind = (fw.get("spec") or {}).get("pes_kind", "other")
        by_kind.setdefault(kind, {})
        by_kind[kind][fw["state"]] = by_kind[kind].get(fw["state"], 0) + 1
    failed = [fw for fw in fws if fw["state"] == "FIZZLED"]
    lids = [lid for fw in failed for lid in (fw.get("launches") or [])]
    launches = {d["launch_id"]: d for d in lpad.launches.find({"launch_id": {"$in": lids}}, {"launch_id": 1, "state": 1, "action": 1})}
    failures = [{"fw_id": fw["fw_id"], "name": fw.get("name"), "reason": _reason(fw, launches)} for fw in failed]

    calculators = {}
    for wf in lpad.workflows.find({"metadata.campaign": {"$in": names}}, {"metadata.spec.calculator": 1}):
        c = ((wf.get("metadata") or {}).get("spec") or {}).get("calculator") or {}
        if c.get("name"):
            calculators[c["name"]] = c
    data = {"configurations": int(store.count_configurations()), "calculations": {}}
    models = {}
    for cname in sorted(calculators):
        data["calculations"][cname] = {
            "completed": int(store.count_calculations(calculator=cname, status="completed")),
            "failed": int(store.count_calculations(calculator=cname, status="failed")),
        }
        m = store.active_model(calculator=cname)
        if m:
            metrics = m.get("metrics") or {}
            models[cname] = {
                "id": m.get("id"), "name": m.get("name"), "path": m.get("path"), "n_train": m.get("n_train"),
                "created": str(m.get("created")),
                "errors": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "rmse" in k.lower()
                           or k.lower().endswith("mae")},
            }
        else:
            models[cname] = None
    total = len(fws)
    done = by_state.get("COMPLETED", 0)
    return {
        "campaigns": names,
        "fireworks": {"total": total, "by_state": by_state, "by_kind": by_kind},
        "complete": total > 0 and done == total,
        "failures": failures,
        "data": data,
        "active_models": models,
        "store": store.settings.describe(),
    }


# ----------------------------------------------------------------------------------- repair
def rerun_failed(name: str | None = None, lost_after: float | None = None, lpad=None) -> dict:
    """Rerun the campaign's FIZZLED Fireworks and recover lost runs.

    Lost runs are RUNNING Fireworks whose worker stopped pinging ``lost_after`` seconds ago (default:
    immediately on the embedded store, where no other process can be running; FireWorks' 4 hours
    on MongoDB). Reruns recompute nothing already stored: batches skip completed calculations.
    """
    from fireworks.fw_config import RUN_EXPIRATION_SECS

    store = _store()
    lpad = lpad or store.get_launchpad()
    if name and name not in campaign_names(lpad):
        raise CampaignError(f"no campaign named {name!r} on the LaunchPad; known: {campaign_names(lpad) or 'none'}")
    if lost_after is None:
        lost_after = 0 if store.embedded else RUN_EXPIRATION_SECS
    lost = recover_lost_runs(lpad, name, lost_after)
    q = {"state": "FIZZLED", "fw_id": {"$in": campaign_fw_ids(lpad, name)}}
    fizzled = [d["fw_id"] for d in lpad.fireworks.find(q, {"fw_id": 1})]
    for fw_id in fizzled:
        lpad.rerun_fw(fw_id)
    store.flush()
    return {"rerun": sorted(set(fizzled) | set(lost["lost_fireworks"])), "lost": lost, "fizzled": fizzled}
