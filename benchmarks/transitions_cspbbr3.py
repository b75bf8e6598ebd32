"""The phase sequence and transition temperatures of CsPbBr3 with a trained model, against experiment.

Experiment: orthorhombic Pnma (a+b-b-) -> tetragonal P4/mbm (a0a0c+) at 361 K -> cubic Pm-3m at 403 K.
For each supercell size and heating rate asked for, heating (from a+b-b-) and cooling (from the cubic
cell) runs for every seed (MD, NPT, fully flexible cell, or MC), the transitions with their
uncertainty and hysteresis, the wall time, and a plot per setting. Prints a table; --json keeps it.

    python benchmarks/transitions_cspbbr3.py --model PATH                              # 4x4x4, 2 seeds
    python benchmarks/transitions_cspbbr3.py --model PATH --sizes 4,6 --steps 500,2000 --out runs/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXPERIMENT = {("a+b-b-", "a0a0c+"): 361.0, ("a0a0c+", "a0a0a0"): 403.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--method", default="md", choices=["md", "mc"])
    p.add_argument("--sizes", default="4", help="comma-separated N of N x N x N cells (even)")
    p.add_argument("--steps", default="500", help="comma-separated production steps per temperature (heating rates)")
    p.add_argument("--equilibration-fraction", type=float, default=0.5, help="equilibration = this x steps")
    p.add_argument("--t-min", type=float, default=100.0)
    p.add_argument("--t-max", type=float, default=500.0)
    p.add_argument("--t-step", type=float, default=25.0)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--directions", default="heat,cool", help="heat, cool or both")
    p.add_argument("--timestep", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-displacement", type=float, default=2.0, help="an atom this far from its site (A) stops a run")
    p.add_argument("--out", default="transitions_runs", help="folder for checkpoints, results and plots (resumable)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from perovskite_pes.simulation.plots import plot_scan
    from perovskite_pes.simulation.transitions import TransitionScan

    out = Path(args.out)
    rows = []
    print(f"load average {open('/proc/loadavg').read().split()[:3]}")
    for n in [int(x) for x in args.sizes.split(",")]:
        for steps in [int(x) for x in args.steps.split(",")]:
            equil = int(round(args.equilibration_fraction * steps))
            opts = {"timestep_fs": args.timestep, "threads": args.threads} if args.method == "md" else {}
            opts["max_displacement"] = args.max_displacement
            scan = TransitionScan(
                args.model,
                supercell=n,
                method=args.method,
                t_min=args.t_min,
                t_max=args.t_max,
                t_step=args.t_step,
                steps=steps,
                equilibration=equil,
                seeds=[int(s) for s in args.seeds.split(",")],
                directions=tuple(args.directions.split(",")),
                **opts,
            )
            work = out / f"{args.method}-{n}x{n}x{n}-{steps}"
            t0 = time.perf_counter()
            res = scan.run(workdir=work, progress=True)
            wall = time.perf_counter() - t0
            data = res.to_dict()
            plot = plot_scan(data, work / "transitions.png")
            (work / "result.json").write_text(json.dumps(data, indent=1))
            per_t = (steps + equil) * (args.timestep if args.method == "md" else 1.0)
            rate = f"{args.t_step / (per_t * 1e-6):.0f} K/ns" if args.method == "md" else f"{steps + equil} sweeps/T"
            rows.append(
                {
                    "N": n,
                    "atoms": res.atoms,
                    "steps": steps,
                    "rate": rate,
                    "wall_s": wall,
                    "transitions": res.transitions,
                    "plot": str(plot),
                    "phases": [
                        (r["direction"], r["seed"], list(zip(r["temperature_K"], r["phase"]))) for r in res.runs
                    ],
                }
            )
            print(f"\n{n}x{n}x{n} ({res.atoms} atoms), {rate}: {wall / 60:.1f} min")
            for r in res.runs:
                print(
                    f"  {r['direction']} seed {r['seed']}: "
                    + " ".join(f"{p}@{t:.0f}" for t, p in zip(r["temperature_K"], r["phase"]))
                )
            for tr in res.transitions:
                exp = EXPERIMENT.get((tr["from"], tr["to"]))
                print(
                    f"  {tr['from']:>8} -> {tr['to']:<8} {tr['temperature_K']:6.0f} +- {tr['uncertainty_K']:3.0f} K"
                    f"  (heating {tr['heating_K']}, cooling {tr['cooling_K']})"
                    + (f"  experiment {exp:.0f} K" if exp else "")
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
