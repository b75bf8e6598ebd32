"""``pes calc run`` and ``pes calc check`` through the command line (in-process)."""

import json
import sys
from pathlib import Path

import pytest

from perovskite_pes.structure.reference import Perovskite

from cli_support import pes as run_pes_command

FIXTURES = Path(__file__).parent / "fixtures" / "vasp"


def pes(*args, home, env=None):
    return run_pes_command(*args, env={"PES_HOME": str(home), **(env or {})})


@pytest.fixture()
def home(tmp_path):
    return tmp_path / "pes_home"


def test_calc_check_lists_every_calculator_and_what_to_do(home):
    out = pes("calc", "check", "--json", home=home, env={"PES_VASP_CMD": "no-such-vasp"})
    assert out.returncode == 0, out.stderr
    entries = {e["name"]: e for e in json.loads(out.stdout)}
    assert set(entries) == {"sevennet", "chgnet", "cp2k", "vasp"}
    assert entries["sevennet"]["usable"] is True
    assert entries["vasp"]["usable"] is False and "PES_VASP_CMD" in entries["vasp"]["detail"]
    table = pes("calc", "check", home=home, env={"PES_VASP_CMD": "no-such-vasp"})
    assert table.returncode == 0 and "sevennet" in table.stdout and "no-such-vasp" in table.stdout


def test_calc_run_sevennet_json_and_table(tmp_path, home):
    path = tmp_path / "cubic.cif"
    Perovskite().primitive_structure().to(filename=str(path))
    out = pes("calc", "run", str(path), "--json", "--output", str(tmp_path / "r.json"), home=home)
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["status"] == "completed" and result["calculator"] == "sevennet"
    assert len(result["forces"]) == 5 and len(result["stress"]) == 6
    assert json.loads((tmp_path / "r.json").read_text())[0]["energy"] == result["energy"]
    table = pes("calc", "run", str(path), "--calculator", "chgnet", home=home)
    assert table.returncode == 0, table.stderr
    assert "CsPbBr3" in table.stdout and "completed" in table.stdout


def test_calc_run_relax_on_multi_frame_extxyz(tmp_path, home):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for a in (5.9, 6.0):
        frames.append(AseAtomsAdaptor.get_atoms(Perovskite(lattice_parameter=a).primitive_structure()))
    write(tmp_path / "two.extxyz", frames, format="extxyz")
    out = pes("calc", "run", str(tmp_path / "two.extxyz"), "-c", "chgnet", "--relax", "cell", "--json", home=home)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert len(results) == 2 and all(r["final_structure"] is not None for r in results)
    a = [r["final_structure"]["lattice"]["a"] for r in results]
    assert a[0] == pytest.approx(a[1], abs=0.01)  # both relax to CHGNet's lattice parameter


def test_calc_run_fake_vasp_with_set_options(tmp_path, home):
    path = tmp_path / "POSCAR"
    Perovskite().primitive_structure().to(filename=str(path), fmt="poscar")
    cmd = f"{sys.executable} {FIXTURES / 'fake_vasp.py'} {FIXTURES / 'static_cubic'}"
    out = pes(
        "calc",
        "run",
        str(path),
        "-c",
        "vasp",
        "--json",
        "--workdir",
        str(tmp_path / "run"),
        "--set",
        "potcar_spec=true",
        "--set",
        "polling_time_step=0.02",
        "--set",
        "monitor_freq=1",
        home=home,
        env={"PES_VASP_CMD": cmd},
    )
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["status"] == "completed" and result["energy"] == pytest.approx(-17.25)
    assert result["output_dir"] == str((tmp_path / "run").resolve())


def test_bad_input_exits_2_with_one_line(tmp_path, home):
    out = pes("calc", "run", str(tmp_path / "missing.cif"), home=home)
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    path = tmp_path / "cubic.cif"
    Perovskite().primitive_structure().to(filename=str(path))
    out = pes("calc", "run", str(path), "--set", "cutof=300", "-c", "cp2k", home=home)
    assert out.returncode == 2 and "unknown option(s) for calculator 'cp2k': cutof" in out.stderr
    s = Perovskite().primitive_structure()
    s.append("Br", s[2].coords + [0.1, 0, 0], coords_are_cartesian=True)
    s.to(filename=str(tmp_path / "overlap.cif"))
    out = pes("calc", "run", str(tmp_path / "overlap.cif"), home=home)
    assert out.returncode == 2 and "overlapping atoms" in out.stderr
    out = pes("calc", "run", str(path), "-c", "vasp", home=home, env={"PES_VASP_CMD": "no-such-vasp"})
    assert out.returncode == 2 and "VASP executable not found" in out.stderr
