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

from ..errors import PesError
from ..utils import environment
from .spec import CampaignSpec
from .status import CampaignError, _counts, _store, campaign_dir, campaign_fw_ids, campaign_names, campaign_status

__all__ = [
    "CampaignError",
    "campaign_dir",
    "campaign_fw_ids",
    "campaign_names",
    "campaign_status",
    "check_calculator",
    "check_training",
    "local_fworker",
    "rerun_failed",
    "run_campaign",
    "submit_campaign",
]


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
        return {
            "campaign": spec.name,
            "submitted": False,
            "n_fireworks": 0,
            "reason": f"campaign {spec.name!r} with this spec is already on the LaunchPad "
            f"(workflow of fw_ids {min(found[0]['nodes'])}..{max(found[0]['nodes'])}, "
            f"state {found[0].get('state')}); nothing added",
            "fw_ids": sorted(found[0]["nodes"]),
        }
    wf = build_workflow(spec)
    mapping = lpad.add_wf(wf)
    return {
        "campaign": spec.name,
        "submitted": True,
        "n_fireworks": len(wf.fws),
        "reason": "added to the LaunchPad",
        "fw_ids": sorted(mapping.values()),
    }


# ----------------------------------------------------------------------------------- running
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


def recover_lost_runs(lpad, name: str | None, expiration_secs: float) -> dict:
    """Mark RUNNING Fireworks whose worker stopped pinging for ``expiration_secs`` as lost and rerun them."""
    query = {"fw_id": {"$in": campaign_fw_ids(lpad, name)}}
    lost_launches, lost_fws, inconsistent = lpad.detect_lostruns(
        expiration_secs=expiration_secs, rerun=True, refresh=True, query=query
    )
    return {"lost_launches": list(lost_launches), "lost_fireworks": list(lost_fws), "inconsistent": list(inconsistent)}


def run_campaign(
    spec: CampaignSpec,
    progress: bool = True,
    max_fireworks: int | None = None,
    force_submit: bool = False,
    stream=None,
    quiet: bool = True,
) -> dict:
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
    bar = tqdm(
        total=sum(counts.values()),
        desc=f"campaign {spec.name}",
        unit="fw",
        disable=not progress,
        file=stream,
        initial=counts.get("COMPLETED", 0) + counts.get("FIZZLED", 0),
        bar_format="{desc}: {n_fmt}/{total_fmt} Fireworks known so far done [{elapsed}] {postfix}",
    )
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
                nxt = lpad.fireworks.find_one(
                    {"state": "READY", **fworker.query}, {"name": 1}, sort=[("spec._priority", -1)]
                )  # FireWorks' own order
                if nxt:
                    bar.set_postfix_str(str(nxt.get("name", "")).split(": ", 1)[-1][:40])
                rapidfire(
                    lpad, fworker, m_dir=str(launch_dir), nlaunches=1, max_loops=1, sleep_time=0.1, strm_lvl="ERROR"
                )
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
    status.update(submitted=submitted, recovered=recovered, wall_time=time.perf_counter() - t0, n_launched=n_launched)
    return status


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
