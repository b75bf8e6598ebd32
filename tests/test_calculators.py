"""The calculator interface: results, settings hashes, input validation, k-point meshes."""

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from perovskite_pes.calculators import (
    CalcResult,
    CalculatorError,
    CalculatorInputError,
    check_calculators,
    check_structure,
    get_calculator,
)
from perovskite_pes.calculators._common import kpoint_mesh, split_command
from perovskite_pes.errors import PesError
from perovskite_pes.structure.reference import Perovskite


@pytest.fixture(autouse=True)
def _temporary_pes_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PES_HOME", str(tmp_path / "pes_home"))


def cubic():
    return Perovskite().primitive_structure()


def test_calc_result_round_trip_through_json():
    s = cubic()
    r = CalcResult(
        energy=-1.5,
        forces=np.arange(15.0).reshape(5, 3),
        stress=np.arange(6.0),
        calculator="x",
        version="1",
        settings={"a": 1},
        settings_hash="h",
        wall_time=0.5,
        output_dir="/tmp/x",
        final_structure=s,
    )
    d = json.loads(json.dumps(r.to_dict()))
    back = CalcResult.from_dict(d)
    assert back.energy == r.energy and back.status == "completed"
    np.testing.assert_array_equal(back.forces, r.forces)
    np.testing.assert_array_equal(back.stress, r.stress)
    assert back.final_structure == s


def test_completed_result_needs_finite_numbers_and_failed_keeps_reason():
    with pytest.raises(ValueError, match="finite energy"):
        CalcResult(np.nan, np.zeros((1, 3)), np.zeros(6), "x", "1", {}, "h", 0.0)
    calc = get_calculator("chgnet")
    f = CalcResult.failed(calc, "SCF not converged")
    assert f.status == "failed" and f.error == "SCF not converged" and f.energy is None
    assert f.settings_hash == calc.settings_hash
    assert CalcResult.from_dict(json.loads(json.dumps(f.to_dict()))).error == "SCF not converged"


def test_settings_hash_is_stable_and_changes_with_physics_settings_only():
    a = get_calculator("cp2k")
    assert a.settings_hash == get_calculator("cp2k").settings_hash
    assert len(a.settings_hash) == 64
    # physics settings change the hash
    assert get_calculator("cp2k", cutoff=300).settings_hash != a.settings_hash
    # execution options (commands, polling) do not
    assert get_calculator("cp2k", polling_time_step=0.1, cp2k_cmd="cp2k.psmp").settings_hash == a.settings_hash
    # relaxation thresholds do not: single points of one campaign share a key whatever fmax is
    assert get_calculator("cp2k", fmax=0.05, max_iter=10).settings_hash == a.settings_hash
    assert (
        get_calculator("sevennet", fmax=0.05, optimizer="FIRE").settings_hash
        == get_calculator("sevennet").settings_hash
    )
    assert get_calculator("vasp", ediffg=-0.02, nsw=50).settings_hash == get_calculator("vasp").settings_hash
    assert get_calculator("vasp", encut=520).settings_hash != get_calculator("vasp").settings_hash
    # different calculators / modals never share a hash
    assert get_calculator("sevennet").settings_hash != get_calculator("sevennet", modal="PBE").settings_hash
    assert get_calculator("sevennet").settings_hash != get_calculator("chgnet").settings_hash


def test_default_calculator_is_sevennet_r2scan():
    calc = get_calculator()
    assert calc.name == "sevennet"
    assert calc.settings["model"] == "7net-mf-0" and calc.settings["modal"] == "R2SCAN"


def test_unknown_calculator_and_option_raise_clear_errors():
    with pytest.raises(PesError, match="choose one of sevennet, chgnet, cp2k, vasp"):
        get_calculator("gaussian")
    with pytest.raises(CalculatorInputError, match="unknown option.*encutt.*settings:.*encut"):
        get_calculator("vasp", encutt=400)


def test_overlapping_atoms_and_bad_structures_are_rejected():
    s = cubic()
    s.append("Br", s[2].coords + [0.2, 0, 0], coords_are_cartesian=True)
    with pytest.raises(CalculatorInputError, match="overlapping atoms: sites 2 \\(Br\\) and 5 \\(Br\\) are 0.200 A"):
        check_structure(s)
    # periodic images count: an atom close to another through the boundary
    t = Structure(Lattice.cubic(5.0), ["Cs", "Cs"], [[0.01, 0, 0], [0.99, 0, 0]])
    with pytest.raises(CalculatorInputError, match="overlapping"):
        check_structure(t)
    with pytest.raises(CalculatorInputError, match="pymatgen Structure"):
        check_structure("not a structure")
    calc = get_calculator("chgnet")
    with pytest.raises(CalculatorInputError, match="overlapping"):
        calc.calculate(s)
    with pytest.raises(CalculatorInputError, match="relax must be"):
        calc.calculate(cubic(), relax="volume")


def test_kpoint_mesh_is_6_per_primitive_cell_and_3_on_the_2x2x2_supercell():
    p = Perovskite()
    assert kpoint_mesh(p.lattice) == (6, 6, 6)
    assert kpoint_mesh(p.supercell(2).lattice) == (3, 3, 3)
    assert kpoint_mesh(p.supercell([2, 2, 1]).lattice) == (3, 3, 6)
    # strained cells keep the mesh (rounding, not ceiling)
    assert kpoint_mesh(p.supercell(2).lattice * 1.05) == (3, 3, 3)
    assert kpoint_mesh(p.supercell(2).lattice * 0.95) == (3, 3, 3)
    assert kpoint_mesh(np.eye(3) * 40.0) == (1, 1, 1)
    assert kpoint_mesh(np.eye(3), kpoints=[2, 3, 4]) == (2, 3, 4)
    with pytest.raises(CalculatorInputError):
        kpoint_mesh(np.eye(3), kpoints=[2, 0, 1])


def test_commands_are_split_into_argument_lists():
    # custodian iterates over the command: a string would become single characters
    assert split_command("mpirun -np 4 'vasp std'", "vasp_cmd") == ["mpirun", "-np", "4", "vasp std"]
    assert split_command(["vasp_std"], "vasp_cmd") == ["vasp_std"]
    with pytest.raises(CalculatorInputError):
        split_command("", "vasp_cmd")


def test_check_calculators_reports_every_calculator_with_a_reason(monkeypatch):
    monkeypatch.setenv("PES_VASP_CMD", "no-such-vasp-binary")
    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    entries = {e["name"]: e for e in check_calculators()}
    assert set(entries) == {"sevennet", "chgnet", "cp2k", "vasp"}
    assert entries["sevennet"]["usable"] and "7net-mf-0" in entries["sevennet"]["detail"]
    assert not entries["vasp"]["usable"]
    assert "no-such-vasp-binary" in entries["vasp"]["detail"] and "PES_VASP_CMD" in entries["vasp"]["detail"]


def test_missing_cp2k_binary_is_a_clear_error():
    calc = get_calculator("cp2k", cp2k_cmd="no-such-cp2k.psmp")
    with pytest.raises(CalculatorError, match="no-such-cp2k.psmp not found.*apt-get install cp2k"):
        calc.calculate(cubic())
    calc = get_calculator("cp2k", cp2k_cmd="mpirun -np 2 no-such-cp2k.psmp")
    with pytest.raises(CalculatorError, match="no-such-cp2k.psmp"):
        calc.check_available()
