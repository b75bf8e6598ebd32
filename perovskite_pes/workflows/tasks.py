"""Firetasks of a campaign. Each one is short: it reads ids and settings, calls a step of
:mod:`perovskite_pes.workflows.steps` (or :mod:`~perovskite_pes.workflows.retrain`) and returns a
:class:`fireworks.FWAction`. Large data never travels in a Firework spec: configurations and
results go through the store (:func:`perovskite_pes.db.get_store`).

The registered names (``{{perovskite_pes.workflows.tasks.<Class>}}``) are stored in workflows:
never rename these classes or this module.

Data passed between Fireworks (in the spec of the children):

* ``reference``: ``{"species": [...], "lattice_parameter": a}`` -- set by the reference
  relaxation (the spec's starting values when that step is off);
* ``parents``: ``{glazer symbol: configuration id}`` -- set by each tilt relaxation.
"""

from __future__ import annotations

import os
import time

from fireworks import FiretaskBase, Firework, FWAction, Workflow, explicit_serialize

from . import steps
from .dupefinder import CampaignDupeFinder, dupe_key
from .retrain import RetrainPolicy, retrain_decision, train_and_register

#: states of Fireworks that still have to run
PENDING_STATES = ("WAITING", "READY", "RESERVED", "RUNNING", "PAUSED")


def _settings(fw_spec):
    """Where data lives: the worker's ``env: {PES_HOME: ...}`` (FWorker file, passed as ``_fw_env``) wins
    over the process environment, so ``rlaunch``/``qlaunch`` workers find the campaign's store."""
    from ..settings import Settings

    home = ((fw_spec or {}).get("_fw_env") or {}).get("PES_HOME")
    return Settings.load(home=home) if home else Settings.load()


def _store(fw_spec=None):
    from ..db import get_store

    return get_store(_settings(fw_spec))


def _launch_info(task, fw_spec) -> dict:
    return {
        "fw_id": getattr(task, "fw_id", None),
        "campaign": fw_spec.get("campaign"),
        "fw_name": fw_spec.get("_pes_name"),
        "launch_dir": os.getcwd(),
    }


def _reference(task, fw_spec) -> dict:
    return dict(fw_spec.get("reference") or task["reference"])


def fw_spec_base(campaign: str, kind: str, category: str | None, **extra) -> dict:
    """Common Firework spec entries: campaign name, step kind, category, launchpad access."""
    spec = {"campaign": campaign, "pes_kind": kind, "_add_launchpad_and_fw_id": True}
    if category:
        spec["_category"] = category
    spec.update(extra)
    return spec


# ----------------------------------------------------------------------------------- relaxations
@explicit_serialize
class RelaxReferenceTask(FiretaskBase):
    """Relax the cubic primitive cell of the reference; children get the relaxed lattice parameter.

    Required params:
        campaign (str): campaign name.
        reference (dict): ``species`` (A, B, X) and starting ``lattice_parameter`` (Angstrom).
        calculator (dict): ``name`` and ``settings`` for :func:`perovskite_pes.calculators.get_calculator`.
    Optional params:
        relax (str): "cell" (default) or "positions".
    """

    required_params = ["campaign", "reference", "calculator"]
    optional_params = ["relax"]

    def run_task(self, fw_spec):
        t0 = time.perf_counter()
        ref = steps.relax_reference(
            self["reference"],
            self["calculator"],
            self.get("relax", "cell"),
            workdir=os.path.join(os.getcwd(), "relax_reference"),
        )
        reference = {"species": ref["species"], "lattice_parameter": ref["lattice_parameter"]}
        return FWAction(
            stored_data={"reference": ref, "timings": {"relax": time.perf_counter() - t0}},
            mod_spec=[{"_set": {"reference": reference}}],
        )


@explicit_serialize
class RelaxTiltTask(FiretaskBase):
    """Relax one Glazer tilt system in the campaign supercell and store it as a parent configuration.

    Required params:
        campaign (str): campaign name.
        glazer (str): Glazer symbol, e.g. "a-a-c+".
        reference (dict): starting reference (overridden by ``fw_spec["reference"]`` when the reference
            was relaxed first).
        supercell: supercell matrix (int, 3 ints or 3x3).
        calculator (dict): ``name`` and ``settings``.
    Optional params:
        angles_deg: starting tilt angles (None, a number or {a, b, c}).
        relax (str): "cell" (default) or "positions".
    """

    required_params = ["campaign", "glazer", "reference", "supercell", "calculator"]
    optional_params = ["angles_deg", "relax"]

    def run_task(self, fw_spec):
        t0 = time.perf_counter()
        out = steps.relax_tilt(
            _store(fw_spec),
            _reference(self, fw_spec),
            self["supercell"],
            self["glazer"],
            self["calculator"],
            relax=self.get("relax", "cell"),
            angles_deg=self.get("angles_deg"),
            campaign=self["campaign"],
            workdir=os.path.join(os.getcwd(), f"relax_{self['glazer']}"),
        )
        out["timings"] = {"relax": time.perf_counter() - t0}
        return FWAction(
            stored_data=out,
            mod_spec=[
                {"_set": {f"parents->{self['glazer']}": out["config_id"], "reference": _reference(self, fw_spec)}}
            ],
        )


# ----------------------------------------------------------------------------------- enumeration
def batch_fireworks(
    campaign: str,
    ids: list[str],
    calculator: dict,
    batch: dict,
    label: str,
    retrain: dict | None,
    training: dict | None,
    settings_hash: str | None,
) -> list[Firework]:
    """Calculation Fireworks of ``batch['per_firework']`` configurations each (+ a retrain check)."""
    fws = []
    chunks = steps.chunk(sorted(ids), int(batch.get("per_firework", 200)))
    category = batch.get("category")
    for i, part in enumerate(chunks):
        tasks = [
            CalculateBatchTask(
                campaign=campaign,
                config_ids=part,
                calculator=calculator,
                flush_every=int(batch.get("flush_every", 0)),
                fizzle_on=batch.get("fizzle_on", "any"),
            )
        ]
        if retrain and retrain.get("enabled", True) and training is not None:
            tasks.append(RetrainCheckTask(campaign=campaign, calculator=calculator, policy=retrain, training=training))
        name = f"{campaign}: calculate {label} [{i + 1}/{len(chunks)}]"
        spec = fw_spec_base(
            campaign,
            "calculate",
            category,
            _pes_name=name,
            _dupefinder=CampaignDupeFinder(),
            pes_dupe_key=dupe_key("calculate", part, calculator, settings_hash, batch, retrain, training),
        )
        fws.append(Firework(tasks, spec=spec, name=name))
    return fws


@explicit_serialize
class EnumerateTask(FiretaskBase):
    """Enumerate configurations around a relaxed parent, or along interpolation paths between relaxed
    parents, store them and add calculation Fireworks in batches (as detours, so that training waits
    for all of them).

    Required params:
        campaign (str): campaign name.
        parents (list[str]): the Glazer symbol to enumerate around; with ``paths``, every parent the
            paths visit.
        reference (dict): starting reference (``fw_spec["reference"]`` wins).
        supercell: supercell matrix.
        calculator (dict): ``name`` and ``settings``.
        sampling (dict): the spec's ``mode_grid``, ``strain_grid``, ``random`` and ``tilt_grid`` sections.
        batch (dict): ``per_firework``, ``category``, ``flush_every``, ``fizzle_on``.
    Optional params:
        seed (int): random seed (default 0).
        paths (list[dict]): interpolation paths ``{"path": [glazer, ...], "n": points per leg}``; when
            given, the configurations along them are enumerated instead.
        thermal_md (dict): the spec's ``thermal_md`` section; when given, frames of MD driven by the
            calculator from the relaxed ``parents`` are enumerated instead.
        retrain (dict): retrain policy (a check runs after each batch when given and enabled).
        training (dict): training settings for retraining.
    """

    required_params = ["campaign", "parents", "reference", "supercell", "calculator", "sampling", "batch"]
    optional_params = ["seed", "paths", "thermal_md", "retrain", "training"]

    def run_task(self, fw_spec):
        t0 = time.perf_counter()
        store = _store(fw_spec)
        ref = _reference(self, fw_spec)
        relaxed = fw_spec.get("parents") or {}
        parents = {g: steps.parent_configuration(store, ref, self["supercell"], g, relaxed) for g in self["parents"]}
        if self.get("thermal_md"):
            configs = steps.thermal_md_samples(
                parents, self["calculator"], self["thermal_md"], int(self.get("seed", 0)), steps.progress_enabled()
            )
            label = "thermal MD"
        elif self.get("paths"):
            configs = []
            for p in self["paths"]:
                configs += steps.interpolate_path([parents[g] for g in p["path"]], list(p["path"]), int(p["n"]))
            label = "paths"
        else:
            (g,) = self["parents"]
            configs = steps.enumerate_around(parents[g], g, self["sampling"], int(self.get("seed", 0)))
            label = f"around {g}"
        t_enum = time.perf_counter() - t0
        t1 = time.perf_counter()
        h = steps.get_calculator_cached(self["calculator"]).settings_hash
        saved = steps.store_configurations(store, configs, self["campaign"], h)
        t_store = time.perf_counter() - t1
        fws = batch_fireworks(
            self["campaign"],
            saved["todo"],
            self["calculator"],
            self["batch"],
            label,
            self.get("retrain"),
            self.get("training"),
            h,
        )
        return FWAction(
            stored_data={
                "n_enumerated": len(configs),
                "new": saved["new"],
                "existing": saved["existing"],
                "n_to_calculate": len(saved["todo"]),
                "n_fireworks": len(fws),
                "timings": {"enumerate": t_enum, "store": t_store},
            },
            detours=fws,
        )


# ----------------------------------------------------------------------------------- calculation
@explicit_serialize
class CalculateBatchTask(FiretaskBase):
    """Calculate a batch of stored configurations; skip those already calculated with the same settings.

    Results (failures included, with their reasons) are saved through the store, which is flushed
    after the batch. When calculations failed the Firework FIZZLES (after everything else in the
    batch was calculated and stored) with the failed ids and reasons in its message.

    Required params:
        campaign (str): campaign name.
        config_ids (list[str]): configuration ids in the store.
        calculator (dict): ``name`` and ``settings``.
    Optional params:
        flush_every (int): also flush every this many calculations (0: only at the end).
        fizzle_on (str): "any" (default: fizzle if any calculation failed) or "all".
    """

    required_params = ["campaign", "config_ids", "calculator"]
    optional_params = ["flush_every", "fizzle_on"]

    def run_task(self, fw_spec):
        calc = self["calculator"]
        workdir = os.getcwd() if calc["name"] in ("vasp", "cp2k") else None
        rep = steps.calculate_batch(
            _store(fw_spec),
            list(self["config_ids"]),
            calc,
            workdir=workdir,
            flush_every=int(self.get("flush_every", 0)),
            launch=_launch_info(self, fw_spec),
        )
        n_failed = len(rep.failed)
        if n_failed and (self.get("fizzle_on", "any") == "any" or n_failed == rep.n - rep.skipped):
            shown = "; ".join(f"{cid}: {why}" for cid, why in list(rep.failed.items())[:5])
            more = f" (and {n_failed - 5} more)" if n_failed > 5 else ""
            raise steps.BatchFailures(
                f"{n_failed} of {rep.n} calculations failed and are stored as failed: {shown}{more}"
            )
        return FWAction(
            stored_data={
                "batch": rep.to_dict(),
                "timings": {"calculate": rep.seconds_calculate, "store": rep.seconds_store},
            },
            update_spec={"settings_hash": rep.settings_hash},
        )


# ----------------------------------------------------------------------------------- (re)training
def train_fireworks(
    campaign: str,
    calculator: dict,
    training: dict,
    policy: dict,
    mode: str,
    trigger: str,
    category: str | None = None,
    dupe: str | None = None,
) -> list[Firework]:
    """A featurise+train Firework followed by a report Firework.

    ``dupe``: a key that makes an identical (re-submitted) training find its duplicate instead of running.
    """
    name = f"{campaign}: train ({trigger})"
    # a retraining appended mid-campaign runs before the remaining batches (priority), so that the
    # model it trains reflects the data that triggered it
    priority = {"_priority": 10} if trigger == "retrain" else {}
    train = Firework(
        [
            TrainModelTask(
                campaign=campaign, calculator=calculator, training=training, policy=policy, mode=mode, trigger=trigger
            )
        ],
        spec=fw_spec_base(
            campaign, "train", category, pes_trigger=trigger, _allow_fizzled_parents=True, _pes_name=name, **priority
        ),
        name=name,
    )
    if dupe is not None:
        train.spec.update(_dupefinder=CampaignDupeFinder(), pes_dupe_key=dupe_key("train", dupe))
    rname = f"{campaign}: report ({trigger})"
    report = Firework(
        [CampaignReportTask(campaign=campaign, calculator=calculator["name"])],
        spec=fw_spec_base(
            campaign, "report", category, pes_trigger=trigger, _pes_name=rname, _allow_fizzled_parents=True, **priority
        ),
        name=rname,
        parents=[train],
    )
    if dupe is not None:
        report.spec.update(_dupefinder=CampaignDupeFinder(), pes_dupe_key=dupe_key("report", dupe))
    return [train, report]


@explicit_serialize
class RetrainCheckTask(FiretaskBase):
    """After a batch: append a featurise+train sub-workflow when the new data passes the retrain policy.

    Does nothing when a policy-triggered training of this campaign is still pending.

    Required params:
        campaign (str): campaign name.
        calculator (dict): ``name`` and ``settings`` (the data to train on).
        policy (dict): retrain policy (see :class:`~perovskite_pes.workflows.retrain.RetrainPolicy`).
        training (dict): training settings.
    """

    required_params = ["campaign", "calculator", "policy", "training"]
    optional_params = []

    def run_task(self, fw_spec):
        policy = RetrainPolicy.from_dict(self["policy"])
        h = fw_spec.get("settings_hash") or steps.get_calculator_cached(self["calculator"]).settings_hash
        decision = retrain_decision(_store(fw_spec), self["calculator"]["name"], h, policy, mode="policy")
        stored = {"retrain_check": decision.to_dict()}
        if not decision.retrain:
            return FWAction(stored_data=stored)
        lpad = getattr(self, "launchpad", None)
        if lpad is not None:
            pending = lpad.fireworks.count_documents(
                {
                    "spec.campaign": self["campaign"],
                    "spec.pes_kind": "train",
                    "spec.pes_trigger": "retrain",
                    "state": {"$in": list(PENDING_STATES)},
                }
            )
            if pending:
                stored["retrain_check"]["reason"] += "; a retraining is already pending"
                return FWAction(stored_data=stored)
        # keyed on the data that triggered it: a copy re-added by a re-submitted campaign does not run again
        fws = train_fireworks(
            self["campaign"],
            self["calculator"],
            self["training"],
            self["policy"],
            mode="policy",
            trigger="retrain",
            dupe=[self["campaign"], decision.settings_hash, decision.n_total, self["training"]],
        )
        stored["retrain_check"]["appended"] = True
        return FWAction(stored_data=stored, additions=[Workflow(fws)])


@explicit_serialize
class TrainModelTask(FiretaskBase):
    """Featurise and train on all completed calculations of the campaign's calculator; register the model.

    The new model is activated only if its CV RMSE is within the policy's tolerance of the active one.
    With no new data since the active model it does nothing (and says so in its stored data).

    Required params:
        campaign (str): campaign name.
        calculator (dict): ``name`` and ``settings``.
        training (dict): settings for :func:`perovskite_pes.models.train_and_select`.
        policy (dict): retrain policy (thresholds and CV tolerance).
    Optional params:
        mode (str): "if_new" (default: train when any new data arrived), "policy" or "force".
        trigger (str): "final" or "retrain" (for the record).
    """

    required_params = ["campaign", "calculator", "training", "policy"]
    optional_params = ["mode", "trigger"]

    def run_task(self, fw_spec):
        store = _store(fw_spec)
        policy = RetrainPolicy.from_dict(self["policy"])
        name = self["calculator"]["name"]
        h = fw_spec.get("settings_hash") or steps.get_calculator_cached(self["calculator"]).settings_hash
        decision = retrain_decision(store, name, h, policy, mode=self.get("mode", "if_new"))
        if not decision.retrain:
            return FWAction(
                stored_data={"decision": decision.to_dict(), "trained": False},
                update_spec={"model": None, "settings_hash": h},
            )
        timings: dict = {}
        home = _settings(fw_spec).home
        stamp = time.strftime("%Y%m%d-%H%M%S")
        workdir = (
            home
            / "campaigns"
            / self["campaign"]
            / "models"
            / f"{self['campaign']}-{stamp}-fw{getattr(self, 'fw_id', 0)}"
        )
        summary = train_and_register(
            store,
            name,
            h,
            self["training"],
            policy,
            name=f"{self['campaign']}-{name}",
            workdir=workdir,
            provenance={
                "campaign": self["campaign"],
                "trigger": self.get("trigger", "final"),
                "fw_id": getattr(self, "fw_id", None),
            },
            timings=timings,
        )
        return FWAction(
            stored_data={"decision": decision.to_dict(), "trained": True, "model": summary, "timings": timings},
            update_spec={
                "model": {k: summary[k] for k in ("model_id", "path", "workdir", "activated")},
                "settings_hash": h,
            },
        )


@explicit_serialize
class SimulateTask(FiretaskBase):
    """Heat and cool the campaign's model through a temperature range; locate its tilt transitions.

    Runs the model the training Firework passed on (``model`` in the spec) or else the active
    model of the calculator. Results and the plot go to ``$PES_HOME/campaigns/<campaign>/simulation/``;
    a summary (transitions, phase per temperature) goes to the report. A run that leaves the
    model's domain (blow-up) is recorded in the summary, not fizzled: it says where the model fails.

    Required params:
        campaign (str): campaign name.
        simulate (dict): keyword arguments of ``perovskite_pes.simulation.transitions.TransitionScan``.
    Optional params:
        calculator (str): calculator whose active model to use when no model was passed on.
    """

    required_params = ["campaign", "simulate"]
    optional_params = ["calculator"]

    def run_task(self, fw_spec):
        from .status import campaign_dir
        from .steps import simulate_model

        store = _store(fw_spec)
        model = (fw_spec.get("model") or {}).get("path")
        if model is None and self.get("calculator"):
            active = store.active_model(calculator=self["calculator"])
            model = active["path"] if active else None
        workdir = campaign_dir(self["campaign"], _settings(fw_spec).home) / "simulation"
        summary = simulate_model(model, dict(self["simulate"]), workdir)
        # the report is this Firework's child: pass on what the training handed down as well
        passed = {k: fw_spec.get(k) for k in ("model", "settings_hash")}
        return FWAction(stored_data={"simulation": summary}, update_spec={"simulation": summary, **passed})


@explicit_serialize
class ActiveLearningTask(FiretaskBase):
    """One iteration of active learning at temperature; appends the next one until the loop stops.

    Explores with the committee the previous training passed on (``model`` in the spec), selects the
    frames in the trust window, stores them and appends: their calculation Fireworks -> a training of
    a committee on all data -> the next iteration. When the loop stops (converged, budget or
    iterations spent, nothing new) it appends the final steps instead (simulate, if configured, and
    the report). Every iteration's numbers go to the campaign's ``active/history.json``.

    Required params:
        campaign (str): campaign name.
        iteration (int): 1, 2, ...
        active (dict): the spec's ``active`` section.
        calculator (dict): ``name`` and ``settings``.
        training (dict): training settings (a ``committee`` entry makes committees).
        policy (dict): retrain policy (CV tolerance of the activation).
        batch (dict): calculation batching (``per_firework``, ``category``, ...).
    Optional params:
        seed (int): random seed (default 0).
        simulate (dict): TransitionScan settings of the final simulate step.
    """

    required_params = ["campaign", "iteration", "active", "calculator", "training", "policy", "batch"]
    optional_params = ["seed", "simulate"]

    def run_task(self, fw_spec):
        from .active import active_iteration
        from .status import campaign_dir

        store = _store(fw_spec)
        calc = self["calculator"]
        passed = fw_spec.get("model") or {}
        model_path = passed.get("path")
        record_of = store.active_model(calculator=calc["name"])
        if model_path is None and record_of:
            model_path = record_of["path"]
        if model_path is None:
            raise ValueError(f"campaign {self['campaign']}: no trained model to explore with")
        errors = _model_errors(store, passed.get("model_id") or (record_of or {}).get("id"))
        i = int(self["iteration"])
        cdir = campaign_dir(self["campaign"], _settings(fw_spec).home)
        rec = active_iteration(
            store,
            model_path,
            dict(self["active"]),
            i,
            calc,
            self["campaign"],
            cdir,
            seed=int(self.get("seed", 0)),
            model_errors=errors,
            training_window=self["training"].get("max_energy_mev_per_fu"),
        )
        summary = {k: rec[k] for k in ("iteration", "n_to_label", "stop", "reason")}
        summary["fraction_uncertain"] = rec["selection"]["fraction_uncertain"]
        if rec["stop"]:
            return FWAction(
                stored_data={"active": summary},
                additions=[Workflow(final_fireworks(self["campaign"], calc, self.get("simulate")))],
            )
        h = steps.get_calculator_cached(calc).settings_hash
        label = batch_fireworks(self["campaign"], rec["todo"], calc, self["batch"], f"active {i}", None, None, h)
        train, report = train_fireworks(
            self["campaign"],
            calc,
            self["training"],
            self["policy"],
            mode="force",
            trigger=f"active-{i}",
            dupe=[self["campaign"], "active", i, rec["todo"]],
        )
        nxt = active_firework(
            self["campaign"],
            i + 1,
            dict(self["active"]),
            calc,
            self["training"],
            self["policy"],
            self["batch"],
            int(self.get("seed", 0)),
            self.get("simulate"),
        )
        links = {fw.fw_id: [train.fw_id] for fw in label}
        links[train.fw_id] = [report.fw_id, nxt.fw_id]
        return FWAction(
            stored_data={"active": summary}, additions=[Workflow(label + [train, report, nxt], links_dict=links)]
        )


def _model_errors(store, model_id) -> dict:
    if not model_id:
        return {}
    for m in store.list_models():
        if m["id"] == model_id:
            metrics = m.get("metrics") or {}
            errors = {k: metrics.get(k) for k in ("cv_rmse", "test_rmse", "larger_test_rmse")}
            return errors | {"n_train": m.get("n_train")}
    return {}


def active_firework(
    campaign: str,
    iteration: int,
    active: dict,
    calculator: dict,
    training: dict,
    policy: dict,
    batch: dict,
    seed: int = 0,
    simulate: dict | None = None,
) -> Firework:
    """The Firework of one active-learning iteration (no category: it runs MD with the model anywhere)."""
    name = f"{campaign}: active learning {iteration}"
    task = ActiveLearningTask(
        campaign=campaign,
        iteration=iteration,
        active=active,
        calculator=calculator,
        training=training,
        policy=policy,
        batch=batch,
        seed=seed,
        **({"simulate": simulate} if simulate else {}),
    )
    return Firework(
        [task],
        spec=fw_spec_base(
            campaign, "active", None, pes_iteration=iteration, _pes_name=name, _allow_fizzled_parents=True
        ),
        name=name,
    )


def final_fireworks(campaign: str, calculator: dict, simulate: dict | None) -> list[Firework]:
    """[simulate ->] report: what ends a campaign once its model is final."""
    report = Firework(
        [CampaignReportTask(campaign=campaign, calculator=calculator["name"])],
        spec=fw_spec_base(
            campaign,
            "report",
            None,
            pes_trigger="final",
            _allow_fizzled_parents=True,
            _pes_name=f"{campaign}: report (final)",
        ),
        name=f"{campaign}: report (final)",
    )
    if not simulate:
        return [report]
    sim = Firework(
        [SimulateTask(campaign=campaign, simulate=simulate, calculator=calculator["name"])],
        spec=fw_spec_base(
            campaign,
            "simulate",
            None,
            pes_trigger="final",
            _allow_fizzled_parents=True,
            _pes_name=f"{campaign}: simulate",
        ),
        name=f"{campaign}: simulate",
    )
    report.parents = [sim]
    return [sim, report]


@explicit_serialize
class CampaignReportTask(FiretaskBase):
    """Write the campaign report (JSON + plots) under ``$PES_HOME/campaigns/<campaign>/``.

    Required params:
        campaign (str): campaign name.
    Optional params:
        calculator (str): calculator name whose data and model are reported.
    """

    required_params = ["campaign"]
    optional_params = ["calculator"]

    def run_task(self, fw_spec):
        from .report import write_report

        lpad = getattr(self, "launchpad", None)
        out = write_report(
            self["campaign"],
            lpad=lpad,
            store=_store(fw_spec),
            calculator=self.get("calculator"),
            settings_hash=fw_spec.get("settings_hash"),
            model=fw_spec.get("model"),
            simulation=fw_spec.get("simulation"),
            fw_id=getattr(self, "fw_id", None),
        )
        return FWAction(stored_data={"report": out["path"], "plots": out["plots"]})
