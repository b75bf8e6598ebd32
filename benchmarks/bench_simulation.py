"""Speed of finite-temperature simulation with the models (prints figures; not a test).

1. MD: time per NPT step (ASE LangevinBAOAB, fully flexible cell, forces + stress through
   PESCalculator) on N x N x N cells for the paper's cluster net, the linear CE and the
   recommended site net (30 pairs + triplet + octahedron, order 4, 1/d metric, 1x8 on the order-2
   inputs + linear term), against the surrogate the models learn from (SevenNet) on the same cell,
   measured side by side in this run. The issue's target: >= 300x on 8x8x8 (2,560 atoms).
2. MC: trial moves per second (local displacement moves, O(1) energy changes from cached cluster
   and site terms) on 4x4x4 to 12x12x12, and the same moves by full evaluation (O(N)) for the ratio.
3. A heating run 100 -> 500 K of an 8x8x8 cell (MD, NPT), wall time and the phase at each temperature:
   with a trained model (--heat-model, e.g. the README main job's), or else the recommended site net
   with its synthetic weights (then only the wall time means anything).

Weights do not change the cost, so the models are fitted briefly to synthetic energies.

    python benchmarks/bench_simulation.py                       # everything
    python benchmarks/bench_simulation.py --skip-heat --md-sizes 4,8 --mc-sizes 4,8,12
    python benchmarks/bench_simulation.py --skip-md --skip-mc --heat-model PATH --threads 1
    python benchmarks/bench_simulation.py --skip-heat --skip-synthetic --trained-model PATH --md-sizes 8

``--trained-model`` (repeatable) times a trained model beside them, each on a cell of its own reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import synthetic_set  # noqa: E402


def _models(quick_fit: dict):
    from perovskite_pes.descriptors import Featurizer
    from perovskite_pes.models import ClusterNet, LinearCE, SiteNet
    from perovskite_pes.structure import Perovskite

    small = Perovskite().supercell(2)
    configs, energies = synthetic_set(small, 200)
    fz = Featurizer(small, clusters="7p+t+o", max_order=2)
    fz30 = Featurizer(small, clusters="30p+t+o", max_order=4, metric="inv")
    return {
        "cluster net 7p+t+o o2 1x8 (paper)": ClusterNet(featurizer=fz, hidden_layers=(8,), **quick_fit).fit(
            configs, energies
        ),
        "linear CE 7p+t+o o2": LinearCE(featurizer=fz).fit(configs, energies),
        "site net 30p+t+o o4 inv (recommended)": SiteNet(
            featurizer=fz30, hidden_layers=(8,), linear_term=True, net_order=2, **quick_fit
        ).fit(configs, energies),
    }


def _md_step_time(calc, config, steps: int) -> float:
    from ase import units
    from ase.md.langevinbaoab import LangevinBAOAB
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = config.to_ase()
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = LangevinBAOAB(
            atoms,
            timestep=4 * units.fs,
            temperature_K=300,
            T_tau=100 * units.fs,
            externalstress=0.0,
            hydrostatic=False,
            P_tau=1000 * units.fs,
            rng=np.random.default_rng(1),
        )
    dyn.step()  # warm-up: builds the supercell's featurizer and caches
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        dyn.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _perovskite(model):
    """A trained model's own reference perovskite (its relaxed lattice parameter), else the default one."""
    from perovskite_pes.structure import Perovskite

    reference = getattr(model, "reference_", None)
    return reference.perovskite if reference is not None else Perovskite()


def _config(perovskite, n: int, seed: int):
    """The same thermal-size displacements and strain on any perovskite's n x n x n cell."""
    from perovskite_pes.structure import Configuration

    ref = perovskite.supercell(n)
    rng = np.random.default_rng(seed + n)
    return ref, Configuration(ref, rng.normal(0, 0.05, (ref.n_atoms, 3)), rng.normal(0, 0.003, 6))


def bench_md(models, sizes, args):
    from perovskite_pes.models import PESCalculator
    from perovskite_pes.structure import Perovskite

    rows = []
    for n in sizes:
        ref, config = _config(Perovskite(), n, 3)
        row = {"N": n, "atoms": ref.n_atoms, "models": {}}
        for name, m in models.items():
            ref_m, config_m = _config(_perovskite(m), n, 3)
            row["models"][name] = _md_step_time(PESCalculator(m, supercell=ref_m), config_m, args.md_steps)
        if args.surrogate:
            from perovskite_pes.calculators import get_calculator

            calc = get_calculator(args.surrogate, threads=args.threads).ase_calculator()
            row["surrogate"] = _md_step_time(calc, config, args.surrogate_steps)
        rows.append(row)
        _print_md(row, args.surrogate)
    return rows


def _print_md(row, surrogate):
    print(f"\nMD step (NPT, flexible cell) on {row['N']}x{row['N']}x{row['N']} = {row['atoms']} atoms:")
    s = row.get("surrogate")
    for name, t in row["models"].items():
        ratio = f"   {s / t:7.0f}x faster than {surrogate}" if s else ""
        print(f"  {name:<40} {t * 1000:9.1f} ms/step  {1 / t:7.1f} steps/s{ratio}")
    if s:
        print(f"  {surrogate:<40} {s * 1000:9.1f} ms/step")


def bench_mc(models, sizes, args):
    from perovskite_pes.simulation.local import GlobalEnergy, LocalEnergy
    from perovskite_pes.simulation.mc import torch_threads

    rows = []
    rng = np.random.default_rng(4)
    with torch_threads(1):
        for n in sizes:
            row = {"N": n, "atoms": 5 * n**3, "models": {}}
            for name, m in models.items():
                ref, config = _config(_perovskite(m), n, 4)
                t0 = time.perf_counter()
                le = LocalEnergy(m, ref)
                classes = le.colors()
                le.reset(config.positions, config.lattice)
                setup = time.perf_counter() - t0
                moves, t0 = 0, time.perf_counter()
                k = 0
                while time.perf_counter() - t0 < args.mc_seconds or k < 2:
                    cls = classes[k % len(classes)]
                    new = le.positions.numpy()[cls] + rng.uniform(-0.05, 0.05, (len(cls), 3))
                    de = le.delta(cls, new)
                    le.commit(de < 0)
                    moves += len(cls)
                    k += 1
                local = moves / (time.perf_counter() - t0)
                ge = GlobalEnergy(m, ref)
                ge.reset(config.positions, config.lattice)
                t0, g = time.perf_counter(), 0
                while time.perf_counter() - t0 < min(args.mc_seconds, 5.0) or g < 2:
                    i = g % ref.n_atoms
                    ge.delta([i], ge.positions[[i]] + 0.01)
                    ge.commit([False])
                    g += 1
                glob = g / (time.perf_counter() - t0)
                row["models"][name] = {
                    "local_moves_per_s": local,
                    "global_moves_per_s": glob,
                    "classes": len(classes),
                    "setup_s": setup,
                }
            rows.append(row)
            print(f"\nMC trial moves on {n}x{n}x{n} = {ref.n_atoms} atoms (one torch thread):")
            for name, r in row["models"].items():
                print(
                    f"  {name:<40} local {r['local_moves_per_s']:9.0f}/s "
                    f"({r['classes']} classes, setup {r['setup_s']:.1f} s)"
                    f"   full evaluation {r['global_moves_per_s']:7.1f}/s   "
                    f"ratio {r['local_moves_per_s'] / r['global_moves_per_s']:6.0f}x"
                )
    return rows


def bench_heat(model, args):
    from perovskite_pes.simulation.transitions import TransitionScan

    scan = TransitionScan(
        model,
        supercell=args.heat_size,
        method="md",
        t_min=100.0,
        t_max=500.0,
        t_step=args.heat_step,
        steps=args.heat_steps,
        equilibration=args.heat_equilibration,
        seeds=(args.heat_seed,),
        directions=("heat",),
        heat_start="a+b-b-",
        ensemble="npt",
        timestep_fs=4.0,
        max_displacement=5.0,
        threads=args.threads,
    )
    t0 = time.perf_counter()
    try:
        res = scan.run(progress=True)
        wall = time.perf_counter() - t0
        steps = res.steps
    except Exception as exc:  # synthetic weights may blow up: the wall time per step still stands
        wall = time.perf_counter() - t0
        steps = getattr(getattr(exc, "result", None), "steps", 0)
        print(f"  (stopped: {exc})")
        res = None
    n_t = int(round(400 / args.heat_step)) + 1
    total = n_t * (args.heat_steps + args.heat_equilibration)
    print(
        f"\nHeating run 100 -> 500 K, {args.heat_size}^3 cell, {n_t} temperatures x "
        f"{args.heat_equilibration}+{args.heat_steps} steps of 4 fs ({total * 4e-3:.0f} ps, "
        f"{400 / (total * 4e-6):.0f} K/ns): {wall / 60:.1f} min for {steps} steps"
    )
    out = {"wall_s": wall, "steps": steps, "planned_steps": total, "model": str(model)}
    if res is not None and res.runs:
        run = res.runs[0]
        out.update({k: run[k] for k in ("temperature_K", "phase", "R", "M", "lattice_sorted")})
        out["transitions"] = res.transitions
        for t, phase, r, m in zip(run["temperature_K"], run["phase"], run["R"], run["M"]):
            amps = " ".join(f"{x:5.2f}" for x in r), " ".join(f"{x:5.2f}" for x in m)
            print(f"  {t:5.0f} K  {phase:<8} |R| {amps[0]}  |M| {amps[1]}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--md-sizes", default="4,8")
    p.add_argument("--mc-sizes", default="4,8,12")
    p.add_argument("--md-steps", type=int, default=10)
    p.add_argument("--surrogate", default="sevennet", help="surrogate for the MD ratio ('' to skip)")
    p.add_argument("--surrogate-steps", type=int, default=2)
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads of the models and the surrogate (one is fastest on a shared, loaded machine)",
    )
    p.add_argument("--mc-seconds", type=float, default=10.0)
    p.add_argument("--skip-md", action="store_true")
    p.add_argument("--skip-mc", action="store_true")
    p.add_argument("--skip-heat", action="store_true")
    p.add_argument("--heat-size", type=int, default=8)
    p.add_argument("--heat-step", type=float, default=25.0)
    p.add_argument("--heat-steps", type=int, default=500)
    p.add_argument("--heat-equilibration", type=int, default=250)
    p.add_argument("--heat-seed", type=int, default=0)
    p.add_argument("--heat-model", default=None, help="a trained model (id, name or folder) for the heating run")
    p.add_argument(
        "--trained-model",
        action="append",
        default=[],
        help="also time this saved model folder (repeatable), e.g. the thermal campaign's",
    )
    p.add_argument("--skip-synthetic", action="store_true", help="time only the --trained-model models")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; load average {open('/proc/loadavg').read().split()[:3]}")
    models = (
        _models(dict(batch_sizes=(50,), epochs=2, validation_fraction=0.0))
        if not args.skip_synthetic and not (args.skip_md and args.skip_mc and args.heat_model)
        else {}
    )
    if args.trained_model:
        from perovskite_pes.models import load_model

        for path in args.trained_model:
            model = load_model(path)
            models[f"trained {type(model).__name__} {Path(str(path)).parent.name or path}"] = model
    out = {}
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    if not args.skip_md:
        out["md"] = bench_md(models, ints(args.md_sizes), args)
    if not args.skip_mc:
        out["mc"] = bench_mc(models, ints(args.mc_sizes), args)
    if not args.skip_heat:
        if not (args.heat_model or "site net 30p+t+o o4 inv (recommended)" in models):
            p.error("the heating run needs --heat-model, or the synthetic models (no --skip-synthetic)")
        out["heat"] = bench_heat(args.heat_model or models["site net 30p+t+o o4 inv (recommended)"], args)
    print(f"\nload average at the end {open('/proc/loadavg').read().split()[:3]}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
