"""CP2K layer: the written input, and real (cheap) CP2K runs when cp2k.psmp is installed."""

import shutil

import numpy as np
import pytest

from perovskite_pes.calculators import CalculatorInputError, get_calculator
from perovskite_pes.calculators.cp2k import COORD_FILE, INPUT_FILE, Cp2kCalculator
from perovskite_pes.structure.reference import Perovskite


@pytest.fixture(autouse=True)
def _temporary_pes_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PES_HOME", str(tmp_path / "pes_home"))


_skip_without_cp2k = pytest.mark.skipif(
    shutil.which("cp2k.psmp") is None or shutil.which("mpirun") is None,
    reason="CP2K (cp2k.psmp + mpirun) not installed; see 'pes calc check'",
)


def has_cp2k(test):
    """A test that runs real CP2K: marked ``dft`` (``pytest -m dft``), skipped where CP2K is missing."""
    return pytest.mark.dft(_skip_without_cp2k(test))


#: cheap settings for tests only (production: 400 Ry, mesh from the cell)
CHEAP = {"cutoff": 200, "rel_cutoff": 30, "kpoints": [2, 2, 2], "eps_scf": 1e-6, "polling_time_step": 0.2}


def cubic(a=5.87):
    return Perovskite(lattice_parameter=a).primitive_structure()


def test_input_has_pbesol_full_kpoint_grid_and_external_coordinates(tmp_path):
    calc = get_calculator("cp2k", data_dir="/usr/share/cp2k")
    s = Perovskite().supercell(2).to_structure()
    if not (calc.data_dir / "GTH_POTENTIALS").is_file():
        pytest.skip("CP2K data files not installed")
    calc.write_inputs(s, tmp_path)
    text = (tmp_path / INPUT_FILE).read_text()
    assert "PARAMETRIZATION PBESOL" in text
    assert "SCHEME MONKHORST-PACK 3 3 3" in text and "FULL_GRID" in text
    assert "CUTOFF 400.0" in text and "RUN_TYPE ENERGY_FORCE" in text
    assert "POTENTIAL GTH-PBE-q9" in text and "POTENTIAL GTH-PBE-q4" in text and "POTENTIAL GTH-PBE-q7" in text
    assert "DZVP-MOLOPT-SR-GTH" in text and "UKS" not in text and "MULTIPLICITY 1" in text
    # coordinates in site order in a separate file (custodian rewrites the input; an inline
    # &COORD block would be reordered by pymatgen's parser)
    assert "&COORD" not in text and f"COORD_FILE_NAME {COORD_FILE}" in text
    rows = (tmp_path / COORD_FILE).read_text().splitlines()[2:]
    assert [r.split()[0] for r in rows] == [site.specie.symbol for site in s]
    np.testing.assert_allclose([[float(x) for x in r.split()[1:]] for r in rows], s.cart_coords, atol=1e-9)
    calc.write_inputs(s, tmp_path / "cell", relax="cell")
    assert "RUN_TYPE CELL_OPT" in (tmp_path / "cell" / INPUT_FILE).read_text()
    calc.write_inputs(s, tmp_path / "pos", relax="positions")
    assert "RUN_TYPE GEO_OPT" in (tmp_path / "pos" / INPUT_FILE).read_text()


def test_element_without_pseudopotential_is_rejected(tmp_path):
    calc = Cp2kCalculator()
    if not (calc.data_dir / "GTH_POTENTIALS").is_file():
        pytest.skip("CP2K data files not installed")
    s = cubic()
    s.replace(0, "Fr")
    with pytest.raises(CalculatorInputError, match="no pseudopotential 'GTH-PBE' for element Fr"):
        calc.write_inputs(s, tmp_path)
    with pytest.raises(CalculatorInputError, match="no basis set 'nonsense' for element Cs"):
        Cp2kCalculator(basis={"Cs": "nonsense"}).write_inputs(cubic(), tmp_path)
    with pytest.raises(CalculatorInputError, match="xc must be"):
        Cp2kCalculator(xc="B3LYP")


@has_cp2k
def test_real_single_point_cubic_and_displaced(tmp_path):
    calc = get_calculator("cp2k", **CHEAP)
    r0 = calc.calculate(cubic(), workdir=tmp_path / "cubic")
    assert r0.status == "completed", r0.error
    assert np.isfinite(r0.energy) and r0.version.startswith("cp2k ")
    assert np.abs(r0.forces).max() < 1e-4  # zero by symmetry
    assert np.abs(r0.stress[3:]).max() < 1e-6 and np.ptp(r0.stress[:3]) < 1e-6
    s = cubic()
    s.translate_sites([1], [0.1, 0, 0], frac_coords=False)  # Pb off-centre along x
    r1 = calc.calculate(s, workdir=tmp_path / "displaced")
    assert r1.status == "completed", r1.error
    assert r1.energy > r0.energy
    assert r1.forces[1, 0] < -0.01  # restoring force on Pb (eV/A)
    assert abs(r1.forces.sum(axis=0)).max() < 0.02
    assert (tmp_path / "displaced" / "custodian.json").exists()


@has_cp2k
@pytest.mark.slow
def test_stress_sign_matches_finite_difference_and_relaxation(tmp_path):
    calc = get_calculator("cp2k", **CHEAP)
    a, h = 5.87, 4e-3
    ep = calc.calculate(cubic(a * (1 + h)), workdir=tmp_path / "p").energy
    em = calc.calculate(cubic(a * (1 - h)), workdir=tmp_path / "m").energy
    r = calc.calculate(cubic(a), workdir=tmp_path / "0")
    assert (ep - em) / (2 * h) == pytest.approx(a**3 * r.stress[:3].sum(), rel=0.05)
    s = cubic()
    s.translate_sites([2], [0.08, 0, 0], frac_coords=False)
    relaxed = calc.calculate(s, relax="positions", workdir=tmp_path / "relax")
    assert relaxed.status == "completed", relaxed.error
    assert np.abs(relaxed.forces).max() < 0.02
    assert relaxed.final_structure is not None and relaxed.energy < calc.calculate(s).energy


def test_missing_basis_and_pseudopotential_data_is_one_line_naming_the_package(tmp_path, run_pes):
    from perovskite_pes.calculators import CalculatorError

    empty = tmp_path / "no_cp2k_data"
    empty.mkdir()
    calc = get_calculator("cp2k", data_dir=str(empty), cp2k_cmd="true")
    with pytest.raises(
        CalculatorError, match="CP2K data file BASIS_MOLOPT not found in .*no_cp2k_data.*apt-get install cp2k-data"
    ) as info:
        calc.calculate(cubic(), workdir=tmp_path / "run")
    assert "\n" not in str(info.value)
    path = tmp_path / "cubic.cif"
    cubic().to(filename=str(path))
    proc = run_pes("calc", "run", path, "-c", "cp2k", "--set", f"data_dir={empty}", "--set", "cp2k_cmd=/bin/true")
    assert proc.returncode == 2 and "apt-get install cp2k-data" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = run_pes("calc", "run", path, "-c", "cp2k", "--set", "cp2k_cmd=no-such-cp2k.psmp")
    assert (
        proc.returncode == 2 and "no-such-cp2k.psmp not found" in proc.stderr and "apt-get install cp2k" in proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1


@has_cp2k
def test_relaxation_stops_on_fmax_not_on_cp2ks_step_size_defaults(tmp_path):
    """CP2K stops a GEO_OPT only when MAX_FORCE, RMS_FORCE, MAX_DR and RMS_DR all hold; with its
    defaults for the last three a loose fmax would be overruled by a 3e-3 bohr step-size limit."""
    import re

    from ase.units import Bohr, Hartree

    fmax = 0.1  # eV/A
    calc = get_calculator(
        "cp2k",
        **{**CHEAP, "basis": {el: "SZV-MOLOPT-SR-GTH" for el in ("Cs", "Pb", "Br")}, "cutoff": 150, "fmax": fmax},
    )
    s = cubic()
    s.translate_sites([2], [0.1, 0, 0], frac_coords=False)  # Br along its Pb-Br bond
    r = calc.calculate(s, relax="positions", workdir=tmp_path)
    assert r.status == "completed", r.error
    text = (tmp_path / INPUT_FILE).read_text()
    max_force = float(re.search(r"MAX_FORCE\s+(\S+)", text).group(1))
    assert max_force == pytest.approx(fmax / (Hartree / Bohr), rel=1e-6)
    assert float(re.search(r"RMS_FORCE\s+(\S+)", text).group(1)) == max_force
    out = (tmp_path / "cp2k.out").read_text()
    assert "GEOMETRY OPTIMIZATION COMPLETED" in out
    assert np.abs(r.forces).max() < fmax
    # it stopped on the forces while its next step was still larger than CP2K's default MAX_DR,
    # i.e. CP2K's defaults would have gone on
    last_step = float(re.findall(r"Max\. step size\s+=\s+(\S+)", out)[-1])
    assert last_step > 3e-3
    assert r.energy < calc.calculate(s, workdir=tmp_path / "start").energy


PARTIAL_OUTPUT = """\
 CP2K| version string:                                       CP2K version 2023.1
 GLOBAL| Run type                                                   ENERGY_FORCE

 ATOMIC KIND INFORMATION

  1. Atomic kind: Cs                                    Number of atoms:       8

     Orbital Basis Set                                        DZVP-MOLOPT-SR-GTH
"""


def test_frozen_run_monitor_takes_a_half_written_output_for_a_running_job(tmp_path):
    """Custodian parses the whole output at every check; on an atomic-kind section written only in part
    (no pseudopotential lines yet) the parser raised IndexError and stopped a healthy run."""
    import os
    import time

    from perovskite_pes.calculators.cp2k_custodian import FrozenRunHandler

    out = tmp_path / "cp2k.out"
    out.write_text(PARTIAL_OUTPUT)
    handler = FrozenRunHandler(output_file="cp2k.out", timeout=60)
    assert handler.check(str(tmp_path)) is False  # being written: not frozen
    old = time.time() - 120
    os.utime(out, (old, old))
    assert handler.check(str(tmp_path)) is True  # unchanged for longer than the timeout: frozen
    assert handler.frozen_preconditioner is False
