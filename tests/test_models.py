"""Energy models: fitting, autograd forces/stress, invariances, extensivity, save/load, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perovskite_pes.errors import PesError
from perovskite_pes.models import ClusterNet, LinearCE, ModelError, NotFittedError, PairPotential, SiteNet, load_model
from perovskite_pes.structure import Configuration, Perovskite

from models_support import ShellFeaturizer, morse_energy, random_configs, repeat_configuration

torch.set_num_threads(1)

FAST_NET = dict(batch_sizes=(4, 16, 64), epochs=(40, 80, 200), learning_rate=1e-2, patience=None, hidden_layers=(16,))


@pytest.fixture(scope="module")
def data(ref):
    configs = random_configs(ref, 60, seed=3)
    return configs, morse_energy(configs)


def make(kind, featurizer, **kw):
    if kind == "pair":
        return PairPotential(n_gaussians=12, **kw)
    if kind == "linear":
        return LinearCE(featurizer=featurizer, **kw)
    cls = ClusterNet if kind == "cluster" else SiteNet
    return cls(featurizer=featurizer, **{**FAST_NET, **kw})


@pytest.fixture(scope="module")
def fitted(featurizer, data):
    configs, e = data
    return {k: make(k, featurizer).fit(configs[:48], e[:48]) for k in ("pair", "linear", "cluster", "site")}


KINDS = ("pair", "linear", "cluster", "site")


# ------------------------------------------------------------------------------------ fitting
def test_pair_potential_recovers_its_own_functional_form(ref):
    rng = np.random.default_rng(0)
    truth = PairPotential(n_gaussians=6)
    truth.coef_ = rng.normal(0, 0.05, truth.n_features)
    truth.e0_, truth.alpha_ = -4.2, 0.0
    configs = random_configs(ref, 70, seed=1)
    e = truth.predict(configs)
    model = PairPotential(n_gaussians=6, alphas=[1e-12]).fit(configs[:60], e[:60])
    assert model.e0_ == pytest.approx(-4.2, abs=1e-4)
    assert np.abs(model.predict(configs[60:]) - e[60:]).max() < 3e-5  # ~1 micro-eV/atom; features are near-collinear


def test_linear_ce_recovers_linear_ecis(ref, featurizer):
    rng = np.random.default_rng(2)
    configs = random_configs(ref, 40, seed=2)
    model = LinearCE(featurizer=featurizer)
    x = model.design_matrix(configs)  # per primitive cell
    v = rng.normal(0, 1.0, x.shape[1])
    e = ref.n_cells * (-3.5 + x @ v)
    model = LinearCE(featurizer=featurizer, alphas=[1e-12]).fit(configs, e)
    assert model.e0_ == pytest.approx(-3.5, abs=1e-6)
    np.testing.assert_allclose(model.coef_, v, atol=1e-5)
    assert set(model.ecis) == set(featurizer.orbit_names)


def test_lasso_linear_ce_fits(ref, featurizer, data):
    configs, e = data
    model = LinearCE(featurizer=featurizer, method="lasso", alphas=[1e-7, 1e-6], cv=3).fit(configs[:48], e[:48])
    assert model.rmse(configs[48:], e[48:]) < 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_fit_beats_constant_predictor(kind, fitted, data):
    configs, e = data
    model = fitted[kind]
    spread = np.std(e[:48] / 40)
    assert model.rmse(configs[:48], e[:48]) < 0.2 * spread
    assert model.rmse(configs[48:], e[48:]) < 0.3 * spread


def test_training_loss_decreases_and_early_stopping_keeps_best(featurizer, data):
    configs, e = data
    model = ClusterNet(featurizer=featurizer, **FAST_NET).fit(configs[:48], e[:48])
    h = model.history_
    assert h.train_loss[-1] < 0.1 * h.train_loss[0]
    best = min(v for v in h.val_loss if v is not None)
    assert h.best_val_loss == pytest.approx(best)
    assert set(h.batch_size) == {4, 16, 43}  # 48 configs, 10% validation: stages clipped to the training set


def test_net_with_force_term_learns_forces(ref, featurizer):
    # synthetic PES with exact forces: a short-ranged pair potential with known weights
    truth = PairPotential(cutoff=5.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(4).normal(0, 0.2, truth.n_features)
    truth.e0_, truth.alpha_ = -3.0, 0.0
    configs = random_configs(ref, 24, seed=5)
    labels = truth.predict_all(configs)
    e, forces = labels["energy"], np.stack(labels["forces"])
    common = dict(
        batch_sizes=(4, 24), epochs=(40, 100), learning_rate=1e-2, validation_fraction=0.0, hidden_layers=(16,)
    )
    e_only = ClusterNet(featurizer=featurizer, **common).fit(configs, e)
    with_f = ClusterNet(featurizer=featurizer, force_weight=1.0, **common).fit(configs, e, forces)
    err = lambda m: np.sqrt(np.mean((m.predict_forces(configs) - forces) ** 2))  # noqa: E731
    assert err(with_f) < 0.5 * err(e_only)
    assert err(with_f) < 0.5 * np.sqrt(np.mean(forces**2))


def test_net_with_stress_term_learns_stresses(ref, featurizer):
    # the same kind of synthetic PES; the stress labels are its exact cell derivatives
    truth = PairPotential(cutoff=5.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(6).normal(0, 0.2, truth.n_features)
    truth.e0_, truth.alpha_ = -3.0, 0.0
    configs = random_configs(ref, 24, seed=7, strain=0.02)
    labels = truth.predict_all(configs)
    e, stresses = labels["energy"], labels["stress"]
    common = dict(
        batch_sizes=(4, 24), epochs=(40, 100), learning_rate=1e-2, validation_fraction=0.0, hidden_layers=(16,)
    )
    e_only = ClusterNet(featurizer=featurizer, **common).fit(configs, e)
    with_s = ClusterNet(featurizer=featurizer, stress_weight=1.0, **common).fit(configs, e, stresses=stresses)
    err = lambda m: np.sqrt(np.mean((m.predict_stress(configs) - stresses) ** 2))  # noqa: E731
    assert err(with_s) < 0.5 * err(e_only)
    assert err(with_s) < 0.5 * np.sqrt(np.mean((stresses - stresses.mean(axis=0)) ** 2))
    assert with_s.get_params()["stress_weight"] == 1.0


def test_net_trains_on_configurations_of_several_supercells(ref, featurizer):
    # 2x2x2 and 3x3x3 configurations of one exact pair PES, interleaved: each supercell's energies are
    # per-cell targets of their own size and its forces and stresses come from its own featurizer, so a
    # mix-up of sizes, normalisations or indices would leave one of the two badly fitted
    truth = PairPotential(cutoff=5.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(8).normal(0, 0.2, truth.n_features)
    truth.e0_, truth.alpha_ = -3.0, 0.0
    big = Perovskite().supercell(3)
    small_configs, big_configs = random_configs(ref, 20, seed=9), random_configs(big, 6, seed=10)
    configs = small_configs[:10] + big_configs[:3] + small_configs[10:] + big_configs[3:]
    labels = [truth.predict_all([c]) for c in configs]
    e = np.array([lab["energy"][0] for lab in labels])
    forces = [lab["forces"][0] for lab in labels]
    stresses = np.array([lab["stress"][0] for lab in labels])
    model = ClusterNet(
        featurizer=featurizer,
        force_weight=1.0,
        stress_weight=1.0,
        batch_sizes=(4, 26),
        epochs=(60, 150),
        learning_rate=1e-2,
        validation_fraction=0.0,
        hidden_layers=(16,),
    ).fit(configs, e, forces, stresses=stresses)
    assert model.reference_ == ref  # the smallest supercell
    for group in (small_configs, big_configs):
        want = truth.predict_all(group)
        n_atoms = group[0].reference.n_atoms
        spread = np.std(want["energy"] / n_atoms)
        assert np.sqrt(np.mean(((model.predict(group) - want["energy"]) / n_atoms) ** 2)) < 0.3 * spread
        f_want = np.stack(want["forces"])
        assert np.sqrt(np.mean((np.stack(model.predict_forces(group)) - f_want) ** 2)) < 0.5 * np.sqrt(
            np.mean(f_want**2)
        )


def test_several_supercells_need_one_crystal_and_no_precomputed_features(ref, featurizer, data):
    configs, e = data
    other = random_configs(Perovskite(lattice_parameter=6.1).supercell(2), 2, seed=1)
    with pytest.raises(ModelError, match="supercells of one reference crystal"):
        ClusterNet(featurizer=featurizer).fit(configs[:4] + other, np.concatenate([e[:4], e[:2]]))
    big = random_configs(Perovskite().supercell(3), 2, seed=1)
    with pytest.raises(ModelError, match="precomputed features need configurations of one supercell"):
        ClusterNet(featurizer=featurizer).fit(configs[:4] + big, np.concatenate([e[:4], e[:2]]), features=[])


def test_stress_term_needs_stresses(featurizer, data):
    configs, e = data
    with pytest.raises(ModelError, match="stress_weight > 0 needs the stresses"):
        ClusterNet(featurizer=featurizer, stress_weight=1.0).fit(configs[:5], e[:5])
    with pytest.raises(ModelError, match=r"stresses must have shape \(5, 6\)"):
        ClusterNet(featurizer=featurizer, stress_weight=1.0).fit(configs[:5], e[:5], stresses=np.zeros((5, 3)))
    with pytest.raises(ModelError, match="stress_weight must be >= 0"):
        ClusterNet(featurizer=featurizer, stress_weight=-1.0).fit(configs[:5], e[:5])


# ------------------------------------------------------------------------------------ physics
@pytest.mark.parametrize("kind", KINDS)
def test_forces_match_finite_differences(kind, fitted, data, ref):
    model = fitted[kind]
    c = data[0][50]
    r = model.compute(c.positions, c.lattice, ref)
    h = 1e-5
    rng = np.random.default_rng(0)
    for i, k in zip(rng.integers(0, ref.n_atoms, 4), rng.integers(0, 3, 4)):
        p = c.positions.copy()
        p[i, k] += h
        ep = model.compute(p, c.lattice, ref, False, False)["energy"]
        p[i, k] -= 2 * h
        em = model.compute(p, c.lattice, ref, False, False)["energy"]
        assert r["forces"][i, k] == pytest.approx(-(ep - em) / (2 * h), abs=1e-6)
    assert np.abs(r["forces"].sum(0)).max() < 1e-9  # no net force (translation invariance)


@pytest.mark.parametrize("kind", KINDS)
def test_stress_matches_strain_derivative(kind, fitted, data, ref):
    model = fitted[kind]
    c = data[0][51]
    r = model.compute(c.positions, c.lattice, ref)
    vol = abs(np.linalg.det(c.lattice))
    h = 1e-6
    for v, (i, j) in enumerate(((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))):
        e = np.zeros((3, 3))
        e[i, j] = e[j, i] = h

        def energy(sign, e=e):
            f = np.eye(3) + sign * e
            return model.compute(c.positions @ f, c.lattice @ f, ref, False, False)["energy"]

        de = (energy(1) - energy(-1)) / (2 * h)
        if i != j:
            de /= 2  # symmetric strain moves both tensor components
        assert r["stress"][v] == pytest.approx(de / vol, abs=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_energy_is_zero_point_at_reference(kind, fitted, ref):
    model = fitted[kind]
    e = model.predict([Configuration(ref)])[0]
    assert e == pytest.approx(ref.n_cells * model.e0_, abs=1e-10)
    r = model.compute(ref.positions, ref.lattice, ref)
    assert np.abs(r["forces"]).max() < 1e-10  # the cubic reference is a stationary point by symmetry


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _symmetry_permutation(ref, op):
    """Site permutation of a cubic point operation (fixing the B site at the origin) on the supercell."""
    frac = ref.frac_coords()
    new = (ref.positions @ op.T) @ np.linalg.inv(ref.lattice)
    perm = np.empty(ref.n_atoms, dtype=int)
    for k, x in enumerate(new):
        d = frac - x
        d -= np.round(d)
        perm[k] = int(np.argmin(np.abs(d).sum(1)))
        assert np.abs(d[perm[k]]).max() < 1e-8
    return perm


@pytest.mark.parametrize("kind", KINDS)
def test_energy_invariant_under_rotation_translation_and_cubic_symmetry(kind, fitted, data, ref):
    model = fitted[kind]
    c = data[0][52]
    e = model.predict([c])[0]
    rot = _rotation(7)
    r = model.compute(c.positions @ rot.T, c.lattice @ rot.T, ref, forces=False, stress=False)
    assert r["energy"] == pytest.approx(e, abs=1e-9)
    shifted = model.compute(c.positions + np.array([0.3, -1.1, 2.0]), c.lattice, ref, False, False)
    assert shifted["energy"] == pytest.approx(e, abs=1e-9)
    # a 4-fold rotation about z and an inversion through the B site are symmetries of Pm-3m
    for op in (np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float), -np.eye(3)):
        perm = _symmetry_permutation(ref, op)
        u = np.empty_like(c.displacements)
        u[perm] = c.displacements @ op.T
        strain_m = op @ c.deformation_gradient @ op.T - np.eye(3)
        from perovskite_pes.structure import matrix_to_strain

        image = Configuration(ref, u, matrix_to_strain(strain_m))
        assert model.predict([image])[0] == pytest.approx(e, abs=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_extensive_on_a_6x6x6_repetition(kind, fitted, data, ref):
    model = fitted[kind]
    c = data[0][53]
    big = repeat_configuration(c, Perovskite().supercell(6))
    e_small = model.predict([c])[0]
    r = model.predict_all([big])
    assert r["energy"][0] == pytest.approx(27 * e_small, rel=1e-10, abs=1e-8)
    f_small = model.predict_forces([c])[0]
    # forces repeat periodically as well
    same_site = [
        (c.reference.primitive_index == big.reference.primitive_index[k])
        & np.all(c.reference.cell_translation == big.reference.cell_translation[k] % 2, axis=1)
        for k in range(0, big.reference.n_atoms, 97)
    ]
    idx = [np.flatnonzero(mask)[0] for mask in same_site]
    np.testing.assert_allclose(r["forces"][0][::97], f_small[idx], atol=1e-9)
    np.testing.assert_allclose(r["stress"][0], model.predict_stress([c])[0], atol=1e-10)


# ------------------------------------------------------------------------------------ persistence
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_reproduces_predictions_exactly(kind, fitted, data, tmp_path, featurizer):
    model = fitted[kind]
    configs = data[0][48:]
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m", featurizer=None if kind == "pair" else featurizer)
    assert type(again) is type(model)
    np.testing.assert_array_equal(again.predict(configs), model.predict(configs))
    np.testing.assert_array_equal(again.predict_forces(configs[:2]), model.predict_forces(configs[:2]))
    assert again.hyperparameters() == model.hyperparameters()


def test_weights_are_read_without_unpickling(fitted, tmp_path, featurizer):
    fitted["cluster"].save(tmp_path / "m")

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"x": Evil()}, tmp_path / "m" / "weights.pt")
    with pytest.raises(ModelError, match="cannot read the weights safely"):
        load_model(tmp_path / "m", featurizer=featurizer)


def test_load_refuses_a_different_featurizer(fitted, tmp_path, ref):
    fitted["linear"].save(tmp_path / "m")
    with pytest.raises(ModelError, match="differs"):
        load_model(tmp_path / "m", featurizer=ShellFeaturizer(ref, rmax=4.5))


# ------------------------------------------------------------------------------------ seeds, errors
def test_seeds_make_runs_repeatable(featurizer, data):
    configs, e = data
    kw = dict(FAST_NET, epochs=(3, 5, 5))
    a = SiteNet(featurizer=featurizer, seed=0, **kw).fit(configs[:30], e[:30]).predict(configs[30:])
    b = SiteNet(featurizer=featurizer, seed=0, **kw).fit(configs[:30], e[:30]).predict(configs[30:])
    c = SiteNet(featurizer=featurizer, seed=1, **kw).fit(configs[:30], e[:30]).predict(configs[30:])
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-8


def test_given_reference_energy_is_kept(featurizer, data, ref):
    configs, e = data
    model = ClusterNet(featurizer=featurizer, reference_energy_per_fu=-3.0, **dict(FAST_NET, epochs=(1, 1, 1))).fit(
        configs[:20], e[:20]
    )
    assert model.e0_ == -3.0
    assert model.predict([Configuration(ref)])[0] == pytest.approx(-3.0 * ref.n_cells, abs=1e-12)


def test_bad_input_raises_clear_errors(featurizer, data):
    configs, e = data
    with pytest.raises(NotFittedError):
        ClusterNet(featurizer=featurizer).predict(configs[:1])
    with pytest.raises(ModelError, match="one total energy"):
        LinearCE(featurizer=featurizer).fit(configs[:5], e[:4])
    with pytest.raises(ModelError, match="hidden_layers"):
        ClusterNet(featurizer=featurizer, hidden_layers=[]).fit(configs[:5], e[:5])
    with pytest.raises(ModelError, match="force_weight > 0 needs the forces"):
        SiteNet(featurizer=featurizer, force_weight=1.0).fit(configs[:5], e[:5])
    with pytest.raises(ModelError, match="list of Configuration"):
        PairPotential().fit(3, e[:5])
    with pytest.raises(ModelError, match="too far from the reference"):
        PairPotential(skin=0.01).fit(configs[:5], e[:5])
    assert issubclass(ModelError, PesError) and issubclass(ModelError, ValueError)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelError, match="not a saved model directory"):
        load_model(tmp_path)


def test_lbfgs_refinement_lowers_the_training_error(featurizer, data):
    configs, e = data
    kw = dict(FAST_NET, epochs=(3, 3, 3), validation_fraction=0.0)
    adam = ClusterNet(featurizer=featurizer, **kw).fit(configs[:48], e[:48])
    refined = ClusterNet(featurizer=featurizer, lbfgs_iterations=40, **kw).fit(configs[:48], e[:48])
    assert "lbfgs" in refined.history_.stage
    assert refined.rmse(configs[:48], e[:48]) < 0.5 * adam.rmse(configs[:48], e[:48])


def test_linear_term_is_the_ridge_solution_and_the_mlps_learn_the_rest(featurizer, data, tmp_path):
    configs, e = data
    lin = LinearCE(featurizer=featurizer).fit(configs[:48], e[:48])
    kw = dict(featurizer=featurizer, linear_term=True, batch_sizes=(16,), validation_fraction=0.0, hidden_layers=(4,))
    start = SiteNet(epochs=0, **kw).fit(configs[:48], e[:48])
    trained = SiteNet(lbfgs_iterations=20, epochs=0, **kw).fit(configs[:48], e[:48])
    # staged training: the linear term stays at the ridge start, the MLPs lower the error below the linear CE
    np.testing.assert_array_equal(trained.mlps_.linear.numpy(), start.mlps_.linear.numpy())
    assert np.abs(start.mlps_.linear.numpy()).max() > 0
    assert trained.rmse(configs[:48], e[:48]) < lin.rmse(configs[:48], e[:48])
    trained.save(tmp_path / "m")
    again = load_model(tmp_path / "m", featurizer=featurizer)
    np.testing.assert_array_equal(again.predict(configs[48:]), trained.predict(configs[48:]))


@pytest.mark.parametrize("kind", ["cluster", "site"])
def test_net_order_hides_higher_degrees_from_the_mlps_only(featurizer, data, tmp_path, kind):
    configs, e = data
    cls = ClusterNet if kind == "cluster" else SiteNet
    model = cls(
        featurizer=featurizer,
        linear_term=True,
        net_order=1,
        batch_sizes=(16,),
        epochs=2,
        validation_fraction=0.0,
        hidden_layers=(4,),
    )
    model.fit(configs[:24], e[:24])
    mlps = model.mlps_
    deg = np.array(featurizer.degrees[0] if kind == "cluster" else featurizer.site_degrees[0])
    x = torch.randn(1, 3, mlps.n_features, dtype=torch.float64, requires_grad=True)
    group = torch.zeros(3, dtype=torch.long)
    (g,) = torch.autograd.grad(mlps.units(x, group).sum(), x)
    lin = mlps.linear[0].numpy()
    hidden = np.where(deg > 1)[0]
    seen = np.where(deg == 1)[0]
    # d(out)/d(x) on degree-2 inputs is the linear coefficient alone; degree-1 inputs also reach the MLP
    np.testing.assert_allclose(g[0, :, hidden].numpy(), np.broadcast_to(lin[hidden], (3, len(hidden))), atol=1e-12)
    assert np.abs(g[0, :, seen].numpy() - lin[seen]).max() > 1e-8
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m", featurizer=featurizer)
    assert again.net_order == 1
    np.testing.assert_array_equal(again.predict(configs[24:]), model.predict(configs[24:]))


def test_net_order_must_be_within_the_basis(featurizer, data):
    configs, e = data
    for bad in (0, 3, 1.5):
        with pytest.raises(ModelError, match="net_order must be an integer from 1 to the basis order"):
            SiteNet(featurizer=featurizer, net_order=bad, epochs=0).fit(configs[:8], e[:8])


@pytest.mark.parametrize("net_order", [None, 1])
def test_padded_and_per_orbit_evaluation_agree(featurizer, data, net_order):
    """Small batches go through one padded batched product, large ones orbit by orbit: same numbers."""
    from perovskite_pes.models.nets import pack, unit_groups

    configs, e = data
    model = SiteNet(
        featurizer=featurizer,
        linear_term=True,
        net_order=net_order,
        batch_sizes=(16,),
        epochs=2,
        validation_fraction=0.0,
        hidden_layers=(4, 3),
    ).fit(configs[:24], e[:24])
    feats = model._standardise(model.precompute(configs[:3]))
    mlps = model.mlps_
    counts = torch.tensor([float(x.shape[1]) for x in feats], dtype=torch.float64)
    anchors = torch.stack([torch.nn.functional.pad(a, (0, mlps.n_features - a.shape[-1])) for a in model._anchors()])
    packed = mlps(pack(feats, mlps.n_features), unit_groups(feats), counts, anchors)
    grouped = mlps.grouped(feats, counts, anchors)
    torch.testing.assert_close(packed, grouped, rtol=1e-12, atol=1e-12)


def test_site_net_split_evaluation_matches_the_general_path(ref, data):
    """With net_order, large cells skip the site features the MLPs do not see: same energy and forces."""
    from perovskite_pes.descriptors import Featurizer
    from perovskite_pes.models.nets import orbit_sum

    configs, e = data
    fz = Featurizer(ref, "4p+t+o", max_order=3, metric="inv")
    model = SiteNet(
        featurizer=fz,
        linear_term=True,
        net_order=2,
        hidden_layers=(5,),
        batch_sizes=(16,),
        epochs=3,
        validation_fraction=0.0,
    ).fit(configs[:30], e[:30])
    pos = torch.as_tensor(np.stack([c.positions for c in configs[30:33]])).requires_grad_(True)
    lat = torch.as_tensor(np.stack([c.lattice for c in configs[30:33]]))
    fast = model._split_sum(fz, pos, lat)
    general = orbit_sum(model.mlps_, model._standardise(model._raw(fz, pos, lat)), model._anchors())
    torch.testing.assert_close(fast, general, rtol=1e-11, atol=1e-11)
    (g_fast,) = torch.autograd.grad(fast.sum(), pos)
    (g_general,) = torch.autograd.grad(general.sum(), pos)
    torch.testing.assert_close(g_fast, g_general, rtol=1e-10, atol=1e-10)
    # and it is the path predictions take
    expected = model.reference_.n_cells * model.e0_ + model.output_scale_ * general.detach().numpy()
    np.testing.assert_allclose(model.predict(configs[30:33]), expected, rtol=0, atol=1e-10)


def test_pair_potential_skin_grows_with_the_distortions(ref):
    """The automatic skin covers strongly displaced cells; features equal those of a large fixed skin."""
    rng = np.random.default_rng(4)
    mild = random_configs(ref, 6, seed=5, amplitude=0.05)
    wild = [Configuration(ref, rng.normal(0, 0.5, (ref.n_atoms, 3)), rng.normal(0, 0.01, 6)) for _ in range(4)]
    auto = PairPotential(n_gaussians=8)
    fixed = PairPotential(n_gaussians=8, skin=9.0)
    np.testing.assert_allclose(auto.relative_features(mild), fixed.relative_features(mild), atol=1e-12)
    small_list = auto._pairs[ref][0]
    np.testing.assert_allclose(auto.relative_features(wild), fixed.relative_features(wild), atol=1e-12)
    assert auto._pairs[ref][0] > small_list  # rebuilt for the wilder batch
    with pytest.raises(ModelError, match="use a larger skin or skin=None"):
        PairPotential(n_gaussians=8, skin=0.5).relative_features(wild)


# ------------------------------------------------------------------------------------ configuration weights
def test_configuration_weights_halve_at_the_scale_and_average_one():
    from perovskite_pes.models.nets import configuration_weights

    assert configuration_weights([1.0, 2.0], 10, None) is None
    e = np.array([-5.0, -5.0 + 0.8, -5.0 + 8.0, -4.0])  # 40 atoms: 0, 20, 200, 25 meV/atom above the lowest
    w = configuration_weights(e, 40, 0.02)
    assert w.mean() == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(0.5) and w[2] / w[0] == pytest.approx(0.02 / 0.22)
    assert np.all(np.diff(w[np.argsort(e)]) < 0)  # higher energy, lower weight
    # normalised over the training part only; the others keep the same formula
    wt = configuration_weights(e, 40, 0.02, train_idx=[0, 1])
    assert wt[[0, 1]].mean() == pytest.approx(1.0) and wt[2] / wt[0] == pytest.approx(w[2] / w[0])
    # size_power: times (atoms / fewest atoms) ** power, with the energy weights or alone
    atoms = [40, 40, 320, 320]
    ws, we = (configuration_weights(e, atoms, 0.02, size_power=p) for p in (1.0, 0.0))
    assert ws.mean() == pytest.approx(1.0) and np.allclose(ws / we * we[0] / ws[0], [1, 1, 8, 8])
    wp = configuration_weights(e, atoms, None, size_power=0.5)
    assert wp.mean() == pytest.approx(1.0) and np.allclose(wp / wp[0], [1, 1, 8**0.5, 8**0.5])
    assert configuration_weights(e, 40, None, size_power=0.0) is None


def test_energy_weights_favour_the_low_configurations_and_vanish_when_flat(featurizer, data):
    configs, e = data
    small = dict(FAST_NET, hidden_layers=(2,), validation_fraction=0.0)
    plain = ClusterNet(featurizer=featurizer, **small).fit(configs, e)
    # a scale far above the energy spread gives weights of 1: the same fit
    flat = ClusterNet(featurizer=featurizer, energy_weight_scale=1e9, **small).fit(configs, e)
    assert np.allclose(plain.predict(configs), flat.predict(configs), atol=1e-6)
    n_atoms = configs[0].reference.n_atoms
    spread = (e.max() - e.min()) / n_atoms
    weighted = ClusterNet(featurizer=featurizer, energy_weight_scale=0.02 * spread, **small).fit(configs, e)
    low = np.argsort(e)[: len(e) // 4]
    rmse = lambda m, i: np.sqrt(np.mean((m.predict([configs[k] for k in i]) - e[i]) ** 2))  # noqa: E731
    assert rmse(weighted, low) < 0.95 * rmse(plain, low)  # 15-20 % lower over net seeds 0-2
    assert weighted.get_params()["energy_weight_scale"] == pytest.approx(0.02 * spread)
    with pytest.raises(ModelError, match="energy_weight_scale must be a positive energy per atom"):
        ClusterNet(featurizer=featurizer, energy_weight_scale=-0.1).fit(configs[:5], e[:5])


def test_size_weight_favours_the_larger_supercell(ref, featurizer):
    # 2x2x2 and 3x3x3 configurations labelled by two different pair PESs, which no one net fits
    # together: weighing each configuration by its cells moves the fit towards the 3x3x3 labels
    truths = []
    for seed in (8, 9):
        t = PairPotential(cutoff=5.0, n_gaussians=6, r_min=2.5)
        t.coef_ = np.random.default_rng(seed).normal(0, 0.2, t.n_features)
        t.e0_, t.alpha_ = -3.0, 0.0
        truths.append(t)
    small, big = random_configs(ref, 24, seed=9), random_configs(Perovskite().supercell(3), 8, seed=10)
    configs = small + big
    e = np.concatenate([truths[0].predict(small), truths[1].predict(big)])
    kw = dict(featurizer=featurizer, batch_sizes=(8, 32), epochs=(40, 100), learning_rate=1e-2)
    kw.update(validation_fraction=0.0, hidden_layers=(4,))

    def rmse(m, group, t):
        return np.sqrt(np.mean(((m.predict(group) - t.predict(group)) / group[0].reference.n_atoms) ** 2))

    plain, weighted = (ClusterNet(size_weight=p, **kw).fit(configs, e) for p in (0.0, 3.0))
    assert rmse(weighted, big, truths[1]) < 0.7 * rmse(plain, big, truths[1])
    assert rmse(weighted, small, truths[0]) > rmse(plain, small, truths[0])
    assert weighted.get_params()["size_weight"] == 3.0
    # one supercell: every weight is 1, the same fit as without
    same = ClusterNet(size_weight=2.0, **kw).fit(small, e[:24])
    assert np.allclose(same.predict(small), ClusterNet(**kw).fit(small, e[:24]).predict(small), atol=1e-8)
    with pytest.raises(ModelError, match="size_weight must be a power >= 0"):
        ClusterNet(featurizer=featurizer, size_weight=-1.0).fit(small[:5], e[:5])


@pytest.mark.parametrize("cls", [ClusterNet, SiteNet])
def test_linearised_features_train_the_same_net(cls, monkeypatch):
    """Training on forces and stresses with the cluster features linearised once (the default) gives the
    net that computing them from the positions at every step gives: same losses, same weights, on 2x2x2
    and 3x3x3 cells together, through Adam and L-BFGS."""
    import perovskite_pes.models.nets as nets
    from perovskite_pes.descriptors import Featurizer

    small, big = Perovskite().supercell(2), Perovskite().supercell(3)
    fz = Featurizer(small, "4p+o", max_order=2)
    truth = PairPotential(cutoff=5.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(8).normal(0, 0.2, truth.n_features)
    truth.e0_, truth.alpha_ = -3.0, 0.0
    configs = random_configs(small, 10, seed=9) + random_configs(big, 3, seed=10)
    labels = [truth.predict_all([c]) for c in configs]
    e = np.array([lab["energy"][0] for lab in labels])
    forces = [lab["forces"][0] for lab in labels]
    stresses = np.array([lab["stress"][0] for lab in labels])
    kw = dict(featurizer=fz, force_weight=1.0, stress_weight=1.0, batch_sizes=(4,), epochs=(5,), hidden_layers=(4,))
    built = []
    real = Featurizer.cluster_linearisation
    monkeypatch.setattr(Featurizer, "cluster_linearisation", lambda *a, **k: built.append(1) or real(*a, **k))
    linear = cls(lbfgs_iterations=20, **kw).fit(configs, e, forces, stresses=stresses)
    assert len(built) == 2  # one linearisation per supercell
    monkeypatch.setattr(nets, "LINEARISATION_MAX_BYTES", 0)
    exact = cls(lbfgs_iterations=20, **kw).fit(configs, e, forces, stresses=stresses)
    assert len(built) == 2 and "lbfgs" in exact.history_.stage
    np.testing.assert_allclose(linear.history_.train_loss, exact.history_.train_loss, rtol=1e-8)
    for a, b in zip(linear.mlps_.parameters(), exact.mlps_.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-7, atol=1e-10)
