"""Retrain policy: when new data calls for a new model, and when a new model replaces the active one."""

import json

import numpy as np
import pytest

from perovskite_pes.calculators import CalcResult
from perovskite_pes.structure import Configuration, Perovskite
from perovskite_pes.workflows.retrain import RetrainError, RetrainPolicy, retrain_decision


# ---------------------------------------------------------------------------- the policy itself
@pytest.mark.parametrize(
    "policy, n_new, n_trained, expected",
    [
        (dict(min_new_count=100, min_new_fraction=None), 99, 1000, False),
        (dict(min_new_count=100, min_new_fraction=None), 100, 1000, True),
        (dict(min_new_count=None, min_new_fraction=0.2), 199, 1000, False),
        (dict(min_new_count=None, min_new_fraction=0.2), 200, 1000, True),
        (dict(min_new_count=100, min_new_fraction=0.2, require="any"), 150, 1000, True),
        (dict(min_new_count=100, min_new_fraction=0.2, require="all"), 150, 1000, False),
        (dict(min_new_count=100, min_new_fraction=0.2, require="all"), 250, 1000, True),
        # no model trained on this data yet: only the count decides (a fraction of nothing says nothing)
        (dict(min_new_count=100, min_new_fraction=0.2), 50, 0, False),
        (dict(min_new_count=100, min_new_fraction=0.2), 100, 0, True),
        (dict(min_new_count=None, min_new_fraction=0.2), 1, 0, True),
        # nothing new never retrains
        (dict(min_new_count=1, min_new_fraction=0.01), 0, 10, False),
    ],
)
def test_policy_thresholds(policy, n_new, n_trained, expected):
    assert RetrainPolicy(**policy).passes(n_new, n_trained) is expected


def test_policy_cv_tolerance():
    p = RetrainPolicy(cv_tolerance=0.1)
    assert p.accepts(10.9, 10.0) and p.accepts(5.0, 10.0)
    assert not p.accepts(11.2, 10.0)
    assert p.accepts(3.0, None)  # nothing to compare with
    assert not p.accepts(None, 10.0)  # a model without a CV error never replaces one with
    assert not RetrainPolicy(cv_tolerance=0.0).accepts(10.0001, 10.0)


def test_policy_rejects_nonsense():
    with pytest.raises(RetrainError, match="min_new_count and/or min_new_fraction"):
        RetrainPolicy(min_new_count=None, min_new_fraction=None)
    with pytest.raises(RetrainError, match="require"):
        RetrainPolicy(require="most")


# ---------------------------------------------------------------------------- decisions on a store
def _stored(store, n, seed=0, hash_="h1"):
    ref = Perovskite().supercell(1)
    rng = np.random.default_rng(seed)
    configs = [Configuration(ref, rng.normal(scale=0.05, size=(5, 3))) for _ in range(n)]
    ids = store.save_configurations(configs).ids
    calc_ids = []
    for cid in ids:
        res = CalcResult(-17.0 + rng.normal(scale=0.01), np.zeros((5, 3)), np.zeros(6), "sevennet", "v", {}, hash_, 0.1)
        calc_ids.append(store.save_calculation(cid, res))
    return calc_ids


def test_decision_follows_the_data(store):
    policy = RetrainPolicy(min_new_count=10, min_new_fraction=0.5)
    d = retrain_decision(store, "sevennet", "h1", policy)
    assert not d.retrain and "no completed sevennet calculations" in d.reason

    first = _stored(store, 6, seed=1)
    d = retrain_decision(store, "sevennet", "h1", policy)
    assert (d.retrain, d.n_new, d.n_trained) == (False, 6, 0) and "below the retrain policy" in d.reason
    assert retrain_decision(store, "sevennet", "h1", policy, mode="if_new").retrain  # end of a campaign

    more = _stored(store, 5, seed=2)
    d = retrain_decision(store, "sevennet", "h1", policy)
    assert d.retrain and d.n_new == 11

    store.register_model("m1", "/nowhere", "sevennet", "h1", {"cv_rmse": 3.0}, {}, first + more, activate=True)
    for mode in ("policy", "if_new"):
        d = retrain_decision(store, "sevennet", "h1", policy, mode=mode)
        assert not d.retrain and d.n_new == 0 and "no new sevennet data" in d.reason
    assert retrain_decision(store, "sevennet", "h1", policy, mode="force").retrain

    _stored(store, 4, seed=3)  # 4 new of 11: below 10 and below half
    d = retrain_decision(store, "sevennet", "h1", policy)
    assert not d.retrain and d.n_new == 4
    _stored(store, 2, seed=4)  # 6 new of 11: past half
    d = retrain_decision(store, "sevennet", "h1", policy)
    assert d.retrain and (d.n_new, d.n_trained) == (6, 11)
    # another calculator's data never counts
    _stored(store, 30, seed=5, hash_="other")
    assert retrain_decision(store, "sevennet", "h1", policy).n_new == 6
    assert retrain_decision(store, "chgnet", None, policy).n_total == 0


def test_pes_retrain_without_new_data_does_nothing_and_says_so(run_pes, store):
    ids = _stored(store, 3)
    store.register_model("m1", "/nowhere", "sevennet", "h1", {"cv_rmse": 3.0}, {}, ids, activate=True)
    store.flush()
    from perovskite_pes.db import close_store

    close_store()  # release the embedded store for the subprocess
    for flags in ([], ["--if-grown"]):
        proc = run_pes("retrain", *flags, check=0)
        assert proc.stdout.startswith("nothing to do: no new sevennet data since the active model"), proc.stdout
    proc = run_pes("retrain", "--json", check=0)
    out = json.loads(proc.stdout)
    assert out["trained"] is False and out["decision"]["n_new"] == 0
    proc = run_pes("retrain", "--calculator", "chgnet", check=0)
    assert "no completed chgnet calculations" in proc.stdout
    proc = run_pes("retrain", "--if-grown", "--force", check=2)
    assert "contradict" in proc.stderr


def test_pes_retrain_without_anything_names_what_is_missing(run_pes, pes_home):
    proc = run_pes("retrain", check=2)
    assert "no --calculator given and no active model" in proc.stderr


def test_interpolation_paths_include_the_relaxed_end_points_and_measure_from_the_cubic_cell():
    """The store keeps the parents' tags for the path's end points: they are added back from the parents."""
    from perovskite_pes.structure import Configuration, Perovskite
    from perovskite_pes.workflows.retrain import interpolation_paths

    ref = Perovskite().supercell(2)

    def item(tags, energy):
        return {"config": Configuration(ref, tags=tags), "energy": energy}

    path = "a0a0a0->a0a0c+->a+b-b-"
    data = [item({"method": "interpolate", "path": path, "path_coordinate": x}, -1.0 - x) for x in (0.5, 1.5, 1.0)]
    data += [
        item({"method": "tilt", "tilt_system": "a0a0a0", "relaxed": None}, -1.0),
        item({"method": "tilt", "tilt_system": "a+b-b-", "relaxed": "cell"}, -3.2),
        item({"method": "tilt", "tilt_system": "a0a0c-", "relaxed": "cell"}, -2.0),
    ]
    out = interpolation_paths(data)
    p = out[path]
    assert p["x"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert p["energies"][0] == -1.0 and p["energies"][-1] == -3.2 and p["zero"] == 0


def test_a_model_trained_on_new_kinds_of_data_is_compared_on_them_not_by_cv(tmp_path):
    """After new kinds of configurations (an active-learning round) a CV RMSE is not comparable with the
    active model's: both models are scored on the new held-out configurations neither was fitted on."""
    from perovskite_pes.models import PairPotential
    from perovskite_pes.workflows.retrain import _activation

    from models_support import random_configs

    ref = Perovskite().supercell(2)
    configs = random_configs(ref, 24, seed=3, amplitude=0.05) + random_configs(ref, 16, seed=4, amplitude=0.2)
    truth, wrong = (
        PairPotential(cutoff=6.0, n_gaussians=6, r_min=2.5).fit(
            configs, np.random.default_rng(seed).normal(0, 0.05, len(configs)) - 150.0
        )
        for seed in (1, 2)
    )
    energies = truth.predict(configs)
    old = PairPotential(cutoff=6.0, n_gaussians=6, r_min=2.5).fit(configs[:24], wrong.predict(configs[:24]))
    old.save(tmp_path / "old")
    calc_ids = [f"c{i}" for i in range(40)]
    active = {"path": str(tmp_path / "old"), "calc_ids": calc_ids[:24]}
    report = {"test_indices": [0, 5, 30, 31, 35, 39]}
    policy = RetrainPolicy(cv_tolerance=0.05)
    # the new model (the truth) has a worse CV RMSE on its harder set, yet wins on the 4 new test configurations
    ok, why = _activation(policy, truth, active, 9.0, 1.0, report, configs, energies, calc_ids)
    assert ok and "on the 4 new held-out configurations" in why
    # and a model worse on the new configurations stays inactive, however good its CV RMSE
    truth.save(tmp_path / "good")
    good = {"path": str(tmp_path / "good"), "calc_ids": calc_ids[:24]}
    ok, why = _activation(policy, old, good, 0.5, 1.0, report, configs, energies, calc_ids)
    assert not ok and "worse than" in why
    # nothing new among the held-out configurations: the CV RMSEs decide, within the tolerance
    report = {"test_indices": [0, 5]}
    assert _activation(policy, truth, active, 9.0, 1.0, report, configs, energies, calc_ids)[0] is False
    assert _activation(policy, truth, active, 1.04, 1.0, report, configs, energies, calc_ids)[0] is True
    # new configurations of a larger supercell (a loop exploring a 4x4x4 cell): the held-out ones decide
    big = random_configs(Perovskite().supercell(3), 2, seed=5, amplitude=0.2)
    with_big = (configs + big, np.concatenate([energies, truth.predict(big)]), calc_ids + ["c40", "c41"])
    report = {"test_indices": [0, 5], "larger_test": {"indices": [40, 41]}}
    ok, why = _activation(policy, truth, active, 9.0, 1.0, report, *with_big)
    assert ok and "on the 2 new held-out configurations" in why
    assert _activation(policy, truth, None, 9.0, 1.0, report, configs, energies, calc_ids) == (
        True,
        "no model was active",
    )
