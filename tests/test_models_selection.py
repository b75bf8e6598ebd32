"""Models on the real CCD featurizer: selection (train_and_select), reports, the ASE calculator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from perovskite_pes.descriptors import Featurizer
from perovskite_pes.models import (
    ClusterNet,
    LinearCE,
    ModelError,
    PairPotential,
    PESCalculator,
    SiteNet,
    load_model,
    train_and_select,
)
from perovskite_pes.models.selection import SettingsError, expand_grid, make_model, merge_settings
from perovskite_pes.structure import Configuration, Perovskite, tilt_configuration

from models_support import random_configs, repeat_configuration

torch.set_num_threads(1)

NET = dict(batch_sizes=(8, 32), epochs=(10, 30), learning_rate=1e-2, patience=None)


@pytest.fixture(scope="module")
def ref():
    return Perovskite().supercell(2)


@pytest.fixture(scope="module")
def featurizer(ref):
    return Featurizer(ref, clusters="4p+o", max_order=2)


@pytest.fixture(scope="module")
def data(ref):
    """Synthetic PES with known forces: a pair potential with fixed weights, on tilts and random displacements."""
    truth = PairPotential(cutoff=6.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(8).normal(0, 0.1, truth.n_features)
    truth.e0_, truth.alpha_ = -3.1, 0.0
    configs = random_configs(ref, 36, seed=2, amplitude=0.06)
    for i, g in enumerate(["a0a0c+", "a0a0c-", "a-a-a-", "a+a+a+"] * 3):
        c = tilt_configuration(ref, g, 4.0 + i)
        c.tags["kind"] = "tilt"
        configs.append(c)
    labels = truth.predict_all(configs)
    return configs, labels["energy"], np.stack(labels["forces"])


@pytest.mark.parametrize("cls", [LinearCE, ClusterNet, SiteNet])
def test_ccd_models_are_invariant_and_extensive(cls, ref, featurizer, data, tmp_path):
    configs, e, _ = data
    kw = {} if cls is LinearCE else NET
    model = cls(featurizer=featurizer, **kw).fit(configs[:40], e[:40])
    c = configs[41]
    e1 = model.predict([c])[0]
    # rotation of the whole crystal
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    assert model.compute(c.positions @ q.T, c.lattice @ q.T, ref, False, False)["energy"] == pytest.approx(e1, abs=1e-9)
    # symmetry: a 90 degree rotation about z maps the tilt pattern onto an equivalent one
    from perovskite_pes.structure import supercell_symmetry

    sym = supercell_symmetry(ref)
    for k in (1, 5, 17):
        assert model.predict([sym.apply(c, k)])[0] == pytest.approx(e1, abs=1e-8)
    # 6x6x6 periodic repetition: 27 times the energy
    big = repeat_configuration(c, Perovskite().supercell(6))
    assert model.predict([big])[0] == pytest.approx(27 * e1, rel=1e-10)
    # save / load rebuilds the featurizer from the recipe and reproduces predictions exactly
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(configs[40:]), model.predict(configs[40:]))


def test_grid_expansion_and_settings_validation():
    grid = expand_grid(
        {
            "model": ["cluster", "site", "linear", "pair"],
            "clusters": ["4p+o", "7p+t+o"],
            "max_order": [2, 4],
            "layers": [1, 2],
            "nodes": [8, 16],
        }
    )
    kinds = [g["model"] for g in grid]
    assert kinds.count("cluster") == kinds.count("site") == 2 * 2 * 2 * 2
    assert kinds.count("linear") == 4 and kinds.count("pair") == 1
    with pytest.raises(ModelError, match="unknown model type"):
        expand_grid({"model": ["forest"]})
    with pytest.raises(ModelError, match="unknown selection setting"):
        merge_settings({"n_fold": 3})
    with pytest.raises(ModelError, match="unknown training setting"):
        merge_settings({"training": {"epoch": 3}})
    # newly selected models are bounded outside their training window unless switched off
    from perovskite_pes.models.selection import make_model

    lin = {"model": "linear", "clusters": "4p+o", "max_order": 2}
    assert make_model(lin, merge_settings(None)).bounded
    assert not make_model(lin, merge_settings({"bounds": {"enabled": False}})).bounded
    assert make_model(lin, merge_settings({"bounds": {"strength": 0.5}})).bound_strength == 0.5
    with pytest.raises(ModelError, match="unknown bounds setting"):
        merge_settings({"bounds": {"stiffness": 1.0}})


def test_train_and_select_report_model_and_figures(data, tmp_path):
    configs, e, _ = data
    settings = {
        "grid": {"model": ["cluster", "linear"], "clusters": ["4p+o"], "nodes": [4, 8]},
        "n_folds": 3,
        "n_jobs": 2,
        "training": dict(NET),
        "learning_curve": [0.5, 1.0],
        "progress": False,
        "paths": {"tilt": {"x": [4, 8, 12], "configs": configs[36:39], "energies": e[36:39], "xlabel": "angle"}},
    }
    model, report = train_and_select(configs, e, None, settings, tmp_path)
    assert report["n_train"] == 38 and report["n_test"] == 10
    assert set(report["train_indices"]).isdisjoint(report["test_indices"])
    table = report["cv_table"]
    assert [r["label"] for r in table] == ["cluster 4p+o o2 1x4", "cluster 4p+o o2 1x8", "linear 4p+o o2"]
    assert all(r["n_folds"] == 3 and len(r["val"]) == 3 for r in table)
    best = min(table, key=lambda r: r["val_rmse_mean"])
    assert report["best_label"] == best["label"]
    net_won = best["label"].startswith("cluster")
    assert set(report["models"]) == {"best", "pair"} | ({"linear"} if net_won else {"best_net"})
    if not net_won:  # the best net is still refitted and reported on the same split
        nets = [r for r in table if r["label"].startswith("cluster")]
        assert report["models"]["best_net"]["label"] == min(nets, key=lambda r: r["val_rmse_mean"])["label"]
    # the reported test RMSE is that of the returned (and saved) model on the test configurations
    test = [configs[i] for i in report["test_indices"]]
    err = (model.predict(test) - e[report["test_indices"]]) / 40 * 1000
    assert report["test_rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-9)
    assert (
        "tilt" in report["models"]["best"]["test_per_kind"] or len([i for i in report["test_indices"] if i >= 36]) == 0
    )
    assert len(report["energy_bins"]["test"]) == 5
    for name in ("parity", "energy_bins", "cv_grid", "learning_curve", "paths"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["best"] == report["best"] and saved["paths"]["tilt"]["x"] == [4, 8, 12]
    np.testing.assert_array_equal(load_model(tmp_path / "model").predict(test), model.predict(test))
    # seeded: the same call gives the same CV table
    _, again = train_and_select(configs, e, None, dict(settings, learning_curve=None, paths=None, n_jobs=1), None)
    assert [r["val"] for r in again["cv_table"]] == [r["val"] for r in table]


def _one_net(**settings) -> dict:
    """Selection settings with a grid of one small cluster net."""
    return {"grid": {"model": ["cluster"], "clusters": ["4p+o"], "nodes": [4]}, "progress": False, **settings}


def test_train_and_select_with_force_term(data):
    configs, e, f = data
    settings = _one_net(n_folds=2, n_jobs=1, training=dict(NET, epochs=(3, 5), force_weight=1.0), baselines=False)
    model, report = train_and_select(configs, e, f, settings)
    assert model.force_weight == 1.0 and set(report["models"]) == {"best"}
    with pytest.raises(ModelError, match="needs forces"):
        train_and_select(configs, e, None, settings)


def test_train_and_select_with_stress_term(data):
    configs, e, f = data
    st = np.random.default_rng(0).normal(0, 1e-3, (len(configs), 6))  # only the plumbing is tested here
    settings = _one_net(
        n_folds=2, n_jobs=1, training=dict(NET, epochs=(3, 5), force_weight=0.5, stress_weight=1.0), baselines=False
    )
    model, report = train_and_select(configs, e, f, settings, stresses=st)
    assert (model.force_weight, model.stress_weight) == (0.5, 1.0)
    assert report["settings"]["training"]["stress_weight"] == 1.0
    with pytest.raises(ModelError, match="needs stresses"):
        train_and_select(configs, e, f, settings)


def _with_larger_cells(data, at):
    """``data`` with 3x3x3 configurations labelled by a pair potential inserted at the positions ``at``
    (as a store returns them, among the others): (configs, energies, forces, the larger cells)."""
    configs, e, f = data
    truth = PairPotential(cutoff=6.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(8).normal(0, 0.1, truth.n_features)
    truth.e0_, truth.alpha_ = -3.1, 0.0
    big = random_configs(Perovskite().supercell(3), len(at), seed=5, amplitude=0.06)
    labels = truth.predict_all(big)
    all_configs, all_e, all_f = list(configs), list(e), list(f)
    for k, i in enumerate(at):
        all_configs.insert(i, big[k])
        all_e.insert(i, labels["energy"][k])
        all_f.insert(i, labels["forces"][k])
    return all_configs, np.array(all_e), all_f, big


def test_configurations_of_larger_supercells_train_the_nets_but_are_never_cross_validated(data, featurizer):
    configs, e, f = data
    at = [3, 20, 21, 40]  # by default none is held out
    all_configs, all_e, all_f, big = _with_larger_cells(data, at)
    all_e = list(all_e)
    settings = _one_net(n_folds=2, n_jobs=1, training=dict(NET, epochs=(3, 5), force_weight=1.0))
    model, report = train_and_select(all_configs, np.array(all_e), all_f, settings)
    assert "larger_test" not in report
    assert report["larger_supercells"] == {"indices": at, "supercells": {"135": 4}}
    assert report["n_configurations"] == len(configs)
    scored = set(report["train_indices"]) | set(report["test_indices"])
    assert scored.isdisjoint(at) and len(scored) == len(configs)
    assert set(report["models"]) == {"best", "pair", "linear"}  # the baselines fit the smallest supercell only
    # the selected net is exactly a net fitted on its training part and the larger cells
    own = [i for i in range(len(all_configs)) if i not in at]
    train = [own[i] for i in range(len(own)) if own[i] in set(report["train_indices"])] + at
    direct = make_model(report["best"], merge_settings(settings)).fit(
        [all_configs[i] for i in train], np.array(all_e)[train], [all_f[i] for i in train]
    )
    np.testing.assert_allclose(model.predict(big), direct.predict(big), rtol=0, atol=1e-9)
    with pytest.raises(ModelError, match="only the nets"):
        train_and_select(all_configs, np.array(all_e), None, dict(settings, grid={"model": ["linear"]}))
    # a committee's members train on the larger cells too (each supercell resampled on its own)
    cm, cr = train_and_select(
        all_configs, np.array(all_e), all_f, dict(settings, committee={"size": 2}, baselines=False)
    )
    assert cr["larger_supercells"]["indices"] == at and len(cm.members_) == 2
    for s in cm.samples_:  # the training part's configurations, then the four larger ones
        assert sum(i >= len(report["train_indices"]) for i in s) == len(at)


def test_a_share_of_the_larger_supercells_is_held_out_and_scored(data, featurizer):
    at = [0, 2, 5, 9, 14, 20, 27, 31, 38, 44]
    all_configs, all_e, all_f, big = _with_larger_cells(data, at)
    settings = _one_net(n_folds=2, n_jobs=1, training=dict(NET, epochs=(3, 5), force_weight=1.0), baselines=False)
    model, report = train_and_select(all_configs, all_e, all_f, dict(settings, larger_test_fraction=0.2))
    held = report["larger_test"]["indices"]
    trained = report["larger_supercells"]["indices"]
    # 20 % of the ten held out, the rest trained on; the smallest supercell's split unchanged
    assert len(held) == 2 and sorted(held + trained) == at and not set(held) & set(trained)
    assert report["larger_supercells"]["supercells"] == {"135": 8} and report["n_configurations"] == 48
    # the held-out cells trained nothing: the net is a net fitted on its training part and the other eight
    train = [i for i in report["train_indices"]] + trained
    direct = make_model(report["best"], merge_settings(settings)).fit(
        [all_configs[i] for i in train], all_e[train], [all_f[i] for i in train]
    )
    np.testing.assert_allclose(model.predict(big), direct.predict(big), rtol=0, atol=1e-9)
    # the reported errors are those of the model on the held-out cells
    pred = model.predict_all([all_configs[i] for i in held])
    de = (np.asarray(pred["energy"]) - all_e[held]) / 135 * 1000
    lt = report["larger_test"]
    assert lt["n"] == 2 and lt["rmse_mev_per_atom"] == pytest.approx(np.sqrt(np.mean(de**2)), rel=1e-6)
    assert lt["mean_error_mev_per_atom"] == pytest.approx(de.mean(), rel=1e-6)
    assert lt["per_supercell"]["135"]["rmse_mev_per_atom"] == pytest.approx(lt["rmse_mev_per_atom"])
    df = np.concatenate([(np.asarray(p) - all_f[i]).ravel() for p, i in zip(pred["forces"], held)])
    assert lt["force_rmse_ev_per_a"] == pytest.approx(np.sqrt(np.mean(df**2)), rel=1e-6)
    # by default (0) every one of them trains; None takes test_fraction; a fraction outside [0, 1) is refused
    _, every = train_and_select(all_configs, all_e, all_f, settings)
    assert every["larger_supercells"]["indices"] == at and "larger_test" not in every
    _, as_test = train_and_select(
        all_configs, all_e, all_f, dict(settings, larger_test_fraction=None, test_fraction=0.3)
    )
    assert len(as_test["larger_test"]["indices"]) == 3
    with pytest.raises(SettingsError, match="larger_test_fraction must be a number in \\[0, 1\\)"):
        train_and_select(all_configs, all_e, all_f, dict(settings, larger_test_fraction=1.5))


def test_training_stresses_names_what_is_missing():
    from perovskite_pes.models import training_stresses

    records = [{"stress": [0.0] * 6}, {"stress": None}, {}]
    assert training_stresses(records, False) is None
    assert training_stresses(records[:1], True) == [[0.0] * 6]
    with pytest.raises(ModelError, match="--stress-weight > 0 but 2 of 3 calculations have no stress"):
        training_stresses(records, True, "--stress-weight > 0")


def test_ase_calculator_md_and_atom_order(ref, featurizer, data):
    from ase.md.verlet import VelocityVerlet

    configs, e, _ = data
    model = ClusterNet(featurizer=featurizer, **NET).fit(configs[:40], e[:40])
    c = configs[40]
    atoms = c.to_ase()
    perm = np.random.default_rng(0).permutation(len(atoms))
    shuffled = atoms[perm]
    shuffled.wrap()
    shuffled.calc = PESCalculator(model)
    r = model.predict_all([c])
    assert shuffled.get_potential_energy() == pytest.approx(r["energy"][0], abs=1e-9)
    np.testing.assert_allclose(shuffled.get_forces(), r["forces"][0][perm], atol=1e-9)
    np.testing.assert_allclose(shuffled.get_stress(), r["stress"][0], atol=1e-12)
    # a few MD steps conserve energy
    from ase import units

    atoms.calc = PESCalculator(model)
    atoms.set_velocities(np.random.default_rng(1).normal(0, 0.02, (len(atoms), 3)))
    e_start = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    VelocityVerlet(atoms, 1.0 * units.fs).run(10)
    assert atoms.get_potential_energy() + atoms.get_kinetic_energy() == pytest.approx(e_start, abs=2e-3)
    with pytest.raises(ModelError, match="cannot tell which supercell"):
        bad = Configuration(ref).to_ase()[:35]
        bad.calc = PESCalculator(model)
        bad.get_potential_energy()


def test_train_and_select_refits_the_best_as_a_committee(data, tmp_path):
    """committee: {size: K}: the selected setting comes back as K bootstrap members with a calibrated spread."""
    from perovskite_pes.models import Committee

    configs, e, f = data
    settings = {
        "grid": {"model": ["cluster"], "clusters": ["4p+o"], "nodes": [4]},
        "n_folds": 2,
        "n_jobs": 1,
        "training": dict(NET, epochs=(5, 10)),
        "committee": {"size": 3},
        "progress": False,
    }
    model, report = train_and_select(configs, e, list(f), settings, tmp_path)
    assert isinstance(model, Committee) and len(model.members_) == 3 and model.resample == "bootstrap"
    assert all(list(m.hidden_layers) == [4] and m.model_type == "cluster" for m in model.members_)
    assert report["models"]["best"]["label"] == "cluster 4p+o o2 1x4 (committee of 3)"
    assert report["models"]["linear"]["label"] == "linear 4p+o o2"  # baselines stay single models
    test = [configs[i] for i in report["test_indices"]]
    u = model.predict_uncertainty(test)
    cal = report["committee"]
    assert cal["size"] == 3 and cal["test_energy"]["n"] == len(test) == cal["test_forces"]["n"]
    np.testing.assert_allclose(cal["test_energy"]["spread"], u["energy_std"] / 40 * 1000, rtol=1e-8)
    np.testing.assert_allclose(cal["test_forces"]["spread"], u["max_force_deviation"], rtol=1e-8)
    assert -1 <= cal["test_energy"]["spearman"] <= 1
    assert (tmp_path / "calibration.png").stat().st_size > 1000
    again = load_model(tmp_path / "model")
    assert isinstance(again, Committee)
    np.testing.assert_array_equal(again.predict(test), model.predict(test))
    with pytest.raises(ModelError, match="committee.size must be 0"):
        train_and_select(configs, e, None, dict(settings, committee={"size": 1}))


def test_a_committee_of_the_cross_validation_folds_costs_no_fit(data, tmp_path):
    """resample: cv: member k is the CV model fitted without fold k (here in a worker process, which sends
    the model back without its featurizer)."""
    from sklearn.model_selection import KFold

    from perovskite_pes.models import Committee

    configs, e, f = data
    settings = _one_net(
        n_folds=3,
        n_jobs=2,
        training=dict(NET, epochs=(5, 10), force_weight=0.1),
        committee={"size": 3, "resample": "cv"},
        baselines=False,
    )
    model, report = train_and_select(configs, e, list(f), settings, tmp_path)
    assert isinstance(model, Committee) and len(model.members_) == 3
    row = report["cv_table"][0]
    assert report["models"]["best"]["fit_time"] == pytest.approx(sum(row["fit_time"]))  # nothing refitted
    train = np.array(report["train_indices"])
    n_atoms = np.array([c.reference.n_atoms for c in configs])
    folds = KFold(3, shuffle=True, random_state=0).split(train)
    for k, (tr, va) in enumerate(folds):
        # the member reproduces the validation error the CV measured for its fold
        idx = train[va]
        pred = model.members_[k].predict([configs[i] for i in idx])
        rmse = 1000 * np.sqrt(np.mean(((pred - e[idx]) / n_atoms[idx]) ** 2))
        assert rmse == pytest.approx(row["val"][k], rel=1e-6)
        assert model.samples_[k] == sorted(tr.tolist())
    test = [configs[i] for i in report["test_indices"]]
    again = load_model(tmp_path / "model")
    np.testing.assert_allclose(again.predict(test), model.predict(test), rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        model.predict(test), np.mean([m.predict(test) for m in model.members_], axis=0), rtol=0, atol=1e-10
    )
    assert report["committee"]["resample"] == "cv" and report["committee"]["test_energy"]["n"] == len(test)
    with pytest.raises(ModelError, match=r"committee.size must equal n_folds \(3\)"):
        train_and_select(configs, e, None, dict(settings, committee={"size": 2, "resample": "cv"}))
    with pytest.raises(ModelError, match="unknown committee setting"):
        train_and_select(configs, e, None, dict(settings, committee={"members": 3}))
