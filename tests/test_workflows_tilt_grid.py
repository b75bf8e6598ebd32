"""The campaign's tilt grid: large tilts of every Glazer system on the cubic cell, pure and with thermal noise."""

from __future__ import annotations

import numpy as np
import pytest

from perovskite_pes.simulation import glazer_symbol, order_parameters
from perovskite_pes.structure import Configuration, glazer_system, tilt_angles, tilt_configuration
from perovskite_pes.workflows import SpecError, validate_spec
from perovskite_pes.workflows.steps import enumerate_around, grid_tilt_angles, reference_supercell, tilt_grid

REF = {"species": ["Cs", "Pb", "Br"], "lattice_parameter": 5.87}


def glazer_parts(system):
    g = glazer_system(system)
    return g.letters, g.signs


def cubic():
    return Configuration(reference_supercell(REF, 2))


def test_counts_of_every_system_angle_and_noise_level():
    tg = {"systems": "all", "angles": [12.0, 24.0], "noise": [0.0, 0.1, 0.2], "copies": 2}
    configs = tilt_grid(cubic(), tg, seed=3)
    # 14 tilted systems x 2 angles x (1 pure + 2 copies at each of 2 noise levels)
    assert len(configs) == 14 * 2 * (1 + 2 * 2)
    assert len({c.tags["tilt_system"] for c in configs}) == 14 and "a0a0a0" not in {
        c.tags["tilt_system"] for c in configs
    }
    assert all(c.tags["method"] == "tilt_grid" and c.tags["kind"] == "tilt_grid" for c in configs)
    # naming the cubic system adds its noisy copies only (the pure one is the parent itself)
    with_cubic = tilt_grid(cubic(), dict(tg, systems=["a0a0a0", "a0a0c+"]), seed=3)
    assert [c.tags["tilt_system"] for c in with_cubic].count("a0a0a0") == 2 * 2


@pytest.mark.parametrize("system", ["a0a0c-", "a0a0c+", "a+b-b-", "a+b-c-", "a-b-c-"])
def test_pure_tilts_have_their_system_and_largest_angle(system):
    ref = reference_supercell(REF, 2)
    (c,) = tilt_grid(cubic(), {"systems": [system], "angles": [20.0], "noise": [0.0]})
    op = order_parameters(ref, c.positions, c.lattice)
    amps = np.maximum(np.abs(op.R[0]), np.abs(op.M[0]))
    assert glazer_symbol(op.R[0], op.M[0]) == system
    # the structure layer's tilt at per-letter angles in the default ratios whose rotation vector is 20 degrees long
    want = grid_tilt_angles(system, 20.0)
    per_axis = tilt_angles(system, want)
    assert np.linalg.norm(per_axis) == pytest.approx(20.0)
    assert np.allclose(c.displacements, tilt_configuration(ref, system, want).displacements)
    ratios = {"a": 0.8, "b": 0.6, "c": 1.0}
    letters = list(dict.fromkeys(x for x, sign in zip(*glazer_parts(system)) if sign != "0"))
    assert np.allclose(np.array(want) / want[0], [ratios[x] / ratios[letters[0]] for x in letters])
    if len(letters) == 1 and system.count("0") == 2:  # one axis: a rigid tilt theta fits as atan(sin theta)
        assert amps.max() == pytest.approx(np.degrees(np.arctan(np.sin(np.radians(20.0)))), rel=0.01)
    if system == "a-b-c-":
        assert np.allclose(np.abs(per_axis), 20.0 * np.array([0.8, 0.6, 1.0]) / np.sqrt(2.0))


def test_noise_has_the_asked_rms_no_net_translation_and_is_reproducible():
    tg = {"systems": ["a0a0c-"], "angles": [18.0], "noise": [0.0, 0.15], "copies": 20}
    pure, *noisy = tilt_grid(cubic(), tg, seed=0)
    kicks = np.array([c.displacements - pure.displacements for c in noisy])
    rms = np.sqrt((kicks**2).sum(axis=2).mean())
    assert rms == pytest.approx(0.15, rel=0.05)
    assert np.allclose(kicks.mean(axis=1), 0.0, atol=1e-12)
    again = tilt_grid(cubic(), tg, seed=0)
    other = tilt_grid(cubic(), tg, seed=1)
    assert all(np.array_equal(a.displacements, b.displacements) for a, b in zip(noisy, again[1:]))
    assert not np.allclose(noisy[0].displacements, other[1].displacements)
    assert len({c.displacements.tobytes() for c in noisy}) == 20


def test_random_ratios_keep_the_system_and_total_angle_and_leave_one_letter_systems_alone():
    tg = {"systems": ["a0a0c-", "a+b-b-", "a-b-c-"], "angles": [24.0], "noise": [0.0, 0.1], "ratios": 3}
    configs = tilt_grid(cubic(), tg, seed=5)
    by_system = {s: [c for c in configs if c.tags["tilt_system"] == s] for s in tg["systems"]}
    # one letter: nothing to vary; two or three letters: the default ratio and three drawn ones, pure and noisy
    assert len(by_system["a0a0c-"]) == 2 and len(by_system["a+b-b-"]) == len(by_system["a-b-c-"]) == 4 * 2
    ref = reference_supercell(REF, 2)
    for system in ("a+b-b-", "a-b-c-"):
        drawn = [c for c in by_system[system] if "ratio_draw" in c.tags and c.tags["noise"] == 0]
        assert len(drawn) == 3
        shares = []
        for c in drawn:
            per_letter = c.tags["letter_angles_deg"]
            assert np.linalg.norm(tilt_angles(system, per_letter)) == pytest.approx(24.0, abs=1e-3)
            assert np.allclose(c.displacements, tilt_configuration(ref, system, per_letter).displacements, atol=1e-4)
            op = order_parameters(ref, c.positions, c.lattice)
            signs = ["-" if abs(r) > 1.0 else "+" if abs(m) > 1.0 else "0" for r, m in zip(op.R[0], op.M[0])]
            assert signs == list(glazer_parts(system)[1])  # every axis keeps its in-phase / anti-phase tilt
            shares.append(np.array(per_letter) / max(per_letter))
        assert len({tuple(np.round(x, 6)) for x in shares}) == 3  # three different ratios
    assert [c.displacements.tobytes() for c in configs] == [
        c.displacements.tobytes() for c in tilt_grid(cubic(), tg, seed=5)
    ]
    with pytest.raises(ValueError, match="2 positive numbers"):
        grid_tilt_angles("a+b-b-", 10.0, ratios=[1.0, -1.0])


def test_ratios_leave_the_hash_of_specs_without_them():
    base = {"name": "t", "calculator": {"name": "sevennet"}, "steps": {"tilt_grid": {"angles": 20}}}
    plain = validate_spec(base)
    assert "ratios" not in plain.to_dict()["steps"]["tilt_grid"]
    drawn = validate_spec({**base, "steps": {"tilt_grid": {"angles": 20, "ratios": 2}}})
    assert drawn.to_dict()["steps"]["tilt_grid"]["ratios"] == 2 and validate_spec(drawn.to_dict()) == drawn


def test_only_the_cubic_parent_gets_the_grid():
    sampling = {"tilt_grid": {"enabled": True, "systems": ["a0a0c+"], "angles": [15.0], "noise": [0.0]}}
    around_cubic = enumerate_around(cubic(), "a0a0a0", sampling)
    assert [c.tags["method"] for c in around_cubic] == ["tilt", "tilt_grid"]
    assert [c.tags["method"] for c in enumerate_around(cubic(), "a0a0c+", sampling)] == ["tilt"]


@pytest.mark.parametrize(
    "section, field",
    [
        ({"angles": [0]}, "steps.tilt_grid.angles[0]"),
        ({"angles": [50]}, "steps.tilt_grid.angles[0]"),
        ({"angles": []}, "steps.tilt_grid.angles"),
        ({"noise": [0.1, 0.7]}, "steps.tilt_grid.noise[1]"),
        ({"noise": -0.1}, "steps.tilt_grid.noise[0]"),
        ({"systems": ["a0a0c+", "x"]}, "steps.tilt_grid.systems[1]"),
        ({"copies": 0}, "steps.tilt_grid.copies"),
        ({"ratios": -1}, "steps.tilt_grid.ratios"),
        ({"angle": [10]}, "steps.tilt_grid.angle"),
    ],
)
def test_bad_tilt_grids_name_the_field(section, field):
    with pytest.raises(SpecError) as info:
        validate_spec({"name": "t", "calculator": {"name": "sevennet"}, "steps": {"tilt_grid": section}})
    assert str(info.value).startswith(f"campaign spec: {field}:"), str(info.value)


def test_the_step_is_off_by_default_and_keeps_old_hashes():
    off = validate_spec({"name": "t", "calculator": {"name": "sevennet"}})
    assert not off.steps.tilt_grid.enabled and "tilt_grid" not in off.to_dict()["steps"]
    on = validate_spec({"name": "t", "calculator": {"name": "sevennet"}, "steps": {"tilt_grid": {"angles": 20}}})
    assert on.to_dict()["steps"]["tilt_grid"]["angles"] == [20.0]
    assert validate_spec(on.to_dict()) == on
