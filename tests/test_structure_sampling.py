"""Samplers and the uniqueness filter."""

import numpy as np
import pytest

from perovskite_pes.structure import (
    Configuration,
    Perovskite,
    SamplingError,
    UniquenessFilter,
    canonical_key,
    closest_image,
    displacement_modes,
    grid,
    interpolate,
    interpolate_path,
    random_nsphere,
    strain_basis,
    supercell_symmetry,
    tilt_configuration,
)


@pytest.fixture(scope="module")
def ref():
    return Perovskite().supercell(2)


@pytest.fixture(scope="module")
def cubic(ref):
    return Configuration(ref)


def test_shear_grid_reduced_to_irreducible_wedge(cubic):
    """T2g amplitudes {-a,0,a}^3: 27 points fall into 5 orbits under m-3m (signed permutations, even flips)."""
    sb = strain_basis()
    configs = grid(cubic, strain_directions=sb.subspace_vectors("T2g"), strain_amplitudes=[-0.01, 0.0, 0.01])
    assert len(configs) == 5
    full = grid(cubic, strain_directions=sb.subspace_vectors("T2g"), strain_amplitudes=[-0.01, 0.0, 0.01], unique=False)
    assert len(full) == 27
    assert len({canonical_key(c) for c in full}) == 5
    # the volume strain has no equivalent points
    vol = grid(cubic, strain_directions=sb.subspace_vectors("A1g"), strain_amplitudes=np.linspace(-0.03, 0.03, 7))
    assert len(vol) == 7
    assert all(c.tags["method"] == "grid" and len(c.tags["amplitudes"]) == 1 for c in vol)


def test_tilt_mode_grid(ref, cubic):
    modes = displacement_modes(ref)
    r4 = modes.subspace_vectors("R4+")  # anti-phase tilts about x, y, z
    configs = grid(cubic, displacement_directions=r4, displacement_amplitudes=[0.0, 0.3])
    # 0, one axis, two axes, three axes: a0a0a0, a0a0c-, a0b-b-, a-a-a-
    assert len(configs) == 4
    # around a tilted parent, the symmetry is lower and more points survive
    parent = tilt_configuration(ref, "a0a0c-", 8)
    around = grid(parent, displacement_directions=r4, displacement_amplitudes=[-0.1, 0.0, 0.1])
    assert 4 < len(around) < 27
    assert all(c.tags["parent"] == "a0a0c-" for c in around)
    # per-direction amplitude lists
    mixed = grid(cubic, displacement_directions=r4[:2], displacement_amplitudes=[[0.1], [0.0, 0.2]], unique=False)
    assert [c.tags["amplitudes"] for c in mixed] == [[0.1, 0.0], [0.1, 0.2]]


def test_min_distance_is_enforced(ref, cubic):
    modes = displacement_modes(ref)
    push = np.zeros((ref.n_atoms, 3))
    x1 = np.flatnonzero(ref.primitive_index == 2)[0]  # Br at (a/2, 0, 0), next to Pb at the origin
    push[x1, 0] = -1.0
    with pytest.raises(SamplingError, match="closer than the minimum distance"):
        grid(cubic, displacement_directions=push, displacement_amplitudes=[0.0, 2.0])
    kept = grid(cubic, displacement_directions=push, displacement_amplitudes=[0.0, 1.0, 2.0], too_close="skip")
    assert len(kept) == 2
    assert len(grid(cubic, displacement_directions=push, displacement_amplitudes=[2.0], min_distance=0.5)) == 1
    with pytest.raises(SamplingError, match="amplitude lists for 2 directions"):
        grid(cubic, displacement_directions=modes.vectors[:2], displacement_amplitudes=[[0.1]] * 3)
    with pytest.raises(SamplingError, match="shape"):
        grid(cubic, displacement_directions=np.zeros((2, 7, 3)), displacement_amplitudes=[0.1])


def test_random_nsphere_seeded_and_on_the_sphere(cubic):
    a = random_nsphere(cubic, 5, displacement_radius=0.2, strain_radius=0.01, seed=0)
    b = random_nsphere(cubic, 5, displacement_radius=0.2, strain_radius=0.01, seed=0)
    c = random_nsphere(cubic, 5, displacement_radius=0.2, strain_radius=0.01, seed=1)
    assert all(np.allclose(x.displacements, y.displacements) for x, y in zip(a, b))
    assert not np.allclose(a[0].displacements, c[0].displacements)
    sb = strain_basis()
    for cfg in a:
        # orthonormal modes and strain basis: norms equal the radii
        assert np.isclose(np.linalg.norm(cfg.displacements), 0.2)
        assert np.isclose(np.linalg.norm(sb.amplitudes(cfg.strain)), 0.01)
        assert np.allclose(cfg.displacements.mean(axis=0), 0)  # modes exclude translations
    inside = random_nsphere(cubic, 20, displacement_radius=0.2, seed=3, fill=True)
    norms = [np.linalg.norm(x.displacements) for x in inside]
    assert max(norms) <= 0.2 + 1e-12 and min(norms) < 0.2
    with pytest.raises(SamplingError):
        random_nsphere(cubic, 3, seed=0)


def test_random_directions_are_isotropic(ref, cubic):
    """Uniform on the sphere: the mean of many unit amplitude vectors is near zero, second moment I/k."""
    modes = displacement_modes(ref)
    dirs = modes.subspace_vectors("R4+")
    cfgs = random_nsphere(cubic, 400, displacement_directions=dirs, displacement_radius=1.0, seed=5, min_distance=None)
    amps = np.array([c.tags["amplitudes"] for c in cfgs])
    assert np.allclose(np.linalg.norm(amps, axis=1), 1.0)
    assert np.abs(amps.mean(axis=0)).max() < 0.1
    assert np.allclose(amps.T @ amps / len(amps), np.eye(3) / 3, atol=0.06)


def test_uniqueness_filter_rejects_near_duplicates(ref):
    rng = np.random.default_rng(0)
    sym = supercell_symmetry(ref)
    base = Configuration(ref, rng.normal(0, 0.1, (ref.n_atoms, 3)), [0.01, 0, 0, 0, 0, 0])
    flt = UniquenessFilter(tol=0.02)
    assert flt.accept(base)
    # a symmetry image, a translated copy and a slightly perturbed copy are duplicates
    assert not flt.accept(sym.apply(base, 77))
    assert not flt.accept(Configuration(ref, base.displacements + 0.4, base.strain))
    assert not flt.accept(Configuration(ref, base.displacements + rng.normal(0, 1e-3, (ref.n_atoms, 3)), base.strain))
    # a perturbed symmetry image too
    img = sym.apply(base, 200)
    assert not flt.accept(Configuration(ref, img.displacements + 1e-3, img.strain))
    # clearly different ones are accepted
    assert flt.accept(Configuration(ref, base.displacements * 1.5, base.strain))
    assert flt.accept(Configuration(ref, base.displacements, [0.02, 0, 0, 0, 0, 0]))
    assert (flt.n_accepted, flt.n_rejected) == (3, 4)


def test_random_with_uniqueness_counts_rejections(cubic):
    flt = UniquenessFilter(tol=0.5)
    with pytest.warns(RuntimeWarning, match=r"max_tries=60 draws with \d+ of 50 configurations"):
        cfgs = random_nsphere(cubic, 50, displacement_radius=0.3, seed=2, uniqueness=flt, max_tries=60)
    assert flt.n_accepted == len(cfgs) < 50
    assert flt.n_rejected > 0
    # every accepted pair is at least tol apart
    check = UniquenessFilter(tol=0.5)
    assert all(check.accept(c) for c in cfgs)


def test_pluggable_distance_and_embedding(ref, cubic):
    calls = []

    def strain_only(a, b):
        calls.append(1)
        return float(np.linalg.norm(a.strain - b.strain))

    flt = UniquenessFilter(tol=1e-3, distance=strain_only)
    sb = strain_basis()
    configs = grid(cubic, strain_directions=sb.vectors[:1], strain_amplitudes=[0.0, 1e-4, 0.01], unique=False)
    assert len(flt.filter(configs)) == 2 and calls
    emb = UniquenessFilter(tol=0.05, embedding=lambda c: np.sort(np.linalg.norm(c.displacements, axis=1)))
    t1 = tilt_configuration(ref, "a0a0c+", 8)
    t2 = tilt_configuration(ref, "a0b+b+", [0, 8, 8])
    assert emb.accept(t1) and emb.accept(t2) and not emb.accept(tilt_configuration(ref, "a0a0c+", -8))
    with pytest.raises(SamplingError):
        UniquenessFilter(tol=-1)


def test_interpolation(ref, cubic):
    beta = tilt_configuration(ref, "a0a0c-", 8)
    beta.strain = np.array([-0.005, -0.005, 0.01, 0, 0, 0])
    gamma = tilt_configuration(ref, "a+b-b-", [10, 8, 8])
    path = interpolate(cubic, beta, 5)
    assert len(path) == 5
    assert np.allclose(path[0].displacements, 0) and np.allclose(path[-1].displacements, beta.displacements)
    assert np.allclose(path[2].strain, beta.strain / 2)
    full = interpolate_path([cubic, beta, gamma], 4)
    assert len(full) == 7
    assert [c.tags["path_coordinate"] for c in full] == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    inner = interpolate(cubic, beta, 3, endpoints=False)
    assert [c.tags["lambda"] for c in inner] == pytest.approx([0.25, 0.5, 0.75])
    with pytest.raises(SamplingError):
        interpolate(cubic, Configuration(Perovskite().supercell(1)), 3)


def test_alignment_before_interpolation(ref):
    sym = supercell_symmetry(ref)
    beta = tilt_configuration(ref, "a0a0c-", 8)
    rotated = sym.apply(tilt_configuration(ref, "a0a0c-", 9), 123)
    aligned = closest_image(rotated, beta)
    assert canonical_key(aligned) == canonical_key(rotated)
    assert np.allclose(aligned.displacements, tilt_configuration(ref, "a0a0c-", 9).displacements, atol=1e-12)
    mid = interpolate(beta, rotated, 3, align=True)[1]
    assert np.linalg.norm(mid.displacements) > 0.9 * np.linalg.norm(beta.displacements)
