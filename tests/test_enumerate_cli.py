"""`pes enumerate` through the command line (in-process, temporary PES_HOME)."""

import importlib.util
import json

import numpy as np
import pytest

from perovskite_pes.structure import read_configurations

from cli_support import pes


@pytest.fixture
def run(pes_home, tmp_path):
    """``pes enumerate ARGS`` in-process, in ``tmp_path``, on a fresh PES_HOME."""

    def _run(*args, ok=True):
        proc = pes("enumerate", *args, cwd=tmp_path)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    return _run


def test_tilts_json_lists_fifteen_space_groups(run):
    rows = json.loads(run("tilts", "--json").stdout)
    assert len(rows) == 15
    assert all(r["ok"] for r in rows)
    found = {r["symbol"]: (r["space_group_symbol"], r["space_group_number"]) for r in rows}
    assert found["a+b-b-"] == ("Pnma", 62) and found["a-a-a-"] == ("R-3c", 167) and found["a0a0c+"] == ("P4/mbm", 127)
    table = run("tilts").stdout
    assert "P4_2/nmc" in table and "Im-3" in table


def test_tilt_grid_random_interpolate_write_files(run, tmp_path):
    out = run("tilt", "a+b-b-", "--angles", "10", "8", "-o", "gamma.extxyz").stdout
    assert "made 1 configuration" in out
    gamma = read_configurations(tmp_path / "gamma.extxyz")[0]
    assert gamma.tags["tilt_system"] == "a+b-b-" and gamma.tags["angles"] == [10.0, 8.0, 8.0]

    # T2g shear grid {-e, 0, e}^3: 27 candidates, 5 symmetry-distinct
    summary = json.loads(
        run("grid", "--strains", "T2g", "--strain-amplitudes", "-0.01", "0", "0.01", "-o", "shear.cif", "--json").stdout
    )
    assert (summary["candidates"], summary["made"], summary["duplicates"]) == (27, 5, 22)
    assert len(read_configurations(tmp_path / "shear.cif")) == 5

    out = run(
        "grid", "--parent", "gamma.extxyz:0", "--modes", "R4+", "--amplitudes", "0", "0.1", "-o", "g.extxyz"
    ).stdout
    assert "rejected" in out and "wrote" in out
    around = read_configurations(tmp_path / "g.extxyz")
    assert all(c.tags["parent"] == "a+b-b-" for c in around)

    s1 = json.loads(run("random", "--n", "6", "--radius", "0.2", "--seed", "4", "--json", "-o", "r.extxyz").stdout)
    s2 = json.loads(run("random", "--n", "6", "--radius", "0.2", "--seed", "4", "--json", "-o", "r2.extxyz").stdout)
    assert s1["made"] == s2["made"] == 6
    a, b = read_configurations(tmp_path / "r.extxyz"), read_configurations(tmp_path / "r2.extxyz")
    assert all(np.allclose(x.displacements, y.displacements) for x, y in zip(a, b))  # seeded
    # a large tolerance rejects near-duplicates and says so
    s3 = json.loads(
        run("random", "--n", "30", "--radius", "0.2", "--tol", "0.28", "--max-tries", "40", "--json").stdout
    )
    assert s3["duplicates"] > 0 and s3["made"] + s3["duplicates"] <= 40

    out = run("interpolate", "cubic", "a0a0c-@8", "gamma.extxyz", "--n", "4", "-o", "path").stdout
    assert "made 7 configuration" in out
    path = read_configurations(tmp_path / "path")
    assert len(path) == 7 and np.allclose(path[0].displacements, 0)
    assert np.allclose(path[-1].displacements, gamma.displacements, atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["tilt", "a+b+c0"], "not one of the 15"),
        (["tilt", "a0a0c-", "--species", "Cs", "Pb"], "exactly 3 species"),
        (["tilt", "a0a0c-", "--supercell", "2", "2", "0"], "singular"),
        (["tilt", "a0a0c-", "--supercell", "1.5"], "integers"),
        (["tilt", "a-b-b-", "--angles", "5", "6", "7"], "equal angles"),
        (["grid", "--modes", "R4+", "--amplitudes", "0", "12"], "closer than the minimum distance"),
        (["grid", "--modes", "nonsense", "--amplitudes", "0.1"], "no displacement subspace"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, args, message):
    proc = run(*args, ok=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("perovskite_pes.db") is None, reason="database layer not installed")
def test_db_ingest_counts_new_and_existing(run):
    first = json.loads(run("grid", "--modes", "M3+", "--amplitudes", "0", "0.2", "--db", "--json").stdout)
    assert first["db"]["new"] == first["made"] == 4  # 0, one, two, three in-phase tilt axes
    again = json.loads(run("grid", "--modes", "M3+", "--amplitudes", "0", "-0.2", "--db", "--json").stdout)
    # the opposite tilt sense is symmetry-equivalent: nothing new is stored
    assert again["db"] == {"new": 0, "existing": 4, "ids": again["db"]["ids"]}
    assert sorted(again["db"]["ids"]) == sorted(first["db"]["ids"])
