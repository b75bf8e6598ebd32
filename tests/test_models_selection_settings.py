"""Selection settings of train_and_select: one typed model holds every default; errors are one line."""

import pytest

from perovskite_pes.models import DEFAULT_SETTINGS, ModelError
from perovskite_pes.models.selection import SelectionSettings, SettingsError, committee_settings, expand_grid, merge_settings


def test_defaults_live_in_the_settings_model():
    s = SelectionSettings()
    assert DEFAULT_SETTINGS == s.to_dict() == merge_settings(None) == merge_settings({})
    assert s.n_folds == 10 and s.test_fraction == 0.2 and s.committee.size == 0 and s.bounds.enabled
    assert "paths" not in DEFAULT_SETTINGS  # only when given
    # the dict handed out is a copy: changing it changes no later defaults
    merge_settings(None)["training"]["epochs"].append(5)
    assert merge_settings(None)["training"]["epochs"] == [20, 50, 200, 1000]


def test_partial_groups_are_merged_with_their_defaults():
    cfg = merge_settings({"training": {"epochs": 7}, "linear": {"alpha": 1e-3}, "committee": {"size": 3},
                          "grid": {"model": "linear", "nodes": (4, 8)}, "paths": {"p": {"x": [0]}}})
    assert cfg["training"]["epochs"] == 7 and cfg["training"]["batch_sizes"] == [2, 10, 100, 1000]
    assert cfg["linear"] == {"method": "ridge", "alpha": 1e-3}  # keyword groups: given keys update the defaults
    assert cfg["committee"] == {"size": 3, "resample": "bootstrap"}
    assert cfg["grid"]["model"] == ["linear"] and cfg["grid"]["nodes"] == [4, 8] and cfg["grid"]["clusters"] == ["7p+t+o"]
    assert cfg["paths"] == {"p": {"x": [0]}}
    assert [g["model"] for g in expand_grid(cfg["grid"])] == ["linear"]
    assert committee_settings(cfg) == {"size": 3, "resample": "bootstrap"}
    assert committee_settings(merge_settings({"committee": None})) is None
    assert merge_settings({"bounds": None})["bounds"]["enabled"] is False  # None switches the wall off


@pytest.mark.parametrize("settings, line", [
    ({"n_fold": 3}, "selection settings: unknown selection setting 'n_fold'; known: ["),
    ({"training": {"epoch": 3}}, "selection settings: training: unknown training setting(s) ['epoch']"),
    ({"n_folds": "x"}, "selection settings: n_folds: input should be a valid integer"),
    ({"training": {"learning_rate": "fast"}}, "selection settings: training.learning_rate: input should be a valid number"),
    ({"grid": {"nodes": [8, "many"]}}, "selection settings: grid.nodes[1]: input should be a valid integer"),
    ({"committee": {"size": 1}}, "selection settings: committee.size must be 0 (no committee) or an integer >= 2; got 1"),
    ({"committee": {"resample": "jackknife"}}, "selection settings: committee.resample must be one of"),
    ({"committee": 3}, "selection settings: committee must be a mapping like {size: 5, resample: bootstrap}; got 3"),
    ([1, 2], "selection settings: expected a mapping of selection settings"),
])
def test_bad_settings_are_one_line_naming_the_setting(settings, line):
    with pytest.raises(SettingsError) as info:
        merge_settings(settings)
    msg = str(info.value)
    assert msg.startswith(line), msg
    assert "\n" not in msg and isinstance(info.value, ModelError)
