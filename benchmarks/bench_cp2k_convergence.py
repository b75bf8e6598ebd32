"""Convergence of the a0a0c- tilt energy of CsPbBr3 with CP2K's plane-wave cutoff and k-point mesh.

    python benchmarks/bench_cp2k_convergence.py [--out FILE] [--cutoffs 350,450,250] [--kmeshes 1,2,3]
                                                [--base-k 2] [--k-cutoff 250] [--angle 8] [--report-only]

For each setting: the cubic 2x2x2 supercell (40 atoms) and the same cell with an a0a0c- (R-point,
anti-phase) tilt of ``--angle`` degrees, both at ``--lattice`` A; the tilt energy is
E(tilt) - E(cubic) per formula unit (meV). Cutoffs are scanned at ``--base-k``, meshes (n x n x n on
the supercell, i.e. 2n x 2n x 2n per primitive cell) at ``--k-cutoff`` (a lower cutoff keeps the
dense meshes affordable; the k-point error hardly depends on the cutoff). Every finished
calculation is appended to ``--out`` (JSON lines) at once, and a rerun skips what is there, so the
scan resumes after an interruption. Prints the table and the wall time per calculation.

The CP2K command comes from PES_CP2K_CMD (e.g. ``cp2k.psmp`` for one MPI rank); run it under
``nice`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger("bench_cp2k_convergence")

#: the converged-settings benchmark's physics apart from cutoff and mesh (see workflows/cspbbr3_cp2k.yaml)
BASE = {"xc": "PBESOL", "rel_cutoff": 50.0, "eps_scf": 1e-7}


def structures(lattice: float, angle: float) -> dict:
    from perovskite_pes.structure import Perovskite, tilt_configuration

    ref = Perovskite(lattice_parameter=lattice).supercell(2)
    return {"cubic": ref.to_structure(), "a0a0c-": tilt_configuration(ref, "a0a0c-", [angle]).to_structure()}


def settings_grid(cutoffs, kmeshes, base_k, k_cutoff) -> list[tuple[float, int]]:
    grid = [(float(c), int(base_k)) for c in cutoffs] + [(float(k_cutoff), int(k)) for k in kmeshes]
    return list(dict.fromkeys(grid))


def load_done(path: Path) -> dict:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[(row["structure"], row["cutoff"], row["k"])] = row
    return done


def run(args) -> list[dict]:
    from perovskite_pes.calculators import get_calculator

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = load_done(out)
    cells = structures(args.lattice, args.angle)
    for cutoff, k in settings_grid(args.cutoffs, args.kmeshes, args.base_k, args.k_cutoff):
        calc = get_calculator("cp2k", **BASE, cutoff=cutoff, kpoints=[k, k, k], polling_time_step=2.0)
        for name, structure in cells.items():
            if (name, cutoff, k) in done:
                continue
            workdir = out.parent / "convergence" / f"{name.replace('-', 'm')}_{cutoff:g}Ry_k{k}"
            logger.info("%s at %g Ry, %dx%dx%d k-points ...", name, cutoff, k, k, k)
            r = calc.calculate(structure, workdir=workdir)
            row = {
                "structure": name,
                "cutoff": cutoff,
                "k": k,
                "status": r.status,
                "energy": r.energy,
                "wall_time": r.wall_time,
                "error": r.error,
                "settings_hash": r.settings_hash,
                "version": r.version,
                "output_dir": r.output_dir,
            }
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            done[(name, cutoff, k)] = row
    return list(done.values())


def table(rows: list[dict], n_formula_units: int = 8) -> list[dict]:
    by = {}
    for r in rows:
        if r["status"] == "completed":
            by.setdefault((r["cutoff"], r["k"]), {})[r["structure"]] = r
    out = []
    for (cutoff, k), pair in sorted(by.items()):
        if len(pair) == 2:
            de = (pair["a0a0c-"]["energy"] - pair["cubic"]["energy"]) / n_formula_units * 1000
            out.append(
                {
                    "cutoff": cutoff,
                    "k": k,
                    "tilt_meV_per_fu": de,
                    "seconds": [pair["cubic"]["wall_time"], pair["a0a0c-"]["wall_time"]],
                }
            )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(os.environ.get("PES_HOME", "."), "bench_cp2k_convergence.jsonl"))
    p.add_argument(
        "--cutoffs",
        default="350,450,250",
        type=lambda s: [float(x) for x in s.split(",")],
        help="cutoffs (Ry) scanned at --base-k, in this order",
    )
    p.add_argument(
        "--kmeshes",
        default="1,2,3",
        type=lambda s: [int(x) for x in s.split(",")],
        help="n of the n x n x n supercell meshes scanned at --k-cutoff",
    )
    p.add_argument("--base-k", type=int, default=2)
    p.add_argument("--k-cutoff", type=float, default=250.0)
    p.add_argument("--angle", type=float, default=8.0, help="a0a0c- tilt angle (degrees)")
    p.add_argument("--lattice", type=float, default=5.93, help="cubic lattice parameter (A), near the PBEsol value")
    p.add_argument("--report-only", action="store_true", help="print the table of what is in --out, run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = list(load_done(Path(args.out)).values()) if args.report_only else run(args)
    print(f"{'cutoff (Ry)':>11} {'k-mesh':>7} {'E(a0a0c-) - E(cubic) (meV/f.u.)':>32} {'s per calculation':>18}")
    for r in table(rows):
        secs = "/".join(f"{s:.0f}" for s in r["seconds"])
        print(f"{r['cutoff']:>11g} {r['k']:>5d}^3 {r['tilt_meV_per_fu']:>32.2f} {secs:>18}")
    failed = [r for r in rows if r["status"] != "completed"]
    for r in failed:
        print(f"failed: {r['structure']} {r['cutoff']:g} Ry k{r['k']}: {r['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
