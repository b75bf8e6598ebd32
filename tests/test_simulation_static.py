"""The 0 K tools: tilt stackings, relaxed phases, harmonic frequencies, stacking energies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.calculators.lj import LennardJones

from perovskite_pes.models import LinearCE
from perovskite_pes.simulation import OctahedronMap, SimulationError, inplane_tilts, order_parameters
from perovskite_pes.simulation.order import rotations_from_displacements
from perovskite_pes.simulation.static import (
    RelaxedPhase,
    harmonic_frequencies,
    relax_phase,
    stacking_energies,
    tilt_landscape,
)
from perovskite_pes.structure import (
    Configuration,
    GlazerError,
    Perovskite,
    stacked_tilt_configuration,
    tilt_configuration,
)

from models_support import Harmonic, morse_energy, random_configs, small_reference


@pytest.fixture(scope="module")
def pair_model():
    ref = small_reference()
    configs = random_configs(ref, 80, seed=5, amplitude=0.15, strain=0.01)
    configs += [tilt_configuration(ref, g, a) for g in ("a0a0c+", "a0a0c-", "a-a-a-") for a in (4.0, 8.0, 12.0)]
    return LinearCE(clusters="4p", max_order=2, reference_energy_per_fu=-3.0).fit(configs, morse_energy(configs))


# ---------------------------------------------------------------------------------------- stackings
def test_stackings_of_one_and_two_layers_are_the_glazer_tilts():
    ref = Perovskite().supercell(2)
    for seq, glazer in (([1], "a0a0c+"), ([1, -1], "a0a0c-")):
        got = stacked_tilt_configuration(ref, 2, 7.0, seq).displacements
        np.testing.assert_allclose(got, tilt_configuration(ref, glazer, 7.0).displacements, atol=1e-12)
    # about x: the anti-phase tilt about x alone
    c = stacked_tilt_configuration(ref, 0, 7.0, [1, -1])
    op = order_parameters(ref, c.to_ase().get_positions(), ref.lattice)
    along_z = order_parameters(ref, tilt_configuration(ref, "a0a0c-", 7.0).to_ase().get_positions(), ref.lattice)
    np.testing.assert_allclose(np.abs(op.R[0]), np.abs(along_z.R[0][::-1]), atol=1e-9)
    np.testing.assert_allclose(op.M[0], 0.0, atol=1e-9)


def test_period_four_stacking_has_tilted_layers_but_no_r_or_m_order():
    ref = Perovskite().supercell((2, 2, 4))
    c = stacked_tilt_configuration(ref, 2, 8.0, [1, 1, -1, -1])
    # the amplitude the projections measure for this construction at 8 degrees (a little below 8)
    full = abs(
        order_parameters(ref, tilt_configuration(ref, "a0a0c-", 8.0).to_ase().get_positions(), ref.lattice).R[0][2]
    )
    op = order_parameters(ref, c.to_ase().get_positions(), ref.lattice)
    np.testing.assert_allclose(op.R[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(op.M[0], 0.0, atol=1e-9)
    octa = OctahedronMap.build(ref)
    layers, _ = inplane_tilts(ref, rotations_from_displacements(ref, c.displacements, octa)[0], octa)
    assert layers[2] == pytest.approx(full, rel=1e-9)
    assert layers[0] == pytest.approx(0.0, abs=1e-9) and layers[1] == pytest.approx(0.0, abs=1e-9)
    # a fault in an anti-phase stacking lowers R by half of the faulted layers' share
    fault = stacked_tilt_configuration(ref, 2, 8.0, [1, -1, 1, 1])
    op = order_parameters(ref, fault.to_ase().get_positions(), ref.lattice)
    assert abs(op.R[0][2]) == pytest.approx(full / 2, rel=1e-9) and abs(op.M[0][2]) == pytest.approx(full / 2, rel=1e-9)


@pytest.mark.parametrize(
    "cells, axis, seq, match",
    [
        ((2, 2, 2), 2, [1, 1, -1, -1], "cannot hold 4-layer stacking"),
        ((3, 2, 4), 2, [1, -1], "even number along the other axes"),
        ((2, 2, 2), 3, [1, -1], "axis must be 0, 1 or 2"),
        ((2, 2, 2), 2, [], "non-empty"),
        ((2, 2, 2), 2, [1, float("nan")], "non-empty sequence"),
    ],
)
def test_stacking_bad_input(cells, axis, seq, match):
    with pytest.raises(GlazerError, match=match):
        stacked_tilt_configuration(Perovskite().supercell(cells), axis, 8.0, seq)


# ---------------------------------------------------------------------------------------- relaxations
def test_relaxing_an_einstein_solid_returns_every_atom_to_its_site():
    ref = small_reference()
    phase = relax_phase(Harmonic(2.0, ref), "a0a0c+", angles=8.0, cell=False, fmax=1e-4)
    assert phase.converged
    assert np.abs(phase.configuration.displacements).max() < 1e-4
    assert phase.energy_per_fu_eV == pytest.approx(0.0, abs=1e-8)
    assert phase.glazer == "a0a0a0"


def test_relaxation_keeps_the_tilt_system_and_lowers_the_energy(pair_model):
    start = tilt_configuration(pair_model.reference_, "a-a-a-", 6.0)
    e_start = float(pair_model.predict([start])[0]) / start.reference.n_cells
    phase = relax_phase(pair_model, "a-a-a-", angles=6.0, fmax=0.002)
    assert phase.converged and phase.max_force < 0.002
    assert phase.energy_per_fu_eV < e_start
    assert phase.glazer in ("a-a-a-", "a0a0a0")  # the symmetry of the start is kept (or raised)
    r = np.abs(phase.R)
    assert np.ptp(r) < 1e-6 and np.abs(phase.M).max() < 1e-6
    # the pseudo-cubic cell of a-a-a- stays rhombohedral: equal edges, equal angles
    assert np.ptp(phase.lattice[:3]) < 1e-6 and np.ptp(phase.lattice[3:]) < 1e-4
    d = phase.to_dict()
    assert d["start"] == "a-a-a-" and len(d["R"]) == 3 and d["converged"] is True
    # kept on disk and read back: the same phase, and the structure still has the relaxed energy
    back = RelaxedPhase.from_dict(json.loads(json.dumps(d)), phase.configuration.reference)
    assert back.to_dict() == d
    e_back = float(pair_model.predict([back.configuration])[0]) / back.configuration.reference.n_cells
    assert e_back == pytest.approx(phase.energy_per_fu_eV, abs=1e-6)


def test_relax_phase_bad_input(pair_model):
    with pytest.raises(SimulationError, match="fmax must be a positive"):
        relax_phase(pair_model, "a0a0a0", fmax=0)
    with pytest.raises(SimulationError, match="steps must be a positive"):
        relax_phase(pair_model, "a0a0a0", steps=0)
    with pytest.raises(SimulationError, match="needs perovskite="):
        relax_phase(LennardJones(), "a0a0a0")


# ---------------------------------------------------------------------------------------- frequencies
def _einstein_frequencies(k: float, ref) -> list:
    """nu = sqrt(k/m) / (2 pi) of every atom, three times, sorted; k/m in eV/(A^2 amu) converted to s^-2."""
    from ase.data import atomic_masses, atomic_numbers

    to_si = 1.602176634e-19 / 1e-20 / 1.66053906660e-27
    return sorted(
        np.sqrt(k / atomic_masses[atomic_numbers[s]] * to_si) / (2 * np.pi) / 1e12
        for s in ref.species
        for _ in range(3)
    )


def test_harmonic_frequencies_of_an_einstein_solid_are_sqrt_k_over_m():
    ref = small_reference()
    k = 1.5  # eV/A^2
    freqs = harmonic_frequencies(Harmonic(k, ref), Configuration(ref))
    np.testing.assert_allclose(freqs, _einstein_frequencies(k, ref), rtol=1e-4)


def test_frequencies_at_a_saddle_are_imaginary_and_reported_negative():
    # an inverted Einstein solid: every site is a maximum, every mode unstable with |nu| = sqrt(k/m) / 2 pi
    ref = small_reference()
    freqs = harmonic_frequencies(Harmonic(-1.5, ref), Configuration(ref))
    np.testing.assert_allclose(freqs, -np.array(_einstein_frequencies(1.5, ref))[::-1], rtol=1e-4)


def test_frequencies_at_a_relaxed_phase_are_stable_with_three_acoustic_zeros(pair_model):
    relaxed = relax_phase(pair_model, "a-a-a-", angles=6.0, fmax=1e-3).configuration
    at_min = harmonic_frequencies(pair_model, relaxed)
    assert at_min.shape == (3 * pair_model.reference_.n_atoms,)
    assert np.all(np.diff(at_min) >= 0)
    assert np.sort(np.abs(at_min))[:3].max() < 0.05
    assert at_min.min() > -0.05
    assert np.sort(np.abs(at_min))[3] > 0.1  # the optical modes are not soft


# ---------------------------------------------------------------------------------------- stacking energies
def test_stacking_energies_tell_layer_couplings_apart_only_when_the_pes_reaches_across_layers(pair_model):
    stackings = {"in": [1], "anti": [1, -1], "period 4": [1, 1, -1, -1]}
    near = stacking_energies(pair_model, 8.0, stackings)  # pairs within one cell: blind to the stacking
    assert near["in"] == pytest.approx(near["anti"], abs=1e-9)
    assert near["in"] == pytest.approx(near["period 4"], abs=1e-9)
    far = stacking_energies(
        LennardJones(sigma=3.0, epsilon=0.01, rc=9.0, smooth=True), 8.0, stackings, perovskite=Perovskite()
    )
    assert abs(far["in"] - far["anti"]) > 1e-5
    # period 4 couples each layer once in phase and once anti-phase: between the two
    lo, hi = sorted((far["in"], far["anti"]))
    assert lo - 1e-9 <= far["period 4"] <= hi + 1e-9


def test_tilt_landscape_is_the_rigid_a_plus_b_minus_b_minus_grid_from_the_cubic_cell(pair_model):
    ms, rs = [6.0, 9.0], [3.0, 6.0, 9.0]
    grid = tilt_landscape(pair_model, ms, rs)
    ref = pair_model.reference_
    cubic = pair_model.predict([Configuration(ref)])[0]
    for i, m in enumerate(ms):
        for j, r in enumerate(rs):
            m_ = m + 0.01 if m == r else m  # equal angles would be a-b-b-'s letters
            e = pair_model.predict([tilt_configuration(ref, "a+b-b-", (m_, r, r))])[0]
            assert grid[i, j] == pytest.approx(1000 * (e - cubic) / ref.n_cells, abs=1e-6)
    assert grid.shape == (2, 3) and np.all(grid != 0)
