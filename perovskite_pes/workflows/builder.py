"""Build the FireWorks workflow of a campaign from its validated spec.

Shape (each box one Firework; ``||`` = parallel)::

    relax reference ─┬─ relax a0a0c+ ─ enumerate around a0a0c+ ─┐
                     ├─ relax a-a-a- ─ enumerate around a-a-a- ─┤
                     ├─ ...                                      ├─ train (final) ─ report
                     ├─ enumerate around a0a0a0 ────────────────┤
                     └─ (all relaxations on the paths) ─ enumerate paths ┘

Each enumerate Firework stores its configurations and adds the calculation Fireworks as
*detours* (FWAction), in batches of ``fireworks.per_firework``: the final training waits for all
of them. Each batch ends with a retrain check that may append a featurise+train sub-workflow
(FWAction additions). DFT relaxations and calculations carry the category ``dft`` (compute nodes);
everything else has no category, so any worker runs it (see ``launchers/``).
"""

from __future__ import annotations

import hashlib
import json

from fireworks import Firework, Workflow

from .dupefinder import CampaignDupeFinder, dupe_key
from .spec import CUBIC, CampaignSpec, campaign_parents
from .tasks import (
    CampaignReportTask,
    EnumerateTask,
    RelaxReferenceTask,
    RelaxTiltTask,
    SimulateTask,
    active_firework,
    fw_spec_base,
    train_fireworks,
)


def spec_hash(spec: CampaignSpec) -> str:
    return hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()).hexdigest()


def build_workflow(spec: CampaignSpec) -> Workflow:
    """The campaign's workflow (not yet submitted)."""
    name = spec.name
    calc = {"name": spec.calculator.name, "settings": dict(spec.calculator.settings)}
    cat = spec.category
    reference = {"species": list(spec.reference.species), "lattice_parameter": spec.reference.lattice_parameter}
    supercell = spec.to_dict()["supercell"]
    steps_dict = spec.to_dict()["steps"]
    training = spec.campaign_training_settings()
    policy = spec.to_dict()["retrain"]
    batch = {
        "per_firework": spec.fireworks.per_firework,
        "category": cat,
        "flush_every": spec.fireworks.flush_every,
        "fizzle_on": spec.fireworks.fizzle_on,
    }
    common = {"reference": reference}
    fws: list[Firework] = []

    def firework(tasks, kind, label, parents=None, dkey=None, category=cat, **extra):
        fw_name = f"{name}: {label}"
        spec_d = fw_spec_base(name, kind, category, _pes_name=fw_name, **common, **extra)
        if dkey is not None:
            spec_d["_dupefinder"] = CampaignDupeFinder()
            spec_d["pes_dupe_key"] = dkey
        fw = Firework(tasks, spec=spec_d, name=fw_name, parents=parents)
        fws.append(fw)
        return fw

    relax_ref = None
    if spec.steps.relax_reference.enabled:
        relax = spec.steps.relax_reference.relax
        relax_ref = firework(
            [RelaxReferenceTask(campaign=name, reference=reference, calculator=calc, relax=relax)],
            "relax_reference",
            "relax reference",
            dkey=dupe_key("relax_reference", reference, relax, calc),
        )
    top = [relax_ref] if relax_ref else None

    relax_fw: dict[str, Firework | None] = {CUBIC: relax_ref}
    rt = spec.steps.relax_tilts
    for g in campaign_parents(spec.steps):
        if g == CUBIC:
            continue
        relax_fw[g] = firework(
            [
                RelaxTiltTask(
                    campaign=name,
                    glazer=g,
                    reference=reference,
                    supercell=supercell,
                    calculator=calc,
                    angles_deg=rt.angles_deg,
                    relax=rt.relax,
                )
            ],
            "relax_tilt",
            f"relax {g}",
            parents=top,
            dkey=dupe_key("relax_tilt", g, reference, supercell, rt.angles_deg, rt.relax, calc),
        )

    retrain = policy if (spec.retrain.enabled and spec.training.enabled) else None
    enum_kwargs = dict(
        campaign=name,
        reference=reference,
        supercell=supercell,
        calculator=calc,
        batch=batch,
        seed=spec.seed,
        retrain=retrain,
        training=training,
    )
    sampling = {k: steps_dict[k] for k in ("mode_grid", "strain_grid", "random", "tilt_grid") if k in steps_dict}
    enumerate_fws = []
    for g, parent_fw in relax_fw.items():
        enumerate_fws.append(
            firework(
                [EnumerateTask(parents=[g], sampling=sampling, **enum_kwargs)],
                "enumerate",
                f"enumerate around {g}",
                parents=[parent_fw] if parent_fw else top,
                category=None,
                dkey=dupe_key(
                    "enumerate", g, sampling, spec.seed, reference, supercell, calc, batch, retrain, training
                ),
            )
        )

    def enumerate_over(glazers: list[str], label: str, dkey: str, **task) -> Firework:
        """One enumerate Firework over several parents, after the relaxations of those parents."""
        after = list({id(f): f for f in (relax_fw.get(g) for g in glazers) if f is not None}.values()) or top
        return firework(
            [EnumerateTask(parents=glazers, sampling={}, **task, **enum_kwargs)],
            "enumerate",
            label,
            parents=after,
            category=None,
            dkey=dkey,
        )

    if spec.steps.interpolations:  # one Firework for all paths: few Fireworks keep the embedded store fast
        paths = [{"path": list(ip.path), "n": ip.n} for ip in spec.steps.interpolations]
        visited = list(dict.fromkeys(g for p in paths for g in p["path"]))
        dkey = dupe_key("interpolate", paths, reference, supercell, calc, batch, retrain, training)
        enumerate_fws.append(enumerate_over(visited, "enumerate paths", dkey, paths=paths))

    if spec.steps.thermal_md.enabled:  # one Firework for all runs, after the relaxations of its starts
        tm = steps_dict["thermal_md"]
        dkey = dupe_key("thermal_md", tm, spec.seed, reference, supercell, calc, batch, retrain, training)
        enumerate_fws.append(enumerate_over(list(tm["starts"]), "thermal MD", dkey, thermal_md=tm))

    if spec.training.enabled:
        # the loop explores with a committee: train one even when a plain model of the same data is active
        mode = "force" if spec.active.enabled else ("if_new" if spec.retrain.final else "policy")
        train, report = train_fireworks(
            name, calc, training, policy, mode=mode, trigger="initial" if spec.active.enabled else "final"
        )
        train.parents = list(enumerate_fws)
        final = [train, report]
        if spec.active.enabled:  # the loop appends its iterations, then [simulate ->] report (final)
            active = {**spec.to_dict()["active"], "supercell": supercell}  # explore in the training supercell
            loop = active_firework(
                name,
                1,
                active,
                calc,
                training,
                policy,
                batch,
                spec.seed,
                spec.simulate.scan_kwargs() if spec.simulate.enabled else None,
            )
            loop.parents = [train]
            final = [train, report, loop]
        elif spec.simulate.enabled:  # train -> simulate -> report: the report holds the phase sequence
            sim = Firework(
                [SimulateTask(campaign=name, simulate=spec.simulate.scan_kwargs(), calculator=calc["name"])],
                spec=fw_spec_base(
                    name,
                    "simulate",
                    None,
                    pes_trigger="final",
                    _allow_fizzled_parents=True,
                    _pes_name=f"{name}: simulate",
                ),
                name=f"{name}: simulate",
                parents=[train],
            )
            report.parents = [sim]
            final = [train, sim, report]
    else:  # a data-only campaign: the report waits for every calculation
        report = Firework(
            [CampaignReportTask(campaign=name, calculator=calc["name"])],
            spec=fw_spec_base(
                name, "report", None, pes_trigger="final", _allow_fizzled_parents=True, _pes_name=f"{name}: report"
            ),
            name=f"{name}: report",
            parents=list(enumerate_fws),
        )
        final = [report]
    for fw in final:
        fw.spec.update(common)
    return Workflow(
        fws + final,
        name=f"campaign {name}",
        metadata={"campaign": name, "spec_hash": spec_hash(spec), "spec": spec.to_dict(), "source": spec.source},
    )
