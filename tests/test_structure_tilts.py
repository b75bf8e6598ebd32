"""Tilt systems, reference symmetry and canonical keys."""

import numpy as np
import pytest

from perovskite_pes.errors import PesError
from perovskite_pes.structure import (
    GLAZER_SYSTEMS,
    Configuration,
    GlazerError,
    Perovskite,
    canonical_key,
    glazer_system,
    space_group,
    supercell_symmetry,
    symmetrize,
    tilt_configuration,
)


@pytest.fixture(scope="module")
def ref():
    return Perovskite().supercell(2)


# Howard & Stokes (1998), Table 1 -- written out independently of the module's table
HOWARD_STOKES = {
    "a0a0a0": 221,
    "a0a0c+": 127,
    "a0b+b+": 139,
    "a+a+a+": 204,
    "a+b+c+": 71,
    "a0a0c-": 140,
    "a0b-b-": 74,
    "a-a-a-": 167,
    "a0b-c-": 12,
    "a-b-b-": 15,
    "a-b-c-": 2,
    "a0b+c-": 63,
    "a+b-b-": 62,
    "a+b-c-": 11,
    "a+a+c-": 137,
}


def test_fifteen_systems_listed():
    assert len(GLAZER_SYSTEMS) == 15
    assert {g.symbol: g.space_group_number for g in GLAZER_SYSTEMS} == HOWARD_STOKES
    assert [g.glazer_number for g in GLAZER_SYSTEMS] == sorted(g.glazer_number for g in GLAZER_SYSTEMS)


@pytest.mark.parametrize("symbol", sorted(HOWARD_STOKES))
def test_space_group_of_each_tilt_system(ref, symbol):
    config = tilt_configuration(ref, symbol)
    assert config.tags["tilt_system"] == symbol
    assert len(config.tags["angles"]) == 3
    assert np.allclose(config.strain, 0)
    _, number = space_group(config, symprec=1e-3)
    assert number == HOWARD_STOKES[symbol]
    # also on the pymatgen structure and at a tighter tolerance: the construction is exact
    assert space_group(config.to_structure(), symprec=1e-5)[1] == HOWARD_STOKES[symbol]


def test_tilts_keep_octahedra_nearly_rigid(ref):
    """B-X bonds stretch only at second order (1/cos) and A, B atoms do not move."""
    theta = 10.0
    config = tilt_configuration(ref, "a0a0c-", theta)
    d = config.displacements
    assert np.allclose(d[ref.sublattice != "X"], 0)
    a = ref.perovskite.lattice_parameter
    x_perp = d[(ref.sublattice == "X") & (ref.primitive_index != 4)]
    assert np.allclose(np.linalg.norm(x_perp, axis=1), a / 2 * np.sin(np.radians(theta)))
    # apical X (on the tilt axis) does not move
    assert np.allclose(d[ref.primitive_index == 4], 0)


def test_in_phase_and_anti_phase_layers(ref):
    """Along the tilt axis, + keeps the sense in successive layers, - alternates it."""
    for sign, expect in (("+", 1), ("-", -1)):
        c = tilt_configuration(ref, f"a0a0c{sign}", 8)
        x1 = ref.primitive_index == 2
        t = ref.cell_translation
        lower = x1 & np.all(t == [0, 0, 0], axis=1)
        upper = x1 & np.all(t == [0, 0, 1], axis=1)
        ratio = c.displacements[upper, 1] / c.displacements[lower, 1]
        assert np.allclose(ratio, expect)
        # neighbours within the layer rotate oppositely
        side = x1 & np.all(t == [1, 0, 0], axis=1)
        assert np.allclose(c.displacements[side, 1], -c.displacements[lower, 1])


def test_glazer_symbol_errors(ref):
    with pytest.raises(GlazerError, match="not one of the 15"):
        tilt_configuration(ref, "a+b+c0")
    with pytest.raises(PesError, match="equal"):
        tilt_configuration(ref, "a-b-b-", [5, 6, 7])
    with pytest.raises(GlazerError, match="different"):
        tilt_configuration(ref, "a+b-c-", [5, 6, 6])
    with pytest.raises(GlazerError, match="no tilt about axis x"):
        tilt_configuration(ref, "a0a0c-", [3, 0, 5])
    with pytest.raises(GlazerError, match="supercell"):
        tilt_configuration(Perovskite().supercell([1, 1, 2]), "a0a0c+")
    # the sqrt2 x sqrt2 x 2 cell holds the z tilts but not a tilt about x
    root2 = Perovskite().supercell([[1, 1, 0], [-1, 1, 0], [0, 0, 2]])
    assert space_group(tilt_configuration(root2, "a0a0c-"))[1] == 140
    assert (
        space_group(tilt_configuration(Perovskite().supercell([[1, 1, 0], [-1, 1, 0], [0, 0, 1]]), "a0a0c+"))[1] == 127
    )
    with pytest.raises(GlazerError, match="cannot hold"):
        tilt_configuration(root2, "a+b-b-")
    assert glazer_system("a^0 a^0 c^-").symbol == "a0a0c-"


def test_symmetry_group_of_supercell(ref):
    sym = supercell_symmetry(ref)
    assert sym.n_ops == 48 * 8
    assert len(sym.point_op_indices) == 48 and len(sym.pure_translation_indices) == 8
    # every permutation is a bijection preserving sublattices
    for perm in sym.permutations:
        assert sorted(perm) == list(range(ref.n_atoms))
        assert np.all(ref.sublattice[perm] == ref.sublattice)


def test_symmetry_images_are_the_same_crystal(ref):
    """The structure built from an image is the original rotated and translated (equal sorted distances)."""
    rng = np.random.default_rng(1)
    config = Configuration(ref, rng.normal(0, 0.1, (ref.n_atoms, 3)), [0.01, -0.02, 0.005, 0.003, 0.0, -0.004])
    sym = supercell_symmetry(ref)
    d0 = np.sort(config.to_structure().distance_matrix.ravel())
    for g in rng.choice(sym.n_ops, 5, replace=False):
        img = sym.apply(config, g)
        assert np.allclose(np.sort(img.to_structure().distance_matrix.ravel()), d0, atol=1e-8)
        assert np.isclose(img.to_structure().volume, config.to_structure().volume)


def test_canonical_key_equivalent_and_distinct(ref):
    rng = np.random.default_rng(2)
    sym = supercell_symmetry(ref)
    config = Configuration(ref, rng.normal(0, 0.05, (ref.n_atoms, 3)), [0.01, 0.0, -0.01, 0.002, 0.0, 0.0])
    key = canonical_key(config)
    for g in rng.choice(sym.n_ops, 20, replace=False):
        assert canonical_key(sym.apply(config, g)) == key
    # a rigid translation (uniform displacement) does not change the key
    shifted = Configuration(ref, config.displacements + [0.3, -0.1, 0.2], config.strain)
    assert canonical_key(shifted) == key
    # a distinct distortion gets a distinct key
    other = Configuration(ref, config.displacements * 1.1, config.strain)
    assert canonical_key(other) != key
    strained = Configuration(ref, config.displacements, config.strain + [0.001, 0, 0, 0, 0, 0])
    assert canonical_key(strained) != key


def test_canonical_key_of_tilts(ref):
    keys = {g.symbol: canonical_key(tilt_configuration(ref, g.symbol)) for g in GLAZER_SYSTEMS}
    assert len(set(keys.values())) == 15
    # the same tilt about another axis, or with the opposite sense, is the same configuration
    z = canonical_key(tilt_configuration(ref, "a0a0c-", 7))
    assert canonical_key(tilt_configuration(ref, "a0a0c-", -7)) == z
    cz = tilt_configuration(ref, "a0a0c+", 7)
    cy = tilt_configuration(ref, "a0b+b+", [0, 7, 7])
    assert canonical_key(cz) != canonical_key(cy)


def _noisy(config, scale, seed):
    rng = np.random.default_rng(seed)
    u = config.displacements + rng.normal(0, scale, config.displacements.shape)
    return Configuration(config.reference, u, config.strain + rng.normal(0, scale / 10, 6), dict(config.tags))


@pytest.mark.parametrize("symbol", sorted(HOWARD_STOKES))
def test_symmetrize_restores_the_space_group_of_a_drifted_tilt_system(ref, symbol):
    tilted = tilt_configuration(ref, symbol)
    drifted = _noisy(tilted, 0.01, seed=len(symbol))
    assert space_group(drifted, symprec=1e-3)[1] == 1  # the noise breaks every symmetry
    sym = symmetrize(drifted, like=tilted)
    assert space_group(sym, symprec=1e-6)[1] == HOWARD_STOKES[symbol]
    assert sym.tags == drifted.tags
    assert np.allclose(sym.displacements.mean(axis=0), 0, atol=1e-12)  # the rigid translation is removed
    # a projection: idempotent, and what it removes is small when the drift is
    again = symmetrize(sym, like=tilted)
    assert np.allclose(again.displacements, sym.displacements, atol=1e-12)
    assert np.allclose(again.strain, sym.strain, atol=1e-15)
    assert np.abs(sym.displacements - drifted.displacements).max() < 0.05
    # the exact configuration comes back unchanged
    same = symmetrize(tilted, like=tilted)
    u = tilted.displacements - tilted.displacements.mean(axis=0)
    assert np.allclose(same.displacements, u, atol=1e-12) and np.allclose(same.strain, 0, atol=1e-15)
    # everything the configuration had in common with the tilt system's group survives: its stabilizer
    ops = supercell_symmetry(ref).stabilizer(sym)
    assert set(supercell_symmetry(ref).stabilizer(tilted)) <= set(ops)


def test_symmetry_twins_around_a_symmetrized_parent_merge_whatever_the_drift(ref):
    """+a and -a of a mode around a symmetric parent can be images of each other. Around a parent that drifted
    off its space group by 1e-3 A the rounded canonical keys of such twins merge or not by chance; after
    symmetrize they merge the same way whatever the drift was."""
    from perovskite_pes.structure.modes import displacement_modes

    tilted = tilt_configuration(ref, "a0a0c+")
    basis = displacement_modes(ref)
    modes = [basis.vectors[sub.indices[0]] for sub in basis.subspaces]  # the quickstart's mode grid

    def unique_keys(parent):
        grid = [Configuration(ref, parent.displacements + a * m) for m in modes for a in (-0.15, 0.15)]
        return len({canonical_key(c) for c in grid})

    drifted = [_noisy(tilted, 0.001, seed) for seed in range(4)]
    merged = {unique_keys(symmetrize(d, like=tilted)) for d in drifted}
    assert len(merged) == 1 and min(merged) < 2 * len(modes) - 10  # the same twins merge, and many do
    assert all(unique_keys(d) > min(merged) for d in drifted)  # a drifted parent breaks the twins apart


def test_canonical_key_ignores_noise_at_rounding_half_steps(ref):
    """Nice amplitudes times nice mode components land on half steps of the rounding (0.0375 A = 37.5 steps);
    the last bits of floating-point noise must not decide the key there."""
    u = np.zeros((ref.n_atoms, 3))
    u[0, 0], u[1, 0], u[8, 2], u[9, 2] = 0.0375, -0.0375, 0.0125, -0.0125  # mean exactly zero
    key = canonical_key(Configuration(ref, u, [0.015, 0, 0, 0, 0, 0]))
    rng = np.random.default_rng(0)
    for _ in range(5):
        noisy = u + rng.normal(0, 1e-15, u.shape)
        assert canonical_key(Configuration(ref, noisy, [0.015 + 1e-16, 0, 0, 0, 0, 0])) == key
    assert canonical_key(Configuration(ref, u * 1.02, [0.015, 0, 0, 0, 0, 0])) != key


def test_symmetrize_refuses_another_reference(ref):
    other = Perovskite().supercell(1)
    with pytest.raises(PesError, match="same reference supercell"):
        symmetrize(tilt_configuration(ref, "a0a0c+"), like=Configuration(other))
