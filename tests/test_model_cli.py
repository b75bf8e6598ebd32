"""`pes model train | list | show | predict | evaluate` through subprocesses, with a temporary PES_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perovskite_pes.db import close_store, get_store
from perovskite_pes.models import PairPotential, load_model
from perovskite_pes.structure import Perovskite

from models_support import random_configs, repeat_configuration

TRAIN = (
    "--models",
    "linear,cluster",
    "--clusters",
    "4p+o",
    "--nodes",
    "4",
    "--folds",
    "3",
    "--epochs",
    "3,10",
    "--batch-sizes",
    "8,32",
    "--learning-rate",
    "0.01",
    "--n-jobs",
    "1",
)


def _truth():
    truth = PairPotential(cutoff=6.0, n_gaussians=6, r_min=2.5)
    truth.coef_ = np.random.default_rng(8).normal(0, 0.1, truth.n_features)
    truth.e0_, truth.alpha_ = -3.1, 0.0
    return truth


@pytest.fixture
def seeded(pes_home):
    ref = Perovskite().supercell(2)
    configs = random_configs(ref, 40, seed=11, amplitude=0.06)
    labels = _truth().predict_all(configs)
    store = get_store()
    ids = store.save_configurations(configs, source="test").ids
    for cid, e, f, s in zip(ids, labels["energy"], labels["forces"], labels["stress"]):
        store.save_calculation(
            cid,
            dict(
                energy=float(e),
                forces=f,
                stress=s,
                calculator="sevennet",
                version="test",
                settings_hash="h1",
                status="completed",
            ),
        )
    close_store()
    return configs, labels


def _write_extxyz(path, configs, energies=None, shuffle_seed=None, info=None):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames, orders = [], []
    rng = np.random.default_rng(shuffle_seed)
    for i, c in enumerate(configs):
        atoms = c.to_ase()
        order = rng.permutation(len(atoms)) if shuffle_seed is not None else np.arange(len(atoms))
        atoms = atoms[order]
        atoms.wrap()
        if energies is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=float(energies[i]))
        atoms.info.update((info or {}).get(i, {}))
        frames.append(atoms)
        orders.append(order)
    write(str(path), frames, format="extxyz")
    return orders


def test_train_list_show_predict_evaluate(seeded, run_pes, tmp_path):
    configs, labels = seeded
    out = json.loads(run_pes("model", "train", *TRAIN, "--name", "m1", "--json", check=0, timeout=600).stdout)
    assert out["name"] == "m1" and out["calculator"] == "sevennet" and out["settings_hash"] == "h1" and out["active"]
    metrics = out["metrics"]
    assert metrics["n_train"] == 32 and metrics["n_test"] == 8
    assert set(metrics["baseline_test_rmse"]) >= {"pair"}
    model = load_model(out["path"])
    rec = [m for m in json.loads(run_pes("model", "list", "--json", check=0).stdout) if m["id"] == out["id"]][0]
    assert rec["active"] and rec["n_train"] == 40 and rec["metrics"]["test_rmse"] == pytest.approx(metrics["test_rmse"])
    assert "m1" in run_pes("model", "list", check=0).stdout

    shown = json.loads(run_pes("model", "show", "m1", "--json", check=0).stdout)
    assert shown["model_type"] == model.model_type and shown["record"]["id"] == out["id"]
    assert "type:" in run_pes("model", "show", check=0).stdout  # the active model by default

    # predict: atoms shuffled and wrapped back into the cell; energies and forces as the model's own
    xyz = tmp_path / "s.extxyz"
    orders = _write_extxyz(xyz, configs[:3], shuffle_seed=1)
    pred = json.loads(run_pes("model", "predict", xyz, "--forces", "--json", check=0).stdout)
    expect = model.predict_all(configs[:3])
    for k, s in enumerate(pred["structures"]):
        assert s["energy"] == pytest.approx(expect["energy"][k], abs=1e-8)
        np.testing.assert_allclose(np.array(s["forces"]), expect["forces"][k][orders[k]], atol=1e-8)
    assert "eV/atom" in run_pes("model", "predict", xyz, "--model", out["path"], check=0).stdout

    # evaluate: RMSE against the energies in the file (here: the synthetic truth)
    lab = tmp_path / "labelled.extxyz"
    _write_extxyz(lab, configs, labels["energy"], shuffle_seed=2)
    ev = json.loads(run_pes("model", "evaluate", lab, "--json", check=0).stdout)
    err = (model.predict(configs) - labels["energy"]) / 40 * 1000
    assert ev["n"] == 40 and ev["rmse_mev_per_atom"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-6)
    assert "RMSE" in run_pes("model", "evaluate", lab, check=0).stdout
    assert "no reference energy" in _one_line_error(run_pes("model", "evaluate", xyz))

    # the breakdown by the file's tags and by energy, and the structures outside the training energies
    report = json.loads((Path(out["path"]).parent / "report.json").read_text())
    train_fu = labels["energy"][report["train_indices"]] / 8
    lo, hi = model.provenance_["training_energy_range_ev_per_fu"]
    assert (lo, hi) == pytest.approx((train_fu.min(), train_fu.max()), abs=1e-12)
    far = random_configs(Perovskite().supercell(2), 1, seed=5, amplitude=0.4)
    tagged = configs + far
    energies = np.concatenate([labels["energy"], _truth().predict(far)])
    hot = {i: {"pes_tags": json.dumps({"temperature_K": 600.0})} for i in range(30, 40)}  # as `pes db export` tags
    info = {i: {"kind": "far" if i == 40 else "ab"[i % 2], **hot.get(i, {})} for i in range(41)}
    _write_extxyz(lab, tagged, energies, info=info)
    proc = run_pes("model", "evaluate", lab, "--json", check=0)
    ev = json.loads(proc.stdout)
    err = (model.predict(tagged) - energies) / 40 * 1000
    assert set(ev["by"]) == {"kind"}  # the tags' JSON itself is no grouping
    assert {k: g["n"] for k, g in ev["by"]["kind"].items()} == {"a": 20, "b": 20, "far": 1}
    assert ev["by"]["kind"]["b"]["rmse_mev_per_atom"] == pytest.approx(np.sqrt(np.mean(err[1:40:2] ** 2)), rel=1e-5)
    assert ev["by"]["kind"]["b"]["bias_mev_per_atom"] == pytest.approx(np.mean(err[1:40:2]), rel=1e-5, abs=1e-9)
    by_t = json.loads(run_pes("model", "evaluate", lab, "--by", "temperature_K", "--json", check=0).stdout)["by"]
    assert {k: g["n"] for k, g in by_t["temperature_K"].items()} == {"600.0": 10, "(none)": 31}
    assert by_t["temperature_K"]["600.0"]["bias_mev_per_atom"] == pytest.approx(np.mean(err[30:40]), rel=1e-5, abs=1e-9)
    above = (energies / 8 - lo) * 1000
    assert ev["outside_training_energy_range"] == [
        i for i in range(41) if above[i] < -1 or above[i] > (hi - lo) * 1000 + 1
    ]
    assert 40 in ev["outside_training_energy_range"] and "warning: " in proc.stderr
    assert sum(b["n"] for b in ev["by_energy_mev_per_fu"]) == int((above >= 0).sum())
    text = run_pes("model", "evaluate", lab, "--by", "kind", check=0).stdout
    assert (
        "energy error by kind" in text
        and "mean error" in text
        and "per formula unit above the lowest energy of the model's training data" in text
    )

    # a 6x6x6 periodic repetition: the supercell is inferred and the energy is 27 times the 2x2x2 one
    big = tmp_path / "big.extxyz"
    _write_extxyz(big, [repeat_configuration(configs[0], Perovskite().supercell(6))])
    pred = json.loads(run_pes("model", "predict", big, "--json", check=0, timeout=300).stdout)
    assert pred["structures"][0]["n_atoms"] == 1080
    assert pred["structures"][0]["energy"] == pytest.approx(27 * expect["energy"][0], rel=1e-10)


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pes: error:"), proc.stderr
    return lines[0]


def test_errors_are_one_line(pes_home, run_pes, tmp_path):
    assert "no completed calculations" in _one_line_error(run_pes("model", "train"))
    xyz = tmp_path / "s.extxyz"
    _write_extxyz(xyz, random_configs(Perovskite().supercell(2), 1))
    assert "no active model" in _one_line_error(run_pes("model", "predict", xyz))
    assert "does not exist" in _one_line_error(run_pes("model", "predict", tmp_path / "missing.xyz"))
    assert "no model with id or name" in _one_line_error(run_pes("model", "show", "nope"))
    assert "no models registered" in run_pes("model", "list", check=0).stdout


def test_train_recipe_flags_and_settings_file(seeded, run_pes, tmp_path):
    """--metric/--linear-term/--net-order/--size-weight reach the saved model; a settings file's grid, folds,
    test share and seed are kept unless a flag overrides them (a flag left out does not put its default over
    the file)."""
    settings = tmp_path / "sel.yaml"
    settings.write_text(
        "grid: {model: [site], clusters: ['4p+o'], max_order: [2], nodes: [3]}\ntraining: {lbfgs_iterations: 5}\n"
        "n_folds: 2\ntest_fraction: 0.3\nseed: 3\nn_jobs: 2\n"
    )
    out = json.loads(
        run_pes(
            "model",
            "train",
            "--settings",
            settings,
            "--metric",
            "inv",
            "--linear-term",
            "--net-order",
            "1",
            "--epochs",
            "2",
            "--batch-sizes",
            "16",
            "--n-jobs",
            "1",
            "--max-energy",
            "10000",
            "--larger-test-fraction",
            "0.5",
            "--size-weight",
            "0.5",
            "--json",
            check=0,
            timeout=600,
        ).stdout
    )
    model = load_model(out["path"])
    assert model.model_type == "site" and out["name"] == "sevennet-site"
    report = json.loads((Path(out["path"]).parent / "report.json").read_text())
    assert report["settings"]["max_energy_mev_per_fu"] == 10000 and report["excluded_indices"] == []
    assert report["settings"]["larger_test_fraction"] == 0.5
    assert [report["settings"][k] for k in ("n_folds", "test_fraction", "seed", "n_jobs")] == [2, 0.3, 3, 1]
    assert (
        model.linear_term
        and model.net_order == 1
        and model.lbfgs_iterations == 5
        and model.size_weight == 0.5
        and tuple(model.hidden_layers) == (3,)
    )
    assert model.featurizer_.to_dict()["metric"] == "inv" and model.max_order == 2


def test_a_campaign_spec_as_settings_file_gives_the_campaigns_training(tmp_path):
    """``--settings workflows/X.yaml`` trains as the campaign does (committee included); a broken spec is
    refused with the spec's own one-line error."""
    from perovskite_pes.cli.model import _load_settings_file
    from perovskite_pes.workflows.spec import SpecError, load_spec

    shipped = Path(__file__).resolve().parents[1] / "workflows" / "cspbbr3_thermal_site.yaml"
    settings = _load_settings_file(shipped)
    assert settings == load_spec(shipped).campaign_training_settings()
    assert settings["grid"]["model"] == ["site"] and settings["committee"] == {"size": 2, "resample": "bootstrap"}
    assert settings["max_energy_mev_per_fu"] == 600 and settings["training"]["energy_weight_scale"] == 0.05
    broken = tmp_path / "broken.yaml"
    broken.write_text(shipped.read_text().replace("folds: 2", "folds: two"))
    with pytest.raises(SpecError, match="folds"):
        _load_settings_file(broken)


def test_imported_frames_of_a_larger_supercell_train_the_net(seeded, run_pes, tmp_path):
    """Frames of a 3x3x3 cell (as MD writes them) imported next to the 2x2x2 data: the net trains on both,
    the CV and test errors stay those of the 2x2x2 cell, one of the five 3x3x3 frames (a fifth, as
    asked) is held out and scored apart, and the command says so."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    big = random_configs(Perovskite().supercell(3), 5, seed=12, amplitude=0.06)
    labels = _truth().predict_all(big)
    frames = []
    for c, e, f, st in zip(big, labels["energy"], labels["forces"], labels["stress"]):
        atoms = c.to_ase()
        atoms.calc = SinglePointCalculator(atoms, energy=float(e), forces=f, stress=st)
        frames.append(atoms)
    write(str(tmp_path / "md.extxyz"), frames, format="extxyz")
    run_pes(
        "db", "import", tmp_path / "md.extxyz", "--calculator", "sevennet", "--settings-hash", "h1", "--supercell", "3"
    )
    proc = run_pes(
        "model",
        "train",
        *("--models", "cluster", "--clusters", "4p+o", "--nodes", "4", "--folds", "2"),
        *("--epochs", "2,4", "--batch-sizes", "8,32", "--n-jobs", "1", "--force-weight", "1"),
        *("--larger-test-fraction", "0.2", "--workdir", tmp_path / "m"),
        check=0,
        timeout=600,
    )
    assert "4 configurations of larger supercells (4 of 135 atoms) trained the nets as well" in proc.stdout
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["larger_supercells"]["supercells"] == {"135": 4} and report["n_configurations"] == 40
    lt = report["larger_test"]
    assert lt["n"] == 1 and lt["per_supercell"]["135"]["n"] == 1
    assert f"held-out configurations of larger supercells: RMSE {lt['rmse_mev_per_atom']:.3g} meV/atom" in proc.stdout
    assert report["n_train"] + report["n_test"] == 40


def test_committee_train_predict_evaluate_report_the_spread(seeded, run_pes, tmp_path):
    """--committee K trains and registers a committee; predict and evaluate print its spread next to the error."""
    from perovskite_pes.models import Committee

    configs, labels = seeded
    out = json.loads(
        run_pes(
            "model",
            "train",
            "--models",
            "linear",
            "--clusters",
            "4p+o",
            "--folds",
            "3",
            "--n-jobs",
            "1",
            "--committee",
            "3",
            "--resample",
            "folds",
            "--json",
            check=0,
            timeout=600,
        ).stdout
    )
    assert out["name"] == "sevennet-linear-committee3"
    assert out["metrics"]["committee"]["size"] == 3 and out["metrics"]["committee"]["resample"] == "folds"
    assert "calibration" in out["metrics"]["figures"]
    model = load_model(out["path"])
    assert isinstance(model, Committee) and model.resample == "folds"
    u = model.predict_uncertainty(configs[:3])

    xyz = tmp_path / "s.extxyz"
    orders = _write_extxyz(xyz, configs[:3], shuffle_seed=4)
    pred = json.loads(run_pes("model", "predict", xyz, "--forces", "--json", check=0).stdout)["structures"]
    for k, s in enumerate(pred):
        assert s["energy"] == pytest.approx(u["energy"][k], abs=1e-8)
        # the extended XYZ file rounds the positions: equal to about 1e-8
        assert s["energy_std"] == pytest.approx(u["energy_std"][k], rel=1e-6)
        assert s["max_force_deviation"] == pytest.approx(u["max_force_deviation"][k], rel=1e-6)
        np.testing.assert_allclose(s["forces_std"], u["forces_std"][k][orders[k]], rtol=1e-6, atol=1e-9)
    assert "max force dev." in run_pes("model", "predict", xyz, check=0).stdout

    lab = tmp_path / "labelled.extxyz"
    _write_extxyz(lab, configs, labels["energy"])
    png = tmp_path / "cal.png"
    ev = json.loads(run_pes("model", "evaluate", lab, "--plot", png, "--json", check=0).stdout)
    u = model.predict_uncertainty(configs, forces=False)
    np.testing.assert_allclose(
        ev["spread"]["energy_std_mev_per_atom"], u["energy_std"] / 40 * 1000, rtol=1e-5, atol=1e-6
    )
    from scipy.stats import spearmanr

    err = np.abs(u["energy"] - labels["energy"])
    assert ev["spread"]["energy"]["spearman"] == pytest.approx(spearmanr(u["energy_std"], err)[0], abs=1e-6)
    assert png.stat().st_size > 1000
    text = run_pes("model", "evaluate", lab, "--plot", tmp_path / "c2.png", check=0).stdout
    assert "Spearman rank correlation of spread and |error|" in text and (tmp_path / "c2.png").is_file()


def test_data_line_counts_left_out_and_larger_cells_apart():
    from perovskite_pes.cli.model import data_line
    from perovskite_pes.workflows.retrain import metrics_from_report

    assert data_line(8, 10, 2) == "fitted on 8 of 10 calculations, tested on the other 2"
    report = {
        "cv_table": [{"val_rmse_mean": 4.6, "val_rmse_std": 0.4}],
        "n_train": 520,
        "n_test": 130,
        "excluded_indices": list(range(64)),
        "larger_supercells": {"indices": list(range(17)), "supercells": {"320": 17}},
        "test_rmse": 3.6,
    }
    m = metrics_from_report(report)
    assert (m["n_train"], m["n_test"], m["n_excluded"], m["n_larger"]) == (520, 130, 64, 17)
    line = data_line(m["n_train"], 731, m["n_test"], n_excluded=m["n_excluded"], n_larger=m["n_larger"])
    assert line == (
        "fitted on 520 of 731 calculations, tested on 130 "
        "(17 of larger supercells trained on, not scored; 64 above the energy window left out)"
    )
    plain = metrics_from_report({k: v for k, v in report.items() if k not in ("excluded_indices", "larger_supercells")})
    assert "n_excluded" not in plain and "n_larger" not in plain and "n_larger_test" not in plain
    # a share of the larger supercells held out: counted and scored apart
    m = metrics_from_report(report | {"larger_test": {"indices": [20, 21, 22, 23], "n": 4, "rmse_mev_per_atom": 2.5}})
    assert (m["n_larger_test"], m["larger_test_rmse"]) == (4, 2.5)
    line = data_line(m["n_train"], 735, m["n_test"], n_larger=m["n_larger"], n_larger_test=m["n_larger_test"])
    assert line == (
        "fitted on 520 of 735 calculations, tested on 130 "
        "(17 of larger supercells trained on, 4 held out and scored apart)"
    )
