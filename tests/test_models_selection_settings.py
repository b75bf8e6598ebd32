"""Selection settings of train_and_select: one typed model holds every default; errors are one line."""

import pytest

from perovskite_pes.models import DEFAULT_SETTINGS, ModelError
from perovskite_pes.models.selection import (
    SelectionSettings,
    SettingsError,
    committee_settings,
    expand_grid,
    merge_settings,
)


def test_defaults_live_in_the_settings_model():
    s = SelectionSettings()
    assert DEFAULT_SETTINGS == s.to_dict() == merge_settings(None) == merge_settings({})
    assert s.n_folds == 10 and s.test_fraction == 0.2 and s.committee.size == 0 and s.bounds.enabled
    assert "paths" not in DEFAULT_SETTINGS  # only when given
    # the dict handed out is a copy: changing it changes no later defaults
    merge_settings(None)["training"]["epochs"].append(5)
    assert merge_settings(None)["training"]["epochs"] == [20, 50, 200, 1000]


def test_partial_groups_are_merged_with_their_defaults():
    cfg = merge_settings(
        {
            "training": {"epochs": 7},
            "linear": {"alpha": 1e-3},
            "committee": {"size": 3},
            "grid": {"model": "linear", "nodes": (4, 8)},
            "paths": {"p": {"x": [0]}},
        }
    )
    assert cfg["training"]["epochs"] == 7 and cfg["training"]["batch_sizes"] == [2, 10, 100, 1000]
    assert cfg["linear"] == {"method": "ridge", "alpha": 1e-3}  # keyword groups: given keys update the defaults
    assert cfg["committee"] == {"size": 3, "resample": "bootstrap"}
    assert (
        cfg["grid"]["model"] == ["linear"] and cfg["grid"]["nodes"] == [4, 8] and cfg["grid"]["clusters"] == ["7p+t+o"]
    )
    assert cfg["paths"] == {"p": {"x": [0]}}
    assert [g["model"] for g in expand_grid(cfg["grid"])] == ["linear"]
    assert committee_settings(cfg) == {"size": 3, "resample": "bootstrap"}
    assert committee_settings(merge_settings({"committee": None})) is None
    assert merge_settings({"bounds": None})["bounds"]["enabled"] is False  # None switches the wall off


@pytest.mark.parametrize(
    "settings, line",
    [
        ({"n_fold": 3}, "selection settings: unknown selection setting 'n_fold'; known: ["),
        ({"training": {"epoch": 3}}, "selection settings: training: unknown training setting(s) ['epoch']"),
        ({"n_folds": "x"}, "selection settings: n_folds: input should be a valid integer"),
        (
            {"training": {"learning_rate": "fast"}},
            "selection settings: training.learning_rate: input should be a valid number",
        ),
        ({"grid": {"nodes": [8, "many"]}}, "selection settings: grid.nodes[1]: input should be a valid integer"),
        (
            {"committee": {"size": 1}},
            "selection settings: committee.size must be 0 (no committee) or an integer >= 2; got 1",
        ),
        ({"committee": {"resample": "jackknife"}}, "selection settings: committee.resample must be one of"),
        (
            {"committee": 3},
            "selection settings: committee must be a mapping like {size: 5, resample: bootstrap}; got 3",
        ),
        ([1, 2], "selection settings: expected a mapping of selection settings"),
        (
            {"max_energy_mev_per_fu": 0},
            "selection settings: max_energy_mev_per_fu must be a positive number of meV per formula unit",
        ),
        ({"max_energy_mev_per_fu": "low"}, "selection settings: max_energy_mev_per_fu must be a positive number"),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(settings, line):
    with pytest.raises(SettingsError) as info:
        merge_settings(settings)
    msg = str(info.value)
    assert msg.startswith(line), msg
    assert "\n" not in msg and isinstance(info.value, ModelError)


def _pair_selection(tmp_path=None, **settings):
    """A quick selection: pair potentials only, on 24 configurations whose energy is a sum of pair terms."""
    import numpy as np

    from perovskite_pes.models import PairPotential, train_and_select
    from perovskite_pes.structure import Configuration, Perovskite

    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(3)
    configs = [
        Configuration(ref, rng.normal(0, 0.08, (ref.n_atoms, 3)), rng.normal(0, 0.01, 6), {"kind": "random"})
        for _ in range(24)
    ]
    truth = PairPotential(n_gaussians=6).fit(configs[:12], rng.normal(0, 0.05, 12))  # any smooth pair energy
    energies = truth.predict(configs)
    cfg = {
        "grid": {"model": ["pair"]},
        "pair": {"n_gaussians": 6},
        "n_folds": 3,
        "n_jobs": 1,
        "baselines": False,
        "progress": False,
        **settings,
    }
    return configs, energies, train_and_select(configs, energies, None, cfg, tmp_path)


def test_the_report_is_typed_and_reads_like_the_dict_it_was(tmp_path):
    import json

    import numpy as np

    from perovskite_pes.models.selection import SelectionReport

    configs, energies, (model, report) = _pair_selection(tmp_path, plots=False)
    assert isinstance(report, SelectionReport)
    assert report.n_train == report["n_train"] == 19 and report.n_test == 5 and report.n_configurations == 24
    assert report.best == {"model": "pair"} and report["best_label"] == "pair" and set(report["models"]) == {"best"}
    test = [configs[i] for i in report.test_indices]
    rmse = np.sqrt(np.mean(((model.predict(test) - energies[report.test_indices]) / 40 * 1000) ** 2))
    assert report.test_rmse == report["models"]["best"]["test"]["rmse_mev_per_atom"] == np.float64(rmse).item()
    # optional parts are there only when the run made them
    assert "committee" not in report and report.get("committee") is None and "learning_curve" not in report
    with pytest.raises(KeyError):
        report["paths"]
    assert "figures" not in report and report["model_dir"] == str(tmp_path / "model")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict())) and list(saved) == report.keys()
    assert SelectionReport.model_validate(saved).test_rmse == report.test_rmse  # reads its own JSON back
    assert model.provenance_["test_rmse_mev_per_atom"] == report.test_rmse and model.provenance_["n_train"] == 19


def test_an_energy_window_leaves_out_the_configurations_above_it():
    import numpy as np

    from perovskite_pes.models import train_and_select

    configs, energies, (_, full) = _pair_selection()
    per_fu = energies / 8 * 1000  # 8 formula units in the 2x2x2 cell
    window = float(np.median(per_fu - per_fu.min()))
    _, _, (model, report) = _pair_selection(max_energy_mev_per_fu=window)
    above = sorted(np.flatnonzero(per_fu - per_fu.min() > window).tolist())
    assert report.excluded_indices == above and 0 < len(above) < 24
    assert full.get("excluded_indices") is None
    # train and test indices point into the configurations given, and cover exactly the kept ones
    assert sorted(report.train_indices + report.test_indices) == sorted(set(range(24)) - set(above))
    assert report.n_configurations == 24 - len(above)
    # the same as training on the kept configurations alone
    kept = sorted(set(range(24)) - set(above))
    cfg = dict(report.settings, max_energy_mev_per_fu=None, paths=None)
    alone, again = train_and_select([configs[i] for i in kept], energies[kept], None, cfg)
    assert [kept[i] for i in again.test_indices] == report.test_indices
    np.testing.assert_allclose(alone.predict(configs), model.predict(configs), rtol=1e-10)
