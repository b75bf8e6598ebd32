"""Structure <-> configuration round trips under rotations, translations, wrapping and permutations."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from perovskite_pes.errors import PesError
from perovskite_pes.structure import (
    Configuration,
    ConfigurationError,
    Perovskite,
    canonical_key,
    match_structure,
    tilt_configuration,
)


@pytest.fixture(scope="module")
def ref():
    return Perovskite().supercell(2)


def random_config(ref, rng, amp=0.15):
    u = rng.normal(0, amp, (ref.n_atoms, 3))
    u -= u.mean(axis=0)
    e = rng.normal(0, 0.02, 6)
    return Configuration(ref, u, e)


def transformed(config, rng, shift, permute=True, wrap=True):
    """The configuration's structure rotated by a random proper rotation, shifted, permuted, wrapped."""
    rot = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    lattice = config.lattice @ rot.T
    pos = (config.positions + shift) @ rot.T
    order = rng.permutation(len(pos)) if permute else np.arange(len(pos))
    s = Structure(Lattice(lattice), [config.species[i] for i in order], pos[order], coords_are_cartesian=True)
    if wrap:
        s = Structure(s.lattice, s.species, s.frac_coords % 1.0)
    return s, order


def test_plain_round_trip(ref):
    rng = np.random.default_rng(0)
    c = random_config(ref, rng)
    back = Configuration.from_structure(ref, c.to_structure())
    assert np.allclose(back.displacements, c.displacements, atol=1e-9)
    assert np.allclose(back.strain, c.strain, atol=1e-12)
    back2 = Configuration.from_structure(ref, c.to_ase())
    assert np.allclose(back2.displacements, c.displacements, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_rotated_translated_permuted_wrapped(ref, seed):
    rng = np.random.default_rng(seed)
    c = random_config(ref, rng)
    shift = rng.uniform(-0.4, 0.4, 3) * ref.perovskite.lattice_parameter
    s, order = transformed(c, rng, shift)
    back, found = match_structure(ref, s, remove_translation=True)
    assert np.allclose(back.displacements, c.displacements, atol=1e-8)
    assert np.allclose(back.strain, c.strain, atol=1e-10)
    assert np.array_equal(order[found], np.arange(ref.n_atoms))  # input atom found[i] was reference site i
    # keeping the translation: it shows up as a uniform displacement equal to the shift
    kept = Configuration.from_structure(ref, s)
    shift_ref = np.linalg.solve(c.deformation_gradient, shift)  # shift expressed in the reference frame
    assert np.allclose(kept.displacements - c.displacements, shift_ref, atol=1e-8)


def test_large_translation_gives_an_equivalent_configuration(ref):
    rng = np.random.default_rng(7)
    c = random_config(ref, rng, amp=0.1)
    a = ref.perovskite.lattice_parameter
    s, _ = transformed(c, rng, shift=np.array([1.3, -0.7, 2.2]) * a)
    back = Configuration.from_structure(ref, s, remove_translation=True)
    assert canonical_key(back) == canonical_key(c)
    assert np.isclose(
        np.sort(np.linalg.norm(back.displacements, axis=1)), np.sort(np.linalg.norm(c.displacements, axis=1))
    ).all()


def test_tilted_structure_with_shuffled_sites(ref):
    c = tilt_configuration(ref, "a+b-b-", [12, 9, 9])
    rng = np.random.default_rng(3)
    s, _ = transformed(c, rng, shift=np.zeros(3))
    back = Configuration.from_structure(ref, s)
    assert np.allclose(back.displacements, c.displacements, atol=1e-8)


def test_rejects_bad_structures(ref):
    rng = np.random.default_rng(4)
    c = random_config(ref, rng, amp=0.05)
    s = c.to_structure()
    with pytest.raises(ConfigurationError, match="40"):
        Configuration.from_structure(ref, Structure(s.lattice, s.species[:-1], s.frac_coords[:-1]))
    swapped = s.copy()
    swapped.replace(0, "Pb")
    with pytest.raises(ConfigurationError, match="composition"):
        Configuration.from_structure(ref, swapped)
    # an X atom moved half-way to its neighbouring X site: no unique matching
    moved = c.displacements.copy()
    x = np.flatnonzero(ref.sublattice == "X")[0]
    moved[x] += np.array([-0.6, 0.6, 0.0]) * ref.perovskite.lattice_parameter / 2
    with pytest.raises(PesError, match="no unique matching"):
        Configuration.from_structure(ref, Configuration(ref, moved).to_structure())
    # a lattice in another basis is recognised as such
    other = Structure(
        Lattice(s.lattice.matrix + [[0, 0, 0], [0, 0, 0], s.lattice.matrix[0]]),
        s.species,
        s.cart_coords,
        coords_are_cartesian=True,
    )
    with pytest.raises(ConfigurationError, match="does not correspond"):
        Configuration.from_structure(ref, other)
    mirrored = Structure(Lattice(-s.lattice.matrix), s.species, -s.cart_coords, coords_are_cartesian=True)
    with pytest.raises(ConfigurationError, match="inverted"):
        Configuration.from_structure(ref, mirrored)


def test_repeated_configuration_is_the_same_distortion_in_a_larger_cell(ref):
    from perovskite_pes.simulation.order import rotations_from_displacements, tilt_projections

    rng = np.random.default_rng(3)
    base = tilt_configuration(ref, "a+b-b-", [8.0, 6.0, 6.0])
    small = Configuration(
        ref, base.displacements + rng.normal(0, 0.05, base.displacements.shape), [0.01, 0, -0.01, 0.002, 0, 0.003]
    )
    big = small.repeated(2)
    assert big.reference.n_atoms == 8 * ref.n_atoms and np.allclose(big.reference.matrix, 2 * ref.matrix)
    assert np.allclose(big.strain, small.strain, atol=1e-12)
    # every site of the larger cell carries the displacement of its image in the smaller one
    frac_big = (big.reference.frac_coords() * 2) % 1.0
    d = np.abs(frac_big[:, None, :] - ref.frac_coords()[None] % 1.0)
    image = np.minimum(d, 1 - d).sum(axis=-1).argmin(axis=1)
    assert np.allclose(big.displacements, small.displacements[image], atol=1e-9)
    # so the tilt pattern is the same: a+b-b- with the same projections per axis
    r_small, m_small = tilt_projections(ref, rotations_from_displacements(ref, small.displacements))
    r_big, m_big = tilt_projections(big.reference, rotations_from_displacements(big.reference, big.displacements))
    assert np.allclose(r_big, r_small, atol=1e-9) and np.allclose(m_big, m_small, atol=1e-9)
    assert np.allclose(small.repeated(1).displacements, small.displacements)
    with pytest.raises(ConfigurationError, match="integer >= 1"):
        small.repeated(0)
