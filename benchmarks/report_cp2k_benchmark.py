"""What the CP2K benchmark (benchmarks/run_cp2k_benchmark.sh) has measured so far.

    PES_HOME=/data/cp2k_bench python benchmarks/report_cp2k_benchmark.py [--surrogate] [--json]

Prints: the convergence table of the a0a0c- tilt energy (bench_cp2k_convergence.py); the campaign's
calculations (completed, failed with reasons, wall time per 40-atom calculation); the tilt wells,
E(relaxed tilt system) - E(cubic) per formula unit, of every relaxed parent the campaign has
calculated; and the active model's errors. With ``--surrogate``, the same wells with SevenNet
(positions relaxed in the cubic cell at SevenNet's own lattice parameter, as the campaign does) and
SevenNet's energy of the rigid 8-degree a0a0c- tilt of the convergence table.
Reads the store; changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

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
    parents = {c["tilt_system"]: c for c in done if c["method"] == "tilt" and c.get("n_atoms") == 40}
    if CUBIC in parents:
        for g in TILTS:
            if g in parents:
                wells[g] = (parents[g]["energy"] - parents[CUBIC]["energy"]) / 8 * 1000
    return {
        "completed": len(done),
        "failed": {c["config_id"]: c.get("error") for c in calcs if c["status"] == "failed"},
        "seconds_per_40_atom_calculation": {
            "n": len(seconds), "median": statistics.median(seconds) if seconds else None,
            "min": min(seconds) if seconds else None, "max": max(seconds) if seconds else None},
        "tilt_wells_meV_per_fu": wells,
    }


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
    ref593 = Perovskite(lattice_parameter=5.93).supercell(2)
    e_cub = calc.calculate(ref593.to_structure()).energy
    e_tilt = calc.calculate(tilt_configuration(ref593, "a0a0c-", [angle]).to_structure()).energy
    out[f"rigid_a0a0c-_{angle:g}deg_at_5.93_meV_per_fu"] = (e_tilt - e_cub) / 8 * 1000
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surrogate", action="store_true", help="also compute the wells with SevenNet")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    home = Path(os.environ.get("PES_HOME") or Path.home() / ".perovskite_pes")
    from perovskite_pes.db import get_store

    store = get_store()
    out = {"convergence": convergence(home), "campaign": campaign_data(store)}
    model = store.active_model("cp2k")
    out["model"] = None if model is None else {
        "name": model.get("name"), "n_train": model.get("n_train"),
        "errors_meV_per_atom": {k: v for k, v in (model.get("metrics") or {}).items() if "rmse" in k}}
    if args.surrogate:
        out["sevennet"] = surrogate_wells()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print("a0a0c- (8 deg, a = 5.93 A) minus cubic, meV/f.u.:")
    for r in out["convergence"]:
        print(f"  {r['cutoff']:6g} Ry  {r['k']}x{r['k']}x{r['k']}  {r['tilt_meV_per_fu']:8.2f}   "
              f"({'/'.join(f'{s:.0f}' for s in r['seconds'])} s)")
    c = out["campaign"]
    s = c["seconds_per_40_atom_calculation"]
    print(f"campaign: {c['completed']} completed, {len(c['failed'])} failed; 40-atom calculations: n={s['n']}, "
          f"median {s['median']} s, min {s['min']} s, max {s['max']} s")
    for cid, why in c["failed"].items():
        print(f"  failed {cid}: {why}")
    for g, w in c["tilt_wells_meV_per_fu"].items():
        print(f"  well {g}: {w:.1f} meV/f.u.")
    if out["model"]:
        print(f"model: {out['model']}")
    if "sevennet" in out:
        print(f"SevenNet: {out['sevennet']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
