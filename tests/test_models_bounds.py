"""bounded=True: models stay bounded below and rise outside their training window, unchanged inside it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from perovskite_pes.models import ClusterNet, Committee, LinearCE, ModelError, SiteNet, load_model
from perovskite_pes.models.bounds import FeatureWindow
from perovskite_pes.structure import Configuration

from models_support import morse_energy, random_configs

torch.set_num_threads(1)

NET = dict(batch_sizes=(8, 40), epochs=(30, 60), learning_rate=1e-2, patience=None, hidden_layers=[6])


@pytest.fixture(scope="module")
def data(ref):
    configs = random_configs(ref, 56, seed=3, amplitude=0.06)
    return configs, morse_energy(configs)


def _make(kind, featurizer, **kw):
    if kind == "linear":
        return LinearCE(featurizer=featurizer, **kw)
    return (ClusterNet if kind == "cluster" else SiteNet)(featurizer=featurizer, **NET, **kw)


@pytest.fixture(scope="module")
def pairs(featurizer, data):
    """The same recipe fitted free and bounded, per model kind."""
    configs, e = data
    return {
        k: (
            _make(k, featurizer).fit(configs[:48], e[:48]),
            _make(k, featurizer, bounded=True).fit(configs[:48], e[:48]),
        )
        for k in ("linear", "cluster", "site")
    }


def _bond(ref):
    """A B site, its nearest X neighbour and the unit vector B -> X."""
    b = int(np.flatnonzero(ref.sublattice == "B")[0])
    d = np.linalg.norm(ref.positions - ref.positions[b], axis=1)
    x = int(np.flatnonzero((ref.sublattice == "X") & (d < 0.6 * ref.perovskite.lattice_parameter))[0])
    v = ref.positions[x] - ref.positions[b]
    return b, x, v / np.linalg.norm(v)


def _training_extremes(configs, ref):
    """Shortest B-X distance (nearest shell) and largest atomic displacement in the training configurations."""
    b, x, _ = _bond(ref)
    d = [np.linalg.norm(c.positions[x] - c.positions[b]) for c in configs]
    umax = max(np.linalg.norm(c.displacements - c.displacements.mean(0), axis=1).max() for c in configs)
    return min(d), umax


@pytest.mark.parametrize("kind", ["linear", "cluster", "site"])
def test_inside_the_training_window_nothing_changes(kind, pairs, data):
    configs, e = data
    free, bounded = pairs[kind]
    np.testing.assert_array_equal(bounded.predict(configs[:48]), free.predict(configs[:48]))  # same fit, no wall
    np.testing.assert_array_equal(bounded.predict_forces(configs[:4]), free.predict_forces(configs[:4]))
    if kind == "linear":
        np.testing.assert_array_equal(bounded.coef_, free.coef_)
    # held-out configurations of the same distribution: (almost) unchanged
    assert np.abs(bounded.predict(configs[48:]) - free.predict(configs[48:])).max() / 40 < 5e-4


@pytest.mark.parametrize("kind", ["linear", "cluster", "site"])
def test_energy_rises_as_a_pair_is_compressed_below_the_shortest_training_distance(kind, pairs, data, ref):
    configs, _ = data
    free, bounded = pairs[kind]
    b, x, v = _bond(ref)
    d_min, _ = _training_extremes(configs[:48], ref)
    d0 = np.linalg.norm(ref.positions[x] - ref.positions[b])
    energies = []
    for d in np.linspace(d_min, 0.55 * d0, 25):  # from the shortest training B-X distance to 1.6 A
        u = np.zeros((ref.n_atoms, 3))
        u[x] = (d - d0) * v
        energies.append(bounded.predict([Configuration(ref, u)])[0])
    assert np.all(np.diff(energies) > 0)
    assert energies[-1] - energies[0] > 0.3  # a wall (eV), not a plateau
    if kind != "linear":  # the free nets saturate (tanh): nothing stops the compression
        u = np.zeros((ref.n_atoms, 3))
        u[x] = -0.45 * d0 * v
        assert free.predict([Configuration(ref, u)])[0] - free.predict([Configuration(ref)])[0] < 1.0


@pytest.mark.parametrize("kind", ["linear", "cluster", "site"])
def test_energy_rises_as_an_atom_leaves_its_site(kind, pairs, data, ref):
    configs, _ = data
    _free, bounded = pairs[kind]
    _, umax = _training_extremes(configs[:48], ref)
    rng = np.random.default_rng(5)
    for site in (0, 8, 20):  # an A, a B and an X site
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        energies = []
        for t in np.linspace(umax, 2.0, 20):  # from the largest training displacement to 2 A
            u = np.zeros((ref.n_atoms, 3))
            u[site] = t * direction
            energies.append(bounded.predict([Configuration(ref, u)])[0])
        assert np.all(np.diff(energies) > 0), (site, np.diff(energies))


def test_a_runaway_fit_is_bounded_below_and_rises(featurizer, data, ref):
    """ECIs whose energy falls without bound away from the data: bounded, the energy turns back up."""
    configs, e = data
    free = LinearCE(featurizer=featurizer).fit(configs[:48], e[:48])
    bounded = LinearCE(featurizer=featurizer, bounded=True).fit(configs[:48], e[:48])
    for m in (free, bounded):
        m.coef_ = -np.abs(m.coef_)  # every basis function now lowers the energy
    b, x, v = _bond(ref)
    ts = np.linspace(0, 1.5, 31)
    configs_t = []
    for t in ts:
        u = np.zeros((ref.n_atoms, 3))
        u[x] = -t * v
        configs_t.append(Configuration(ref, u))
    e_free, e_bounded = free.predict(configs_t), bounded.predict(configs_t)
    assert e_free[-1] < e_free[0] - 1.0  # runs away
    lowest = bounded.predict(configs[:48]).min()
    assert e_bounded.min() > lowest - 1.0 and e_bounded[-1] > e_bounded[0] + 1.0
    assert np.all(np.diff(e_bounded[-15:]) > 0)


@pytest.mark.parametrize("kind", ["linear", "site"])
def test_forces_and_local_terms_outside_the_window(kind, pairs, data, ref):
    """Autograd forces equal finite differences out there too; the energy is still a sum of unit terms."""
    _free, bounded = pairs[kind]
    rng = np.random.default_rng(2)
    far = Configuration(ref, rng.normal(0, 0.25, (ref.n_atoms, 3)))
    r = bounded.compute(far.positions, far.lattice, ref)
    h = 1e-5
    for i, k in ((3, 0), (22, 2)):
        p = far.positions.copy()
        p[i, k] += h
        ep = bounded.compute(p, far.lattice, ref, False, False)["energy"]
        p[i, k] -= 2 * h
        em = bounded.compute(p, far.lattice, ref, False, False)["energy"]
        assert r["forces"][i, k] == pytest.approx(-(ep - em) / (2 * h), rel=1e-5, abs=1e-5)
    fz = bounded.featurizer_for(ref)

    def unit_sum(c):
        pos, lat = torch.as_tensor(c.positions[None]), torch.as_tensor(c.lattice[None])
        raw = fz.cluster_features(pos, lat) if kind == "linear" else fz.site_features(pos, lat)
        total = float(sum(bounded.unit_energies(g, x).sum() for g, x in enumerate(raw)))
        if kind == "site":  # plus one wall term per cluster
            total += float(sum(bounded.cluster_wall(o, x).sum() for o, x in enumerate(fz.cluster_features(pos, lat))))
        return total

    near = data[0][50]
    de = bounded.predict([far])[0] - bounded.predict([near])[0]
    assert unit_sum(far) - unit_sum(near) == pytest.approx(de, rel=1e-10, abs=1e-8)


def test_a_site_net_walls_each_bond_not_only_each_site(pairs, data, ref, tmp_path, featurizer):
    """A B atom off-centred towards one X: its own bonds shorten on one side and lengthen on the other,
    so the B site's averaged features hardly move; the cluster wall sees the one short bond. The walls
    are zero on the training data and saved with the model (local MC moves: test_simulation_runs)."""
    configs, _ = data
    _free, bounded = pairs["site"]
    assert bounded.cluster_window_ is not None
    without = SiteNet(featurizer=featurizer, **NET, bounded=True).fit(configs[:48], data[1][:48])
    without.cluster_window_ = None  # the same fit with the site wall alone
    b, x, v = _bond(ref)
    d_min, _ = _training_extremes(configs[:48], ref)
    d0 = np.linalg.norm(ref.positions[x] - ref.positions[b])
    walls = []
    for d in np.linspace(d_min, 0.6 * d0, 15):
        u = np.zeros((ref.n_atoms, 3))
        u[b] = (d0 - d) * v  # the B moves towards the X
        c = [Configuration(ref, u)]
        walls.append(bounded.predict(c)[0] - without.predict(c)[0])
    # zero at the shortest training bond, then rising as the bond is compressed beyond it
    assert walls[0] == pytest.approx(0.0, abs=1e-9) and np.all(np.diff(walls) >= 0)
    assert np.all(np.diff(walls[3:]) > 0) and walls[-1] > 0.3
    np.testing.assert_array_equal(bounded.predict(configs[:48]), without.predict(configs[:48]))
    bounded.save(tmp_path / "site")
    again = load_model(tmp_path / "site", featurizer=featurizer)
    assert again.cluster_window_ is not None
    np.testing.assert_array_equal(again.predict(c), bounded.predict(c))


def test_save_load_and_models_saved_before_the_option(pairs, data, tmp_path, featurizer):
    configs = data[0][48:]
    rng = np.random.default_rng(1)
    far = [Configuration(c.reference, rng.normal(0, 0.2, c.displacements.shape)) for c in configs[:3]]
    for kind in ("linear", "cluster"):
        free, bounded = pairs[kind]
        bounded.save(tmp_path / kind)
        again = load_model(tmp_path / kind, featurizer=featurizer)
        assert again.bounded and again.window_ is not None
        np.testing.assert_array_equal(again.predict(far), bounded.predict(far))
        # a model saved before the option existed: no bounded hyperparameters, no window in the state
        free.save(tmp_path / f"old-{kind}")
        f = tmp_path / f"old-{kind}" / "model.json"
        recipe = json.loads(f.read_text())
        for key in ("bounded", "bound_width", "bound_strength", "bound_offset", "bound_scale"):
            recipe["hyperparameters"].pop(key)
        recipe["state"].pop("window")
        f.write_text(json.dumps(recipe))
        old = load_model(tmp_path / f"old-{kind}", featurizer=featurizer)
        assert not old.bounded and old.window_ is None
        np.testing.assert_array_equal(old.predict(far), free.predict(far))


def test_bounded_committee_and_bad_settings(featurizer, data):
    configs, e = data
    c = Committee("linear", {"bounded": True}, size=3, featurizer=featurizer).fit(configs[:40], e[:40])
    assert all(m.window_ is not None for m in c.members_)
    with pytest.raises(ModelError, match="bound_width must be > 0"):
        LinearCE(featurizer=featurizer, bounded=True, bound_width=0).fit(configs[:10], e[:10])
    with pytest.raises(ModelError, match="one degree per feature"):
        FeatureWindow([[0.0, 0.0]], [[1.0, 1.0]], degrees=[[1.0]])
