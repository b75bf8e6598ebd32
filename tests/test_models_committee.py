"""Committee of models: mean and spread, resampling, persistence, the ASE calculator, spread vs error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perovskite_pes.models import ClusterNet, Committee, LinearCE, ModelError, PESCalculator, load_model, reports
from perovskite_pes.structure import Perovskite

from models_support import morse_energy, random_configs, repeat_configuration

torch.set_num_threads(1)

NET = dict(batch_sizes=(8, 40), epochs=(30, 60), learning_rate=1e-2, patience=None, hidden_layers=[6])


@pytest.fixture(scope="module")
def data(ref):
    configs = random_configs(ref, 56, seed=3, amplitude=0.06)
    return configs, morse_energy(configs)


@pytest.fixture(scope="module")
def committee(featurizer, data):
    configs, e = data
    return Committee("cluster", NET, size=4, seed=5, featurizer=featurizer).fit(configs[:48], e[:48])


def test_identical_members_have_exactly_zero_spread(featurizer, data, ref):
    configs, e = data
    same = Committee("cluster", NET, size=3, resample="none", seeds=[2, 2, 2], featurizer=featurizer).fit(
        configs[:40], e[:40]
    )
    single = ClusterNet(featurizer=featurizer, seed=2, **NET).fit(configs[:40], e[:40])
    u = same.predict_uncertainty(configs[40:])
    assert np.all(u["energy_std"] == 0) and np.all(u["max_force_deviation"] == 0)
    assert all(np.all(f == 0) for f in u["forces_std"]) and np.all(u["stress_std"] == 0)
    np.testing.assert_allclose(u["energy"], single.predict(configs[40:]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.stack(u["forces"]), single.predict_forces(configs[40:]), rtol=0, atol=1e-10)


def test_members_train_the_stress_term_on_their_own_resample(featurizer, data):
    configs, e = data
    stresses = np.random.default_rng(1).normal(0, 1e-3, (40, 6))
    kw = dict(NET, stress_weight=1.0)
    seeds = [2, 2]
    same = Committee("cluster", kw, size=2, resample="none", seeds=seeds, featurizer=featurizer)
    same.fit(configs[:40], e[:40], stresses=stresses)
    single = ClusterNet(featurizer=featurizer, seed=2, **kw).fit(configs[:40], e[:40], stresses=stresses)
    np.testing.assert_allclose(same.predict(configs[40:]), single.predict(configs[40:]), rtol=0, atol=1e-10)
    with pytest.raises(ModelError, match="stress term"):
        Committee("cluster", kw, size=2, featurizer=featurizer).fit(configs[:40], e[:40])


@pytest.mark.parametrize("kind", ["cluster", "linear"])
def test_spread_grows_away_from_the_training_data(kind, featurizer, data, ref):
    configs, e = data
    model = Committee(kind, NET if kind == "cluster" else {}, size=4, featurizer=featurizer).fit(configs[:48], e[:48])
    near = random_configs(ref, 12, seed=21, amplitude=0.06)
    far = random_configs(ref, 12, seed=22, amplitude=0.18)
    u_near, u_far = model.predict_uncertainty(near), model.predict_uncertainty(far)
    assert np.median(u_far["energy_std"]) > 3 * np.median(u_near["energy_std"])
    if kind == "linear":
        # nets trained on 48 energies disagree on forces everywhere (saturating tanh units far out);
        # the linear expansion's force spread grows with the amplitude like its energy spread
        assert np.median(u_far["max_force_deviation"]) > 2 * np.median(u_near["max_force_deviation"])
    # and the spread is informative: the far configurations are also where the mean is wrong
    err_near = np.abs(u_near["energy"] - morse_energy(near))
    err_far = np.abs(u_far["energy"] - morse_energy(far))
    assert np.median(err_far) > np.median(err_near)


def test_members_differ_by_resample_and_seed(committee, data):
    configs, _ = data
    samples = [np.asarray(s) for s in committee.samples_]
    assert len(samples) == 4 and all(len(s) == 48 for s in samples)
    assert all(len(np.unique(s)) < 48 for s in samples)  # bootstrap: drawn with replacement
    assert len({tuple(s) for s in samples}) == 4
    assert [m.seed for m in committee.members_] == [5, 6, 7, 8]
    assert all(m.featurizer_ is committee.members_[0].featurizer_ for m in committee.members_)  # built once
    folds = Committee("linear", size=4, resample="folds").samples(20)
    left_out = [np.setdiff1d(np.arange(20), s) for s in folds]
    np.testing.assert_array_equal(np.sort(np.concatenate(left_out)), np.arange(20))  # each configuration left out once


def test_mean_forces_and_stress_are_derivatives_of_the_mean_energy(committee, data, ref):
    c = data[0][50]
    r = committee.compute(c.positions, c.lattice, ref, spread=True)
    members = [m.compute(c.positions, c.lattice, ref) for m in committee.members_]
    assert r["energy"] == pytest.approx(np.mean([m["energy"] for m in members]), abs=1e-10)
    assert r["energy_std"] == pytest.approx(np.std([m["energy"] for m in members]), abs=1e-10)
    np.testing.assert_allclose(r["member_energies"], [m["energy"] for m in members], atol=1e-10)
    f_k = np.stack([m["forces"] for m in members])
    np.testing.assert_allclose(r["forces"], f_k.mean(0), atol=1e-10)
    dev = np.sqrt(((f_k - f_k.mean(0)) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(r["forces_std"], dev, atol=1e-10)
    assert r["max_force_deviation"] == pytest.approx(dev.max(), abs=1e-10)
    np.testing.assert_allclose(r["stress"], np.mean([m["stress"] for m in members], axis=0), atol=1e-12)
    plain = committee.compute(c.positions, c.lattice, ref)
    np.testing.assert_allclose(plain["forces"], r["forces"], atol=1e-10)
    h = 1e-5
    for i, k in ((0, 0), (17, 1), (33, 2)):
        p = c.positions.copy()
        p[i, k] += h
        ep = committee.compute(p, c.lattice, ref, False, False)["energy"]
        p[i, k] -= 2 * h
        em = committee.compute(p, c.lattice, ref, False, False)["energy"]
        assert r["forces"][i, k] == pytest.approx(-(ep - em) / (2 * h), abs=1e-6)


def test_save_load_round_trip_gives_identical_mean_and_spread(committee, data, tmp_path, featurizer):
    configs = data[0][48:]
    committee.save(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "member_00",
        "member_01",
        "member_02",
        "member_03",
        "model.json",
    ]
    again = load_model(tmp_path / "c", featurizer=featurizer)
    assert isinstance(again, Committee) and again.hyperparameters() == committee.hyperparameters()
    a, b = committee.predict_uncertainty(configs), again.predict_uncertainty(configs)
    for key in ("energy", "energy_std", "max_force_deviation", "stress", "stress_std", "member_energies"):
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(np.stack(a["forces_std"]), np.stack(b["forces_std"]))
    assert again.samples_ == committee.samples_


def test_any_supercell_spread_is_extensive_and_force_deviation_intensive(committee, data):
    c = data[0][52]
    big = repeat_configuration(c, Perovskite().supercell(4))
    small, large = committee.predict_uncertainty([c]), committee.predict_uncertainty([big])
    assert large["energy"][0] == pytest.approx(8 * small["energy"][0], rel=1e-10)
    assert large["energy_std"][0] == pytest.approx(8 * small["energy_std"][0], rel=1e-8)
    assert large["max_force_deviation"][0] == pytest.approx(small["max_force_deviation"][0], rel=1e-8)


def test_ase_calculator_reports_the_spread(committee, data, ref):
    c = data[0][49]
    atoms = c.to_ase()
    order = np.random.default_rng(0).permutation(len(atoms))
    atoms = atoms[order]
    atoms.calc = PESCalculator(committee)
    r = committee.compute_spread(c.positions, c.lattice, ref)
    assert atoms.get_potential_energy() == pytest.approx(float(r["energy"]), abs=1e-10)
    res = atoms.calc.results
    assert res["energy_std"] == pytest.approx(float(r["energy_std"]), abs=1e-12)
    assert res["max_force_deviation"] == pytest.approx(float(r["max_force_deviation"]), abs=1e-12)
    np.testing.assert_allclose(res["forces_std"], r["forces_std"][order], atol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), r["forces"][order], atol=1e-10)
    assert atoms.calc.get_property("energy_std", atoms) == res["energy_std"]
    # a single model's calculator has no spread
    single = PESCalculator(committee.members_[0])
    assert "energy_std" not in single.implemented_properties


def test_local_terms_are_the_mean_of_the_members(committee, data, ref):
    """E = const + sum of unit_energies, so local Monte Carlo moves work with a committee too."""
    assert committee.unit_kind == "cluster"
    fz = committee.featurizer_for(ref)
    a, b = data[0][53], data[0][54]

    def unit_sum(c):
        raw = fz.cluster_features(torch.as_tensor(c.positions[None]), torch.as_tensor(c.lattice[None]))
        return float(sum(committee.unit_energies(g, x).sum() for g, x in enumerate(raw)))

    de = committee.predict([b])[0] - committee.predict([a])[0]
    assert unit_sum(b) - unit_sum(a) == pytest.approx(de, abs=1e-9)


def test_pair_committee(ref, data):
    configs, e = data
    model = Committee("pair", {"n_gaussians": 8}, size=3, resample="folds").fit(configs[:30], e[:30])
    assert model.unit_kind == "" and len(model.members_) == 3
    u = model.predict_uncertainty(configs[30:33])
    assert np.all(u["energy_std"] > 0)
    np.testing.assert_allclose(u["energy"], model.predict(configs[30:33]), atol=1e-10)


def test_committee_of_nets_trains_on_several_supercells(featurizer, data):
    configs, e = data
    big = random_configs(Perovskite().supercell(3), 6, seed=9, amplitude=0.06)
    mixed = list(configs[:20]) + big
    e_mixed = np.concatenate([e[:20], morse_energy(big)])
    # members with one seed and no resampling are the single net fitted on both supercells
    same = Committee("cluster", NET, size=2, resample="none", seeds=[4, 4], featurizer=featurizer)
    same.fit(mixed, e_mixed)
    single = ClusterNet(featurizer=featurizer, seed=4, **NET).fit(mixed, e_mixed)
    assert same.reference_ == configs[0].reference
    np.testing.assert_allclose(same.predict(big[:2]), single.predict(big[:2]), rtol=0, atol=1e-10)
    assert np.all(same.predict_uncertainty(big[:2])["energy_std"] == 0)
    # a bootstrap draws within each supercell: every member sees both, as many of each as there are;
    # worker processes (the descriptor basis sent as its recipe) train what one process trains
    real = dict(NET, clusters="4p", max_order=2)
    boot = Committee("cluster", real, size=2, seed=1, n_jobs=2).fit(mixed, e_mixed)
    for s in boot.samples_:
        assert sum(i < 20 for i in s) == 20 and sum(i >= 20 for i in s) == 6
    assert boot.samples_[0] != boot.samples_[1]
    seq = Committee("cluster", real, size=2, seed=1, n_jobs=1).fit(mixed, e_mixed)
    np.testing.assert_allclose(boot.predict(big), seq.predict(big), rtol=0, atol=1e-9)
    assert np.all(boot.predict_uncertainty(big)["energy_std"] > 0)
    with pytest.raises(ModelError, match="committee of linear models trains on configurations of one supercell"):
        Committee("linear", size=2, featurizer=featurizer).fit(mixed, e_mixed)


def test_bad_committee_settings_are_refused(featurizer, data):
    configs, e = data
    with pytest.raises(ModelError, match="size must be an integer >= 2"):
        Committee("linear", size=1, featurizer=featurizer).fit(configs[:10], e[:10])
    with pytest.raises(ModelError, match="resample must be one of"):
        Committee("linear", resample="jackknife", featurizer=featurizer).fit(configs[:10], e[:10])
    with pytest.raises(ModelError, match="members must be one of"):
        Committee("committee", featurizer=featurizer).fit(configs[:10], e[:10])
    with pytest.raises(ModelError, match="one seed per member"):
        Committee("linear", size=3, seeds=[1, 2], featurizer=featurizer).fit(configs[:10], e[:10])
    with pytest.raises(ModelError, match="has no hyperparameter"):
        Committee("linear", {"hidden_layers": [3]}, featurizer=featurizer).fit(configs[:10], e[:10])
    with pytest.raises(ModelError, match="not fitted"):
        Committee("linear").predict_uncertainty(configs[:1])
    template = LinearCE(featurizer=featurizer, method="lasso", alphas=[1e-4], cv=3)
    model = Committee(template, size=2).fit(configs[:20], e[:20])
    assert all(m.method == "lasso" for m in model.members_)


def test_spread_calibration_statistics(tmp_path):
    rng = np.random.default_rng(0)
    spread = rng.uniform(0.1, 2.0, 400)
    error = rng.normal(0, spread)  # errors drawn with the committee's spread: calibrated
    stats = reports.spread_calibration(spread, error, n_bins=5)
    assert stats["spearman"] > 0.3 and stats["n"] == 400
    assert len(stats["bins"]) == 5 and sum(b["n"] for b in stats["bins"]) == 400
    for b in stats["bins"]:  # binned RMS error follows the binned RMS spread
        assert 0.6 < b["rms_error"] / b["rms_spread"] < 1.6
    noise = reports.spread_calibration(spread, rng.normal(0, 1.0, 400))
    assert abs(noise["spearman"]) < 0.15
    png = reports.calibration_plot(tmp_path / "cal.png", {"energy (meV/atom)": (spread, error)})
    assert png.stat().st_size > 1000
