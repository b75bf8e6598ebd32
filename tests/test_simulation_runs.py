"""MD and Monte Carlo with trained models: conservation, thermostat, detailed balance, locality, restarts, faults."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from perovskite_pes.models import ClusterNet, LinearCE, SiteNet, load_model
from perovskite_pes.simulation import (
    BlowUpError,
    LocalEnergy,
    MDSimulation,
    MonteCarlo,
    SimulationError,
    Stage,
)
from perovskite_pes.simulation import md as md_module
from perovskite_pes.simulation.transitions import (
    combine_transitions,
    fluctuation_warning,
    goes_against,
    reentered_phases,
    run_transitions,
    smooth_phases,
)
from perovskite_pes.structure import Configuration

from models_support import Harmonic, morse_energy, random_configs, small_reference


@pytest.fixture(scope="session")
def training_set():
    ref = small_reference()
    configs = random_configs(ref, 120, seed=3, amplitude=0.15, strain=0.01)
    return configs, morse_energy(configs)


@pytest.fixture(scope="session")
def linear_model(training_set, tmp_path_factory):
    configs, e = training_set
    path = tmp_path_factory.mktemp("models") / "linear"
    # pairs only: stable in MD at 300 K (with this little data, octahedron terms are not)
    LinearCE(clusters="4p", max_order=2, reference_energy_per_fu=-3.0).fit(configs, e).save(path)
    return path


def _net(cls, training_set, **kw):
    configs, e = training_set
    return cls(clusters="4p+t+o", max_order=2, hidden_layers=[3], epochs=[3], batch_sizes=[40], seed=1, **kw).fit(
        configs, e
    )


# ---------------------------------------------------------------------------------------- MD
def test_nve_conserves_energy(linear_model, tmp_path):
    from ase.io import read

    traj = tmp_path / "nve.traj"
    md = MDSimulation(linear_model, supercell=2, ensemble="nve", timestep_fs=2.0, sample_every=5, seed=4)
    md.run([Stage(40.0, steps=150)], trajectory=traj)
    frames = read(traj, ":")
    assert len(frames) == 30
    total = np.array([a.get_potential_energy() + a.get_kinetic_energy() for a in frames])
    kinetic = np.array([a.get_kinetic_energy() for a in frames])
    # the total is conserved to a small fraction of the kinetic energy that moves back and forth
    assert np.ptp(total) < 0.02 * kinetic.mean()
    assert np.ptp(kinetic) > 10 * np.ptp(total)


def test_langevin_holds_the_temperature(linear_model):
    md = MDSimulation(
        linear_model, supercell=2, ensemble="nvt", timestep_fs=4.0, thermostat_fs=40.0, sample_every=2, seed=1
    )
    res = md.run([Stage(60.0, steps=400, equilibration=100)])
    assert res.stages[0]["kinetic_temperature_K"] == pytest.approx(60.0, rel=0.15)
    assert res.completed and res.steps == 500


def test_frames_are_sampled_after_any_equilibration(linear_model):
    """Every sample_every-th step after the equilibration is sampled, whether or not the equilibration is a
    multiple of sample_every (25 and 10 once sampled nothing)."""
    steps = []
    md = MDSimulation(linear_model, supercell=2, ensemble="nvt", timestep_fs=4.0, sample_every=10, seed=2)
    md.run([Stage(50.0, steps=40, equilibration=25)], on_sample=lambda *a: steps.append(a[-1]))
    assert steps == [35, 45, 55, 65]


def test_largest_displacement_is_that_of_the_checked_frames(linear_model):
    """With sample_every = 10 and no equilibration the frames checked are exactly the sampled ones."""
    from perovskite_pes.simulation.order import undeform

    md = MDSimulation(linear_model, supercell=2, ensemble="npt", timestep_fs=4.0, sample_every=10, seed=4)
    ref = load_model(linear_model).reference_
    seen = []

    def keep(positions, lattice, *_):
        u = undeform(ref, positions, lattice)[0][0]
        seen.append(np.linalg.norm(u - u.mean(axis=0), axis=1).max())

    res = md.run([Stage(300.0, steps=60, equilibration=0)], on_sample=keep)
    assert len(seen) == 6 and 0 < res.max_displacement_A == pytest.approx(max(seen), abs=1e-12)
    assert res.to_dict()["max_displacement_A"] == res.max_displacement_A < md.max_displacement


def test_npt_moves_the_cell_and_reports_everything(linear_model):
    md = MDSimulation(linear_model, supercell=2, ensemble="npt", timestep_fs=4.0, barostat_fs=200.0, sample_every=5)
    d = md.run([Stage(50.0, steps=60, equilibration=20)]).to_dict()
    for key in (
        "temperature_K",
        "steps",
        "atoms",
        "steps_per_second",
        "order_parameters",
        "lattice_parameters",
        "phase",
    ):
        assert key in d
    assert len(d["order_parameters"]["R"]) == 3 and len(d["order_parameters"]["M"]) == 3
    assert d["atoms"] == 40 and d["steps"] == 80
    lat = d["stages"][0]["lattice_parameters_std"]
    assert max(lat[:3]) > 0  # the cell fluctuates


def test_md_restart_reproduces_an_uninterrupted_run(linear_model, tmp_path, monkeypatch):
    schedule = [Stage(50.0, steps=30, equilibration=10), Stage(80.0, steps=30, equilibration=10)]
    kw = dict(
        supercell=2, ensemble="npt", timestep_fs=4.0, barostat_fs=200.0, sample_every=5, checkpoint_every=25, seed=7
    )
    whole = MDSimulation(linear_model, **kw).run(schedule)
    ckpt = tmp_path / "md.json"
    calls = {"n": 0}
    real = md_module.write_checkpoint

    def interrupt_after_second(path, state):
        real(path, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(md_module, "write_checkpoint", interrupt_after_second)
    with pytest.raises(KeyboardInterrupt):
        MDSimulation(linear_model, **kw).run(schedule, checkpoint=ckpt)
    monkeypatch.setattr(md_module, "write_checkpoint", real)
    assert json.loads(ckpt.read_text())["stage"] == 1  # stopped inside the second stage
    resumed = MDSimulation(linear_model, **kw).run(schedule, checkpoint=ckpt)
    assert resumed.steps == whole.steps
    assert whole.max_displacement_A > 0
    assert resumed.max_displacement_A == pytest.approx(whole.max_displacement_A, abs=1e-12)
    for a, b in zip(whole.stages, resumed.stages):
        assert a["R"] == pytest.approx(b["R"], abs=1e-9) and a["lattice_parameters"] == pytest.approx(
            b["lattice_parameters"], abs=1e-9
        )
    # a checkpoint of another run is refused
    with pytest.raises(SimulationError, match="different run"):
        MDSimulation(linear_model, **{**kw, "seed": 8}).run(schedule, checkpoint=ckpt)


def test_blow_up_stops_with_step_temperature_and_displacement(linear_model, tmp_path):
    traj = tmp_path / "t.extxyz"
    md = MDSimulation(linear_model, supercell=2, ensemble="nvt", max_displacement=0.02, sample_every=1, seed=0)
    with pytest.raises(BlowUpError) as info:
        md.run([Stage(300.0, steps=200)], trajectory=traj)
    err = info.value
    assert err.step <= 200 and err.max_displacement > 0.02 and err.temperature_K == 300.0
    assert "step" in str(err) and "300 K" in str(err)
    # the message names the atom that left: its index and species in the reference's order
    atom, species = re.search(r"atom (\d+) \((\w+)\) moved", str(err)).groups()
    assert load_model(linear_model).reference_.perovskite.supercell(2).species[int(atom)] == species
    assert traj.exists()  # what was written is kept


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"timestep_fs": 50.0}, "time step"),
        ({"timestep_fs": 0.0}, "time step"),
        ({"ensemble": "npe"}, "ensemble"),
        ({"start": "a+b+c+d+"}, "Glazer"),
        ({"start": "a0a0c+", "supercell": 3}, "cannot start"),
    ],
)
def test_md_bad_input(linear_model, kwargs, match):
    with pytest.raises(SimulationError, match=match):
        MDSimulation(linear_model, **{"supercell": 2, **kwargs}).run([Stage(100.0, 10)])


def test_stage_refuses_non_positive_temperatures():
    for t in (0.0, -10.0, float("nan")):
        with pytest.raises(SimulationError, match="positive temperature"):
            Stage(t, 10)


def test_start_structure_of_another_perovskite_is_refused(linear_model, tmp_path):
    from ase.io import write

    from perovskite_pes.structure import Perovskite

    other = Configuration(Perovskite(("Cs", "Pb", "I"), 6.3).supercell(2)).to_ase()
    write(tmp_path / "other.extxyz", other)
    with pytest.raises(SimulationError, match="does not match the model"):
        MDSimulation(linear_model, start=str(tmp_path / "other.extxyz")).run([Stage(100.0, 10)])


# ---------------------------------------------------------------------------------------- MC
def test_metropolis_samples_the_boltzmann_distribution_of_a_harmonic_model():
    """<u_x^2> = kT/k per component for an Einstein solid (global engine, NVT)."""
    from ase.units import kB

    ref = small_reference()
    k, t = 2.0, 300.0
    mc = MonteCarlo(Harmonic(k, ref), supercell=2, ensemble="nvt", displacement=0.1, sample_every=1, seed=2)
    res = mc.run([Stage(t, steps=250, equilibration=50)])
    series = res.series[0]
    assert len(series["energy"]) == 250
    # E = k/2 sum u^2 over 3N coordinates: <E> = 3N kT/2 (equipartition)
    mean_e = np.mean(series["energy"])
    assert mean_e == pytest.approx(1.5 * ref.n_atoms * kB * t, rel=0.06)
    assert res.settings["engine"] == "global"


@pytest.mark.parametrize("kind", ["linear", "cluster", "site", "bounded site"])
def test_local_energy_changes_are_exact(kind, training_set, linear_model):
    from perovskite_pes.models import load_model

    if kind == "linear":
        model = load_model(linear_model)
    else:
        model = _net(ClusterNet if kind == "cluster" else SiteNet, training_set, bounded=kind == "bounded site")
    ref = model.reference_.perovskite.supercell(4)
    rng = np.random.default_rng(0)
    amplitude = 0.3 if kind == "bounded site" else 0.05  # far enough out that the site and cluster walls rise
    c = Configuration(ref, rng.normal(0, amplitude, (ref.n_atoms, 3)), rng.normal(0, 0.005, 6))
    if kind == "bounded site":
        cf = model.featurizer_for(ref).cluster_features(
            torch.as_tensor(c.positions[None]), torch.as_tensor(c.lattice[None])
        )
        assert float(model._cluster_wall_total(cf)) > 0.1
    le = LocalEnergy(model, ref)
    classes = le.colors()
    # a colour class holds no two interacting sites
    adj = le.interaction_sets()
    for cls in classes[:5]:
        sub = adj[cls][:, cls].toarray()
        np.fill_diagonal(sub, False)
        assert not sub.any()
    assert sum(len(x) for x in classes) == ref.n_atoms
    e0 = le.reset(c.positions, c.lattice)

    def full(pos):
        return float(model.compute(pos, c.lattice, ref, forces=False, stress=False)["energy"])

    for cls in classes[:2]:
        base = le.positions.numpy().copy()
        new = base[cls] + rng.normal(0, 0.05, (len(cls), 3))
        de = le.delta(cls, new)
        for j in range(3):  # each move alone
            p = base.copy()
            p[cls[j]] = new[j]
            assert de[j] == pytest.approx(full(p) - e0, abs=1e-10)
        acc = rng.random(len(cls)) < 0.5
        le.commit(acc)
        p = base.copy()
        p[cls[acc]] = new[acc]
        e1 = full(p)
        assert e1 - e0 == pytest.approx(de[acc].sum(), abs=1e-9)  # the accepted moves add up exactly
        e0 = e1


def test_mc_npt_and_restart(linear_model, tmp_path, monkeypatch):
    from perovskite_pes.simulation import mc as mc_module

    schedule = [Stage(80.0, steps=6, equilibration=4)]
    kw = dict(supercell=2, ensemble="npt", strain_step=0.004, checkpoint_every=4, seed=3)
    whole = MonteCarlo(linear_model, **kw).run(schedule)
    assert whole.stages[0]["strain_acceptance"] > 0
    ckpt = tmp_path / "mc.json"
    real = mc_module.write_checkpoint
    calls = {"n": 0}

    def interrupt(path, state):
        real(path, state)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(mc_module, "write_checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        MonteCarlo(linear_model, **kw).run(schedule, checkpoint=ckpt)
    monkeypatch.setattr(mc_module, "write_checkpoint", real)
    resumed = MonteCarlo(linear_model, **kw).run(schedule, checkpoint=ckpt)
    assert resumed.stages[0]["energy_per_fu_eV"] == pytest.approx(whole.stages[0]["energy_per_fu_eV"], abs=1e-10)
    assert resumed.stages[0]["lattice_parameters"] == pytest.approx(whole.stages[0]["lattice_parameters"], abs=1e-10)
    assert whole.max_displacement_A > 0
    assert resumed.max_displacement_A == pytest.approx(whole.max_displacement_A, abs=1e-12)


# ---------------------------------------------------------------------------------------- transitions
def test_transition_detection_and_combination():
    temps = [100, 150, 200, 250, 300, 350, 400]
    labels = ["a+b-b-", "a+b-b-", "a0a0c+", "a+b-b-", "a0a0c+", "a0a0a0", "a0a0a0"]
    assert smooth_phases(labels)[2] == "a+b-b-"  # a one-temperature blip
    heat = run_transitions(temps, labels)
    assert [(t["from"], t["to"], t["temperature_K"]) for t in heat] == [
        ("a+b-b-", "a0a0c+", 275.0),
        ("a0a0c+", "a0a0a0", 325.0),
    ]
    cool = run_transitions(temps[::-1], ["a0a0a0", "a0a0a0", "a0a0a0", "a0a0c+", "a0a0c+", "a+b-b-", "a+b-b-"])
    combined = combine_transitions(
        [{"direction": "heat", "transitions": heat}, {"direction": "cool", "transitions": cool}], 50.0
    )
    pairs = {(c["from"], c["to"]): c for c in combined}
    low = pairs[("a+b-b-", "a0a0c+")]
    assert low["heating_K"] == 275.0 and low["cooling_K"] == 175.0 and low["hysteresis_K"] == 100.0
    assert low["temperature_K"] == 225.0 and low["uncertainty_K"] == pytest.approx(50.0)
    high = pairs[("a0a0c+", "a0a0a0")]
    assert high["temperature_K"] == pytest.approx(300.0) and high["uncertainty_K"] >= 25.0


def test_a_run_that_comes_back_to_a_phase_is_named():
    # a clean sequence and a one-temperature blip re-enter nothing
    assert reentered_phases(["a+b-b-", "a+b-b-", "a0a0c+", "a0a0c+", "a0a0a0"]) == []
    assert reentered_phases(["a+b-b-", "a0a0c+", "a+b-b-", "a+b-b-", "a0a0a0"]) == []
    # a small cell's ladder that flickers for two temperatures between phases (the 4x4x4 MC ladder of
    # docs/campaigns.md): a0a0c+ is left for a+b-b- and entered again, a+b-b- likewise
    flicker = ["a+b-b-", "a+b-b-", "a0b+c-", "a0a0c+", "a+b-b-", "a+b-b-", "a0a0c+", "a0a0c+", "a0b+b+"]
    assert reentered_phases(flicker) == ["a+b-b-", "a0a0c+"]


def test_phase_changes_against_the_run_direction_are_named_and_left_out_of_the_combination():
    temps = [300, 350, 400, 450, 500, 550]
    # a heating run that wanders into more tilted phases without ever coming back to one
    wander = run_transitions(temps, ["a0a0a0", "a0a0a0", "a0a0c+", "a0a0c+", "a0b+b+", "a0b+b+"])
    assert [goes_against(t, "heat") for t in wander] == [True, True]
    assert [goes_against(t, "cool") for t in wander] == [False, False]
    assert reentered_phases(["a0a0a0", "a0a0a0", "a0a0c+", "a0a0c+", "a0b+b+", "a0b+b+"]) == []
    # the clean sequences of both directions go with their run, a tilt swap is not judged
    clean = run_transitions(temps, ["a+b-b-", "a+b-b-", "a0a0c+", "a0a0c+", "a0a0a0", "a0a0a0"])
    assert not any(goes_against(t, "heat") for t in clean)
    assert not any(goes_against(t, "cool") for t in run_transitions(temps[::-1], ["a0a0a0"] * 3 + ["a0a0c+"] * 3))
    assert not goes_against({"from": "a0a0c+", "to": "a0a0c-"}, "heat")
    with pytest.raises(SimulationError, match="direction"):
        goes_against(clean[0], "up")
    combined = combine_transitions(
        [{"direction": "heat", "transitions": clean}, {"direction": "heat", "transitions": wander}], 50.0
    )
    assert [(c["from"], c["to"], c["estimates"]) for c in combined] == [
        ("a+b-b-", "a0a0c+", 1),
        ("a0a0c+", "a0a0a0", 1),
    ]
    run = {"direction": "heat", "reentered": [], "against_direction": ["a0a0a0 -> a0a0c+", "a0a0c+ -> a0b+b+"]}
    line = fluctuation_warning(run)
    assert "gained tilted axes on heating (a0a0a0 -> a0a0c+, a0a0c+ -> a0b+b+)" in line and "fluctuations" in line
    cooled = {"direction": "cool", "reentered": ["a0a0c+"], "against_direction": ["a0a0c+ -> a0a0a0"]}
    both = fluctuation_warning(cooled)
    assert both.startswith("re-entered a0a0c+; lost tilted axes on cooling (a0a0c+ -> a0a0a0): ")
    assert fluctuation_warning({"direction": "heat", "reentered": [], "against_direction": []}) is None


def test_scan_plot_puts_close_transition_labels_on_separate_rows():
    from perovskite_pes.simulation.plots import _label_levels
    from perovskite_pes.utils import pyplot

    fig, ax = pyplot().subplots()
    ax.set_xlim(100, 600)  # 16 % of the range is 80 K
    assert _label_levels([238, 262, 288, 312, 412, 512], ax) == [0, 1, 2, 3, 0, 0]
    assert _label_levels([150, 300, 450], ax) == [0, 0, 0]  # far apart: one row
    pyplot().close(fig)
