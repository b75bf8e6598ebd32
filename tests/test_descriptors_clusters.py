"""Cluster prototypes, orbits with image offsets, cluster sets."""

import numpy as np
import pytest

from perovskite_pes.descriptors import (
    ClusterOrbit,
    DescriptorError,
    octahedron_prototype,
    pair_prototypes,
    parse_clusters,
    site_orbits,
    stack_prototype,
    tetrahedron_prototype,
    triplet_prototype,
)
from perovskite_pes.structure import Perovskite

PV = Perovskite()
A = PV.lattice_parameter


def test_pair_orbits_ordered_by_distance_and_species():
    pairs = pair_prototypes(PV, 8)
    names = [p.name for p in pairs]
    assert names == [
        "p1_Pb-Br",
        "p2_Cs-Br",
        "p3_Br-Br",
        "p4_Cs-Pb",
        "p5_Cs-Cs",
        "p6_Pb-Pb",
        "p7_Br-Br",
        "p8_Br-Br",
    ]
    d = [p.distances(PV)[0] for p in pairs]
    assert np.allclose(d, [A / 2, A / np.sqrt(2), A / np.sqrt(2), A * np.sqrt(3) / 2, A, A, A, A])
    # p7 is the Br-Br pair through a Pb (collinear), p8 the side-by-side one
    p7 = pairs[6].points
    assert np.allclose(np.abs(p7[1] - p7[0]), [1, 0, 0])
    assert np.allclose(np.cross(p7[1] - p7[0], p7[0] - np.round(p7[0])), 0)


@pytest.mark.parametrize(
    "proto, size",
    [
        ("p1", 48),
        ("p2", 96),
        ("p3", 96),
        ("p4", 64),
        ("p5", 24),
        ("p6", 24),
        ("p7", 24),
        ("p8", 48),
        ("triplet", 24),
        ("octahedron", 8),
        ("tetrahedron", 16),
        ("stack", 96),
    ],
)
def test_orbit_sizes_in_2x2x2(proto, size):
    ref = PV.supercell(2)
    (p,) = parse_clusters([proto], PV)
    orbit = ClusterOrbit(p, ref)
    assert orbit.n_clusters == size
    # all clusters distinct as sets of (site, offset) up to a global supercell translation
    keys = set()
    for sites, off in zip(orbit.sites, orbit.offsets):
        pts = ref.frac_coords()[sites] + off
        keys.add(tuple(sorted(map(tuple, np.round(pts - np.floor(pts[0] + 1e-9), 6)))))
    assert len(keys) == size


def test_offsets_give_reference_distances_for_long_pairs():
    # in a 1x1x1 cell the Pb-Pb pair is a site and its own image; in 2x2x2 it is half the cell
    for n in (1, 2):
        ref = PV.supercell(n)
        (p6,) = parse_clusters(["p6"], PV)
        orbit = ClusterOrbit(p6, ref)
        assert orbit.n_clusters == 3 * ref.n_cells
        vec = orbit.pair_s0 @ ref.lattice
        assert np.allclose(np.linalg.norm(vec, axis=-1), A)
        if n == 1:
            assert np.all(orbit.sites[:, 0] == orbit.sites[:, 1])
    # octahedron in the 1x1x1 cell: 6 X images around one B
    orbit = ClusterOrbit(octahedron_prototype(), PV.supercell(1))
    assert orbit.n_clusters == 1
    vec = orbit.pair_s0[0] @ PV.supercell(1).lattice
    assert np.allclose(np.sort(np.linalg.norm(vec, axis=-1)), np.sort(octahedron_prototype().distances(PV)))


def test_non_diagonal_supercell_orbits():
    ref = PV.supercell([[1, 1, 0], [-1, 1, 0], [0, 0, 2]])
    orbit = ClusterOrbit(octahedron_prototype(), ref)
    assert orbit.n_clusters == ref.n_cells
    orbit = ClusterOrbit(parse_clusters(["p1"], PV)[0], ref)
    assert orbit.n_clusters == 6 * ref.n_cells
    assert np.allclose(np.linalg.norm(orbit.pair_s0 @ ref.lattice, axis=-1), A / 2)


def test_paper_cluster_sets():
    counts = {"4p+o": 5, "5p+o": 6, "8p+o": 9, "4p+t+o": 6, "7p+t+o": 9}
    for name, n in counts.items():
        protos = parse_clusters(name, PV)
        assert len(protos) == n
        assert protos[-1].name == "octahedron"
    assert [p.name for p in parse_clusters("7p+t+o", PV)][-2:] == ["triplet", "octahedron"]


def test_triplet_and_tetrahedron_geometry():
    t = triplet_prototype()
    assert t.species(PV) == ["Pb", "Br", "Pb"]
    assert np.allclose(sorted(t.distances(PV)), [A / 2, A / 2, A])
    tet = tetrahedron_prototype()
    assert np.allclose(tet.distances(PV), A * np.sqrt(2))
    # an A between two side-by-side X (the p8 pair), each on a B-X-B link along the same axis
    s = stack_prototype()
    assert s.species(PV) == ["Cs", "Br", "Br"]
    assert np.allclose(sorted(s.distances(PV)), [A / np.sqrt(2), A / np.sqrt(2), A])
    assert s.symmetry(PV).group.name == "C2v"
    assert [p.name for p in parse_clusters("2p+s", PV)] == ["p1_Pb-Br", "p2_Cs-Br", "stack"]


def test_explicit_cluster_dict_and_errors():
    (c,) = parse_clusters([{"name": "BX", "points": [[0, 0, 0], [0, 0.5, 0]]}], PV)
    assert c.symmetry(PV).group.name == "C4v"
    with pytest.raises(DescriptorError, match="not a site"):
        parse_clusters([{"name": "bad", "points": [[0, 0, 0], [0.25, 0, 0]]}], PV)
    with pytest.raises(DescriptorError, match="unknown cluster"):
        parse_clusters("3p+cube", PV)
    with pytest.raises(DescriptorError, match="same site"):
        parse_clusters([{"name": "dup", "points": [[0, 0, 0], [0, 0, 0]]}], PV)
    with pytest.raises(DescriptorError, match="unique"):
        parse_clusters(["o", "octahedron"], PV)


def test_site_orbits():
    ref = PV.supercell(2)
    names, members = site_orbits(ref)
    assert names == ["A", "B", "X"]
    assert [len(m) for m in members] == [8, 8, 24]
    assert set(ref.sublattice[members[2]]) == {"X"}
