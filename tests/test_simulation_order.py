"""Tilt order parameters, Glazer classification and lattice parameters on constructed structures."""

from __future__ import annotations

import numpy as np
import pytest

from perovskite_pes.simulation import (
    SimulationError,
    glazer_symbol,
    inplane_tilts,
    lattice_parameters,
    layer_projections,
    order_parameters,
    phase_of,
)
from perovskite_pes.structure import GLAZER_SYSTEMS, Configuration, Perovskite, tilt_angles, tilt_configuration

PV = Perovskite(("Cs", "Pb", "Br"), 5.87)


def _expected(signs):
    """Which R and M components a Glazer symbol has (per axis)."""
    return np.array([s == "-" for s in signs]), np.array([s == "+" for s in signs])


@pytest.mark.parametrize("system", GLAZER_SYSTEMS, ids=lambda g: g.symbol)
def test_order_parameters_of_every_glazer_system(system):
    ref = PV.supercell(2)
    c = tilt_configuration(ref, system)
    op = order_parameters(ref, c.positions, c.lattice)
    r, m = np.abs(op.R[0]), np.abs(op.M[0])
    want_r, want_m = _expected(system.signs)
    angles = np.abs(tilt_angles(system))
    # exactly zero where the pattern has no component
    assert np.all(r[~want_r] < 1e-9) and np.all(m[~want_m] < 1e-9)
    # the construction averages two rigid rotations per X atom, so amplitudes are a few % below the angle
    tilted = r * want_r + m * want_m
    assert np.allclose(tilted[want_r | want_m], angles[want_r | want_m], rtol=0.04)
    assert glazer_symbol(op.R[0], op.M[0]) == system.symbol
    phase = phase_of(ref, op)
    assert phase["glazer"] == system.symbol
    assert phase["space_group"] == system.space_group_symbol


def test_single_axis_amplitude_is_the_best_fit_rotation():
    """One tilt axis: the X atoms move by a/2 sin(theta) perpendicular, so the fitted angle is atan(sin theta)."""
    ref = PV.supercell(2)
    for symbol in ("a0a0c+", "a0a0c-"):
        op = order_parameters(ref, *_geometry(tilt_configuration(ref, symbol, 9.0)))
        amp = np.abs(op.M[0, 2] if symbol.endswith("+") else op.R[0, 2])
        assert amp == pytest.approx(np.degrees(np.arctan(np.sin(np.radians(9.0)))), abs=1e-9)


def _geometry(c):
    return c.positions, c.lattice


def test_cubic_and_strained_cells_have_no_tilt():
    ref = PV.supercell(4)
    for strain in (np.zeros(6), [0.02, -0.01, 0.015, 0.01, -0.02, 0.005]):
        c = Configuration(ref, None, strain)
        op = order_parameters(ref, c.positions, c.lattice)
        assert np.abs(op.rotations).max() < 1e-9
        assert glazer_symbol(op.R[0], op.M[0]) == "a0a0a0"


def test_invariant_to_translation_rotation_and_wrapping():
    from scipy.spatial.transform import Rotation

    ref = PV.supercell(4)
    c = tilt_configuration(ref, "a+b-b-")
    op0 = order_parameters(ref, c.positions, c.lattice)
    rot = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    pos = (c.positions + np.array([1.3, -0.7, 2.1])) @ rot.T
    lat = c.lattice @ rot.T
    frac = pos @ np.linalg.inv(lat)
    wrapped = (frac - np.floor(frac)) @ lat
    op1 = order_parameters(ref, wrapped, lat)
    assert np.allclose(op0.R, op1.R, atol=1e-9) and np.allclose(op0.M, op1.M, atol=1e-9)
    assert np.allclose(op0.lattice, op1.lattice, atol=1e-9)


def test_choice_of_supercell_origin_only_flips_signs():
    """The same tilt pattern with the origin moved by one primitive cell: same amplitudes."""
    ref = PV.supercell(4)
    c = tilt_configuration(ref, "a+b-c-")
    n = np.diag(ref.matrix)
    index = {(int(p), *map(int, t)): k for k, (p, t) in enumerate(zip(ref.primitive_index, ref.cell_translation))}
    for shift in np.eye(3, dtype=int):
        perm = [index[(int(p), *map(int, (t + shift) % n))] for p, t in zip(ref.primitive_index, ref.cell_translation)]
        moved = Configuration(ref, c.displacements[perm], c.strain)
        a = order_parameters(ref, c.positions, c.lattice)
        b = order_parameters(ref, moved.positions, moved.lattice)
        assert np.allclose(np.abs(a.R), np.abs(b.R), atol=1e-9) and np.allclose(np.abs(a.M), np.abs(b.M), atol=1e-9)
        assert not np.allclose(a.R, b.R)  # the signs do depend on the origin


def test_same_amplitudes_in_a_larger_supercell():
    small, big = PV.supercell(2), PV.supercell(6)
    for symbol in ("a-a-a-", "a0b+c-"):
        a = order_parameters(small, *_geometry(tilt_configuration(small, symbol)))
        b = order_parameters(big, *_geometry(tilt_configuration(big, symbol)))
        assert np.allclose(np.abs(a.R), np.abs(b.R), atol=1e-9) and np.allclose(np.abs(a.M), np.abs(b.M), atol=1e-9)


def test_odd_supercell_is_refused():
    ref = PV.supercell(3)
    c = Configuration(ref)
    with pytest.raises(SimulationError, match="even supercell"):
        order_parameters(ref, c.positions, c.lattice)


def test_lattice_parameters_of_a_strained_supercell():
    ref = PV.supercell(4)
    c = Configuration(ref, None, [0.01, -0.02, 0.0, 0.0, 0.0, 0.0])
    lp = lattice_parameters(ref, c.lattice)[0]
    assert lp[:3] == pytest.approx([5.87 * 1.01, 5.87 * 0.98, 5.87])
    assert lp[3:] == pytest.approx([90, 90, 90])


def test_glazer_symbol_canonical_forms():
    assert glazer_symbol([0, 0, 0], [5, 0, 0]) == "a0a0c+"  # tilt about x is the same system
    assert glazer_symbol([0, 6, 6.2], [8, 0, 0]) == "a+b-b-"
    assert glazer_symbol([6, 0, 6.1], [0, 8, 0]) == "a+b-b-"
    assert glazer_symbol([0.3, 0.2, 0.1], [0.4, 0.1, 0.0]) == "a0a0a0"
    # a+b+c- is not one of Howard and Stokes' 15: it merges into a+a+c-
    assert glazer_symbol([0, 0, 9], [4, 7, 0]) == "a+a+c-"


def _layered_tilt(ref, signs_by_layer, angle=8.0):
    """A 4x4x4 cell whose layers normal to z are tilted about z in the a0a0c+ pattern with a sign per layer."""
    plus = tilt_configuration(ref, "a0a0c+", angle).displacements
    layer = np.floor(np.mod(ref.frac_coords()[:, 2], 1.0) * 4 + 1e-6).astype(int) % 4
    u = plus * np.asarray(signs_by_layer, dtype=float)[layer][:, None]
    return Configuration(ref, u, None)


def test_layer_errors_are_zero_for_coherent_tilts_and_flag_independent_layers():
    ref = PV.supercell(4)
    for system in ("a0a0c-", "a+b-b-", "a+b+c+"):
        op = order_parameters(ref, *_geometry(tilt_configuration(ref, system)))
        r, m, r_se, m_se = layer_projections(ref, op.rotations[0])
        assert np.allclose(r, op.R[0]) and np.allclose(m, op.M[0])
        tilted = np.abs(r) + np.abs(m) > 1.0
        assert np.all(r_se[tilted & (np.abs(r) > 1)] < 1e-9) and np.all(m_se[tilted & (np.abs(m) > 1)] < 1e-9)
    # coherent layers: a0a0c+ and a0a0c- whatever the significance asked for
    for signs, symbol in (((1, 1, 1, 1), "a0a0c+"), ((1, -1, 1, -1), "a0a0c-")):
        op = order_parameters(ref, *_geometry(_layered_tilt(ref, signs)))
        assert phase_of(ref, op)["glazer"] == symbol
    # three layers one way, one the other: both projections are half the tilt, 1 error from zero; layers
    # of 2.5 degrees are noise (a small cell above its transition), layers of 8 degrees a stacking fault
    for angle, symbol in ((2.5, "a0a0a0"), (4.5, "a0a0a0"), (8.0, "a0a0c+")):
        op = order_parameters(ref, *_geometry(_layered_tilt(ref, (1, 1, 1, -1), angle)))
        r, m, r_se, m_se = layer_projections(ref, op.rotations[0])
        layer_amp, layer_se = inplane_tilts(ref, op.rotations[0])
        assert abs(m[2]) == pytest.approx(abs(r[2]), rel=1e-6) and abs(m[2]) > 1.1
        assert abs(m[2]) / m_se[2] == pytest.approx(1.0, rel=1e-6)
        assert layer_amp[2] == pytest.approx(2 * abs(m[2]), rel=1e-6) and layer_se[2] < 1e-9
        assert layer_amp[0] < 1e-9 and layer_amp[1] < 1e-9
        assert glazer_symbol(op.R[0], op.M[0]) in ("a0a0c+", "a0a0c-")  # the bare projections see a tilt
        phase = phase_of(ref, op)
        assert phase["glazer"] == symbol
        assert phase["M_avg_structure_se"][2] == pytest.approx(m_se[2])
        assert phase["layer_tilt_avg_structure"][2] == pytest.approx(layer_amp[2])
        assert phase_of(ref, op, significance=0.5)["glazer"] in ("a0a0c+", "a0a0c-")


def test_glazer_letters_merge_within_the_noise():
    # 4.6 and 3.5 degrees differ by more than 15 %, but not by three standard errors of 0.6
    assert glazer_symbol([0, 4.6, 3.5], [8.4, 0, 0]) == "a+b-c-"
    assert glazer_symbol([0, 4.6, 3.5], [8.4, 0, 0], R_se=[0, 0.6, 0.6], M_se=[0.3, 0, 0]) == "a+b-b-"
    assert glazer_symbol([0, 4.6, 1.5], [8.4, 0, 0], R_se=[0, 0.2, 0.2], M_se=[0.3, 0, 0]) == "a+b-c-"
