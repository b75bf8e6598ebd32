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
