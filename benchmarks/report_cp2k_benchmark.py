"""What the CP2K benchmark (benchmarks/run_cp2k_benchmark.sh) has measured so far.

    PES_HOME=/data/cp2k_bench python benchmarks/report_cp2k_benchmark.py [--surrogate] [--json]

Prints: the convergence table of the a0a0c- tilt energy (bench_cp2k_convergence.py); the campaign's
calculations (completed, failed with reasons, wall time per 40-atom calculation); the tilt wells,
E(relaxed tilt system) - E(cubic) per formula unit, of every relaxed parent the campaign has
calculated; and the active model's errors. With ``--surrogate``, the same wells with SevenNet
(positions relaxed in the cubic cell at SevenNet's own lattice parameter, as the campaign does) and
SevenNet's energy of the rigid 8-degree a0a0c- tilt of the convergence table. With ``--model``, the
same for the active CP2K model, out of its sample: each tilt system relaxed (positions, ASE BFGS to
0.02 eV/A) by the model itself from the default tilts in the model's cubic cell, with the relaxed
tilt angles, and the rigid tilt of the convergence table (a lattice parameter it was not trained at).
Reads the store; changes nothing.

    PES_HOME=/data/cp2k_bench python benchmarks/report_cp2k_benchmark.py --runs [--json]

reads CP2K's own output files under $PES_HOME/campaigns instead of the store, so it works while the
benchmark runs (the embedded store serves one process at a time): every run with its type, atoms,
optimisation steps, last energy and largest force, CP2K's wall time, and the tilt wells from the
finished relaxations against the 40-atom cubic single point (or, until that one has run, eight times
the energy of the relaxed 5-atom cell, which is marked as such).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from pathlib import Path

import numpy as np

CAMPAIGN = "cspbbr3_cp2k"
CUBIC = "a0a0a0"
TILTS = ("a0a0c-", "a0a0c+", "a+b-b-")


def convergence(home: Path) -> list[dict]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("conv", Path(__file__).with_name("bench_cp2k_convergence.py"))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    return conv.table(list(conv.load_done(home / "convergence.jsonl").values()))


def campaign_data(store) -> dict:
    rows = store.query({"calculator": "cp2k"})
    calcs = [{**r, **store.get_calculation(r["calc_id"])} for r in rows]
    done = [c for c in calcs if c["status"] == "completed"]
    seconds = [c["wall_time"] for c in done if c.get("n_atoms") == 40 and c.get("wall_time")]
    wells = {}
    parents = {}  # per system the deepest relaxed parent (relaxations with other settings may be stored too)
    for c in done:
        if c["method"] == "tilt" and c.get("n_atoms") == 40:
            best = parents.get(c["tilt_system"])
            parents[c["tilt_system"]] = c if best is None or c["energy"] < best["energy"] else best
    if CUBIC in parents:
        for g in TILTS:
            if g in parents:
                wells[g] = (parents[g]["energy"] - parents[CUBIC]["energy"]) / 8 * 1000
    return {
        "completed": len(done),
        "failed": {c["config_id"]: c.get("error") for c in calcs if c["status"] == "failed"},
        "seconds_per_40_atom_calculation": {
            "n": len(seconds),
            "median": statistics.median(seconds) if seconds else None,
            "min": min(seconds) if seconds else None,
            "max": max(seconds) if seconds else None,
        },
        "tilt_wells_meV_per_fu": wells,
    }


def rigid_tilt(energy, angle: float = 8.0) -> dict:
    """E(rigid a0a0c- tilt of ``angle`` degrees) - E(cubic) per formula unit at a = 5.93 A, the
    convergence table's structure, with ``energy`` (structure of a Configuration -> eV)."""
    from perovskite_pes.structure import Perovskite, tilt_configuration

    ref593 = Perovskite(lattice_parameter=5.93).supercell(2)
    e_cub = energy(ref593.to_structure())
    e_tilt = energy(tilt_configuration(ref593, "a0a0c-", [angle]).to_structure())
    return {f"rigid_a0a0c-_{angle:g}deg_at_5.93_meV_per_fu": (e_tilt - e_cub) / 8 * 1000}


def surrogate_wells(angle: float = 8.0) -> dict:
    """SevenNet: cubic cell relaxed, tilt systems relaxed (positions) in it, wells per formula unit."""
    from perovskite_pes.calculators import get_calculator
    from perovskite_pes.structure import Perovskite, tilt_configuration

    calc = get_calculator("sevennet")
    cubic = calc.calculate(Perovskite(lattice_parameter=5.93).primitive_structure(), relax="cell")
    a = round(cubic.final_structure.volume ** (1 / 3), 4)
    ref = Perovskite(lattice_parameter=a).supercell(2)
    e0 = calc.calculate(ref.to_structure()).energy
    out = {"lattice_parameter": a, "wells_meV_per_fu": {}}
    for g in TILTS:
        r = calc.calculate(tilt_configuration(ref, g, None).to_structure(), relax="positions")
        out["wells_meV_per_fu"][g] = (r.energy - e0) / 8 * 1000
    out.update(rigid_tilt(lambda s: calc.calculate(s).energy, angle))
    return out


def tilt_angles(reference, atoms) -> dict:
    """Largest |R| and |M| tilt projections (degrees) per axis of one structure of ``reference``."""
    from perovskite_pes.simulation import octahedral_rotations, tilt_projections

    rot = octahedral_rotations(reference, atoms.positions, atoms.cell.array)
    r, m = tilt_projections(reference, rot)
    return {"R": np.round(np.abs(r[0]), 2).tolist(), "M": np.round(np.abs(m[0]), 2).tolist()}


def model_wells(model_dir, angle: float = 8.0, fmax: float = 0.02) -> dict:
    """A model's own tilt wells: each system relaxed by the model (positions) in its cubic cell."""
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    from perovskite_pes.models.calculator import PESCalculator
    from perovskite_pes.structure import Perovskite, tilt_configuration

    calc = PESCalculator(model_dir)
    a = calc.base_reference.perovskite.lattice_parameter

    def atoms_of(structure):
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = calc
        return atoms

    ref = Perovskite(lattice_parameter=a).supercell(2)
    e0 = atoms_of(ref.to_structure()).get_potential_energy()
    out = {"lattice_parameter": a, "wells_meV_per_fu": {}, "tilts_deg": {}, "bfgs_steps": {}}
    for g in TILTS:
        atoms = atoms_of(tilt_configuration(ref, g, None).to_structure())
        opt = BFGS(atoms, logfile=None)
        opt.run(fmax=fmax, steps=1000)
        out["wells_meV_per_fu"][g] = (atoms.get_potential_energy() - e0) / 8 * 1000
        out["tilts_deg"][g] = tilt_angles(ref, atoms)
        out["bfgs_steps"][g] = opt.nsteps
    out.update(rigid_tilt(lambda s: atoms_of(s).get_potential_energy(), angle))
    return out


_ENERGY = re.compile(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)")
_GRADIENT = re.compile(r"Max\. gradient\s+=\s+(\S+)")
_CP2K_TIME = re.compile(r"^ CP2K\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)", re.M)


def read_run(directory: Path) -> dict:
    """What one CP2K run folder holds, read from its own files (cp2k.inp, structure.xyz, cp2k.out)."""
    from ase.units import Bohr, Hartree

    out = (directory / "cp2k.out").read_text(errors="replace")
    inp = (directory / "cp2k.inp").read_text(errors="replace")
    xyz = (directory / "structure.xyz").read_text().splitlines()
    energies = [float(e) * Hartree for e in _ENERGY.findall(out)]
    gradients = [float(g) * Hartree / Bohr for g in _GRADIENT.findall(out)]
    force_block = out.rsplit("ATOMIC FORCES in [a.u.]", 1)
    max_force = None
    if len(force_block) == 2:
        rows = [
            ln.split()
            for ln in force_block[1].split("SUM OF ATOMIC FORCES", 1)[0].splitlines()
            if re.match(r"^\s+\d+\s+\d+\s+\w+\s+-?\d", ln)
        ]
        if rows:
            max_force = max(abs(float(x)) for r in rows for x in r[3:6]) * Hartree / Bohr
    seconds = _CP2K_TIME.search(out)
    run_type = re.search(r"RUN_TYPE\s+(\w+)", inp).group(1)
    return {
        "dir": str(directory),
        "name": directory.name,
        "run_type": run_type,
        "n_atoms": int(xyz[0].split()[0]),
        "ended": "PROGRAM ENDED AT" in out,
        "optimised": "GEOMETRY OPTIMIZATION COMPLETED" in out if run_type != "ENERGY_FORCE" else None,
        "steps": out.count("OPTIMIZATION STEP:") + 1 if run_type != "ENERGY_FORCE" else None,
        "energy": energies[-1] if energies else None,
        "energies": energies,
        "max_gradient": gradients[-1] if gradients else None,
        "max_force": max_force,
        "seconds": float(seconds.group(1)) if seconds else None,
        "positions": [[float(x) for x in ln.split()[1:4]] for ln in xyz[2 : 2 + int(xyz[0].split()[0])]],
        "cell": [float(x) for x in re.findall(r"^\s+A\s+(\S+)", inp, re.M)[:1]],
    }


def runs_report(home: Path) -> dict:
    """The campaigns' CP2K runs and the tilt wells, from the run folders alone."""
    import numpy as np

    from perovskite_pes.structure import Perovskite

    runs = [read_run(p.parent) for p in sorted(home.glob("campaigns/*/launches/**/cp2k.out"))]
    out = {"runs": runs, "wells_meV_per_fu": {}, "cubic_reference": None}
    ref5 = [r for r in runs if r["name"] == "relax_reference" and r["ended"] and r["optimised"]]
    cubic = None
    if ref5:
        a = float(np.loadtxt(Path(ref5[-1]["dir"]) / "pes-1.cell", ndmin=2)[-1, 2])
        out["lattice_parameter"] = a
        ideal = np.array(Perovskite(lattice_parameter=round(a, 4)).supercell(2).to_structure().cart_coords)
        for r in runs:
            if r["run_type"] == "ENERGY_FORCE" and r["n_atoms"] == 40 and r["ended"] and r["energy"] is not None:
                if np.abs(np.array(r["positions"]) - ideal).max() < 1e-4:
                    cubic = {"energy": r["energy"], "source": "40-atom cubic single point", "dir": r["dir"]}
        if cubic is None:
            cubic = {
                "energy": 8 * ref5[-1]["energy"],
                "source": "8 x relaxed 5-atom cell (no 40-atom cubic run yet)",
                "dir": ref5[-1]["dir"],
            }
    out["cubic_reference"] = cubic
    for r in runs:
        if r["name"].startswith("relax_") and r["name"] != "relax_reference" and r["energies"] and cubic:
            g = r["name"][len("relax_") :]
            out["wells_meV_per_fu"][g] = {
                "meV_per_fu": (r["energy"] - cubic["energy"]) / 8 * 1000,
                "finished": bool(r["ended"] and r["optimised"]),
                "steps": r["steps"],
                "max_gradient_eV_per_A": r["max_gradient"],
            }
    return out


def print_runs(rep: dict) -> None:
    print(
        f"{'run':<28} {'type':<12} {'atoms':>5} {'steps':>5} {'ended':>5} "
        f"{'energy (eV)':>16} {'max F (eV/A)':>12} {'s':>7}"
    )
    for r in rep["runs"]:
        f = r["max_gradient"] if r["max_gradient"] is not None else r["max_force"]
        print(
            f"{r['name'][:28]:<28} {r['run_type']:<12} {r['n_atoms']:>5} {r['steps'] or '':>5} {str(r['ended']):>5} "
            f"{r['energy'] if r['energy'] is not None else float('nan'):>16.6f} "
            f"{f if f is not None else float('nan'):>12.4f} {r['seconds'] or float('nan'):>7.0f}"
        )
    if rep.get("lattice_parameter"):
        print(f"relaxed cubic lattice parameter: {rep['lattice_parameter']:.4f} A")
    if rep["cubic_reference"]:
        print(f"cubic reference: {rep['cubic_reference']['source']}")
    for g, w in rep["wells_meV_per_fu"].items():
        state = (
            "relaxed"
            if w["finished"]
            else f"NOT finished, step {w['steps']}, max gradient {w['max_gradient_eV_per_A']}"
        )
        print(f"  well {g}: {w['meV_per_fu']:.1f} meV/f.u. ({state})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surrogate", action="store_true", help="also compute the wells with SevenNet")
    p.add_argument("--model", action="store_true", help="also relax the tilt systems with the active CP2K model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs", action="store_true", help="read CP2K's run folders, not the store (works while it runs)")
    args = p.parse_args(argv)
    home = Path(os.environ.get("PES_HOME") or Path.home() / ".perovskite_pes")
    if args.runs:
        rep = runs_report(home)
        if args.json:
            for r in rep["runs"]:
                r.pop("positions")
            print(json.dumps(rep, indent=2, default=str))
        else:
            print_runs(rep)
        return 0
    from perovskite_pes.db import get_store

    store = get_store()
    out = {"convergence": convergence(home), "campaign": campaign_data(store)}
    model = store.active_model("cp2k")
    out["model"] = (
        None
        if model is None
        else {
            "name": model.get("name"),
            "n_train": model.get("n_train"),
            "errors_meV_per_atom": {k: v for k, v in (model.get("metrics") or {}).items() if "rmse" in k},
            "path": model.get("path"),
        }
    )
    if args.model and out["model"]:
        out["model"]["own_wells"] = model_wells(out["model"]["path"])
    if args.surrogate:
        out["sevennet"] = surrogate_wells()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print("a0a0c- (8 deg, a = 5.93 A) minus cubic, meV/f.u.:")
    for r in out["convergence"]:
        print(
            f"  {r['cutoff']:6g} Ry  {r['k']}x{r['k']}x{r['k']}  {r['tilt_meV_per_fu']:8.2f}   "
            f"({'/'.join(f'{s:.0f}' for s in r['seconds'])} s)"
        )
    c = out["campaign"]
    s = c["seconds_per_40_atom_calculation"]
    print(
        f"campaign: {c['completed']} completed, {len(c['failed'])} failed; 40-atom calculations: n={s['n']}, "
        f"median {s['median']} s, min {s['min']} s, max {s['max']} s"
    )
    for cid, why in c["failed"].items():
        print(f"  failed {cid}: {why}")
    for g, w in c["tilt_wells_meV_per_fu"].items():
        print(f"  well {g}: {w:.1f} meV/f.u.")
    if out["model"]:
        own = out["model"].pop("own_wells", None)
        print(f"model: {out['model']}")
        if own:
            for g, w in own["wells_meV_per_fu"].items():
                print(
                    f"  model's own well {g}: {w:.1f} meV/f.u., tilts {own['tilts_deg'][g]} deg, "
                    f"{own['bfgs_steps'][g]} BFGS steps"
                )
            print(f"  model, rigid a0a0c- 8 deg at 5.93 A: {own['rigid_a0a0c-_8deg_at_5.93_meV_per_fu']:.2f} meV/f.u.")
    if "sevennet" in out:
        print(f"SevenNet: {out['sevennet']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
