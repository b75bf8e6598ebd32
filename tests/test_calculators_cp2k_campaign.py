"""A CP2K campaign whose calculations really fail, are stored as failed with the reason, and are
recovered by `pes campaign rerun-failed`: the user's path, through the command line.

The failure is CP2K's own wall-time stop (GLOBAL/WALLTIME from PES_CP2K_WALLTIME, which a worker's
batch script sets to the time its job has left); the next run has time again.
"""

import json

from test_calculators_cp2k_failures import CHEAP, pytestmark  # noqa: F401 - skipped where CP2K cannot run

SPEC = {
    "name": "cp2k-walltime",
    "supercell": 1,
    "reference": {"species": ["Cs", "Pb", "Br"], "lattice_parameter": 5.93},
    "calculator": {"name": "cp2k", "settings": {k: v for k, v in CHEAP.items()}},
    "fireworks": {"per_firework": 2, "flush_every": 1},
    "steps": {
        "relax_reference": False,
        "relax_tilts": False,
        "strain_grid": {"amplitudes": [0.01], "subspaces": ["A1g"]},
    },
    "training": {"enabled": False},
}


def test_wall_time_failures_are_stored_with_the_reason_and_rerun_failed_recovers_them(run_pes, pes_home, tmp_path):
    import yaml

    spec = tmp_path / "walltime.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out_of_time = {"PES_CP2K_WALLTIME": "0.01"}

    proc = run_pes("campaign", "run", spec, "--no-progress", env=out_of_time, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FIZZLED" in proc.stdout and "rerun-failed cp2k-walltime" in proc.stdout
    status = json.loads(run_pes("campaign", "status", "cp2k-walltime", "--json", check=0).stdout)
    assert status["data"]["calculations"]["cp2k"] == {"completed": 0, "failed": 2}
    (failure,) = status["failures"]
    assert "2 of 2 calculations failed" in failure["reason"] and "WalltimeHandler" in failure["reason"]

    from perovskite_pes.db import close_store, get_store

    store = get_store()
    rows = store.query({"calculator": "cp2k"})
    assert len(rows) == 2 and {r["status"] for r in rows} == {"failed"}
    for r in rows:
        calc = store.get_calculation(r["calc_id"])
        assert calc["energy"] is None and "Walltime error" in calc["error"]
    close_store()

    proc = run_pes("campaign", "rerun-failed", "cp2k-walltime", check=0)
    assert "FIZZLED Fireworks rerun: 1" in proc.stdout
    proc = run_pes("campaign", "run", spec, "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads(run_pes("campaign", "status", "cp2k-walltime", "--json", check=0).stdout)
    assert status["complete"] and not status["failures"]
    assert status["data"]["calculations"]["cp2k"] == {"completed": 2, "failed": 0}

    store = get_store()
    energies = [store.get_calculation(r["calc_id"])["energy"] for r in store.query({"calculator": "cp2k"})]
    assert len(energies) == 2 and all(e is not None for e in energies) and energies[0] != energies[1]
    close_store()
