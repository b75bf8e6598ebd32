"""Custodian on real CP2K failures: each test makes CP2K really fail on the 5-atom cell at cheap settings.

Too few SCF iterations are corrected and rerun; a killed process is rerun, and after too many kills
the calculation is failed with the reason; a hung process, a wall-time stop and a cutoff too small
for the basis sets end as failed calculations with their reasons. No failure ever yields numbers.
"""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from perovskite_pes.calculators import check_calculators, get_calculator
from perovskite_pes.calculators.cp2k import OUTPUT_FILE
from perovskite_pes.calculators.cp2k_custodian import grid_charge_error, scf_convergence_values
from perovskite_pes.structure.reference import Perovskite

_CP2K = check_calculators(["cp2k"])[0]
#: real CP2K runs: marked dft (``pytest -m dft``; CI runs them), skipped where CP2K cannot run
pytestmark = [
    pytest.mark.dft,
    pytest.mark.skipif(not _CP2K["usable"], reason=f"CP2K not usable here: {_CP2K['detail']}"),
]

#: cheap settings for these tests only: minimal basis, 150 Ry, 2x2x2 mesh on the 5-atom cell
CHEAP = {
    "basis": {el: "SZV-MOLOPT-SR-GTH" for el in ("Cs", "Pb", "Br")},
    "cutoff": 150.0,
    "rel_cutoff": 30.0,
    "kpoints": [2, 2, 2],
    "eps_scf": 1e-6,
    "polling_time_step": 0.1,
    "monitor_freq": 2,
}


@pytest.fixture(autouse=True)
def _temporary_pes_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PES_HOME", str(tmp_path / "pes_home"))
    monkeypatch.delenv("PES_CP2K_WALLTIME", raising=False)


def cubic():
    return Perovskite(lattice_parameter=5.93).primitive_structure()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One undisturbed run: the energy every repaired run must reproduce."""
    r = get_calculator("cp2k", **CHEAP).calculate(cubic(), workdir=tmp_path_factory.mktemp("reference"))
    assert r.status == "completed", r.error
    return r


def corrections(run_dir) -> list[str]:
    import json

    log = json.loads((Path(run_dir) / "custodian.json").read_text())
    return [e for job in log for c in job["corrections"] for e in c["errors"]]


def cp2k_pids(run_dir: Path) -> list[int]:
    """Ids of the cp2k.psmp processes working in ``run_dir`` (found through /proc, nothing else touched;
    an MPI launcher whose arguments name cp2k.psmp is not one of them)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cwd == str(run_dir) and cmd[0].endswith(b"cp2k.psmp"):
            pids.append(int(entry))
    return pids


def disturb(run_dir: Path, sig: int, times: int = 1, timeout: float = 300.0) -> threading.Thread:
    """In the background: each of ``times`` times, wait for a new CP2K process in ``run_dir`` to have
    started its SCF, then send it ``sig``."""

    def work():
        done: set[int] = set()
        rounds = 0
        deadline = time.monotonic() + timeout
        while rounds < times and time.monotonic() < deadline:
            out = run_dir / OUTPUT_FILE
            fresh = [p for p in cp2k_pids(run_dir) if p not in done]
            if fresh and out.is_file() and "Step     Update method" in out.read_text(errors="replace"):
                for pid in fresh:
                    os.kill(pid, sig)
                    done.add(pid)
                rounds += 1
            time.sleep(0.05)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


def test_scf_out_of_iterations_is_given_more_and_rerun(tmp_path, reference_run):
    r = get_calculator("cp2k", **{**CHEAP, "max_scf": 5}).calculate(cubic(), workdir=tmp_path)
    assert r.status == "completed", r.error
    errors = corrections(tmp_path)
    assert errors and all("SCF not converged within MAX_SCF" in e for e in errors)
    assert "MAX_SCF = 5 steps" in errors[0] and "steadily decreasing" in errors[0]
    text = (tmp_path / "cp2k.inp").read_text()
    assert f"MAX_SCF {5 * 2 ** len(errors)}" in text  # doubled once per correction
    assert "SMEAR" not in text and "ADDED_MOS" not in text  # the functional is left alone
    assert r.energy == pytest.approx(reference_run.energy, abs=2e-4)
    assert scf_convergence_values((tmp_path / OUTPUT_FILE).read_text())[-1] < 1e-6


def test_scf_that_cannot_converge_in_the_allowed_corrections_is_failed_with_the_reason(tmp_path):
    calc = get_calculator("cp2k", **{**CHEAP, "max_scf": 2, "eps_scf": 1e-10, "max_errors": 1})
    r = calc.calculate(cubic(), workdir=tmp_path)
    assert r.status == "failed" and r.energy is None and r.forces is None and r.stress is None
    assert "custodian stopped the run" in r.error and "SCF not converged within MAX_SCF = 2 steps" in r.error


def test_killed_process_is_rerun_and_gives_the_undisturbed_energy(tmp_path, reference_run):
    killer = disturb(tmp_path, signal.SIGKILL, times=1)
    r = get_calculator("cp2k", **CHEAP).calculate(cubic(), workdir=tmp_path)
    killer.join(timeout=5)
    assert r.status == "completed", r.error
    errors = corrections(tmp_path)
    assert len(errors) == 1 and "CP2K stopped before finishing" in errors[0]
    assert (tmp_path / f"{OUTPUT_FILE}.interrupted-1").is_file()
    assert "PROGRAM ENDED" not in (tmp_path / f"{OUTPUT_FILE}.interrupted-1").read_text()
    assert r.energy == pytest.approx(reference_run.energy, abs=1e-6)
    np.testing.assert_allclose(r.forces, reference_run.forces, atol=1e-4)


def test_process_killed_again_and_again_is_failed_with_the_reason(tmp_path):
    killer = disturb(tmp_path, signal.SIGKILL, times=2)
    r = get_calculator("cp2k", **{**CHEAP, "max_reruns": 1}).calculate(cubic(), workdir=tmp_path)
    killer.join(timeout=5)
    assert r.status == "failed" and r.energy is None
    assert "CP2K stopped before finishing" in r.error and "return code" in r.error


def test_hung_process_is_stopped_and_failed_with_the_reason(tmp_path):
    hang = disturb(tmp_path, signal.SIGSTOP, times=1)
    t0 = time.monotonic()
    r = get_calculator("cp2k", **{**CHEAP, "frozen_timeout": 3}).calculate(cubic(), workdir=tmp_path)
    hang.join(timeout=5)
    # stopped at its first SCF step: custodian takes it for a frozen preconditioner, which it cannot
    # correct for a diagonalisation run
    assert r.status == "failed" and "handler: FrozenRunHandler" in r.error and "Frozen" in r.error
    assert not cp2k_pids(tmp_path)  # custodian stopped it: nothing is left running
    assert time.monotonic() - t0 < 120


def test_wall_time_stop_is_failed_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PES_CP2K_WALLTIME", "0.01")  # read when CP2K starts: the time a batch job has left
    r = get_calculator("cp2k", **CHEAP).calculate(cubic(), workdir=tmp_path)
    assert "WALLTIME 0.01" in (tmp_path / "cp2k.inp").read_text()
    assert "exceeded requested execution time" in (tmp_path / OUTPUT_FILE).read_text()
    assert r.status == "failed" and r.energy is None
    assert "WalltimeHandler" in r.error and "Walltime error" in r.error
    assert "SCF not converged" not in r.error  # a wall-time stop is not treated as an SCF problem


def test_cutoff_too_small_for_the_basis_is_failed_with_the_reason(tmp_path, reference_run):
    r = get_calculator("cp2k", **{**CHEAP, "cutoff": 30.0, "rel_cutoff": 10.0}).calculate(cubic(), workdir=tmp_path)
    # CP2K itself converges this run, to an energy eV away from the converged one ...
    text = (tmp_path / OUTPUT_FILE).read_text()
    assert "SCF run converged" in text and "PROGRAM ENDED" in text
    error, n_el = grid_charge_error(text)
    assert n_el == pytest.approx(34.0, abs=0.01) and error > 1e-4
    # ... which must never be stored as a valid energy
    assert r.status == "failed" and r.energy is None
    assert "GridChargeValidator" in r.error and "cutoff (30 Ry) is too small" in r.error
    # the undisturbed run at 150 Ry passes the same check by orders of magnitude
    error_ok, _ = grid_charge_error((Path(reference_run.output_dir) / OUTPUT_FILE).read_text())
    assert error_ok < 1e-6
