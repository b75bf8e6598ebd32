"""CCD bases: irreps, block diagonality, invariant counts against an independent Molien series."""

import numpy as np
import pytest

from perovskite_pes.descriptors import (
    ClusterBasis,
    InvariantPolynomials,
    PointGroup,
    octahedron_prototype,
    pair_prototypes,
    tetrahedron_prototype,
    triplet_prototype,
)
from perovskite_pes.structure import Perovskite

PV = Perovskite()


def molien_coefficients(mats, max_degree):
    """Coefficients of 1/|G| sum_g 1/det(I - t M_g) up to t^max_degree (independent of the library)."""
    total = np.zeros(max_degree + 1)
    for m in mats:
        c = np.real(np.poly(m))  # det(I - t M) = sum_k c_k t^k
        c = np.concatenate([c, np.zeros(max(0, max_degree + 1 - len(c)))])
        a = np.zeros(max_degree + 1)
        a[0] = 1.0
        for k in range(1, max_degree + 1):
            a[k] = -sum(c[j] * a[k - j] for j in range(1, k + 1))
        total += a
    return total / len(mats)


@pytest.fixture(scope="module")
def octa():
    return ClusterBasis.build(octahedron_prototype(), PV, "lin", 4, False)


@pytest.fixture(scope="module")
def octa_trunc():
    return ClusterBasis.build(octahedron_prototype(), PV, "lin", 4, True)


@pytest.fixture(scope="module")
def tetra():
    return ClusterBasis.build(tetrahedron_prototype(), PV, "lin", 4, False)


@pytest.fixture(scope="module")
def tetra_trunc():
    return ClusterBasis.build(tetrahedron_prototype(), PV, "lin", 4, True)


def test_point_groups_of_named_clusters():
    assert octahedron_prototype().symmetry(PV).group.name == "Oh"
    assert octahedron_prototype().symmetry(PV).order == 48
    assert tetrahedron_prototype().symmetry(PV).group.name == "Td"
    assert tetrahedron_prototype().symmetry(PV).order == 24
    assert triplet_prototype().symmetry(PV).group.name == "D4h"
    p = pair_prototypes(PV, 4)
    assert [q.symmetry(PV).group.name for q in p] == ["C4v", "C2v", "C2v", "C3v"]


def test_character_tables_are_orthonormal():
    for proto in (octahedron_prototype(), tetrahedron_prototype(), triplet_prototype()):
        group = proto.symmetry(PV).group
        table = group.character_table()
        labels = list(table)
        gram = np.array([[table[a] @ table[b] / group.order for b in labels] for a in labels])
        assert np.allclose(gram, np.eye(len(labels)))
        # sum of squared dimensions = group order
        e = group.index_of(np.eye(3))
        assert sum(table[k][e] ** 2 for k in labels) == group.order


def test_octahedron_irreps_match_paper(octa, octa_trunc):
    assert octa.n_ccd == 15
    assert sorted(octa.irreps) == sorted(["A1g", "T1u", "Eg", "T2g", "T2u", "A1g", "Eg"])
    assert {s["irrep"]: s["dim"] for s in octa.subspaces} == {"A1g": 1, "T1u": 3, "Eg": 2, "T2g": 3, "T2u": 3}
    # truncation keeps the 3n-6 = 12 leading CCDs: one copy of the redundant A1g and Eg goes
    assert octa_trunc.n_ccd == 12
    assert sorted(octa_trunc.irreps) == sorted(["A1g", "T1u", "Eg", "T2g", "T2u"])
    # eigenvalues decrease along the CCD vector
    ev = [s["eigenvalue"] for s in octa.subspaces]
    assert all(a > b for a, b in zip(ev, ev[1:]))


def test_tetrahedron_irreps(tetra, tetra_trunc):
    assert sorted(tetra.irreps) == ["A1", "E", "T2"]
    assert tetra.subspaces[0]["irrep"] == "A1"  # volumetric mode has the largest variance
    assert tetra_trunc.n_ccd == 6


@pytest.mark.parametrize("name", ["octa", "octa_trunc", "tetra", "tetra_trunc"])
def test_u_orthonormal_and_mq_block_diagonal_irreducible(name, request):
    b = request.getfixturevalue(name)
    assert np.allclose(b.U @ b.U.T, np.eye(b.n_ccd), atol=1e-12)
    mq = b.q_matrices()
    group = b.symmetry.group
    for s in b.subspaces:
        a, e = s["start"], s["start"] + s["dim"]
        off = mq[:, a:e, :].copy()
        off[:, :, a:e] = 0
        assert np.abs(off).max() < 1e-9
        chi = np.einsum("gii->g", mq[:, a:e, a:e])
        assert chi @ chi / group.order == pytest.approx(1.0, abs=1e-8)  # irreducible
        assert group.irrep_name(chi) == s["irrep"]


@pytest.mark.parametrize("name", ["octa", "octa_trunc", "tetra", "tetra_trunc"])
def test_invariant_counts_equal_molien_series(name, request):
    b = request.getfixturevalue(name)
    expected = np.rint(molien_coefficients(b.q_matrices(), 4)).astype(int)
    counts = b.invariants.counts_per_degree()
    assert [counts.get(d, 0) for d in range(1, 5)] == expected[1:].tolist()


def test_known_invariant_counts(octa, tetra):
    # T_d on A1 + E + T2: 1, 3, 6, 11 invariants of degrees 1..4
    assert tetra.invariants.counts_per_degree() == {1: 1, 2: 3, 3: 6, 4: 11}
    # degree 1: the two A1g CCDs; degree 2: 3 (A1g x A1g) + 1 + 3 (Eg x Eg) + 1 + 1
    assert octa.invariants.counts_per_degree()[1] == 2
    assert octa.invariants.counts_per_degree()[2] == 9


@pytest.mark.parametrize("name", ["octa", "tetra"])
def test_invariants_are_invariant_and_independent(name, request):
    b = request.getfixturevalue(name)
    rng = np.random.default_rng(1)
    q = rng.normal(size=(400, b.n_ccd))
    vals = b.invariants.evaluate(q)
    for m in b.q_matrices()[::5]:
        assert np.allclose(b.invariants.evaluate(q @ m.T), vals, atol=1e-10)
    assert np.linalg.matrix_rank(vals, tol=1e-8 * np.abs(vals).max()) == b.invariants.n_functions


def test_metric_changes_u_but_not_irreps():
    for metric in ("quad", "log", "inv"):
        b = ClusterBasis.build(octahedron_prototype(), PV, metric, 2, False, n_samples=20_000)
        assert sorted(b.irreps) == sorted(["A1g", "T1u", "Eg", "T2g", "T2u", "A1g", "Eg"])


def test_basis_round_trip_dict(octa):
    import json

    again = ClusterBasis.from_dict(json.loads(json.dumps(octa.to_dict())), PV)
    assert np.array_equal(again.U, octa.U)
    q = np.random.default_rng(0).normal(size=(5, 15))
    assert np.allclose(again.invariants.evaluate(q), octa.invariants.evaluate(q))


def test_reynolds_on_a_toy_group():
    # C2 acting as q -> -q on one variable: only even powers survive
    mats = np.array([[[1.0]], [[-1.0]]])
    inv = InvariantPolynomials.build(mats, 4)
    assert inv.degrees == [2, 4]


def test_point_group_rejects_non_group():
    from perovskite_pes.descriptors import DescriptorError

    with pytest.raises(DescriptorError):
        PointGroup([np.diag([1.0, 1, 1]), np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])])
