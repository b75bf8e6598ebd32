"""Symmetry-adapted displacement modes and strains."""

import numpy as np
import pytest

from perovskite_pes.structure import (
    Perovskite,
    displacement_modes,
    strain_basis,
    strain_to_matrix,
    supercell_symmetry,
    tilt_angles,
    tilt_configuration,
)


@pytest.fixture(scope="module")
def ref():
    return Perovskite().supercell(2)


@pytest.fixture(scope="module")
def modes(ref):
    return displacement_modes(ref)


def test_modes_orthonormal_and_complete(ref, modes):
    n3 = 3 * ref.n_atoms
    assert modes.n_modes == n3 - 3 == 117
    m = modes.matrix
    assert np.allclose(m @ m.T, np.eye(117), atol=1e-10)
    # together with the 3 rigid translations they span the whole displacement space
    trans = np.zeros((3, ref.n_atoms, 3))
    for a in range(3):
        trans[a, :, a] = 1 / np.sqrt(ref.n_atoms)
    full = np.concatenate([m, trans.reshape(3, -1)])
    assert np.allclose(full @ full.T, np.eye(n3), atol=1e-10)
    # subspaces partition the modes
    idx = sorted(i for s in modes.subspaces for i in s.indices)
    assert idx == list(range(117))
    assert len(set(modes.labels)) == 117


def test_each_operation_maps_a_subspace_into_itself(ref, modes):
    sym = supercell_symmetry(ref)
    for s in modes.subspaces:
        v = modes.vectors[s.indices]  # (d, N, 3)
        flat = v.reshape(len(s.indices), -1)
        img = sym.apply_displacements(v).reshape(sym.n_ops, len(s.indices), -1)  # all 384 operations
        inside = np.einsum("gki,li->gkl", img, flat)
        # the image keeps its norm inside the subspace: nothing leaks out
        assert np.allclose((inside**2).sum(axis=2), 1.0, atol=1e-10), s.name


def test_subspaces_are_irreducible(ref, modes):
    """Character norm (1/|G|) sum_g |chi(g)|^2 = 1 for every (real, absolutely irreducible) subspace."""
    sym = supercell_symmetry(ref)
    for s in modes.subspaces:
        v = modes.vectors[s.indices]
        flat = v.reshape(len(s.indices), -1)
        img = sym.apply_displacements(v).reshape(sym.n_ops, len(s.indices), -1)
        chi = np.einsum("gki,ki->g", img, flat)
        assert np.isclose((chi**2).mean(), 1.0, atol=1e-8), s.name


def test_decomposition_of_the_2x2x2_cell(modes):
    dims = {}
    for s in modes.subspaces:
        dims[s.kpoint] = dims.get(s.kpoint, 0) + s.dimension
    # 15 per k-point (5 atoms x 3), minus the acoustic translations at Gamma
    assert dims == {"GM": 12, "X": 45, "M": 45, "R": 15}
    labels = [s.label for s in modes.subspaces]
    assert labels.count("M3+") == 1 and labels.count("R4+") == 1
    assert labels.count("GM4-") == 3  # the 4 polar T1u copies minus the acoustic one
    assert modes.subspace("R4+")[0].irrep == "T1g"
    assert modes.subspace("M3+")[0].irrep == "A2g"


@pytest.mark.parametrize(
    "symbol, label",
    [("a0a0c+", "M3+"), ("a0b+b+", "M3+"), ("a+a+a+", "M3+"), ("a0a0c-", "R4+"), ("a-a-a-", "R4+"), ("a0b-c-", "R4+")],
)
def test_tilts_are_the_labelled_tilt_modes(ref, modes, symbol, label):
    # small angles: a multi-axis tilt is a pure tilt mode to first order in the angle
    u = tilt_configuration(ref, symbol, tilt_angles(symbol) / 4).displacements.reshape(-1)
    v = modes.subspace_vectors(label).reshape(-1, u.size)
    assert np.linalg.norm(v @ u) / np.linalg.norm(u) > 0.999


def test_mixed_tilt_splits_into_m_and_r(ref, modes):
    u = tilt_configuration(ref, "a+b-b-", [3, 2, 2]).displacements.reshape(-1)
    m = modes.subspace_vectors("M3+").reshape(-1, u.size) @ u
    r = modes.subspace_vectors("R4+").reshape(-1, u.size) @ u
    assert np.isclose(np.sum(m**2) + np.sum(r**2), u @ u, rtol=1e-3)
    assert np.sum(m**2) > 0.1 * (u @ u) and np.sum(r**2) > 0.1 * (u @ u)


def test_amplitudes_round_trip(ref, modes):
    rng = np.random.default_rng(0)
    amps = rng.normal(size=modes.n_modes)
    u = modes.displacements(amps)
    assert np.allclose(modes.amplitudes(u), amps)
    assert np.allclose(modes.amplitudes(u + [0.5, 0.1, -0.2]), amps)  # translation invisible
    assert np.allclose(u.mean(axis=0), 0)


def test_primitive_cell_modes():
    prim = displacement_modes(Perovskite().supercell(1))
    assert prim.n_modes == 12
    assert sorted(s.label for s in prim.subspaces) == ["GM4-", "GM4-", "GM4-", "GM5-"]


def test_strain_basis():
    sb = strain_basis()
    mats = sb.matrices
    gram = np.einsum("kab,lab->kl", mats, mats)
    assert np.allclose(gram, np.eye(6))
    assert sb.subspaces == {"A1g": [0], "Eg": [1, 2], "T2g": [3, 4, 5]}
    assert np.allclose(np.trace(mats[1:], axis1=1, axis2=2), 0)  # only A1g changes the volume
    e = np.array([0.01, -0.02, 0.005, 0.001, 0.003, -0.004])
    assert np.allclose(sb.strain(sb.amplitudes(e)), e)
    # each cubic operation maps each strain subspace into itself
    rots = supercell_symmetry(Perovskite().supercell(1)).rotations
    for name, idx in sb.subspaces.items():
        sub = mats[idx]
        for r in rots:
            img = np.einsum("ab,kbc,dc->kad", r, sub, r)
            coeff = np.einsum("kab,lab->kl", img, sub)
            assert np.allclose((coeff**2).sum(axis=1), 1.0), name
    assert np.allclose(strain_to_matrix(sb.vectors[0]), np.eye(3) / np.sqrt(3))


def test_non_cubic_supercell_modes():
    """sqrt2 x sqrt2 x 2 cell: 57 modes; the z in-phase tilt is its one-dimensional M3+ subspace."""
    ref = Perovskite().supercell([[1, 1, 0], [-1, 1, 0], [0, 0, 2]])
    modes = displacement_modes(ref)
    assert modes.n_modes == 57
    assert np.allclose(modes.matrix @ modes.matrix.T, np.eye(57), atol=1e-10)
    m3 = modes.subspace("M3+")
    assert len(m3) == 1 and m3[0].dimension == 1
    u = tilt_configuration(ref, "a0a0c+", 2).displacements.reshape(-1)
    assert abs(modes.subspace_vectors("M3+").reshape(-1) @ u) / np.linalg.norm(u) > 0.999
    # R-point subspaces of this tetragonal cell carry no cubic irrep name
    assert all(s.irrep == "" for s in modes.subspaces if s.kpoint == "R")
