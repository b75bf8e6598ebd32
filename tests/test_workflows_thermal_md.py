"""The campaign's thermal_md step: frames of MD driven by the surrogate itself, from the relaxed parents."""

from __future__ import annotations

import numpy as np
import pytest

from perovskite_pes.structure import Configuration
from perovskite_pes.workflows import SpecError, validate_spec
from perovskite_pes.workflows.builder import build_workflow
from perovskite_pes.workflows.steps import reference_supercell, thermal_md_samples

REF = {"species": ["Cs", "Pb", "Br"], "lattice_parameter": 5.94}


def spec(**steps):
    return {
        "name": "t",
        "calculator": {"name": "sevennet"},
        "steps": {"relax_tilts": {"systems": ["a0a0c+"]}, **steps},
        "training": {"enabled": False},
    }


def test_frames_of_real_surrogate_md_are_thermal_tagged_and_reproducible():
    cubic = Configuration(reference_supercell(REF, 2))
    tm = {"temperatures": [300.0, 600.0], "starts": ["a0a0a0"], "steps": 4, "equilibration": 4, "every": 2}
    calc = {"name": "sevennet", "settings": {"threads": 1}}
    frames = thermal_md_samples({"a0a0a0": cubic}, calc, tm, seed=5)
    assert len(frames) == 2 * 2  # two temperatures, 4 steps sampled every 2
    assert [f.tags["temperature_K"] for f in frames] == [300.0, 300.0, 600.0, 600.0]
    assert all(f.tags["method"] == "thermal_md" and f.tags["tilt_system"] == "a0a0a0" for f in frames)
    assert [f.tags["step"] for f in frames] == [6, 8, 6, 8]  # after the 4 equilibration steps
    for f in frames:
        rms = np.sqrt((f.displacements**2).sum(axis=1).mean())
        assert 0.01 < rms < 0.5  # thermal motion in its cage, 6-8 steps of 4 fs after a cubic start
        assert f.reference == cubic.reference and np.abs(f.displacements.mean(axis=0)).max() < 1e-9
    again = thermal_md_samples({"a0a0a0": cubic}, calc, dict(tm, temperatures=[300.0]), seed=5)
    assert all(np.allclose(a.displacements, b.displacements, atol=1e-6) for a, b in zip(frames[:2], again))
    assert not np.allclose(frames[0].displacements, frames[2].displacements, atol=1e-3)


def test_a_ladder_is_one_run_per_start_through_the_temperatures():
    cubic = Configuration(reference_supercell(REF, 2))
    tm = {"temperatures": [300.0, 600.0], "starts": ["a0a0a0"], "steps": 4, "equilibration": 2, "every": 2}
    calc = {"name": "sevennet", "settings": {"threads": 1}}
    fresh = thermal_md_samples({"a0a0a0": cubic}, calc, tm, seed=5)
    ladder = thermal_md_samples({"a0a0a0": cubic}, calc, dict(tm, ladder=True), seed=5)
    assert [f.tags["temperature_K"] for f in ladder] == [300.0, 300.0, 600.0, 600.0]
    # fresh runs restart their step count at every temperature; the ladder's count runs on through
    # both temperatures (2 + 4 steps at 300 K, then 2 more of equilibration at 600 K)
    assert [f.tags["step"] for f in fresh] == [4, 6, 4, 6]
    assert [f.tags["step"] for f in ladder] == [4, 6, 10, 12]
    assert all(f.tags["method"] == "thermal_md" and f.tags["seed"] == 5 for f in ladder)


def test_one_firework_after_the_relaxations_of_its_starts():
    wf = build_workflow(validate_spec(spec(thermal_md={"starts": ["a0a0a0", "a0a0c+"]})))
    ids = {fw.name.split(": ", 1)[1]: fw for fw in wf.fws}
    md = ids["thermal MD"]
    assert md.spec["pes_kind"] == "enumerate" and "_category" not in md.spec
    parents = {fw.name.split(": ", 1)[1] for fw in wf.fws if md.fw_id in wf.links[fw.fw_id]}
    assert parents == {"relax reference", "relax a0a0c+"}
    task = md.tasks[0]
    assert task["parents"] == ["a0a0a0", "a0a0c+"] and task["thermal_md"]["temperatures"] == [300.0, 600.0]


def test_off_by_default_and_old_hashes_stay():
    off = validate_spec(spec())
    assert not off.steps.thermal_md.enabled and "thermal_md" not in off.to_dict()["steps"]
    on = validate_spec(spec(thermal_md=True))
    assert on.to_dict()["steps"]["thermal_md"]["starts"] == ["a0a0a0"]
    assert validate_spec(on.to_dict()) == on
    ladder = validate_spec(spec(thermal_md={"ladder": True}))
    assert ladder.to_dict()["steps"]["thermal_md"]["ladder"] is True and validate_spec(ladder.to_dict()) == ladder
    task = [fw for fw in build_workflow(ladder).fws if fw.name.endswith("thermal MD")][0].tasks[0]
    assert task["thermal_md"]["ladder"] is True


@pytest.mark.parametrize(
    "data, field",
    [
        (spec(thermal_md={"temperatures": [300, 0]}), "steps.thermal_md.temperatures[1]"),
        (spec(thermal_md={"starts": ["a+b-b-"]}), "steps.thermal_md.starts[0]"),  # not relaxed here
        (spec(thermal_md={"starts": ["abc"]}), "steps.thermal_md.starts[0]"),
        (spec(thermal_md={"every": 0}), "steps.thermal_md.every"),
        (spec(thermal_md={"timestep_fs": 20}), "steps.thermal_md.timestep_fs"),
        (dict(spec(thermal_md=True), calculator={"name": "cp2k"}), "steps.thermal_md"),
    ],
)
def test_bad_thermal_md_names_the_field(data, field):
    with pytest.raises(SpecError) as info:
        validate_spec(data)
    assert str(info.value).startswith(f"campaign spec: {field}:"), str(info.value)


def test_larger_cells_start_from_the_parent_repeated():
    from perovskite_pes.simulation.order import rotations_from_displacements, tilt_projections
    from perovskite_pes.structure import tilt_configuration

    tilted = tilt_configuration(reference_supercell(REF, 2), "a0a0c+", [8.0])
    tm = {"temperatures": [150.0], "starts": ["a0a0c+"], "steps": 2, "equilibration": 2, "every": 1}
    calc = {"name": "sevennet", "settings": {"threads": 1}}
    own = thermal_md_samples({"a0a0c+": tilted}, calc, tm, seed=5)
    both = thermal_md_samples({"a0a0c+": tilted}, calc, dict(tm, supercells=[2, 4], every=[1, 2]), seed=5)
    assert len(own) == 2 and len(both) == 3  # every step in the 2x2x2 cell, every second in the 4x4x4 one
    # steps per cell too: one in the 2x2x2 cell, four in the 4x4x4 one (every second kept)
    per = thermal_md_samples({"a0a0c+": tilted}, calc, dict(tm, supercells=[2, 4], steps=[1, 4], every=[1, 2]), seed=5)
    assert [c.tags.get("supercell") for c in per] == [None, 4, 4] and [c.tags["step"] for c in per[1:]] == [4, 6]
    # and temperatures per cell: the 2x2x2 run at 150 K, the 4x4x4 one at 300 K only
    hot = dict(tm, supercells=[2, 4], temperatures=[[150.0], [300.0]], steps=[1, 2], every=[1, 2])
    per_t = thermal_md_samples({"a0a0c+": tilted}, calc, hot, seed=5)
    assert [(c.tags.get("supercell"), c.tags["temperature_K"]) for c in per_t] == [(None, 150.0), (4, 300.0)]
    assert np.allclose(per_t[0].displacements, per[0].displacements, atol=1e-6)  # the 2x2x2 run unchanged
    # the training cell's run is the one without supercells (same seed), the larger one is tagged
    assert np.allclose(both[0].displacements, own[0].displacements, atol=1e-6) and "supercell" not in both[0].tags
    big = both[2]
    assert (
        big.reference.n_atoms == 320
        and big.tags["step"] == 4
        and big.tags["supercell"] == 4
        and big.tags["tilt_system"] == "a0a0c+"
    )
    # it started from the repeated parent: after 4 steps at 150 K the in-phase tilt about z is still there
    r, m = tilt_projections(big.reference, rotations_from_displacements(big.reference, big.displacements))
    assert abs(abs(m[0, 2]) - 8.0) < 1.5 and np.abs(r).max() < 1.5 and np.abs(m[0, :2]).max() < 1.5


def test_larger_cells_in_the_spec():
    on = validate_spec(
        dict(
            spec(thermal_md={"supercells": [2, 4], "every": [2, 20], "steps": [100, 30]}),
            training={"models": ["cluster"]},
        )
    )
    assert on.to_dict()["steps"]["thermal_md"]["supercells"] == [2, 4]
    assert on.to_dict()["steps"]["thermal_md"]["every"] == [2, 20]
    assert on.to_dict()["steps"]["thermal_md"]["steps"] == [100, 30]
    assert validate_spec(on.to_dict()) == on
    per_cell = validate_spec(
        dict(spec(thermal_md={"supercells": [2, 4], "temperatures": [[100, 300], 450]}), training={"models": ["site"]})
    )
    assert per_cell.steps.thermal_md.temperatures == ((100.0, 300.0), (450.0,))
    assert per_cell.to_dict()["steps"]["thermal_md"]["temperatures"] == [[100.0, 300.0], [450.0]]
    assert validate_spec(per_cell.to_dict()) == per_cell
    plain = validate_spec(spec(thermal_md=True)).to_dict()["steps"]["thermal_md"]
    assert "supercells" not in plain and "ladder" not in plain  # old hashes
    task = [fw for fw in build_workflow(on).fws if fw.name.endswith("thermal MD")][0].tasks[0]
    assert task["thermal_md"]["supercells"] == [2, 4]


@pytest.mark.parametrize(
    "data, message",
    [
        (spec(thermal_md={"supercells": [9]}), "steps.thermal_md.supercells[0]: a supercell to run MD in"),
        (spec(thermal_md={"supercells": [2, 3]}), "steps.thermal_md.supercells: a larger cell starts from the"),
        (spec(thermal_md={"supercells": [2, 4], "every": [2]}), "steps.thermal_md.every: a list gives one spacing"),
        (spec(thermal_md={"every": [2, 0]}), "steps.thermal_md.every[1]: must be >= 1"),
        (spec(thermal_md={"supercells": [2, 4], "steps": [9]}), "steps.thermal_md.steps: a list gives one number of"),
        (spec(thermal_md={"supercells": [2, 4], "steps": [9, 0]}), "steps.thermal_md.steps[1]: must be >= 1"),
        (
            spec(thermal_md={"supercells": [2, 4], "temperatures": [[300, 600]]}),
            "steps.thermal_md.temperatures: a list gives one list of temperatures per supercell",
        ),
        (
            spec(thermal_md={"supercells": [2, 4], "temperatures": [[300], [600, 0]]}),
            "steps.thermal_md.temperatures[1][1]",
        ),
        (
            dict(spec(thermal_md={"supercells": [4]}), training={"models": ["linear"]}),
            "steps.thermal_md.supercells: frames of supercells [4] beside the training one train only the nets",
        ),
    ],
)
def test_bad_thermal_md_supercells(data, message):
    with pytest.raises(SpecError) as info:
        validate_spec(data)
    assert str(info.value).startswith(f"campaign spec: {message}"), str(info.value)
