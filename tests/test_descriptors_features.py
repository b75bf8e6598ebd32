"""Featurizer: invariances, reference values, Eq. (15), autograd derivatives, recipe round trips."""

import json

import numpy as np
import pytest
import torch

from perovskite_pes.descriptors import ClusterBasis, DescriptorError, Featurizer, tetrahedron_prototype
from perovskite_pes.structure import Configuration, Perovskite

PV = Perovskite()
REF = PV.supercell(2)


@pytest.fixture(scope="module")
def feat():
    return Featurizer(REF, "7p+t+o+tet", max_order=2)


@pytest.fixture(scope="module")
def feat4():
    return Featurizer(REF, "4p+t+o", max_order=4, metric="log", truncated=True)


def random_config(seed=0, amp=0.15, strain=0.02, ref=REF):
    rng = np.random.default_rng(seed)
    return Configuration(ref, rng.normal(0, amp, (ref.n_atoms, 3)), rng.normal(0, strain, 6))


def assert_same_multiset(a, b, atol=1e-10):
    """Rows of a and b (n, m) agree up to a permutation of rows."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape
    assert np.allclose(np.sort(a, axis=0), np.sort(b, axis=0), atol=atol)
    w = np.random.default_rng(7).normal(size=a.shape[1])
    assert np.allclose(np.sort(a @ w), np.sort(b @ w), atol=atol)


def test_ccds_and_features_vanish_at_reference(feat, feat4):
    pos = torch.as_tensor(REF.positions)
    lat = torch.as_tensor(REF.lattice)
    for f in (feat, feat4):
        for q in f.ccd(pos, lat):
            assert float(q.abs().max()) < 1e-12
        for phi in f.cluster_features(pos, lat):
            assert float(phi.abs().max()) < 1e-12
    for metric in ("lin", "quad", "inv"):
        f = Featurizer(REF, ["p1", "o"], max_order=1, metric=metric, n_samples=20_000)
        assert max(float(q.abs().max()) for q in f.ccd(pos, lat)) < 1e-12


def test_shapes_and_names(feat):
    pos, lat = feat.arrays([random_config(1), random_config(2)])
    cf = feat.cluster_features(pos, lat)
    assert len(cf) == len(feat.orbit_names) == len(feat.n_functions)
    for t, nc, nf in zip(cf, feat.n_clusters, feat.n_functions):
        assert t.shape == (2, nc, nf) and t.dtype == torch.float64
    sf = feat.site_features(pos, lat)
    assert feat.site_orbit_names == ["A", "B", "X"]
    for t, ns, nf, deg in zip(sf, feat.n_sites, feat.n_site_features, feat.site_degrees):
        assert t.shape == (2, ns, nf) and len(deg) == nf
    # site features are the cluster orbits' functions side by side, so are their degrees
    by_name = dict(zip(feat.orbit_names, feat.degrees))
    for names, deg in zip(feat.site_feature_orbits, feat.site_degrees):
        assert deg == [d for n in names for d in by_name[n]]
    # Cs sites see no Pb-Br pair, octahedron or triplet
    assert "octahedron" not in feat.site_feature_orbits[0]
    assert "triplet" in feat.site_feature_orbits[1] and "octahedron" in feat.site_feature_orbits[2]


def test_labelled_features_name_every_column(feat):
    configs = [random_config(3), random_config(4)]
    cluster = feat.featurize_labelled(configs)
    assert list(cluster) == feat.orbit_names
    raw = feat.featurize(configs)
    for (orbit, item), x, deg in zip(cluster.items(), raw, feat.degrees):
        assert item["values"].shape == tuple(x.shape)
        np.testing.assert_array_equal(item["values"], x.numpy())
        assert item["names"] == [f"{orbit}/phi{m}_d{d}" for m, d in enumerate(deg)]
    sites = feat.featurize_labelled(configs, sites=True)
    assert list(sites) == ["A", "B", "X"]
    for item, n, orbits in zip(sites.values(), feat.n_site_features, feat.site_feature_orbits):
        assert item["values"].shape[-1] == len(item["names"]) == n
        # the columns are the contributing cluster orbits' functions side by side, in order
        assert [name.split("/")[0] for name in item["names"]] == [
            o for o in orbits for _ in range(len(cluster[o]["names"]))
        ]


def test_featurizer_repr_is_one_short_line(feat):
    text = repr(feat)
    assert "\n" not in text and len(text) < 200
    assert "'7p+t+o+tet'" in text and f"{sum(feat.n_functions)} functions" in text and "40-atom" in text


def test_rigid_rotation_and_translation(feat):
    from scipy.spatial.transform import Rotation

    cfg = random_config(3)
    pos, lat = feat.arrays([cfg])
    rot = torch.as_tensor(Rotation.random(random_state=4).as_matrix())
    shift = torch.tensor([3.1, -7.2, 12.9], dtype=torch.float64)
    base = feat.cluster_features(pos, lat)
    moved = feat.cluster_features(pos @ rot.T + shift, lat @ rot.T)
    for a, b in zip(base, moved):
        assert torch.allclose(a, b, atol=1e-10)


def test_rewrapping_atoms(feat):
    cfg = random_config(5, amp=0.3)
    pos, lat = feat.arrays([cfg])
    frac = pos @ torch.linalg.inv(lat)
    wrapped = frac - torch.floor(frac)
    shifts = torch.as_tensor(np.random.default_rng(0).integers(-2, 3, size=frac.shape), dtype=torch.float64)
    for f in (wrapped, wrapped + shifts):
        for a, b in zip(feat.cluster_features(pos, lat), feat.cluster_features(f @ lat, lat)):
            assert torch.allclose(a, b, atol=1e-10)


def supercell_operations(ref):
    import warnings

    import spglib

    s = ref.to_structure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sym = spglib.get_symmetry((s.lattice.matrix, s.frac_coords, [x.specie.Z for x in s]), symprec=1e-5)
    return sym["rotations"], sym["translations"]


def transformed(cfg, rot, tau):
    """Apply a space-group operation (supercell fractional) to a distortion: permute sites, rotate u, e."""
    ref = cfg.reference
    frac = ref.frac_coords()
    img = frac @ rot.T + tau
    diff = img[:, None, :] - frac[None, :, :]
    match = np.all(np.abs(diff - np.round(diff)) < 1e-6, axis=2)
    assert np.all(match.sum(axis=1) == 1)
    perm = match.argmax(axis=1)
    lat = ref.lattice
    s = lat.T @ rot @ np.linalg.inv(lat.T)
    u = np.zeros_like(cfg.displacements)
    u[perm] = cfg.displacements @ s.T
    from perovskite_pes.structure import matrix_to_strain, strain_to_matrix

    e = s @ strain_to_matrix(cfg.strain) @ s.T
    return Configuration(ref, u, matrix_to_strain(e))


def test_every_space_group_operation(feat):
    rots, taus = supercell_operations(REF)
    assert len(rots) == 48 * REF.n_cells
    cfg = random_config(6)
    configs = [transformed(cfg, r, t) for r, t in zip(rots, taus)]
    base = feat.featurize([cfg])
    base_sites = feat.featurize([cfg], sites=True)
    allf = feat.featurize(configs)
    alls = feat.featurize(configs, sites=True)
    for k in range(len(base)):
        for g in range(len(configs)):
            assert_same_multiset(base[k][0], allf[k][g])
    for k in range(len(base_sites)):
        for g in range(0, len(configs), 7):
            assert_same_multiset(base_sites[k][0], alls[k][g])


def test_non_symmetry_operation_changes_features(feat):
    # guard against a trivially invariant featurizer: a different distortion differs
    a = feat.featurize([random_config(8)])
    b = feat.featurize([random_config(9)])
    assert not np.allclose(np.sort(a[-1][0], axis=0), np.sort(b[-1][0], axis=0))


@pytest.mark.parametrize("clusters, telling", [("7p+t+o", []), ("8p+o", ["p8_Br-Br"]), ("7p+t+o+s", ["stack"])])
def test_which_cluster_sets_tell_in_phase_from_anti_phase_tilts(clusters, telling):
    # only clusters that span two layers of octahedra along the tilt axis see the stacking
    from perovskite_pes.structure import tilt_configuration

    f = Featurizer(REF, clusters, max_order=4)
    plus, minus = (f.featurize([tilt_configuration(REF, g, [8.0])]) for g in ("a0a0c+", "a0a0c-"))
    same = [np.allclose(np.sort(x[0], axis=0), np.sort(y[0], axis=0), atol=1e-12) for x, y in zip(plus, minus)]
    assert [n for n, s in zip(f.orbit_names, same) if not s] == telling


def test_stack_cluster_sees_the_tilt_stacking_at_first_order():
    # the B2 CCD (difference of the two A-X distances) vanishes exactly for in-phase tilts (a mirror
    # through the A layer) and is first order in the angle for anti-phase tilts (p8 stacked along the
    # axis only stretches, at second order)
    from perovskite_pes.structure import tilt_configuration

    f = Featurizer(REF, ["stack"], max_order=1)
    (b2,) = [k for k, irrep in enumerate(f.bases[0].irreps) if irrep.startswith("B")]
    amp = {}
    for g in ("a0a0c+", "a0a0c-"):
        for angle in (2.0, 4.0):
            pos, lat = f.arrays([tilt_configuration(REF, g, [angle])])
            amp[g, angle] = np.abs(f.ccd(pos, lat)[0][0, :, b2].numpy()).max()
    assert amp["a0a0c+", 4.0] < 1e-12
    assert amp["a0a0c-", 4.0] > 1e-3
    assert amp["a0a0c-", 4.0] / amp["a0a0c-", 2.0] == pytest.approx(2.0, rel=0.02)


def test_site_features_sum_to_cluster_features(feat):
    pos, lat = feat.arrays([random_config(10), random_config(11)])
    cf = feat.cluster_features(pos, lat)
    sf = feat.site_features(pos, lat, cf)
    nf = feat.n_functions
    for o, name in enumerate(feat.orbit_names):
        total = torch.zeros(2, nf[o], dtype=torch.float64)
        for s, names in enumerate(feat.site_feature_orbits):
            if name in names:
                start = sum(nf[feat.orbit_names.index(n)] for n in names[: names.index(name)])
                total += sf[s][:, :, start : start + nf[o]].sum(dim=1)
        assert torch.allclose(total, cf[o].sum(dim=1), atol=1e-12)


def test_site_feature_of_one_b_site(feat):
    pos, lat = feat.arrays([random_config(12)])
    cf = feat.cluster_features(pos, lat)
    sf = feat.site_features(pos, lat, cf)
    o = feat.orbit_names.index("p1_Pb-Br")
    orbit = feat.orbits[o]
    b_site = feat.site_indices[1][3]
    mask = np.any(orbit.sites == b_site, axis=1)
    assert mask.sum() == 6  # six Pb-Br bonds per Pb
    expected = cf[o][0, torch.as_tensor(mask)].sum(dim=0) / 2
    col = feat.site_feature_orbits[1].index("p1_Pb-Br")
    start = sum(feat.n_functions[feat.orbit_names.index(n)] for n in feat.site_feature_orbits[1][:col])
    assert torch.allclose(sf[1][0, 3, start : start + feat.n_functions[o]], expected)


def energy(f, pos, lat, sites=False):
    cf = f.cluster_features(pos, lat)
    feats = f.site_features(pos, lat, cf) if sites else cf
    rng = np.random.default_rng(0)
    e = 0.0
    for t in feats:
        w = torch.as_tensor(rng.normal(size=t.shape[-1]))
        e = e + (torch.tanh(t @ w)).sum()
    return e


@pytest.mark.parametrize("which, sites", [("feat", False), ("feat4", False), ("feat4", True)])
def test_forces_and_stress_by_autograd_match_finite_differences(which, sites, request):
    f = request.getfixturevalue(which)
    pos0, lat0 = f.arrays([random_config(13, amp=0.2)])
    pos = pos0.clone().requires_grad_(True)
    eps = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    strain = torch.eye(3, dtype=torch.float64) + 0.5 * (eps + eps.T)
    e = energy(f, pos @ strain, lat0 @ strain, sites)
    g_pos, g_eps = torch.autograd.grad(e, (pos, eps))
    h = 1e-5
    rng = np.random.default_rng(1)
    for _ in range(6):
        i, k = int(rng.integers(REF.n_atoms)), int(rng.integers(3))
        d = torch.zeros_like(pos0)
        d[0, i, k] = h
        fd = (energy(f, pos0 + d, lat0, sites) - energy(f, pos0 - d, lat0, sites)) / (2 * h)
        assert float(g_pos[0, i, k]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)
    for a, b in [(0, 0), (1, 2), (0, 1)]:
        d = torch.zeros(3, 3, dtype=torch.float64)
        d[a, b] = d[b, a] = h
        fd = (
            energy(f, pos0 @ (torch.eye(3) + d), lat0 @ (torch.eye(3) + d), sites)
            - energy(f, pos0 @ (torch.eye(3) - d), lat0 @ (torch.eye(3) - d), sites)
        ) / (2 * h)
        analytic = g_eps[a, b] + (g_eps[b, a] if a != b else 0)
        assert float(analytic) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


def _mds(dist):
    n = len(dist)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (dist**2) @ j
    w, v = np.linalg.eigh(b)
    return v[:, -3:] * np.sqrt(np.maximum(w[-3:], 0))


def _align_error(x, y):
    """RMS distance after the best rigid motion (reflection allowed: distances fix no handedness)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    u, _, vt = np.linalg.svd(y.T @ x)
    return np.sqrt(((y @ (u @ vt) - x) ** 2).sum(1).mean())


@pytest.mark.parametrize("metric", ["lin", "quad", "log", "inv"])
def test_tetrahedron_ccds_determine_geometry(metric):
    basis = ClusterBasis.build(tetrahedron_prototype(), PV, metric, 1, False, n_samples=20_000)
    proto = basis.prototype
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = proto.cartesian(PV) + rng.normal(0, 0.4, (4, 3))
        d = np.array([np.linalg.norm(x[j] - x[i]) for i, j in proto.pairs])
        q = basis.ccd(d)
        assert q.shape == (6,)
        d_back = basis.distances_from_ccd(q)
        assert np.allclose(d_back, d, atol=1e-10)
        full = np.zeros((4, 4))
        for (i, j), v in zip(proto.pairs, d_back):
            full[i, j] = full[j, i] = v
        assert _align_error(x, _mds(full)) < 1e-8


def test_featurizer_ccd_matches_cluster_geometry():
    f = Featurizer(REF, ["tetrahedron"], max_order=1, n_samples=20_000)
    cfg = random_config(14, amp=0.2)
    (q,) = f.ccd(*f.arrays([cfg]))
    orbit, basis = f.orbits[0], f.bases[0]
    x = cfg.positions
    for c in range(orbit.n_clusters):
        pts = x[orbit.sites[c]] + orbit.offsets[c] @ cfg.lattice
        d = np.array([np.linalg.norm(pts[j] - pts[i]) for i, j in orbit.prototype.pairs])
        assert np.allclose(q[0, c].numpy(), basis.ccd(d), atol=1e-12)


def test_recipe_round_trip_rebuilds_identical_features(feat4, monkeypatch):
    import perovskite_pes.descriptors.ccd as ccd

    recipe = json.loads(json.dumps(feat4.to_dict()))

    def no_monte_carlo(*args, **kwargs):
        raise AssertionError("loading a recipe must not recompute U")

    monkeypatch.setattr(ccd, "correlation_matrix", no_monte_carlo)
    again = Featurizer.from_dict(recipe)
    assert again.orbit_names == feat4.orbit_names and again.n_functions == feat4.n_functions
    pos, lat = feat4.arrays([random_config(15)])
    for a, b in zip(feat4.cluster_features(pos, lat), again.cluster_features(pos, lat)):
        assert torch.equal(a, b)


def test_for_reference_on_a_larger_supercell(feat):
    big = PV.supercell(4)
    fb = feat.for_reference(big)
    assert fb.n_functions == feat.n_functions
    assert fb.n_clusters == [8 * n for n in feat.n_clusters]
    cfg = random_config(16)
    index = {(int(p), tuple(t)): i for i, (p, t) in enumerate(zip(REF.primitive_index, REF.cell_translation))}
    tiled = np.array(
        [cfg.displacements[index[(int(p), tuple(t % 2))]] for p, t in zip(big.primitive_index, big.cell_translation)]
    )
    big_cfg = Configuration(big, tiled, cfg.strain)
    small = feat.featurize([cfg])
    large = fb.featurize([big_cfg])
    for a, b in zip(small, large):
        assert torch.allclose(b[0].sum(0), 8 * a[0].sum(0), atol=1e-9)
        assert_same_multiset(np.repeat(a[0].numpy(), 8, axis=0), b[0].numpy())


def test_bad_inputs(feat):
    with pytest.raises(DescriptorError, match="shape"):
        feat.cluster_features(torch.zeros(1, 7, 3), torch.eye(3)[None])
    with pytest.raises(DescriptorError, match="metric"):
        Featurizer(REF, "4p+o", metric="cubic")
    with pytest.raises(DescriptorError, match="max_order"):
        Featurizer(REF, "4p+o", max_order=0)
    with pytest.raises(DescriptorError, match="different reference"):
        feat.featurize([random_config(0, ref=PV.supercell(1))])
    with pytest.raises(DescriptorError, match="recipe"):
        Featurizer.from_dict({"format": "something else"})


def test_to_device_keeps_values(feat):
    pos, lat = feat.arrays([random_config(17)])
    before = feat.cluster_features(pos, lat)
    assert feat.to("cpu") is feat and feat.device.type == "cpu"
    after = feat.cluster_features(pos, lat)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    assert feat.orbits[-1].symmetry.order == 24  # the tetrahedron orbit carries its point group


def test_site_features_by_degree_and_orbit_sums(feat4):
    """max_degree keeps exactly the columns of degree <= k; the orbit sums equal the summed site features."""
    pos, lat = feat4.arrays([random_config(7), random_config(8)])
    cf = feat4.cluster_features(pos, lat)
    full = feat4.site_features(pos, lat, cf)
    sums = feat4.site_feature_sums(cf)
    for k in (1, 2, 3):
        low = feat4.site_features(pos, lat, cf, max_degree=k)
        for f, lo, deg in zip(full, low, feat4.site_degrees):
            keep = [i for i, d in enumerate(deg) if d <= k]
            assert lo.shape[-1] == len(keep) > 0
            assert torch.allclose(lo, f[..., keep], atol=1e-14)
    for f, s in zip(full, sums):
        assert torch.allclose(f.sum(1), s, atol=1e-12)


@pytest.mark.parametrize("which", ["feat", "feat4"])
def test_linearised_cluster_features_have_the_features_value_and_derivatives(which, request):
    """At the stored geometries the linearisation gives the featurizer's cluster and site features
    and the same derivatives by positions and by strain (what force and stress training use); a
    different geometry is only approximated, so the check would catch a linearisation at the wrong
    point or with a wrong Jacobian."""
    from perovskite_pes.models.base import strain_handles

    fz = request.getfixturevalue(which)
    configs = [random_config(seed=s, amp=0.08, strain=0.01) for s in range(5)]
    pos = torch.as_tensor(np.array([c.positions for c in configs]))
    lat = torch.as_tensor(np.array([c.lattice for c in configs]))
    lin = fz.cluster_linearisation(pos, lat, chunk=2)  # chunks of 2: the seams are checked too
    assert lin.nbytes == fz.linearisation_nbytes(len(configs))
    idx = [3, 0, 4]
    w = np.random.default_rng(2)

    def energy_and_grads(features):
        x, eps, (xd, ld) = strain_handles(pos[idx], lat[idx])
        site = fz.site_features(None, None, cluster_features=features(xd, ld))
        energy = sum((torch.tanh(f) * torch.as_tensor(w.normal(size=f.shape[-1]))).sum() for f in site)
        return [g.detach().numpy() for g in torch.autograd.grad(energy, [x, eps])]

    exact = fz.cluster_features(pos[idx], lat[idx])
    linear = lin.cluster_features(idx, pos[idx], lat[idx])
    assert all(np.allclose(a.numpy(), b.detach().numpy(), rtol=0, atol=1e-12) for a, b in zip(exact, linear))
    w = np.random.default_rng(2)
    g_exact = energy_and_grads(lambda x, cell: fz.cluster_features(x, cell))
    w = np.random.default_rng(2)
    g_linear = energy_and_grads(lambda x, cell: lin.cluster_features(idx, x, cell))
    for a, b in zip(g_exact, g_linear):
        assert np.abs(a).max() > 1e-3 and np.allclose(a, b, rtol=1e-10, atol=1e-12)
    moved = pos[idx] + 0.05
    moved[:, 0] += 0.1  # one atom moved relative to the others: the features change to second order
    far = [
        a.numpy() - b.detach().numpy()
        for a, b in zip(fz.cluster_features(moved, lat[idx]), lin.cluster_features(idx, moved, lat[idx]))
    ]
    assert max(np.abs(d).max() for d in far) > 1e-8


@pytest.mark.parametrize("which", ["feat", "feat4"])
def test_linearisation_carries_feature_gradients_to_forces_and_strain(which, request):
    """Given the derivatives of an energy by the cluster features at the stored geometries, the
    linearisation's chain rule gives its derivatives by the positions and the strain as autograd
    through the featurizer does; and site_features_adjoint is the transpose of the site assembly (the
    derivatives by the cluster features from those by the site features)."""
    from perovskite_pes.models.base import strain_handles

    fz = request.getfixturevalue(which)
    configs = [random_config(seed=s, amp=0.08, strain=0.01) for s in range(4)]
    pos = torch.as_tensor(np.array([c.positions for c in configs]))
    lat = torch.as_tensor(np.array([c.lattice for c in configs]))
    lin = fz.cluster_linearisation(pos, lat)
    idx = [2, 0]
    rng = np.random.default_rng(4)
    weights = [torch.as_tensor(rng.normal(size=n)) for n in fz.n_site_features]

    def energy(site):
        return sum((torch.tanh(f) * w).sum() for f, w in zip(site, weights))

    x, eps, (xd, ld) = strain_handles(pos[idx], lat[idx])
    exact = torch.autograd.grad(energy(fz.site_features(xd, ld)), [x, eps])
    cluster = [c.detach().requires_grad_(True) for c in fz.cluster_features(pos[idx], lat[idx])]
    site = fz.site_features(None, None, cluster_features=cluster)
    by_cluster = torch.autograd.grad(energy(site), cluster, allow_unused=True)
    by_cluster = [torch.zeros_like(c) if g is None else g for c, g in zip(cluster, by_cluster)]
    site = [s.detach().requires_grad_(True) for s in site]
    by_site = torch.autograd.grad(energy(site), site)
    adjoint = fz.site_features_adjoint(by_site)
    for a, b in zip(by_cluster, adjoint):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    d_pos, d_strain = lin.gradients(idx, adjoint, strain=True)
    for a, b in zip(exact, (d_pos, d_strain)):
        assert a.abs().max() > 1e-3 and torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert lin.gradients(idx, adjoint)[1] is None
    swapped = lin.gradients([0, 2], adjoint, strain=True)  # another configuration's geometry: other numbers
    assert not torch.allclose(swapped[0], d_pos, atol=1e-6)


def test_linearisation_reads_consecutive_configurations_as_views(feat):
    """Consecutive configurations are read as a slice (no copy), others gathered: the same numbers."""
    from perovskite_pes.descriptors.featurizer import _as_rows

    assert _as_rows([1, 2, 3]) == slice(1, 4) and _as_rows(np.arange(4)) == slice(0, 4)
    assert torch.equal(_as_rows([2, 1]), torch.tensor([2, 1])) and torch.equal(_as_rows([0, 2]), torch.tensor([0, 2]))
    configs = [random_config(seed=s, amp=0.08, strain=0.01) for s in range(3)]
    pos = torch.as_tensor(np.array([c.positions for c in configs]))
    lat = torch.as_tensor(np.array([c.lattice for c in configs]))
    lin = feat.cluster_linearisation(pos, lat)
    grads = [torch.as_tensor(np.random.default_rng(o).normal(size=(2, *f.shape[1:]))) for o, f in enumerate(lin.values)]
    grads = feat._by_orbit(grads)
    ahead = lin.gradients([1, 2], grads, strain=True)
    flipped = lin.gradients([2, 1], [g.flip(0) for g in grads], strain=True)
    for a, b in zip(ahead, flipped):
        assert a.abs().max() > 1e-6 and torch.allclose(a, b.flip(0), rtol=1e-12, atol=1e-14)
