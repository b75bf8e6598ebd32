"""One iteration of the active-learning loop without MD: the last round's model measured on its labelled
frames, and a loop that stops without a last exploration when told so."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perovskite_pes.models import Committee
from perovskite_pes.workflows.active import active_iteration, history_path, labelled_errors, load_history

from models_support import morse_energy, random_configs


@pytest.fixture(scope="module")
def committee_and_frames(ref, tmp_path_factory):
    configs = random_configs(ref, 30, seed=4, amplitude=0.06)
    model = Committee("pair", {}, size=2, seed=1).fit(configs[:24], morse_energy(configs[:24]))
    path = tmp_path_factory.mktemp("al") / "model"
    model.save(path)
    frames = configs[24:]
    for k, c in enumerate(frames):
        c.tags.update(method="active", temperature_K=300.0 if k < 4 else 600.0)
    return model, path, frames


def _labels(model, frames, de_per_atom, df):
    """Store items whose labels are the model's own predictions shifted by known amounts."""
    pred = model.predict_all(frames)
    return [
        dict(
            config=c,
            config_id=f"id{k}",
            energy=float(pred["energy"][k] - de_per_atom[k] * c.reference.n_atoms),
            forces=pred["forces"][k] - df,
            stress=None,
        )
        for k, c in enumerate(frames)
    ]


def test_labelled_errors_are_the_models_errors_on_the_frames_it_selected(committee_and_frames):
    model, path, frames = committee_and_frames
    de = np.array([0.002, -0.002, 0.002, -0.002, 0.004, 0.004])  # eV/atom, model minus label
    items = _labels(model, frames, de, 0.05)
    items.append(dict(items[0], config_id="other", energy=items[0]["energy"] + 100.0))  # not selected: ignored
    record = {"model": str(path), "todo": [f"id{k}" for k in range(6)]}
    err = labelled_errors(record, items)
    assert err["n"] == 6
    assert err["energy_rmse_mev_per_atom"] == pytest.approx(1000 * np.sqrt(np.mean(de**2)))
    assert err["energy_bias_mev_per_atom"] == pytest.approx(1000 * de.mean())
    assert err["force_rmse_ev_per_a"] == pytest.approx(0.05)
    assert err["per_temperature"]["300"]["n"] == 4
    assert err["per_temperature"]["300"]["energy_bias_mev_per_atom"] == pytest.approx(0.0, abs=1e-9)
    assert err["per_temperature"]["600"]["energy_rmse_mev_per_atom"] == pytest.approx(4.0)
    assert labelled_errors({"model": str(path), "todo": ["missing"]}, items) == {"n": 0}


def test_labels_above_the_training_window_are_counted_and_distances_measured_inside_it(committee_and_frames):
    from perovskite_pes.simulation.explore import distance_floors
    from perovskite_pes.structure import Configuration
    from perovskite_pes.structure.sampling import DEFAULT_MIN_DISTANCE
    from perovskite_pes.workflows.active import _distance_floors

    model, path, frames = committee_and_frames
    squeezed = Configuration(frames[5].reference, frames[5].displacements * 4.0, tags=dict(frames[5].tags))
    items = _labels(model, frames[:5] + [squeezed], np.zeros(6), 0.0)
    items[5]["energy"] += 2.0 * squeezed.reference.n_cells  # 2 eV per formula unit above the others
    assert distance_floors(frames[:5], 0.1) != distance_floors(frames[:5] + [squeezed], 0.1)
    record = {"model": str(path), "todo": ["id4", "id5"]}
    assert labelled_errors(record, items, training_window=600)["n_above_training_window"] == 1
    assert labelled_errors(record, items, training_window=3000)["n_above_training_window"] == 0
    assert "n_above_training_window" not in labelled_errors(record, items)
    # the floors come from the configurations the training keeps: the squeezed one only without a window
    assert _distance_floors(items, None, 600) == DEFAULT_MIN_DISTANCE
    assert _distance_floors(items, 0.1, 600) == distance_floors(frames[:5], 0.1)
    assert _distance_floors(items, 0.1, None) == distance_floors(frames[:5] + [squeezed], 0.1)


class _Store:
    def __init__(self, items):
        self.items = items

    def training_data(self, calculator=None, settings_hash=None):
        return self.items


def test_a_loop_told_not_to_explore_last_stops_and_measures_the_last_round(committee_and_frames, tmp_path):
    model, path, frames = committee_and_frames
    items = _labels(model, frames, np.full(6, 0.003), 0.0)
    first = {
        "iteration": 1,
        "model": str(path),
        "n_to_label": 6,
        "todo": [f"id{k}" for k in range(6)],
        "selection": {"per_temperature": {}},
    }
    history_path(tmp_path).parent.mkdir(parents=True)
    history_path(tmp_path).write_text(json.dumps({"1": first}))
    settings = {"iterations": 1, "budget": 100, "final_exploration": False}
    rec = active_iteration(_Store(items), path, settings, 2, {"name": "sevennet"}, "al", tmp_path)
    assert rec["stop"] and rec["reason"] == "1 iterations done"
    assert not rec["explored"] and rec["runs"] == [] and rec["n_to_label"] == 0
    history = load_history(tmp_path)
    assert sorted(history) == ["1", "2"]
    assert history["1"]["labelled_errors"]["energy_rmse_mev_per_atom"] == pytest.approx(3.0)
    assert (tmp_path / "active" / "convergence.png").is_file()
    # the budget ends the loop as well, whatever the iteration count
    spent = dict(settings, iterations=5, budget=6)
    rec = active_iteration(_Store(items), path, spent, 2, {"name": "sevennet"}, "al", tmp_path)
    assert rec["stop"] and rec["reason"] == "budget of 6 calculations spent" and not rec["explored"]


def _explore_every_frame(**settings) -> dict:
    """Loop settings that explore at 300 K from the cubic cell and keep every frame (no trust window)."""
    base = dict(iterations=3, budget=100, temperatures=[300.0], starts=["a0a0a0"], strains=[0.0], equilibration=0)
    base |= dict(timestep_fs=2.0, lower=0.0, upper=1e9, max_selected=10, uniqueness_tolerance=0.0, metric="force")
    return base | {"stop_fraction": 0.0} | settings


def test_an_iteration_explores_in_every_supercell_given_and_stores_each_frame_once(
    committee_and_frames, tmp_path, pes_home
):
    from perovskite_pes.db import get_store

    _, path, _ = committee_and_frames
    settings = _explore_every_frame(steps=10, sample_every=5, supercells=[2, 4])
    store = get_store()
    rec = active_iteration(store, path, settings, 1, {"name": "sevennet"}, "al", tmp_path)
    assert [r["supercell"] for r in rec["runs"]] == [2, 4] and not rec["stop"]
    assert rec["selection"]["n_candidates"] == 4 and len(rec["todo"]) == 4
    assert {c: v["frames"] for c, v in rec["selection"]["per_supercell"].items()} == {"2x2x2": 2, "4x4x4": 2}
    sizes = sorted(store.get_configuration(i).reference.n_atoms for i in rec["todo"])
    assert sizes == [40, 40, 320, 320]
    from perovskite_pes.workflows.report import _active_summary

    row = _active_summary(tmp_path)[0]
    assert set(row["per_supercell"]) == {"2x2x2", "4x4x4"} and set(row["per_temperature"]) == {"300"}
    again = active_iteration(store, path, settings, 1, {"name": "sevennet"}, "al", tmp_path)  # a rerun
    assert sorted(again["todo"]) == sorted(rec["todo"])  # the same seeded frames, stored once
    # a trust window per supercell: the 4x4x4 frames lie below their cell's lower bound, so only 2x2x2 ones go
    per_cell = active_iteration(store, path, settings | {"lower": [0.0, 1e8]}, 1, {"name": "sevennet"}, "al", tmp_path)
    assert per_cell["selection"]["per_supercell"]["4x4x4"]["fraction_above_lower"] == 0.0
    assert sorted(store.get_configuration(i).reference.n_atoms for i in per_cell["todo"]) == [40, 40]


class _WithData:
    """The real store, with ``items`` as its training data."""

    def __init__(self, store, items):
        self.store, self.items = store, items

    def training_data(self, calculator=None, settings_hash=None):
        return self.items

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_an_iteration_with_a_distance_margin_holds_frames_to_the_training_distances(
    committee_and_frames, tmp_path, pes_home
):
    from perovskite_pes.db import get_store
    from perovskite_pes.simulation.explore import distance_floors
    from perovskite_pes.workflows.report import _active_summary

    model, path, frames = committee_and_frames
    store = _WithData(get_store(), _labels(model, frames, np.zeros(6), 0.0))
    settings = _explore_every_frame(steps=10, sample_every=5, distance_margin=0.5)
    rec = active_iteration(store, path, settings, 1, {"name": "sevennet"}, "al", tmp_path, training_window=600)
    assert rec["selection"]["distance_floors"] == pytest.approx(distance_floors(frames, 0.5))
    assert rec["selection"]["n_too_close"] == 0 and len(rec["todo"]) == 2  # half the shortest: every frame passes
    assert _active_summary(tmp_path)[0]["too_close"] == 0
    plain_settings = _explore_every_frame(steps=10, sample_every=5)
    plain = active_iteration(store, path, plain_settings, 1, {"name": "sevennet"}, "al", tmp_path)
    assert plain["selection"]["distance_floors"] == {}


def test_an_exploration_stops_where_an_atom_leaves_its_site_by_the_limit_given(
    committee_and_frames, tmp_path, pes_home
):
    from perovskite_pes.db import get_store

    _, path, _ = committee_and_frames
    settings = _explore_every_frame(steps=20, sample_every=2)
    store = get_store()
    free = active_iteration(store, path, settings, 1, {"name": "sevennet"}, "al", tmp_path)
    assert free["runs"][0]["blowup"] is None and free["runs"][0]["steps"] == 20  # the default limit: 2 A
    hot = settings | {"temperatures": [3000.0], "timestep_fs": 4.0}  # the toy's atoms fly: 0.5 A in a few steps
    tight = active_iteration(store, path, hot | {"max_displacement": 0.5}, 1, {"name": "sevennet"}, "al", tmp_path)
    run = tight["runs"][0]
    assert "limit 0.5 A" in run["blowup"] and run["steps"] < 20 and run["frames"] <= 5
    loose = active_iteration(store, path, hot | {"max_displacement": 10}, 1, {"name": "sevennet"}, "al", tmp_path)
    assert loose["runs"][0]["steps"] > run["steps"]


def test_the_loop_reads_the_settings_the_builder_wrote_and_those_of_older_fireworks():
    from perovskite_pes.workflows.spec import SpecError, validate_active, validate_spec

    spec = validate_spec(
        {
            "name": "al",
            "calculator": {"name": "sevennet"},
            "active": {"iterations": 2, "max_displacement": 3, "supercells": [4], "steps": 40},
        }
    )
    written = {**spec.to_dict()["active"], "supercell": 2}  # what the builder puts in the Firework
    assert validate_active(written) == spec.active
    assert validate_active(written).explore_kwargs()["max_displacement"] == 3.0
    # a Firework written before later fields existed: they take the spec's defaults
    old = {k: v for k, v in written.items() if k not in ("max_displacement", "supercells", "final_exploration")}
    read = validate_active(old)
    assert read.max_displacement == 2.0 and read.supercells == () and read.final_exploration
    assert read.steps == 40 and read.iterations == 2
    with pytest.raises(
        SpecError, match=r"^campaign spec: active.upper: the trust window needs lower < upper"
    ):  # a hand-edited Firework is checked like a spec
        validate_active(dict(written, lower=0.5, upper=0.1))
