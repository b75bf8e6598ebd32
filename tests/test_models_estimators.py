"""The models as scikit-learn estimators: parameters, clone, fitted state, short reprs, labelled features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted

from perovskite_pes.models import ClusterNet, Committee, LinearCE, ModelError, NotFittedError, PairPotential, SiteNet
from perovskite_pes.structure import Configuration

from models_support import morse_energy, random_configs

torch.set_num_threads(1)

TINY_NET = dict(batch_sizes=(8,), epochs=(5,), patience=None, hidden_layers=(3,))
CLASSES = (PairPotential, LinearCE, ClusterNet, SiteNet, Committee)


@pytest.fixture(scope="module")
def data(ref):
    configs = random_configs(ref, 24, seed=11)
    return configs, morse_energy(configs)


def unfitted(cls, featurizer):
    if cls is PairPotential:
        return PairPotential(n_gaussians=5, cutoff=6.0)
    if cls is LinearCE:
        return LinearCE(featurizer=featurizer, alphas=[1e-6, 1e-3])
    if cls is Committee:
        return Committee(LinearCE(alphas=[1e-3]), size=2, featurizer=featurizer)
    return cls(featurizer=featurizer, **TINY_NET)


# ------------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("cls", CLASSES)
def test_constructor_only_stores_its_arguments(cls, featurizer):
    model = unfitted(cls, featurizer)
    assert sorted(vars(model)) == sorted(model.get_params(deep=False))
    assert not model.is_fitted


def test_invalid_hyperparameters_are_refused_by_fit_not_by_the_constructor(featurizer, data):
    configs, e = data
    net = ClusterNet(featurizer=featurizer, hidden_layers=(0,))
    ce = LinearCE(featurizer=featurizer, method="bogus")
    with pytest.raises(ModelError, match="hidden_layers"):
        net.fit(configs, e)
    with pytest.raises(ModelError, match="method"):
        ce.fit(configs, e)


def test_get_params_returns_the_constructor_arguments_themselves(featurizer):
    layers = (7, 5)
    net = ClusterNet(featurizer=featurizer, hidden_layers=layers, seed=4)
    params = net.get_params()
    assert params["hidden_layers"] is layers and params["featurizer"] is featurizer and params["seed"] == 4
    assert set(params) == set(ClusterNet._get_param_names())
    assert "epochs" in params and "verbose" in params  # every constructor argument, defaults included


def test_set_params_sets_and_validates_names(featurizer):
    net = ClusterNet(featurizer=featurizer)
    assert net.set_params(hidden_layers=(4, 4), learning_rate=0.5) is net
    assert net.hidden_layers == (4, 4) and net.get_params()["learning_rate"] == 0.5
    with pytest.raises(ModelError, match="no hyperparameter 'hidden'"):
        net.set_params(hidden=3)
    with pytest.raises(ModelError, match="not an estimator"):
        net.set_params(seed__x=1)


def test_committee_exposes_and_sets_its_member_parameters(featurizer):
    committee = Committee(ClusterNet(hidden_layers=(4,)), size=3)
    deep = committee.get_params(deep=True)
    assert deep["model__hidden_layers"] == (4,) and deep["size"] == 3
    assert "model__hidden_layers" not in committee.get_params(deep=False)
    committee.set_params(model__hidden_layers=(9,), size=4)
    assert committee.model.hidden_layers == (9,) and committee.size == 4


# ------------------------------------------------------------------------------------ clone
@pytest.mark.parametrize("cls", CLASSES)
def test_clone_of_a_fitted_model_is_unfitted_with_equal_parameters(cls, featurizer, data):
    configs, e = data
    model = unfitted(cls, featurizer).fit(configs, e)
    check_is_fitted(model)
    copy = clone(model)
    assert type(copy) is cls and copy is not model
    assert not copy.is_fitted
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(copy)
    with pytest.raises(NotFittedError):
        copy.predict(configs[:2])
    mine, theirs = model.get_params(deep=False), copy.get_params(deep=False)
    assert mine.keys() == theirs.keys()
    for name, value in mine.items():
        if name == "featurizer":
            assert theirs[name] is value  # the descriptor basis is shared, not copied
        elif hasattr(value, "get_params"):
            assert theirs[name] is not value and theirs[name].get_params() == value.get_params()
        else:
            assert theirs[name] == value
            if isinstance(value, (list, dict, tuple)) and value:
                assert theirs[name] is not value or isinstance(value, tuple)


@pytest.mark.parametrize("cls", (PairPotential, LinearCE, ClusterNet))
def test_a_refitted_clone_predicts_like_the_original(cls, featurizer, data):
    configs, e = data
    model = unfitted(cls, featurizer).fit(configs[:20], e[:20])
    again = clone(model).fit(configs[:20], e[:20])
    np.testing.assert_allclose(again.predict(configs[20:]), model.predict(configs[20:]), rtol=0, atol=1e-9)


def test_set_params_on_a_pair_potential_rebuilds_its_cached_pair_lists(ref, data):
    configs, _e = data
    model = PairPotential(n_gaussians=5, cutoff=6.0)
    first = model.relative_features(configs[:3])
    model.set_params(cutoff=5.0)
    fresh = PairPotential(n_gaussians=5, cutoff=5.0).relative_features(configs[:3])
    np.testing.assert_allclose(model.relative_features(configs[:3]), fresh, atol=1e-12)
    assert not np.allclose(first, fresh)


@pytest.mark.parametrize("cls", (LinearCE, ClusterNet, SiteNet))
def test_learned_attributes_end_in_an_underscore(cls, featurizer, data):
    configs, e = data
    model = unfitted(cls, featurizer)
    before = set(vars(model))
    model.fit(configs, e)
    public_new = [k for k in set(vars(model)) - before if not k.startswith("_")]
    assert public_new and all(k.endswith("_") for k in public_new), public_new
    assert {"e0_", "reference_", "featurizer_"} <= set(public_new)


# ------------------------------------------------------------------------------------ reprs
def test_model_repr_lists_only_the_changed_parameters():
    assert repr(ClusterNet()) == "ClusterNet()"
    assert repr(SiteNet(hidden_layers=(16,), max_order=4)) == "SiteNet(hidden_layers=(16,), max_order=4)"
    assert repr(PairPotential(cutoff=6.0)) == "PairPotential(cutoff=6.0)"
    assert repr(Committee(LinearCE(metric="log"), size=3)) == "Committee(model=LinearCE(metric='log'), size=3)"
    # a saved and loaded model holds lists where the defaults are tuples: still only what differs
    assert repr(ClusterNet(batch_sizes=[2, 10, 100, 1000], hidden_layers=[16])) == "ClusterNet(hidden_layers=[16])"


def test_reprs_stay_short_with_arrays_and_featurizers(featurizer, ref):
    model = LinearCE(featurizer=featurizer, alphas=np.logspace(-8, 2, 200))
    text = repr(model)
    assert text.startswith("LinearCE(") and "alphas=" in text and len(text) < 250 and "\n" not in text
    rng = np.random.default_rng(0)
    config = Configuration(ref, rng.normal(0, 0.05, (ref.n_atoms, 3)), tags={"method": "random", "note": "x" * 500})
    text = repr(config)
    assert len(text) < 250 and "\n" not in text
    assert f"{ref.n_atoms} atoms" in text and "'method': 'random'" in text
    u = np.linalg.norm(config.displacements, axis=1).max()
    assert f"max |u| {u:.3f} A" in text


# ------------------------------------------------------------------------------------ labelled features
def test_linear_ce_names_its_design_matrix_columns(featurizer, data):
    configs, e = data
    model = LinearCE(featurizer=featurizer).fit(configs, e)
    names = model.get_feature_names_out()
    assert len(names) == model.design_matrix(configs[:2]).shape[1] == len(model.coef_)
    assert len(set(names)) == len(names)
    first_orbit = featurizer.orbit_names[0]
    assert [n for n in names if n.startswith(first_orbit + "/")] == [
        f"{first_orbit}/phi{m}" for m in range(featurizer.n_functions[0])
    ]


def test_pair_potential_names_its_features(ref, data):
    configs, _e = data
    model = PairPotential(n_gaussians=4, r_min=2.0, cutoff=5.0)
    names = model.get_feature_names_out()
    x = model.relative_features(configs[:2])
    assert len(names) == x.shape[1] == 6 * 4
    assert names[0] == "AA/g0@2.00 A" and names[5] == "AB/g1@3.00 A" and names[-1] == "XX/g3@5.00 A"
