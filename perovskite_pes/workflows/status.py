"""Where a campaign's files live and what state it is in: read-only views of the LaunchPad and the store.

The modules that build and run campaigns (:mod:`.tasks`, :mod:`.report`, :mod:`.builder`,
:mod:`.campaign`) import this one, never the other way round.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PesError


class CampaignError(PesError):
    """A campaign cannot be submitted, run or repaired as asked."""


def _store():
    from ..db import get_store

    return get_store()


def campaign_dir(name: str, home=None) -> Path:
    from ..settings import Settings

    home = Path(home) if home is not None else Settings.load().home
    return home / "campaigns" / name


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


def _counts(lpad, name: str | None) -> dict:
    out: dict = {}
    for d in lpad.fireworks.find({"fw_id": {"$in": campaign_fw_ids(lpad, name)}}, {"state": 1}):
        out[d["state"]] = out.get(d["state"], 0) + 1
    return out


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
    docs = lpad.workflows.find({"metadata.campaign": {"$exists": True}}, {"metadata.campaign": 1})
    return sorted({d.get("metadata", {}).get("campaign") for d in docs} - {None})


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
    fws = list(
        lpad.fireworks.find(
            {"fw_id": {"$in": ids}},
            {"fw_id": 1, "name": 1, "state": 1, "launches": 1, "spec.pes_kind": 1, "spec.campaign": 1},
        )
    )
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
    launches = {
        d["launch_id"]: d
        for d in lpad.launches.find({"launch_id": {"$in": lids}}, {"launch_id": 1, "state": 1, "action": 1})
    }
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
                # n_train: the calculations the model was given; n_fit of them fitted it, n_test tested it
                "id": m.get("id"),
                "name": m.get("name"),
                "path": m.get("path"),
                "n_train": m.get("n_train"),
                "n_fit": metrics.get("n_train"),
                "n_test": metrics.get("n_test"),
                "n_excluded": metrics.get("n_excluded"),
                "n_larger": metrics.get("n_larger"),
                "n_larger_test": metrics.get("n_larger_test"),
                "created": str(m.get("created")),
                "errors": {
                    k: v
                    for k, v in metrics.items()
                    if isinstance(v, (int, float)) and "rmse" in k.lower() or k.lower().endswith("mae")
                },
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
