"""FireWorks campaigns on the embedded (mongomock) store, with a fast stand-in calculator.

The stand-in computes a smooth energy of the atomic positions in microseconds, so these tests
exercise the orchestration itself: the workflow shape, dynamic batches, duplicates, the retrain
check, failures, reruns and lost runs. ``test_campaign_e2e.py`` runs the real default surrogate and
the real model selection end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from perovskite_pes.calculators import CalcResult
from perovskite_pes.calculators.base import CalculatorError
from perovskite_pes.workflows import campaign as C
from perovskite_pes.workflows import steps
from perovskite_pes.workflows.builder import build_workflow
from perovskite_pes.workflows.spec import validate_spec

FIXTURES = Path(__file__).parent / "fixtures" / "vasp"


class StandIn:
    """A calculator with the project's interface: energy sum(sin^2 x) over cartesian coordinates."""

    name = "sevennet"
    version = "stand-in 1"
    settings = {"model": "stand-in"}
    settings_hash = "stand-in-hash"

    def __init__(self, fail=None, raise_error=None):
        self.calls = []
        self.fail = fail  # callable(structure) -> reason or None
        self.raise_error = raise_error

    def calculate(self, structure, relax=None, workdir=None):
        if self.raise_error:
            raise CalculatorError(self.raise_error)
        self.calls.append(structure.lattice.matrix.copy())
        reason = self.fail(structure) if self.fail else None
        if reason:
            return CalcResult(
                None,
                None,
                None,
                self.name,
                self.version,
                self.settings,
                self.settings_hash,
                0.0,
                status="failed",
                error=reason,
            )
        x = structure.cart_coords
        return CalcResult(
            float(np.sum(np.sin(x) ** 2)),
            -np.sin(2 * x),
            np.zeros(6),
            self.name,
            self.version,
            self.settings,
            self.settings_hash,
            0.0,
            final_structure=structure.copy() if relax else None,
        )


class StandInModel:
    def save(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "model.json").write_text("{}")


TRAINING_CALLS: list[dict] = []


def stand_in_training(configs, energies, forces=None, settings=None, workdir=None, stresses=None):
    """Model selection stand-in: the CV error shrinks as data grows (so retrained models are accepted)."""
    n = len(configs)
    TRAINING_CALLS.append({"n": n, "settings": settings, "stresses": stresses})
    report = {
        "cv_table": [{"val_rmse_mean": 10.0 / np.sqrt(n), "val_rmse_std": 0.1}],
        "test_rmse": 11.0 / np.sqrt(n),
        "train_rmse": 9.0 / np.sqrt(n),
        "best_label": "stand-in",
        "n_train": n,
        "n_test": 0,
    }
    if workdir is not None:
        StandInModel().save(Path(workdir) / "model")
    return StandInModel(), report


@pytest.fixture
def calc(monkeypatch, pes_home):
    c = StandIn()
    monkeypatch.setattr(steps, "get_calculator_cached", lambda calculator: c)
    import perovskite_pes.models as models

    monkeypatch.setattr(models, "train_and_select", stand_in_training)  # fails loudly if the name goes away
    return c


def spec_dict(name="tiny", **over):
    d = {
        "name": name,
        "calculator": {"name": "sevennet"},
        "supercell": 2,
        "fireworks": {"per_firework": 8},
        "steps": {
            "relax_tilts": {"systems": ["a0a0c+", "a-a-a-"]},
            "random": {"count": 6, "displacement_radius": 0.3, "strain_radius": 0.01},
            "strain_grid": {"amplitudes": [0.01], "subspaces": ["A1g", "Eg"]},
            "interpolations": [{"path": ["a0a0a0", "a0a0c+"], "n": 4}],
        },
        "retrain": {"min_new_count": 100000},
    }
    for k, v in over.items():
        d[k] = v
    return d


def fireworks(lpad, **query):
    return list(lpad.fireworks.find(query, {"fw_id": 1, "name": 1, "state": 1, "spec": 1, "launches": 1}))


def calc_docs(store):
    return [dict(c, _id=c["id"], configuration=c["config_id"]) for c in store.list_calculations()]


# ---------------------------------------------------------------------------------------- shape
def test_workflow_shape_links_categories_and_duplicate_keys():
    spec = validate_spec(spec_dict())
    wf = build_workflow(spec)
    kinds = {}
    for fw in wf.fws:
        kinds.setdefault(fw.spec["pes_kind"], []).append(fw)
    assert {k: len(v) for k, v in kinds.items()} == {
        "relax_reference": 1,
        "relax_tilt": 2,
        "enumerate": 4,
        "train": 1,
        "report": 1,
    }  # 3 parents + paths
    ids = {fw.name.split(": ", 1)[1]: fw.fw_id for fw in wf.fws}
    links = wf.links
    assert set(links[ids["relax reference"]]) == {
        ids["relax a0a0c+"],
        ids["relax a-a-a-"],
        ids["enumerate around a0a0a0"],
        ids["enumerate paths"],
    }
    assert set(links[ids["relax a0a0c+"]]) == {ids["enumerate around a0a0c+"], ids["enumerate paths"]}
    assert ids["enumerate paths"] not in links[ids["relax a-a-a-"]]  # not on a path
    train = ids["train (final)"]
    assert all(links[fw.fw_id] == [train] for fw in kinds["enumerate"])
    assert links[train] == [ids["report (final)"]]
    assert kinds["train"][0].spec["_allow_fizzled_parents"]
    # every relaxation and enumeration can find its duplicate; surrogate Fireworks have no category
    for fw in kinds["relax_reference"] + kinds["relax_tilt"] + kinds["enumerate"]:
        assert fw.spec["pes_dupe_key"] and "_dupefinder" in fw.spec
    assert all("_category" not in fw.spec for fw in wf.fws)
    assert len({fw.spec["pes_dupe_key"] for fw in kinds["enumerate"]}) == 4

    dft = validate_spec(spec_dict(calculator={"name": "vasp", "settings": {"potcar_spec": True}}))
    wf = build_workflow(dft)
    for fw in wf.fws:
        expect = "dft" if fw.spec["pes_kind"] in ("relax_reference", "relax_tilt") else None
        assert fw.spec.get("_category") == expect, fw.name


# ---------------------------------------------------------------------------------------- runs
def test_stress_weight_hands_the_stored_stresses_to_training(calc, store):
    TRAINING_CALLS.clear()
    spec = validate_spec(spec_dict(training={"stress_weight": 0.5}))
    out = C.run_campaign(spec, progress=False)
    assert out["failures"] == [] and out["complete"], out["fireworks"]
    (call,) = TRAINING_CALLS
    assert call["settings"]["training"]["stress_weight"] == 0.5
    assert len(call["stresses"]) == call["n"] == store.count_configurations()
    assert all(np.array_equal(s, np.zeros(6)) for s in call["stresses"])  # the stand-in calculator's stress


def test_tiny_campaign_runs_to_a_registered_model(calc, store):
    spec = validate_spec(spec_dict())
    out = C.run_campaign(spec, progress=False)
    assert out["failures"] == [] and out["complete"], out["fireworks"]
    lpad = store.get_launchpad()
    states = {fw["state"] for fw in fireworks(lpad)}
    assert states == {"COMPLETED"}
    batches = fireworks(lpad, **{"spec.pes_kind": "calculate"})
    assert len(batches) >= 3  # added dynamically by the enumerate Fireworks, in batches of <= 8
    assert all(len(fw["spec"]["_tasks"][0]["config_ids"]) <= 8 for fw in batches)

    n_configs = store.count_configurations()
    docs = calc_docs(store)
    # every configuration calculated and stored exactly once; 3 relaxations + one single point each
    assert len(docs) == n_configs == store.count_calculations(calculator="sevennet")
    assert len({d["configuration"] for d in docs}) == n_configs
    assert len(calc.calls) == n_configs + 3
    # the campaign's data is queryable by provenance
    methods = {r["method"] for r in store.query({"calculator": "sevennet"})}
    assert {"tilt", "grid", "random", "interpolate"} <= methods

    model = store.active_model("sevennet")
    assert model is not None and model["n_train"] == n_configs
    assert set(model["calc_ids"]) == {str(d["_id"]) for d in docs}
    assert model["metrics"]["cv_rmse"] == pytest.approx(10 / np.sqrt(n_configs))
    # the status shows the registered model's own errors (the stand-in's test RMSE for this many configurations)
    assert out["active_models"]["sevennet"]["errors"]["test_rmse"] == pytest.approx(11.0 / np.sqrt(n_configs))
    report = pes_report(store, "tiny")
    fw_states = report["status"]["fireworks"]["by_state"]  # the report counts its own Firework done
    assert fw_states == {"COMPLETED": report["status"]["fireworks"]["total"]}
    assert all(Path(p).exists() for p in report["plots"]) and len(report["plots"]) >= 2
    assert report["timings"]["stages"]["calculate"] > 0
    # the relaxed parents in order of energy, each in its tilt system's space group
    parents = report["parents"]
    assert {p["glazer"]: p["space_group"] for p in parents} == {
        "a0a0a0": "Pm-3m (221)",
        "a0a0c+": "P4/mbm (127)",
        "a-a-a-": "R-3c (167)",
    }
    above = [p["above_lowest_meV_per_fu"] for p in parents]
    assert above[0] == 0 and above == sorted(above) and above[-1] > 0
    for p in parents:
        if p["config_id"] is not None:  # the stand-in's energy of the stored parent, per formula unit
            s = store.get_configuration(p["config_id"]).to_structure()
            assert p["energy_per_fu"] == pytest.approx(np.sum(np.sin(s.cart_coords) ** 2) / 8, rel=1e-9)


def test_campaign_run_prints_the_relaxed_parents_in_order_of_energy(capsys):
    from perovskite_pes.cli.campaign import _print_parents

    _print_parents(
        [
            {"glazer": "a+b-b-", "space_group": "Pnma (62)", "above_lowest_meV_per_fu": 0.0},
            {"glazer": "a0a0a0", "space_group": "Pm-3m (221)", "above_lowest_meV_per_fu": 41.26},
        ]
    )
    _print_parents([])
    assert capsys.readouterr().out == (
        "relaxed parents (meV/f.u. above the lowest): a+b-b- Pnma (62) 0.0, a0a0a0 Pm-3m (221) 41.3\n"
    )


def pes_report(store, name):
    path = store.settings.home / "campaigns" / name / "report.json"
    return json.loads(path.read_text())


def test_resubmission_and_overlap_compute_nothing_twice(calc, store):
    spec = validate_spec(spec_dict())
    C.run_campaign(spec, progress=False)
    n_calls, n_configs, n_calcs = len(calc.calls), store.count_configurations(), len(calc_docs(store))

    again = C.submit_campaign(spec)
    assert not again["submitted"] and "already on the LaunchPad" in again["reason"]
    forced = C.run_campaign(spec, progress=False, force_submit=True)
    assert forced["submitted"]["submitted"] and forced["complete"]
    assert len(calc.calls) == n_calls  # the duplicates reused the earlier launches
    assert store.count_configurations() == n_configs and len(calc_docs(store)) == n_calcs
    assert len(store.list_models()) == 1  # nothing new to train on

    # an overlapping campaign: same relaxations and samples, plus a new path
    d = spec_dict(name="overlap")
    d["steps"]["interpolations"].append({"path": ["a0a0c+", "a-a-a-"], "n": 5})
    out = C.run_campaign(validate_spec(d), progress=False)
    assert out["complete"]
    new_configs = store.count_configurations() - n_configs
    assert 0 < new_configs <= 3  # the new path's inner points (end points exist already)
    assert len(calc.calls) == n_calls + new_configs
    docs = calc_docs(store)
    assert len(docs) == len({d["configuration"] for d in docs}) == store.count_configurations()


def test_injected_failures_fizzle_their_batch_and_the_campaign_goes_on(calc, store):
    def fail_strained(structure):
        a = structure.lattice.abc
        return "SCF did not converge in 100 steps (injected)" if max(a) - min(a) > 1e-6 else None

    calc.fail = fail_strained  # the Eg strains make the cell non-cubic
    spec = validate_spec(spec_dict())
    out = C.run_campaign(spec, progress=False)
    lpad = store.get_launchpad()
    fizzled = fireworks(lpad, state="FIZZLED")
    assert fizzled and all(fw["spec"]["pes_kind"] == "calculate" for fw in fizzled)
    assert {f["fw_id"] for f in out["failures"]} == {fw["fw_id"] for fw in fizzled}
    assert all("injected" in f["reason"] and "stored as failed" in f["reason"] for f in out["failures"])
    others = [fw for fw in fireworks(lpad) if fw["state"] != "FIZZLED"]
    assert others and all(fw["state"] == "COMPLETED" for fw in others)  # train and report ran anyway
    failed = [d for d in calc_docs(store) if d["status"] == "failed"]
    assert failed and all("injected" in d["error"] for d in failed)
    model = store.active_model("sevennet")
    assert model["n_train"] == store.count_calculations(calculator="sevennet", status="completed")

    # the status command shows them; rerun-failed with a fixed calculator completes everything once
    calc.fail = None
    n_before = len(calc.calls)
    res = C.rerun_failed("tiny")
    assert sorted(res["fizzled"]) == sorted(fw["fw_id"] for fw in fizzled)
    out = C.run_campaign(spec, progress=False)
    assert out["complete"] and not out["failures"]
    assert len(calc.calls) - n_before == len(failed)  # only the failed ones ran again
    docs = calc_docs(store)
    assert all(d["status"] == "completed" for d in docs)
    assert len(docs) == len({d["configuration"] for d in docs}) == store.count_configurations()


def test_a_whole_batch_exception_fizzles_only_that_firework(calc, store):
    calc.raise_error = "calculator 'sevennet' needs the Python package sevenn (injected)"
    spec = validate_spec(
        spec_dict(
            steps={"relax_reference": False, "relax_tilts": False, "random": {"count": 5, "displacement_radius": 0.3}}
        )
    )
    out = C.run_campaign(spec, progress=False)
    kinds = out["fireworks"]["by_kind"]
    assert kinds["calculate"] == {"FIZZLED": 1} and kinds["enumerate"] == {"COMPLETED": 1}
    assert "needs the Python package sevenn (injected)" in out["failures"][0]["reason"]
    assert store.count_calculations(status=None) == 0


def test_retrain_check_fires_when_the_data_grows_past_the_policy(calc, store):
    quiet = validate_spec(spec_dict(name="quiet", retrain={"min_new_count": 100000}))
    C.run_campaign(quiet, progress=False)
    lpad = store.get_launchpad()
    assert not fireworks(lpad, **{"spec.pes_trigger": "retrain"})
    checks = [
        lpad.launches.find_one({"launch_id": fw["launches"][-1]})["action"]["stored_data"]["retrain_check"]
        for fw in fireworks(lpad, **{"spec.pes_kind": "calculate"})
    ]
    assert checks and not any(c["retrain"] for c in checks)
    assert all("below the retrain policy" in c["reason"] for c in checks)
    assert len(store.list_models()) == 1  # only the final training

    # a second campaign adds data; 10 new calculations or 20 % growth trigger retraining mid-campaign
    d = spec_dict(name="eager", retrain={"min_new_count": 10, "min_new_fraction": 0.2})
    d["steps"]["random"]["count"] = 12
    d["seed"] = 7
    C.run_campaign(validate_spec(d), progress=False)
    retrains = fireworks(lpad, **{"spec.pes_trigger": "retrain", "spec.pes_kind": "train"})
    assert retrains and all(fw["state"] == "COMPLETED" for fw in retrains)
    trained = [lpad.launches.find_one({"launch_id": fw["launches"][-1]})["action"]["stored_data"] for fw in retrains]
    assert any(t["trained"] for t in trained)
    models = store.list_models()
    assert len(models) >= 3
    # each model records what it was trained on; the active one saw everything
    active = store.active_model("sevennet")
    assert active["n_train"] == store.count_calculations(calculator="sevennet")
    assert [m["n_train"] for m in models] == sorted(m["n_train"] for m in models)


def test_status_and_rerun_failed_commands(calc, store, run_pes):
    calc.fail = lambda s: "forced failure (injected)" if s.lattice.abc[0] > 11.8 else None
    spec = validate_spec(
        spec_dict(
            steps={
                "relax_reference": False,
                "relax_tilts": False,
                "strain_grid": {"amplitudes": [0.01], "subspaces": ["A1g"]},
            },
            training={"enabled": False},
            fireworks={"per_firework": 1},
        )
    )
    C.run_campaign(spec, progress=False)
    from perovskite_pes.db import close_store

    close_store()
    proc = run_pes("campaign", "status", "tiny", "--json", check=0)
    st = json.loads(proc.stdout)
    assert st["fireworks"]["by_kind"]["calculate"] == {"COMPLETED": 1, "FIZZLED": 1}
    assert "forced failure (injected)" in st["failures"][0]["reason"]
    assert st["data"]["calculations"]["sevennet"] == {"completed": 1, "failed": 1}
    proc = run_pes("campaign", "status", check=0)
    assert "FIZZLED=1" in proc.stdout and "forced failure (injected)" in proc.stdout
    proc = run_pes("campaign", "status", "nope", check=2)
    assert "no campaign named 'nope'" in proc.stderr
    proc = run_pes("campaign", "rerun-failed", "tiny", check=0)
    assert "FIZZLED Fireworks rerun: 1" in proc.stdout
    proc = run_pes("campaign", "status", "tiny", "--json", check=0)
    assert json.loads(proc.stdout)["fireworks"]["by_kind"]["calculate"] == {"COMPLETED": 1, "READY": 1}


# ---------------------------------------------------------------------------------------- VASP
@pytest.mark.skipif(not (FIXTURES / "static_cubic").is_dir(), reason="mock-VASP fixtures not present")
def test_vasp_campaign_on_the_mock_vasp_fixtures(store):
    """Custodian runs a fake VASP that checks the written inputs against the reference folder and copies
    its outputs in: the cubic reference matches and completes; the strained cell differs from the
    reference inputs, custodian cannot fix it, and its Firework fizzles with the reason stored."""
    spec = validate_spec(
        {
            "name": "vasp-mock",
            "supercell": 1,
            "calculator": {
                "name": "vasp",
                "settings": {
                    "vasp_cmd": [sys.executable, str(FIXTURES / "fake_vasp.py"), str(FIXTURES / "static_cubic")],
                    "potcar_spec": True,
                    "polling_time_step": 0.02,
                    "monitor_freq": 1,
                    "max_errors": 1,
                },
            },
            "fireworks": {"per_firework": 1},
            "steps": {
                "relax_reference": False,
                "relax_tilts": False,
                "strain_grid": {"amplitudes": [0.01], "subspaces": ["A1g"]},
            },
            "training": {"enabled": False},
        }
    )
    out = C.run_campaign(spec, progress=False)
    lpad = store.get_launchpad()
    batches = fireworks(lpad, **{"spec.pes_kind": "calculate"})
    assert len(batches) == 2 and all(fw["spec"]["_category"] == "dft" for fw in batches)
    assert sorted(fw["state"] for fw in batches) == ["COMPLETED", "FIZZLED"]
    assert "inputs differ from the reference" in out["failures"][0]["reason"]
    rows = {r["status"]: r for r in store.query({"calculator": "vasp"})}
    assert rows["completed"]["energy_per_atom"] == pytest.approx(-17.25 / 5)
    failed = [d for d in calc_docs(store) if d["status"] == "failed"]
    assert len(failed) == 1 and "POSCAR lattice" in failed[0]["error"]
    # custodian ran in the Firework's launch directory
    launch_dirs = list((store.settings.home / "campaigns" / "vasp-mock" / "launches").glob("launcher_*/calc_*"))
    assert any((d / "custodian.json").exists() for d in launch_dirs)


# ---------------------------------------------------------------------------------------- lost runs
WORKER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from perovskite_pes.calculators import CalcResult
    from perovskite_pes.workflows import campaign, steps
    from perovskite_pes.workflows.spec import validate_spec

    class Slow:
        name, version, settings, settings_hash = "sevennet", "stand-in 1", {"model": "stand-in"}, "stand-in-hash"
        def calculate(self, structure, relax=None, workdir=None):
            with open(sys.argv[1], "a") as fh:
                fh.write("calc\\n")
            time.sleep(0.15)
            x = structure.cart_coords
            return CalcResult(float(np.sum(np.sin(x) ** 2)), -np.sin(2 * x), np.zeros(6), self.name, self.version,
                              self.settings, self.settings_hash, 0.0)

    slow = Slow()
    steps.get_calculator_cached = lambda calculator: slow
    campaign.run_campaign(validate_spec(__SPEC__), progress=False)
""")


def test_killed_worker_is_recovered_and_nothing_is_stored_twice(calc, pes_home, tmp_path):
    d = spec_dict(
        name="killed",
        fireworks={"per_firework": 10, "flush_every": 1},
        training={"enabled": False},
        steps={"relax_reference": False, "relax_tilts": False, "random": {"count": 30, "displacement_radius": 0.3}},
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("__SPEC__", repr(d)))
    counter = tmp_path / "calls.txt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(counter)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if counter.exists() and len(counter.read_text().split()) >= 14:  # inside the second batch
            break
        if proc.poll() is not None:
            pytest.fail(f"worker ended early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    from perovskite_pes.db import get_store

    store = get_store()  # the kernel released the dead worker's lock
    lpad = store.get_launchpad()
    running = fireworks(lpad, state="RUNNING")
    assert len(running) == 1 and running[0]["spec"]["pes_kind"] == "calculate"
    stored_before = store.count_calculations()
    assert stored_before >= 10  # the first batch and part of the second were durable

    out = C.run_campaign(validate_spec(d), progress=False)  # detects the lost run and reruns it
    assert running[0]["fw_id"] in out["recovered"]["lost_fireworks"]
    assert out["complete"] and not out["failures"]
    n_configs = store.count_configurations()
    docs = calc_docs(store)
    assert len(docs) == len({doc["configuration"] for doc in docs}) == n_configs  # stored once each
    assert len(calc.calls) == n_configs - stored_before  # only what was not stored ran again


def test_tasks_use_the_workers_pes_home(tmp_path, monkeypatch):
    """A worker's FWorker file sets ``env: {PES_HOME: ...}``; FireWorks hands it to tasks as ``_fw_env``."""
    from perovskite_pes.workflows.tasks import _settings

    monkeypatch.setenv("PES_HOME", str(tmp_path / "process"))
    assert _settings({}).home == tmp_path / "process"
    assert _settings({"_fw_env": {"PES_HOME": str(tmp_path / "worker")}}).home == tmp_path / "worker"


def test_campaign_moved_to_another_store_repeats_no_relaxation_and_no_calculation(calc, store, tmp_path, monkeypatch):
    """What a campaign resumed on another machine (``pes db export`` there, ``pes db import`` here) recomputes:
    the reference relaxation (not stored) and nothing else; the relaxed parents are found by their key."""
    from perovskite_pes.db import close_store, get_store
    from perovskite_pes.db.interchange import export_records, import_records, read_records

    spec = validate_spec(spec_dict(name="moved", training={"enabled": False}))
    C.run_campaign(spec, progress=False)
    n_calls, n_configs, n_calcs = len(calc.calls), store.count_configurations(), len(calc_docs(store))
    assert n_calls == n_configs + 3  # the reference, two tilt relaxations and one single point each
    relaxed = [c for c, _, _ in store.records({"method": "tilt"}) if c.tags.get("relaxed")]
    assert sorted(c.tags["tilt_system"] for c in relaxed) == ["a-a-a-", "a0a0c+"]
    assert all(len(c.tags["relax_key"]) == 40 and "relax_energy" in c.tags for c in relaxed)
    out = tmp_path / "moved.jsonl"
    assert export_records(store.records(), out) == n_calcs  # one record per calculation, parents included

    close_store()
    other = tmp_path / "other_home"
    other.mkdir()
    monkeypatch.setenv("PES_HOME", str(other))
    fresh = get_store()
    assert fresh.count_configurations() == 0
    import_records(fresh, read_records(out, reference=None), source="import:moved.jsonl")
    calc.calls.clear()
    done = C.run_campaign(spec, progress=False)
    assert done["complete"] and done["failures"] == []
    assert len(calc.calls) == 1  # the 5-atom reference relaxation; no tilt relaxation, no single point
    assert fresh.count_configurations() == n_configs and len(calc_docs(fresh)) == n_calcs

    # a relaxation with other settings (here: other starting angles) is not taken for the stored one
    d = spec_dict(name="moved-angles", training={"enabled": False})
    d["steps"]["relax_tilts"]["angles_deg"] = 5.0
    assert C.run_campaign(validate_spec(d), progress=False)["complete"]
    keys = [c.tags["relax_key"] for c, _, _ in fresh.records({"method": "tilt"}) if c.tags.get("relaxed")]
    assert len(keys) == len(set(keys)) == 4


class DriftingRelaxation(StandIn):
    """Relaxations come back off their space group by ``noise`` A RMS, as threaded or unstable ones may."""

    def __init__(self, noise):
        super().__init__()
        self.noise = noise

    def calculate(self, structure, relax=None, workdir=None):
        result = super().calculate(structure, relax, workdir)
        if relax:
            from pymatgen.core import Structure

            s = result.final_structure
            shift = np.random.default_rng(len(self.calls)).normal(0, self.noise, (len(s), 3))
            result.final_structure = Structure(s.lattice, s.species, s.cart_coords + shift, coords_are_cartesian=True)
        return result


@pytest.mark.parametrize("noise, warns", [(0.002, False), (0.05, True)])
def test_relaxed_parent_is_stored_in_its_tilt_systems_space_group(store, monkeypatch, caplog, noise, warns):
    from perovskite_pes.structure import canonical_key, space_group, supercell_symmetry, tilt_configuration

    monkeypatch.setattr(steps, "get_calculator_cached", lambda calculator: DriftingRelaxation(noise))
    reference = {"species": ["Cs", "Pb", "Br"], "lattice_parameter": 5.87}
    with caplog.at_level("WARNING", logger=steps.__name__):
        out = steps.relax_tilt(store, reference, 2, "a+b-b-", {"name": "sevennet"})
    assert out["space_group"] == "Pnma (62)"
    assert ("left its space group" in caplog.text) is warns
    parent = store.get_configuration(out["config_id"])
    assert space_group(parent, symprec=1e-6) == ("Pnma", 62)
    assert 0.5 * noise < parent.tags["symmetry_removed"] == out["symmetry_removed"] < 6 * noise
    # the symmetry twins of the mode grid around it (images under Pnma, found without rounding) share a key
    sampling = {"mode_grid": {"enabled": True, "amplitudes": [-0.15, 0.15], "components": "first"}}
    grid = steps.enumerate_around(parent, "a+b-b-", sampling, include_parent=False)
    sym = supercell_symmetry(parent.reference)
    pnma = sym.stabilizer(tilt_configuration(parent.reference, "a+b-b-"))
    assert len(pnma) == 16 and set(pnma) <= set(sym.stabilizer(parent))
    fields = [c.displacements - c.displacements.mean(axis=0) for c in grid]
    twin_of = {}
    for i, u in enumerate(fields):
        images = sym.apply_displacements(u, pnma)
        for j in range(i + 1, len(fields)):
            if j not in twin_of and np.abs(images - fields[j]).max(axis=(1, 2)).min() < 1e-9:
                twin_of[j] = i
    assert twin_of and len({canonical_key(c) for c in grid}) == len(grid) - len(twin_of)
