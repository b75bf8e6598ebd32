"""``pes simulate md|mc|heat|relax`` in-process: JSON contents, plots, one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest

from perovskite_pes.cli import main
from perovskite_pes.models import LinearCE

from models_support import morse_energy, random_configs, small_reference


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    ref = small_reference()
    configs = random_configs(ref, 120, seed=3, amplitude=0.15, strain=0.01)
    path = tmp_path_factory.mktemp("cli_models") / "linear"
    LinearCE(clusters="4p", max_order=2, reference_energy_per_fu=-3.0).fit(configs, morse_energy(configs)).save(path)
    return path


def _run_json(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


@pytest.mark.parametrize(
    "verb, extra",
    [
        ("md", ["--steps", 20, "--equilibration", 10, "--ensemble", "npt"]),
        ("mc", ["--steps", 3, "--equilibration", 2]),
    ],
)
def test_md_and_mc_json(pes_home, model_dir, capsys, tmp_path, verb, extra):
    d = _run_json(
        capsys,
        "simulate",
        verb,
        "--model",
        model_dir,
        "--supercell",
        2,
        "--temperature",
        80,
        "--workdir",
        tmp_path / verb,
        "--trajectory",
        tmp_path / f"{verb}.extxyz",
        "--json",
        *extra,
    )
    for key in (
        "temperature_K",
        "steps",
        "atoms",
        "steps_per_second",
        "order_parameters",
        "lattice_parameters",
        "phase",
    ):
        assert key in d
    assert d["temperature_K"] == 80.0 and d["atoms"] == 40 and d["steps_per_second"] > 0
    assert len(d["order_parameters"]["R"]) == 3 and len(d["order_parameters"]["M"]) == 3
    assert len(d["lattice_parameters"]) == 6 and d["phase"] == "a0a0a0"
    assert (tmp_path / verb / f"{verb}.png").stat().st_size > 1000
    assert (tmp_path / f"{verb}.extxyz").exists()
    assert json.loads((tmp_path / verb / "result.json").read_text())["series"]


def test_heat_reports_transitions_and_plot(pes_home, model_dir, capsys, tmp_path):
    d = _run_json(
        capsys,
        "simulate",
        "heat",
        "--model",
        model_dir,
        "--supercell",
        2,
        "--method",
        "mc",
        "--t-min",
        50,
        "--t-max",
        100,
        "--t-step",
        50,
        "--steps",
        2,
        "--equilibration",
        1,
        "--seeds",
        "0,1",
        "--heat-start",
        "a0a0c+",
        "--workdir",
        tmp_path / "heat",
        "--json",
    )
    assert isinstance(d["transitions"], list)
    for tr in d["transitions"]:
        assert set(tr) >= {"from", "to", "temperature_K", "uncertainty_K"}
    assert len(d["runs"]) == 4 and {r["direction"] for r in d["runs"]} == {"heat", "cool"}
    assert [r["temperature_K"] for r in d["runs"] if r["direction"] == "cool"][0] == [100.0, 50.0]
    assert (tmp_path / "heat" / "transitions.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "md", "--model", "no-such-model"], "unknown model"),
        (["simulate", "md", "--temperature", "0"], "positive temperature"),
        (["simulate", "md", "--temperature", "100", "--timestep", "40"], "time step"),
        (["simulate", "mc", "--start", "a9b9c9"], "Glazer"),
        (["simulate", "heat", "--t-min", "400", "--t-max", "300"], "t_min < t_max"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(pes_home, model_dir, capsys, argv, message):
    if "--model" not in argv:
        argv = argv[:2] + ["--model", str(model_dir)] + argv[2:]
    rc = main(argv + ["--supercell", "2", "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_blow_up_is_one_line_exit_2_and_keeps_the_trajectory(pes_home, model_dir, capsys, tmp_path):
    traj = tmp_path / "t.traj"
    rc = main(
        [
            "simulate",
            "md",
            "--model",
            str(model_dir),
            "--supercell",
            "2",
            "--temperature",
            "300",
            "--steps",
            "200",
            "--equilibration",
            "0",
            "--max-displacement",
            "0.05",
            "--trajectory",
            str(traj),
            "--sample-every",
            "1",
            "--workdir",
            str(tmp_path / "w"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "step" in err and "300 K" in err and "displacement" in err
    assert traj.stat().st_size > 0


def test_heat_passes_the_displacement_limit_to_every_run(pes_home, model_dir, capsys, tmp_path):
    argv = ["simulate", "heat", "--model", model_dir, "--supercell", 2, "--method", "mc", "--t-min", 50]
    argv += ["--t-max", 300, "--t-step", 250, "--steps", 5, "--equilibration", 5, "--seeds", 0, "--no-progress"]
    rc = main([str(a) for a in argv + ["--max-displacement", "0.001", "--workdir", tmp_path / "tight"]])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "every run stopped" in err and "limit 0.001 A" in err
    d = _run_json(capsys, *argv, "--max-displacement", 3, "--workdir", tmp_path / "loose", "--json")
    assert [r["stopped"] for r in d["runs"]] == [None, None]
    assert d["settings"]["max_displacement"] == 3.0


def test_relax_json_structures_and_plot(pes_home, model_dir, capsys, tmp_path):
    from ase.io import read

    from perovskite_pes.models import load_model
    from perovskite_pes.models.calculator import PESCalculator

    out = tmp_path / "relax"
    d = _run_json(
        capsys, "simulate", "relax", "--model", model_dir, "--start", "a0a0c+,a-a-a-", "--workdir", out, "--json"
    )
    starts = [p["start"] for p in d["phases"]]
    assert starts == ["a0a0a0", "a0a0c+", "a-a-a-"]  # energies are given from the relaxed cubic cell
    by = {p["start"]: p for p in d["phases"]}
    assert by["a0a0a0"]["energy_meV_per_fu"] == 0.0
    assert by["a0a0c+"]["glazer"] in ("a0a0c+", "a0a0a0") and by["a-a-a-"]["glazer"] in ("a-a-a-", "a0a0a0")
    assert d["lowest"] == min(d["phases"], key=lambda p: p["energy_meV_per_fu"])["glazer"]
    assert all(p["converged"] and p["max_force"] < 0.005 for p in d["phases"])
    # every relaxed structure is written and has the energy the table gives
    calc = PESCalculator(load_model(model_dir))
    for p in d["phases"]:
        atoms = read(p["structure"])
        atoms.calc = calc
        assert atoms.get_potential_energy() / 8 == pytest.approx(p["energy_per_fu_eV"], abs=1e-6)
    assert (out / "phases.png").stat().st_size > 1000
    assert json.loads((out / "result.json").read_text())["phases"][1]["start"] == "a0a0c+"


@pytest.mark.parametrize(
    "extra, message",
    [(["--fmax", "0"], "fmax must be a positive"), (["--start", "a9b9c9"], "Glazer"), (["--max-steps", "0"], "steps")],
)
def test_relax_bad_input_is_one_line_and_exit_2(pes_home, model_dir, capsys, extra, message):
    rc = main(["simulate", "relax", "--model", str(model_dir), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1
