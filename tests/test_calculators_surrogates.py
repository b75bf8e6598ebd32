"""Pretrained ML potentials (SevenNet 7net-mf-0/R2SCAN, CHGNet): physics checks on CsPbBr3."""

import numpy as np
import pytest

from perovskite_pes.calculators import calculate_many, get_calculator
from perovskite_pes.calculators.surrogates import _MODEL_CACHE
from perovskite_pes.structure.reference import Perovskite


@pytest.fixture(autouse=True)
def _temporary_pes_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PES_HOME", str(tmp_path / "pes_home"))


def cubic(a=5.87):
    return Perovskite(lattice_parameter=a).primitive_structure()


@pytest.fixture(scope="module")
def sevennet():
    return get_calculator("sevennet")


def test_cubic_cell_has_zero_forces_and_isotropic_stress(sevennet):
    r = sevennet.calculate(cubic())
    assert r.status == "completed" and np.isfinite(r.energy)
    assert r.calculator == "sevennet" and r.version.startswith("sevenn ")
    assert r.settings["model"] == "7net-mf-0" and r.settings["modal"] == "R2SCAN"
    assert np.abs(r.forces).max() < 1e-4
    assert r.stress[:3] == pytest.approx([r.stress[0]] * 3, abs=1e-6)
    assert np.abs(r.stress[3:]).max() < 1e-6
    assert r.forces.dtype == np.float64


def test_displacement_gives_restoring_force_and_higher_energy(sevennet):
    e0 = sevennet.calculate(cubic()).energy
    s = cubic()
    s.translate_sites([1], [0.1, 0, 0], frac_coords=False)  # Pb off-centre along x
    r = sevennet.calculate(s)
    assert r.energy > e0
    assert r.forces[1, 0] < -1e-3  # pushed back towards the centre
    assert abs(r.forces.sum(axis=0)).max() < 1e-4  # Newton's third law: no net force


def test_energy_is_extensive_and_forces_follow_site_order(sevennet):
    prim = sevennet.calculate(cubic(5.9)).energy
    sc = Perovskite(lattice_parameter=5.9).supercell(2)
    u = np.zeros((40, 3))
    r = sevennet.calculate(sc.to_structure())
    assert r.energy == pytest.approx(8 * prim, abs=2e-3)
    # permuting the sites permutes the forces
    from perovskite_pes.structure.configuration import Configuration

    u[10] = [0.08, -0.05, 0.03]
    s = Configuration(sc, u).to_structure()
    perm = np.random.default_rng(0).permutation(40)
    a = sevennet.calculate(s)
    b = sevennet.calculate(s.__class__.from_sites([s[i] for i in perm]))
    assert b.energy == pytest.approx(a.energy, abs=1e-4)
    np.testing.assert_allclose(b.forces, a.forces[perm], atol=1e-4)


def test_stress_sign_matches_energy_volume_derivative(sevennet):
    # ASE convention: stress = (1/V) dE/d(strain); check against a finite difference
    a, h = 5.87, 1e-3
    ep = sevennet.calculate(cubic(a * (1 + h))).energy
    em = sevennet.calculate(cubic(a * (1 - h))).energy
    r = sevennet.calculate(cubic(a))
    volume = a**3
    # isotropic strain h: dE/dh = V * (sxx + syy + szz)
    assert (ep - em) / (2 * h) == pytest.approx(volume * r.stress[:3].sum(), rel=0.05)


def test_model_is_loaded_once_per_process(sevennet):
    sevennet.calculate(cubic())
    n = len(_MODEL_CACHE)
    again = get_calculator("sevennet")
    assert again.ase_calculator() is sevennet.ase_calculator()
    assert len(_MODEL_CACHE) == n


def test_cell_relaxation_finds_sevennet_lattice_parameter(sevennet, tmp_path):
    r = sevennet.calculate(cubic(5.80), relax="cell", workdir=tmp_path)
    assert r.status == "completed", r.error
    a = r.final_structure.lattice.abc
    assert a[0] == pytest.approx(5.945, abs=0.02) and np.ptp(a) < 1e-3
    assert np.abs(r.stress).max() < 2e-4 and np.abs(r.forces).max() < 0.01
    assert (tmp_path / "relax.txt").exists()


def test_unconverged_relaxation_is_a_failed_result(sevennet):
    s = cubic()
    s.translate_sites([2], [0.3, 0, 0], frac_coords=False)
    calc = get_calculator("sevennet", max_steps=1, fmax=1e-4)
    r = calc.calculate(s, relax="positions")
    assert r.status == "failed" and r.energy is None
    assert "did not converge in 1 steps" in r.error


def test_chgnet_and_batch_entry_point(tmp_path):
    calc = get_calculator("chgnet")
    structures = [cubic(5.9), cubic(6.0)]
    results = calculate_many(structures, calc, progress=False)
    assert [r.status for r in results] == ["completed", "completed"]
    assert results[0].calculator == "chgnet" and results[0].version.startswith("chgnet ")
    assert all(np.abs(r.forces).max() < 1e-4 for r in results)
    # chgnet's cubic lattice parameter is about 6.03 A: compressed at 5.9 (negative stress)
    assert results[0].stress[0] < 0
    assert results[0].settings_hash != get_calculator("sevennet").settings_hash


@pytest.mark.parametrize(
    "cores, load, omp, want",
    [(2, 0.1, None, 2), (2, 0.9, None, 1), (2, 1.4, None, 1), (2, 6.0, None, 1), (16, 3.0, None, 2)]
    + [(2, 0.1, "1", 1), (16, 0.0, "1", 1), (2, 0.1, "4", 2), (2, 0.1, "", 2)],
)
def test_auto_threads_use_idle_cores_only(monkeypatch, cores, load, omp, want):
    """Two threads on an idle machine (faster), one as soon as another job holds a core (two would spin-wait)
    or OMP_NUM_THREADS says one (a parallel test runner's worker, a batch job's share)."""
    from perovskite_pes.calculators import surrogates

    monkeypatch.setattr(surrogates, "_AUTO_THREADS", [])
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(surrogates.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(surrogates.os, "getloadavg", lambda: (load, load, load))
    assert surrogates.auto_threads() == want
    monkeypatch.setattr(surrogates.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert surrogates.auto_threads() == want  # decided once per process


def test_threads_default_to_auto_and_bad_values_are_refused():
    from perovskite_pes.calculators import CalculatorInputError
    from perovskite_pes.calculators.surrogates import set_torch_threads

    assert get_calculator("sevennet").run_options["threads"] == "auto"
    for bad in ("two", 0, -1):
        with pytest.raises(CalculatorInputError, match="positive integer or 'auto'"):
            set_torch_threads(bad)
